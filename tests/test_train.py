"""`python -m harness.train`: result files, console output, and one-line user errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from harness import schema, trainer
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


def test_bad_set_is_one_line_exit_2(tiny_corpus: Path, tmp_path: Path) -> None:
    proc = _cli("--data", f"thucnews:{tiny_corpus}", "--set", "learning_rat=0.1", "--out", str(tmp_path))
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("error: learning_rat")
    assert "did you mean 'learning_rate'" in proc.stderr and "Traceback" not in proc.stderr
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize(
    ("sets", "message"),
    [
        (["oops"], "expected NAME=VALUE"),
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
    from test_trainer import Bag

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
