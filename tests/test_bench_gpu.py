"""`python -m harness.bench gpu`: on the CPU its checks run through the graph's code path
uncaptured (the GPU figures are SKIP); without CUDA the default command is one line, exit 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from harness.bench import gpu
from harness.bench.__main__ import main


@pytest.mark.slow
def test_the_checks_pass_on_the_cpu_code_path(tiny_corpus: Path, capsys, tmp_path: Path) -> None:
    out = tmp_path / "gpu.json"
    code = gpu.main(["--device", "cpu", "--data", f"thucnews:{tiny_corpus}", "--json", str(out),
                     "--only", "dropout,schedule,stats,prune,fallback,memory"])  # fmt: skip
    text = capsys.readouterr().out
    last = json.loads(text.strip().splitlines()[-1])
    assert code == 0, text
    assert last == json.loads(out.read_text())
    assert last["fail"] == 0 and last["pass"] >= 7 and last["skip"] == 1
    names = [c["name"] for c in last["checks"]]
    assert "fallback: failed capture runs eagerly" in names
    assert all(line.split()[0] in ("PASS", "SKIP", "(dropout:", "bench") or line.startswith(("  ", "{", "7", "8"))
               for line in text.splitlines() if line.strip())  # fmt: skip


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA message")
def test_without_cuda_it_says_so_in_one_line(capsys) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["gpu"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: bench gpu: CUDA is not available")


def test_an_unknown_check_is_one_line(capsys) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["gpu", "--device", "cpu", "--only", "capture,nope"])
    assert exit_.value.code == 2
    assert "unknown check nope" in capsys.readouterr().err
