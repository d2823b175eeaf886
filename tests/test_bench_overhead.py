"""harness.bench overhead: runs both ways on a tiny setup and reports its figures."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.bench import overhead
from harness.config import load_spec
from harness.errors import UserError

SMOKE = Path(__file__).resolve().parents[1] / "search_spaces" / "smoke.yaml"


def test_overrides_make_n_fixed_trials_that_differ_by_seed() -> None:
    spec = load_spec(SMOKE, overhead.bench_overrides(SMOKE, 3, 2, 10, 5))
    assert spec.method == "grid" and not spec.baseline and spec.budget.num_samples == 3
    assert list(spec.searched) == ["seed"] and spec.early_terminate.type == "none"
    assert spec.trial_config({"seed": 2}).train.seed == 2
    assert spec.trial_config({"seed": 2}).train.max_steps == 10


def test_bad_arguments_are_user_errors() -> None:
    with pytest.raises(UserError):
        overhead.main(["--trials", "0"])
    for bad in ("0", "2,x", ""):
        with pytest.raises(UserError, match="--fuse"):
            overhead.main(["--fuse", bad])


@pytest.mark.ray
@pytest.mark.slow
def test_overhead_bench_runs_and_reports(tiny_corpus: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "figures.json"
    args = ["--spec", str(SMOKE), "--trials", "2", "--concurrency", "2", "--steps", "10",
            "--eval-every", "5", "--set", "data.name=thucnews", "--set",
            f"data.path={tiny_corpus}", "--json", str(out), "--fuse", "1,2"]  # fmt: skip
    assert overhead.main(args) == 0
    text = capsys.readouterr().out
    assert "x ideal" in text and "first trial running" in text
    assert "trials/hour" in text and "vs fuse 1" in text
    figures = json.loads(out.read_text())
    assert figures["ratio_until_last_trial"] > 0 and figures["sweep_first_trial_running_s"] > 0
    assert len(figures["in_process_trial_s"]) == 2 and len(figures["sweep_trial_s"]) == 2
    assert [s["fuse"] for s in figures["sweeps"]] == [1, 2]
    assert all(s["trials_per_hour"] > 0 and len(s["trial_s"]) == 2 for s in figures["sweeps"])
