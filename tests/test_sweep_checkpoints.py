"""Checkpoints inside trials: a trial whose worker dies (max_failures), whose sweep is
killed (--resume) or which Ray's synchronous HyperBand pauses goes on from its last
checkpoint, and its rows equal those of a run that was never interrupted."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pandas as pd
import pytest
from helpers import LONG, SMOKE, _cli_args, _killed_by, _resumed, _trial_workers, study

from harness import results as rs
from harness import schema, sweep
from harness.config import load_spec
from harness.data import load_dataset
from harness.trainer import train

CLOCKS = ["elapsed_s"]


def _uninterrupted(folder: Path, trial_id: str) -> pd.DataFrame:
    """The trial's config run alone, in one go, in this process (one thread, as in Ray)."""
    cfg, spec = rs.trial_config_for(folder, trial_id)
    rows: list[dict] = []
    train(cfg, load_dataset(spec), lambda m: rows.append(m), device="cpu", threads=1)
    return _frame(rows)


def _frame(reports: list[dict]) -> pd.DataFrame:
    """Reports as the metrics table holds them, clocks left out."""
    keys = [k for k in schema.METRIC_KEYS if k not in CLOCKS]
    return pd.DataFrame([{k: r[k] for k in keys} for r in reports], columns=keys)


def _rows(folder: Path, trial_id: str) -> pd.DataFrame:
    m = pd.read_parquet(folder / rs.METRICS_FILE)
    keys = [k for k in schema.METRIC_KEYS if k not in CLOCKS]
    return m[m["trial_id"] == trial_id].sort_values("iteration")[keys].reset_index(drop=True)


def _same_rows(folder: Path, trial_id: str) -> None:
    got, want = _rows(folder, trial_id), _uninterrupted(folder, trial_id)
    pd.testing.assert_frame_equal(got, want, check_dtype=False, check_exact=True)


def _kill_a_worker_mid_run(folder: Path, tmp_path: Path, overrides: list[str], rows: int) -> dict:
    """The sweep run while its one trial worker (training `rows` trials) is killed once every
    one of them has reported past iteration 100; returns {"trials": [ids], "at": iteration}."""
    killed: dict[str, object] = {}
    done = threading.Event()

    def killer() -> None:
        while not done.is_set():
            try:
                t = pd.read_parquet(folder / rs.TRIALS_FILE)
                running = t[(t["status"] == "RUNNING") & (t["iterations"].fillna(0) >= 100)]
                workers = _trial_workers()
                if len(running) == rows and len(workers) == 1:
                    killed["trials"] = list(running["trial_id"])
                    killed["at"] = running["iterations"].max()
                    os.kill(workers[0], signal.SIGKILL)
                    return
            except (OSError, ValueError, KeyError):
                pass
            time.sleep(0.05)

    thread = threading.Thread(target=killer, daemon=True)
    thread.start()
    try:
        sweep.run(load_spec(SMOKE, overrides), results_root=tmp_path, console=False)
    finally:
        done.set()
        thread.join(timeout=10)
    assert killed, "no trial worker was seen running"
    return killed


@pytest.mark.ray
@pytest.mark.slow
def test_a_killed_worker_goes_on_from_its_checkpoint(
    ray_session: object, tiny_corpus: Path, tmp_path: Path
) -> None:
    # one trial; a checkpoint after every report (8 batches an epoch, a report every 20)
    overrides = ["data.name=thucnews", f"data.path={tiny_corpus}", *LONG, "max_failures=1",
                 "budget.num_samples=1", "keep_best=1"]  # fmt: skip
    folder = tmp_path / "smoke"
    killed = _kill_a_worker_mid_run(folder, tmp_path, overrides, 1)
    (trial,) = killed["trials"]
    trials = pd.read_parquet(folder / rs.TRIALS_FILE).set_index("trial_id")
    row = trials.loc[trial]
    assert row["status"] == "COMPLETED" and row["iterations"] == 300
    assert "continued from its checkpoint at iteration" in row["error"]
    resumed_at = int(row["error"].rsplit(" ", 1)[1])
    # the kill may come after the newest report reached the tables but before Tune took in
    # its checkpoint: then the trial goes on from the one before (Tune takes each in turn)
    assert killed["at"] - 20 <= resumed_at <= 300 and resumed_at % 20 == 0
    _same_rows(folder, trial)
    assert (folder / rs.MODELS_DIR / trial / "model.json").is_file()


