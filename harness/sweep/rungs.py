"""Early termination of the members of fused groups: Ray's rules, one shared record.

Ray's schedulers see only whole Ray trials, and in a fused sweep a Ray trial is a group of
Optuna trials. So the spec's `early_terminate` runs here, per member: every member's report
goes, in arrival order, to one `Rungs` record held by a Ray actor on the driver's node (the
trial processes of every group and node reach it; they need no shared filesystem), which
answers at once whether to stop that member. The record is the study's intermediate values
(step = the report index): a resumed sweep seeds it from optuna.db, and the driver writes
the same values to the study as they arrive.

The decisions are Ray's, rule for rule, with the report index as time
(training_iteration of an unfused trial): `asha` and `hyperband` are
ray.tune.schedulers.AsyncHyperBandScheduler's rungs (a member is recorded at the first report
at or past each milestone and stopped when its value is below the rung's
(1 - 1/reduction_factor) percentile of the values recorded there before it; hyperband draws
each member's bracket with Ray's probabilities, seeded by its Optuna number), `median` is
ray.tune.schedulers.MedianStoppingRule's (stopped when its best value so far is worse than the
median of the other trials' running means up to the same report, given at least 3 of them).
tests/test_sweep_rungs.py feeds Ray's schedulers and this record the same results and checks
that they stop the same trials at the same reports. Two deliberate differences, both at the
edges: a member at max_t, or at its group's last report, is recorded but not stopped (it has
trained to its end and ends COMPLETED; the trial ignores the verdict there), where Ray would
stop it or lose the race to its final result, and a member never pauses (Ray's median rule pauses a trial that lacks comparisons
while other trials wait; here it continues, as Ray does when none wait).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

STOP, CONTINUE = True, False


class Rungs:
    """The record of every member's reports and the stopping rule of `kind`.

    `values` maps an Optuna trial number to {report index: metric value}; `ended` holds the
    numbers whose end reached the driver (a retried group skips them)."""

    def __init__(
        self,
        kind: str,
        *,
        mode: str,
        max_t: int,
        grace_period: int = 1,
        reduction_factor: float = 3,
        brackets: int = 1,
        min_samples: int = 3,
        seed: int = 0,
        record: Mapping[int, Mapping[int, float]] | None = None,
        keep: int | None = None,
    ) -> None:
        self.kind = kind
        self.keep = keep  # a trial number never stopped: the classic baseline (BaselineASHA)
        self.sign = 1.0 if mode == "max" else -1.0
        self.max_t = max_t
        self.grace = grace_period
        self.rf = reduction_factor
        self.min_samples = min_samples
        self.seed = seed
        self.values: dict[int, dict[int, float]] = {}
        self.ended: set[int] = set()
        # ASHA: per bracket, rungs from the highest milestone down: [(milestone, {number: value})]
        self.brackets: list[list[tuple[float, dict[int, float]]]] = []
        if kind in ("asha", "hyperband"):
            for s in range(brackets):
                n_rungs = int(np.log(max_t / grace_period) / np.log(reduction_factor) - s + 1)
                self.brackets.append(
                    [
                        (grace_period * reduction_factor ** (k + s), {})
                        for k in reversed(range(n_rungs))
                    ]
                )
        self._bracket_of: dict[int, int] = {}
        for number, curve in (record or {}).items():
            for report in sorted(curve):
                self.decide(int(number), int(report), float(curve[report]))

    # ------------------------------------------------------------------ the shared record

    def decide(self, number: int, report: int, value: float | None) -> bool:
        """Record member `number`'s value at its `report`-th report; True: stop it now."""
        if value is None or not math.isfinite(value):
            return CONTINUE  # nothing to compare (a diverged member ends by itself)
        curve = self.values.setdefault(number, {})
        if report in curve:
            return CONTINUE  # a rerun repeats a report: the first run's value stands
        curve[report] = float(value)
        if report >= self.max_t:
            return CONTINUE  # the member's last possible report: it ends by itself
        if self.kind in ("asha", "hyperband"):
            stop = self._asha(number, report, self.sign * float(value))
            return stop and number != self.keep
        if self.kind == "median":
            return self._median(number, report)
        return CONTINUE

    def end(self, number: int) -> None:
        self.ended.add(number)

    def unfinished(self, numbers: list[int]) -> list[int]:
        return [n for n in numbers if n not in self.ended]

    # ------------------------------------------------------------------ Ray's rules

    def bracket(self, number: int) -> int:
        """AsyncHyperBandScheduler.on_trial_add's draw, seeded by the trial's number."""
        if number not in self._bracket_of:
            sizes = np.array([len(b) for b in self.brackets])
            probs = np.e ** (sizes - sizes.max())
            rng = np.random.default_rng([self.seed, number])
            self._bracket_of[number] = int(rng.choice(len(self.brackets), p=probs / probs.sum()))
        return self._bracket_of[number]

    def _asha(self, number: int, report: int, reward: float) -> bool:
        """_Bracket.on_result (stop_last_trials; max_t left to the member's own end)."""
        for milestone, recorded in self.brackets[self.bracket(number)]:
            if report < milestone or number in recorded:
                continue
            cutoff = (
                np.nanpercentile(list(recorded.values()), (1 - 1 / self.rf) * 100)
                if recorded
                else None
            )
            recorded[number] = reward
            return STOP if cutoff is not None and reward < cutoff else CONTINUE
        return CONTINUE

    def _median(self, number: int, report: int) -> bool:
        """MedianStoppingRule.on_trial_result (hard stop; never pauses)."""
        if report < self.grace:
            return CONTINUE
        means = []
        for other, curve in self.values.items():
            if other == number or max(curve) < report:
                continue
            scoped = [v for t, v in curve.items() if self.grace <= t <= report]
            if scoped and np.isfinite(np.mean(scoped)):
                means.append(float(np.mean(scoped)))
        if len(means) < self.min_samples:
            return CONTINUE
        median = float(np.median(means))
        mine = self.values[number].values()
        best = max(mine) if self.sign > 0 else min(mine)
        better = max(median, best) if self.sign > 0 else min(median, best)
        return STOP if better != best else CONTINUE


