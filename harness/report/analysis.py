"""The answers a report gives, each computed from a Sweep into plain numbers and tables.

Nothing here draws or prints: harness.report.sections lays these out as blocks, and tests
and notebooks read them directly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import yaml

from harness import schema
from harness.report.folder import (
    PREFIX,
    Objective,
    Sweep,
    distribution,
    number,
    short,
    times,
)
from harness.schema import Status
from harness.values import fmt, plain

TOP_K = 5
EDGE_FRAC = 0.05  # "at the edge": within 5% of min or max, on the parameter's own scale
MIN_IMPORTANCE_TRIALS = 3  # fANOVA needs a few finished trials to say anything


def status_counts(sweep: Sweep) -> pd.Series:
    """Trials per status, every schema status listed (0 where none)."""
    counts = sweep.trials["status"].value_counts()
    order = list(schema.STATUSES) + sorted(set(counts.index) - set(schema.STATUSES))
    return counts.reindex(order, fill_value=0).astype(int)


def ranked(sweep: Sweep) -> pd.DataFrame:
    """Trials best first by the objective: COMPLETED ones (they have test metrics); when none
    completed, every trial by the last value it reported."""
    t = sweep.trials
    pool = t[(t["status"] == Status.COMPLETED) & t["objective"].notna()]
    if pool.empty:
        pool = t[t["objective"].notna()]
    return pool.sort_values("objective", ascending=not sweep.objective.maximize, kind="stable")


def best_trial(sweep: Sweep) -> pd.Series | None:
    r = ranked(sweep)
    return None if r.empty else r.iloc[0]


def top_table(sweep: Sweep, k: int = TOP_K) -> pd.DataFrame:
    """The k best trials: name, status, objective (under its own name: best_dev_acc shown
    once, not twice), dev and test results, searched values."""
    cols = [
        "trial_name",
        "status",
        "objective",
        "best_dev_acc",
        "best_dev_loss",
        "test_acc",
        "test_f1_macro",
        "iterations",
        "train_s",
    ]
    r = ranked(sweep).head(k)
    name = sweep.objective.name
    cols = [c for c in cols if c != name]  # the objective column is that one
    out = r[cols].rename(columns={"trial_name": "trial", "objective": name})
    out.insert(0, "rank", range(1, len(out) + 1))
    for n in sweep.searched:
        out[n] = r[PREFIX + n]
    return out.reset_index(drop=True)


def best_config(sweep: Sweep, best: pd.Series) -> dict[str, Any]:
    """The `parameters` block with every setting pinned to the best trial's value."""
    out: dict[str, Any] = {}
    for n in list(sweep.param_specs) + [p for p in sweep.param_names if p not in sweep.param_specs]:
        v = plain(best.get(PREFIX + n))
        if v is None and "value" in sweep.param_specs.get(n, {}):
            v = plain(sweep.param_specs[n]["value"])
        if v is None:
            continue
        if isinstance(v, float):
            v = float(f"{v:.4g}")
        out[n] = {"value": v}
    return out


def best_config_yaml(sweep: Sweep, best: pd.Series) -> str:
    return yaml.safe_dump(
        {"parameters": best_config(sweep, best)},
        sort_keys=False,
        default_flow_style=None,
        allow_unicode=True,
        width=100,
    )


@dataclass
class Compute:
    """Trial-iterations and trial-seconds run, and what they would have been without pruning.

    "To the end" lets every PRUNED trial train as many samples as the longest COMPLETED trial
    (samples, not iterations, so a searched batch size does not skew it), scaling its
    iterations and seconds by the same factor; other trials count what they ran. With no
    COMPLETED trial the longest trial of any status is the measure (`ref_completed` False).
    """

    trials: int
    pruned: int
    iterations_run: float
    iterations_full: float
    seconds_run: float
    seconds_full: float
    full_run_samples: float
    ref_completed: bool = True  # full_run_samples is a COMPLETED trial's

    @property
    def iterations_saved(self) -> float:
        return self.iterations_full - self.iterations_run

    @property
    def saved_frac(self) -> float:
        return self.iterations_saved / self.iterations_full if self.iterations_full > 0 else 0.0

    @property
    def seconds_saved(self) -> float:
        return self.seconds_full - self.seconds_run