@pytest.mark.ray
@pytest.mark.slow
def test_a_killed_group_goes_on_from_its_checkpoint(
    ray_session: object, tiny_corpus: Path, tmp_path: Path
) -> None:
    # a trial is a group of one: a fused group's worker killed mid-run goes on from the
    # group's checkpoint, each member once through, each member's model kept
    overrides = ["data.name=thucnews", f"data.path={tiny_corpus}", *LONG, "max_failures=1",
                 "budget.num_samples=2", "resources.fuse=2", "keep_best=2"]  # fmt: skip
    folder = tmp_path / "smoke"
    members = _kill_a_worker_mid_run(folder, tmp_path, overrides, 2)["trials"]
    trials = pd.read_parquet(folder / rs.TRIALS_FILE).set_index("trial_id")
    metrics = pd.read_parquet(folder / rs.METRICS_FILE)
    for m in members:
        row = trials.loc[m]
        assert row["status"] == "COMPLETED" and row["iterations"] == 300, row
        assert "continued from its checkpoint at iteration" in row["error"]
        its = metrics[metrics["trial_id"] == m]["iteration"]
        assert sorted(its) == list(range(20, 301, 20))  # every report once, none lost
        assert (folder / rs.MODELS_DIR / m / "model.json").is_file()


# The command, killed (SIGKILL) at its 5th checkpoint, the tables on disk held back since its
# 3rd (their writes are rate-limited: a kill can come at any checkpoint with the last few
# reports not yet written). --resume goes on only from a checkpoint whose report is on disk.
_KILLED_WITH_THE_TABLES_BEHIND = """
import os, signal, sys
from harness.sweep import main
from harness.sweep.callback import SweepCallback
from harness.results import ResultsWriter
hook, flush, seen = SweepCallback.on_checkpoint, ResultsWriter.flush, []
def held(self, force=False, **kw):
    return flush(self, force=force, **kw) if force or len(seen) < 3 else False
def killing(self, iteration, trials, trial, checkpoint, **info):
    seen.append(checkpoint)
    if len(seen) == 3:
        self.writer.flush(force=True)  # reports up to the 3rd checkpoint's on disk
    hook(self, iteration, trials, trial, checkpoint, **info)
    if len(seen) == 5:
        os.kill(os.getpid(), signal.SIGKILL)
SweepCallback.on_checkpoint, ResultsWriter.flush = killing, held
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.subprocess
@pytest.mark.ray
@pytest.mark.slow
def test_resume_goes_on_from_the_interrupted_trials_checkpoint(
    tiny_corpus: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "smoke"
    args = _cli_args(tiny_corpus, tmp_path, *LONG, "budget.num_samples=2",
                     "budget.max_concurrent=1")  # fmt: skip
    _killed_by(args, _KILLED_WITH_THE_TABLES_BEHIND)
    before = pd.read_parquet(folder / rs.TRIALS_FILE)
    old = before[before["status"] == "RUNNING"]["trial_id"].iloc[0]
    number = int(before.set_index("trial_id").loc[old, "trial_number"])

    _resumed(args)
    trials = pd.read_parquet(folder / rs.TRIALS_FILE)
    assert sorted(trials["trial_number"]) == [0, 1] and set(trials["status"]) == {"COMPLETED"}
    row = trials.set_index("trial_number").loc[number]
    # a report every 20 iterations, each with a checkpoint: the 3rd's is the newest on disk
    assert row["trial_id"] != old
    assert row["error"] == f"continued from trial {old}'s checkpoint at iteration 60"
    assert old not in set(pd.read_parquet(folder / rs.METRICS_FILE)["trial_id"])
    _same_rows(folder, row["trial_id"])  # rows before the kill (kept) and after (new)
    st = study(folder, "smoke")
    assert [t.state.name for t in st.trials] == ["COMPLETE", "COMPLETE"]
    assert not (folder / rs.RAY_DIR / old).exists() or not list(
        (folder / rs.RAY_DIR / old).glob("checkpoint_*")
    )


def _uninterrupted_group(folder: Path, trial_ids: list[str]) -> list[pd.DataFrame]:
    """The members' configs trained as one group, in one go, in this process."""
    from harness.trainer import train_group

    pairs = [rs.trial_config_for(folder, t) for t in trial_ids]
    rows: list[list[dict]] = [[] for _ in trial_ids]
    train_group([c for c, _ in pairs], load_dataset(pairs[0][1]),
                lambda i, m: rows[i].append(m), device="cpu", threads=1)  # fmt: skip
    return [_frame(got) for got in rows]


