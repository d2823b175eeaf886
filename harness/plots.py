"""The report's figures: each function draws one matplotlib Figure from plain pandas tables.

Kept apart from harness.report so the tables and the terminal text need no matplotlib, and
so the figures can be drawn from a notebook on any frame of the same shape; `save` writes
one as a PNG (atomically, 150 dpi). Figures are matplotlib.figure.Figure objects on the Agg
canvas, never pyplot: no display is needed, no global backend is switched (a notebook's
inline backend keeps working) and no figure is left open. The one exception is
`importance`, which Optuna draws (through pyplot, inside an rc_context so its style does
not leak; the figure is closed in pyplot before it is returned).

Which figures Optuna draws: parameter importance only. The others need what only the
Parquet tables hold: pruned and diverged trials at their last report (history, params,
parallel), wall time, dev curves, gradient norms and the confusion matrix.

Every figure names trials as the report does: the `trial_name` column ('9c6ab8ba (#3)').
"""

from __future__ import annotations

import functools
import io
import math
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
import pandas as pd
from matplotlib import font_manager
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.cm import ScalarMappable
from matplotlib.collections import LineCollection
from matplotlib.colors import LogNorm, Normalize
from matplotlib.figure import Figure
from matplotlib.font_manager import FontEntry, FontProperties
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator, NullFormatter

from harness.files import write_bytes
from harness.schema import Status
from harness.values import fmt

DPI = 150
STATUS_COLORS = {Status.COMPLETED: "tab:blue", Status.PRUNED: "tab:gray",
                 Status.FAILED: "tab:red", Status.DIVERGED: "tab:orange"}  # fmt: skip
STATUS_LABELS = {Status.COMPLETED: "completed", Status.PRUNED: "pruned (last report)",
                 Status.FAILED: "failed", Status.DIVERGED: "diverged (last report)"}  # fmt: skip
STATUS_STYLES = {Status.COMPLETED: "-", Status.PRUNED: "--", Status.DIVERGED: ":",
                 Status.FAILED: ":"}  # fmt: skip


def _figure(nrows: int = 1, ncols: int = 1, figsize: tuple[float, float] = (6, 3.4), **kw):
    """A pyplot-free figure on the Agg canvas, with its axes."""
    fig = Figure(figsize=figsize, layout="constrained")
    FigureCanvasAgg(fig)
    return fig, fig.subplots(nrows, ncols, **kw)


def _legend(ax, **kw) -> None:
    """A legend only where something is labelled (no matplotlib warning otherwise)."""
    if ax.get_legend_handles_labels()[0]:
        ax.legend(**kw)


def _by_status(ax, x: pd.Series, y: pd.Series, status: pd.Series, **kw) -> None:
    """Points coloured and labelled by trial status (the rows where x and y are known)."""
    for name, color in STATUS_COLORS.items():
        m = (status == name) & x.notna() & y.notna()
        if m.any():
            ax.scatter(x[m], y[m], s=14, color=color, label=STATUS_LABELS[name], **kw)


def _names(trials: pd.DataFrame) -> dict[str, str]:
    """trial_id -> how the report names the trial."""
    names = trials["trial_name"] if "trial_name" in trials else trials["trial_id"]
    return dict(zip(trials["trial_id"].astype(str), names.astype(str)))


