"""harness.sweep.rungs: a fused group's member is stopped exactly when Ray's scheduler would
stop the same trial unfused, given the same history.

Ray's AsyncHyperBandScheduler and MedianStoppingRule (real objects, no cluster needed) and a
`Rungs` record are fed the same results in the same order (trials interleaved as concurrent
trials' reports arrive; time = the report index, Tune's training_iteration of an unfused
trial); every decision must agree, and a stopped trial reports no more.
"""

from __future__ import annotations

import random

import pytest
from helpers import SMOKE
from ray.tune.schedulers import AsyncHyperBandScheduler, MedianStoppingRule, TrialScheduler

from harness.config import load_spec
from harness.sweep.rungs import Rungs, rungs_for


class _Trial:
    """What Ray's schedulers read of a trial: its id (and identity, as a dict key)."""

    def __init__(self, number: int) -> None:
        self.trial_id = f"t{number}"
        self.number = number


class _Controller:
    def get_live_trials(self) -> list:
        return []  # nothing waits: Ray's median rule continues rather than pauses


def _histories(seed: int, n: int, max_t: int, coarse: bool) -> list[tuple[int, int, float]]:
    """Concurrent trials' reports in one arrival order: (number, report, value)."""
    rng = random.Random(seed)
    curves = {}
    for k in range(n):
        length = rng.randint(1, max_t - 1)  # below max_t: there a member ends by itself
        level = rng.random()
        values = [level + 0.1 * rng.random() * (r + 1) for r in range(length)]
        curves[k] = [round(v * 8) / 8 for v in values] if coarse else values
    pos = {k: 0 for k in curves}
    order = []
    while pos:
        k = rng.choice(sorted(pos))
        order.append((k, pos[k] + 1, curves[k][pos[k]]))
        pos[k] += 1
        if pos[k] == len(curves[k]):
            del pos[k]
    return order


def _compare(ray_sched, ours: Rungs, order: list[tuple[int, int, float]], metric: str = "m") -> int:
    """Feed both; assert equal decisions; returns how many trials were stopped."""
    trials: dict[int, _Trial] = {}
    stopped: set[int] = set()
    controller = _Controller()
    for number, report, value in order:
        if number in stopped:
            continue
        if number not in trials:
            trials[number] = _Trial(number)
            ray_sched.on_trial_add(controller, trials[number])
            if isinstance(ray_sched, AsyncHyperBandScheduler):  # the same bracket as ours
                ray_sched._trial_info[f"t{number}"] = ray_sched._brackets[ours.bracket(number)]
        result = {"training_iteration": report, metric: value}
        theirs = ray_sched.on_trial_result(controller, trials[number], result)
        mine = ours.decide(number, report, value)
        assert mine == (theirs == TrialScheduler.STOP), (number, report, value, theirs)
        if mine:
            stopped.add(number)
    return len(stopped)


@pytest.mark.parametrize("mode", ["max", "min"])
@pytest.mark.parametrize("coarse", [False, True])
@pytest.mark.parametrize(("grace", "rf"), [(1, 2), (1, 3), (2, 3), (1, 4)])
def test_asha_stops_the_members_ray_would_stop(
    mode: str, coarse: bool, grace: int, rf: float
) -> None:
    stops = 0
    for seed in range(20):
        max_t = 20
        ray_sched = AsyncHyperBandScheduler(
            time_attr="training_iteration", metric="m", mode=mode, max_t=max_t,
            grace_period=grace, reduction_factor=rf,
        )  # fmt: skip
        ours = Rungs("asha", mode=mode, max_t=max_t, grace_period=grace, reduction_factor=rf)
        stops += _compare(ray_sched, ours, _histories(seed, 12, max_t, coarse))
    assert stops > 20  # the rule was exercised, not only agreed on "continue"


@pytest.mark.parametrize("mode", ["max", "min"])
def test_hyperband_brackets_follow_ray(mode: str) -> None:
    stops = 0
    for seed in range(20):
        max_t = 27
        ray_sched = AsyncHyperBandScheduler(
            time_attr="training_iteration", metric="m", mode=mode, max_t=max_t, grace_period=1,
            reduction_factor=3, brackets=3,
        )  # fmt: skip
        ours = Rungs("hyperband", mode=mode, max_t=max_t, grace_period=1, reduction_factor=3,
                     brackets=3, seed=seed)  # fmt: skip
        stops += _compare(ray_sched, ours, _histories(seed, 15, max_t, coarse=True))
    assert stops > 20
    drawn = [Rungs("hyperband", mode="max", max_t=27, brackets=3).bracket(n) for n in range(300)]
    assert {0, 1, 2} == set(drawn)  # every bracket is drawn, by Ray's probabilities
    assert drawn.count(0) > drawn.count(1) > drawn.count(2)


@pytest.mark.parametrize("mode", ["max", "min"])
@pytest.mark.parametrize("grace", [1, 3])
def test_median_stops_the_members_ray_would_stop(mode: str, grace: int) -> None:
    stops = 0
    for seed in range(20):
        max_t = 15
        ray_sched = MedianStoppingRule(
            time_attr="training_iteration", metric="m", mode=mode, grace_period=grace,
            min_samples_required=3,
        )  # fmt: skip
        ours = Rungs("median", mode=mode, max_t=max_t, grace_period=grace, min_samples=3)
        stops += _compare(ray_sched, ours, _histories(seed, 10, max_t, coarse=False))
    assert stops > 10


def test_a_resumed_record_decides_as_the_live_one() -> None:
    # The study's intermediate values seed the record on --resume: what comes next is decided
    # as if the record had seen everything live; a rerun's repeated reports are not new.
    order = _histories(7, 12, 20, coarse=True)
    cut = len(order) // 2
    live = Rungs("asha", mode="max", max_t=20, grace_period=1, reduction_factor=2)
    seen: dict[int, dict[int, float]] = {}
    stopped = set()
    for number, report, value in order[:cut]:
        if number not in stopped:
            seen.setdefault(number, {})[report] = value
            if live.decide(number, report, value):
                stopped.add(number)
    resumed = Rungs("asha", mode="max", max_t=20, grace_period=1, reduction_factor=2, record=seen)
    for number, report, value in order[cut:]:
        if number not in stopped:
            assert resumed.decide(number, report, value) == live.decide(number, report, value)
    n, curve = next(iter(seen.items()))
    assert all(resumed.decide(n, r, v) is False for r, v in curve.items())  # repeats


def test_record_settings_come_from_the_spec() -> None:
    spec = load_spec(SMOKE)  # asha, grace 1, reduction 2, maximize
    r = rungs_for(spec, 9, None)
    assert r.kind == "asha" and r.sign == 1.0 and r.rf == 2 and r.grace == 1
    assert [m for m, _ in r.brackets[0]] == [8, 4, 2, 1]
    median = rungs_for(load_spec(SMOKE, ["early_terminate={type: median, grace_period: 2}"]), 9, {})
    assert median.kind == "median" and median.grace == 2
    none = rungs_for(load_spec(SMOKE, ["early_terminate={type: none}"]), 9, {})
    assert not any(none.decide(0, r, 0.0) for r in range(1, 9))
    assert none.unfinished([0, 1]) == [0, 1]
    none.end(0)
    assert none.unfinished([0, 1]) == [1]
