"""harness.sweep.schedulers: Ray Tune's scheduler per early_terminate, and BaselineASHA.

No Ray cluster runs here: the schedulers are built and driven the way Tune drives them.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import write_spec

from harness import sweep
from harness.config import load_spec


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


@pytest.mark.parametrize("kind", ["asha", "median", "none", "fused"])
def test_the_next_trial_is_tunes_fifo_choice_past_the_finished(tmp_path: Path, kind: str) -> None:
    """Each scheduler picks what Tune's FIFOScheduler picks (the first PENDING trial, else the
    first PAUSED one), as trials are added and move on, while skipping the finished ones."""
    import random
    from types import SimpleNamespace

    from ray.tune.experiment import Trial
    from ray.tune.schedulers import FIFOScheduler

    et = {"type": "none" if kind == "fused" else kind}
    spec = load_spec(write_spec(tmp_path / "s.yaml", early_terminate=et))
    sched = sweep.build_scheduler(spec, max_t=9, fused=kind == "fused")
    trials: list[SimpleNamespace] = []
    controller = SimpleNamespace(get_trials=lambda: trials)
    after = {Trial.PENDING: [Trial.RUNNING], Trial.RUNNING: [Trial.TERMINATED, Trial.ERROR,
             Trial.PAUSED, Trial.PENDING], Trial.PAUSED: [Trial.RUNNING]}  # fmt: skip
    rng = random.Random(0)
    for _ in range(400):
        if rng.random() < 0.3:
            trials.append(SimpleNamespace(status=Trial.PENDING))
        for t in rng.sample(trials, min(3, len(trials))):
            if t.status in after:
                t.status = rng.choice(after[t.status])
        assert sched.choose_trial_to_run(controller) is FIFOScheduler().choose_trial_to_run(
            controller
        )
    assert sched._past > 0  # it did skip finished trials


def test_asha_first_rung_follows_the_grace_rule(tmp_path: Path) -> None:
    spec = load_spec(write_spec(tmp_path / "s.yaml", early_terminate={"type": "asha"}))
    assert spec.early_terminate.grace_period is None
    assert spec.grace_period(54) == 6 and spec.grace_period(4) == 1  # max_t / 3**2, >= 1
    sched = sweep.build_scheduler(spec, max_t=54)
    assert sched._brackets[0]._rungs[-1][0] == 6  # the first milestone
    explicit = load_spec(write_spec(tmp_path / "e.yaml", early_terminate={"type": "asha",
                                                                          "grace_period": 2}))  # fmt: skip
    assert explicit.grace_period(54) == 2


def test_asha_compares_with_the_baseline_but_never_stops_it(tmp_path: Path) -> None:
    from types import SimpleNamespace

    from ray.tune.schedulers import TrialScheduler

    spec = load_spec(write_spec(tmp_path / "s.yaml", early_terminate={"type": "asha",
                                                                      "reduction_factor": 3}))  # fmt: skip
    sched = sweep.build_scheduler(spec, max_t=9)  # grace 1: rungs at 1, 3 (9 is max_t)

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
                             early_terminate={"type": "asha", "reduction_factor": 3})), 9
    )  # fmt: skip
    sched = off
    first, zero = trial(1), trial(0)
    report(first, 1, 0.8)
    assert report(zero, 1, 0.5) == TrialScheduler.STOP  # baseline off: trial 0 is any trial
