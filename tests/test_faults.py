"""Faults a long sweep meets: the driver killed at any moment (then --resume), a trial's
worker process killed (retried by max_failures), a trial that runs out of memory (FAILED
data, the sweep goes on), and Tune's state on a pyarrow filesystem URI (--storage).

The chosen-moment SIGKILL and Ctrl-C cases are in tests/test_sweep.py; here the kill comes
at a seeded moment: a fixed seed by default (CI sees the same kill every run),
HARNESS_FAULT_SEED=<seed> replays one, HARNESS_FAULT_SEED=random draws a fresh one (printed).
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
from helpers import (
    LONG,
    ROOT,
    SMOKE,
    _cli_args,
    _exactly_once,
    _kill_driver_and_its_ray,
    _killed_by,
    _resumed,
    _start,
    _tables,
    _trial_workers,
    study,
    write_spec,
)

from harness import results as rs
from harness import sweep
from harness.config import load_spec


def _fault_seed() -> int:
    """The seed of a fault's moment: HARNESS_FAULT_SEED (a number, or `random` for a fresh
    one), else a fixed one."""
    given = os.environ.get("HARNESS_FAULT_SEED", "0")
    return random.SystemRandom().randrange(2**32) if given == "random" else int(given)


def _first_running(proc: subprocess.Popen, folder: Path, timeout: float = 120) -> None:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout and proc.poll() is None:
        try:
            if (pd.read_parquet(folder / rs.TRIALS_FILE)["status"] == "RUNNING").any():
                return
        except (OSError, ValueError, KeyError):
            pass
        time.sleep(0.1)
    raise AssertionError("no trial ever started")


def _wait_to_kill(proc: subprocess.Popen, folder: Path, delay: float, finished: int) -> None:
    """Sleep `delay` s, or until `finished` trials have ended: the kill must come while the
    sweep still runs, and a fast machine may finish it within the span."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < delay and proc.poll() is None:
        try:
            t = pd.read_parquet(folder / rs.TRIALS_FILE)
            if (~t["status"].isin(["RUNNING", "PENDING"])).sum() >= finished:
                return
        except (OSError, ValueError, KeyError):
            pass
        time.sleep(0.05)


@pytest.mark.subprocess
@pytest.mark.ray
@pytest.mark.slow
def test_driver_killed_at_a_random_moment_resumes_to_exactly_the_budget(
    tiny_corpus: Path, tmp_path: Path
) -> None:
    # One kill by default; HARNESS_FAULT_RUNS=10 gives the reliability figure (10 sweeps,
    # seeds seed..seed+9), HARNESS_FAULT_SPAN the range of the moment in seconds after the
    # first trial started (default 6; a 6-trial sweep here runs about that long after it).
    first = _fault_seed()
    runs = int(os.environ.get("HARNESS_FAULT_RUNS", "1"))
    span = float(os.environ.get("HARNESS_FAULT_SPAN", "6"))
    for seed in range(first, first + runs):
        _kill_then_resume(seed, span, tiny_corpus, tmp_path / str(seed))


def _kill_then_resume(seed: int, span: float, tiny_corpus: Path, root: Path) -> None:
    delay = random.Random(seed).uniform(0.0, span)
    print(f"HARNESS_FAULT_SEED={seed}: SIGKILL {delay:.2f} s after the first trial started")
    folder = root / "smoke"
    args = _cli_args(tiny_corpus, root, *LONG, "budget.num_samples=6")

    proc = _start(args)
    try:
        _first_running(proc, folder)
        _wait_to_kill(proc, folder, delay, finished=5)  # of 6
        assert proc.poll() is None, f"seed {seed}: the sweep ended before the kill"
    finally:
        _kill_driver_and_its_ray(proc)
    for name in (rs.TRIALS_FILE, rs.METRICS_FILE, rs.LAYERS_FILE):
        if (folder / name).exists():
            pd.read_parquet(folder / name)  # readable after a kill at any moment

    _resumed(args, f"seed {seed}:\n")
    trials = _exactly_once(folder, 6)
    params = trials[[c for c in trials.columns if c.startswith("param.")]].astype(str)
    assert not params.duplicated().any(), f"seed {seed}: a resumed sampler repeated a draw"
    print(f"HARNESS_FAULT_SEED={seed}: resumed to 6 trials, each once, none RUNNING")