@pytest.mark.subprocess
@pytest.mark.ray
@pytest.mark.slow
def test_resume_goes_on_from_the_interrupted_groups_checkpoint(
    tiny_corpus: Path, tmp_path: Path
) -> None:
    # a trial is a group of one, and a group goes on like one: both members from the
    # group's newest checkpoint whose reports are in the tables, under the new group's ids
    folder = tmp_path / "smoke"
    args = _cli_args(tiny_corpus, tmp_path, *LONG, "budget.num_samples=2", "resources.fuse=2")
    _killed_by(args, _KILLED_WITH_THE_TABLES_BEHIND)
    before = pd.read_parquet(folder / rs.TRIALS_FILE)
    assert list(before["status"]) == ["RUNNING", "RUNNING"]
    (old,) = set(before["group_id"])

    _resumed(args)
    trials = pd.read_parquet(folder / rs.TRIALS_FILE).sort_values("trial_number")
    assert list(trials["status"]) == ["COMPLETED", "COMPLETED"], trials
    (new,) = set(trials["group_id"])
    assert new != old and list(trials["trial_id"]) == [f"{new}-0", f"{new}-1"]
    assert set(trials["error"]) == {f"continued from trial {old}'s checkpoint at iteration 60"}
    metrics = pd.read_parquet(folder / rs.METRICS_FILE)
    assert set(metrics["trial_id"]) == set(trials["trial_id"])
    want = _uninterrupted_group(folder, list(trials["trial_id"]))
    for tid, w in zip(trials["trial_id"], want):  # rows before the kill (kept) and after (new)
        pd.testing.assert_frame_equal(_rows(folder, tid), w, check_dtype=False, check_exact=True)
    assert [t.state.name for t in study(folder, "smoke").trials] == ["COMPLETE", "COMPLETE"]
    assert not list((folder / rs.RAY_DIR / old).glob("checkpoint_*"))


@pytest.mark.ray
@pytest.mark.slow
def test_hyperband_sync_pauses_trials_and_they_go_on_from_their_checkpoints(
    ray_session: object, tiny_corpus: Path, tmp_path: Path
) -> None:
    # max_t 4 reports, eta 2: Ray's bracket 0 runs 3 trials 4 reports, bracket 1 halves
    # 3 trials after 2 reports (pausing the first to arrive until the rung is full)
    overrides = ["data.name=thucnews", f"data.path={tiny_corpus}", "train.max_epochs=3",
                 "train.max_steps=24", "train.eval_every=3", "budget.num_samples=6",
                 "early_terminate={type: hyperband_sync, reduction_factor: 2, max_t: 4}"]  # fmt: skip
    out = sweep.run(load_spec(SMOKE, overrides), results_root=tmp_path, console=False)
    trials = pd.read_parquet(out.folder / rs.TRIALS_FILE).set_index("trial_id")
    metrics = pd.read_parquet(out.folder / rs.METRICS_FILE)
    reports = metrics.groupby("trial_id")["report"].max()
    assert len(trials) == 6 and reports.max() == 4 and (reports == 2).any(), reports
    assert set(trials["status"]) == {"PRUNED"}  # max_t (4 reports) stops every trial early
    went_on = trials[trials["error"].fillna("").str.contains("continued from its checkpoint")]
    assert len(went_on) >= 1, trials["error"]
    for tid in went_on.index:  # a paused trial's rows are those of a run never paused
        got = _rows(out.folder, tid)
        pd.testing.assert_frame_equal(got, _uninterrupted(out.folder, tid).iloc[: len(got)],
                                      check_dtype=False, check_exact=True)  # fmt: skip
    states = {t.user_attrs["ray_trial_id"]: t.state.name for t in study(out.folder, "smoke").trials}
    assert set(states.values()) == {"PRUNED"}


