"""One sweep's report, section by section, in the order the reader sees them.

A section is a function `(Context) -> list[Block]`: it asks harness.report.analysis for its
answer, keeps the numbers behind it in `ctx.facts` (for tests and notebooks) and returns its
heading, text, tables and figures. `build_report` runs SECTIONS in order, and the terminal
and report.html render the same list. Figures are drawn only through `ctx.figure`, so
`figures=False` never imports matplotlib.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import pandas as pd

from harness.files import write_text
from harness.report.analysis import (
    TOP_K,
    GradHealth,
    best_config,
    best_config_yaml,
    best_confusion,
    best_trial,
    compute,
    compute_table,
    compute_text,
    edge_warnings,
    grad_health,
    groups,
    groups_text,
    objective_values,
    param_importance,
    pareto_front,
    ranked,
    status_counts,
    top_table,
    trial_lr,
)
from harness.report.blocks import Block, render_html, render_text
from harness.report.folder import PREFIX, Sweep, open_study, short, times
from harness.schema import Status
from harness.values import fmt, plain

if TYPE_CHECKING:
    from matplotlib.figure import Figure


@dataclass
class Context:
    """What every section reads (the sweep, its study, the options) and what they leave
    behind (facts, figures)."""

    sweep: Sweep
    out: Path
    top: int = TOP_K
    dpi: int | None = None
    with_figures: bool = True
    study: Any = None  # the optuna.Study of optuna.db, or None
    study_note: str = ""  # why there is no study
    facts: dict[str, Any] = field(default_factory=dict)
    figures: list[Path] = field(default_factory=list)  # PNGs written, in report order
    drawn: dict[str, Figure] = field(default_factory=dict)  # the same figures, by file name

    @cached_property
    def best(self) -> pd.Series | None:
        return best_trial(self.sweep)

    @cached_property
    def grad(self) -> GradHealth:
        return grad_health(self.sweep)

    def figure(self, name: str, caption: str, draw: Callable[[ModuleType], Figure]) -> list[Block]:
        """Draw one figure with harness.plots, write it as out/name, return its image block
        (nothing when figures are off)."""
        if not self.with_figures:
            return []
        from harness import plots

        fig = draw(plots)
        path = plots.save(fig, self.out / name, self.dpi or plots.DPI)
        self.figures.append(path)
        self.drawn[name] = fig
        return [Block("image", caption, path=path)]


# ------------------------------------------------------------------------------------------
# the sections, in report order


def overview(ctx: Context) -> list[Block]:
    return [Block("text", describe(ctx.sweep))]


def statuses(ctx: Context) -> list[Block]:
    """How many trials ended how, and why each failed or diverged."""
    t = ctx.sweep.trials
    counts = status_counts(ctx.sweep)
    ctx.facts["status_counts"] = counts.to_dict()
    share = [f"{c / max(1, len(t)):.0%}" for c in counts.values]
    blocks = [
        Block("heading", "Trials by status"),
        Block(
            "table",
            table=pd.DataFrame({"status": counts.index, "trials": counts.values, "share": share}),
        ),
    ]
    for _, row in t[t["status"].isin([Status.FAILED, Status.DIVERGED])].iterrows():
        why = row.get("error")
        why = short(why) if isinstance(why, str) and why else "no reason recorded"
        blocks.append(Block("text", f"{row['trial_name']} {row['status']}: {why}"))
    return blocks


def top_trials(ctx: Context) -> list[Block]:
    """The best trials, the best config ready to paste, and values at the edge of a range."""
    sweep, best = ctx.sweep, ctx.best
    obj = sweep.objective
    ctx.facts["best_trial"] = None if best is None else plain(best.get("trial_number"))
    ctx.facts["best_trial_id"] = None if best is None else best["trial_id"]
    blocks = [Block("heading", f"Top trials by {obj.name} ({obj.goal})")]
    if best is None:
        return blocks + [Block("text", "no trial reported a value of the objective")]
    ctx.facts["top"] = top_table(sweep, ctx.top)
    ctx.facts["best_config"] = best_config(sweep, best)
    ctx.facts["edge_warnings"] = edge_warnings(sweep, best)
    return [
        *blocks,
        Block("table", table=ctx.facts["top"]),
        Block("heading", f"Best config (trial {best['trial_name']}), ready to paste"),
        Block("pre", best_config_yaml(sweep, best)),
        *(Block("warn", w) for w in ctx.facts["edge_warnings"]),
    ]


def pareto(ctx: Context) -> list[Block]:
    """Multi-objective sweeps only: the trials no other trial beats on every objective."""
    sweep, t = ctx.sweep, ctx.sweep.trials
    objs = sweep.objectives
    if len(objs) < 2:
        return []
    vals = objective_values(sweep, ctx.study)
    if vals is None or vals.notna().all(axis=1).sum() < 1:
        return [Block("text", "Pareto front skipped: no per-objective values found")]
    done = t["status"] == Status.COMPLETED
    front = pareto_front(vals[done] if done.any() else vals, objs)
    ctx.facts["pareto"] = [plain(t.at[i, "trial_number"]) for i in front]
    table = pd.concat(
        [t.loc[front, ["trial_name"]].rename(columns={"trial_name": "trial"}), vals.loc[front]],
        axis=1,
    )
    for n in sweep.searched:
        table[n] = t.loc[front, PREFIX + n]
    blocks = [
        Block("heading", "Pareto front"),
        Block("table", table=table.sort_values(objs[0].name)),
    ]
    if len(front):
        blocks += ctx.figure(
            "pareto.png",
            f"Pareto front of {objs[0].name} and {objs[1].name}",
            lambda plots: plots.pareto(vals, front, [o.name for o in objs]),
        )
    return blocks


def compute_saved(ctx: Context) -> list[Block]:
    """Trial-iterations and trial-hours run, and what early termination saved."""
    c = compute(ctx.sweep)
    ctx.facts["compute"] = c
    return [
        Block("heading", "Compute"),
        Block("table", table=compute_table(c)),
        Block("text", compute_text(c)),
    ]


def grouping(ctx: Context) -> list[Block]:
    """How trials were grouped (resources.fuse) and trials per GPU-hour (or CPU-hour)."""
    g = groups(ctx.sweep)
    ctx.facts["groups"] = g
    blocks = [Block("heading", "Groups and throughput"), Block("text", groups_text(g))]
    if g.fused:
        blocks.append(Block("table", table=g.table))
    return blocks


def importance(ctx: Context) -> list[Block]:
    """fANOVA parameter importance over the study's finished trials."""
    imp, note = param_importance(ctx.sweep, ctx.study)
    ctx.facts["importance"] = None if imp is None else imp.to_dict()
    blocks = [Block("heading", "Parameter importance")]
    if ctx.study is None and ctx.study_note:
        blocks.append(Block("text", ctx.study_note))
    blocks.append(Block("text", note))
    if imp is None:
        return blocks
    blocks.append(
        Block("table", table=pd.DataFrame({"parameter": imp.index, "importance": imp.values}))
    )
    name = ctx.sweep.objective.name
    multi = len(ctx.study.directions) > 1
    return blocks + ctx.figure(
        "importance.png",
        f"fANOVA parameter importance for {name} (drawn by Optuna)",
        lambda plots: plots.importance(ctx.study, imp, name, multi),
    )