def compute(sweep: Sweep) -> Compute:
    t = sweep.trials
    iters = t["iterations"].fillna(0).astype(float)
    secs = t["train_s"].fillna(0).astype(float)
    unit = t["samples"].fillna(0).astype(float)
    if not (unit > 0).any():
        unit = iters
    done = t["status"] == Status.COMPLETED
    ref = unit[done].max() if done.any() and unit[done].max() > 0 else unit.max()
    ref_iters = iters[done].max() if done.any() else iters.max()
    ref_secs = secs[done].median() if done.any() else secs.max()
    iters_full, secs_full = iters.copy(), secs.copy()
    for i in t.index[t["status"] == Status.PRUNED]:
        if unit[i] > 0:
            f = max(1.0, ref / unit[i])
            iters_full[i], secs_full[i] = iters[i] * f, secs[i] * f
        else:
            iters_full[i], secs_full[i] = ref_iters, ref_secs
    return Compute(
        trials=len(t),
        pruned=int((t["status"] == Status.PRUNED).sum()),
        iterations_run=float(iters.sum()),
        iterations_full=float(np.nansum(iters_full)),
        seconds_run=float(secs.sum()),
        seconds_full=float(np.nansum(secs_full)),
        full_run_samples=float(ref) if pd.notna(ref) else 0.0,
        ref_completed=bool(done.any()),
    )


def compute_table(c: Compute) -> pd.DataFrame:
    """Trial-iterations (batches, summed over trials; the pruned trials' "to the end" is an
    estimate, so whole numbers) and trial-hours, run and saved."""
    return pd.DataFrame(
        {
            "": ["run", "if run to the end", "saved by early termination"],
            "trial-iterations": [round(c.iterations_run), round(c.iterations_full),
                                 round(c.iterations_saved)],
            "trial-hours": [c.seconds_run / 3600, c.seconds_full / 3600, c.seconds_saved / 3600],
            "share": [None, None, f"{c.saved_frac:.1%}"],
        }
    )


def compute_text(c: Compute) -> str:
    ran = (
        f"{c.trials} trials ran {round(c.iterations_run):,} trial-iterations (batches, summed "
        f"over trials; {c.seconds_run / 3600:.2f} trial-hours)."
    )
    if c.pruned == 0:
        return ran + " No trial was stopped early, so early termination saved nothing."
    return (
        f"{ran} Run to the end, the {c.pruned} pruned trial(s) would have trained as many "
        f"samples as the longest {'completed ' if c.ref_completed else ''}trial "
        f"({fmt(c.full_run_samples)}): "
        f"about {round(c.iterations_full):,} trial-iterations in all. Early termination saved "
        f"about {round(c.iterations_saved):,} trial-iterations ({c.saved_frac:.1%}), "
        f"{c.seconds_saved / 3600:.2f} trial-hours."
    )


@dataclass
class Groups:
    """How trials were grouped (resources.fuse) and what the sweep got per device-hour.

    A group's device time is its wall time (first member's start to last member's end)
    times the share it held: its GPUs when trials asked for any, else its CPUs. An unfused
    trial is a group of one, so fused and unfused sweeps compare on the same scale."""

    table: pd.DataFrame  # one row per group
    device: str  # "GPU" or "CPU"
    share: float  # GPUs or CPUs a group held
    trials: int  # trials that ended
    device_hours: float

    @property
    def fused(self) -> bool:
        return bool((self.table["members"] > 1).any())

    @property
    def trials_per_device_hour(self) -> float | None:
        return self.trials / self.device_hours if self.device_hours > 0 else None