@pytest.mark.ray
@pytest.mark.slow
def test_a_killed_trial_worker_is_retried_and_completes_once(
    ray_session: object, tiny_corpus: Path, tmp_path: Path
) -> None:
    overrides = ["data.name=thucnews", f"data.path={tiny_corpus}", *LONG, "max_failures=1",
                 "budget.num_samples=2", "budget.max_concurrent=1"]  # fmt: skip
    spec = load_spec(SMOKE, overrides)
    folder = tmp_path / "smoke"
    killed: dict[str, object] = {}
    done = threading.Event()

    def killer() -> None:
        # once the first trial has reported, SIGKILL the one process running it
        while not done.is_set():
            try:
                t = pd.read_parquet(folder / rs.TRIALS_FILE)
                running = t[(t["status"] == "RUNNING") & (t["iterations"].fillna(0) >= 20)]
                workers = _trial_workers()
                if len(running) == 1 and len(workers) == 1:
                    killed["trial"] = running["trial_id"].iloc[0]
                    killed["pid"] = workers[0]
                    os.kill(workers[0], signal.SIGKILL)
                    return
            except (OSError, ValueError, KeyError):
                pass
            time.sleep(0.1)

    thread = threading.Thread(target=killer, daemon=True)
    thread.start()
    try:
        sweep.run(spec, results_root=tmp_path, console=False)
    finally:
        done.set()
        thread.join(timeout=10)
    assert killed, "no trial worker was seen running"
    trials = _exactly_once(folder, 2).set_index("trial_id")
    assert trials.loc[killed["trial"], "iterations"] == 300  # ran again to its end
    assert killed["pid"] not in _trial_workers()


@pytest.mark.ray
@pytest.mark.slow
def test_out_of_memory_is_a_failed_trial_and_the_sweep_goes_on(
    ray_session: object, tiny_corpus: Path, tmp_path: Path
) -> None:
    # an embedding table of 2**40 rows x 16 cannot be allocated: the trial records why
    spec_path = write_spec(
        tmp_path / "oom.yaml",
        name="oom",
        method="grid",
        baseline=False,
        data={"name": "thucnews", "path": str(tiny_corpus)},
        early_terminate={"type": "none"},
        train={"batch_size": 32, "max_steps": 20, "max_epochs": 1, "eval_every": 5, "seed": 0},
        parameters={"embed": {"values": [16, 2**40]}},
        budget={"num_samples": 2, "max_concurrent": 2},
    )
    out = sweep.run(load_spec(spec_path), results_root=tmp_path / "results", console=False)
    trials, _, _ = _tables(out.folder)
    by_embed = trials.set_index("param.embed")
    assert by_embed.loc[16, "status"] == "COMPLETED"
    assert by_embed.loc[2**40, "status"] == "FAILED"
    assert "memory" in by_embed.loc[2**40, "error"].lower()
    st = {t.params["embed"]: t.state.name for t in study(out.folder, "oom").trials}
    assert st == {16: "COMPLETE", 2**40: "FAIL"}


@pytest.mark.subprocess
@pytest.mark.ray
@pytest.mark.slow
def test_storage_uri_holds_tune_state_and_resume_works(tiny_corpus: Path, tmp_path: Path) -> None:
    # --storage file:///... (any pyarrow filesystem URI): Tune's experiment state goes there,
    # the tables stay in results/<name>/; a Ctrl-C'd sweep resumes from both.
    store = tmp_path / "tune_store"
    folder = tmp_path / "smoke"
    args = [*_cli_args(tiny_corpus, tmp_path, *LONG, "budget.num_samples=2"),
            "--storage", store.as_uri()]  # fmt: skip
    proc = _start(args)
    try:
        _first_running(proc, folder)
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            _kill_driver_and_its_ray(proc)
    assert proc.returncode == 130, out
    assert (store / "smoke").is_dir() and any((store / "smoke").glob("experiment_state*"))
    assert not (folder / "ray").exists()

    _resumed(args)
    _exactly_once(folder, 2)


@contextlib.contextmanager
def _tmpfs(where: Path, size: str) -> Iterator[Path]:
    """A small RAM disk of its own (root only), so a test can fill it."""
    where.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0 or subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
        capture_output=True, check=False,
    ).returncode:  # fmt: skip
        pytest.skip("needs root to mount a small tmpfs")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def _fill(folder: Path) -> None:
    """Write until the disk is full (other users' files, say)."""
    with open(folder / "filler", "wb") as f:
        try:
            while True:
                f.write(b"\0" * (1 << 20))
                f.flush()
        except OSError:
            pass


