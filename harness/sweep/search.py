"""How trials are chosen: one Optuna searcher for every sweep (the schedulers that stop
them are in harness.sweep.schedulers).

OptunaSearcher is a Ray Tune Searcher over Optuna's public ask-and-tell API: every Ray trial
is a group of Optuna trials (one when unfused), each asked (`study.ask`, `enqueue_trial`),
reported (`Trial.report`) and told how it ended (`study.tell`) the same way, through one
outcome-to-state mapping (`verdict`) and one fault policy (storage faults halt the sweep,
harness.sweep.halt). The one private read of Optuna, reopening a RUNNING trial of an
interrupted run, is `running_trial`, pinned by tests/test_sweep_pins.py.
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
from optuna.trial import FrozenTrial, TrialState
from ray.tune.search import Searcher

from harness import results as rs
from harness import space, warmstart
from harness.config import SweepSpec
from harness.schema import Status
from harness.sweep import checkpoints
from harness.sweep.groups import FusePlan, group_by_shape, shape_names
from harness.sweep.halt import STORAGE_FAULTS, Halt, guarded
from harness.sweep.keys import (
    ERROR,
    FINAL,
    GROUP,
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
GROW = 4  # a fused group holds at most 1/GROW of the trials ended so far (OptunaSearcher._cap)


def running_trial(study: optuna.Study, frozen: FrozenTrial) -> optuna.Trial:
    """A RUNNING trial of the study (an interrupted run's) as a Trial to report to and tell.

    Optuna's public API hands out a Trial only from `study.ask()`; one asked by an earlier
    process is reopened by its storage id, which only FrozenTrial's private `_trial_id`
    holds. The one private read of Optuna in the sweep (tests/test_sweep_pins.py)."""
    return optuna.trial.Trial(study, frozen._trial_id)


def verdict(
    entry: Mapping[str, Any], metric_names: Sequence[str]
) -> tuple[TrialState, list[float] | None, str, str]:
    """How a trial ended, as Optuna's state: (state, objective values when COMPLETE, status
    for its user attribute, reason or '').

    - no final flag: stopped from outside (a scheduler, the time budget) -> PRUNED;
    - the loop ran to its end (its own early stop included) -> COMPLETE with the kept
      weights' objective(s), or FAIL when one is not a finite number;
    - pruned inside its group (harness.sweep.rungs) -> PRUNED;
    - raised, diverged, or its worker died -> FAIL with the reason."""
    status = str(entry.get(STATUS) or (Status.COMPLETED if entry.get(FINAL) else Status.PRUNED))
    if status == Status.PRUNED:
        return TrialState.PRUNED, None, status, ""
    if status == Status.COMPLETED:
        values = [entry.get(m) for m in metric_names]
        if all(v is not None and finite(v) for v in values):
            return TrialState.COMPLETE, [float(v) for v in values], status, ""
        return TrialState.FAIL, None, status, "objective is not a finite number"
    return TrialState.FAIL, None, status, str(entry.get(ERROR) or "")[:1000]


class OptunaSearcher(Searcher):
    """Ray Tune's searcher slot, filled with Optuna's ask and tell (see the module docstring).

    Each Ray trial is a group of `size` Optuna trials (resources.fuse; 1: a plain trial,
    whose config is {params, number}). A group's first member is asked from the whole space
    (the queued baseline first); the others are asked with its shape settings fixed
    (`study.enqueue_trial` of those values, then `ask()`: the sampler chooses only the
    fusible values, and TPE's constant liar sees the members already running). A fused
    `method: grid` walks the grid itself (seeded order), enqueueing whole points whose shape
    values match. Every member has its own number, params, intermediate values (step =
    report index) and state; in a group its trial id is `<group's Ray trial id>-<member
    index>` (user attribute ray_trial_id, with group_id and data_seed, the group's batch
    order, which its params carry too so that a member reruns alone). `new` counts the
    members still to ask (None: Tune's num_samples bounds the trials); interrupted trials
    (`rerun`, Optuna numbers in groups) are handed out first, as the same Optuna trials.

    Record order: tables first, then Optuna. Tune calls a searcher's on_trial_result
    before the callbacks that write the tables, so a trial's end is told at this
    searcher's next call (`_tell_ended`), when the tables hold it; a driver killed in
    between leaves the trial RUNNING in the study and --resume reads its end from the
    tables. A storage fault halts the sweep (`guarded`); nothing more is told after it.
    """

    def __init__(
        self,
        study: optuna.Study,
        spec: SweepSpec,
        *,
        size: int = 1,
        fused: bool = False,
        new: int | None = None,
        rerun: Sequence[Sequence[int]] = (),
        restore: Mapping[int, dict] | None = None,
        rungs: Any = None,
        halt: Halt | None = None,
        db: str = "",
    ) -> None:
        many = len(spec.metrics) > 1
        super().__init__(
            metric=[m.name for m in spec.metrics] if many else spec.metric.name,
            mode=[m.mode for m in spec.metrics] if many else spec.metric.mode,
        )
        self.study = study
        self.halt, self.db = halt, db  # the study cannot be written: the run stops (halt.py)
        self._spec = spec
        self._metric_names = [m.name for m in spec.metrics]
        self._parameters = dict(spec.parameters)
        self._shape = shape_names(spec)
        self._size = size
        self._fused = fused
        self._new = new
        self._rerun = [list(g) for g in rerun]  # interrupted trials, grouped
        self._restore = dict(restore or {})  # number -> the checkpoint its rerun goes on from
        self._rungs = rungs  # harness.sweep.rungs actor: members that ended
        self._groups: dict[str, list[dict[str, Any]]] = {}  # Ray trial id -> its members
        self._members: dict[str, optuna.Trial] = {}  # member id -> its Optuna trial
        self._reported: dict[str, set[int]] = {}  # member id -> steps reported
        self._ended: dict[str, Mapping[str, Any]] = {}  # ends the tables hold, to tell
        self._told: set[str] = set()
        self._ended_before: int | None = None  # trials the study held ended, not told here
        self._grid_points: list[dict[str, Any]] | None = None
        self._grid_pass = 0  # runs of each grid point before the group being filled

    def set_search_properties(
        self, metric: str | None, mode: str | None, config: dict, **spec: Any
    ) -> bool:
        return True  # the spec made this searcher whole; Tune's param_space stays empty

    def save_to_dir(self, checkpoint_dir: str, session_str: str = "default") -> None:
        """Nothing: the study in optuna.db is this searcher's record, written as trials
        end, and --resume rebuilds the searcher from it (Tune's own restore is not used)."""

    def trial(self, name: str) -> optuna.Trial | None:
        """The Optuna trial a Ray trial id (or member id) was asked as."""
        return self._members.get(name)

    # ------------------------------------------------------------------ asking

    @guarded("db")
    def suggest(self, trial_id: str) -> dict | str | None:
        self._tell_ended()
        if trial_id not in self._groups:
            if self._rerun:
                numbers = self._rerun.pop(0)
                members = [self._resume_member(trial_id, k, n) for k, n in enumerate(numbers)]
            elif self._new is None or self._new > 0:
                n = self._size if self._new is None else min(self._size, self._new)
                members = self._ask_group(trial_id, min(n, self._cap()))
                self._new = None if self._new is None else self._new - len(members)
            else:
                return Searcher.FINISHED
            self._groups[trial_id] = members
        members = self._groups[trial_id]
        if self._fused:
            config = {MEMBERS: [dict(m) for m in members]}
            if members[0]["number"] in self._restore:  # an interrupted group, whole again
                config[RESTORE] = self._restore[members[0]["number"]]
            return config
        (m,) = members
        config = {PARAMS: dict(m["params"]), NUMBER: m["number"]}
        if m["number"] in self._restore:
            config[RESTORE] = self._restore[m["number"]]
        return config

    def _mid(self, trial_id: str, k: int) -> str:
        """A member's row id: the Ray trial's own id when unfused."""
        return member_id(trial_id, k) if self._fused else trial_id

    def _cap(self) -> int:
        """Groups grow as the search learns: a group holds at most a quarter of the trials
        that have ended (at least 1). A group shares its shape settings and is asked before
        any of its members reports, so 64 trials in groups of 8 make only 8 shape choices,
        most of them blind; replayed on the THUCNews table (docs/benchmarks.md, "Replayed
        search benchmarks") that cost auto's fused search most of its edge, and growing groups won
        it back. Random and QMC learn nothing from results, and a budget of fewer than
        GROW full groups would hardly fuse at all (at 16 trials in groups of 8 the replay
        found no loss to win back): their groups are full."""
        if self._spec.method in ("random", "qmc", "grid"):
            return self._size
        if self._spec.budget.num_samples < GROW * self._size:
            return self._size
        if self._ended_before is None:  # read once: a read per group grew with the study
            ended = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
            done = len(self.study.get_trials(deepcopy=False, states=ended))
            self._ended_before = done - len(self._told)
        return max(1, math.ceil((self._ended_before + len(self._told)) / GROW))

    def _register(
        self, trial_id: str, k: int, ot_trial: optuna.Trial, params: dict[str, Any]
    ) -> dict[str, Any]:
        mid = self._mid(trial_id, k)
        self._members[mid] = ot_trial
        ot_trial.set_user_attr("ray_trial_id", mid)
        if self._fused:
            ot_trial.set_user_attr("group_id", trial_id)
            if params.get("data_seed") is not None:
                ot_trial.set_user_attr("data_seed", params["data_seed"])
        return {"member": k, "number": ot_trial.number, "params": params}

    def _resume_member(self, trial_id: str, k: int, number: int) -> dict[str, Any]:
        """An interrupted trial runs again as the same Optuna trial (same number, params,
        batch order); the first run's intermediate values stand."""
        (frozen,) = [t for t in self.study.get_trials(deepcopy=False) if t.number == number]
        params = space.decode(self._parameters, frozen.params)
        if frozen.user_attrs.get("data_seed") is not None:
            params["data_seed"] = frozen.user_attrs["data_seed"]
        self._reported[self._mid(trial_id, k)] = set(frozen.intermediate_values)
        return self._register(trial_id, k, running_trial(self.study, frozen), params)

    def _ask_group(self, trial_id: str, n: int) -> list[dict[str, Any]]:
        grid = self._fused and self._spec.method == "grid"
        first = self._ask(self._grid_point({}, first=True) if grid else None)
        params0 = space.suggest(first, self._parameters)
        if not self._fused:
            return [self._register(trial_id, 0, first, params0)]
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

    def _waiting(self) -> list[FrozenTrial]:
        return self.study.get_trials(deepcopy=False, states=(TrialState.WAITING,))

    def _ask(self, point: dict[str, Any] | None) -> optuna.Trial:
        """study.ask(), after enqueueing `point` unless an earlier queued trial (the baseline)
        is waiting: ask() hands that out first."""
        if point is not None and not self._waiting():
            self.study.enqueue_trial(point)
        return self.study.ask()

    def _ask_like(self, fixed: dict[str, Any]) -> optuna.Trial | None:
        """A member with the group's shape values (None: no such trial can be asked now)."""
        waiting = self._waiting()
        if waiting:  # ask() hands out the first queued trial (the baseline, auto's draws)
            queued = waiting[0].system_attrs.get("fixed_params") or {}
            if all(queued.get(n) == v for n, v in fixed.items()):
                return self.study.ask()  # of this group's shape: it joins
            return None
        if self._spec.method == "grid":
            point = self._grid_point(fixed)
            if point is None:
                return None
            return self._ask(point)
        return self._ask(fixed or None)

    def _grid_point(self, fixed: Mapping[str, Any], first: bool = False) -> dict[str, Any] | None:
        """The next grid point (seeded order) with the `fixed` values: for a group's `first`
        member the least-run point, for the others only points run no more
        often than the first was (None: none left), so a grid of N points in a budget of N
        runs every point exactly once whatever the group size."""
        if self._grid_points is None:
            grid = space.grid(self._parameters)
            names = list(grid)
            self._grid_points = [dict(zip(names, c)) for c in itertools.product(*grid.values())]
            random.Random(self._spec.seed).shuffle(self._grid_points)
        runs: dict[str, int] = {}
        for t in self.study.get_trials(deepcopy=False):
            p = t.params or t.system_attrs.get("fixed_params") or {}
            k = json.dumps(p, sort_keys=True, default=str)
            runs[k] = runs.get(k, 0) + 1

        def ran(p: dict[str, Any]) -> int:
            return runs.get(json.dumps(p, sort_keys=True, default=str), 0)

        if first:
            point = min(self._grid_points, key=ran)
            self._grid_pass = ran(point)
            return point
        matching = [
            p
            for p in self._grid_points
            if ran(p) <= self._grid_pass and all(p.get(n) == v for n, v in fixed.items())
        ]
        return matching[0] if matching else None

    # ------------------------------------------------------------------ results

    @guarded("db")
    def on_trial_result(self, trial_id: str, result: dict) -> None:
        self._tell_ended()  # the callbacks have written the results before this one
        self._take(trial_id, result)

    @guarded("db")
    def on_trial_complete(
        self, trial_id: str, result: dict | None = None, error: bool = False
    ) -> None:
        self._tell_ended()
        if trial_id not in self._groups:
            return
        # Stopped from outside (scheduler, time budget): the result that triggered the stop
        # never reached on_trial_result, so it is recorded before the members left are told
        self._take(trial_id, result or {})
        self._tell_ended()  # Tune calls this after the callbacks saw the trial's last result
        for m in self._groups[trial_id]:  # members the trial never ended
            mid = self._mid(trial_id, m["member"])
            if mid not in self._told:
                self._tell(mid, {STATUS: Status.FAILED if error else Status.PRUNED})

    def _take(self, trial_id: str, result: Mapping[str, Any]) -> None:
        """A result's entries (keys.GROUP, one per member report or end; lists are not
        flattened by Tune): reports become Optuna's intermediate values, ends are told once
        the tables hold them (_tell_ended)."""
        for entry in result.get(GROUP) or ():
            mid = self._mid(trial_id, int(entry[MEMBER]))
            if mid not in self._members or mid in self._told or mid in self._ended:
                continue
            if entry.get(FINAL):
                self._ended[mid] = entry
            else:
                self._intermediate(mid, entry)

    def _intermediate(self, mid: str, report: Mapping[str, Any]) -> None:
        """One evaluation's metric at its report index (single objective only).

        The step is the 1-based `report` (as the schedulers' training_iteration), not the
        batch count: where batch_size is searched, trials at the same step have seen the
        same number of evaluations, and a small-batch trial does not look further along."""
        if len(self._metric_names) > 1:
            return
        value, step = report.get(self._metric_names[0]), report.get("report")
        if value is None or step is None or not finite(value):
            return
        done = self._reported.setdefault(mid, set())
        if int(step) not in done:
            done.add(int(step))
            self._members[mid].report(float(value), int(step))

    def _tell_ended(self) -> None:
        """Tell Optuna the ends earlier results brought (the callbacks have written them to
        the tables since)."""
        while self._ended:
            mid = next(iter(self._ended))
            self._tell(mid, self._ended[mid])
            del self._ended[mid]

    def _tell(self, mid: str, entry: Mapping[str, Any]) -> None:
        """A trial's end to Optuna (verdict), and to the members' record (rungs)."""
        ot_trial = self._members[mid]
        self._told.add(mid)
        state, values, status, reason = verdict(entry, self._metric_names)
        try:
            ot_trial.set_user_attr("status", status)
            if reason:
                ot_trial.set_user_attr("reason", reason)
            out = values if values is None or len(values) > 1 else values[0]
            self.study.tell(ot_trial, out, state=state, skip_if_finished=True)
        except STORAGE_FAULTS:
            self._told.discard(mid)  # RUNNING in the study: --resume reads the tables
            raise  # the study cannot be written: halt (see guarded)
        except optuna.exceptions.UpdateFinishedTrialError:
            pass  # told already (a --resume told it from the tables)
        except Exception as exc:  # noqa: BLE001 -- a bad tell must not end the sweep
            log.warning("optuna tell for %s failed: %s", mid, exc)
        if self._rungs is not None:  # a retried group leaves this member out
            import ray

            try:
                ray.get(self._rungs.end.remote(ot_trial.number), timeout=30)
            except Exception as exc:  # noqa: BLE001 -- at worst the member runs again
                log.warning("could not record the end of %s: %s", mid, exc)


# Earlier names of the one searcher (bench and tests import them)
HonestOptunaSearch = GroupSearch = OptunaSearcher


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
) -> OptunaSearcher:
    """The searcher of a sweep over its study (auto's choice and warm start from `plan`; the
    baseline, and auto's draws, queued first): it hands out the interrupted trials `rerun`
    first (grouped by shape when `fuse` plans groups), then asks `new` more (None: as many
    as Tune asks for), and tells `rungs` which members ended. `storage`: the study's
    (default: the folder's optuna.db; the replay passes Optuna's in-memory storage)."""
    plan = plan or plan_search(spec, folder, resume)
    storage = storage or optuna.storages.RDBStorage(
        optuna_storage_url(folder), engine_kwargs={"connect_args": {"timeout": 60}}
    )
    first: list[dict[str, Any]] = []  # on resume the baseline (and auto's draws) are in the study
    if spec.baseline and not resume:
        first = [space.encode(spec.parameters, p)
                 for p in [spec.baseline_params(), *spec.prior_points(plan.choice)]]  # fmt: skip
        if plan.restrict is not None:
            first = plan.restrict.points(first)
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
    fused = fuse is not None and fuse.fused
    if fused and spec.method == "grid":  # the searcher walks the grid and enqueues points
        sampler = optuna.samplers.RandomSampler(seed=spec.seed)
    study = optuna.create_study(
        study_name=spec.name, storage=storage, sampler=sampler,
        pruner=optuna.pruners.NopPruner(), directions=[m.goal for m in spec.metrics],
        load_if_exists=True,
    )  # fmt: skip
    for point in first:
        study.enqueue_trial(point)
    if plan.warm is not None:  # after the baseline: it keeps trial number 0
        warmstart.add(study, plan.warm)
    size = fuse.size if fused and fuse is not None else 1
    restore = dict(restore or {})
    whole = _whole_groups(restore, size if fused else 0)
    taken = {n for g in whole for n in g}
    rest = [n for n in rerun if n not in taken]
    groups = whole + rerun_groups(spec, storage, rest, size) if fused else [[n] for n in rerun]
    if fused and new is None:
        new = len(rerun)
    return OptunaSearcher(
        study, spec, size=size, fused=fused, new=new, rerun=groups, restore=restore,
        rungs=rungs, halt=halt, db=str(folder / rs.OPTUNA_FILE),
    )  # fmt: skip


def _whole_groups(restore: dict[int, dict], size: int) -> list[list[int]]:
    """The interrupted fused groups that go on from their checkpoints (numbers in member
    order), as they were; one that no longer fits a group of `size` (0: the sweep is not
    fused now) starts over, its members regrouped, and its checkpoints go."""
    groups: dict[str, list[int]] = {}
    for found in restore.values():
        if "members" in found:
            groups[found["path"]] = list(found["members"])
    for path, numbers in groups.items():
        if len(numbers) > size:
            for n in numbers:
                restore.pop(n, None)
            checkpoints.delete_beside(path)
    return [g for g in groups.values() if len(g) <= size]


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
