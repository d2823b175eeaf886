"""harness.report on hand-made results folders (no sweep run needed).

The fixture writes the files the sweep writes, through the sweep's own writer
(harness.results.ResultsWriter): trials.parquet, metrics.parquet, grad_layers.parquet,
sweep.json, and a real Optuna SQLite study, with trials of every status, so each number the
report prints can be checked against hand arithmetic.
"""

from __future__ import annotations

import math
import shutil
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers import BATCH, DISTS, FULL, ROOT, P, assert_png, make_folder, trial_id, trial_name

from harness import report
from harness.errors import UserError
from harness.results import ResultsWriter


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return make_folder(tmp_path_factory.mktemp("res") / "textcnn")


@pytest.fixture(scope="module")
def built(folder: Path, tmp_path_factory) -> report.SweepReport:
    return report.build_report(report.load_sweep(folder), tmp_path_factory.mktemp("out"), dpi=50)


def test_status_counts_and_top_trial(built: report.SweepReport) -> None:
    assert built.facts["status_counts"] == {"COMPLETED": 6, "PRUNED": 2, "FAILED": 1, "DIVERGED": 1}
    top = built.facts["top"]
    # one name per trial: Ray's short id with the Optuna number beside it
    assert list(top["trial"][:3]) == [trial_name(1), trial_name(4), trial_name(0)]
    assert set(top["status"]) == {"COMPLETED"}
    assert top["test_acc"][0] == pytest.approx(0.88)
    assert built.facts["best_trial"] == 1
    assert built.facts["best_trial_id"] == trial_id("textcnn", 1)
    assert built.facts["best_config"] == {
        "learning_rate": {"value": 0.003},
        "dropout": {"value": 0.59},
        "num_filters": {"value": 256},
        "batch_size": {"value": BATCH},
    }
    text = built.text()
    assert "learning_rate: {value: 0.003}" in text
    assert f"{trial_name(8)} FAILED: RuntimeError: CUDA out of memory" in text
    assert f"{trial_name(9)} DIVERGED: loss became nan" in text
    assert f"Best config (trial {trial_name(1)})" in text


def test_compute_saved(built: report.SweepReport) -> None:
    c = built.facts["compute"]
    run = 300 * 5 + 240 + 100 + 200 + 0 + 150
    assert c.iterations_run == run
    # the two pruned trials, run to the end, train FULL iterations (same batch size)
    assert c.iterations_full == run + (FULL - 100) + (FULL - 200)
    assert c.iterations_saved == 300
    assert c.saved_frac == pytest.approx(300 / (run + 300))
    assert c.seconds_run == pytest.approx(run / 10)
    assert f"{300 / (run + 300):.1%}" in built.text()
    # the unit is said, and an estimate of a count is a whole number
    said = f"Early termination saved about 300 trial-iterations ({300 / (run + 300):.1%}), "
    assert said in " ".join(built.text().split())
    from harness.report.analysis import compute_table

    assert compute_table(c)["trial-iterations"].tolist() == [run, run + 300, 300]


def test_the_top_table_shows_the_objective_once(folder: Path) -> None:
    top = report.top_table(report.load_sweep(folder))  # objective dev_acc
    assert list(top.columns[:5]) == ["rank", "trial", "status", "dev_acc", "best_dev_acc"]
    sweep = report.load_sweep(folder)
    sweep.spec["metric"] = {"name": "best_dev_acc", "goal": "maximize"}
    top = report.top_table(sweep)
    assert list(top.columns[:5]) == ["rank", "trial", "status", "best_dev_acc", "best_dev_loss"]
    assert "objective" not in top.columns


def test_edge_warning(built: report.SweepReport) -> None:
    warns = built.facts["edge_warnings"]
    assert any(w.startswith("dropout=0.59 is at the upper edge") for w in warns)
    # 256 is the largest choice of num_filters; learning_rate 3e-3 sits mid-range on a log scale
    assert any(w.startswith("num_filters=256 is the largest") for w in warns)
    assert not any(w.startswith("learning_rate") for w in warns)
    assert "WARNING: dropout=0.59" in built.text()


def test_edge_warning_log_scale() -> None:
    spec = {
        "name": "x",
        "parameters": {
            "learning_rate": {"distribution": "log_uniform_values", "min": 1e-4, "max": 1e-1}
        },
    }
    sweep = report.Sweep(Path("x"), spec, pd.DataFrame(), pd.DataFrame(), pd.DataFrame())
    # 1.3e-4 is 3.8% of the way on a log scale (but 0.03% linearly: both near the low edge)
    assert report.edge_warnings(sweep, pd.Series({P + "learning_rate": 1.3e-4}))
    # 5e-2 is 90% of the way on a log scale, though 50% linearly: not an edge
    assert not report.edge_warnings(sweep, pd.Series({P + "learning_rate": 5e-2}))
    assert report.edge_warnings(sweep, pd.Series({P + "learning_rate": 0.09}))


