"""How trials are chosen and stopped: the honest Optuna searcher and the scheduler.

HonestOptunaSearch tells Optuna how each trial really ended (see the package docstring);
it relies on private attributes of Ray's OptunaSearch and of Optuna, pinned in
pyproject.toml and checked by tests/test_sweep_pins.py.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
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
from ray.tune.search import Searcher
from ray.tune.search.optuna import OptunaSearch

from harness import results as rs
from harness import space, warmstart
from harness.config import SweepSpec
from harness.sweep.groups import FusePlan, group_by_shape, shape_names
from harness.sweep.halt import STORAGE_FAULTS, Halt, guarded
from harness.sweep.keys import (
    ERROR,
    FINAL,
    GROUP,
    LAST,
    MEMBER,
    MEMBERS,
    NUMBER,
    PARAMS,
    RESTORE,
    STATUS,
    member_id,
)
from harness.values import finite

log = logging.getLogger(__name__)
GROW = 4  # a fused group holds at most 1/GROW of the trials ended so far (GroupSearch._cap)


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

    def _intermediate(
        self, trial_id: str, result: Mapping[str, Any], ot_trial: optuna.Trial | None = None
    ) -> None:
        """Report one evaluation's metric at its report index (single objective only) to
        `ot_trial` (default: the Ray trial's own; a group member passes its own).

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
        ot_trial = ot_trial or self._ot_trials[trial_id]
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
        held = (
            result.get(LAST)
            or {  # Tune hands the searcher flattened results
                k[len(LAST) + 1 :]: v for k, v in result.items() if k.startswith(LAST + "/")
            }
        )
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


class GroupSearch(HonestOptunaSearch):
    """Each Ray trial a group of Optuna trials (resources.fuse > 1), each member told to
    Optuna as honestly as a whole trial is.

    A group's first member is asked from the whole space (the queued baseline first); the
    others are asked with its shape settings fixed (`study.enqueue_trial` of those values,
    then `ask()`: the sampler chooses only the fusible values, and TPE's constant liar sees
    the members already running). `method: grid` walks the grid itself (seeded order),
    enqueueing whole points whose shape values match. Every member has its own number,
    params, intermediate values (step = report index) and state; its trial id is
    `<group's Ray trial id>-<member index>` (user attribute ray_trial_id, with group_id and
    data_seed, the group's batch order, which its params carry too so that a member reruns
    alone). `num_samples` counts members: the searcher says FINISHED when all are asked.
    """

    def __init__(
        self,
        *args: Any,
        spec: SweepSpec,
        size: int,
        new: int,
        rerun_groups: Sequence[Sequence[int]] = (),
        rungs: Any = None,
        **kw: Any,
    ) -> None:
        super().__init__(*args, **kw)
        self._spec = spec
        self._size = size
        self._new = new  # members still to ask
        self._rerun_groups = [list(g) for g in rerun_groups]  # interrupted trials, regrouped
        self._shape = shape_names(spec)
        self._rungs = rungs  # harness.sweep.rungs actor: members that ended
        self._groups: dict[str, list[dict[str, Any]]] = {}  # Ray trial id -> its members
        self._members: dict[str, optuna.Trial] = {}  # member trial id -> Optuna trial
        self._told: set[str] = set()
        self._grid_points: list[dict[str, Any]] | None = None

    # ------------------------------------------------------------------ filling groups

    def suggest(self, trial_id: str) -> dict | None:
        if trial_id not in self._groups:
            if self._rerun_groups:
                numbers = self._rerun_groups.pop(0)
                members = [self._resume_member(trial_id, k, n) for k, n in enumerate(numbers)]
            elif self._new > 0:
                members = self._ask_group(trial_id, min(self._size, self._new, self._cap()))
                self._new -= len(members)
            else:
                return Searcher.FINISHED
            self._groups[trial_id] = members
        return {MEMBERS: [dict(m) for m in self._groups[trial_id]]}

    def _cap(self) -> int:
        """Groups grow as the search learns: a group holds at most a quarter of the trials
        that have ended (at least 1). A group shares its shape settings and is asked before
        any of its members reports, so 64 trials in groups of 8 make only 8 shape choices,
        most of them blind; replayed on the THUCNews table (README, "Replayed search
        benchmarks") that cost auto's fused search most of its edge, and growing groups won
        it back. Random and QMC learn nothing from results, and a budget of fewer than
        GROW full groups would hardly fuse at all (at 16 trials in groups of 8 the replay
        found no loss to win back): their groups are full."""
        if self._spec.method in ("random", "qmc", "grid"):
            return self._size
        if self._spec.budget.num_samples < GROW * self._size:
            return self._size
        ended = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
        done = len(self._ot_study.get_trials(deepcopy=False, states=ended))
        return max(1, math.ceil(done / GROW))

    def _register(
        self, trial_id: str, k: int, ot_trial: optuna.Trial, params: dict[str, Any]
    ) -> dict[str, Any]:
        mid = member_id(trial_id, k)
        self._members[mid] = ot_trial
        ot_trial.set_user_attr("ray_trial_id", mid)
        ot_trial.set_user_attr("group_id", trial_id)
        if params.get("data_seed") is not None:
            ot_trial.set_user_attr("data_seed", params["data_seed"])
        return {"member": k, "number": ot_trial.number, "params": params}

    def _resume_member(self, trial_id: str, k: int, number: int) -> dict[str, Any]:
        """An interrupted trial runs again as the same Optuna trial, with its batch order."""
        study = self._ot_study
        storage_id = study._storage.get_trial_id_from_study_id_trial_number(study._study_id, number)
        frozen = study._storage.get_trial(storage_id)
        params = space.decode(self._parameters, frozen.params)
        if frozen.user_attrs.get("data_seed") is not None:
            params["data_seed"] = frozen.user_attrs["data_seed"]
        return self._register(trial_id, k, optuna.trial.Trial(study, storage_id), params)

    def _ask_group(self, trial_id: str, n: int) -> list[dict[str, Any]]:
        first = self._ask(self._grid_point({}) if self._spec.method == "grid" else None)
        params0 = space.suggest(first, self._parameters)
        try:
            seed: int | None = self._spec.trial_config(params0).train.batch_seed
        except Exception:  # noqa: BLE001 -- a bad value: this member fails alone, in its trial
            seed = None
        fixed = {name: self._parameters[name].encode(params0[name]) for name in self._shape}
        asked = [(first, params0)]
        while seed is not None and len(asked) < n:
            ot_trial = self._ask_like(fixed)
            if ot_trial is None:
                break
            asked.append((ot_trial, space.suggest(ot_trial, self._parameters)))
        out = []
        for k, (ot_trial, params) in enumerate(asked):
            params = dict(params)
            if seed is not None and params.get("data_seed") is None:
                params["data_seed"] = seed
            out.append(self._register(trial_id, k, ot_trial, params))
        return out

    def _waiting(self) -> list[optuna.trial.FrozenTrial]:
        return self._ot_study.get_trials(deepcopy=False, states=(TrialState.WAITING,))

    def _ask(self, point: dict[str, Any] | None) -> optuna.Trial:
        """study.ask(), after enqueueing `point` unless an earlier queued trial (the baseline)
        is waiting: ask() hands that out first."""
        if point is not None and not self._waiting():
            self._ot_study.enqueue_trial(point)
        return self._ot_study.ask()

    def _ask_like(self, fixed: dict[str, Any]) -> optuna.Trial | None:
        """A member with the group's shape values (None: no such trial can be asked now)."""
        waiting = self._waiting()
        if waiting:  # ask() hands out the first queued trial (the baseline, auto's draws)
            queued = waiting[0].system_attrs.get("fixed_params") or {}
            if all(queued.get(n) == v for n, v in fixed.items()):
                return self._ot_study.ask()  # of this group's shape: it joins
            return None
        if self._spec.method == "grid":
            point = self._grid_point(fixed)
            if point is None:
                return None
            return self._ask(point)
        return self._ask(fixed or None)

    def _grid_point(self, fixed: Mapping[str, Any]) -> dict[str, Any] | None:
        """The next grid point (seeded order) with the `fixed` values, the least-run first."""
        if self._grid_points is None:
            grid = space.grid(self._parameters)
            names = list(grid)
            self._grid_points = [dict(zip(names, c)) for c in itertools.product(*grid.values())]
            random.Random(self._spec.seed).shuffle(self._grid_points)
        runs: dict[str, int] = {}
        for t in self._ot_study.get_trials(deepcopy=False):
            p = t.params or t.system_attrs.get("fixed_params") or {}
            k = json.dumps(p, sort_keys=True, default=str)
            runs[k] = runs.get(k, 0) + 1
        matching = [p for p in self._grid_points if all(p.get(n) == v for n, v in fixed.items())]
        if not matching:
            return None
        return min(matching, key=lambda p: runs.get(json.dumps(p, sort_keys=True, default=str), 0))

    # ------------------------------------------------------------------ results

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        if trial_id in self._groups:
            self._group_entries(trial_id, result)
        else:
            super().on_trial_result(trial_id, result)

    def on_trial_complete(
        self, trial_id: str, result: dict | None = None, error: bool = False
    ) -> None:
        if trial_id not in self._groups:
            super().on_trial_complete(trial_id, result, error)
            return
        self._group_entries(trial_id, result or {})
        for m in self._groups[trial_id]:  # members the group never ended: stopped from outside
            mid = member_id(trial_id, m["member"])
            if mid not in self._told:
                self._tell(mid, {STATUS: "FAILED" if error else "PRUNED"})

    def _group_entries(self, trial_id: str, result: Mapping[str, Any]) -> None:
        for entry in result.get(GROUP) or ():
            mid = member_id(trial_id, int(entry[MEMBER]))
            if mid not in self._members or mid in self._told:
                continue
            if entry.get(FINAL):
                self._tell(mid, entry)
            else:
                self._intermediate(mid, entry, self._members[mid])

    def _tell(self, mid: str, entry: Mapping[str, Any]) -> None:
        """A member's end as Optuna's state: COMPLETE with its objective(s), PRUNED (stopped
        by early termination or from outside), FAIL (raised or diverged, reason attached)."""
        ot_trial = self._members[mid]
        self._told.add(mid)
        if not self._finished_in_study(ot_trial):
            status = str(entry.get(STATUS) or "FAILED")
            ot_trial.set_user_attr("status", status)
            values = [entry.get(m) for m in self._metric_names]
            state = TrialState.FAIL
            if status == "PRUNED":
                state = TrialState.PRUNED
            elif status == "COMPLETED" and all(v is not None and finite(v) for v in values):
                state = TrialState.COMPLETE
            elif status == "COMPLETED":
                ot_trial.set_user_attr("reason", "objective is not a finite number")
            elif entry.get(ERROR):
                ot_trial.set_user_attr("reason", str(entry.get(ERROR))[:1000])
            try:
                if state == TrialState.COMPLETE:
                    self._ot_study.tell(ot_trial, values if len(values) > 1 else values[0])
                else:
                    self._ot_study.tell(ot_trial, state=state)
            except Exception as exc:  # noqa: BLE001 -- a bad tell must not end the sweep
                log.warning("optuna tell for %s failed: %s", mid, exc)
        if self._rungs is not None:  # a retried group leaves this member out
            import ray

            try:
                ray.get(self._rungs.end.remote(ot_trial.number), timeout=30)
            except Exception as exc:  # noqa: BLE001 -- at worst the member runs again
                log.warning("could not record the end of %s: %s", mid, exc)


def optuna_storage_url(folder: Path) -> str:
    """The sweep's Optuna study: results/<name>/optuna.db."""
    return f"sqlite:///{(folder / rs.OPTUNA_FILE).resolve()}"


@dataclass
class SearchPlan:
    """What a sweep searches with beyond its method: `auto`'s choice (the first run's, on
    --resume: sweep.json keeps it) and the earlier sweeps' trials to warm-start from."""

    choice: space.Choice | None = None
    warm: warmstart.WarmTrials | None = None
    # harness.bench.searchers.restriction.Restriction: sample only a table's recorded configurations
    restrict: Any = None

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
    restore: Mapping[int, dict] | None = None,
    halt: Halt | None = None,
    fuse: FusePlan | None = None,
    new: int | None = None,
    rungs: Any = None,
    plan: SearchPlan | None = None,
    storage: optuna.storages.BaseStorage | None = None,
) -> HonestOptunaSearch:
    """The searcher of a sweep (auto's choice and warm start from `plan`); with `fuse`
    planning groups, a GroupSearch that asks `new` members besides the interrupted ones
    (`rerun`), and tells `rungs` which ended. `storage`: the study's (default: the folder's
    optuna.db; the replay passes Optuna's in-memory storage)."""
    plan = plan or plan_search(spec, folder, resume)
    storage = storage or optuna.storages.RDBStorage(
        optuna_storage_url(folder), engine_kwargs={"connect_args": {"timeout": 60}}
    )
    points = None  # on resume the baseline (and auto's draws) are in the study already
    if spec.baseline and not resume:
        first = [spec.baseline_params(), *spec.prior_points(plan.choice)]
        points = [space.encode(spec.parameters, p) for p in first]
        if plan.restrict is not None:
            points = plan.restrict.points(points)
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
    if plan.restrict is not None:
        sampler = plan.restrict.sampler(sampler)
    many = len(spec.metrics) > 1
    common: dict[str, Any] = {
        "space": space.define_by_run(spec.parameters),
        "metric": [m.name for m in spec.metrics] if many else spec.metric.name,
        "mode": [m.mode for m in spec.metrics] if many else spec.metric.mode,
        "points_to_evaluate": points or None,
        "study_name": spec.name,
        "storage": storage,
        "metric_names": [m.name for m in spec.metrics],
        "parameters": spec.parameters,
        "halt": halt,
        "db": str(folder / rs.OPTUNA_FILE),
    }
    searcher: HonestOptunaSearch
    if fuse is not None and fuse.fused:
        if spec.method == "grid":  # GroupSearch walks the grid and enqueues whole points
            sampler = optuna.samplers.RandomSampler(seed=spec.seed)
        searcher = GroupSearch(
            **common, sampler=sampler, spec=spec, size=fuse.size,
            new=len(rerun) if new is None else new,
            rerun_groups=rerun_groups(spec, storage, rerun, fuse.size), rungs=rungs,
        )  # fmt: skip
    else:
        searcher = HonestOptunaSearch(**common, sampler=sampler, rerun=rerun, restore=restore)
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


