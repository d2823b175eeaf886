"""harness.results: the tables' schema, atomic and idempotent writes, reopening, load()."""

from __future__ import annotations

import json
import os
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from harness import parts
from harness import results as rs
from harness.errors import UserError
from harness.schema import LAYER_KEYS, METRIC_KEYS, PARAM_PREFIX, TRIAL_KEYS


def report(iteration: int, dev_acc: float = 0.5, layers: int = 2) -> dict:
    r = {k: 0.0 for k in METRIC_KEYS}
    r.update(iteration=iteration, epoch=1, samples=iteration * 8, dev_acc=dev_acc, improved=True)
    r["grad_vanishing"] = r["grad_exploding"] = False
    r["grad_nonfinite"] = 0
    r["layers"] = {
        "layer": [f"l{i}.weight" for i in range(layers)],
        **{k: [float(i) for i in range(layers)] for k in LAYER_KEYS if k != "layer"},
    }
    return r


def fill(w: rs.ResultsWriter) -> None:
    w.set_trial("a", trial_number=0, status="RUNNING", params={"lr": 1e-3, "sizes": [2, 3, 4]})
    w.add_report("a", report(10, 0.6))
    w.add_report("a", report(20, 0.7))
    w.set_trial("b", trial_number=1, status="RUNNING", params={"lr": 1e-2, "sizes": [3, 4, 5]})
    w.add_report("b", report(10, 0.4))
    w.set_trial(
        "a",
        status="COMPLETED",
        metric=0.7,
        test_acc=0.69,
        start_time=datetime(2026, 1, 1, tzinfo=timezone.utc),
        end_time=1767225700.0,
    )
    w.set_trial("b", status="PRUNED", metric=0.4)
    w.flush(force=True)


def test_tables_have_the_schema_columns_and_types(tmp_path: Path) -> None:
    w = rs.ResultsWriter(tmp_path)
    fill(w)
    trials = pd.read_parquet(tmp_path / rs.TRIALS_FILE)
    metrics = pd.read_parquet(tmp_path / rs.METRICS_FILE)
    layers = pd.read_parquet(tmp_path / rs.LAYERS_FILE)
    assert list(trials.columns) == [*TRIAL_KEYS, "param.lr", "param.sizes"]
    assert list(metrics.columns) == ["trial_id", *METRIC_KEYS]
    assert list(layers.columns) == ["trial_id", "iteration", *LAYER_KEYS]
    assert trials["trial_id"].tolist() == ["a", "b"]
    assert trials["status"].tolist() == ["COMPLETED", "PRUNED"]
    # lists are stored readably, numbers as numbers, times as UTC timestamps
    assert trials["param.sizes"].tolist() == ["[2, 3, 4]", "[3, 4, 5]"]
    assert trials["param.lr"].dtype == "float64"
    assert str(trials["start_time"].dtype).startswith("datetime64") and "UTC" in str(
        trials["start_time"].dtype
    )
    assert trials.loc[0, "end_time"].year == 2026
    assert metrics["iteration"].dtype == "int64" and metrics["improved"].dtype == bool
    assert len(metrics) == 3 and len(layers) == 6
    assert metrics.groupby("trial_id").size().to_dict() == {"a": 2, "b": 1}


def test_reports_are_keyed_so_replays_do_not_duplicate(tmp_path: Path) -> None:
    w = rs.ResultsWriter(tmp_path)
    fill(w)
    w.add_report("a", report(20, 0.75))  # the same (trial, iteration) again: replaced
    w.flush(force=True)
    metrics = pd.read_parquet(tmp_path / rs.METRICS_FILE)
    assert not metrics.duplicated(["trial_id", "iteration"]).any()
    assert metrics.set_index(["trial_id", "iteration"]).loc[("a", 20), "dev_acc"] == 0.75
    layers = pd.read_parquet(tmp_path / rs.LAYERS_FILE)
    assert not layers.duplicated(["trial_id", "iteration", "layer"]).any()


def test_reopened_writer_continues_without_duplicates(tmp_path: Path) -> None:
    fill(rs.ResultsWriter(tmp_path))
    w = rs.ResultsWriter.open(tmp_path)
    w.add_report("b", report(10, 0.4))  # replayed after a resume
    w.add_report("b", report(20, 0.45))
    w.set_trial("c", trial_number=2, status="FAILED", error="ValueError: boom")
    w.flush(force=True)
    trials = pd.read_parquet(tmp_path / rs.TRIALS_FILE)
    metrics = pd.read_parquet(tmp_path / rs.METRICS_FILE)
    assert trials["trial_id"].tolist() == ["a", "b", "c"]
    assert trials.set_index("trial_id").loc["a", "param.sizes"] == "[2, 3, 4]"
    assert len(metrics) == 4 and not metrics.duplicated(["trial_id", "iteration"]).any()