def groups(sweep: Sweep) -> Groups:
    t = sweep.trials
    res = sweep.spec.get("resources") or {}
    gpu, cpu = number(res.get("gpu")) or 0.0, number(res.get("cpu")) or 1.0
    device, share = ("GPU", gpu) if gpu > 0 else ("CPU", cpu)
    ids = t["group_id"] if "group_id" in t else pd.Series(None, index=t.index, dtype=object)
    ids = ids.where(ids.notna(), t["trial_id"]).astype(str)
    start, end = times(t["start_time"]), times(t["end_time"])
    fused = t["fused"] if "fused" in t else pd.Series(False, index=t.index)
    rows = []
    for gid, idx in t.groupby(ids, sort=False).groups.items():
        g = t.loc[idx]
        wall = (end[idx].max() - start[idx].min()).total_seconds()
        if not math.isfinite(wall) or wall <= 0:
            wall = float(g["train_s"].fillna(0).max())
        status = g["status"].value_counts()
        rows.append({
            "group": gid,
            "members": len(g),
            "fused": bool(fused[idx].fillna(False).astype(bool).any()),
            "completed": int(status.get(Status.COMPLETED, 0)),
            "pruned": int(status.get(Status.PRUNED, 0)),
            "failed/diverged": int(status.get(Status.FAILED, 0) + status.get(Status.DIVERGED, 0)),
            "wall_s": wall,
            f"{device}-hours": wall * share / 3600,
        })  # fmt: skip
    table = pd.DataFrame(rows)
    ended = int(t["status"].isin(list(schema.STATUSES)).sum())
    hours = float(table[f"{device}-hours"].sum()) if len(table) else 0.0
    return Groups(table, device, share, ended, hours)


def groups_text(g: Groups) -> str:
    rate = g.trials_per_device_hour
    pace = (
        f"{fmt(rate)} trials per {g.device}-hour ({g.trials} trials in {g.device_hours:.3g} "
        f"{g.device}-hours: each group's wall time x its {g.share:g} {g.device})"
        if rate
        else "no timed trials yet"
    )
    if not g.fused:
        return f"One trial per Ray trial (no groups): {pace}."
    sizes = g.table["members"]
    of = f"of {sizes.max()}" if sizes.nunique() == 1 else f"of up to {sizes.max()}"
    form = "as one fused module" if g.table["fused"].all() else "side by side where not fused"
    return f"{int(sizes.sum())} trials in {len(sizes)} groups {of}, trained {form}: {pace}."


def param_importance(sweep: Sweep, study: Any) -> tuple[pd.Series | None, str]:
    """fANOVA importance over the study's finished trials, or None and why not."""
    if study is None:
        return None, "parameter importance skipped: no Optuna study"
    import optuna
    from optuna.importance import FanovaImportanceEvaluator

    finished = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if len(finished) < MIN_IMPORTANCE_TRIALS:
        return None, (
            f"parameter importance skipped: {len(finished)} finished trial(s) in the study "
            f"(need at least {MIN_IMPORTANCE_TRIALS})"
        )
    multi = len(study.directions) > 1
    try:
        imp = optuna.importance.get_param_importances(
            study,
            evaluator=FanovaImportanceEvaluator(seed=0),
            target=(lambda tr: tr.values[0]) if multi else None,
        )
    except Exception as exc:  # noqa: BLE001 -- fANOVA refuses some spaces; a note, no crash
        return None, f"parameter importance skipped: {type(exc).__name__}: {short(exc)}"
    if not imp:
        return None, "parameter importance skipped: no parameter varied across finished trials"
    note = f"fANOVA over {len(finished)} finished trials"
    if len(finished) < 10:
        note += " (few trials: a rough guide only)"
    if multi:
        note += f"; target: the first objective ({sweep.objective.name})"
    return pd.Series(imp, dtype=float).sort_values(ascending=False), note


def edge_warnings(sweep: Sweep, best: pd.Series) -> list[str]:
    """Best values at the edge of a searched range: the optimum may lie outside it."""
    out = []
    for n, ps in sweep.param_specs.items():
        v = number(best.get(PREFIX + n))
        d = distribution(ps)
        if v is None or d in ("constant",):
            continue
        if d == "categorical":
            vals = [number(x) for x in ps.get("values", [])]
            if len(vals) >= 3 and all(x is not None for x in vals):
                if v == min(vals):
                    out.append(
                        f"{n}={fmt(v)} is the smallest of its values {fmt(ps['values'])}: "
                        "try smaller ones"
                    )
                elif v == max(vals):
                    out.append(
                        f"{n}={fmt(v)} is the largest of its values {fmt(ps['values'])}: "
                        "try larger ones"
                    )
            continue
        lo, hi = number(ps.get("min")), number(ps.get("max"))
        if lo is None or hi is None or hi <= lo:
            continue
        log = "log" in d and lo > 0 and v > 0
        f = math.log if log else (lambda x: x)
        pos = (f(v) - f(lo)) / (f(hi) - f(lo))
        scale = " (log scale)" if log else ""
        rng = f"[{fmt(lo)}, {fmt(hi)}]"
        if pos <= EDGE_FRAC:
            out.append(
                f"{n}={fmt(v)} is at the lower edge of its range {rng}{scale}: "
                "the optimum may lie below min; widen the range"
            )
        elif pos >= 1 - EDGE_FRAC:
            out.append(
                f"{n}={fmt(v)} is at the upper edge of its range {rng}{scale}: "
                "the optimum may lie above max; widen the range"
            )
    return out