def rerun_groups(
    spec: SweepSpec, storage: optuna.storages.BaseStorage, numbers: Sequence[int], size: int
) -> list[list[int]]:
    """Interrupted trials (Optuna numbers) in groups that share shape settings and batch
    order (their data_seed user attribute), at most `size` each."""
    if not numbers:
        return []
    study_id = storage.get_study_id_from_name(spec.name)
    by_number = {t.number: t for t in storage.get_all_trials(study_id, deepcopy=False)}
    members = []
    for n in numbers:
        t = by_number[n]
        params = space.decode(spec.parameters, t.params)
        if t.user_attrs.get("data_seed") is not None:
            params["data_seed"] = t.user_attrs["data_seed"]
        members.append((n, params))
    return group_by_shape(spec, members, size)


def build_scheduler(spec: SweepSpec, max_t: int, fused: bool = False) -> TrialScheduler:
    """The spec's early termination for whole trials; groups decide per member inside the
    trial (harness.sweep.rungs), so Tune's own scheduler is FIFO for them."""
    if fused:
        return FIFOScheduler()
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
        return MedianStoppingRule(
            time_attr="training_iteration",
            metric=metric,
            mode=mode,
            grace_period=spec.grace_period(max_t),
            min_samples_required=3,
        )
    return FIFOScheduler()