def test_rows_are_ordered_by_trial_number(tmp_path: Path) -> None:
    w = rs.ResultsWriter(tmp_path)
    w.set_trial("late", trial_number=3, status="COMPLETED")
    w.set_trial("base", trial_number=0, status="COMPLETED")
    w.set_trial("odd", status="FAILED")  # never got a number: last
    w.flush(force=True)
    assert pd.read_parquet(tmp_path / rs.TRIALS_FILE)["trial_id"].tolist() == [
        "base",
        "late",
        "odd",
    ]


def test_blocks_of_trials_keep_rows_keys_and_order(tmp_path: Path, monkeypatch) -> None:
    """The tables are joined from cached blocks of trials (a 5,000-trial sweep does not
    re-join every trial at each write): a change in an old block, a dropped trial and a
    trial renumbered later all come out as if written from scratch."""
    monkeypatch.setattr(parts.KeyedTable, "BLOCK", 2)
    w = rs.ResultsWriter(tmp_path, params=["lr"])
    w.write_sweep_info({"spec": {"name": "blocks"}})  # load() sorts the parts' rows by number
    for i in (4, 0, 3, 1, 2):  # first seen out of number order, across three blocks
        w.set_trial(f"t{i}", trial_number=i, status="RUNNING", params={"lr": i / 10})
        w.add_report(f"t{i}", report(10))
    w.flush(force=True)
    w.set_trial("t4", status="COMPLETED", metric=0.4)  # in the first block
    w.add_report("t0", report(20))
    w.drop_trial("t3")
    w.set_trial("new", status="RUNNING")  # no number yet: last
    w.flush(force=True)
    trials = rs.load(tmp_path).trials
    assert trials["trial_id"].tolist() == ["t0", "t1", "t2", "t4", "new"]
    assert trials.set_index("trial_id").loc["t4", "status"] == "COMPLETED"
    assert trials["param.lr"].tolist()[:4] == [0.0, 0.1, 0.2, 0.4]
    metrics = pd.read_parquet(tmp_path / rs.METRICS_FILE)
    assert sorted(zip(metrics["trial_id"], metrics["iteration"])) == [
        ("t0", 10), ("t0", 20), ("t1", 10), ("t2", 10), ("t4", 10)]  # fmt: skip
    w.set_trial("new", trial_number=5)
    w.flush(force=True)
    assert [r["trial_id"] for r in w.rows()] == ["t0", "t1", "t2", "t4", "new"]
    assert rs.load(tmp_path).trials["trial_id"].tolist()[-1] == "new"
    assert 0 <= w.max_stale_s < 60 and w.write_seconds > 0


def test_reports_are_parts_of_one_dataset_rewritten_by_block(tmp_path: Path, monkeypatch) -> None:
    """metrics.parquet/ and grad_layers.parquet/ hold one part per block of trials: a change
    rewrites its block's part only; a reopened writer (resume) and an older sweep's single
    file are rewritten whole, never leaving a trial's rows in two parts."""
    monkeypatch.setattr(parts.KeyedTable, "BLOCK", 2)
    w = rs.ResultsWriter(tmp_path)
    for i in range(5):
        w.set_trial(f"t{i}", trial_number=i)
        w.add_report(f"t{i}", report(10))
    w.flush(force=True)
    names = sorted(p.name for p in (tmp_path / rs.METRICS_FILE).iterdir())
    assert names == ["part-000000.parquet", "part-000001.parquet", "part-000002.parquet"]
    assert sorted(p.name for p in (tmp_path / rs.LAYERS_FILE).iterdir()) == names
    first = (tmp_path / rs.METRICS_FILE / names[0]).stat().st_ino
    w.add_report("t4", report(20))  # the last block only
    w.flush(force=True)
    assert (tmp_path / rs.METRICS_FILE / names[0]).stat().st_ino == first
    assert len(pd.read_parquet(tmp_path / rs.METRICS_FILE)) == 6

    w = rs.ResultsWriter.open(tmp_path)
    w.drop_trial("t0")  # blocks now fall differently: t1, t2 | t3, t4
    w.add_report("t1", report(20))
    w.flush(force=True)
    metrics = pd.read_parquet(tmp_path / rs.METRICS_FILE)
    assert sorted(zip(metrics["trial_id"], metrics["iteration"])) == [
        ("t1", 10), ("t1", 20), ("t2", 10), ("t3", 10), ("t4", 10), ("t4", 20)]  # fmt: skip
    assert len(pd.read_parquet(tmp_path / rs.LAYERS_FILE)) == 2 * 6
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] in ([], [".tables.lock"])

    old = tmp_path / "old"  # an older sweep's folder: one file per table
    old.mkdir()
    metrics.to_parquet(old / rs.METRICS_FILE)
    w = rs.ResultsWriter.open(old)
    w.set_trial("t9", trial_number=9)
    w.add_report("t9", report(10))
    w.flush(force=True)
    assert (old / rs.METRICS_FILE).is_dir() and len(pd.read_parquet(old / rs.METRICS_FILE)) == 7