def test_gradient_health(built: report.SweepReport) -> None:
    gh = built.facts["grad_health"]
    assert built.facts["diverged_lr"] == (0.08, 0.08)
    assert gh.healthy_lr == (1e-4, 6e-3)
    flagged = dict(zip(gh.flagged["trial_number"], gh.flagged["status"]))
    assert flagged == {2: "COMPLETED", 9: "DIVERGED"}
    assert list(gh.flagged["trial"]) == [trial_name(2), trial_name(9)]
    row2 = gh.flagged.set_index("trial_number").loc[2]
    assert row2["vanished"] == 6 and row2["exploded"] == 0
    corr = gh.correlations.set_index("pair")["spearman rho"]
    assert corr["median grad norm vs learning rate"] == pytest.approx(1.0)
    assert corr["learning rate vs best dev loss"] < 0
    assert "1 trial(s) diverged at learning rate 0.08" in built.text()


def test_importance(built: report.SweepReport) -> None:
    imp = built.facts["importance"]
    assert imp is not None and set(imp) == set(DISTS)
    assert sum(imp.values()) == pytest.approx(1.0)


def test_files_are_images_and_html_self_contained(built: report.SweepReport) -> None:
    names = {p.name for p in built.figures}
    assert {
        "history.png",
        "curves.png",
        "grad_norms.png",
        "params.png",
        "parallel.png",
        "importance.png",
        "confusion.png",
    } <= names
    for p in built.figures:
        assert p.is_file()
        assert_png(p)
    page = (built.out / "report.html").read_text()
    assert page.count("data:image/png;base64,") == len(built.figures)
    assert "http://" not in page and "https://" not in page and "<script" not in page
    assert "<table" in page and "Gradient health" in page
    assert trial_name(1) in page and trial_name(9) in page  # trials named by id in the page
    np.testing.assert_array_equal(built.facts["confusion"], [[41, 10], [5, 45]])


def test_failed_and_diverged_only(tmp_path: Path) -> None:
    """No COMPLETED trial: the report still comes out, with notes instead of crashes."""
    src = make_folder(tmp_path / "bad")
    t = pd.read_parquet(src / "trials.parquet")
    t = t[t["status"].isin(["FAILED", "DIVERGED"])]
    shutil.rmtree(src / "trials.parquet")  # its parts, written back as an older sweep's file
    t.to_parquet(src / "trials.parquet")
    rep = report.build_report(report.load_sweep(src), tmp_path / "out", dpi=40)
    assert rep.facts["status_counts"] == {"COMPLETED": 0, "PRUNED": 0, "FAILED": 1, "DIVERGED": 1}
    assert rep.facts["best_trial"] == 9  # the only trial with a value
    assert rep.facts["diverged_lr"] == (0.08, 0.08)
    assert (tmp_path / "out" / "report.html").is_file()
    for p in rep.figures:
        assert_png(p)


def test_no_study_no_metrics(tmp_path: Path) -> None:
    src = make_folder(tmp_path / "bare")
    for f in ("optuna.db", "metrics.parquet", "grad_layers.parquet"):
        shutil.rmtree(src / f) if (src / f).is_dir() else (src / f).unlink()  # parts: a folder
    rep = report.build_report(report.load_sweep(src), tmp_path / "out", figures=False)
    text = rep.text()
    assert "parameter importance skipped" in text
    assert "no gradient statistics" in text
    assert rep.facts["best_trial"] == 1


def test_multi_objective_pareto(tmp_path: Path) -> None:
    src = make_folder(tmp_path / "moo", name="moo", multi=True)
    rep = report.build_report(report.load_sweep(src), tmp_path / "out", figures=False)
    # completed trials as (dev_acc up, train_s down): #1 (0.90, 30 s) and #4 (0.85, 24 s)
    # are not beaten on both; every other one trains 30 s for less accuracy than #1.
    assert sorted(rep.facts["pareto"]) == [1, 4]
    assert "== Pareto front ==" in rep.text()


def test_pareto_plot(tmp_path: Path) -> None:
    from harness import plots

    v = pd.DataFrame({"dev_acc": [0.9, 0.85, 0.7], "train_s": [30.0, 24.0, 30.0]})
    fig = plots.pareto(v, pd.Index([0, 1]), ["dev_acc", "train_s"])
    assert_png(plots.save(fig, tmp_path / "p.png", 40))


def test_pareto_front_helper() -> None:
    v = pd.DataFrame({"a": [1.0, 2.0, 3.0, 2.0], "b": [1.0, 2.0, 3.0, 0.5]})
    objs = [report.Objective("a", "maximize"), report.Objective("b", "minimize")]
    assert list(report.pareto_front(v, objs)) == [2, 3]


