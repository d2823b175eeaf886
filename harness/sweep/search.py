"""How trials are chosen and stopped: the honest Optuna searcher and the scheduler.

HonestOptunaSearch tells Optuna how each trial really ended (see the package docstring);
it relies on private attributes of Ray's OptunaSearch and of Optuna, pinned in
pyproject.toml and checked by tests/test_sweep_pins.py.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState
from ray.tune.schedulers import (
    AsyncHyperBandScheduler,
    FIFOScheduler,
    HyperBandScheduler,
    MedianStoppingRule,
    TrialScheduler,
)
from ray.tune.search.optuna import OptunaSearch

from harness import results as rs
from harness import space
from harness.config import SweepSpec
from harness.sweep.halt import STORAGE_FAULTS, Halt, guarded
from harness.sweep.keys import ERROR, FINAL, LAST, NUMBER, PARAMS, RESTORE, STATUS
from harness.values import finite

log = logging.getLogger(__name__)


class HonestOptunaSearch(OptunaSearch):
    """OptunaSearch that tells Optuna how each trial really ended (see the package docstring)."""

    def __init__(
        self,
        *args: Any,
        metric_names: Sequence[str],
        parameters: Mapping[str, Any],
        rerun: Sequence[int] = (),
        restore: Mapping[int, dict] | None = None,
        halt: Halt | None = None,
        db: str = "",
        **kw: Any,
    ) -> None:
        super().__init__(*args, **kw)
        self.halt, self.db = halt, db  # the study cannot be written: the run stops (halt.py)
        self._metric_names = list(metric_names)
        self._parameters = dict(parameters)
        self._rerun = list(rerun)  # numbers of interrupted Optuna trials, handed out first
        self._restore = dict(restore or {})  # number -> the checkpoint its rerun goes on from
        self._reported: dict[str, set[int]] = {}
        self._number: dict[str, int] = {}

    def _resume_trial(self, trial_id: str, number: int) -> dict:
        """An interrupted trial runs again as the same Optuna trial (same number, params)."""
        study = self._ot_study
        storage_id = study._storage.get_trial_id_from_study_id_trial_number(study._study_id, number)
        ot_trial = optuna.trial.Trial(study, storage_id)
        self._ot_trials[trial_id] = ot_trial
        ot_trial.set_user_attr("ray_trial_id", trial_id)
        self._number[trial_id] = number
        params = space.decode(self._parameters, study._storage.get_trial(storage_id).params)
        config = {PARAMS: params, NUMBER: number}
        if number in self._restore:
            config[RESTORE] = self._restore[number]
        return config

    @guarded("db")
    def suggest(self, trial_id: str) -> dict | None:
        if self._rerun and trial_id not in self._ot_trials:
            return self._resume_trial(trial_id, self._rerun.pop(0))
        params = super().suggest(trial_id)
        if params is None:
            return None
        ot_trial = self._ot_trials[trial_id]
        ot_trial.set_user_attr("ray_trial_id", trial_id)
        self._number[trial_id] = ot_trial.number
        return {PARAMS: params, NUMBER: ot_trial.number}

    def _intermediate(self, trial_id: str, result: Mapping[str, Any]) -> None:
        """Report one evaluation's metric at its report index (single objective only).

        The step is the 1-based `report` (as the schedulers' training_iteration), not the
        batch count: where batch_size is searched, trials at the same step have seen the
        same number of evaluations, and a small-batch trial does not look further along."""
        if len(self._metric_names) > 1 or result.get(FINAL):
            return
        value, step = result.get(self._metric_names[0]), result.get("report")
        if value is None or step is None or not finite(value):
            return
        done = self._reported.setdefault(trial_id, set())
        if int(step) in done:
            return
        done.add(int(step))
        ot_trial = self._ot_trials[trial_id]
        if int(step) in ot_trial.storage.get_trial(ot_trial._trial_id).intermediate_values:
            return  # a rerun of an interrupted trial: the first run's value stands
        ot_trial.report(float(value), int(step))

    def _finished_in_study(self, ot_trial: optuna.Trial) -> bool:
        return ot_trial.storage.get_trial(ot_trial._trial_id).state.is_finished()

    @guarded("db")
    def on_trial_result(self, trial_id: str, result: dict) -> None:
        if trial_id in self._ot_trials and trial_id not in self._completed_trials:
            self._intermediate(trial_id, result)

    @guarded("db")
    def on_trial_complete(
        self, trial_id: str, result: dict | None = None, error: bool = False
    ) -> None:
        if trial_id in self._completed_trials or trial_id not in self._ot_trials:
            return
        ot_trial = self._ot_trials[trial_id]
        if self._finished_in_study(ot_trial):
            self._completed_trials.add(trial_id)
            return
        state, values = self._verdict(trial_id, ot_trial, result or {}, error)
        try:
            if state == TrialState.COMPLETE:
                out = values if len(values) > 1 else values[0]
                self._ot_study.tell(ot_trial, out, state=state)
            else:
                self._ot_study.tell(ot_trial, state=state)
        except STORAGE_FAULTS:
            raise  # the study cannot be written: halt (see guarded)
        except Exception as exc:  # noqa: BLE001 -- a bad tell must not end the sweep
            log.warning("optuna tell for %s failed: %s", trial_id, exc)
        self._completed_trials.add(trial_id)

    def _verdict(
        self, trial_id: str, ot_trial: optuna.Trial, result: Mapping[str, Any], error: bool
    ) -> tuple[TrialState, list | None]:
        """How a trial ended, as Optuna's state (and objective values when COMPLETE); the
        status and reason go to the trial's user attributes on the way."""
        if error:
            ot_trial.set_user_attr("status", "FAILED")
            return TrialState.FAIL, None
        if not result.get(FINAL):
            # Stopped from outside (scheduler, time budget): the result that triggered the
            # stop never reached on_trial_result, so record it before pruning.
            self._intermediate(trial_id, result)
            ot_trial.set_user_attr("status", "PRUNED")
            return TrialState.PRUNED, None
        held = result.get(LAST) or {  # Tune hands the searcher flattened results
            k[len(LAST) + 1 :]: v for k, v in result.items() if k.startswith(LAST + "/")
        }
        if held:  # the report the trial ended at came with its final result (trial.LastReport)
            self._intermediate(trial_id, held)
        status = result.get(STATUS, "COMPLETED")
        ot_trial.set_user_attr("status", status)
        if status != "COMPLETED":
            ot_trial.set_user_attr("reason", str(result.get(ERROR, ""))[:1000])
            return TrialState.FAIL, None
        values = [result.get(m) for m in self._metric_names]
        if all(v is not None and finite(v) for v in values):
            return TrialState.COMPLETE, values
        ot_trial.set_user_attr("reason", "objective is not a finite number")
        return TrialState.FAIL, None


def optuna_storage_url(folder: Path) -> str:
    """The sweep's Optuna study: results/<name>/optuna.db."""
    return f"sqlite:///{(folder / rs.OPTUNA_FILE).resolve()}"


def build_searcher(
    spec: SweepSpec,
    folder: Path,
    rerun: Sequence[int] = (),
    resume: bool = False,
    restore: Mapping[int, dict] | None = None,
    halt: Halt | None = None,
) -> HonestOptunaSearch:
    storage = optuna.storages.RDBStorage(
        optuna_storage_url(folder), engine_kwargs={"connect_args": {"timeout": 60}}
    )
    points = None  # on resume the baseline is in the study already
    if spec.baseline and not resume:
        points = [space.encode(spec.parameters, spec.baseline_params())]
    sampler = spec.sampler()
    if resume and spec.method not in ("grid", "qmc"):
        # A sampler seeded as before would draw the first run's values again; grid and QMC
        # read their place in the sequence from the study, the others get a fresh seed.
        done = len(
            storage.get_all_trials(storage.get_study_id_from_name(spec.name), deepcopy=False)
        )
        sampler = space.sampler(
            spec.method, spec.seed + done, spec.parameters, spec.budget.num_samples
        )
    many = len(spec.metrics) > 1
    return HonestOptunaSearch(
        space=space.define_by_run(spec.parameters),
        metric=[m.name for m in spec.metrics] if many else spec.metric.name,
        mode=[m.mode for m in spec.metrics] if many else spec.metric.mode,
        points_to_evaluate=points or None,
        sampler=sampler,
        study_name=spec.name,
        storage=storage,
        metric_names=[m.name for m in spec.metrics],
        parameters=spec.parameters,
        rerun=rerun,
        restore=restore,
        halt=halt,
        db=str(folder / rs.OPTUNA_FILE),
    )


def build_scheduler(spec: SweepSpec, max_t: int) -> TrialScheduler:
    et = spec.early_terminate
    metric, mode = spec.metric.name, spec.metric.mode
    if et.type == "asha":
        return AsyncHyperBandScheduler(
            time_attr="training_iteration",
            metric=metric,
            mode=mode,
            max_t=max(max_t, et.grace_period),
            grace_period=et.grace_period,
            reduction_factor=et.reduction_factor,
        )
    if et.type == "hyperband":
        # Asynchronous hyperband (several ASHA brackets): Ray's synchronous HyperBand pauses
        # trials, which a function trainable without checkpoints can only restart from zero.
        return AsyncHyperBandScheduler(
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
        return MedianStoppingRule(
            time_attr="training_iteration",
            metric=metric,
            mode=mode,
            grace_period=et.grace_period,
            min_samples_required=3,
        )
    return FIFOScheduler()