def test_trials_are_parts_and_a_trial_end_rewrites_only_its_own(
    tmp_path: Path, monkeypatch
) -> None:
    """trials.parquet/ is a folder of parts, one per block of trials, each by trial number: a
    trial's end rewrites its own block's part (rewriting every row grew with the sweep); a
    column that one block adds or turns text rewrites them all in one schema; an older
    sweep's single file reads as before and becomes parts at its first write, no row lost."""
    monkeypatch.setattr(parts.KeyedTable, "BLOCK", 2)
    w = rs.ResultsWriter(tmp_path, params=["lr"])
    w.write_sweep_info({"spec": {"name": "parts"}})
    for i in (1, 0, 4, 2, 3):  # blocks: t1 t0 | t4 t2 | t3
        w.set_trial(f"t{i}", trial_number=i, status="RUNNING", params={"lr": i / 10})
    w.flush(force=True)
    folder = tmp_path / rs.TRIALS_FILE
    inodes = {p.name: p.stat().st_ino for p in folder.iterdir()}
    assert len(inodes) == 3
    w.set_trial("t2", status="COMPLETED", metric=0.2)
    assert w.flush(force=True, only=("trials",))
    changed = [p.name for p in sorted(folder.iterdir()) if p.stat().st_ino != inodes[p.name]]
    assert changed == [parts.PART.format(1)]
    assert pq.read_table(folder / changed[0])["trial_id"].to_pylist() == ["t2", "t4"]
    ids = [f"t{i}" for i in range(5)]
    assert sorted(pd.read_parquet(folder)["trial_id"]) == ids  # one table, as pandas reads it
    assert rs.load(tmp_path).trials["trial_id"].tolist() == ids  # sorted by number

    w.set_trial("t5", trial_number=5, params={"lr": "auto", "extra": 1})  # the last block
    w.flush(force=True, only=("trials",))
    assert all(p.stat().st_ino != inodes[p.name] for p in folder.iterdir())
    t = pq.read_table(folder)
    assert t["param.lr"].type == "string" and t["param.extra"].to_pylist().count(1) == 1

    old = tmp_path / "old"  # an older sweep's folder: trials.parquet one file
    old.mkdir()
    rows = rs.load(tmp_path).trials
    rows.to_parquet(old / rs.TRIALS_FILE)
    (old / rs.SWEEP_FILE).write_text((tmp_path / rs.SWEEP_FILE).read_text())
    assert rs.load(old).trials.equals(rows)
    w = rs.ResultsWriter.open(old)
    w.set_trial("t6", trial_number=6, status="RUNNING")
    assert w.flush(force=True, only=("trials",))
    assert (old / rs.TRIALS_FILE).is_dir() and len(list((old / rs.TRIALS_FILE).iterdir())) == 4
    assert rs.load(old).trials["trial_id"].tolist() == [*ids, "t5", "t6"]


def test_a_part_being_written_is_never_in_the_dataset_folder(tmp_path: Path, monkeypatch) -> None:
    """polars reads every file of metrics.parquet/, hidden ones too: a part's temporary file
    lives in the sweep's folder until it is renamed into place."""
    w = rs.ResultsWriter(tmp_path)
    w.set_trial("t0", trial_number=0)
    w.add_report("t0", report(10))
    w.flush(force=True)  # the folders exist now; later writes go part by part
    seen: list[list[str]] = []
    write_table = rs.pq.write_table

    def watched(table, where, *args, **kwargs):
        seen.append(sorted(p.name for p in (tmp_path / rs.METRICS_FILE).iterdir()))
        return write_table(table, where, *args, **kwargs)

    monkeypatch.setattr(rs.pq, "write_table", watched)
    w.add_report("t0", report(20))
    w.flush(force=True)
    assert seen and all(names == ["part-000000.parquet"] for names in seen)
    assert len(pd.read_parquet(tmp_path / rs.METRICS_FILE)) == 2


