"""Files a reader never sees half-written: the one atomic-write helper of the project.

Every table, summary, cache entry, report and figure goes through `write_with`: the data
goes to a temporary file in the destination's folder, is flushed and fsynced, gets the
ordinary file mode (the process umask, read once at import without changing it), and is
renamed over the destination. A crash or a full disk leaves the old file or the new one,
never a torn one, and the temporary file is removed on any error.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path


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


def write_with(path: str | os.PathLike, write: Callable[[Path], None]) -> None:
    """Call write(tmp_path) for a temporary file beside `path`, then make it `path` atomically.

    `write` may open the path itself (pandas, pyarrow, numpy); the file is fsynced after it
    returns, so the rename never publishes data still in the page cache only.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        write(tmp)
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
