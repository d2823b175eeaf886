"""`bench searchers --replay TABLE`: a sweep replayed against recorded learning curves.

What runs is the sweep's own search and stopping code: the searcher harness.sweep.search
builds (OptunaSearcher, a trial or a fused group per Ray trial, with the real Optuna sampler
of the method, auto's choice and its draws around the baseline), restricted to the table's
configurations (harness.bench.blackbox.Restriction), and the scheduler build_scheduler makes
(Ray's AsyncHyperBandScheduler as BaselineASHA, FIFO for none) or, for fused groups, the
members' record harness.sweep.rungs.Rungs. Only Ray's trial runner is replaced, by a
simulator in the manner of Syne Tune's simulator backend: `max_concurrent` simulated
workers; a trial's reports arrive at its start time plus the seconds the table recorded for
them, its end (the held last report with the final result, as harness.sweep.trial sends it)
at its start plus its recorded total; events are processed in time order, and each is
handed to the scheduler and the searcher in the order Ray's TuneController uses (scheduler
first; the searcher sees a result only if the scheduler did not stop the trial; a stopped
or finished trial then completes with its last result). A worker that frees asks the
searcher for the next trial at once. Optuna's study lives in memory.

A fused group (fuse N) is one worker: its members report together, each report at the
slowest live member's recorded step (members train in lock step); the Rungs record decides
per member, in event order, as the actor does in a real fused sweep, and a member is never
stopped at the group's last report (harness.sweep.trial.TrialSide).
"""

from __future__ import annotations

import heapq
import itertools
import logging
import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from harness.bench.blackbox import Blackbox
from harness.bench.searchers.restriction import Restriction
from harness.config import SweepSpec, as_spec
from harness.schema import Status

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReplayKey:
    """One replayed run: a search setup, a group size, a budget and a seed."""

    method: str
    early_terminate: str
    fuse: int
    budget: int
    seed: int

    @property
    def combo(self) -> str:
        return f"{self.method}+{self.early_terminate}+f{self.fuse}"

    @property
    def name(self) -> str:
        return f"{self.combo}-n{self.budget}-s{self.seed}"


@dataclass
class _Trial:
    """What Ray's schedulers read of a trial (its id and config)."""

    trial_id: str
    config: dict[str, Any]


@dataclass
class _Member:
    number: int
    row: int
    member: int
    ended: bool = False


@dataclass
class _Worker:
    """One running Ray trial (a group of one or more members)."""

    trial: _Trial
    start: float
    members: list[_Member]
    report: int = 0
    clock: float = 0.0  # seconds since start at the last report
    last: dict[int, float] = field(default_factory=dict)  # member -> recorded seconds so far


def replay_spec(table: Blackbox, key: ReplayKey, max_concurrent: int | None = None) -> SweepSpec:
    """The table's spec as one replayed run's: method, seed, scheduler, budget, group size."""
    et = table.spec.early_terminate
    et_dict = et.to_dict() if et.type == key.early_terminate else {"type": key.early_terminate}
    sets = [
        f"method={key.method}",
        f"seed={key.seed}",
        f"early_terminate={_json(et_dict)}",
        f"budget.num_samples={key.budget}",
        f"resources.fuse={key.fuse}",
    ]
    if max_concurrent is not None:
        sets.append(f"budget.max_concurrent={max_concurrent}")
    return as_spec(table.spec, sets)


def _json(obj: Any) -> str:
    import json

    return json.dumps(obj)


def _quiet() -> None:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    warnings.filterwarnings("ignore", message="Define-by-run function passed")  # GP: slow asks
    logging.getLogger("ray").setLevel(logging.ERROR)


