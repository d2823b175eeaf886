"""harness.sweep.halt: a record that cannot be written stops the sweep, with one line.

The whole path (a tmpfs filling mid-sweep, then --resume) is in tests/test_faults.py; here
the pieces, without Ray: the line, the stop, and hooks that go quiet after a fault.
"""

from __future__ import annotations

import errno
import sqlite3
from pathlib import Path

import optuna
import pytest
import sqlalchemy.exc
from helpers import final, searcher, study

from harness import results as rs
from harness.sweep.halt import Halt, caused_by_storage, describe, guarded, interrupted


def test_the_line_names_the_path_and_the_cause() -> None:
    full = OSError(errno.ENOSPC, "No space left on device", "/r/smoke/trials.parquet")
    assert (
        describe("/r/smoke", full)
        == "/r/smoke/trials.parquet: cannot write (No space left on device)"
    )
    db = sqlalchemy.exc.OperationalError(
        "INSERT ...", {}, sqlite3.OperationalError("database or disk is full")
    )
    try:
        try:
            raise db
        except sqlalchemy.exc.OperationalError as exc:
            raise optuna.exceptions.StorageInternalError(
                "An exception is raised during the commit"
            ) from exc
    except optuna.exceptions.StorageInternalError as exc:
        assert describe("/r/smoke/optuna.db", exc) == (
            "/r/smoke/optuna.db: cannot write (database or disk is full)"
        )


def test_an_os_error_names_its_own_cause_not_one_it_met_on_the_way() -> None:
    # a table write that fails while a full SQLite study's error is being handled: the
    # line names the table's cause, not SQLite's
    db = sqlalchemy.exc.OperationalError(
        "INSERT ...", {}, sqlite3.OperationalError("database or disk is full")
    )
    try:
        try:
            raise db
        except sqlalchemy.exc.OperationalError:
            raise OSError(errno.ENOSPC, "No space left on device", "/r/smoke/metrics.parquet")
    except OSError as exc:
        assert describe("/r/smoke", exc) == (
            "/r/smoke/metrics.parquet: cannot write (No space left on device)"
        )


def test_the_stop_line_says_which_kept_weights_were_lost(tmp_path: Path) -> None:
    # two members completed, then the disk filled before their final checkpoint: no model
    # reached models/, and the line says so (those trials are not trained again)
    from helpers import SMOKE

    from harness.config import load_spec
    from harness.sweep.runner import _stopped

    writer = rs.ResultsWriter(tmp_path, params=[])
    for i, (tid, m) in enumerate([("g-0", 0.9), ("g-1", 0.8), ("h-0", None)]):
        status = "COMPLETED" if m is not None else "RUNNING"
        writer.set_trial(tid, trial_number=i, status=status, metric=m)
    writer.flush(force=True)
    spec = load_spec(SMOKE, ["keep_best=1"])
    line = _stopped(spec, tmp_path, "x: cannot write (No space left on device)", 0.0).fault
    assert "not kept: the model of 1 completed trial(s) among the top 1, g-0" in line
    assert "--resume" in line
    spec = load_spec(SMOKE, ["keep_best=0"])
    assert "not kept" not in _stopped(spec, tmp_path, "x", 0.0).fault


def test_a_table_that_cannot_be_written_names_itself(readonly_dir: Path) -> None:
    writer = rs.ResultsWriter(readonly_dir)
    writer.set_trial("a", status="RUNNING")
    with pytest.raises(OSError) as exc:
        writer.flush(force=True)
    assert exc.value.filename == str(readonly_dir / rs.TRIALS_FILE)
    assert describe(str(readonly_dir), exc.value).startswith(
        f"{readonly_dir / rs.TRIALS_FILE}: cannot write ("
    )


class _Hooks:
    where = "/r/smoke"

    def __init__(self, halt: Halt | None) -> None:
        self.halt, self.calls = halt, 0

    @guarded("where")
    def on_result(self, fail: bool) -> str:
        self.calls += 1
        if fail:
            raise OSError(errno.ENOSPC, "No space left on device")
        return "ok"


def test_the_first_fault_stops_the_run_and_quiets_every_hook() -> None:
    halt = Halt()
    hooks = _Hooks(halt)
    assert hooks.on_result(False) == "ok" and not halt.stop_all()
    assert hooks.on_result(True) is None  # not raised into Tune
    assert halt.stop_all() and halt.fault == "/r/smoke: cannot write (No space left on device)"
    assert hooks.on_result(False) is None and hooks.calls == 2  # nothing more is written
    assert not halt("trial", {})  # no single trial is stopped for itself
    with pytest.raises(OSError):  # no halt to tell: the error is the caller's
        _Hooks(None).on_result(True)


def test_after_a_fault_optuna_hears_no_more(tmp_path: Path) -> None:
    # trials still running when the run stops stay RUNNING in the study: --resume reruns them
    s = searcher(tmp_path)
    s.halt = Halt()
    s.suggest("t")
    s.halt.record("/r/smoke/trials.parquet", OSError(errno.ENOSPC, "No space left on device"))
    s.on_trial_complete("t", final(value=0.9))
    (t,) = study(tmp_path, "smoke").trials
    assert t.state == optuna.trial.TrialState.RUNNING
    assert s.suggest("u") is None  # and no new trial is asked for
    assert len(study(tmp_path, "smoke").trials) == 1


def test_a_ctrl_c_inside_a_file_error_is_an_interrupt_not_a_fault() -> None:
    # a second Ctrl-C can land while a file error is being handled (or raise one as it
    # unwinds): the sweep must end as interrupted (exit 130, --resume), not as a full disk
    def chained(first: BaseException, then: BaseException) -> BaseException:
        try:
            try:
                raise first
            except BaseException:  # noqa: BLE001 -- building a chain
                raise then
        except BaseException as exc:  # noqa: BLE001
            return exc

    disk = OSError(errno.ENOSPC, "No space left on device")
    assert caused_by_storage(chained(ValueError("x"), RuntimeError("wrapped"))) is False
    assert caused_by_storage(chained(disk, RuntimeError("wrapped"))) is True
    during_ctrl_c = chained(KeyboardInterrupt(), OSError(errno.EIO, "I/O error"))
    assert interrupted(during_ctrl_c) and not caused_by_storage(during_ctrl_c)

    class Hook:
        halt = Halt()
        folder = "results/x"

        @guarded("folder")
        def on_trial_result(self) -> None:
            raise during_ctrl_c

    hook = Hook()
    with pytest.raises(KeyboardInterrupt):
        hook.on_trial_result()
    assert hook.halt.fault is None
