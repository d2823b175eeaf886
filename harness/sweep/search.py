"""How trials are chosen and stopped: the honest Optuna searcher and the scheduler.

HonestOptunaSearch tells Optuna how each trial really ended (see the package docstring);
it relies on private attributes of Ray's OptunaSearch and of Optuna, pinned in
pyproject.toml and checked by tests/test_sweep_pins.py.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState
from ray.tune.schedulers import (
    AsyncHyperBandScheduler,
    FIFOScheduler,
    MedianStoppingRule,
    TrialScheduler,
)
from ray.tune.search.optuna import OptunaSearch

from harness import results as rs
from harness import space, warmstart
from harness.config import SweepSpec
from harness.sweep.keys import ERROR, FINAL, NUMBER, PARAMS, STATUS
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
        **kw: Any,
    ) -> None:
        super().__init__(*args, **kw)
        self._metric_names = list(metric_names)
        self._parameters = dict(parameters)
        self._rerun = list(rerun)  # numbers of interrupted Optuna trials, handed out first
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
        return {PARAMS: params, NUMBER: number}

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
        """Report one evaluation's metric at its loop iteration (single objective only)."""
        if len(self._metric_names) > 1 or result.get(FINAL):
            return
        value, step = result.get(self._metric_names[0]), result.get("iteration")
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

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        if trial_id in self._ot_trials and trial_id not in self._completed_trials:
            self._intermediate(trial_id, result)

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


@dataclass
class SearchPlan:
    """What a sweep searches with beyond its method: `auto`'s choice (the first run's, on
    --resume: sweep.json keeps it) and the earlier sweeps' trials to warm-start from."""

    choice: space.Choice | None = None
    warm: warmstart.WarmTrials | None = None

    def record(self) -> dict | None:
        """sweep.json's "search" entry."""
        return None if self.choice is None else self.choice.to_dict()


def plan_search(spec: SweepSpec, folder: Path, resume: bool = False) -> SearchPlan:
    """auto's choice (kept from the first run on --resume) and the warm-start trials; reads
    earlier sweeps' studies, so its errors come before Ray starts."""
    choice = spec.choice()
    if resume and choice is not None:
        try:
            recorded = json.loads((folder / rs.SWEEP_FILE).read_text()).get("search")
        except (OSError, ValueError):
            recorded = None
        if recorded:
            choice = space.Choice.from_dict(recorded)
    warm = warmstart.trials(spec) if spec.warm_start else None
    return SearchPlan(choice, warm)


def build_searcher(
    spec: SweepSpec,
    folder: Path,
    rerun: Sequence[int] = (),
    resume: bool = False,
    plan: SearchPlan | None = None,
) -> HonestOptunaSearch:
    plan = plan or plan_search(spec, folder, resume)
    storage = optuna.storages.RDBStorage(
        optuna_storage_url(folder), engine_kwargs={"connect_args": {"timeout": 60}}
    )
    points = None  # on resume the baseline (and auto's draws) are in the study already
    if spec.baseline and not resume:
        first = [spec.baseline_params(), *spec.prior_points(plan.choice)]
        points = [space.encode(spec.parameters, p) for p in first]
    sampler = spec.sampler(plan.choice)
    if resume and spec.method not in ("grid", "qmc"):
        # A sampler seeded as before would draw the first run's values again; grid and QMC
        # read their place in the sequence from the study, the others get a fresh seed.
        done = len(
            storage.get_all_trials(storage.get_study_id_from_name(spec.name), deepcopy=False)
        )
        sampler = space.sampler(
            spec.method, spec.seed + done, spec.parameters, spec.budget.num_samples, plan.choice
        )
    many = len(spec.metrics) > 1
    searcher = HonestOptunaSearch(
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
    )
    if plan.warm is not None:  # after the baseline: it keeps trial number 0
        warmstart.add(searcher._ot_study, plan.warm)
    return searcher


class BaselineASHA(AsyncHyperBandScheduler):
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


def _no_rung_after_training(
    sched: AsyncHyperBandScheduler, last_eval: int | None
) -> AsyncHyperBandScheduler:
    """Drop an ASHA rung at `last_eval`, the longest trial's last evaluation (the default
    max_t counts one more report: the final result, after training and the test).

    A trial that reaches that report has trained to its end; a cut there saves only its test
    evaluation and turns a finished trial into a PRUNED one whose value no longer counts
    (measured on THUCNews at one epoch, grace 1: rungs at reports 1 and 3 of 4, and trials
    with 0.816 and 0.818 dev accuracy, above the baseline's 0.805, were pruned at report 3).
    Uses Ray's private _Bracket._rungs (pinned in tests/test_sweep_pins.py).
    """
    if last_eval is None:
        return sched
    for bracket in sched._brackets:
        bracket._rungs = [(m, r) for m, r in bracket._rungs if m != last_eval]
    return sched


def build_scheduler(spec: SweepSpec, max_t: int) -> TrialScheduler:
    et = spec.early_terminate
    metric, mode = spec.metric.name, spec.metric.mode
    last_eval = max_t - 1 if et.max_t is None else None  # see _no_rung_after_training
    if et.type == "asha":
        sched = BaselineASHA(
            keep_baseline=spec.baseline,
            time_attr="training_iteration",
            metric=metric,
            mode=mode,
            max_t=max(max_t, spec.grace_period(max_t)),
            grace_period=spec.grace_period(max_t),
            reduction_factor=et.reduction_factor,
        )
        return _no_rung_after_training(sched, last_eval)
    if et.type == "hyperband":
        # Asynchronous hyperband (several ASHA brackets): Ray's synchronous HyperBand pauses
        # trials, which a function trainable without checkpoints can only restart from zero.
        sched = BaselineASHA(
            keep_baseline=spec.baseline,
            time_attr="training_iteration",
            metric=metric,
            mode=mode,
            max_t=max_t,
            grace_period=1,
            reduction_factor=et.reduction_factor,
            brackets=max(1, min(3, int(math.log(max(max_t, 1), et.reduction_factor)) + 1)),
        )
        return _no_rung_after_training(sched, last_eval)
    if et.type == "median":
        return MedianStoppingRule(
            time_attr="training_iteration",
            metric=metric,
            mode=mode,
            grace_period=spec.grace_period(max_t),
            min_samples_required=3,
        )
    return FIFOScheduler()
