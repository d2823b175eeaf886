"""The report's figures: each function draws one PNG from plain pandas tables.

Kept apart from harness.report so the tables and the terminal text need no matplotlib, and
so the figures can be drawn from a notebook on any frame of the same shape. Figures are
matplotlib.figure.Figure objects rendered by the Agg canvas, never pyplot: no display is
needed, no global backend is switched (a notebook's inline backend keeps working) and no
figure is left open.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.cm import ScalarMappable
from matplotlib.colors import LogNorm, Normalize
from matplotlib.figure import Figure

from harness.results import atomic_write_bytes

DPI = 90
STATUS_COLORS = {
    "COMPLETED": "tab:blue",
    "PRUNED": "tab:gray",
    "FAILED": "tab:red",
    "DIVERGED": "tab:orange",
}


def _figure(nrows: int = 1, ncols: int = 1, figsize: tuple[float, float] = (6, 3.4), **kw):
    """A pyplot-free figure on the Agg canvas, with its axes."""
    fig = Figure(figsize=figsize, layout="constrained")
    FigureCanvasAgg(fig)
    return fig, fig.subplots(nrows, ncols, **kw)


def _legend(ax, **kw) -> None:
    """A legend only where something is labelled (no matplotlib warning otherwise)."""
    if ax.get_legend_handles_labels()[0]:
        ax.legend(**kw)


def _cmap(name: str):
    return matplotlib.colormaps[name]


def save(fig: Figure, path: Path, dpi: int = DPI) -> Path:
    """Write the figure atomically (harness.results' writer)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    atomic_write_bytes(path, buf.getvalue())
    return path


def _positive(y: pd.Series) -> pd.Series:
    """Values a log axis can show."""
    y = pd.to_numeric(y, errors="coerce")
    return y.where(np.isfinite(y) & (y > 0))


def history(
    trials: pd.DataFrame,
    metric: str,
    maximize: bool,
    path: Path,
    dpi: int = DPI,
    label: str | None = None,
) -> Path:
    """Objective per trial and best so far, against trial number and against wall time.

    `trials` needs trial_number, status, `metric` and optionally wall_min (minutes from the
    sweep's start to the trial's end).
    """
    has_time = "wall_min" in trials and trials["wall_min"].notna().any()
    fig, axes = _figure(1, 2 if has_time else 1, figsize=(9 if has_time else 5, 3.2))
    axes = np.atleast_1d(axes)
    for ax, x, xlabel in zip(
        axes, ("trial_number", "wall_min"), ("trial number", "wall time (min, at trial end)")
    ):
        t = trials.dropna(subset=[x]).sort_values(x, kind="stable")
        y = pd.to_numeric(t[metric], errors="coerce")
        for status, color in STATUS_COLORS.items():
            m = (t["status"] == status) & y.notna()
            if m.any():
                ax.scatter(t.loc[m, x], y[m], s=14, color=color, label=status.lower(), zorder=3)
        done = y.where(t["status"] == "COMPLETED")
        best = done.cummax() if maximize else done.cummin()
        if best.notna().any():
            ax.step(t[x], best, where="post", color="black", lw=1.2, label="best so far")
        ax.set_xlabel(xlabel)
        ax.set_ylabel(label or metric)
        ax.grid(alpha=0.3)
    _legend(axes[0], fontsize=7, loc="best")
    fig.suptitle("optimization history", fontsize=10)
    return save(fig, path, dpi)


def learning_curves(
    metrics: pd.DataFrame, labels: dict[str, str], path: Path, dpi: int = DPI
) -> Path:
    """Dev loss and dev accuracy against iteration for the trials in `labels` (trial_id -> label)."""
    fig, axes = _figure(1, 2, figsize=(9, 3.2))
    for tid, label in labels.items():
        m = metrics[metrics["trial_id"] == tid].sort_values("iteration")
        if m.empty:
            continue
        (line,) = axes[0].plot(m["iteration"], m["dev_loss"], lw=1.2, label=label)
        axes[1].plot(m["iteration"], m["dev_acc"], lw=1.2, color=line.get_color(), label=label)
    for ax, name in zip(axes, ("dev loss", "dev accuracy")):
        ax.set_xlabel("iteration")
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
    _legend(axes[1], fontsize=7, loc="best")
    fig.suptitle("learning curves of the top trials", fontsize=10)
    return save(fig, path, dpi)


def grad_norms(
    metrics: pd.DataFrame,
    layers: pd.DataFrame,
    lr: pd.Series,
    diverged: set[str],
    best_id: str | None,
    path: Path,
    dpi: int = DPI,
) -> Path:
    """Global gradient norm of every trial (colour = learning rate) and per layer of the best.

    `lr` maps trial_id -> learning rate; diverged trials are dashed.
    """
    fig, axes = _figure(1, 2, figsize=(10, 3.4))
    ax = axes[0]
    lrs = _positive(lr).dropna()
    norm = LogNorm(lrs.min(), lrs.max()) if len(lrs) and lrs.min() < lrs.max() else None
    cmap = _cmap("viridis")
    for tid, m in metrics.groupby("trial_id", sort=False):
        m = m.sort_values("iteration")
        y = _positive(m["grad_norm"])
        if y.notna().sum() == 0:
            continue
        rate = lrs.get(tid)
        color = cmap(norm(rate)) if norm is not None and rate is not None else "tab:blue"
        ax.plot(
            m["iteration"], y, lw=1, color=color, ls="--" if tid in diverged else "-", alpha=0.85
        )
    ax.set_yscale("log")
    ax.set_xlabel("iteration")
    ax.set_ylabel("global gradient norm")
    ax.set_title("all trials (dashed: diverged)", fontsize=9)
    ax.grid(alpha=0.3, which="both")
    if norm is not None:
        sm = ScalarMappable(norm=norm, cmap=cmap)
        fig.colorbar(sm, ax=ax, label="learning rate")
    ax = axes[1]
    drawn = False
    if best_id is not None and not layers.empty:
        b = layers[layers["trial_id"] == best_id]
        for name, g in b.groupby("layer", sort=False):
            g = g.sort_values("iteration")
            y = _positive(g["grad_norm"])
            if y.notna().any():
                ax.plot(g["iteration"], y, lw=1, label=str(name))
                drawn = True
    if drawn:
        ax.set_yscale("log")
        _legend(ax, fontsize=6, loc="best", ncol=1 + sum(1 for _ in ax.get_lines()) // 8)
    else:
        ax.text(
            0.5, 0.5, "no per-layer statistics", ha="center", va="center", transform=ax.transAxes
        )
    ax.set_xlabel("iteration")
    ax.set_ylabel("layer gradient norm")
    ax.set_title("per layer, best trial", fontsize=9)
    ax.grid(alpha=0.3, which="both")
    return save(fig, path, dpi)


def _axis_values(col: pd.Series) -> tuple[pd.Series, list[str] | None]:
    """Numbers as they are; anything else as category codes (with the category labels)."""
    num = pd.to_numeric(col, errors="coerce")
    if num.notna().sum() == col.notna().sum() and col.notna().any():
        return num, None
    text = col.map(lambda v: None if v is None else str(v))
    cats = sorted(text.dropna().unique())
    return text.map({c: i for i, c in enumerate(cats)}).astype(float), cats


def param_scatter(
    trials: pd.DataFrame,
    params: Sequence[str],
    log_params: set[str],
    metric: str,
    path: Path,
    dpi: int = DPI,
    label: str | None = None,
) -> Path:
    """One scatter per parameter: value against the objective, coloured by status."""
    n = max(1, len(params))
    ncols = min(4, n)
    nrows = math.ceil(n / ncols)
    fig, axes = _figure(nrows, ncols, figsize=(3.0 * ncols, 2.6 * nrows), squeeze=False)
    y = pd.to_numeric(trials[metric], errors="coerce")
    for ax, name in zip(axes.flat, params):
        x, cats = _axis_values(trials[name])
        for status, color in STATUS_COLORS.items():
            m = (trials["status"] == status) & y.notna() & x.notna()
            if m.any():
                ax.scatter(x[m], y[m], s=14, color=color, label=status.lower())
        if cats is not None:
            ax.set_xticks(range(len(cats)))
            ax.set_xticklabels(cats, fontsize=7, rotation=20)
        elif name in log_params and (x.dropna() > 0).all() and x.notna().any():
            ax.set_xscale("log")
        ax.set_xlabel(name.removeprefix("param."), fontsize=8)
        ax.set_ylabel(label or metric, fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(params) :]:
        ax.axis("off")
    _legend(axes.flat[0], fontsize=6, loc="best")
    return save(fig, path, dpi)


def parallel(
    trials: pd.DataFrame,
    params: Sequence[str],
    log_params: set[str],
    metric: str,
    maximize: bool,
    path: Path,
    dpi: int = DPI,
    label: str | None = None,
) -> Path:
    """Parallel coordinates: every parameter scaled to [0, 1] (log where searched on a log
    scale), the objective as the last axis and as the line colour (best drawn on top)."""
    y = pd.to_numeric(trials[metric], errors="coerce")
    t = trials[y.notna()].copy()
    y = y[y.notna()]
    cols, ticks = [], []
    for name in params:
        x, cats = _axis_values(t[name])
        if cats is None and name in log_params and (x.dropna() > 0).all():
            x = np.log10(x)
        lo, hi = x.min(), x.max()
        cols.append((x - lo) / (hi - lo) if hi > lo else x * 0 + 0.5)
        ticks.append(cats)
    lo, hi = y.min(), y.max()
    cols.append((y - lo) / (hi - lo) if hi > lo else y * 0 + 0.5)
    names = [p.removeprefix("param.") for p in params] + [label or metric]
    fig, ax = _figure(figsize=(max(4.0, 1.6 * len(names)), 3.4))
    norm = Normalize(lo, hi if hi > lo else lo + 1)
    cmap = _cmap("viridis" if maximize else "viridis_r")
    order = y.sort_values(ascending=maximize).index  # best last, drawn on top
    xs = np.arange(len(names))
    for idx in order:
        ax.plot(xs, [c.get(idx, np.nan) for c in cols], color=cmap(norm(y[idx])), lw=1.2, alpha=0.8)
    for i in xs:
        ax.axvline(i, color="black", lw=0.6)
    ax.set_xticks(xs)
    ax.set_xticklabels(names, fontsize=8, rotation=15)
    ax.set_yticks([0, 1])
    ax.set_yticklabels(["min", "max"], fontsize=7)
    ax.set_xlim(-0.2, len(names) - 0.8)
    sm = ScalarMappable(norm=norm, cmap=_cmap("viridis"))
    fig.colorbar(sm, ax=ax, label=label or metric)
    ax.set_title("parallel coordinates (each axis scaled to its own range)", fontsize=9)
    return save(fig, path, dpi)


def importance(values: pd.Series, path: Path, dpi: int = DPI) -> Path:
    """fANOVA importance as horizontal bars, largest on top."""
    v = values.sort_values()
    fig, ax = _figure(figsize=(5, 0.4 * len(v) + 1.0))
    ax.barh([str(i) for i in v.index], v.values, color="tab:blue")
    ax.set_xlabel("importance (fANOVA, share of variance)")
    ax.grid(alpha=0.3, axis="x")
    return save(fig, path, dpi)


def confusion(
    matrix: np.ndarray, classes: Sequence[str], title: str, path: Path, dpi: int = DPI
) -> Path:
    """Confusion matrix (rows: true class, columns: predicted), counts written in the cells."""
    k = len(classes)
    size = min(9.0, 1.6 + 0.55 * k)
    fig, ax = _figure(figsize=(size + 1, size))
    im = ax.imshow(matrix, cmap="Blues")
    fig.colorbar(im, ax=ax)
    ax.set_xticks(range(k))
    ax.set_yticks(range(k))
    ax.set_xticklabels(classes, rotation=45, ha="right", fontsize=7)
    ax.set_yticklabels(classes, fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    top = matrix.max() if matrix.size else 0
    for i in range(k):
        for j in range(k):
            ax.text(
                j,
                i,
                str(int(matrix[i, j])),
                ha="center",
                va="center",
                fontsize=6,
                color="white" if matrix[i, j] > top / 2 else "black",
            )
    ax.set_title(title, fontsize=9)
    return save(fig, path, dpi)


def pareto(
    values: pd.DataFrame, front: pd.Index, names: Sequence[str], path: Path, dpi: int = DPI
) -> Path:
    """First two objectives of every trial, the Pareto-optimal ones joined by a line."""
    a, b = names[0], names[1]
    fig, ax = _figure(figsize=(5, 3.6))
    ax.scatter(values[a], values[b], s=14, color="tab:gray", label="trials")
    f = values.loc[front].sort_values(a)
    ax.plot(f[a], f[b], "o-", color="tab:red", ms=5, lw=1.2, label="Pareto front")
    ax.set_xlabel(a)
    ax.set_ylabel(b)
    ax.grid(alpha=0.3)
    _legend(ax, fontsize=7)
    return save(fig, path, dpi)


def anytime(curves: dict[str, pd.DataFrame], metric: str, path: Path, dpi: int = DPI) -> Path:
    """Best so far against cumulative trial-hours, one line per sweep (columns: hours, best)."""
    fig, ax = _figure(figsize=(6, 3.4))
    for name, c in curves.items():
        if not c.empty:
            ax.step(c["hours"], c["best"], where="post", lw=1.3, label=name)
    ax.set_xlabel("cumulative trial-hours")
    ax.set_ylabel(metric)
    ax.grid(alpha=0.3)
    _legend(ax, fontsize=7)
    ax.set_title("best so far against compute", fontsize=9)
    return save(fig, path, dpi)
