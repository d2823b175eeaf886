"""harness.sweep as a whole (run(), the command): the CLI's errors, and real sweeps.

The parts have their own files (test_sweep_search.py, test_sweep_console.py,
test_sweep_ray_session.py, test_sweep_pins.py); tests marked `ray` share one local Ray
session (tests/conftest.py) and run real, tiny sweeps end to end. Their shared helpers
(write_spec, study, _tables) are in tests/helpers.py.
"""

from __future__ import annotations

import io
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pandas as pd
import pytest
import yaml
from helpers import ROOT, SMOKE, _tables, study, write_spec

from harness import parts, sweep, tracker
from harness import results as rs
from harness.config import as_spec, load_spec
from harness.errors import UserError
from harness.lock import LOCK_FILE, FolderLock
from harness.schema import LAYER_KEYS, METRIC_KEYS, STATUSES, TRIAL_KEYS

optuna.logging.set_verbosity(optuna.logging.WARNING)


# --------------------------------------------------------------------- the package (no Ray)


@pytest.mark.subprocess
def test_ray_starts_with_the_sweeps_environment() -> None:
    """Whichever module of the package is imported first, Ray is imported after the
    environment it reads at import time is set (harness/sweep/__init__.py)."""
    spy = (
        "import os, sys\n"
        "class Spy:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'ray':\n"
        "            print('ray', os.environ.get('TUNE_DISABLE_AUTO_CALLBACK_LOGGERS'),\n"
        "                  os.environ.get('RAY_CHDIR_TO_TRIAL_DIR'), flush=True)\n"
        "sys.meta_path.insert(0, Spy())\n"
        "import harness.sweep.trial\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TUNE_", "RAY_"))}
    env["PYTHONPATH"] = str(ROOT)
    proc = subprocess.run(
        [sys.executable, "-c", spy],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[0] == "ray 1 0", proc.stdout


# --------------------------------------------------------------------- CLI errors (no Ray)


def _ray_session_marker() -> str | None:
    latest = Path("/tmp/ray/session_latest")
    return os.readlink(latest) if latest.is_symlink() else None


def _run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "harness.sweep", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


BAD_SPECS = [
    ("name: x\nmodel: TextCNN\nparamters: {}\n", "did you mean 'parameters'"),
    ("model: TextCNN\nparameters:\n  dropout: {distribution: uniform, min: 0.6, max: 0.1}\n",
     "parameters.dropout"),
    ("model: NoSuchNet\n", "NoSuchNet"),
    ("model: TextCNN\nparameters: [\n", "invalid YAML"),
    ("", "empty"),
    (("model: TextCNN\ndata: {name: thucnews, path: /no/such/dir}\n"
     "parameters: {dropout: {values: [0.1, 0.5]}}\n"), "/no/such/dir"),
]  # fmt: skip


@pytest.mark.subprocess
def test_bad_spec_exits_2_before_ray_starts(tmp_path: Path) -> None:
    """The real command: exit status 2, one error line, no traceback, no Ray, no files."""
    spec = tmp_path / "bad.yaml"
    spec.write_text(BAD_SPECS[0][0])
    before = _ray_session_marker()
    t0 = time.monotonic()
    proc = _run_cli(str(spec), "--results", str(tmp_path / "results"), cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("error: ") and BAD_SPECS[0][1] in proc.stderr
    assert "Traceback" not in proc.stderr and proc.stdout == ""
    assert not (tmp_path / "results").exists()  # nothing written, Ray never started
    assert _ray_session_marker() == before
    assert time.monotonic() - t0 < 60


@pytest.mark.parametrize(("text", "message"), BAD_SPECS)
def test_every_bad_spec_is_one_clear_error(tmp_path: Path, capsys, text: str, message: str) -> None:
    spec = tmp_path / "bad.yaml"
    spec.write_text(text)
    with pytest.raises(SystemExit) as exc:
        sweep.main([str(spec), "--results", str(tmp_path / "results")])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and "Traceback" not in err
    assert not (tmp_path / "results").exists()


def test_existing_results_need_resume_or_overwrite(tmp_path: Path) -> None:
    (tmp_path / "results" / "smoke").mkdir(parents=True)
    (tmp_path / "results" / "smoke" / rs.SWEEP_FILE).write_text("{}")
    spec = load_spec(SMOKE)
    with pytest.raises(UserError, match="already holds a sweep"):
        sweep.run(spec, results_root=tmp_path / "results", console=False)
    with pytest.raises(UserError, match="nothing to resume"):
        sweep.run(spec, results_root=tmp_path / "fresh", resume=True, console=False)


def test_a_folder_a_live_sweep_holds_is_refused(tmp_path: Path, capsys) -> None:
    # Another sweep holds results/smoke/ (its lock): a new sweep, --resume and --overwrite
    # each stop with one line and exit 2, and touch nothing.
    folder = tmp_path / "results" / "smoke"
    held = FolderLock.claim(folder)
    (folder / rs.SWEEP_FILE).write_text("{}")
    try:
        for extra in ([], ["--resume"], ["--overwrite"]):
            with pytest.raises(SystemExit) as exc:
                sweep.main([str(SMOKE), "--results", str(tmp_path / "results"), *extra])
            assert exc.value.code == 2
            err = capsys.readouterr().err
            assert err.startswith("error: ") and err.count("\n") == 1, err
            assert "another sweep is using this results folder" in err and str(folder) in err
        assert sorted(p.name for p in folder.iterdir()) == [LOCK_FILE, rs.SWEEP_FILE]
    finally:
        held.release()


@pytest.mark.parametrize("where", ["proc", "under_a_file", "read_only"])
def test_an_unusable_results_folder_is_one_error(
    tmp_path: Path, capsys, where: str, request: pytest.FixtureRequest
) -> None:
    results = {
        "proc": lambda: Path("/proc/foo"),
        "under_a_file": lambda: (tmp_path / "file").write_text("x") and tmp_path / "file",
        "read_only": lambda: request.getfixturevalue("readonly_dir"),
    }[where]()
    with pytest.raises(SystemExit) as exc:
        sweep.main([str(SMOKE), "--results", str(results)])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith(f"error: {results / 'smoke'}: cannot ") and "results folder (" in err


@pytest.mark.parametrize("damaged", [rs.TRIALS_FILE, rs.OPTUNA_FILE])
def test_resume_on_a_damaged_record_is_one_error(tmp_path: Path, capsys, damaged: str) -> None:
    folder = tmp_path / "smoke"
    folder.mkdir()
    (folder / rs.SWEEP_FILE).write_text(json.dumps({"spec": load_spec(SMOKE).to_dict()}))
    writer = rs.ResultsWriter(folder)
    writer.set_trial("a", trial_number=0, status="RUNNING")
    writer.flush(force=True)
    optuna.create_study(study_name="smoke", storage=sweep.optuna_storage_url(folder))
    file = folder / damaged
    file = file / parts.PART.format(0) if file.is_dir() else file  # a table: a folder of parts
    data = file.read_bytes()
    file.write_bytes(data[: len(data) // 2])  # truncated by something else
    with pytest.raises(SystemExit) as exc:
        sweep.main([str(SMOKE), "--results", str(tmp_path), "--resume"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    if damaged == rs.TRIALS_FILE:
        assert err.startswith(f"error: {folder / rs.TRIALS_FILE}: not a readable Parquet file (")
        assert "--overwrite" in err
    else:
        assert err.startswith(f"error: {folder}: cannot use (")


def test_warnings_come_before_ray_starts(tiny_corpus: Path, tmp_path: Path, capsys) -> None:
    # batch_size 512 on 256 training texts: one step per epoch, so one report, so ASHA's
    # grace period of 1 report can stop nothing. Both are said before Ray would start (here
    # a resume of a different spec then stops the command, with no Ray at all).
    folder = tmp_path / "smoke"
    folder.mkdir()
    (folder / rs.SWEEP_FILE).write_text(json.dumps({"spec": {"name": "smoke"}}))
    sets = ["data.name=thucnews", f"data.path={tiny_corpus}", "train.batch_size=512"]
    with pytest.raises(SystemExit):
        sweep.main([str(SMOKE), "--results", str(tmp_path), "--resume",
                    *(x for o in sets for x in ("--set", o))])  # fmt: skip
    out, err = capsys.readouterr()
    grace = (
        "warning: early_terminate.grace_period 1 >= the 1 report(s) the longest trial makes: "
        "asha can stop no trial early (lower grace_period, or report more often with a smaller "
        "eval_every)"
    )
    batch = (
        "warning: batch_size 512 is larger than the training split (256 texts): one step per "
        "epoch"
    )
    header = out.splitlines()[0]  # what the sweep is comes first, as soon as the data is read
    assert header.startswith("sweep smoke: 4 trials of TextCNN on thucnews (256 train)")
    assert out.splitlines()[1:] == [grace, batch]
    assert "the spec differs" in err


# --------------------------------------------------------------------- real sweeps (Ray)


@pytest.mark.ray
@pytest.mark.slow
def test_smoke_sweep_end_to_end(
    ray_session: object, tiny_corpus: Path, tmp_path: Path, capsys
) -> None:
    # smoke.yaml (4 trials, 2 at a time) on a corpus learnable in a few steps, with a
    # learning rate that cannot learn next to the classic one, so ASHA has something to stop.
    overrides = [
        "data.name=thucnews",
        f"data.path={tiny_corpus}",
        "train.max_epochs=3",
        "parameters.learning_rate={values: [1.0e-3, 1.0e-9]}",
    ]
    args = [str(SMOKE), *(x for o in overrides for x in ("--set", o)), "--results", str(tmp_path)]
    assert sweep.main(args) == 0
    folder = tmp_path / "smoke"
    trials, metrics, layers = _tables(folder)
    spec = load_spec(SMOKE, overrides)

    # trials.parquet: one row per trial, the schema's columns plus one per parameter
    assert len(trials) == 4
    assert list(trials.columns) == [*TRIAL_KEYS, *(f"param.{n}" for n in spec.parameters)]
    assert set(trials["status"]) <= set(STATUSES) and "COMPLETED" in set(trials["status"])
    assert trials["trial_number"].tolist() == [0, 1, 2, 3]
    base = trials.iloc[0]
    assert rs.trial_params(rs.load(folder), base["trial_id"]) == spec.baseline_params()
    assert set(trials["node_ip"]) == {"127.0.0.1"} and trials["node_id"].notna().all()
    assert (trials["end_time"] >= trials["start_time"]).all()
    done = trials[trials["status"] == "COMPLETED"]
    assert done["test_acc"].between(0, 1).all() and done["metric"].notna().all()

    # metrics / grad_layers: one row per report (and layer), keyed by trial and iteration
    assert list(metrics.columns) == ["trial_id", *METRIC_KEYS]
    assert not metrics.duplicated(["trial_id", "iteration"]).any()
    per_trial = metrics.groupby("trial_id")["iteration"].max()
    assert (per_trial.reindex(trials["trial_id"]).values == trials["iterations"].values).all()
    assert list(layers.columns) == ["trial_id", "iteration", *LAYER_KEYS]
    assert len(layers) >= len(metrics)

    # the Optuna study tells the same story: PRUNED where ASHA stopped, with the curve
    # (Optuna's step is the report index, as the scheduler's training_iteration)
    st = study(folder, "smoke")
    by_id = {t.user_attrs["ray_trial_id"]: t for t in st.trials}
    assert len(st.trials) == 4 and st.trials[0].user_attrs["ray_trial_id"] == base["trial_id"]
    state = {"COMPLETED": "COMPLETE", "PRUNED": "PRUNED", "FAILED": "FAIL", "DIVERGED": "FAIL"}
    for row in trials.itertuples():
        t = by_id[row.trial_id]
        assert t.state.name == state[row.status]
        curve = metrics[metrics["trial_id"] == row.trial_id].set_index("report")
        assert t.intermediate_values == pytest.approx(curve["best_dev_acc"].to_dict())
    assert "PRUNED" in set(trials["status"]), "ASHA stopped nothing: the check above was empty"
    pruned = trials[trials["status"] == "PRUNED"]
    assert (pruned["iterations"] < 20).all() and pruned["test_acc"].isna().all()

    info = json.loads((folder / rs.SWEEP_FILE).read_text())
    assert info["spec"]["name"] == "smoke" and "ray" in info["versions"]
    assert info["command"][:3] == [sys.executable, "-m", "harness.sweep"]
    trial_dirs = [p.name for p in (folder / "ray").iterdir() if p.is_dir()]
    assert sorted(trial_dirs) == sorted(trials["trial_id"])  # short names, config in tables

    # any trial reruns alone, outside Ray, with the same config and seed: same numbers
    from harness.data import load_dataset
    from harness.trainer import train

    row = done.iloc[0]
    cfg, data_spec = rs.trial_config_for(folder, row["trial_id"])
    again = train(cfg, load_dataset(data_spec), device="cpu", threads=1)
    assert again.best_dev_acc == pytest.approx(row["best_dev_acc"], abs=1e-9)
    assert again.best_iteration == row["best_iteration"]

    out = capsys.readouterr().out
    assert out.count("[") >= 4 and "best config" in out and str(folder) in out
    assert "Token authentication" not in out
    # Ray's end-of-fit analysis finds each trial's (empty) result.json: no false alarm
    assert "Failed to fetch metrics" not in (folder / rs.LOG_FILE).read_text()


def test_one_override_string_is_one_override(tmp_path: Path) -> None:
    """sweep.run(..., overrides="a=b") is the one override "a=b", not 3 of one character."""
    assert as_spec(SMOKE, "budget.num_samples=2").budget.num_samples == 2
    with pytest.raises(UserError) as exc:
        sweep.run(SMOKE, overrides="budget.num_sample=2", results_root=tmp_path, console=False)
    assert len(str(exc.value).splitlines()) == 1 and "num_sample" in str(exc.value)
    assert not list(tmp_path.iterdir())


def test_the_api_checks_a_dict_like_a_file(tmp_path: Path) -> None:
    raw = {"model": "TextCNN", "paramters": {}}
    with pytest.raises(UserError) as exc:
        sweep.run(raw, results_root=tmp_path, console=False)
    assert str(exc.value).startswith("<dict>: paramters: unknown key (did you mean 'parameters'?)")
    assert raw == {"model": "TextCNN", "paramters": {}} and not list(tmp_path.iterdir())


@pytest.mark.subprocess
@pytest.mark.skipif(tracker.have_mlflow(), reason="checks the error without mlflow installed")
def test_mlflow_missing_exits_2_before_ray_starts(tmp_path: Path) -> None:
    spec = write_spec(tmp_path / "ml.yaml", mlflow={"tracking_uri": "http://127.0.0.1:5000"})
    before = _ray_session_marker()
    proc = _run_cli(str(spec), "--results", str(tmp_path / "results"), cwd=tmp_path)
    assert proc.returncode == 2 and proc.stdout == "" and "Traceback" not in proc.stderr
    assert proc.stderr == (
        f"error: {spec}: mlflow: needs the mlflow package, which is not installed "
        "(pip install mlflow; or remove the mlflow key)\n"
    )
    assert not (tmp_path / "results").exists() and _ray_session_marker() == before


@pytest.mark.ray
@pytest.mark.slow
def test_a_sweep_from_python_shows_progress_and_writes_tensorboard(
    ray_session: object, tiny_corpus: Path, tmp_path: Path
) -> None:
    """The API with a dict; the console, piped, says how the trials go every `every_s`
    seconds while they run and names each trial '<id> (#n)'; every trial's reports are in
    its TensorBoard event files (read back with TensorBoard's reader)."""
    from helpers import scalars_of

    raw = yaml.safe_load(SMOKE.read_text())
    raw.update(name="api", data={"name": "thucnews", "path": str(tiny_corpus)})
    overrides = ["budget.num_samples=3", "train.max_steps=40"]
    piped = io.StringIO()
    console = sweep.Console(as_spec(raw, overrides), out=piped, every_s=0.5)
    out = sweep.run(raw, overrides=overrides, results_root=tmp_path, console=console)
    assert out.folder == (tmp_path / "api").resolve() and len(out.rows) == 3
    trials, metrics, _ = _tables(out.folder)

    text = piped.getvalue()
    progress = [line for line in text.splitlines() if line.startswith("progress: ")]
    assert progress and all(" running, " in line and "elapsed" in line for line in progress)
    names = {rs.trial_name(r) for _, r in trials.iterrows()}
    assert any(n in line for line in progress for n in names)
    for r in trials.itertuples():
        assert f"  {r.trial_id} (#{r.trial_number})  {r.status}" in text
    assert "\x1b" not in text and f"tensorboard --logdir {out.folder / 'tb'}" in text

    assert sorted(p.name for p in (out.folder / "tb").iterdir()) == sorted(trials["trial_id"])
    for tid, rows in metrics.groupby("trial_id"):
        events = scalars_of(out.folder / "tb" / tid)
        for key, tag in (("dev_loss", "loss/dev"), ("dev_acc", "acc/dev"), ("lr", "lr"),
                         ("grad_norm", "grad/norm"), ("grad_clip_frac", "grad/clip_frac")):
            want = {i: v for i, v in zip(rows["iteration"], rows[key]) if math.isfinite(v)}
            assert want and events[tag] == pytest.approx(want, rel=1e-6)  # NaN: no point
        assert any(t.startswith("layer_grad_norm/") for t in events)


@pytest.mark.ray
@pytest.mark.slow
def test_a_trial_that_runs_its_budget_is_never_pruned(
    ray_session: object, tiny_corpus: Path, tmp_path: Path
) -> None:
    # An explicit max_t of 3 reports (15 of smoke's 20 batches) is each trial's budget: a
    # trial that reaches it ends COMPLETED and tested. ASHA (rungs at reports 1 and 2) still
    # stops trials before it, and never one at its last report (the loop marks it last).
    overrides = [
        "data.name=thucnews",
        f"data.path={tiny_corpus}",
        "train.max_epochs=3",
        "parameters.learning_rate={values: [1.0e-3, 1.0e-9]}",
        "early_terminate={type: asha, grace_period: 1, reduction_factor: 2, max_t: 3}",
        "budget.num_samples=6",
    ]
    out = sweep.run(load_spec(SMOKE, overrides), results_root=tmp_path, console=False)
    trials, metrics, _ = _tables(out.folder)
    assert len(trials) == 6 and set(trials["status"]) <= {"COMPLETED", "PRUNED"}
    reports = metrics.groupby("trial_id")["report"].max().reindex(trials["trial_id"]).values
    done = trials["status"].values == "COMPLETED"
    assert (reports[done] == 3).all() and (reports[~done] < 3).all()
    assert (trials.loc[done, "iterations"] == 15).all() and trials.loc[done, "test_acc"].notna().all()
    assert trials.iloc[0]["status"] == "COMPLETED"  # the baseline ran its budget
    st = {t.user_attrs["ray_trial_id"]: t for t in study(out.folder, "smoke").trials}
    for row in trials.itertuples():
        t = st[row.trial_id]
        assert t.state.name == ("COMPLETE" if row.status == "COMPLETED" else "PRUNED")
        curve = metrics[metrics["trial_id"] == row.trial_id].set_index("report")
        assert t.intermediate_values == pytest.approx(curve["best_dev_acc"].to_dict())


class _CtrlCWhileWaiting(sweep.Console):
    """A console that says "waiting" every second and presses Ctrl-C at the second time."""

    def __init__(self, spec: object) -> None:
        super().__init__(spec)
        self.wait_every, self.said = 1.0, 0

    def waiting(self, pending: int, seconds: float) -> None:
        super().waiting(pending, seconds)
        self.said += 1
        if self.said == 2:
            os.kill(os.getpid(), signal.SIGINT)  # Tune's handler ends the run, resumable


@pytest.mark.ray
@pytest.mark.slow
def test_ctrl_c_while_trials_wait_for_resources_is_an_interrupt(
    ray_session: object, tiny_corpus: Path, tmp_path: Path, capsys
) -> None:
    # A joined cluster (address given) with no node that can hold a trial (4 cpu each, the
    # session has 2): the console says so at the start, repeats a waiting line, and Ctrl-C
    # leaves a sweep to --resume (exit 130), not a finished one of "0 trials".
    spec = load_spec(SMOKE, ["data.name=thucnews", f"data.path={tiny_corpus}", "resources.cpu=4"])
    out = sweep.run(spec, results_root=tmp_path, address="auto", console=_CtrlCWhileWaiting(spec))
    text = capsys.readouterr().out
    assert out.interrupted and out.rows == []
    assert "trials wait until the cluster grows" in text
    assert text.count("pending, none running; each needs cpu 4 gpu 0") == 2
    assert "continue with the same command plus --resume" in text
    st = study(tmp_path / "smoke", "smoke")
    assert st.trials and {t.state.name for t in st.trials} == {"RUNNING"}  # --resume reruns


@pytest.mark.ray
@pytest.mark.slow
def test_failed_and_diverged_trials_are_data(ray_session: object, tmp_path: Path) -> None:
    # A grid over a learning rate that blows up and an embedding file that does not exist:
    # one trial completes, one diverges, two fail, and the sweep finishes.
    spec_path = write_spec(
        tmp_path / "faults.yaml",
        name="faults",
        method="grid",
        baseline=False,
        early_terminate={"type": "none"},
        parameters={
            "learning_rate": {"values": [1.0e-3, 1.0e30]},
            "embedding_path": {"values": [None, str(tmp_path / "missing.npz")]},
        },
        budget={"num_samples": 4, "max_concurrent": 2},
    )
    out = sweep.run(load_spec(spec_path), results_root=tmp_path / "results", console=False)
    trials, _, _ = _tables(out.folder)
    status = {
        (r["param.learning_rate"], pd.notna(r["param.embedding_path"])): r["status"]
        for _, r in trials.iterrows()
    }
    assert status == {
        (1e-3, False): "COMPLETED",
        (1e30, False): "DIVERGED",
        (1e-3, True): "FAILED",
        (1e30, True): "FAILED",
    }
    errors = trials.set_index("status")["error"]
    assert "non-finite" in errors["DIVERGED"]
    assert all("missing.npz" in e for e in trials[trials["status"] == "FAILED"]["error"])
    assert trials.loc[trials["status"] == "DIVERGED", "iterations"].item() >= 1
    states = {
        t.user_attrs["ray_trial_id"]: t.state.name for t in study(out.folder, "faults").trials
    }
    for row in trials.itertuples():
        assert states[row.trial_id] == ("COMPLETE" if row.status == "COMPLETED" else "FAIL")


@pytest.mark.ray
@pytest.mark.slow
def test_fractional_gpus_pack_four_trials_on_one_gpu(ray_session: object, tmp_path: Path) -> None:
    # The session has one logical GPU: four trials asking for a quarter each run at once,
    # each handed GPU 0 by Ray; without CUDA they train on the CPU and say so in their row.
    import torch

    spec_path = write_spec(
        tmp_path / "gpu.yaml",
        name="gpu",
        baseline=False,
        early_terminate={"type": "none"},
        # long enough (a few seconds) that the last of four worker processes is up before
        # the first trial ends, even on a busy machine
        train={"embed": 64, "batch_size": 64, "max_steps": 200, "max_epochs": 1,
               "eval_every": 100, "eval_batch_size": 512, "seed": 0},
        budget={"num_samples": 4, "max_concurrent": 4},
        resources={"cpu": 0.5, "gpu": 0.25},
    )  # fmt: skip
    out = sweep.run(load_spec(spec_path), results_root=tmp_path / "results", console=False)
    trials, _, _ = _tables(out.folder)
    assert len(trials) == 4 and set(trials["status"]) == {"COMPLETED"}
    assert trials["start_time"].max() < trials["end_time"].min(), "not all four ran at once"
    if torch.cuda.is_available():
        assert set(trials["device"]) == {"cuda:0"}
    else:
        assert set(trials["device"]) == {"cpu"}
        assert all("Ray assigned GPU 0" in e and "CPU" in e for e in trials["error"])


@pytest.mark.subprocess
@pytest.mark.ray
@pytest.mark.slow
def test_interrupted_and_killed_sweeps_resume_to_exactly_the_budget(
    tiny_corpus: Path, tmp_path: Path
) -> None:
    # Ctrl-C (SIGINT) leaves a resumable sweep; a SIGKILL of the driver mid-way too; the same
    # command plus --resume then finishes: every trial once, no duplicated report rows, and
    # the Optuna study ends with exactly num_samples trials.
    import signal

    folder = tmp_path / "smoke"
    args = [str(SMOKE), "--results", str(tmp_path)]
    for o in ("data.name=thucnews", f"data.path={tiny_corpus}", "train.max_epochs=40",
              "train.max_steps=300", "train.eval_every=20", "early_terminate={type: none}",
              "budget.num_samples=5"):  # fmt: skip
        args += ["--set", o]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}

    def start(*extra: str) -> subprocess.Popen:
        return subprocess.Popen(
            [sys.executable, "-m", "harness.sweep", *args, *extra],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )

    def wait_for_rows(proc: subprocess.Popen, done: int, timeout: float = 120) -> None:
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout and proc.poll() is None:
            try:
                t = pd.read_parquet(folder / rs.TRIALS_FILE)
                m = pd.read_parquet(folder / rs.METRICS_FILE, columns=["trial_id"])
                running = t.loc[t["status"] == "RUNNING", "trial_id"]
                # a trial with most of its run ahead (at most 9 of its 15 reports, seconds left):
                # one seen RUNNING just as it finishes may end before the signal. (At most 3 once
                # missed every such trial between two polls on a loaded CI machine.)
                fresh = [i for i in running if (m["trial_id"] == i).sum() <= 9]
                if (t["status"] == "COMPLETED").sum() >= done and fresh:
                    return
            except (OSError, ValueError, KeyError):
                pass
            time.sleep(0.1)
        raise AssertionError(f"never saw {done} finished trials and one just started")

    proc = start()
    wait_for_rows(proc, 1)
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130, out
    assert "--resume" in out
    assert "RUNNING" in set(pd.read_parquet(folder / rs.TRIALS_FILE)["status"])

    proc = start("--resume")
    wait_for_rows(proc, 2)
    proc.kill()  # SIGKILL: no goodbye at all
    proc.communicate(timeout=60)

    proc = start("--resume")
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out
    trials, metrics, layers = _tables(folder)
    assert len(trials) == 5 and trials["trial_id"].is_unique
    assert set(trials["status"]) == {"COMPLETED"} and trials["trial_number"].tolist() == [
        0,
        1,
        2,
        3,
        4,
    ]
    assert not metrics.duplicated(["trial_id", "iteration"]).any()
    assert set(metrics["trial_id"]) == set(trials["trial_id"])
    assert not layers.duplicated(["trial_id", "iteration", "layer"]).any()
    # TensorBoard: the interrupted trials' partial curves went with their rows
    assert {p.name for p in (folder / "tb").iterdir()} == set(trials["trial_id"])
    st = study(folder, "smoke")
    assert len(st.trials) == 5 and all(t.state.name == "COMPLETE" for t in st.trials)
    assert {t.user_attrs["ray_trial_id"] for t in st.trials} == set(trials["trial_id"])
    params = trials[[c for c in trials.columns if c.startswith("param.")]].astype(str)
    assert not params.duplicated().any(), "a resumed sampler repeated the first run's draws"