def rungs_for(spec: Any, max_t: int, record: Mapping[int, Mapping[int, float]] | None) -> Rungs:
    """The record for `spec.early_terminate`, with build_scheduler's settings."""
    et = spec.early_terminate
    mode = spec.metric.mode
    grace = spec.grace_period(max_t)
    keep = 0 if spec.baseline else None  # the baseline runs to its end, as under BaselineASHA
    if et.type == "asha":
        return Rungs("asha", mode=mode, max_t=max(max_t, grace), grace_period=grace,
                     reduction_factor=et.reduction_factor, seed=spec.seed, record=record,
                     keep=keep)  # fmt: skip
    if et.type == "hyperband":
        brackets = max(1, min(3, int(math.log(max(max_t, 1), et.reduction_factor)) + 1))
        return Rungs("hyperband", mode=mode, max_t=max_t, grace_period=1,
                     reduction_factor=et.reduction_factor, brackets=brackets, seed=spec.seed,
                     record=record, keep=keep)  # fmt: skip
    if et.type == "median":
        return Rungs("median", mode=mode, max_t=max_t, grace_period=grace,
                     min_samples=3, seed=spec.seed, record=record)  # fmt: skip
    return Rungs("none", mode=mode, max_t=max_t, seed=spec.seed, record=record)


def start_rungs(spec: Any, max_t: int, record: Mapping[int, Mapping[int, float]] | None) -> Any:
    """The record as a Ray actor (no CPU of its own; calls are served one at a time, in
    arrival order, as Ray's scheduler serves results)."""
    import ray

    actor = ray.remote(num_cpus=0, max_restarts=0)(_RungsActor)
    return actor.remote(spec, max_t, record)


class _RungsActor(Rungs):
    def __init__(self, spec: Any, max_t: int, record: Mapping[int, Mapping[int, float]] | None):
        r = rungs_for(spec, max_t, record)
        self.__dict__.update(r.__dict__)