GRAD_COLUMNS = {
    "trial": "trial",
    "status": "status",
    "lr": "lr",
    "vanished": "vanished (reports)",
    "exploded": "exploded (reports)",
    "nonfinite_steps": "nonfinite_steps",
    "grad_norm": "median grad norm",
    "grad_norm_max": "max grad norm",
}


def gradient_health(ctx: Context) -> list[Block]:
    """Trials whose gradients vanished, exploded or diverged, the learning rates that
    diverged, and how the gradient norm relates to the learning rate and the dev loss."""
    gh = ctx.grad
    ctx.facts["grad_health"] = gh
    ctx.facts["diverged_lr"] = gh.diverged_lr
    blocks = [Block("heading", "Gradient health"), *(Block("text", n) for n in gh.notes)]
    if gh.flagged.empty:
        blocks.append(Block("text", "no trial's gradients vanished, exploded or went non-finite"))
    else:
        blocks += [
            Block(
                "text",
                "trials whose gradients vanished or exploded (reports with the flag set), "
                "or that diverged:",
            ),
            Block("table", table=gh.flagged[list(GRAD_COLUMNS)].rename(columns=GRAD_COLUMNS)),
        ]
    if gh.diverged_lr is None:
        blocks.append(Block("text", "no trial diverged"))
    else:
        lo, hi = gh.diverged_lr
        n = int(gh.per_trial["diverged"].sum())
        msg = f"{n} trial(s) diverged at learning rate {fmt(lo)}" + (
            "" if lo == hi else f" .. {fmt(hi)}"
        )
        if gh.healthy_lr is not None:
            msg += f"; the others ran at {fmt(gh.healthy_lr[0])} .. {fmt(gh.healthy_lr[1])}"
        blocks.append(Block("text", msg))
    return blocks + [
        Block(
            "text",
            "how the global gradient norm relates to the learning rate and to dev loss, "
            "across trials that did not diverge:",
        ),
        Block("table", table=gh.correlations),
    ]


