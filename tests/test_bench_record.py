"""bench record (harness.bench.record): a Ray-free recorder writes a table in the sweep
folder format, resumes, packs; harness.bench.blackbox reads it back."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from harness import results as rs
from harness.bench import record
from harness.bench.blackbox import Blackbox, config_key, random_configs
from harness.config import load_spec

SPEC = Path(__file__).resolve().parents[1] / "search_spaces" / "replay_smoke.yaml"
# 10 batches, a report every 5; one shape (num_filters, filter_sizes fixed): fused groups
SHAPE = ["parameters.num_filters={value: 8}", "parameters.filter_sizes={value: [2, 3]}"]
TINY = ["--set", "train.max_steps=10", "--set", "train.eval_every=5", "--threads", "1",
        "--set", SHAPE[0], "--set", SHAPE[1]]  # fmt: skip
# what a bare GPU machine lacks: the recorder must not import them
ABSENT = ("ray", "optuna", "snownlp", "tensorboardX")


def _record(args: list[str]) -> dict:
    """The recorder in a fresh interpreter; its JSON line, after checking what it imported."""
    code = (
        "import json, sys\n"
        "from harness.bench import record\n"
        f"rc = record.main({args!r})\n"
        f"bad = sorted(m for m in sys.modules if m.split('.')[0] in {ABSENT!r})\n"
        "print(json.dumps({'rc': rc, 'imported': bad}))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr[-2000:]
    lines = out.stdout.strip().splitlines()
    check = json.loads(lines[-1])
    assert check == {"rc": 0, "imported": []}
    return json.loads(lines[-2])


@pytest.mark.subprocess
def test_record_resume_and_pack_without_ray_or_optuna(tmp_path: Path) -> None:
    out, packed = tmp_path / "t", tmp_path / "t.npz"
    line = _record([str(SPEC), "--trials", "5", "--out", str(out), "--fuse", "4", *TINY])
    assert line["recorded_now"] == 5 and line["recorded"] == 5
    res = rs.load(out)
    assert len(res.trials) == 5 and set(res.trials["status"]) <= {"COMPLETED", "DIVERGED"}
    assert res.metrics.groupby("trial_id")["report"].max().eq(2).all()  # 10 batches, every 5
    spec = load_spec(SPEC, ["train.max_steps=10", "train.eval_every=5", *SHAPE])
    first = res.trials.set_index("trial_number").loc[0]
    base = spec.baseline_params()  # the classic baseline is configuration 0
    assert {n: rs.decode_param(first[f"param.{n}"]) for n in base} == base
    assert sorted(res.trials["group_size"]) == [1, 4, 4, 4, 4]  # groups of up to --fuse 4

    # --resume with more trials trains only the new one; --pack writes the .npz
    line = _record([str(SPEC), "--trials", "6", "--out", str(out), "--resume",
                    "--pack", str(packed), *TINY])  # fmt: skip
    assert line["recorded_now"] == 1 and line["recorded"] == 6
    table, again = Blackbox.from_folder(out), Blackbox.load(packed)
    assert len(table) == len(again) == 6 and table.configs == again.configs
    assert np.allclose(table.values, again.values, equal_nan=True)
    assert table.baseline() == 0 and table.reports(0) == 2 and table.max_t == again.max_t
    assert np.isfinite(table.final).all() and (table.total_s >= np.nanmax(table.seconds, 1)).all()


def test_record_refuses_an_existing_table_without_resume(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    (tmp_path / rs.TRIALS_FILE).write_bytes(b"")
    with pytest.raises(SystemExit) as exc:
        record.main([str(SPEC), "--trials", "2", "--out", str(tmp_path)])
    assert exc.value.code == 2 and "--resume" in capsys.readouterr().err


def test_random_configs_are_distinct_seeded_and_in_the_space() -> None:
    spec = load_spec(SPEC)
    a, b = random_configs(spec, 40, seed=3), random_configs(spec, 40, seed=3)
    assert a == b and a[0] == spec.baseline_params()
    assert len({config_key(spec.searched, c) for c in a}) == 40
    for c in a:
        lr, d = c["learning_rate"], c["dropout"]
        assert 1e-4 <= lr <= 1e-1 and 0.0 <= d <= 0.7 and c["num_filters"] in (8, 16, 32)
