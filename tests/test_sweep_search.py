"""harness.sweep.search: honest reporting to Optuna and the scheduler per early_terminate.

No Ray runs here: the searcher is driven the way Tune drives it (suggest, results,
completion) against a real Optuna SQLite study.
"""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest
from test_sweep import SMOKE, study, write_spec

from harness import sweep
from harness.config import load_spec

optuna.logging.set_verbosity(optuna.logging.WARNING)


def searcher(tmp_path: Path, **changes: object) -> sweep.HonestOptunaSearch:
    spec = load_spec(write_spec(tmp_path / "s.yaml", **changes))
    s = sweep.build_searcher(spec, tmp_path)
    s.set_search_properties(None, None, {})
    return s


def evaluation(iteration: int, value: float) -> dict:
    return {"iteration": iteration, "best_dev_acc": value, "training_iteration": iteration // 5}


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
    assert trials["done"].intermediate_values == {5: 0.6, 10: 0.7}
    assert trials["pruned"].state == optuna.trial.TrialState.PRUNED
    assert trials["pruned"].intermediate_values == {5: 0.6, 10: 0.65}
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
    assert t.value == 0.7 and t.intermediate_values == {5: 0.6}


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
    expected = {
        "asha": "AsyncHyperBandScheduler",
        "hyperband": "AsyncHyperBandScheduler",
        "median": "MedianStoppingRule",
        "none": "FIFOScheduler",
    }[kind]
    assert expected in [c.__name__ for c in type(sched).__mro__]


def test_auto_runs_the_baseline_then_draws_around_it(tmp_path: Path) -> None:
    s = searcher(tmp_path, method="auto")  # smoke.yaml: 4 trials, asha
    spec = load_spec(write_spec(tmp_path / "s.yaml", method="auto"))
    choice = spec.choice()
    assert choice.method == "tpe" and choice.prior_draws == 2
    assert isinstance(s._sampler, optuna.samplers.TPESampler)
    assert s._sampler._multivariate and s._sampler._group and s._sampler._constant_liar
    first = [s.suggest(f"t{i}")[sweep.PARAMS] for i in range(3)]
    assert first == [spec.baseline_params(), *spec.prior_points(choice)]


def test_resume_keeps_the_sampler_auto_chose(tmp_path: Path) -> None:
    """auto's rule depends on the budget, which --resume may change: sweep.json keeps the
    first run's choice and the resumed searcher builds that sampler again."""
    space = {"learning_rate": {"distribution": "log_uniform_values", "min": 1e-3, "max": 1e-2},
             "dropout": {"min": 0.1, "max": 0.5}}  # fmt: skip
    first = load_spec(write_spec(tmp_path / "a.yaml", method="auto", parameters=space,
                                 early_terminate={"type": "none"}))  # fmt: skip
    plan = sweep.plan_search(first, tmp_path)
    assert plan.choice.method == "gp" and plan.record()["method"] == "gp"
    (tmp_path / "sweep.json").write_text(
        json.dumps({"spec": first.to_dict(), "search": plan.record()})
    )
    sweep.build_searcher(first, tmp_path, plan=plan)

    more = load_spec(write_spec(tmp_path / "a.yaml", method="auto", parameters=space,
                                early_terminate={"type": "none"},
                                budget={"num_samples": 500, "max_concurrent": 2}))  # fmt: skip
    assert more.choice().method == "tpe"  # what a fresh sweep of this budget would pick
    again = sweep.plan_search(more, tmp_path, resume=True)
    assert again.choice == plan.choice
    resumed = sweep.build_searcher(more, tmp_path, resume=True, plan=again)
    assert isinstance(resumed._sampler, optuna.samplers.GPSampler)
    assert isinstance(sweep.build_searcher(more, tmp_path, resume=True)._sampler,
                      optuna.samplers.GPSampler)  # fmt: skip


def test_asha_first_rung_follows_the_grace_rule(tmp_path: Path) -> None:
    spec = load_spec(write_spec(tmp_path / "s.yaml", early_terminate={"type": "asha"}))
    assert spec.early_terminate.grace_period is None
    assert spec.grace_period(54) == 6 and spec.grace_period(4) == 1  # max_t / 3**2, >= 1
    sched = sweep.build_scheduler(spec, max_t=54)
    assert sched._brackets[0]._rungs[-1][0] == 6  # the first milestone
    explicit = load_spec(write_spec(tmp_path / "e.yaml", early_terminate={"type": "asha",
                                                                          "grace_period": 2}))  # fmt: skip
    assert explicit.grace_period(54) == 2


def test_no_asha_rung_after_the_last_evaluation(tmp_path: Path) -> None:
    """One epoch of THUCNews at eval_every 100: reports 1-3 evaluate (the third at the end of
    training), report 4 is the final result; max_t 4, grace 1, rf 3 would give rungs at 1 and
    3, and a cut at 3 only turns a trained trial into a pruned one."""
    spec = load_spec(write_spec(tmp_path / "s.yaml", early_terminate={"type": "asha",
                                                                      "reduction_factor": 3}))  # fmt: skip
    sched = sweep.build_scheduler(spec, max_t=4)
    assert [m for m, _ in sched._brackets[0]._rungs] == [1]
    long = sweep.build_scheduler(spec, max_t=54)  # 20 epochs: grace 6, rungs 6, 18 (and 54)
    assert [m for m, _ in long._brackets[0]._rungs] == [54, 18, 6]
    hb = sweep.build_scheduler(load_spec(write_spec(tmp_path / "h.yaml",
                                                    early_terminate={"type": "hyperband"})), 4)  # fmt: skip
    assert all(m != 3 for b in hb._brackets for m, _ in b._rungs)
    explicit = load_spec(write_spec(tmp_path / "e.yaml", early_terminate={"type": "asha",
                                    "reduction_factor": 3, "max_t": 4}))  # fmt: skip
    assert [m for m, _ in sweep.build_scheduler(explicit, 4)._brackets[0]._rungs] == [3, 1]


def test_asha_compares_with_the_baseline_but_never_stops_it(tmp_path: Path) -> None:
    from types import SimpleNamespace

    from ray.tune.schedulers import TrialScheduler

    spec = load_spec(write_spec(tmp_path / "s.yaml", early_terminate={"type": "asha",
                                                                      "reduction_factor": 3}))  # fmt: skip
    sched = sweep.build_scheduler(spec, max_t=10)  # grace 1: rungs at 1, 3 (9 is the last eval)

    def trial(number: int) -> SimpleNamespace:
        t = SimpleNamespace(trial_id=f"t{number}", config={sweep.NUMBER: number})
        sched.on_trial_add(None, t)
        return t

    def report(t: SimpleNamespace, it: int, acc: float) -> str:
        return sched.on_trial_result(None, t, {"training_iteration": it, "best_dev_acc": acc})

    first, base, third = trial(1), trial(0), trial(2)
    assert report(first, 1, 0.8) == TrialScheduler.CONTINUE  # alone at the rung
    assert report(base, 1, 0.5) == TrialScheduler.CONTINUE  # below the cutoff, kept anyway
    assert report(third, 1, 0.6) == TrialScheduler.STOP  # the baseline's 0.5 is in the rung
    assert report(base, 3, 0.7) == TrialScheduler.CONTINUE
    assert sched._num_stopped == 1
    off = sweep.build_scheduler(
        load_spec(write_spec(tmp_path / "o.yaml", baseline=False,
                             early_terminate={"type": "asha", "reduction_factor": 3})), 10
    )  # fmt: skip
    sched = off
    first, zero = trial(1), trial(0)
    report(first, 1, 0.8)
    assert report(zero, 1, 0.5) == TrialScheduler.STOP  # baseline off: trial 0 is any trial