# --------------------------------------------------------------------- fused groups


@pytest.mark.subprocess
@pytest.mark.ray
@pytest.mark.slow
def test_a_disk_that_fills_mid_sweep_stops_with_one_line_and_resumes(
    tiny_corpus: Path, tmp_path: Path
) -> None:
    # results on a 50 MB tmpfs that something else fills once the first trial has reported:
    # the sweep stops (exit 1) with one line naming the path and the cause, what it kept and
    # how to go on; nothing already in the tables is lost; after making room, --resume ends
    # with every trial once and none RUNNING.
    with _tmpfs(tmp_path / "disk", "50m") as disk:
        folder = disk / "smoke"
        args = _cli_args(tiny_corpus, disk, *LONG, "budget.num_samples=6")
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        env.pop("RAY_ADDRESS", None)
        proc = subprocess.Popen([sys.executable, "-m", "harness.sweep", *args], env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                start_new_session=True)  # fmt: skip
        try:
            t0 = time.monotonic()
            while not (folder / rs.METRICS_FILE).exists() and time.monotonic() - t0 < 120:
                time.sleep(0.1)
            before = {n: pd.read_parquet(folder / n) for n in (rs.TRIALS_FILE, rs.METRICS_FILE)}
            _fill(disk)
            out, err = proc.communicate(timeout=180)
        finally:
            if proc.poll() is None:
                _kill_driver_and_its_ray(proc)
        print(f"disk full mid-sweep: exit {proc.returncode}; stderr: {err.strip()}")
        assert proc.returncode == 1, (out, err)
        assert err.count("\n") == 1 and err.startswith(f"error: {folder}/"), err
        assert "Traceback" not in err
        assert "cannot write (" in err and ("No space left" in err or "disk is full" in err), err
        assert "Kept in" in err and "--resume" in err
        trials, metrics = (pd.read_parquet(folder / n) for n in before)  # readable, and kept
        assert set(before[rs.TRIALS_FILE]["trial_id"]) <= set(trials["trial_id"])
        keys = ["trial_id", "iteration"]
        old = before[rs.METRICS_FILE][keys].merge(metrics[keys], how="left", indicator=True)
        assert (old["_merge"] == "both").all(), "a report row written before the fault is gone"

        (disk / "filler").unlink()
        _resumed(args)
        _exactly_once(folder, 6)


@pytest.mark.subprocess
@pytest.mark.ray
@pytest.mark.slow
def test_fused_driver_killed_then_resumed_ends_with_exactly_the_budget(
    tiny_corpus: Path, tmp_path: Path
) -> None:
    # Groups of 4 (6 trials: 4 + 2): a SIGKILL at a random moment, then --resume reruns every
    # unfinished member as the same Optuna trial, regrouped by shape and batch order.
    seed = _fault_seed()
    delay = random.Random(seed).uniform(0.0, 5.0)
    print(f"HARNESS_FAULT_SEED={seed}: SIGKILL {delay:.2f} s after the first trial started")
    folder = tmp_path / "smoke"
    args = _cli_args(tiny_corpus, tmp_path, *LONG, "budget.num_samples=6", "resources.fuse=4")
    proc = _start(args)
    try:
        _first_running(proc, folder)
        # a group's members end together (no early termination): kill by the first group's end
        _wait_to_kill(proc, folder, delay, finished=1)
        assert proc.poll() is None, f"seed {seed}: the sweep ended before the kill"
    finally:
        _kill_driver_and_its_ray(proc)

    _resumed(args, f"seed {seed}:\n")
    trials = _exactly_once(folder, 6)
    assert (trials["trial_id"] == trials["group_id"] + "-" + trials["group_member"].astype(str)).all()
    for _, g in trials.groupby("group_id"):  # regrouped members share shape and batch order
        for col in ("param.num_filters", "param.filter_sizes", "param.data_seed"):
            assert g[col].nunique() == 1, (seed, g[["trial_id", col]])
    st = {t.number: t for t in study(folder, "smoke").trials}
    for _, row in trials.iterrows():  # the batch order a member trained with is its own
        assert st[row["trial_number"]].user_attrs["data_seed"] == row["param.data_seed"]


