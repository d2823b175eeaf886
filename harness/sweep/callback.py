"""The driver side of every trial: each report and each trial's end go to the results tables
(harness.results), the trackers (TensorBoard, MLflow: harness.tracker) and the console as they
happen, so the tables are current at any moment and the console never goes quiet."""

from __future__ import annotations

import datetime as dt
import json
import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ray import tune
from ray.tune.experiment import Trial

from harness import results as rs
from harness.config import SweepSpec
from harness.schema import LAYERS, METRIC_KEYS, Status
from harness.sweep import checkpoints, keys
from harness.sweep.console import Console
from harness.sweep.halt import Halt, guarded
from harness.sweep.keys import ERROR, FINAL, GROUP, INFO, MEMBER, RESTORE, STATUS, SUMMARY
from harness.sweep.shelf import ModelShelf
from harness.tracker import Trackers

log = logging.getLogger(__name__)


class SweepCallback(tune.Callback):
    """Driver side: every report and trial end goes to the results tables and the console."""

    def __init__(
        self,
        spec: SweepSpec,
        writer: rs.ResultsWriter,
        console: Console | None,
        started: float | None = None,
        trackers: Trackers | None = None,
        replaced: dict[int, str] | None = None,
        halt: Halt | None = None,
    ) -> None:
        self.spec = spec
        self.halt = halt  # a table that cannot be written stops the run (harness.sweep.halt)
        self.replaced = dict(replaced or {})  # resume: Optuna number -> old trial id (rows)
        self._waiting: tuple[float, float] | None = None  # (since, last line) with none running
        self._looked = 0.0  # when on_step_end last counted the waiting trials
        self.writer = writer
        self.console = console
        self.trackers = trackers or Trackers()
        self.metric = spec.metric.name
        self._best_it: dict[str, int] = {}
        self._done: set[str] = set()
        self.started = time.time() if started is None else started  # the command's start
        self.shelf = ModelShelf(writer.folder, spec.keep_best, spec.metric.goal)
        self.shelf.prune(self.shelf.top(writer.rows()))  # keep_best may have shrunk (--resume)
        # PBT clones a trial's checkpoints into others, also after it ended: delete at the end
        self._ended: list[Any] = []
        self._delete_at_end = spec.early_terminate.type == "pbt"
        # trial id -> its newest checkpoint whose report may not be on disk yet
        self._unwritten: dict[str, Any] = {}

    @property
    def folder(self) -> Path:
        return self.writer.folder

    # rows: a Ray trial trains a group of trials (one when unfused), each a row -------------
    def _members(self, trial: Any) -> list[tuple[str, dict[str, Any]]]:
        """(row id, {member, number, params}) of each trial the Ray trial trains."""
        return [
            (keys.row_id(trial.trial_id, trial.config, m["member"]), m)
            for m in keys.members(trial.config)
        ]

    def _start_rows(self, trial: Any) -> None:
        members = self._members(trial)
        restore = trial.config.get(RESTORE)
        if restore and not self.writer.trial_row(members[0][0]):  # --resume from a checkpoint
            for row, m in members:  # each member's rows go on under its new id
                old = keys.row_id(restore["trial_id"], trial.config, m["member"])
                self.writer.rename_trial(old, row, restore["iteration"])
                self.writer.set_trial(row, group_id=trial.trial_id)
                self.trackers.rename(old, row)
                self.replaced.pop(m["number"], None)
            log.info("trial %s goes on from trial %s's checkpoint at iteration %s",
                     trial.trial_id, restore["trial_id"], restore["iteration"])  # fmt: skip
        for row, m in members:
            old = self.replaced.pop(m["number"], None)
            if old is not None and old != row:  # an interrupted trial runs again now
                self.writer.drop_trial(old)
                self.trackers.drop(old)
            if self.writer.trial_row(row).get("status") is None:
                self.writer.set_trial(
                    row,
                    trial_number=m["number"],
                    status=Status.RUNNING,
                    params=m["params"],
                    group_id=trial.trial_id,
                    group_member=m["member"],
                    group_size=len(members),
                )

    @guarded("folder")
    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        log.info(
            "timeline: trial %s started by Tune at %.2f s",
            trial.trial_id,
            time.time() - self.started,
        )
        self._start_rows(trial)
        self.writer.flush()
        for tid, m in self._members(trial):
            name = rs.trial_name({"trial_id": tid, "trial_number": m["number"]})
            fresh = not self.writer.metrics.rows.get(tid)  # else: from a checkpoint
            self.trackers.start(tid, name, m["params"], fresh=fresh)
            if self.console is not None:
                self.console.trial_started(tid, m["number"])

    @guarded("folder")
    def on_trial_result(
        self, iteration: int, trials: list, trial: Any, result: dict, **info: Any
    ) -> None:
        """One evaluation of the Ray trial: each member's report, and each member that ended
        there. A member's end is on disk before Optuna hears of it (Tune shows the searcher a
        result before the callbacks; the searcher tells an end at its next call): a driver
        killed between the two resumes from the tables."""
        self._start_rows(trial)
        members = {m["member"]: (row, m) for row, m in self._members(trial)}
        if result.get(INFO):
            fresh = [row for row, _ in members.values() if row not in self._done]
            for i, row in enumerate(fresh):
                self._where(row, result[INFO], timeline=i == 0)
        ended = False
        for entry in result.get(GROUP) or ():
            row, m = members[int(entry[MEMBER])]
            if row in self._done:
                continue  # a retried group repeats nothing of an ended member
            if entry.get(FINAL):
                ended = True
                self._final(row, entry)
                self._close(row, self.writer.trial_row(row).get("status"), params=m["params"])
            elif "iteration" in entry:
                self._evaluation(row, m["number"], entry)
        self.writer.flush(force=ended)
        self._tidy_checkpoints()

    def _where(self, tid: str, extra: Mapping[str, Any], timeline: bool = True) -> None:
        """The trial's first result: where it runs, since when (and the timeline in ray.log)."""
        t0 = self.started
        (log.info if timeline else log.debug)(
            "timeline: trial %s worker process started at %s s, entered at %.2f s, "
            "loop imported at %.2f s, first result on the driver at %.2f s",
            tid,
            "?" if extra.get("process_started") is None else f"{extra['process_started'] - t0:.2f}",
            extra.get("entered", 0) - t0,
            extra.get("start_time", 0) - t0,
            time.time() - t0,
        )
        start = extra.get("start_time")
        self.writer.set_trial(
            tid,
            node_id=extra.get("node_id"),
            node_ip=extra.get("node_ip"),
            device=extra.get("device"),
            start_time=None if start is None else dt.datetime.fromtimestamp(start, dt.timezone.utc),
            error=extra.get("note") or None,
        )

    def _evaluation(self, tid: str, number: int | None, result: Mapping[str, Any]) -> None:
        """One evaluation of a trial: its rows, its TensorBoard/MLflow points, the console."""
        self._report(tid, result)
        self.trackers.report(tid, result)
        if self.console is not None:
            self.console.trial_report(tid, number, result)

    def _report(self, tid: str, result: Mapping[str, Any]) -> None:
        """One evaluation: a metrics row (and its layers), and the trial's row so far."""
        self.writer.add_report(tid, {k: result.get(k) for k in (*METRIC_KEYS, LAYERS)})
        if result.get("improved"):
            self._best_it[tid] = int(result["iteration"])
        self.writer.set_trial(
            tid,
            metric=result.get(self.metric),
            best_dev_loss=result.get("best_dev_loss"),
            best_dev_acc=result.get("best_dev_acc"),
            best_iteration=self._best_it.get(tid),
            iterations=result.get("iteration"),
            epochs=result.get("epoch"),
            samples=result.get("samples"),
            train_s=result.get("elapsed_s"),
        )

    def _final(self, tid: str, result: Mapping[str, Any]) -> None:
        if result.get("traceback"):
            log.warning("trial %s failed:\n%s", tid, result["traceback"])
        s = result.get(SUMMARY) or {}
        status = result.get(STATUS, Status.COMPLETED)
        fields: dict[str, Any] = {"status": status, "error": result.get(ERROR) or None}
        if s:
            fields.update(
                best_dev_loss=s.get("best_dev_loss"),
                best_dev_acc=s.get("best_dev_acc"),
                best_iteration=s.get("best_iteration"),
                iterations=s.get("iterations"),
                epochs=s.get("epochs"),
                samples=s.get("samples"),
                train_s=s.get("elapsed_seconds"),
                device=s.get("device"),
                fused=s.get("fused"),
            )
            if status == Status.COMPLETED:
                fields.update(
                    test_acc=s.get("test_acc"),
                    test_loss=s.get("test_loss"),
                    test_f1_macro=s.get("test_f1_macro"),
                    metric=result.get(self.metric),
                    confusion=json.dumps(s["confusion"]) if s.get("confusion") else None,
                )
        if status not in (Status.COMPLETED, Status.PRUNED):  # a pruned member keeps its last value
            fields["metric"] = None
        self.writer.set_trial(tid, **fields)

    def _end(self, trial: Any, status: str | None = None, error: str | None = None) -> None:
        """The Ray trial ended: members it never ended were stopped from outside (PRUNED: a
        scheduler, the time budget) or went down with it (FAILED: its worker died)."""
        closed = False
        for row, m in self._members(trial):
            if row not in self._done:
                self._close(row, status or Status.PRUNED, error=error, params=m["params"])
                closed = True
        if closed:  # the ends now, not each trial's reports: those when their turn has come
            self.writer.flush(force=True, only=("trials",))
            self.writer.flush()

    def _close(
        self,
        tid: str,
        status: str | None,
        error: str | None = None,
        params: Mapping[str, Any] | None = None,
    ) -> None:
        """A trial's end: its row final and its console line (the caller writes the tables,
        once for all the members that ended)."""
        if tid in self._done:
            return
        self._done.add(tid)
        row = self.writer.trial_row(tid)
        status = status or Status.COMPLETED
        fields: dict[str, Any] = {"status": status, "end_time": dt.datetime.now(dt.timezone.utc)}
        if error:
            fields["error"] = error
            fields["metric"] = None
        if status == Status.PRUNED and not row.get("error"):
            fields["error"] = None
        self.writer.set_trial(tid, params=dict(params or {}), **fields)
        self.trackers.end(tid, status)
        if self.console is not None:
            self.console.trial_line(self.writer.trial_row(tid))
            if self.console.finished % self.console.table_every == 0:  # rows only when it prints
                self.console.maybe_table(self.writer.rows(copy=False))  # read only

    @guarded("folder")
    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._end(trial)
        self._drop_checkpoints(trial)

    def on_checkpoint(
        self, iteration: int, trials: list, trial: Any, checkpoint: Any, **info: Any
    ) -> None:
        """A trial's checkpoint: its older ones go when the tables allow (_tidy_checkpoints).
        A final one brings the trial's tested weights: onto the shelf if it ranks in the top
        keep_best (the trial's final result, with its objective, came first)."""
        self._unwritten[trial.trial_id] = checkpoint
        self._tidy_checkpoints()
        with checkpoints.final_models(checkpoint) as models:
            for row_id, folder in models.items():
                self.shelf.offer(row_id, folder, self.writer.rows(copy=False))

    def _tidy_checkpoints(self) -> None:
        """A trial's older checkpoints go once the tables on disk hold its newest one's
        report: --resume goes on only from a checkpoint whose report it finds there, and the
        tables are written at most a share of the time (a driver killed between a checkpoint
        and the next write still finds the one before it)."""
        if not self._unwritten or not self.writer.reports_written():
            return
        keep = checkpoints.kept_per_trial(self.spec)
        for checkpoint in self._unwritten.values():
            checkpoints.keep_newest(checkpoint, keep)
        self._unwritten.clear()

    def _drop_checkpoints(self, trial: Any) -> None:
        """An ended trial's checkpoints go (with PBT at the end of the sweep)."""
        self._unwritten.pop(trial.trial_id, None)
        if self._delete_at_end:
            self._ended.append(trial)
            return
        checkpoints.delete_trial(trial)
        restore = trial.config.get(RESTORE)
        if restore:  # the interrupted run's, under its old trial id
            checkpoints.delete_beside(restore["path"])

    @guarded("folder")
    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._end(trial, status=Status.FAILED, error=_ray_error_text(trial))
        self._drop_checkpoints(trial)

    def on_trial_recover(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        """A trial whose worker died (its node lost, max_failures) runs again: say so, and
        from where, when it happens (its row's error column says so when it ends)."""
        if self.console is None:
            return
        row = self.writer.trial_row(trial.trial_id)
        where = f" on {row['node_ip']}" if row.get("node_ip") else ""
        start = "its last checkpoint" if trial.checkpoint is not None else "the start"
        why = _ray_error_text(trial)
        why = why if len(why) <= 100 else why[:99].rsplit(" ", 1)[0] + " ..."
        self.console.print(
            f"  trial {rs.trial_name(row or {'trial_id': trial.trial_id})}: its worker{where} "
            f"was lost ({why}); retried from {start} "
            f"(failure {trial.num_failures} of max_failures {self.spec.max_failures})"
        )

    def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
        """The console's live block or progress line; and while trials wait for resources with
        none running (a cluster no node of which can hold a trial), a short line every
        console.wait_every seconds, so a quiet console is never a mystery."""
        if self.console is None:
            return
        self.console.tick()  # the live block, or a plain progress line now and then
        now = time.monotonic()
        if now - self._looked < min(1.0, self.console.wait_every / 2):  # Tune steps often, and
            return  # `trials` holds every trial so far: a count per step grew with the sweep
        self._looked = now
        pending = sum(t.status == Trial.PENDING for t in trials)
        if not pending or any(t.status == Trial.RUNNING for t in trials):
            self._waiting = None
            return
        since, said = self._waiting or (now, now)
        if now - said >= self.console.wait_every:
            self.console.waiting(pending, now - since)
            said = now
        self._waiting = (since, said)

    @guarded("folder")
    def on_experiment_end(self, trials: list, **info: Any) -> None:
        self.writer.flush(force=True)
        self.trackers.close()
        self._delete_at_end = False
        for trial in self._ended:
            self._drop_checkpoints(trial)


def _ray_error_text(trial: Any) -> str:
    """The last line of the error Ray recorded (e.g. 'RayActorError: ...'), not the whole trace."""
    path = getattr(trial, "error_file", None)
    text = ""
    if path and Path(path).exists():
        text = Path(path).read_text(errors="replace")
    lines = [
        ln.strip() for ln in text.splitlines() if ln.strip() and not ln.startswith("Failure #")
    ]
    return (lines[-1] if lines else "trial failed (no error text from Ray)")[:2000]