def test_compare_two_folders(tmp_path: Path, capsys) -> None:
    a = make_folder(tmp_path / "results" / "textcnn")
    b = make_folder(
        tmp_path / "results" / "fasttext", name="fasttext", model="FastText", shift=0.05
    )
    report.main([str(a), str(b), "--dpi", "40"])
    out = capsys.readouterr().out
    assert "Comparison of 2 sweeps" in out
    comp = tmp_path / "results" / "comparison"
    assert_png(comp / "comparison.png")
    page = (comp / "report.html").read_text()
    assert "FastText" in page and page.count("data:image/png;base64,") == 1
    assert "fasttext: best config" in out
    table = report.comparison_table([report.load_sweep(a), report.load_sweep(b)])
    assert list(table["model"]) == ["TextCNN", "FastText"]
    assert list(table["trials"]) == [10, 10]
    assert list(table["pruned"]) == [2, 2]
    assert table["best dev acc"].tolist() == pytest.approx([0.90, 0.95])
    assert table["test acc"].tolist() == pytest.approx([0.88, 0.93])
    assert list(table["best trial"]) == [trial_name(1), trial_name(1, "fasttext")]
    assert math.isclose(table["trial-hours"][0], 2190 / 10 / 3600)
    assert math.isclose(table["trials per device-hour"][0], 10 / (2190 / 10 / 3600))
    assert "FastText" in out and "93.00%" in out  # accuracies as the classic table prints them


def test_cli_single_folder(folder: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "rep"
    assert report.main([str(folder), "--out", str(out), "--no-figures", "--top", "2"]) == 0
    text = capsys.readouterr().out
    assert text.startswith("Sweep textcnn\n")
    assert "== Trials by status ==" in text and "parameters:" in text
    assert (out / "report.html").is_file() and not list(out.glob("*.png"))


def test_cli_bad_flag(folder: Path, capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        report.main([str(folder), "--top", "0"])
    assert exc.value.code == 2
    assert capsys.readouterr().err.strip() == "error: --top: must be >= 1, got 0"


@pytest.mark.subprocess
def test_not_a_results_folder(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    res = subprocess.run(
        [sys.executable, "-m", "harness.report", str(tmp_path / "empty")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    assert "not a results folder" in lines[0] and "trials.parquet" in lines[0]
    assert "Traceback" not in res.stderr


def test_load_errors(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="no such directory"):
        report.load_sweep(tmp_path / "nope")
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "trials.parquet").write_text("not parquet")
    (bad / "sweep.json").write_text("{}")
    with pytest.raises(UserError, match="not a readable Parquet file"):
        report.load_sweep(bad)
    (bad / "sweep.json").write_text("[1")
    with pytest.raises(UserError, match="sweep.json: "):
        report.load_sweep(bad)


def test_groups_and_trials_per_device_hour(built: report.SweepReport, tmp_path: Path) -> None:
    # unfused: each trial is its own group; CPU-hours = each trial's wall time x 1 CPU
    g = built.facts["groups"]
    assert not g.fused and g.device == "CPU" and g.trials == 10
    assert g.device_hours == pytest.approx((300 * 5 + 240 + 100 + 200 + 150) / 10 / 3600)
    assert f"{g.trials_per_device_hour:.4g}" in built.text().replace(",", "")

    # fused: two groups of two on half a GPU each; a group's wall time counts once
    writer = ResultsWriter(tmp_path / "f", params=["learning_rate"])
    t0 = datetime(2024, 1, 1, tzinfo=timezone.utc)
    for n, (gid, k, status, end_s) in enumerate(
        [("aaaa0000", 0, "COMPLETED", 600), ("aaaa0000", 1, "PRUNED", 60),
         ("bbbb1111", 0, "COMPLETED", 300), ("bbbb1111", 1, "DIVERGED", 30)]
    ):  # fmt: skip
        writer.set_trial(
            f"{gid}-{k}", trial_number=n, status=status, group_id=gid, group_member=k,
            group_size=2, fused=True, start_time=t0, end_time=t0 + timedelta(seconds=end_s),
            train_s=end_s, iterations=end_s, params={"learning_rate": 1e-3 * (n + 1)},
        )  # fmt: skip
    writer.flush(force=True)
    writer.write_sweep_info({"spec": {"name": "f", "resources": {"cpu": 1, "gpu": 0.5}}})
    rep = report.build_report(report.load_sweep(tmp_path / "f"), tmp_path / "out", figures=False)
    g = rep.facts["groups"]
    assert g.fused and g.device == "GPU" and g.trials == 4
    assert g.table["members"].tolist() == [2, 2] and g.table["wall_s"].tolist() == [600, 300]
    assert g.device_hours == pytest.approx((600 + 300) * 0.5 / 3600)
    assert g.trials_per_device_hour == pytest.approx(4 / g.device_hours)
    text = rep.text()
    assert "4 trials in 2 groups of 2, trained as one fused module" in text
    assert "trials per GPU-hour" in text and "aaaa0000" in text


def test_compute_text_with_no_completed_trial() -> None:
    # every trial pruned (or failed): the longest trial of any status is the measure, and the
    # text does not call it a completed one
    from types import SimpleNamespace

    from harness.report import analysis

    trials = pd.DataFrame({"status": ["PRUNED", "PRUNED", "FAILED"], "iterations": [10, 40, 5],
                           "train_s": [1.0, 4.0, 0.5], "samples": [320, 1280, 160]})  # fmt: skip
    c = analysis.compute(SimpleNamespace(trials=trials))
    assert not c.ref_completed and c.full_run_samples == 1280
    assert c.iterations_full == 40 + 40 + 5
    text = analysis.compute_text(c)
    assert "the longest trial (1280)" in text and "completed" not in text