@pytest.mark.ray
@pytest.mark.slow
def test_a_study_that_cannot_be_written_halts_a_fused_sweep(
    ray_session: object, tiny_corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Study.tell fails after two tells (a full disk under optuna.db): the fused sweep stops
    # as an unfused one does, with the fault as its one line, and tells Optuna nothing more
    import optuna

    real, tells = optuna.Study.tell, []

    def tell(self, *args, **kw):
        tells.append(1)
        if len(tells) > 2:
            raise optuna.exceptions.StorageInternalError("database or disk is full")
        return real(self, *args, **kw)

    monkeypatch.setattr(optuna.Study, "tell", tell)
    sets = [f"data.path={tiny_corpus}", "data.name=thucnews", "budget.num_samples=6",
            "resources.fuse=2", "early_terminate={type: none}"]  # fmt: skip
    out = sweep.run(load_spec(SMOKE, sets), results_root=tmp_path, console=False)
    monkeypatch.setattr(optuna.Study, "tell", real)
    assert out.fault and "cannot write (database or disk is full)" in out.fault, out.fault
    states = [t.state.name for t in study(tmp_path / "smoke", "smoke").trials]
    assert states.count("COMPLETE") == 2 and "RUNNING" in states, states


# The driver as the command runs it, killed (SIGKILL) the moment a result that ends a
# group's member reaches the callback, before the callback writes it.
_KILLED_AT_A_MEMBER_END = """
import os, signal, sys
from harness.sweep import main
from harness.sweep.callback import SweepCallback
from harness.sweep.keys import FINAL, GROUP
hook = SweepCallback.on_trial_result
def killing(self, iteration, trials, trial, result, **info):
    if any(e.get(FINAL) for e in result.get(GROUP) or ()):
        os.kill(os.getpid(), signal.SIGKILL)
    return hook(self, iteration, trials, trial, result, **info)
SweepCallback.on_trial_result = killing
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.subprocess
@pytest.mark.ray
@pytest.mark.slow
def test_a_driver_killed_as_a_member_ends_loses_nothing_of_it(
    tiny_corpus: Path, tmp_path: Path
) -> None:
    # Tune shows a result to the searcher before the callback writes the tables: the member's
    # end must not reach Optuna first, or --resume finds it COMPLETE in the study with no
    # metric, test scores, report rows or kept model (and another trial reported best).
    folder = tmp_path / "smoke"
    args = _cli_args(tiny_corpus, tmp_path, "budget.num_samples=4", "resources.fuse=2",
                     "early_terminate={type: none}", "keep_best=4")  # fmt: skip
    _killed_by(args, _KILLED_AT_A_MEMBER_END)
    assert all(t.state.name in ("RUNNING", "WAITING") for t in study(folder, "smoke").trials)

    _resumed(args)
    trials = _exactly_once(folder, 4)
    assert trials["metric"].notna().all() and trials["test_acc"].notna().all()
    from harness import bundle

    assert bundle.kept_models(folder) == sorted(trials["trial_id"])


@pytest.mark.subprocess
@pytest.mark.ray
@pytest.mark.slow
def test_a_second_ctrl_c_ends_with_the_resume_hint_and_no_traceback(
    tiny_corpus: Path, tmp_path: Path
) -> None:
    # the first Ctrl-C asks Tune for an orderly stop; a second cuts it short wherever the
    # driver is: still one line saying how to go on, exit 130
    # One full-suite run on a loaded machine once ended with status 1 (the hint printed, no
    # traceback; cause not found): the scenario gets a second try in a fresh folder.
    for attempt in range(2):
        root = tmp_path / f"try{attempt}"
        folder = root / "smoke"
        args = _cli_args(tiny_corpus, root, *LONG, "budget.num_samples=2", "resources.fuse=2")
        proc = _start(args)
        try:
            _first_running(proc, folder)
            proc.send_signal(signal.SIGINT)
            time.sleep(0.3)
            proc.send_signal(signal.SIGINT)
            out, _ = proc.communicate(timeout=120)
        finally:
            _kill_driver_and_its_ray(proc)
        if proc.returncode == 130:
            break
    assert proc.returncode == 130, out
    assert "Traceback" not in out and "KeyboardInterrupt" not in out, out
    assert out.rstrip().splitlines()[-1].endswith("plus --resume"), out


@pytest.mark.subprocess
@pytest.mark.ray
@pytest.mark.slow
def test_sweeps_of_one_name_started_together_run_once(tiny_corpus: Path, tmp_path: Path) -> None:
    # N copies of one command at the same moment (HARNESS_CONCURRENT, default 2): exactly one
    # runs; each other one is a single error line, exit 2, and touches nothing of it.
    n = int(os.environ.get("HARNESS_CONCURRENT", "2"))
    args = _cli_args(tiny_corpus, tmp_path, "early_terminate={type: none}", "budget.num_samples=3")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("RAY_ADDRESS", None)
    command = [sys.executable, "-m", "harness.sweep", *args]
    pipes = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, "text": True}
    procs = [
        subprocess.Popen(command, env=env, start_new_session=True, **pipes) for _ in range(n)
    ]
    try:
        outs = [p.communicate(timeout=300) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                _kill_driver_and_its_ray(p)
    codes = [p.returncode for p in procs]
    print(f"{n} sweeps of one name started together: exit statuses {codes}")
    assert sorted(codes) == [0] + [2] * (n - 1), outs
    for (out, err), code in zip(outs, codes):
        if code == 2:
            print(f"  exit 2: {err.strip()}")
            assert out == "" and err.count("\n") == 1 and "Traceback" not in err, err
            assert "another sweep is using this results folder" in err or "already holds" in err
    folder = tmp_path / "smoke"
    trials = _exactly_once(folder, 3)
    winner = outs[codes.index(0)][0]
    assert f"--replay {folder} --trial" in winner
    assert set(trials["trial_id"]) >= {winner.split("--trial ")[1].split()[0]}


@pytest.mark.ray
@pytest.mark.slow
def test_a_killed_group_worker_reruns_only_its_unfinished_members(
    ray_session: object, tiny_corpus: Path, tmp_path: Path
) -> None:
    # One group of 3: one member diverges at its first report and ends alone; then the
    # group's worker is killed; the retry (max_failures) trains the two unfinished members
    # again from the start, and every member appears once in every table.
    spec_path = write_spec(
        tmp_path / "crash.yaml",
        name="crash",
        method="grid",
        baseline=False,
        data={"name": "thucnews", "path": str(tiny_corpus)},
        train={"embed": 16, "batch_size": 32, "max_steps": 300, "max_epochs": 40,
               "eval_every": 20, "seed": 0},
        early_terminate={"type": "none"},
        parameters={"learning_rate": {"values": [1.0e-3, 1.0e30, 2.0e-3]}},
        budget={"num_samples": 3, "max_concurrent": 1},
        resources={"cpu": 1, "fuse": 3},
        max_failures=1,
    )
    folder = tmp_path / "results" / "crash"
    killed: dict[str, object] = {}
    done = threading.Event()

    def killer() -> None:
        while not done.is_set():
            try:
                t = pd.read_parquet(folder / rs.TRIALS_FILE)
                running = t[(t["status"] == "RUNNING") & (t["iterations"].fillna(0) >= 40)]
                workers = _trial_workers()
                if (t["status"] == "DIVERGED").any() and len(running) == 2 and len(workers) == 1:
                    killed["pid"] = workers[0]
                    os.kill(workers[0], signal.SIGKILL)
                    return
            except (OSError, ValueError, KeyError):
                pass
            time.sleep(0.1)

    thread = threading.Thread(target=killer, daemon=True)
    thread.start()
    try:
        sweep.run(load_spec(spec_path), results_root=tmp_path / "results", console=False)
    finally:
        done.set()
        thread.join(timeout=10)
    assert killed, "no group worker was seen running after a member diverged"
    trials, metrics, layers = _tables(folder)
    assert len(trials) == 3 and trials["trial_id"].is_unique and trials["group_id"].nunique() == 1
    by_lr = trials.set_index("param.learning_rate")
    assert by_lr.loc[1e30, "status"] == "DIVERGED" and by_lr.loc[1e30, "iterations"] == 20
    for lr in (1e-3, 2e-3):
        assert by_lr.loc[lr, "status"] == "COMPLETED" and by_lr.loc[lr, "iterations"] == 300
    assert not metrics.duplicated(["trial_id", "iteration"]).any()
    assert not layers.duplicated(["trial_id", "iteration", "layer"]).any()
    reports = metrics.groupby("trial_id").size()
    assert [reports[by_lr.loc[lr, "trial_id"]] for lr in (1e-3, 2e-3, 1e30)] == [15, 15, 1]
    states = sorted(t.state.name for t in study(folder, "crash").trials)
    assert states == ["COMPLETE", "COMPLETE", "FAIL"]