def trial_lr(sweep: Sweep) -> pd.Series:
    """Learning rate per trial_id: the searched value, else the first reported lr, else the
    spec's fixed train.learning_rate."""
    t = sweep.trials
    if PREFIX + "learning_rate" in t:
        lr = pd.to_numeric(t[PREFIX + "learning_rate"], errors="coerce")
        return pd.Series(lr.values, index=t["trial_id"])
    out = pd.Series(np.nan, index=t["trial_id"], dtype=float)
    m = sweep.metrics
    if not m.empty and "lr" in m:
        first = m.sort_values("iteration").groupby("trial_id")["lr"].first()
        out = out.fillna(pd.to_numeric(first, errors="coerce").reindex(out.index))
    fixed = number((sweep.spec.get("train") or {}).get("learning_rate"))
    return out.fillna(fixed) if fixed is not None else out


@dataclass
class GradHealth:
    per_trial: pd.DataFrame  # one row per trial: lr, flags, grad norms, dev loss
    flagged: pd.DataFrame  # vanished, exploded or diverged
    diverged_lr: tuple[float, float] | None
    healthy_lr: tuple[float, float] | None
    correlations: pd.DataFrame
    notes: list[str] = field(default_factory=list)


def grad_health(sweep: Sweep) -> GradHealth:
    t = sweep.trials
    m = sweep.metrics
    lr = trial_lr(sweep)
    per = pd.DataFrame(
        {
            "trial": t["trial_name"].values,
            "trial_id": t["trial_id"].values,
            "trial_number": t["trial_number"].values,
            "status": t["status"].values,
            "lr": lr.reindex(t["trial_id"]).values,
            "best_dev_loss": t["best_dev_loss"].values,
        }
    )
    notes = []
    if m.empty or "grad_norm" not in m:
        notes.append("no gradient statistics in metrics.parquet")
        for c in ("vanished", "exploded", "nonfinite_steps", "grad_norm", "grad_norm_max"):
            per[c] = 0 if c in ("vanished", "exploded", "nonfinite_steps") else np.nan
    else:
        g = m.copy()
        for c in ("grad_vanishing", "grad_exploding"):
            g[c] = g[c].fillna(False).astype(bool) if c in g else False
        g["grad_nonfinite"] = pd.to_numeric(g.get("grad_nonfinite", 0), errors="coerce").fillna(0)
        for c in ("grad_norm", "grad_norm_max"):
            v = pd.to_numeric(g[c], errors="coerce") if c in g else pd.Series(np.nan, index=g.index)
            g[c] = v.where(np.isfinite(v))
        agg = g.groupby("trial_id").agg(
            vanished=("grad_vanishing", "sum"),
            exploded=("grad_exploding", "sum"),
            nonfinite_steps=("grad_nonfinite", "sum"),
            grad_norm=("grad_norm", "median"),
            grad_norm_max=("grad_norm_max", "max"),
        )
        per = per.join(agg, on="trial_id")
        for c in ("vanished", "exploded", "nonfinite_steps"):
            per[c] = per[c].fillna(0).astype(int)
    diverged = (per["status"] == Status.DIVERGED) | (per["nonfinite_steps"] > 0)
    per["diverged"] = diverged
    flagged = per[(per["vanished"] > 0) | (per["exploded"] > 0) | diverged]

    def lr_range(mask: pd.Series) -> tuple[float, float] | None:
        v = pd.to_numeric(per.loc[mask, "lr"], errors="coerce").dropna()
        return (float(v.min()), float(v.max())) if len(v) else None

    ok = ~diverged & per["status"].isin([Status.COMPLETED, Status.PRUNED])
    rows = []
    for a, b, label in (
        ("grad_norm", "lr", "median grad norm vs learning rate"),
        ("grad_norm", "best_dev_loss", "median grad norm vs best dev loss"),
        ("lr", "best_dev_loss", "learning rate vs best dev loss"),
    ):
        rho, n = spearman(per.loc[ok, a], per.loc[ok, b])
        rows.append({"pair": label, "spearman rho": rho, "trials": n, "reading": _reading(rho)})
    return GradHealth(
        per_trial=per,
        flagged=flagged,
        diverged_lr=lr_range(diverged),
        healthy_lr=lr_range(ok),
        correlations=pd.DataFrame(rows),
        notes=notes,
    )


