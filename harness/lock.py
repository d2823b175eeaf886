"""Who may write a results folder: OS file locks (fcntl.flock), released on any exit.

Two sweeps of one name would share optuna.db and overwrite each other's tables, so a sweep
claims results/<name>/ before anything else (`FolderLock`, exclusive, for its whole life,
held on `.lock` in the folder). The kernel drops a flock when its holder exits, however it
exits (SIGKILL included), so a lock left by a dead process is never in the way and needs no
clean-up; the file itself stays and only says who held it last.

Readers of the tables (harness.results.load, hence the report) want the three tables of one
moment, while the writer replaces them one after another: the writer holds `.tables.lock`
exclusively while it writes them, readers hold it shared while they read (`tables_lock`).
Both waits are bounded, so a stuck reader never stops a sweep. flock is local to a
machine: on NFS, two sweeps on different machines are not kept apart.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

from harness.errors import UserError
from harness.files import shown

LOCK_FILE = ".lock"
TABLES_LOCK_FILE = ".tables.lock"

log = logging.getLogger(__name__)


def _cause(exc: OSError) -> str:
    return exc.strerror or str(exc)


class FolderLock:
    """An exclusive claim on a results folder; `release()` (or the process's end) frees it."""

    def __init__(self, folder: Path, fd: int, created: list[Path]) -> None:
        self.folder = folder
        self.fd: int | None = fd
        self.created = created  # folders the claim made, innermost first (see release)

    @classmethod
    def claim(cls, folder: str | os.PathLike) -> FolderLock:
        """Create the folder if needed and lock it, or raise UserError: the folder cannot be
        made or written (naming the cause), or a live process holds it (naming that one)."""
        folder = Path(folder)
        name = shown(folder)  # as the user reads it in messages
        created = [p for p in (folder, *folder.parents) if not p.exists()]
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UserError(f"{name}: cannot create the results folder ({_cause(exc)})") from None
        if not folder.is_dir():
            raise UserError(f"{name}: not a folder")
        path = folder / LOCK_FILE
        while True:
            try:
                fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as exc:
                raise UserError(
                    f"{name}: cannot write to the results folder ({_cause(exc)})"
                ) from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                holder = _read_holder(fd)
                os.close(fd)
                if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                    raise UserError(f"{shown(path)}: cannot lock ({_cause(exc)})") from None
                raise UserError(
                    f"{name}: another sweep is using this results folder{holder}; wait for it "
                    "to end, or use --set name=<other> for a new sweep"
                ) from None
            try:  # the file we locked must still be the folder's lock file (not unlinked)
                same = os.fstat(fd).st_ino == os.stat(path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        lock = cls(folder, fd, created)
        lock._write_holder()
        _probe_writable(folder)
        return lock

    def _write_holder(self) -> None:
        """Who holds the lock, for the message a second sweep prints (best effort)."""
        text = f"pid {os.getpid()} on {socket.gethostname()} since {time.strftime('%Y-%m-%d %H:%M:%S')}\n"
        try:
            os.ftruncate(self.fd, 0)
            os.pwrite(self.fd, text.encode(), 0)
        except OSError:
            pass

    def release(self, remove_if_empty: bool = False) -> None:
        """Free the folder; with remove_if_empty, a folder this claim created and nothing
        else filled goes too (an error before anything was written leaves no trace)."""
        if self.fd is None:
            return
        if remove_if_empty and self.created:
            with contextlib.suppress(OSError):
                if [p.name for p in self.folder.iterdir()] == [LOCK_FILE]:
                    (self.folder / LOCK_FILE).unlink()
                    for made in self.created:  # rmdir fails, and stops, at a non-empty one
                        made.rmdir()
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)
        self.fd = None


def live_holder(folder: str | os.PathLike) -> str | None:
    """Who holds `folder`'s sweep lock now (`pid 12 on host since ...`, or `a live process`),
    or None when no sweep runs there. An instant's shared probe, never a wait."""
    try:
        fd = os.open(Path(folder) / LOCK_FILE, os.O_RDONLY)
    except OSError:
        return None  # no lock file: no sweep ever ran there (or it cannot be read)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
            return None
        return _read_holder(fd).strip(" ()") or "a live process"
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def _read_holder(fd: int) -> str:
    try:
        text = os.pread(fd, 200, 0).decode(errors="replace").strip()
    except OSError:
        return ""
    return f" ({text})" if text else ""


def _probe_writable(folder: Path) -> None:
    """A folder we may lock but not write (read-only mount, permissions) fails here, before
    anything runs, rather than at the first table write."""
    probe = folder / f".probe.{os.getpid()}"
    try:
        with open(probe, "wb") as f:
            f.write(b"x")
        probe.unlink()
    except OSError as exc:
        with contextlib.suppress(OSError):
            probe.unlink()
        raise UserError(
            f"{shown(folder)}: cannot write to the results folder ({_cause(exc)})"
        ) from None


@contextlib.contextmanager
def tables_lock(folder: str | os.PathLike, shared: bool, wait_s: float = 10.0) -> Iterator[bool]:
    """Hold the folder's tables lock (shared: reading, exclusive: writing) for the block;
    yields whether it is held. After wait_s, or where there is no lock file (no writer
    yet, a read-only copy of a results folder), the block runs without it."""
    path = Path(folder) / TABLES_LOCK_FILE
    try:  # a reader needs no write access: flock works on a read-only descriptor
        fd = os.open(path, os.O_RDONLY) if shared else os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError:  # no writer has made it yet, or a read-only copy
        fd = None
    held = False
    try:
        mode = (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB
        deadline = time.monotonic() + wait_s
        while fd is not None:
            try:
                fcntl.flock(fd, mode)
                held = True
                break
            except OSError:
                if time.monotonic() >= deadline:
                    log.warning("%s: still locked after %.0f s; going on without it", path, wait_s)
                    break
                time.sleep(0.02)
        yield held
    finally:
        if fd is not None:
            if held:
                fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)
