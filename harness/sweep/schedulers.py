"""How trials are stopped early: Ray Tune's scheduler for the spec's `early_terminate`.

Groups of a fused sweep are stopped per member inside the trial (harness.sweep.rungs, with
these rules), so Tune's own scheduler is FIFO for them. BaselineASHA reads private
attributes of Ray's ASHA, pinned by tests/test_sweep_pins.py. Every FIFO-choosing scheduler
here starts its choice past the finished trials (Queue).
"""

from __future__ import annotations

import math
from typing import Any

from ray.tune.experiment import Trial
from ray.tune.schedulers import (
    AsyncHyperBandScheduler,
    FIFOScheduler,
    HyperBandScheduler,
    MedianStoppingRule,
    TrialScheduler,
)

from harness.config import SweepSpec
from harness.sweep.keys import NUMBER


class Queue:
    """Tune's FIFO choice of the next trial to start, from past the finished trials.

    Tune asks its scheduler at every step of its loop (many per trial), and FIFOScheduler
    scans every trial of the sweep for a PENDING (then a PAUSED) one: a cost per trial that
    grew with the sweep. A TERMINATED or ERROR trial never runs again, so the trials before
    the first unfinished one are skipped for good; the choice is the same trial."""

    _past = 0  # trials before this index have all finished

    def choose_trial_to_run(self, tune_controller: Any) -> Any:
        trials = tune_controller.get_trials()
        i = self._past
        while i < len(trials) and trials[i].status in (Trial.TERMINATED, Trial.ERROR):
            i += 1
        self._past = i
        for status in (Trial.PENDING, Trial.PAUSED):
            for k in range(i, len(trials)):
                if trials[k].status == status:
                    return trials[k]
        return None


class FIFO(Queue, FIFOScheduler):
    """Tune's FIFOScheduler, choosing past the finished trials."""


class MedianStopping(Queue, MedianStoppingRule):
    """Tune's MedianStoppingRule, choosing past the finished trials."""


class BaselineASHA(Queue, AsyncHyperBandScheduler):
    """ASHA that never stops the classic baseline (Optuna trial 0 with `baseline: true`).

    The baseline's results still enter every rung it reaches, so the other trials are
    compared with it there; but it runs to its end, because its full value is what the
    sweep's summary (and `bench searchers`) measure the search by. Without this, a trial
    that reaches the first rung before it with a better early value stops it.
    """

    def __init__(self, *args: Any, keep_baseline: bool = True, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self._keep_baseline = keep_baseline

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict) -> str:
        action = super().on_trial_result(tune_controller, trial, result)
        if (
            action == TrialScheduler.STOP
            and self._keep_baseline
            and trial.config.get(NUMBER) == 0
            and result.get(self._time_attr, 0) < self._max_t
        ):
            self._num_stopped -= 1
            return TrialScheduler.CONTINUE
        return action


def build_scheduler(spec: SweepSpec, max_t: int, fused: bool = False) -> TrialScheduler:
    """The spec's early termination for whole trials; groups decide per member inside the
    trial (harness.sweep.rungs), so Tune's own scheduler is FIFO for them."""
    if fused:
        return FIFO()
    et = spec.early_terminate
    metric, mode = spec.metric.name, spec.metric.mode
    if et.type == "asha":
        return BaselineASHA(
            keep_baseline=spec.baseline,
            time_attr="training_iteration",
            metric=metric,
            mode=mode,
            max_t=max(max_t, spec.grace_period(max_t)),
            grace_period=spec.grace_period(max_t),
            reduction_factor=et.reduction_factor,
        )
    if et.type == "hyperband":
        # Asynchronous hyperband (several ASHA brackets); hyperband_sync is Ray's synchronous one
        return BaselineASHA(
            keep_baseline=spec.baseline,
            time_attr="training_iteration",
            metric=metric,
            mode=mode,
            max_t=max_t,
            grace_period=1,
            reduction_factor=et.reduction_factor,
            brackets=max(1, min(3, int(math.log(max(max_t, 1), et.reduction_factor)) + 1)),
        )
    if et.type == "hyperband_sync":
        # Ray's synchronous HyperBand: trials pause at each rung (a checkpoint after every
        # report lets them go on from there) until the rung is full, then the best go on.
        return HyperBandScheduler(
            time_attr="report",
            metric=metric,
            mode=mode,
            max_t=max_t,
            reduction_factor=et.reduction_factor,
            stop_last_trials=True,
        )
    if et.type == "pbt":
        from harness.sweep.population import pbt_scheduler

        return pbt_scheduler(spec)
    if et.type == "median":
        return MedianStopping(
            time_attr="training_iteration",
            metric=metric,
            mode=mode,
            grace_period=spec.grace_period(max_t),
            min_samples_required=3,
        )
    return FIFO()
