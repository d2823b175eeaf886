"""`python -m harness.bench fuse` on the tiny corpus: the table, and the JSON on its last line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.bench.__main__ import main


def test_fuse_bench_prints_a_table_and_one_json_line(
    tiny_corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "fuse.json"
    code = main(["fuse", "--data", f"thucnews:{tiny_corpus}", "--members", "1,3", "--steps", "4",
                 "--impl", "auto,fused,stacked", "--set", "embed=8", "--set", "num_filters=4",
                 "--set", "batch_size=16", "--device", "cpu", "--threads", "1",
                 "--json", str(out)])  # fmt: skip
    assert code == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("machine:") and "x sequential" in "\n".join(lines)
    last = json.loads(lines[-1])
    for key in ("model", "device", "members", "fused_samples_per_s", "sequential_samples_per_s",
                "ratio", "rows"):  # fmt: skip
        assert key in last
    assert last["model"] == "TextCNN" and last["device"] == "cpu" and last["members"] == 3
    assert last["fused_samples_per_s"] > 0 and last["sequential_samples_per_s"] > 0
    assert last["ratio"] == pytest.approx(
        last["fused_samples_per_s"] / last["sequential_samples_per_s"], rel=1e-2
    )
    modes = {(r["members"], r["mode"].split(" ")[0]) for r in last["rows"]}
    assert {
        (1, "sequential"),
        (3, "sequential"),
        (3, "fused"),
        (3, "stacked"),
        (3, "auto"),
    } <= modes
    assert json.loads(out.read_text())["members"] == 3


def test_fuse_bench_rejects_bad_sizes_and_forms() -> None:
    for args in (["--members", "0"], ["--members", "a,b"], ["--impl", "magic"], ["--steps", "0"]):
        with pytest.raises(SystemExit) as exc:
            main(["fuse", *args])
        assert exc.value.code == 2
