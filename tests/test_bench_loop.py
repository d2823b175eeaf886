"""`python -m harness.bench loop` smoke test on the tiny corpus, and the dispatcher's errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness.bench.__main__ import main

REPO = Path(__file__).resolve().parents[1]


def test_loop_smoke(tiny_corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "bench.json"
    code = main(["loop", "--data", f"thucnews:{tiny_corpus}", "--set", "embed=16", "--set", "num_filters=8",
                 "--set", "batch_size=32", "--batches", "2", "--repeats", "2", "--sgemm-size", "64",
                 "--classic", "--device", "cpu", "--json", str(out)])
    assert code == 0
    text = capsys.readouterr().out
    for needle in ("machine:", "SGEMM 64x64 fp32", "train, grad stats every 10", "classic loop, eval",
                   "gradient statistics (every 10 steps) cost", "speed-up over the classic loop"):
        assert needle in text
    res = json.loads(out.read_text())
    assert res["model"] == "TextCNN" and res["machine"]["torch_threads"] >= 1
    for clock in ("wall", "cpu"):
        fig = res[clock]
        assert fig["sgemm"] > 0 and fig["train"] > 0 and fig["eval"] > 0 and fig["train_stats"] > 0
        assert len(fig["grad_stats_overheads"]) == 2 and fig["train_per_gflops"] > 0
        assert 0 < fig["grad_stats_cost"] < 1
    assert len(res["rounds"]["train"]) == 2


@pytest.mark.subprocess
def test_dispatcher_errors() -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-m", "harness.bench", "lop"], check=False, cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stderr.startswith("error: unknown benchmark 'lop'")
    assert "did you mean 'loop'" in proc.stderr and "Traceback" not in proc.stderr
    with pytest.raises(SystemExit) as exc:
        main(["loop", "--batches", "0"])
    assert exc.value.code == 2


def test_classic_only_for_textcnn(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit):
        main(["loop", "--model", "FastText", "--classic"])
    assert "classic reference loop exists for TextCNN only" in capsys.readouterr().err
