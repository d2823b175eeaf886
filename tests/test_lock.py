"""harness.lock: one sweep per results folder, stale locks of dead processes, and readers
that never see the tables of two different moments."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from harness import lock, parts
from harness import results as rs
from harness.errors import UserError

ROOT = Path(__file__).resolve().parents[1]


def test_a_held_folder_is_refused_and_free_again_after_release(tmp_path: Path) -> None:
    folder = tmp_path / "results" / "smoke"
    first = lock.FolderLock.claim(folder)
    assert (folder / lock.LOCK_FILE).is_file()
    with pytest.raises(UserError, match="another sweep is using this results folder") as exc:
        lock.FolderLock.claim(folder)
    assert f"pid {os.getpid()}" in str(exc.value)  # names the holder
    first.release()
    lock.FolderLock.claim(folder).release()


@pytest.mark.subprocess
def test_a_lock_left_by_a_killed_process_is_no_lock(tmp_path: Path) -> None:
    folder = tmp_path / "smoke"
    code = (
        "import time; from harness.lock import FolderLock; "
        f"FolderLock.claim({str(folder)!r}); print('held', flush=True); time.sleep(600)"
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", code],
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(UserError, match=f"pid {holder.pid}"):
            lock.FolderLock.claim(folder)
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=30)
    assert (folder / lock.LOCK_FILE).exists()  # the file stays; the kernel dropped the lock
    lock.FolderLock.claim(folder).release()


def test_an_early_error_leaves_no_folder_behind(tmp_path: Path) -> None:
    folder = tmp_path / "a" / "b" / "smoke"
    lock.FolderLock.claim(folder).release(remove_if_empty=True)
    assert not (tmp_path / "a").exists()
    folder.mkdir(parents=True)
    (folder / "keep.txt").write_text("x")
    lock.FolderLock.claim(folder).release(remove_if_empty=True)
    assert (folder / "keep.txt").exists()  # a folder that was there, or holds files, stays


@pytest.mark.parametrize("where", ["under_a_file", "proc"])
def test_a_folder_that_cannot_be_made_is_one_error(tmp_path: Path, where: str) -> None:
    if where == "under_a_file":
        (tmp_path / "file").write_text("x")
        folder = tmp_path / "file" / "smoke"
    else:
        folder = Path("/proc/foo/smoke")
    with pytest.raises(UserError, match=r"cannot create the results folder \(.+\)") as exc:
        lock.FolderLock.claim(folder)
    assert str(exc.value).startswith(str(folder))


def test_a_read_only_folder_is_one_error(readonly_dir: Path) -> None:
    with pytest.raises(UserError, match=f"{readonly_dir}.*cannot (create|write)"):
        lock.FolderLock.claim(readonly_dir / "smoke")


def test_readers_wait_for_a_table_write_to_finish(tmp_path: Path) -> None:
    # A writer mid-way through replacing the tables holds the tables lock; load() waits for
    # it, so it sees trials and metrics of one moment.
    writer = rs.ResultsWriter(tmp_path, params=["lr"])
    writer.set_trial("a", trial_number=0, status="RUNNING", params={"lr": 0.1})
    writer.flush(force=True)
    (tmp_path / rs.SWEEP_FILE).write_text('{"spec": {}}')
    seen: dict[str, float] = {}

    def read() -> None:
        t0 = time.monotonic()
        res = rs.load(tmp_path)
        seen["waited"] = time.monotonic() - t0
        seen["status"] = res.trials["status"].iloc[0]

    with lock.tables_lock(tmp_path, shared=False) as held:
        assert held
        reader = threading.Thread(target=read)
        reader.start()
        time.sleep(0.5)
        assert reader.is_alive()  # blocked while the write is under way
        writer.set_trial("a", status="COMPLETED")  # the write itself, as flush does it
        parts.write_parts(tmp_path / rs.TRIALS_FILE, writer.trials, whole=False)
    reader.join(timeout=30)
    assert seen["waited"] >= 0.4 and seen["status"] == "COMPLETED"


def test_a_stuck_reader_never_stops_the_writer(tmp_path: Path) -> None:
    writer = rs.ResultsWriter(tmp_path)
    writer.set_trial("a", status="RUNNING")
    writer.flush(force=True)
    with (
        lock.tables_lock(tmp_path, shared=True, wait_s=0.1),
        lock.tables_lock(tmp_path, shared=False, wait_s=0.3) as held,
    ):
        assert not held  # gave up waiting, went on