def test_a_trial_keeps_only_its_newest_checkpoints(tmp_path: Path) -> None:
    """Tune keeps every checkpoint (num_to_keep=None: with one, it saves its whole
    experiment state at each checkpoint); the driver removes a trial's older ones."""
    from ray import tune

    from harness.sweep import checkpoints

    trial = tmp_path / "exp" / "abc123"
    for i in range(4):
        (trial / f"checkpoint_{i:06d}").mkdir(parents=True)
    (trial / "result.json").write_text("{}")
    newest = tune.Checkpoint(path=str(trial / "checkpoint_000003"))
    checkpoints.keep_newest(newest, 2)
    assert sorted(p.name for p in trial.iterdir()) == [
        "checkpoint_000002", "checkpoint_000003", "result.json"]  # fmt: skip
    checkpoints.keep_newest(newest, 1)
    assert sorted(p.name for p in trial.iterdir()) == ["checkpoint_000003", "result.json"]
    # the worker wrote its next checkpoint before the driver heard of this one: it stays
    (trial / "checkpoint_000004").mkdir()
    (trial / "checkpoint_000005").mkdir()
    checkpoints.keep_newest(tune.Checkpoint(path=str(trial / "checkpoint_000004")), 1)
    assert sorted(p.name for p in trial.iterdir()) == [
        "checkpoint_000004", "checkpoint_000005", "result.json"]  # fmt: skip
    spec = load_spec(SMOKE)
    assert checkpoints.kept_per_trial(spec) == 1
    assert checkpoints.kept_per_trial(load_spec(SMOKE, ["early_terminate={type: pbt}"])) == 4


def test_resume_goes_on_only_from_a_checkpoint_of_the_whole_group(tmp_path: Path) -> None:
    """An interrupted group goes on from its newest checkpoint whose loop trained all its
    members and whose reports are in the tables; one taken after a member ended would not
    train it again."""
    import torch

    from harness.sweep import checkpoints

    def state(folder: Path, step: int, group: list[int], alive: list[int]) -> None:
        tree = {"counters": {"step_count": step}, "group": group, "alive": alive,
                "weights": torch.zeros(2)}  # fmt: skip
        checkpoints.write_state(folder, tree)

    exp = tmp_path / "exp"
    state(exp / "g" / "checkpoint_000000", 20, [0, 1], [0, 1])
    state(exp / "g" / "checkpoint_000001", 40, [0, 1], [0, 1])
    state(exp / "g" / "checkpoint_000002", 60, [0, 1], [0])  # member 1 had ended
    (exp / "g" / "checkpoint_000003").mkdir()  # still being written: no state yet
    found = checkpoints.latest_state(str(exp), "g", members=2)
    assert found == {"path": str(exp / "g" / "checkpoint_000001"), "trial_id": "g",
                     "iteration": 40}  # fmt: skip
    found = checkpoints.latest_state(str(exp), "g", lambda it: it <= 20, members=2)
    assert found is not None and found["iteration"] == 20
    assert checkpoints.latest_state(str(exp), "g", members=3) is None  # not this group
    assert checkpoints.latest_state(str(exp), "g") is None  # a single trial's is group [0]


def test_a_killed_workers_temporary_checkpoint_folders_are_removed_later(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker killed between writing a checkpoint and reporting it leaves its temporary
    folder; a later trial removes it once its process is gone (and only then)."""
    import subprocess
    import sys
    import tempfile

    from harness.sweep import checkpoints

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    gone = tmp_path / f"harness-checkpoint-{int(dead.stdout)}-abc_12"
    gone_final = tmp_path / f"harness-final-{int(dead.stdout)}-x9"
    fresh = tmp_path / f"harness-checkpoint-{int(dead.stdout)}-new"  # written a moment ago
    mine = checkpoints.temporary()
    other = tmp_path / "harness-checkpoint-oldname"  # not one of these: left alone
    for d in (gone, gone_final, fresh, other):
        d.mkdir()
        (d / "state").mkdir()
    for d in (gone, gone_final, mine, other):
        os.utime(d, (time.time() - 3600, time.time() - 3600))
    assert mine.parent == tmp_path and mine.name.startswith(f"harness-checkpoint-{os.getpid()}-")
    checkpoints.remove_orphans()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([fresh.name, mine.name, other.name])