def spearman(x: pd.Series, y: pd.Series) -> tuple[float | None, int]:
    """Spearman's rho over the rows where both are finite, and how many rows that is."""
    d = pd.DataFrame(
        {"x": pd.to_numeric(x, errors="coerce"), "y": pd.to_numeric(y, errors="coerce")}
    )
    d = d[np.isfinite(d["x"]) & np.isfinite(d["y"])]
    if len(d) < 3 or d["x"].nunique() < 2 or d["y"].nunique() < 2:
        return None, len(d)
    return float(d["x"].corr(d["y"], method="spearman")), len(d)


def _reading(rho: float | None) -> str:
    if rho is None:
        return "too few trials"
    size = round(abs(rho), 9)  # a rho of exactly 0.6 reads the same whatever the float noise
    strength = "weak" if size < 0.3 else "moderate" if size < 0.6 else "strong"
    return f"{strength} {'positive' if rho > 0 else 'negative'}" if size >= 0.05 else "none"


def objective_values(sweep: Sweep, study: Any) -> pd.DataFrame | None:
    """One column per objective, aligned with sweep.trials: from the study's trial values
    (what Optuna was told), else from trials.parquet columns named after the objectives."""
    objs = sweep.objectives
    names = [o.name for o in objs]
    t = sweep.trials
    if len(objs) == 1:
        return pd.DataFrame({names[0]: t["objective"]}, index=t.index)
    if study is not None:
        vals = {
            tr.number: tr.values
            for tr in study.get_trials(deepcopy=False)
            if tr.values is not None and len(tr.values) == len(objs)
        }
        if vals:
            rows = [vals.get(int(n)) if number(n) is not None else None for n in t["trial_number"]]
            return pd.DataFrame(
                [r if r is not None else [np.nan] * len(objs) for r in rows],
                columns=names,
                index=t.index,
            )
    out = {}
    for o in objs:
        for col in (f"metric.{o.name}", o.name, f"best_{o.name}"):
            if col in t:
                out[o.name] = pd.to_numeric(t[col], errors="coerce")
                break
    return pd.DataFrame(out, index=t.index) if len(out) == len(objs) else None


def pareto_front(values: pd.DataFrame, objectives: list[Objective]) -> pd.Index:
    """Rows no other row beats on every objective (ties kept)."""
    v = values.dropna()
    sign = np.array([-1.0 if o.maximize else 1.0 for o in objectives])
    x = v.to_numpy(dtype=float) * sign  # all minimised
    keep = []
    for i in range(len(x)):
        dominated = np.any(np.all(x <= x[i], axis=1) & np.any(x < x[i], axis=1))
        if not dominated:
            keep.append(v.index[i])
    return pd.Index(keep)


def best_confusion(sweep: Sweep, best: pd.Series) -> tuple[np.ndarray | None, list[str], str]:
    """The best trial's confusion matrix and class names, or None and why not."""
    if "confusion" not in sweep.trials:
        return None, [], "confusion matrix skipped: trials.parquet has no `confusion` column"
    raw = plain(best.get("confusion"))
    if not raw:
        return None, [], "confusion matrix skipped: the best trial has none"
    try:
        mat = np.asarray([[int(x) for x in row] for row in raw])
    except (TypeError, ValueError):
        return None, [], "confusion matrix skipped: not a list of lists of counts"
    if mat.ndim != 2 or mat.shape[0] != mat.shape[1]:
        return None, [], f"confusion matrix skipped: shape {mat.shape} is not square"
    classes: list[Any] = []
    for where in (sweep.spec, sweep.info):  # sweep.json: info["data"]["classes"]
        data = where.get("data")
        classes = (
            classes
            or where.get("classes")
            or (data.get("classes") if isinstance(data, dict) else None)
            or []
        )
    classes = [str(c) for c in classes]
    if len(classes) != mat.shape[0]:
        classes = [str(i) for i in range(mat.shape[0])]
    return mat, classes, ""
