"""harness.bench scale: a real (tiny) sweep per size, in its own process, and its figures."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.bench import scale
from harness.errors import UserError


def test_bad_arguments_are_user_errors() -> None:
    for bad in ("0", "10,x", ""):
        with pytest.raises(UserError, match="--trials"):
            scale.main(["--trials", bad])
    with pytest.raises(UserError, match="--concurrency"):
        scale.main(["--trials", "2", "--concurrency", "0"])


def test_the_corpus_has_two_learnable_classes(tmp_path: Path) -> None:
    root = scale.write_corpus(tmp_path / "c", sizes=(8, 4, 4))
    lines = (root / "train.txt").read_text(encoding="utf-8").splitlines()
    assert len(lines) == 8 and {ln.split("\t")[1] for ln in lines} == {"0", "1"}
    assert (root / "class.txt").read_text(encoding="utf-8").split() == ["yin", "yang"]


@pytest.mark.ray
@pytest.mark.slow
def test_scale_bench_runs_a_sweep_per_size_and_reports(tmp_path: Path, capsys) -> None:
    out = tmp_path / "figures.json"
    assert scale.main(["--trials", "3", "--steps", "2", "--json", str(out)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert "3 trials:" in lines[-2] and "ms cpu/trial" in lines[-2]
    figures = json.loads(lines[-1])  # the last line: one JSON object
    assert figures == json.loads(out.read_text())
    (row,) = figures["sizes"]
    assert row["trials"] == 3 and row["finished"] == 3
    for key in ("wall_s", "driver_cpu_s_per_trial", "table_write_s", "ask_tell_ms_per_trial",
                "driver_peak_mb", "report_s"):  # fmt: skip
        assert row[key] > 0, key
    assert 0 <= row["tables_max_stale_s"] < 30
    assert row["table_reads"] >= 0 and row["table_read_failures"] == 0  # read while it ran
