"""harness.parts: a crash between a whole rewrite's two renames loses nothing."""

from __future__ import annotations

import os
import shutil
import sys

import pandas as pd
import pytest

from harness import parts
from harness import results as rs


def _sweep(folder, trials: int = 3) -> rs.ResultsWriter:
    writer = rs.ResultsWriter(folder)
    for i in range(trials):
        writer.set_trial(f"t{i}", trial_number=i, status="COMPLETED", metric=i / 10)
    writer.flush(force=True)
    writer.write_sweep_info({"spec": {"metric": {"name": "metric", "goal": "maximize"}}})
    return writer


def test_a_table_moved_aside_by_a_crash_is_read_and_put_back(tmp_path):
    _sweep(tmp_path)
    table = tmp_path / rs.TRIALS_FILE
    aside = tmp_path / f".{rs.TRIALS_FILE}.old-dead"
    os.replace(table, aside)  # the writer died here: its new folder half written
    half = tmp_path / f".{rs.TRIALS_FILE}.new-beef"
    half.mkdir()
    (half / parts.PART.format(0)).write_bytes(b"PAR1 half")

    assert parts.published(table) == aside
    assert rs.load(tmp_path).trials["trial_id"].tolist() == ["t0", "t1", "t2"]  # a reader

    writer = rs.ResultsWriter.open(tmp_path)  # a --resume
    assert table.is_dir() and not aside.exists() and not half.exists()
    assert writer.trial_ids() == ["t0", "t1", "t2"]
    writer.set_trial("t3", trial_number=3, status="COMPLETED", metric=0.9)
    writer.flush(force=True)
    assert pd.read_parquet(table)["trial_id"].tolist() == ["t0", "t1", "t2", "t3"]


def test_a_table_in_place_is_what_is_read(tmp_path):
    _sweep(tmp_path)
    table = tmp_path / rs.METRICS_FILE
    (tmp_path / f".{rs.METRICS_FILE}.old-stale").mkdir()  # e.g. left by a copy; not newer
    assert parts.published(tmp_path / rs.TRIALS_FILE) == tmp_path / rs.TRIALS_FILE
    assert parts.published(table) == table or not table.exists()


def test_a_whole_rewrite_exchanges_the_folders_in_one_step(tmp_path, monkeypatch):
    """Where the kernel can exchange two names (Linux renameat2), the new folder takes the
    table's place in one step, so a reader without the lock never finds it missing; an
    older sweep's single file is exchanged for a folder the same way."""
    if sys.platform != "linux":
        pytest.skip("renameat2 is Linux's")
    _sweep(tmp_path)
    table = tmp_path / rs.TRIALS_FILE
    frame = pd.read_parquet(table)
    shutil.rmtree(table)
    frame.to_parquet(table)  # as an older sweep left it: one file
    swaps: list[tuple[bool, bool]] = []
    real = parts._exchange

    def exchange(a, b):  # the real exchange, watched
        done = real(a, b)
        swaps.append((done, b.is_dir()))
        return done

    monkeypatch.setattr(parts, "_exchange", exchange)
    writer = rs.ResultsWriter.open(tmp_path)  # a resume: every table is rewritten whole
    writer.set_trial("t3", trial_number=3, status="COMPLETED", metric=0.9)
    writer.flush(force=True)
    assert swaps and all(done and is_dir for done, is_dir in swaps)
    assert pd.read_parquet(table)["trial_id"].tolist() == ["t0", "t1", "t2", "t3"]
    assert not list(tmp_path.glob(".*.parquet.*-*"))  # the replaced tables went
