"""harness.files: the atomic write replaces regular files only; output paths are checked."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from harness import files
from harness.errors import UserError


def test_the_rename_replaces_a_links_file_and_never_a_fifo(tmp_path: Path) -> None:
    target, link = tmp_path / "real.txt", tmp_path / "link.txt"
    target.write_text("old")
    link.symlink_to(target)
    files.write_text(link, "new")
    assert link.is_symlink() and target.read_text() == "new"
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(files.NotAFile, match="a fifo, not a regular file"):
        files.write_text(fifo, "x")
    assert fifo.is_fifo() and not list(tmp_path.glob(".*.tmp"))


def test_output_paths_are_checked_without_creating_anything(tmp_path: Path) -> None:
    assert files.usable_folder(tmp_path / "a" / "b") == tmp_path / "a" / "b"
    assert files.usable_file(tmp_path / "a" / "p.parquet") == tmp_path / "a" / "p.parquet"
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(UserError, match="--out .*: a folder, not a regular file"):
        files.usable_file(tmp_path)
    with pytest.raises(UserError, match="a device, not a regular file"):
        files.usable_file("/dev/null")


def test_a_write_that_need_not_be_durable_is_renamed_unsynced(tmp_path: Path, monkeypatch) -> None:
    """durable=False (the results tables between trials' ends): no fsync, the same rename."""
    synced: list[int] = []
    monkeypatch.setattr(os, "fsync", synced.append)
    path = tmp_path / "t.txt"
    path.write_text("old")
    files.write_with(path, lambda tmp: tmp.write_text("new"), durable=False)
    assert path.read_text() == "new" and synced == [] and not list(tmp_path.glob(".*.tmp"))
    assert path.stat().st_mode & 0o777 == files.FILE_MODE
    files.write_text(path, "newer")
    assert len(synced) == 1
