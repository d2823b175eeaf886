"""harness.sweep.search: honest reporting to Optuna and the scheduler per early_terminate.

No Ray runs here: the searcher is driven the way Tune drives it (suggest, results,
completion) against a real Optuna SQLite study.
"""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
from test_sweep import SMOKE, study, write_spec

from harness import sweep
from harness.config import load_spec
from harness.sweep.keys import LAST

optuna.logging.set_verbosity(optuna.logging.WARNING)


def searcher(tmp_path: Path, **changes: object) -> sweep.HonestOptunaSearch:
    spec = load_spec(write_spec(tmp_path / "s.yaml", **changes))
    s = sweep.build_searcher(spec, tmp_path)
    s.set_search_properties(None, None, {})
    return s


def evaluation(iteration: int, value: float) -> dict:
    """A report every 5 batches: Optuna's step is the report index, not the batch count."""
    n = iteration // 5
    return {"iteration": iteration, "report": n, "best_dev_acc": value, "training_iteration": n}


def final(status: str = "COMPLETED", value: float | None = 0.9, error: str = "") -> dict:
    return {sweep.FINAL: True, sweep.STATUS: status, "best_dev_acc": value, sweep.ERROR: error}


def test_honest_search_tells_optuna_how_each_trial_ended(tmp_path: Path) -> None:
    s = searcher(tmp_path)
    ids = ["done", "pruned", "failed", "diverged", "early"]
    configs = {t: s.suggest(t) for t in ids}
    assert configs["done"][sweep.NUMBER] == 0
    assert configs["done"][sweep.PARAMS] == load_spec(SMOKE).baseline_params()  # baseline first

    for t in ids:
        s.on_trial_result(t, evaluation(5, 0.6))
    s.on_trial_result("done", evaluation(10, 0.7))
    s.on_trial_complete("done", final(value=0.8))
    # the scheduler's STOP: Tune never passes the stopping result to on_trial_result
    s.on_trial_complete("pruned", evaluation(10, 0.65))
    s.on_trial_complete("failed", error=True)
    s.on_trial_complete("diverged", final("DIVERGED", None, "non-finite loss at iteration 7"))
    s.on_trial_complete("early", final(value=0.61))  # the loop's own early stop: complete

    trials = {t.user_attrs["ray_trial_id"]: t for t in study(tmp_path, "smoke").trials}
    assert trials["done"].state == optuna.trial.TrialState.COMPLETE
    assert trials["done"].value == 0.8
    assert trials["done"].intermediate_values == {1: 0.6, 2: 0.7}
    assert trials["pruned"].state == optuna.trial.TrialState.PRUNED
    assert trials["pruned"].intermediate_values == {1: 0.6, 2: 0.65}
    assert trials["pruned"].value == 0.65
    assert trials["failed"].state == optuna.trial.TrialState.FAIL
    assert trials["diverged"].state == optuna.trial.TrialState.FAIL
    assert trials["diverged"].user_attrs["status"] == "DIVERGED"
    assert "non-finite loss" in trials["diverged"].user_attrs["reason"]
    assert trials["early"].state == optuna.trial.TrialState.COMPLETE


def test_concurrent_tpe_uses_the_constant_liar(tmp_path: Path) -> None:
    s = searcher(tmp_path)  # smoke.yaml: tpe, 2 at a time
    assert isinstance(s._sampler, optuna.samplers.TPESampler)
    assert s._sampler._constant_liar


def test_a_complete_trial_without_a_finite_objective_is_a_failure(tmp_path: Path) -> None:
    s = searcher(tmp_path)
    s.suggest("t")
    s.on_trial_complete("t", final(value=float("nan")))
    (t,) = study(tmp_path, "smoke").trials
    assert t.state == optuna.trial.TrialState.FAIL


def test_repeated_results_and_completions_are_ignored(tmp_path: Path) -> None:
    s = searcher(tmp_path)
    s.suggest("t")
    s.on_trial_result("t", evaluation(5, 0.6))
    s.on_trial_result("t", evaluation(5, 0.6))
    s.on_trial_complete("t", final(value=0.7))
    s.on_trial_complete("t", final(value=0.1))
    (t,) = study(tmp_path, "smoke").trials
    assert t.value == 0.7 and t.intermediate_values == {1: 0.6}


def test_list_choices_reach_trials_as_lists(tmp_path: Path) -> None:
    s = searcher(tmp_path, baseline=False)
    for i in range(6):
        params = s.suggest(f"t{i}")[sweep.PARAMS]
        assert params["filter_sizes"] in ([2, 3], [3, 4])
    stored = study(tmp_path, "smoke").trials[0].params["filter_sizes"]
    assert isinstance(stored, str)  # Optuna holds the encoded form


@pytest.mark.parametrize("kind", ["asha", "hyperband", "median", "none"])
def test_scheduler_per_early_terminate_type(tmp_path: Path, kind: str) -> None:
    et = {"type": kind}
    spec = load_spec(write_spec(tmp_path / "s.yaml", early_terminate=et))
    sched = sweep.build_scheduler(spec, max_t=9)
    name = type(sched).__name__
    expected = {
        "asha": "AsyncHyperBandScheduler",
        "hyperband": "AsyncHyperBandScheduler",
        "median": "MedianStoppingRule",
        "none": "FIFOScheduler",
    }[kind]
    assert name == expected


def test_the_report_a_trial_ended_at_comes_with_its_final_result(tmp_path: Path) -> None:
    # trial.LastReport holds the loop's last report back from the scheduler; Tune hands the
    # searcher the final result flattened, the held report under keys.LAST
    s = searcher(tmp_path)
    s.suggest("t")
    s.on_trial_result("t", evaluation(5, 0.6))
    held = {f"{LAST}/{k}": v for k, v in evaluation(10, 0.7).items()}
    s.on_trial_complete("t", {**final(value=0.7), **held})
    (t,) = study(tmp_path, "smoke").trials
    assert t.state == optuna.trial.TrialState.COMPLETE
    assert t.intermediate_values == {1: 0.6, 2: 0.7}
