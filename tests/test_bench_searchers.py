"""harness.bench searchers: the statistics on hand-made numbers, run specs that pair seeds,
and one real (tiny) bench of two methods over two paired seeds."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from harness.bench import searchers as sb
from harness.errors import UserError

SMOKE = Path(__file__).resolve().parents[1] / "search_spaces" / "smoke.yaml"


# ---------------------------------------------------------------- statistics


def test_iqm_is_the_mean_of_the_middle_half() -> None:
    assert sb.iqm(np.array([1.0, 2.0, 3.0, 4.0]))[0] == pytest.approx(2.5)
    # n=8: two trimmed at each end, so the outlier 100 does not count
    assert sb.iqm(np.array([1, 2, 3, 4, 100, 5, 6, 7.0]))[0] == pytest.approx(4.5)
    # n=3: floor(3/4)=0 trimmed, the plain mean (scipy's trim_mean(., 0.25) agrees)
    assert sb.iqm(np.array([1.0, 2.0, 6.0]))[0] == pytest.approx(3.0)
    cols = np.array([[1.0, 10.0], [2.0, np.nan], [3.0, 30.0], [4.0, 40.0]])
    out = sb.iqm(cols)
    assert out[0] == pytest.approx(2.5) and math.isnan(out[1])


def test_bootstrap_band_brackets_the_iqm_and_stays_within_the_seeds() -> None:
    vals = np.array([[0.50, 0.60], [0.55, 0.60], [0.70, 0.60], [0.65, 0.60]])
    lo, hi = sb.bootstrap_band(vals, samples=500, seed=1)
    mid = sb.iqm(vals)
    assert np.all(lo <= mid + 1e-12) and np.all(mid <= hi + 1e-12)
    assert lo[0] >= 0.50 and hi[0] <= 0.70 and lo[0] < hi[0]
    assert lo[1] == pytest.approx(0.60) and hi[1] == pytest.approx(0.60)  # no spread, no band
    lo2, hi2 = sb.bootstrap_band(vals, samples=500, seed=1)
    assert np.array_equal(lo, lo2) and np.array_equal(hi, hi2)  # reproducible
    nan_lo, _ = sb.bootstrap_band(np.array([[0.5], [np.nan]]))
    assert math.isnan(nan_lo[0])


def test_iqm_trims_floor_n_over_4_seeds_at_each_end() -> None:
    rng = np.random.default_rng(3)
    for n in range(1, 12):
        v = rng.normal(size=(n, 3))
        cut = n // 4
        assert sb.iqm(v) == pytest.approx(np.sort(v, axis=0)[cut : n - cut].mean(axis=0))


def test_bootstrap_resamples_whole_seeds_across_columns() -> None:
    """One draw of seeds per resample for every column: a column and its mirror image get
    exactly mirrored bands (independent draws per column would not)."""
    w = np.random.default_rng(7).normal(size=(6, 1))
    lo, hi = sb.bootstrap_band(np.hstack([w, -w]), samples=300, seed=2)
    assert lo[0] == pytest.approx(-hi[1], abs=1e-12) and hi[0] == pytest.approx(-lo[1], abs=1e-12)
    assert lo[0] < hi[0]
    one_lo, one_hi = sb.bootstrap_band(np.array([[0.4, 0.7]]))  # one seed: the seed itself
    assert one_lo.tolist() == [0.4, 0.7] and one_hi.tolist() == [0.4, 0.7]


def test_best_so_far_regret_and_time_to_target() -> None:
    vals = np.array([np.nan, 0.5, 0.4, 0.8, np.nan, 0.9])
    best = sb.best_so_far(vals, "maximize")
    assert math.isnan(best[0])
    assert best[1:].tolist() == [0.5, 0.5, 0.8, 0.8, 0.9]
    assert sb.best_so_far(np.array([0.7, 0.3, 0.5]), "minimize").tolist() == [0.7, 0.3, 0.3]
    assert sb.regret(best[1:], 0.9, "maximize") == pytest.approx([0.4, 0.4, 0.1, 0.1, 0.0])
    assert sb.regret(np.array([0.7, 0.3]), 0.2, "minimize") == pytest.approx([0.5, 0.1])
    secs = np.array([1.0, 2.0, 4.0, 7.0, 8.0, 12.0])
    assert sb.time_to_target(secs, best, 0.75, "maximize") == 7.0
    assert sb.time_to_target(secs, best, 0.95, "maximize") == math.inf
    assert (
        sb.time_to_target(np.array([1.0, 2.0, 3.0]), np.array([0.7, 0.3, 0.3]), 0.4, "minimize")
        == 2.0
    )
    assert sb.default_target(0.9, "maximize", 0.01) == pytest.approx(0.89)
    assert sb.default_target(0.2, "minimize", 0.01) == pytest.approx(0.21)


def test_step_curve_reads_the_best_at_any_time() -> None:
    x = np.array([0.0, 1.0, 1.5, 3.0, 10.0])
    got = sb.step_at(x, np.array([1.0, 3.0]), np.array([0.5, 0.7]))
    assert math.isnan(got[0])
    assert got[1:].tolist() == [0.5, 0.5, 0.7, 0.7]  # the final value carries on


def _hand_runs() -> pd.DataFrame:
    """Two combinations x two seeds, three trials each; regret against 0.9."""
    rows = []
    spec = {
        ("a+none", 0): ([0.5, 0.7, 0.9], [1, 2, 3]),
        ("a+none", 1): ([0.6, 0.6, 0.8], [1, 2, 3]),
        ("b+asha", 0): ([np.nan, 0.5, 0.6], [0.5, 1, 2]),
        ("b+asha", 1): ([0.85, np.nan, np.nan], [2, 2.5, 3]),
    }
    for (combo, seed), (vals, cum) in spec.items():
        best = sb.best_so_far(np.array(vals), "maximize")
        for i, (v, c, b) in enumerate(zip(vals, cum, best)):
            rows.append({
                "combo": combo, "method": combo.split("+")[0], "early_terminate": combo.split("+")[1],
                "seed": seed, "cum_trial_s": float(c), "trial_s": float(c - (cum[i - 1] if i else 0)),
                "value": v, "best_so_far": b,
                "status": "COMPLETED" if not math.isnan(v) else "PRUNED",
            })  # fmt: skip
    return pd.DataFrame(rows)


def test_summary_on_hand_made_runs() -> None:
    runs, optimum = sb.add_regret(_hand_runs(), "maximize")
    assert optimum == pytest.approx(0.9)
    s = sb.summary_table(runs, optimum, target=0.85, goal="maximize").set_index("combo")
    a, b = s.loc["a+none"], s.loc["b+asha"]
    assert a.final_best_iqm == pytest.approx(0.85) and b.final_best_iqm == pytest.approx(0.725)
    assert a.final_regret_iqm == pytest.approx(0.05) and b.final_regret_iqm == pytest.approx(0.175)
    assert 0.8 <= a.final_best_lo <= 0.85 <= a.final_best_hi <= 0.9
    # a: seed 0 reaches 0.85 at 3 s, seed 1 never -> median of (3, inf) is inf
    assert a.reached_target == 1 and a.time_to_target_median_s == math.inf
    # b: seed 1 reaches at 2 s, seed 0 never
    assert b.reached_target == 1 and b.pruned_per_run == pytest.approx(1.5)
    assert a.trial_s_per_run == pytest.approx(3.0) and b.trial_s_per_run == pytest.approx(2.5)
    s2 = sb.summary_table(runs, optimum, target=0.6, goal="maximize").set_index("combo")
    assert s2.loc["a+none"].time_to_target_median_s == pytest.approx(1.5)  # median of 2 and 1
    c = sb.curves(runs, optimum, "maximize", points=7)  # x = 0, 0.5, ..., 3
    mid = c.best["a+none"][0]
    assert math.isnan(mid[1]) and mid[2] == pytest.approx(0.55) and mid[-1] == pytest.approx(0.85)
    bmid = c.best["b+asha"][0]
    assert np.isnan(bmid[:4]).all()  # seed 0 has no completed trial before 1 s, seed 1 before 2 s
    assert bmid[4] == pytest.approx((0.6 + 0.85) / 2)  # at 2 s: seed 0 best 0.6, seed 1 0.85
    assert c.regret["a+none"][0][-1] == pytest.approx(0.05)
    assert c.end_s == {"a+none": 3.0, "b+asha": 2.5}


def test_against_the_baseline_on_hand_made_runs() -> None:
    """Trial 0 is the classic baseline, the same in every run of a seed: each run is judged
    by its other trials against it (beaten?, by how many, when first reached)."""
    rows = []
    spec = {  # (combo, seed): values of trials 0, 1, 2 in the order they ended, seconds
        ("auto+asha", 0): ([0.80, 0.82, np.nan], [10, 12, 13]),
        ("auto+asha", 1): ([0.79, 0.70, 0.79], [10, 11, 20]),
        ("random+asha", 0): ([0.80, 0.60, 0.81], [10, 14, 30]),
        ("random+asha", 1): ([0.79, np.nan, 0.75], [10, 11, 15]),
    }
    for (combo, seed), (vals, cum) in spec.items():
        best = sb.best_so_far(np.array(vals), "maximize")
        for i, (v, c, b) in enumerate(zip(vals, cum, best)):
            rows.append({
                "combo": combo, "method": combo.split("+")[0], "early_terminate": "asha",
                "seed": seed, "trial_number": i, "cum_trial_s": float(c),
                "trial_s": float(c - (cum[i - 1] if i else 0)), "value": v, "best_so_far": b,
                "status": "COMPLETED" if not math.isnan(v) else "PRUNED",
            })  # fmt: skip
    runs = sb.add_baseline(pd.DataFrame(rows), baseline=True)
    assert runs.groupby("seed")["baseline_value"].first().tolist() == [0.80, 0.79]
    assert runs["searched"].tolist() == [False, True, True] * 4
    runs, optimum = sb.add_regret(runs, "maximize")
    s = sb.summary_table(runs, optimum, target=0.81, goal="maximize").set_index("combo")
    auto, rnd = s.loc["auto+asha"], s.loc["random+asha"]
    assert auto.beat_baseline == 1 and rnd.beat_baseline == 1  # seed 0 each; 0.79 = 0.79 is no win
    assert auto.trials_beating_baseline_per_run == rnd.trials_beating_baseline_per_run == 0.5
    # reached (>=): auto at 12 s (seed 0) and 20 s (seed 1, a tie); random at 30 s and never
    assert auto.time_to_baseline_median_s == 16.0 and rnd.time_to_baseline_median_s == math.inf
    assert auto.baseline_mean == pytest.approx(0.795)
    text = sb.summary_text(s.reset_index(), "best_dev_acc")
    assert "beat baseline" in text and "time to baseline" in text and "16 s" in text
    off = sb.add_baseline(pd.DataFrame(rows), baseline=False)  # no baseline: nothing to beat
    assert off["searched"].all() and off["baseline_value"].isna().all()
    off, opt = sb.add_regret(off, "maximize")
    s_off = sb.summary_table(off, opt, target=0.81, goal="maximize")
    assert "beat baseline" not in sb.summary_text(s_off, "best_dev_acc")


# ---------------------------------------------------------------- specs of the runs


def test_run_specs_pair_seeds_and_switch_method_and_scheduler() -> None:
    base = sb.base_spec(str(SMOKE), [])
    assert base.baseline  # trial 0 is the classic baseline, as in a user's sweep
    for seed in (0, 2):
        for method, et in (("tpe", "asha"), ("qmc", "none"), ("random", "median")):
            key = sb.RunKey(method, et, seed)
            spec = sb.run_spec(str(SMOKE), [], base, key)
            assert spec.name == f"{method}-{et}-s{seed}" and spec.method == method
            assert spec.seed == seed and spec.train["seed"] == seed  # sampler and training seed
            assert spec.trial_config({}).train.seed == seed
            assert spec.early_terminate.type == et
            assert spec.budget == base.budget and spec.parameters == base.parameters
    asha = sb.run_spec(str(SMOKE), [], base, sb.RunKey("tpe", "asha", 0)).early_terminate
    assert asha == base.early_terminate  # the spec's own asha settings (reduction_factor 2)
    with_sets = sb.run_spec(str(SMOKE), ["budget.num_samples=3", "baseline=true"],
                            sb.base_spec(str(SMOKE), ["budget.num_samples=3", "baseline=true"]),
                            sb.RunKey("random", "none", 1))  # fmt: skip
    assert with_sets.budget.num_samples == 3 and with_sets.baseline


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["--methods", "tpe,bayes"], "--methods: unknown 'bayes'"),
        (["--methods", "nsga2"], "--methods: unknown 'nsga2'"),
        (["--early-terminate", "ash"], "did you mean 'asha'"),
        (["--seeds", "0"], "--seeds: must be >= 1"),
        (["--set", "method=random"], "use --methods"),
        (["--set", "train.seed=3"], "use --seeds"),
        (["--set", "parameters.seed={values: [0, 1]}"], "parameters.seed"),
    ],
)
def test_user_errors(argv: list[str], needle: str, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exc:
        sb.main([str(SMOKE), *argv])
    assert exc.value.code == 2
    assert needle in capsys.readouterr().err


def test_existing_run_of_another_spec_is_refused(tmp_path: Path) -> None:
    base = sb.base_spec(str(SMOKE), [])
    spec = sb.run_spec(str(SMOKE), [], base, sb.RunKey("tpe", "none", 0))
    folder = tmp_path / spec.name
    assert sb.existing_run(folder, spec) == "new"
    folder.mkdir()
    other = sb.run_spec(str(SMOKE), ["budget.num_samples=2"], base, sb.RunKey("tpe", "none", 0))
    (folder / "sweep.json").write_text(json.dumps({"spec": other.to_dict()}))
    with pytest.raises(UserError, match="differs in: budget"):
        sb.existing_run(folder, spec)
    (folder / "sweep.json").write_text(json.dumps({"spec": spec.to_dict()}))
    assert sb.existing_run(folder, spec) == "resume"  # no trials recorded yet


# ---------------------------------------------------------------- a real bench


@pytest.mark.ray
@pytest.mark.slow
def test_bench_two_methods_two_paired_seeds(
    ray_session: object, tiny_corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    from matplotlib.image import imread

    from harness.report import load_sweep

    out = tmp_path / "bench"
    argv = [str(SMOKE), "--methods", "tpe,random", "--early-terminate", "asha", "--seeds", "2",
            "--set", "data.name=thucnews", "--set", f"data.path={tiny_corpus}",
            "--set", "budget.num_samples=3", "--set", "train.max_steps=10", "--out", str(out)]  # fmt: skip
    assert sb.main(argv) == 0
    text = capsys.readouterr().out
    assert "tpe+asha" in text and "random+asha" in text and "time to target" in text

    runs = pd.read_parquet(out / sb.RUNS_FILE)
    assert len(runs) == 2 * 2 * 3
    for col in ("method", "early_terminate", "seed", "run", "trial_id", "trial_number", "status",
                "trial_s", "cum_trial_s", "metric", "value", "best_so_far", "regret",
                "train_seed", "sampler_seed", "param.learning_rate"):  # fmt: skip
        assert col in runs.columns, col
    assert set(runs["run"]) == {"tpe-asha-s0", "random-asha-s0", "tpe-asha-s1", "random-asha-s1"}
    assert set(runs["status"]) <= {"COMPLETED", "PRUNED"}
    # pairing: seed k is the training seed and the sampler seed of every run k
    assert (runs["train_seed"] == runs["seed"]).all()
    assert (runs["sampler_seed"] == runs["seed"]).all()
    for run, g in runs.groupby("run"):
        spec = json.loads((out / "runs" / run / "sweep.json").read_text())["spec"]
        assert spec["seed"] == g["seed"].iloc[0] == spec["train"]["seed"]
        assert (g["trial_s"] > 0).all() and np.all(np.diff(g["cum_trial_s"]) > 0)
        assert g["order"].tolist() == [1, 2, 3]
        load_sweep(out / "runs" / run)  # each run is an ordinary sweep folder for the report
    # trial 0 is the classic baseline in every run; TPE starts with seeded random draws: with
    # the same sampler seed its first searched trial is random search's (the seeds are paired)
    assert not runs.loc[runs["trial_number"] == 0, "searched"].any()
    assert runs.loc[runs["trial_number"] > 0, "searched"].all() and "baseline_value" in runs
    first = runs[runs["trial_number"] == 1].set_index(["seed", "method"])
    for seed in (0, 1):
        assert first.loc[(seed, "tpe"), "param.learning_rate"] == pytest.approx(
            first.loc[(seed, "random"), "param.learning_rate"]
        )
    assert runs["regret"].min() == pytest.approx(0.0)  # the best run is its own optimum

    summary = pd.read_parquet(out / sb.SUMMARY_FILE)
    assert set(summary["combo"]) == {"tpe+asha", "random+asha"} and (summary["seeds"] == 2).all()
    info = json.loads((out / sb.BENCH_FILE).read_text())
    assert info["target"] == pytest.approx(info["optimum"] - sb.DEFAULT_TOLERANCE)
    for name in (sb.ANYTIME_PNG, sb.FINAL_PNG):
        img = imread(out / name)
        assert img.shape[0] > 100 and img.shape[1] > 100 and img.std() > 0.01

    # again: every finished run is reused, not rerun
    assert sb.main(argv) == 0
    assert capsys.readouterr().out.count("reused") == 4
    assert pd.read_parquet(out / sb.RUNS_FILE).equals(runs)