def save(fig: Figure, path: Path, dpi: int = DPI) -> Path:
    """Write the figure as a PNG, atomically (harness.files)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    write_bytes(path, buf.getvalue())
    return path


def _paths(frame: pd.DataFrame, col: str, ids: Sequence[str] | None = None) -> dict[str, Any]:
    """trial_id -> an (n, 2) array of (iteration, value) where `col` has a value, by
    iteration: one pass over the table, not one filter per trial (a figure of 5,000 trials
    spent more time finding each trial's rows than drawing them)."""
    if ids is not None:
        frame = frame[frame["trial_id"].astype(str).isin(set(ids))]
    y = pd.to_numeric(frame[col], errors="coerce") if len(frame) else frame[col]
    ok = frame[y.notna()].assign(_y=y[y.notna()]).sort_values(["trial_id", "iteration"])
    tid = ok["trial_id"].astype(str).to_numpy()
    xy = np.column_stack([ok["iteration"].to_numpy(float), ok["_y"].to_numpy(float)])
    cuts = np.flatnonzero(tid[1:] != tid[:-1]) + 1
    return {str(tid[c]): part for c, part in zip([0, *cuts], np.split(xy, cuts)) if len(part)}


def _lines(ax, paths: Sequence[np.ndarray], **kw) -> None:
    """Many lines as one collection (drawn in a fraction of the time of one Line2D each),
    the axes' limits grown to hold them."""
    if len(paths):
        ax.add_collection(LineCollection(list(paths), **kw))
        ax.autoscale_view()


def _positive(y: pd.Series) -> pd.Series:
    """Values a log axis can show."""
    y = pd.to_numeric(y, errors="coerce")
    return y.where(np.isfinite(y) & (y > 0))


def log_ticks(lo: float, hi: float, most: int = 4) -> list[float]:
    """Round values (1, 2, 5 x 10^k, then coarser) inside [lo, hi] for a log axis: at most
    `most` of them, so their labels never run into each other."""
    if not (lo > 0 and hi >= lo and math.isfinite(hi)):
        return []

    def inside(mantissas: tuple[int, ...]) -> list[float]:
        e0, e1 = math.floor(math.log10(lo)), math.ceil(math.log10(hi))
        vals = [float(f"{m}e{e}") for e in range(e0, e1 + 1) for m in mantissas]
        return [v for v in vals if lo * (1 - 1e-9) <= v <= hi * (1 + 1e-9)]

    if len(inside((1, 2, 5))) < 2:  # less than an octave: the ends, to 2 significant digits
        return sorted({float(f"{lo:.2g}"), float(f"{hi:.2g}")})
    for mantissas in ((1, 2, 5), (1, 3), (1,)):
        ticks = inside(mantissas)
        if 2 <= len(ticks) <= most:
            return ticks
    decades = inside((1,))
    return decades[:: math.ceil(len(decades) / most)]


# ------------------------------------------------------------------------------------------
# one sweep


def history(trials: pd.DataFrame, metric: str, maximize: bool, label: str | None = None) -> Figure:
    """Objective per trial and the best completed trial so far, against trial number and
    against wall time.

    `trials` needs trial_id, trial_number, status, `metric` and optionally trial_name and
    wall_min (minutes from the sweep's start to the trial's end). Pruned and diverged trials
    sit at their last report; the best-so-far line carries the best value across them
    (it never breaks), and the best trial is starred and named in the legend.
    """
    has_time = "wall_min" in trials and trials["wall_min"].notna().any()
    fig, axes = _figure(1, 2 if has_time else 1, figsize=(10 if has_time else 5.5, 3.6))
    axes = np.atleast_1d(axes)
    names = _names(trials)
    for ax, x, xlabel in zip(
        axes, ("trial_number", "wall_min"), ("trial number", "wall time (min, at trial end)")
    ):
        t = trials.dropna(subset=[x]).sort_values(x, kind="stable")
        y = pd.to_numeric(t[metric], errors="coerce")
        _by_status(ax, t[x], y, t["status"], zorder=3)
        done = y.where(t["status"] == Status.COMPLETED)
        if done.notna().any():
            best = (done.cummax() if maximize else done.cummin()).ffill()
            ax.step(t[x], best, where="post", color="black", lw=1.2, label="best so far")
            i = done.idxmax() if maximize else done.idxmin()
            ax.scatter(
                [t.at[i, x]],
                [y[i]],
                marker="*",
                s=130,
                color="gold",
                edgecolor="black",
                lw=0.6,
                zorder=4,
                label=f"best: {names[str(t.at[i, 'trial_id'])]}",
            )
        ax.set(xlabel=xlabel, ylabel=label or metric)
        ax.grid(alpha=0.3)
    _legend(axes[0], fontsize=7, loc="best")
    failed = int((trials["status"] == Status.FAILED).sum())
    note = f" ({failed} failed trial(s) have no value)" if failed else ""
    fig.suptitle(f"optimization history{note}", fontsize=10)
    return fig


def learning_curves(
    metrics: pd.DataFrame,
    trials: pd.DataFrame,
    top: Sequence[str],
    baseline: str | None = None,
) -> Figure:
    """Dev loss and dev accuracy against iteration: the `top` trial ids in colour, the
    baseline trial dashed black, and every pruned trial faded, with an x where early
    termination stopped it (what the scheduler cut is visible beside what it kept)."""
    fig, axes = _figure(1, 2, figsize=(10, 3.6))
    names = _names(trials)
    status = dict(zip(trials["trial_id"].astype(str), trials["status"]))
    cols = ("dev_loss", "dev_acc")
    curves = {col: _paths(metrics, col) for col in cols}
    seen = set(curves[cols[0]]) | set(curves[cols[1]])

    def xy(tid: str, col: str) -> tuple[np.ndarray, np.ndarray]:
        m = curves[col].get(tid, np.empty((0, 2)))
        return m[:, 0], m[:, 1]

    pruned = [
        tid for tid in seen if status.get(tid) == Status.PRUNED and tid not in top and tid != baseline
    ]
    for ax, col in zip(axes, cols):  # one collection, and the x where each was stopped
        paths = [curves[col][t] for t in pruned if t in curves[col]]
        _lines(ax, paths, color="tab:gray", alpha=0.35, lw=0.8, gid="pruned",
               label=f"pruned ({len(pruned)}; x: where stopped)")  # fmt: skip
        if paths:
            ends = np.array([p[-1] for p in paths])
            ax.plot(ends[:, 0], ends[:, 1], "x", ls="none", color="tab:gray", ms=4)
    for tid in top:
        if tid == baseline or tid not in seen:
            continue
        color = None
        for ax, col in zip(axes, cols):
            (line,) = ax.plot(*xy(tid, col), lw=1.3, color=color, label=names.get(tid, tid))
            color = line.get_color()
    if baseline is not None and baseline in seen:
        for ax, col in zip(axes, cols):
            ax.plot(
                *xy(baseline, col),
                color="black",
                ls="--",
                marker="o",
                ms=3,
                lw=1.4,
                label=f"baseline {names.get(baseline, baseline)}",
            )
    for ax, name in zip(axes, ("dev loss", "dev accuracy")):
        ax.set(xlabel="iteration", ylabel=name)
        ax.grid(alpha=0.3)
    _legend(axes[1], fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    fig.suptitle("learning curves of the top trials", fontsize=10)
    return fig


def grad_norms(
    metrics: pd.DataFrame,
    layers: pd.DataFrame,
    lr: pd.Series,
    trials: pd.DataFrame,
    diverged: set[str],
    best_id: str | None,
) -> Figure:
    """Global gradient norm of every trial (colour = learning rate; `lr` maps trial_id to it)
    and per layer of the best trial. Diverged trials are dashed and named in a legend; the
    title says so only when one was drawn."""
    fig, axes = _figure(1, 2, figsize=(10.5, 3.6))
    names = _names(trials)
    ax = axes[0]
    lrs = _positive(lr).dropna()
    norm = LogNorm(lrs.min(), lrs.max()) if len(lrs) and lrs.min() < lrs.max() else None
    cmap = matplotlib.colormaps["viridis"]
    dashed = 0
    ok = metrics.assign(grad_norm=_positive(metrics["grad_norm"]))  # statistics are sampled:
    paths = _paths(ok, "grad_norm")  # reports without them are skipped, not gaps
    calm, colors = [], []
    for tid, path in paths.items():
        rate = lrs.get(tid)
        color = cmap(norm(rate)) if norm is not None and rate is not None else "tab:blue"
        if tid in diverged:  # few, each named in the legend
            dashed += 1
            ax.plot(path[:, 0], path[:, 1], marker="o", ms=2, lw=1.3, color=color, ls="--",
                    alpha=0.85, label=f"diverged: {names.get(tid, tid)}")  # fmt: skip
        else:  # every other trial: one collection of lines, one of points
            calm.append(path)
            colors.append(matplotlib.colors.to_rgba(color))
    _lines(ax, calm, colors=colors, lw=1, alpha=0.85)
    if calm:
        points = np.concatenate(calm)
        dots = np.repeat(np.array(colors).reshape(-1, 4), [len(p) for p in calm], axis=0)
        ax.scatter(points[:, 0], points[:, 1], s=4, c=dots, alpha=0.85, linewidths=0)
    ax.set_yscale("log")
    ax.set(xlabel="iteration", ylabel="global gradient norm")
    ax.set_title("all trials" + ("; dashed: diverged" if dashed else ""), fontsize=9)
    ax.grid(alpha=0.3, which="both")
    _legend(ax, fontsize=6, loc="best")
    if norm is not None:
        fig.colorbar(ScalarMappable(norm=norm, cmap=cmap), ax=ax, label="learning rate")
    ax = axes[1]
    drawn = False
    if best_id is not None and not layers.empty:
        b = layers[layers["trial_id"] == best_id]
        for name, g in b.groupby("layer", sort=False):
            g = g.sort_values("iteration")
            y = _positive(g["grad_norm"])
            ok = y.notna()
            if ok.any():
                ax.plot(g.loc[ok, "iteration"], y[ok], marker="o", ms=2, lw=1, label=str(name))
                drawn = True
    if drawn:
        ax.set_yscale("log")
        _legend(ax, fontsize=6, loc="best", ncol=1 + sum(1 for _ in ax.get_lines()) // 8)
    else:
        ax.text(
            0.5, 0.5, "no per-layer statistics", ha="center", va="center", transform=ax.transAxes
        )
    ax.set(xlabel="iteration", ylabel="layer gradient norm")
    best = "" if best_id is None else f" {names.get(str(best_id), best_id)}"
    ax.set_title(f"per layer, best trial{best}", fontsize=9)
    ax.grid(alpha=0.3, which="both")
    return fig


def _axis_values(col: pd.Series, categorical: bool = False) -> tuple[pd.Series, list[str] | None]:
    """Numbers as they are; choices (`categorical`, or anything not a number) as evenly
    spaced codes, with their labels (numbers in numeric order)."""
    num = pd.to_numeric(col, errors="coerce")
    numeric = bool(col.notna().any()) and num.notna().sum() == col.notna().sum()
    if numeric and not categorical:
        return num, None
    if numeric:
        values = sorted(num.dropna().unique())
        return num.map({v: i for i, v in enumerate(values)}).astype(float), [fmt(v) for v in values]
    text = col.map(lambda v: None if v is None else str(v))
    cats = sorted(text.dropna().unique())
    return text.map({c: i for i, c in enumerate(cats)}).astype(float), cats


def param_scatter(
    trials: pd.DataFrame,
    params: Sequence[str],
    log_params: set[str],
    metric: str,
    label: str | None = None,
    categorical: set[str] = frozenset(),
) -> Figure:
    """One scatter per parameter: value against the objective, coloured by status. Choices
    (`categorical`) sit evenly spaced; log axes carry a few round values, so their labels
    never collide."""
    n = max(1, len(params))
    ncols = min(4, n)
    nrows = math.ceil(n / ncols)
    fig, axes = _figure(nrows, ncols, figsize=(3.2 * ncols, 2.8 * nrows), squeeze=False)
    y = pd.to_numeric(trials[metric], errors="coerce")
    for ax, name in zip(axes.flat, params):
        x, cats = _axis_values(trials[name], name in categorical)
        _by_status(ax, x, y, trials["status"])
        shown = x[y.notna()].dropna()
        if cats is not None:
            ax.set_xticks(range(len(cats)))
            ax.set_xticklabels(cats, fontsize=7, rotation=20)
        elif name in log_params and len(shown) and (shown > 0).all():
            ax.set_xscale("log")
            ticks = log_ticks(float(shown.min()), float(shown.max()))
            ax.set_xticks(ticks, [fmt(v) for v in ticks])
            ax.xaxis.set_minor_formatter(NullFormatter())
        else:
            ax.xaxis.set_major_locator(MaxNLocator(nbins=4))
        ax.set_xlabel(name.removeprefix("param."), fontsize=8)
        ax.set_ylabel(label or metric, fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(params) :]:
        ax.axis("off")
    _legend(axes.flat[0], fontsize=6, loc="best")
    return fig


def _parallel_axis(
    col: pd.Series, log: bool, categorical: bool = False
) -> tuple[pd.Series, list[tuple[float, str]]]:
    """One axis of the parallel plot: the values scaled to [0, 1] and its labelled ticks
    (position, text) in the parameter's own values."""
    x, cats = _axis_values(col, categorical)
    if cats is not None:
        lo, hi = 0.0, float(len(cats) - 1)
        ticks = list(enumerate(cats))
    elif log and x.notna().any() and (x.dropna() > 0).all():
        ticks = [(math.log10(v), fmt(v)) for v in log_ticks(x.min(), x.max())]
        x = np.log10(x)
        lo, hi = x.min(), x.max()
    else:
        lo, hi = x.min(), x.max()
        inside = [v for v in MaxNLocator(nbins=4).tick_values(lo, hi) if lo <= v <= hi]
        ticks = [(v, fmt(v)) for v in (inside if len(inside) >= 2 else [lo, hi])]
    if not hi > lo:
        return x * 0 + 0.5, [(0.5, fmt(col.dropna().iloc[0]) if col.notna().any() else "-")]
    scale = hi - lo
    return (x - lo) / scale, [((p - lo) / scale, text) for p, text in ticks]


def parallel(
    trials: pd.DataFrame,
    params: Sequence[str],
    log_params: set[str],
    metric: str,
    maximize: bool,
    label: str | None = None,
    categorical: set[str] = frozenset(),
) -> Figure:
    """Parallel coordinates of every trial with a value of `metric` (pruned dashed and
    diverged dotted, at their last report): one vertical axis per parameter (log scale where
    it is searched on one) and one for the objective, each labelled with its own values.
    Lines take the colour bar's colours, the best trial brightest and drawn last, on top."""
    y = pd.to_numeric(trials[metric], errors="coerce")
    t = trials[y.notna()]
    y = y[y.notna()]
    names = [p.removeprefix("param.") for p in params] + [label or metric]
    axes = [_parallel_axis(t[p], p in log_params, p in categorical) for p in params]
    axes.append(_parallel_axis(y, False))
    fig, ax = _figure(figsize=(max(5.0, 1.9 * len(names)), 3.8))
    lo, hi = y.min(), y.max()
    norm = Normalize(lo, hi if hi > lo else lo + 1)
    cmap = matplotlib.colormaps["viridis" if maximize else "viridis_r"]  # bright = better, lines and bar alike
    xs = np.arange(len(names))
    order = y.sort_values(ascending=maximize).index  # best last, drawn on top
    stack = np.column_stack([scaled.reindex(order).to_numpy(float) for scaled, _ in axes])
    status = t.loc[order, "status"].to_numpy()
    values = cmap(norm(y[order].to_numpy(float)))
    # one collection per status, completed last: 5,000 single lines took longer than the
    # rest of a report
    for which in sorted(set(status), key=lambda s: (s == Status.COMPLETED, str(s))):
        rows = status == which
        done = which == Status.COMPLETED
        _lines(ax, [np.column_stack([xs, v]) for v in stack[rows]], colors=values[rows],
               lw=1.2 if done else 0.9, linestyles=STATUS_STYLES.get(which, "-"),
               alpha=0.85 if done else 0.6, gid=f"status:{which}")  # fmt: skip
    done = y[t["status"] == Status.COMPLETED]
    pool = done if len(done) else y
    best = pool.idxmax() if maximize else pool.idxmin()
    ax.plot(
        xs,
        [scaled.get(best, np.nan) for scaled, _ in axes],
        color=cmap(norm(y[best])),
        lw=2.6,
        label=f"best: {_names(t)[str(t.at[best, 'trial_id'])]}",
    )
    for status in (Status.COMPLETED, Status.PRUNED, Status.DIVERGED):
        if (t["status"] == status).any():
            ax.add_line(
                Line2D([], [], color="gray", ls=STATUS_STYLES[status], label=STATUS_LABELS[status])
            )
    for i, (name, (_, ticks)) in enumerate(zip(names, axes)):
        ax.axvline(i, color="black", lw=0.7)
        for pos, text in ticks:
            ax.plot([i - 0.025, i], [pos, pos], color="black", lw=0.7)
            ax.text(
                i - 0.04,
                pos,
                text,
                ha="right",
                va="center",
                fontsize=6,
                gid=f"tick:{name}",
                bbox={"boxstyle": "square,pad=0.1", "fc": "white", "ec": "none", "alpha": 0.75},
            )
    ax.set_xticks(xs, names, fontsize=8)
    ax.set_yticks([])
    ax.set_xlim(-0.45, len(names) - 0.8)
    ax.set_ylim(-0.06, 1.06)
    for side in ("left", "right", "top"):
        ax.spines[side].set_visible(False)
    fig.colorbar(ScalarMappable(norm=norm, cmap=cmap), ax=ax, label=label or metric)
    _legend(ax, fontsize=6, loc="upper left", bbox_to_anchor=(0.0, -0.12), ncol=4)
    ax.set_title("parallel coordinates (each axis in its own values)", fontsize=9)
    return fig


def _given(values: dict[str, float]) -> Any:
    """An Optuna importance evaluator that hands back importances already computed (the
    report's fANOVA table), so the figure shows exactly the table's numbers."""
    from optuna.importance import BaseImportanceEvaluator

    class Given(BaseImportanceEvaluator):
        def evaluate(self, study: Any, params: Any = None, *, target: Any = None) -> dict:
            return dict(values)

    return Given()


def importance(study: Any, values: pd.Series, target_name: str, multi: bool = False) -> Figure:
    """Parameter importance as Optuna draws it (optuna.visualization.matplotlib), from the
    importances already computed (`values`, largest first) for the first objective."""
    import matplotlib.pyplot as plt
    from optuna.exceptions import ExperimentalWarning
    from optuna.visualization.matplotlib import plot_param_importances

    with warnings.catch_warnings(), matplotlib.rc_context():  # Optuna sets a global style
        warnings.simplefilter("ignore", ExperimentalWarning)
        ax = plot_param_importances(
            study,
            evaluator=_given(values.sort_values(ascending=False).to_dict()),
            target=(lambda tr: tr.values[0]) if multi else None,
            target_name=target_name,
        )
    fig = ax.figure
    plt.close(fig)  # ours now: pyplot keeps no reference
    ax.set_xlabel("importance (fANOVA, share of variance)")
    fig.set_size_inches(6, 0.45 * len(values) + 1.6)
    fig.set_layout_engine("constrained")
    return fig


# ------------------------------------------------------------------------------------------
# class names: Chinese names need a font that has their glyphs

_PLACEHOLDER_FONTS = ("Last Resort",)  # a box for every code point: covers all, draws none


@functools.cache
def _codepoints(path: str) -> frozenset[int]:
    from matplotlib.ft2font import FT2Font

    try:
        return frozenset(FT2Font(path).get_charmap())
    except (OSError, RuntimeError, ValueError):
        return frozenset()


def font_covering(text: str) -> FontEntry | None:
    """An installed font (matplotlib's font manager) with a glyph for every character of
    `text`: matplotlib's default font when it has them all, else the first regular face that
    does; None when no font does."""
    need = {ord(c) for c in text if not c.isspace()}
    default = font_manager.findfont(FontProperties())

    def order(e: FontEntry) -> tuple:
        regular = e.style == "normal" and e.weight in (400, "normal", "regular")
        return (e.fname != default, not regular, e.name, e.fname)

    for entry in sorted(font_manager.fontManager.ttflist, key=order):
        if any(p in entry.name for p in _PLACEHOLDER_FONTS):
            continue
        if need <= _codepoints(entry.fname):
            return entry
    return None


def class_font(classes: Sequence[Any]) -> FontEntry | None:
    """The font `confusion` draws the class names with; None means it numbers the classes
    instead (no installed font has their glyphs: Chinese names on a machine without CJK
    fonts), and the report's caption maps index -> name."""
    return font_covering("".join(str(c) for c in classes))


def confusion(matrix: np.ndarray, classes: Sequence[Any], title: str) -> Figure:
    """Confusion matrix (rows: true class, columns: predicted), counts written in the cells.
    Class names in a font that has their glyphs (class_font), else class indices."""
    k = len(classes)
    font = class_font(classes)
    size = min(9.0, 1.8 + 0.55 * k)
    fig, ax = _figure(figsize=(size + 1, size))
    im = ax.imshow(matrix, cmap="Blues")
    fig.colorbar(im, ax=ax)
    ax.set_xticks(range(k))
    ax.set_yticks(range(k))
    if font is None:
        labels = [str(i) for i in range(k)]
        prop = FontProperties(size=7)
        ax.set(xlabel="predicted (class index)", ylabel="true (class index)")
    else:
        labels = [str(c) for c in classes]
        prop = FontProperties(fname=font.fname, size=7)
        ax.set(xlabel="predicted", ylabel="true")
    ax.set_xticklabels(labels, rotation=45 if font else 0, ha="right" if font else "center")
    ax.set_yticklabels(labels)
    for lab in ax.get_xticklabels() + ax.get_yticklabels():
        lab.set_fontproperties(prop)
    for i in range(k):
        for j in range(k):
            ax.text(
                j,
                i,
                str(int(matrix[i, j])),
                ha="center",
                va="center",
                fontsize=6,
                color="white" if im.norm(matrix[i, j]) > 0.5 else "black",
            )
    ax.set_title(title, fontsize=9)
    return fig


def pareto(values: pd.DataFrame, front: pd.Index, names: Sequence[str]) -> Figure:
    """First two objectives of every trial, the Pareto-optimal ones joined by a line."""
    a, b = names[0], names[1]
    fig, ax = _figure(figsize=(5, 3.6))
    ax.scatter(values[a], values[b], s=14, color="tab:gray", label="trials")
    f = values.loc[front].sort_values(a)
    ax.plot(f[a], f[b], "o-", color="tab:red", ms=5, lw=1.2, label="Pareto front")
    ax.set(xlabel=a, ylabel=b)
    ax.grid(alpha=0.3)
    _legend(ax, fontsize=7)
    return fig


# ------------------------------------------------------------------------------------------
# several sweeps


def anytime(curves: dict[str, pd.DataFrame], metric: str) -> Figure:
    """Best so far against cumulative trial-hours, one line per sweep (columns: hours, best)."""
    fig, ax = _figure(figsize=(6, 3.4))
    for name, c in curves.items():
        if not c.empty:
            ax.step(c["hours"], c["best"], where="post", lw=1.3, label=name)
    ax.set(xlabel="cumulative trial-hours", ylabel=metric)
    ax.grid(alpha=0.3)
    _legend(ax, fontsize=7)
    ax.set_title("best so far against compute", fontsize=9)
    return fig


# ------------------------------------------------------------------------------------------
# search benchmarks (harness.bench.searchers)


def searchers_anytime(
    c: Any, metric: str, target: float, tolerance_floor: float, title: str,
    xlabel: str = "cumulative trial-seconds",
) -> Figure:
    """`bench searchers`: best so far (top) and regret (bottom, symlog) against seconds, per
    combination the IQM over seeds with its bootstrap band (c: tables.Curves)."""
    fig, axes = _figure(2, 1, (7, 6.4), squeeze=False)
    ax, axr = axes[:, 0]
    colors = _combo_colors(list(c.best))
    for combo in c.best:
        color, ls = colors[combo], "--" if combo.endswith("+none") else "-"
        for a, (mid, lo, hi) in ((ax, c.best[combo]), (axr, c.regret[combo])):
            a.plot(c.x, mid, ls, color=color, lw=1.4, label=combo, drawstyle="steps-post")
            a.fill_between(c.x, lo, hi, color=color, alpha=0.15, step="post", lw=0)
            _end_dot(a, c.x, mid, c.end_s[combo], color)
    ax.axhline(target, color="k", lw=0.8, ls=":", label="target")
    ax.set_ylabel(f"best {metric} (IQM over seeds)")
    ax.set_title(title, fontsize=9)
    axr.set_yscale("symlog", linthresh=tolerance_floor)
    axr.set(ylabel="regret to best found", xlabel=xlabel)
    for a in (ax, axr):
        a.grid(alpha=0.3)
        a.set_xlim(left=0)
    _legend(ax, fontsize=7, loc="lower right")
    return fig


def _end_dot(ax: Any, x: np.ndarray, y: np.ndarray, end: float, color: str) -> None:
    i = min(int(np.searchsorted(x, end, side="right")) - 1, len(x) - 1)
    if i >= 0 and math.isfinite(y[i]):
        ax.plot([end], [y[i]], "o", color=color, ms=4)


def _combo_colors(combos: list[str]) -> dict[str, str]:
    """One color per method (solid with early termination, dashed without)."""
    palette = ["tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown",
               "tab:pink", "tab:olive", "tab:cyan", "tab:gray"]  # fmt: skip
    methods = list(dict.fromkeys(c.split("+")[0] for c in combos))
    return {c: palette[methods.index(c.split("+")[0]) % len(palette)] for c in combos}


def searchers_final(runs: pd.DataFrame, summary: pd.DataFrame, metric: str) -> Figure:
    """`bench searchers`: each seed's final best (dots, one marker per seed) and the IQM with
    its band per combination."""
    fig, ax = _figure(figsize=(7, 0.45 * len(summary) + 1.4))
    finals = runs.groupby(["combo", "seed"], sort=False)["best_so_far"].last().reset_index()
    order = list(summary["combo"])
    markers = "osD^v<>p*h"
    seeds = sorted(finals["seed"].unique())
    for i, combo in enumerate(order):
        f = finals[finals["combo"] == combo]
        for _, r in f.iterrows():
            m = markers[seeds.index(r["seed"]) % len(markers)]
            ax.plot(r["best_so_far"], i, m, color="tab:gray", ms=4, alpha=0.8)
        s = summary[summary["combo"] == combo].iloc[0]
        ax.plot([s.final_best_lo, s.final_best_hi], [i, i], "-", color="tab:blue", lw=3, alpha=0.5)
        ax.plot([s.final_best_iqm], [i], "|", color="tab:blue", ms=14, mew=2)
    ax.set_yticks(range(len(order)), order, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel(f"final best {metric} (dots: seeds; bar: IQM and 95% bootstrap band)")
    ax.grid(alpha=0.3, axis="x")
    return fig


def replay_regret(summary: pd.DataFrame, table: str, metric: str) -> Figure:
    """`bench searchers --replay`: IQM final regret with its 95% bootstrap band per
    combination, one marker per budget (log x: regrets span decades)."""
    combos = list(dict.fromkeys(summary["combo"]))
    fig, ax = _figure(figsize=(7, 0.32 * len(combos) + 1.6))
    markers = "osD^v"
    for k, (budget, s) in enumerate(summary.groupby("budget", sort=True)):
        y = np.array([combos.index(c) for c in s["combo"]]) + 0.18 * (k - 0.5)
        mid, lo, hi = (np.maximum(s[c].to_numpy(float), 1e-4)  # the log axis' floor
                       for c in ("iqm_regret", "ci_lo", "ci_hi"))  # fmt: skip
        ax.errorbar(mid, y, xerr=[mid - lo, hi - mid], fmt=markers[k % len(markers)], ms=4,
                    capsize=2, lw=1, label=f"{budget} trials")  # fmt: skip
    ax.set_xscale("log")
    ax.set_yticks(range(len(combos)), combos, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel(f"final regret in {metric} (IQM over seeds, 95% bootstrap band; log)")
    ax.set_title(f"replayed on {table}", fontsize=9)
    ax.grid(alpha=0.3, axis="x")
    _legend(ax, fontsize=7)
    return fig
