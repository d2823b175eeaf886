"""harness.plots: every figure of a report, drawn on a sweep with completed, pruned, failed
and diverged trials and Chinese class names (test_report's folder, written by the sweep's
own ResultsWriter beside a real Optuna study), checked for what it must show."""

from __future__ import annotations

import itertools
import struct
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
import pytest
from helpers import CLASSES, assert_png, make_folder, trial_name

from harness import plots, report

FIGURES = {
    "history.png",
    "curves.png",
    "grad_norms.png",
    "params.png",
    "parallel.png",
    "importance.png",
    "confusion.png",
}


@pytest.fixture(scope="module")
def rep(tmp_path_factory) -> report.SweepReport:
    folder = make_folder(tmp_path_factory.mktemp("res") / "textcnn")
    return report.build_report(report.load_sweep(folder), tmp_path_factory.mktemp("out"))


def png_dpi(path: Path) -> float:
    """The resolution a PNG says it has (its pHYs chunk, pixels per metre)."""
    raw = path.read_bytes()
    i = raw.index(b"pHYs")
    per_metre = struct.unpack(">I", raw[i + 4 : i + 8])[0]
    return per_metre * 0.0254


def labels(ax) -> list[str]:
    return ax.get_legend_handles_labels()[1]


def overlaps(texts) -> list[tuple[str, str]]:
    """Pairs of drawn texts whose boxes intersect."""
    shown = [t for t in texts if t.get_visible() and t.get_text()]
    boxes = [(t.get_text(), t.get_window_extent()) for t in shown]
    return [(a, b) for (a, ba), (b, bb) in itertools.combinations(boxes, 2) if ba.overlaps(bb)]


def test_every_figure_drawn_at_150_dpi(rep: report.SweepReport) -> None:
    assert {p.name for p in rep.figures} == FIGURES
    assert set(rep.drawn) == FIGURES
    for p in rep.figures:
        assert_png(p)
        assert png_dpi(p) == pytest.approx(150, abs=0.5), p.name


def test_history_best_so_far_never_breaks(rep: report.SweepReport) -> None:
    fig = rep.drawn["history.png"]
    axes = [ax for ax in fig.axes if ax.get_lines()]
    assert len(axes) == 2  # trial number and wall time
    for ax in axes:
        (line,) = [ln for ln in ax.get_lines() if ln.get_label() == "best so far"]
        y = np.asarray(line.get_ydata(), dtype=float)
        start = int(np.argmax(np.isfinite(y)))
        # pruned, failed and diverged trials (6..9) come after the best: the line goes on
        assert np.isfinite(y[start:]).all(), y
        assert (np.diff(y[start:]) >= 0).all() and y[-1] == pytest.approx(0.90)
    assert f"best: {trial_name(1)}" in labels(axes[0])
    assert "pruned (last report)" in labels(axes[0])
    assert "diverged (last report)" in labels(axes[0])
    assert "1 failed" in fig.get_suptitle()


def test_parallel_axes_carry_values_and_pruned_trials(rep: report.SweepReport) -> None:
    fig = rep.drawn["parallel.png"]
    ax = fig.axes[0]
    ticks: dict[str, list[str]] = {}
    for t in ax.texts:
        ticks.setdefault(t.get_gid(), []).append(t.get_text())
    assert set(ticks) == {"tick:learning_rate", "tick:dropout", "tick:num_filters", "tick:dev_acc"}
    assert all(len(v) >= 2 for v in ticks.values()), ticks
    assert ticks["tick:num_filters"] == ["64", "128", "256"]  # the choices, not 100, 150, ...
    assert "0.001" in ticks["tick:learning_rate"]  # log axis in round values
    drawn = {c.get_gid(): c for c in ax.collections if c.get_gid()}  # a collection a status
    # 6 completed, 2 pruned (dashed), 1 diverged (dotted); the failed trial has no value
    assert {g: len(c.get_segments()) for g, c in drawn.items()} == {
        "status:COMPLETED": 6, "status:PRUNED": 2, "status:DIVERGED": 1}  # fmt: skip
    assert all(len(seg) == 4 for c in drawn.values() for seg in c.get_segments())
    dashes = {g: c.get_linestyle()[0][1] for g, c in drawn.items()}
    assert dashes["status:COMPLETED"] is None and dashes["status:PRUNED"]
    assert dashes["status:DIVERGED"] and dashes["status:DIVERGED"] != dashes["status:PRUNED"]
    assert f"best: {trial_name(1)}" in labels(ax)
    assert not overlaps(ax.texts)