class Replay:
    """One replayed sweep; `run()` returns its trials in the order they ended."""

    def __init__(
        self,
        table: Blackbox,
        spec: SweepSpec,
        restriction: Restriction | None = None,
        on_event: Callable[[str, dict[str, Any]], None] | None = None,
    ) -> None:
        from optuna.storages import InMemoryStorage

        from harness.sweep.groups import FusePlan
        from harness.sweep.schedulers import build_scheduler
        from harness.sweep.search import SearchPlan, build_searcher

        _quiet()
        self.table, self.spec = table, spec
        self.metric = spec.metric.name
        self.max_t = table.max_t
        self.full = int(np.isfinite(table.values).sum(axis=1).max())  # a whole trial's reports
        size = int(spec.resources.fuse) if spec.resources.fuse != "auto" else 1
        self.fused = size > 1
        plan = SearchPlan(spec.choice(), None, restriction or Restriction(table))
        self.searcher = build_searcher(
            spec, Path("replay"), fuse=FusePlan(size, size), new=spec.budget.num_samples,
            plan=plan, storage=InMemoryStorage(),
        )  # fmt: skip
        self.scheduler = build_scheduler(spec, self.max_t, fused=self.fused)
        self.rungs = None
        if self.fused and spec.early_terminate.type != "none":
            from harness.sweep.rungs import rungs_for

            self.rungs = rungs_for(spec, self.max_t, None)
        self.on_event = on_event or (lambda kind, info: None)
        self.rows: list[dict[str, Any]] = []
        self._seq = itertools.count()

    # ------------------------------------------------------------------ the event loop

    def run(self) -> pd.DataFrame:
        from ray.tune.search import Searcher

        heap: list[tuple[float, int, str]] = []
        workers: dict[str, _Worker] = {}
        asked = 0
        now = 0.0
        finished = False
        while True:
            while not finished and len(workers) < self.spec.budget.max_concurrent:
                if not self.fused and asked >= self.spec.budget.num_samples:
                    finished = True
                    break
                tid = f"r{asked:05d}"
                config = self.searcher.suggest(tid)
                if config is None or config == Searcher.FINISHED:
                    finished = True
                    break
                asked += 1
                w = self._start(tid, config, now)
                workers[tid] = w
                heapq.heappush(heap, (now + self._next_step(w), next(self._seq), tid))
            if not heap:
                break
            now, _, tid = heapq.heappop(heap)
            w = workers[tid]
            done = self._group_report(w, now) if self.fused else self._report(w, now)
            if done:
                del workers[tid]
            else:
                heapq.heappush(heap, (now + self._next_step(w), next(self._seq), tid))
        return pd.DataFrame(self.rows)

    def _start(self, tid: str, config: dict[str, Any], now: float) -> _Worker:
        from harness.sweep.keys import MEMBERS, NUMBER, PARAMS

        if MEMBERS in config:
            members = [
                _Member(m["number"], self.table.lookup(m["params"]), m["member"])
                for m in config[MEMBERS]
            ]
        else:
            members = [_Member(config[NUMBER], self.table.lookup(config[PARAMS]), 0)]
        trial = _Trial(tid, config)
        if not self.fused:
            self.scheduler.on_trial_add(None, trial)
        self.on_event("start", {"trial": tid, "numbers": [m.number for m in members],
                                "rows": [m.row for m in members], "time": now})  # fmt: skip
        return _Worker(trial, now, members)

    def _next_step(self, w: _Worker) -> float:
        """Seconds from the worker's last report to its next event (report or end): the
        slowest live member's recorded step."""
        r = w.report  # reports made so far
        steps = []
        for m in w.members:
            if m.ended:
                continue
            n = self.table.reports(m.row)
            t = self.table.seconds[m.row, r] if r < n else self.table.total_s[m.row]
            if r + 1 == n:  # the last report arrives with the final result
                t = self.table.total_s[m.row]
            steps.append(max(0.0, float(t) - w.last.get(m.member, 0.0)))
        return max(steps) if steps else 0.0

    def _advance(self, w: _Worker, now: float) -> None:
        w.report += 1
        w.clock = now - w.start
        for m in w.members:
            if not m.ended:
                n = self.table.reports(m.row)
                last = w.report >= n
                t = self.table.total_s[m.row] if last else self.table.seconds[m.row, w.report - 1]
                w.last[m.member] = float(t)

    # ------------------------------------------------------------------ one trial

    def _report(self, w: _Worker, now: float) -> bool:
        """The next event of an unfused trial; True when it ended."""
        from ray.tune.schedulers import TrialScheduler

        from harness.sweep.keys import FINAL, GROUP, MEMBER, STATUS

        self._advance(w, now)
        m = w.members[0]
        r = w.report
        n = self.table.reports(m.row)
        value = float(self.table.values[m.row, r - 1])
        report = {self.metric: value, "report": r}
        entry = {MEMBER: 0, **report}
        if r < n:
            result = {**report, "training_iteration": r, GROUP: [entry]}
            if self.scheduler.on_trial_result(None, w.trial, result) == TrialScheduler.STOP:
                self.scheduler.on_trial_complete(None, w.trial, result)
                self.searcher.on_trial_complete(w.trial.trial_id, result)
                self._ended(w, m, Status.PRUNED, math.nan, now)
                return True
            self.searcher.on_trial_result(w.trial.trial_id, result)
            return False
        status = str(self.table.status[m.row])
        end: dict[str, Any] = {MEMBER: 0, FINAL: True, STATUS: status}
        final: dict[str, Any] = {FINAL: True, GROUP: [entry, end], "training_iteration": r}
        if status == Status.COMPLETED:
            final[self.metric] = end[self.metric] = float(self.table.final[m.row])
        if self.scheduler.on_trial_result(None, w.trial, final) != TrialScheduler.STOP:
            self.searcher.on_trial_result(w.trial.trial_id, final)
        self.scheduler.on_trial_complete(None, w.trial, final)
        self.searcher.on_trial_complete(w.trial.trial_id, final)
        self._ended(w, m, status, final.get(self.metric, math.nan), now)
        return True

    def _group_report(self, w: _Worker, now: float) -> bool:
        """The next evaluation of a fused group: every live member reports, the record
        decides who stops; True when no member is left."""
        from harness.sweep.keys import FINAL, GROUP, MEMBER, STATUS

        self._advance(w, now)
        r = w.report
        entries: list[dict[str, Any]] = []
        ends: list[tuple[_Member, str]] = []
        for m in w.members:
            if m.ended:
                continue
            n = self.table.reports(m.row)
            value = float(self.table.values[m.row, r - 1])
            entries.append({MEMBER: m.member, self.metric: value, "report": r})
            stop = self.rungs is not None and self.rungs.decide(m.number, r, value)
            if stop and r < self.full and r < n:  # never at the group's (or its own) end
                ends.append((m, Status.PRUNED))
                continue
            if r >= n:
                ends.append((m, str(self.table.status[m.row])))
        for m, status in ends:
            entry: dict[str, Any] = {MEMBER: m.member, FINAL: True, STATUS: status}
            value = math.nan
            if status == Status.COMPLETED:
                value = float(self.table.final[m.row])
                entry[self.metric] = value
            entries.append(entry)
            m.ended = True
            self._ended(w, m, status, value, now)
        left = any(not m.ended for m in w.members)
        if left:
            self.searcher.on_trial_result(w.trial.trial_id, {GROUP: entries})
        else:
            self.searcher.on_trial_complete(w.trial.trial_id, {GROUP: entries, FINAL: True})
        return not left

    def _ended(self, w: _Worker, m: _Member, status: str, value: float, now: float) -> None:
        row = {
            "trial_id": w.trial.trial_id if not self.fused else f"{w.trial.trial_id}-{m.member}",
            "number": m.number, "row": m.row, "status": status, "value": value,
            "reports": w.report, "start_s": w.start, "end_s": now,
            "group": w.trial.trial_id, "group_size": len(w.members),
        }  # fmt: skip
        self.rows.append(row)
        self.on_event("end", row)


def replay(
    table: Blackbox,
    key: ReplayKey,
    max_concurrent: int | None = None,
    restriction: Restriction | None = None,
) -> pd.DataFrame:
    """One replayed run's trials in the order they ended (number, table row, status, value,
    simulated start and end seconds)."""
    spec = replay_spec(table, key, max_concurrent)
    out = Replay(table, spec, restriction).run()
    out.insert(0, "seed", key.seed)
    out.insert(0, "budget", key.budget)
    out.insert(0, "fuse", key.fuse)
    out.insert(0, "early_terminate", key.early_terminate)
    out.insert(0, "method", key.method)
    out.insert(0, "combo", key.combo)
    return out