def test_only_forced_writes_are_fsynced(tmp_path: Path, monkeypatch) -> None:
    """A trial's end (a forced write, which Optuna hears of next) outlives a crash of the
    machine; the frequent unforced writes are renamed into place unsynced, and every reader
    sees them all the same."""
    synced: list[str] = []
    fsync = os.fsync

    def spy(fd: int) -> None:
        path = Path(os.readlink(f"/proc/self/fd/{fd}"))  # a table, or a part of one
        synced.append(path.name if path.parent == tmp_path else path.parent.name)
        fsync(fd)

    monkeypatch.setattr(os, "fsync", spy)
    w = rs.ResultsWriter(tmp_path, max_write_share=1e9)  # no throttle: every flush writes
    w.set_trial("a", trial_number=0, status="RUNNING")
    w.add_report("a", report(10))
    w.flush(force=True)  # a new table is written whole, fsynced
    synced.clear()
    w.set_trial("a", iterations=20)
    w.add_report("a", report(20))
    assert w.flush() and synced == []
    assert pd.read_parquet(tmp_path / rs.TRIALS_FILE)["iterations"].tolist() == [20]
    assert len(pd.read_parquet(tmp_path / rs.METRICS_FILE)) == 2
    w.set_trial("a", status="COMPLETED")  # the end: its reports, written before, synced too
    assert w.flush(force=True)
    assert sorted(n.split(".")[0] for n in synced) == ["grad_layers", "metrics", "trials"]
    synced.clear()
    w.set_trial("a", end_time=1767225700.0)
    assert w.flush(force=True, only=("trials",), durable=False) and synced == []
    assert w.flush(force=True) and synced == ["trials.parquet"]  # nothing new, still synced


def test_old_blocks_keep_their_table_not_each_trials(tmp_path: Path, monkeypatch) -> None:
    """Trials two blocks back give up their own Arrow tables (memory that grew with the
    sweep); a late change to one of them is written as if nothing had been dropped."""
    monkeypatch.setattr(parts.KeyedTable, "BLOCK", 2)
    w = rs.ResultsWriter(tmp_path)
    for i in range(7):
        w.set_trial(f"t{i}", trial_number=i, status="RUNNING")
        w.add_report(f"t{i}", report(10))
        w.flush(force=True)
    assert not {"t0", "t1", "t2", "t3"} & set(w.metrics._cache)  # blocks 0 and 1
    w.add_report("t0", report(20, dev_acc=0.9))
    w.set_trial("t1", status="COMPLETED")
    w.flush(force=True)
    metrics = pd.read_parquet(tmp_path / rs.METRICS_FILE)
    assert len(metrics) == 8 and metrics["dev_acc"].max() == 0.9
    trials = pd.read_parquet(tmp_path / rs.TRIALS_FILE)
    assert trials["trial_id"].tolist() == [f"t{i}" for i in range(7)]
    assert trials["status"].tolist().count("COMPLETED") == 1


def test_writes_are_atomic_and_leave_no_temporaries(tmp_path: Path, monkeypatch) -> None:
    w = rs.ResultsWriter(tmp_path)
    fill(w)
    part = tmp_path / rs.TRIALS_FILE / parts.PART.format(0)
    before = part.read_bytes()

    def broken(table, where, **kw):
        Path(where).write_bytes(b"half a parquet file")
        raise OSError("disk full")

    monkeypatch.setattr(rs.pq, "write_table", broken)
    w.set_trial("a", status="FAILED")
    with pytest.raises(OSError):
        w.flush(force=True)
    assert part.read_bytes() == before  # the old table, intact
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []
    assert pq.read_table(tmp_path / rs.TRIALS_FILE).num_rows == 2


def test_written_files_are_readable_by_others(tmp_path: Path) -> None:
    fill(rs.ResultsWriter(tmp_path))
    mask = os.umask(0)
    os.umask(mask)
    part = tmp_path / rs.TRIALS_FILE / parts.PART.format(0)
    assert os.stat(part).st_mode & 0o777 == 0o666 & ~mask  # not 0600


def test_a_parameter_of_mixed_types_is_stored_as_text(tmp_path: Path) -> None:
    w = rs.ResultsWriter(tmp_path, params=["heads", "lr"])
    w.set_trial("a", trial_number=0, status="COMPLETED", params={"lr": 0.1, "heads": 1})
    w.set_trial("b", trial_number=1, status="COMPLETED", params={"lr": 1, "heads": "auto"})
    w.flush(force=True)
    t = pd.read_parquet(tmp_path / rs.TRIALS_FILE)
    assert t["param.heads"].tolist() == ["1", "auto"]
    assert t["param.lr"].tolist() == [0.1, 1.0]
    assert list(t.columns[-2:]) == ["param.heads", "param.lr"]  # the spec's order


