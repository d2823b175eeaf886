"""Files a reader never sees half-written: the one atomic-write helper of the project.

Every table, summary, cache entry, report and figure goes through `write_with`: the data
goes to a temporary file in the destination's folder, is flushed and fsynced (unless the
caller says it need not outlive a crash of the machine), gets the ordinary file mode (the
process umask, read once at import without changing it), and is renamed over the
destination. A crash or a full disk leaves the old file or the new one,
never a torn one, and the temporary file is removed on any error. The rename replaces regular
files only: a symbolic link stays and the file it points to is replaced; a fifo, a device or
a socket is never replaced (NotAFile).

`usable_file` and `usable_folder` check a path the user named for output (`--out`) before any
work is done, so an unusable one is one `error:` line, not a traceback after the work.
"""

from __future__ import annotations

import os
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path

from harness.errors import UserError


def _read_umask() -> int:
    """The process umask, read without setting it (Linux: /proc); else set and restored once,
    here, at import time (never later, from a thread, where it would race other writers)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


FILE_MODE = 0o666 & ~_read_umask()


class NotAFile(OSError):
    """The destination exists and is not a regular file (a fifo, a device, a socket, a folder):
    a rename would replace it."""


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a fifo"),
                       (stat.S_ISCHR, "a device"), (stat.S_ISBLK, "a device"),
                       (stat.S_ISSOCK, "a socket")):  # fmt: skip
        if test(mode):
            return name
    return "not a regular file"


def _destination(path: Path) -> Path:
    """Where the rename goes: a symbolic link's target (the link stays); NotAFile for what a
    rename must not replace."""
    if path.is_symlink():
        path = Path(os.path.realpath(path))
    try:
        mode = os.stat(path).st_mode
    except (FileNotFoundError, NotADirectoryError):
        return path  # a new file (or one whose folder cannot be: the write says so)
    if not stat.S_ISREG(mode):
        raise NotAFile(0, f"{_kind(mode)}, not a regular file", str(path))
    return path


def write_with(
    path: str | os.PathLike,
    write: Callable[[Path], None],
    *,
    durable: bool = True,
    scratch: Path | None = None,
) -> None:
    """Call write(tmp_path) for a temporary file beside `path`, then make it `path` atomically.

    `write` may open the path itself (pandas, pyarrow, numpy); the file is fsynced after it
    returns, so the rename never publishes data still in the page cache only. `durable=False`
    skips the fsync, for a file rewritten many times a minute whose every version need not
    outlive a crash of the machine: a reader still sees the old file or the new one, never a
    torn one, and a process that dies (the page cache outlives it) loses nothing.
    `scratch`: the folder for the temporary file (on the same file system) when `path`'s own
    folder is read whole by others, as a Parquet dataset folder is (polars reads every file
    in it, hidden ones too).
    """
    path = _destination(Path(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=scratch or path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        write(tmp)
        if durable:
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
        os.chmod(tmp, FILE_MODE)  # mkstemp makes 0600; results are ordinary, shareable files
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Atomically replace `path` with `data`."""
    write_with(path, lambda tmp: tmp.write_bytes(data))


def write_text(path: str | os.PathLike, text: str) -> None:
    """Atomically replace `path` with `text` (UTF-8)."""
    write_bytes(path, text.encode("utf-8"))


def _probe(folder: Path) -> None:
    """Create and remove a file in `folder`: OSError when nothing can be written there."""
    fd, name = tempfile.mkstemp(prefix=".probe.", dir=folder)
    os.close(fd)
    os.unlink(name)


def _nearest(path: Path) -> Path:
    """`path` or its nearest ancestor that exists."""
    for p in (path, *path.parents):
        if os.path.lexists(p):
            return p
    return Path(".")


def _folder_problem(path: Path) -> str | None:
    """Why no file can be written in folder `path` (made if missing), or None."""
    base = _nearest(path)
    if not base.is_dir():
        return "not a folder" if base == path else f"{base} is not a folder"
    try:
        _probe(base)
    except OSError as exc:
        return f"cannot write in {base} ({exc.strerror or exc})"
    return None


def usable_folder(path: str | os.PathLike, what: str = "--out") -> Path:
    """A folder the user named for output: it is one, or can be made where a file can be
    written; else one UserError line. Nothing is created."""
    path = Path(path)
    problem = _folder_problem(path)
    if problem:
        raise UserError(f"{what} {path}: {problem}")
    return path


def usable_file(path: str | os.PathLike, what: str = "--out") -> Path:
    """A file the user named for output: a new name or a regular file (or a link to one), in a
    folder where a file can be written; else one UserError line. Nothing is created."""
    path = Path(path)
    try:
        target = _destination(path)
    except NotAFile as exc:
        hint = "; give a file name such as preds.parquet" if "folder" in exc.strerror else ""
        raise UserError(f"{what} {path}: {exc.strerror}{hint}") from None
    problem = _folder_problem(target.parent)
    if problem:
        raise UserError(f"{what} {path}: {problem}")
    return path


def shown(path: str | os.PathLike) -> str:
    """A path as a person reads it on the console: relative to the working folder when it
    lies under it (results/textcnn), else as it is."""
    text = os.fspath(path)
    try:
        rel = os.path.relpath(os.path.abspath(text))
    except ValueError:  # another drive (Windows)
        return text
    return text if rel == ".." or rel.startswith("../") else rel