def figures(ctx: Context) -> list[Block]:
    """Every figure that is not part of a section above."""
    blocks = [
        Block("heading", "Figures"),
        *history_figure(ctx),
        *curves_figure(ctx),
        *grad_norms_figure(ctx),
        *params_figures(ctx),
        *confusion_figure(ctx),
    ]
    if not ctx.with_figures:
        blocks.append(Block("text", "figures skipped (--no-figures)"))
    return blocks


# ------------------------------------------------------------------------------------------
# the figures


def history_figure(ctx: Context) -> list[Block]:
    """Objective per trial and the best so far, against trial number and wall time."""
    t, obj = ctx.sweep.trials, ctx.sweep.objective
    if not t["objective"].notna().any():
        return [Block("text", "history and parameter plots skipped: no trial has a value")]
    hist = t.copy()
    start, end = times(t["start_time"]), times(t["end_time"])
    if end.notna().any():
        hist["wall_min"] = (end - start.min()).dt.total_seconds() / 60
    return ctx.figure(
        "history.png",
        f"optimization history: {obj.name} per trial (pruned and diverged trials at their last "
        "report) and the best completed trial so far",
        lambda plots: plots.history(hist, "objective", obj.maximize, label=obj.name),
    )


def curves_figure(ctx: Context) -> list[Block]:
    """Dev loss and accuracy of the top trials, the baseline and the pruned trials."""
    sweep = ctx.sweep
    m, t = sweep.metrics, sweep.trials
    if m.empty or not {"dev_loss", "dev_acc", "iteration"} <= set(m):
        return [Block("text", "learning and gradient curves skipped: no reports recorded")]
    top_ids = list(ranked(sweep).head(ctx.top)["trial_id"])
    base = sweep.baseline_id
    caption = f"learning curves of the top {len(top_ids)} trial(s)"
    if base is not None:
        caption += f", the baseline ({t.loc[t['trial_id'] == base, 'trial_name'].iloc[0]}) dashed"
    if (t["status"] == Status.PRUNED).any():
        caption += "; pruned trials faded, each ending where early termination stopped it"
    return ctx.figure(
        "curves.png", caption, lambda plots: plots.learning_curves(m, t, top_ids, base)
    )


def grad_norms_figure(ctx: Context) -> list[Block]:
    """Global gradient norm of every trial and per layer of the best."""
    sweep, best = ctx.sweep, ctx.best
    if sweep.metrics.empty or "grad_norm" not in sweep.metrics or "iteration" not in sweep.metrics:
        return []
    per = ctx.grad.per_trial
    diverged = set(per.loc[per["diverged"], "trial_id"])
    best_id = None if best is None else best["trial_id"]
    return ctx.figure(
        "grad_norms.png",
        "gradient norms: global per trial (log scale, colour: learning rate) and per layer "
        "of the best trial",
        lambda plots: plots.grad_norms(
            sweep.metrics, sweep.layers, trial_lr(sweep), sweep.trials, diverged, best_id
        ),
    )