@pytest.mark.parametrize("maximize", [True, False])
def test_parallel_colour_bar_matches_lines(rep: report.SweepReport, maximize: bool) -> None:
    """The best trial's line is the colour bar's colour for its value: the bright end, for a
    minimised metric too."""
    t = rep.sweep.trials
    metric = "objective" if maximize else "best_dev_loss"
    fig = plots.parallel(t, ["param.dropout"], set(), metric, maximize, metric)
    ax, cax = fig.axes
    cbar = cax._colorbar  # matplotlib keeps the Colorbar on its axes
    (best,) = [ln for ln in ax.get_lines() if ln.get_label().startswith("best: ")]
    done = pd.to_numeric(t.loc[t["status"] == "COMPLETED", metric])
    value = done.max() if maximize else done.min()
    assert best.get_label() == f"best: {trial_name(1)}"
    assert matplotlib.colors.same_color(best.get_color(), cbar.cmap(cbar.norm(value)))
    assert matplotlib.colors.same_color(best.get_color(), matplotlib.colormaps["viridis"](1.0))


def test_params_log_axis_labels_do_not_collide(rep: report.SweepReport, tmp_path: Path) -> None:
    fig = rep.drawn["params.png"]
    fig.canvas.draw()
    for ax in fig.axes:
        assert not overlaps(ax.get_xticklabels()), ax.get_xlabel()
    lr_ax = next(ax for ax in fig.axes if ax.get_xlabel() == "learning_rate")
    assert lr_ax.get_xscale() == "log"
    # within one decade matplotlib labels the minor ticks too, which ran into each other
    narrow = pd.DataFrame(
        {
            "param.lr": np.geomspace(1.1e-3, 9.5e-3, 8),
            "objective": np.linspace(0.5, 0.6, 8),
            "status": "COMPLETED",
            "trial_id": [f"t{i}" for i in range(8)],
        }
    )
    fig = plots.param_scatter(narrow, ["param.lr"], {"param.lr"}, "objective")
    fig.canvas.draw()
    ax = fig.axes[0]
    shown = [t.get_text() for t in ax.get_xticklabels(minor=True) if t.get_text()]
    assert not shown  # no labels on minor ticks
    texts = [t for t in ax.get_xticklabels() if t.get_text()]
    assert 2 <= len(texts) <= 4 and not overlaps(texts)


def test_log_ticks() -> None:
    assert plots.log_ticks(1e-4, 1e-1) == [1e-4, 1e-3, 1e-2, 1e-1]
    assert plots.log_ticks(1e-3, 1e-2) == [1e-3, 2e-3, 5e-3, 1e-2]
    assert plots.log_ticks(1.1e-3, 1.5e-3) == [0.0011, 0.0015]  # no round value inside
    assert len(plots.log_ticks(1e-8, 1e2)) <= 4