def test_bad_values_become_nulls_not_errors(tmp_path: Path) -> None:
    w = rs.ResultsWriter(tmp_path)
    w.set_trial(
        "x", trial_number=0, status="DIVERGED", metric=float("nan"), iterations=float("inf")
    )
    w.flush(force=True)
    row = pd.read_parquet(tmp_path / rs.TRIALS_FILE).iloc[0]
    assert pd.isna(row["iterations"]) and pd.isna(row["metric"])
    with pytest.raises(KeyError):
        w.set_trial("x", not_a_column=1)


def test_flush_is_throttled_by_its_own_cost(tmp_path: Path) -> None:
    w = rs.ResultsWriter(tmp_path, max_write_share=1e-9)  # any write buys a long pause
    fill(w)
    w.add_report("a", report(30))
    assert w.flush() is False  # too soon after the last write
    assert w.flush(force=True, only=("trials",)) is False  # only reports changed
    assert w.flush(force=True) is True
    assert w.flush(force=True) is False  # nothing changed


def test_load_returns_tables_and_spec(tmp_path: Path) -> None:
    w = rs.ResultsWriter(tmp_path)
    w.write_sweep_info({"spec": {"name": "demo", "model": "TextCNN"}, "host": "h"})
    fill(w)
    res = rs.load(tmp_path)
    assert res.spec["model"] == "TextCNN" and res.info["host"] == "h"
    assert len(res.trials) == 2 and len(res.metrics) == 3 and len(res.grad_layers) == 6
    assert res.param_columns == [PARAM_PREFIX + "lr", PARAM_PREFIX + "sizes"]
    assert rs.trial_params(res, "a") == {"lr": 1e-3, "sizes": [2, 3, 4]}
    with pytest.raises(UserError, match="no trial 'zz'"):
        rs.trial_params(res, "zz")


def test_load_of_a_folder_without_tables_yet(tmp_path: Path) -> None:
    (tmp_path / rs.SWEEP_FILE).write_text(json.dumps({"spec": {"name": "x"}}))
    res = rs.load(tmp_path)
    assert res.trials.empty and list(res.metrics.columns) == ["trial_id", *METRIC_KEYS]


def test_load_refuses_other_folders(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="not a sweep results folder"):
        rs.load(tmp_path)


def test_top_ranks_as_the_sweep_does_never_a_pruned_trial(tmp_path: Path) -> None:
    """The README's notebook recipe: a PRUNED trial's metric (its value where it was stopped)
    may be high, but it is not a finished trial's, so `top` skips it; ties go to the earlier."""
    w = rs.ResultsWriter(tmp_path)
    w.write_sweep_info({"spec": {"name": "d", "metric": {"name": "dev_loss", "goal": "minimize"}}})
    for tid, number, status, metric in [("a", 0, "COMPLETED", 0.5), ("b", 1, "PRUNED", 0.1),
                                        ("c", 2, "COMPLETED", 0.4), ("d", 3, "COMPLETED", 0.4),
                                        ("e", 4, "FAILED", None)]:  # fmt: skip
        w.set_trial(tid, trial_number=number, status=status, metric=metric)
    w.flush(force=True)
    res = rs.load(tmp_path)
    assert res.goal == "minimize"
    assert res.top(3)["trial_id"].tolist() == ["c", "d", "a"]
    assert res.top(1)["trial_number"].tolist() == [2]


def test_a_damaged_folder_is_one_line_naming_the_file(tmp_path: Path) -> None:
    w = rs.ResultsWriter(tmp_path)
    w.write_sweep_info({"spec": {"name": "demo"}})
    fill(w)
    trials = tmp_path / rs.TRIALS_FILE
    part = trials / parts.PART.format(0)
    part.write_bytes(part.read_bytes()[:150])
    with pytest.raises(UserError, match=f"{trials}: not a readable Parquet file"):
        rs.load(tmp_path)
    info = tmp_path / rs.SWEEP_FILE
    for text, message in [("[]", "expected a JSON object, got list"),
                          ('{"spec": 3}', "spec: expected an object, got int"),
                          ('{"spec": {"metric": 5}}', r"spec.metric: expected \{name, goal\}")]:  # fmt: skip
        info.write_text(text)
        with pytest.raises(UserError, match=message):
            rs.load(tmp_path)