def params_figures(ctx: Context) -> list[Block]:
    """Each searched parameter against the objective, and all of them at once."""
    sweep, obj = ctx.sweep, ctx.sweep.objective
    t = sweep.trials
    if not sweep.searched or not t["objective"].notna().any():
        return []
    cols = [PREFIX + n for n in sweep.searched]
    logp = {PREFIX + n for n in sweep.log_params}
    cats = {PREFIX + n for n in sweep.categorical_params}
    blocks = ctx.figure(
        "params.png",
        f"each parameter against the objective ({obj.name}; pruned and diverged trials at "
        "their last report)",
        lambda plots: plots.param_scatter(t, cols, logp, "objective", obj.name, cats),
    )
    if t["objective"].notna().sum() >= 2:
        blocks += ctx.figure(
            "parallel.png",
            f"parallel coordinates of every trial with a value, coloured by {obj.name} "
            "(pruned trials dashed, at their last report)",
            lambda plots: plots.parallel(t, cols, logp, "objective", obj.maximize, obj.name, cats),
        )
    return blocks


def confusion_figure(ctx: Context) -> list[Block]:
    """The best trial's test confusion matrix."""
    best = ctx.best
    if best is None:
        return []
    mat, classes, note = best_confusion(ctx.sweep, best)
    if mat is None:
        return [Block("text", note)]
    ctx.facts["confusion"] = mat
    name = best["trial_name"]
    caption = f"confusion matrix of the best trial ({name}, test split)"
    if ctx.with_figures:
        from harness import plots

        if plots.class_font(classes) is None:
            caption += "; no installed font draws the class names, so the axes number them: " + (
                ", ".join(f"{i} {c}" for i, c in enumerate(classes))
            )
    return ctx.figure(
        "confusion.png",
        caption,
        lambda plots: plots.confusion(mat, classes, f"test confusion matrix, trial {name}"),
    )


SECTIONS: list[Callable[[Context], list[Block]]] = [
    overview,
    statuses,
    top_trials,
    pareto,
    compute_saved,
    grouping,
    importance,
    gradient_health,
    figures,
]


# ------------------------------------------------------------------------------------------
# the report


@dataclass
class SweepReport:
    sweep: Sweep
    out: Path
    blocks: list[Block]
    figures: list[Path]
    facts: dict[str, Any]  # the numbers behind the tables (for tests and notebooks)
    drawn: dict[str, Figure] = field(default_factory=dict)  # the figures, by file name

    def text(self) -> str:
        return render_text(self.blocks)


def build_report(
    sweep: Sweep, out: Path, *, top: int = TOP_K, dpi: int | None = None, figures: bool = True
) -> SweepReport:
    """Run every section, draw the figures into `out` (unless figures=False), write
    out/report.html."""
    out.mkdir(parents=True, exist_ok=True)
    study, note = open_study(sweep)
    ctx = Context(sweep, out, top, dpi, figures, study, note)
    blocks = [b for section in SECTIONS for b in section(ctx)]
    write_text(out / "report.html", render_html(f"Sweep report: {sweep.name}", blocks))
    return SweepReport(sweep, out, blocks, ctx.figures, ctx.facts, ctx.drawn)


def describe(sweep: Sweep) -> str:
    """One line: model, data, method, objective, early termination, folder."""
    spec = sweep.spec
    data = spec.get("data")
    data_name = data.get("name") if isinstance(data, dict) else data
    objs = ", ".join(f"{o.name} ({o.goal})" for o in sweep.objectives)
    early = spec.get("early_terminate")
    early_s = early.get("type") if isinstance(early, dict) else early
    return (
        f"model {spec.get('model', '?')} on {data_name or '?'}; method {spec.get('method', '?')}; "
        f"objective {objs}; early termination {early_s or 'none'}; folder {sweep.path}"
    )