def test_curves_show_pruned_trials_and_baseline(rep: report.SweepReport) -> None:
    fig = rep.drawn["curves.png"]
    loss, acc = fig.axes[:2]
    names = labels(acc)
    assert f"baseline {trial_name(0)}" in names  # the baseline is trial #0 (baseline: true)
    assert {trial_name(n) for n in (1, 4, 5, 3)} <= set(names)  # the rest of the top 5
    assert "pruned (2; x: where stopped)" in names
    (faded,) = [c for c in acc.collections if c.get_gid() == "pruned"]  # one collection
    assert faded.get_alpha() == 0.35
    ends = sorted(seg[:, 0].max() for seg in faded.get_segments())
    assert ends == [100, 200]  # the pruned trials' curves, to where ASHA stopped them
    (base,) = [ln for ln in loss.get_lines() if ln.get_label().startswith("baseline")]
    assert base.get_linestyle() == "--"
    caption = next(b.text for b in rep.blocks if b.path and b.path.name == "curves.png")
    assert trial_name(0) in caption and "pruned trials faded" in caption


def test_grad_norms_say_diverged_only_when_one_did(rep: report.SweepReport) -> None:
    fig = rep.drawn["grad_norms.png"]
    ax = fig.axes[0]
    assert "dashed: diverged" in ax.get_title()
    assert labels(ax) == [f"diverged: {trial_name(9)}"]
    assert fig.axes[1].get_title() == f"per layer, best trial {trial_name(1)}"
    s = rep.sweep
    fine = s.trials[s.trials["status"] != "DIVERGED"]
    m = s.metrics[s.metrics["trial_id"].isin(fine["trial_id"])]
    lr = report.analysis.trial_lr(s)
    fig = plots.grad_norms(m, s.layers, lr, fine, set(), None)
    assert "diverged" not in fig.axes[0].get_title()
    assert not labels(fig.axes[0])


def test_confusion_draws_chinese_names_or_numbers_them(rep: report.SweepReport) -> None:
    fig = rep.drawn["confusion.png"]
    ax = fig.axes[0]
    ticks = [t.get_text() for t in ax.get_xticklabels()]
    caption = next(b.text for b in rep.blocks if b.path and b.path.name == "confusion.png")
    font = plots.class_font(CLASSES)
    if font is None:  # no installed font has the glyphs: indices, the caption maps them
        assert ticks == ["0", "1"]
        assert "0 财经, 1 体育" in caption
        assert "class index" in ax.get_xlabel()
    else:
        assert ticks == list(CLASSES)
        assert all(t.get_fontproperties().get_file() == font.fname for t in ax.get_xticklabels())
        assert "财经" not in caption
    assert trial_name(1) in ax.get_title()


def test_class_font_checks_glyphs() -> None:
    dejavu = plots.class_font(["neg", "pos"])
    assert dejavu is not None and "DejaVu" in dejavu.name  # matplotlib's own font
    font = plots.class_font(CLASSES)
    if font is not None:  # a real CJK font, never the one that draws a box for everything
        assert "Last Resort" not in font.name
        from matplotlib.ft2font import FT2Font

        assert {ord(c) for c in "财经体育"} <= set(FT2Font(font.fname).get_charmap())
    assert plots.class_font(["\U000f0000"]) is None  # a private-use character: no font has it


def test_importance_drawn_by_optuna_without_leaking_style(rep: report.SweepReport) -> None:
    import matplotlib.pyplot as plt

    fig = rep.drawn["importance.png"]
    ax = fig.axes[0]
    widths = sorted(p.get_width() for p in ax.patches)
    assert widths == pytest.approx(sorted(rep.facts["importance"].values()))
    assert ax.get_title(loc="left") == "Hyperparameter Importances"  # Optuna's figure
    assert plt.get_fignums() == []  # closed in pyplot
    assert matplotlib.rcParams["axes.facecolor"] == "white"  # Optuna's ggplot style undone


def test_comparison_figure(tmp_path: Path) -> None:
    curves = {"a": pd.DataFrame({"hours": [0.1, 0.2], "best": [0.5, 0.6]})}
    path = plots.save(plots.anytime(curves, "best dev acc"), tmp_path / "c.png")
    assert_png(path)
    assert png_dpi(path) == pytest.approx(plots.DPI, abs=0.5)
