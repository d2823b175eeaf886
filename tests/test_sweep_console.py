"""harness.sweep.console: the lines a person watches while a sweep runs."""

from __future__ import annotations

import io
from pathlib import Path

from test_sweep import SMOKE

from harness import sweep
from harness.config import load_spec


def test_console_lines_are_short_and_informative() -> None:
    spec = load_spec(SMOKE)
    out = io.StringIO()
    c = sweep.Console(spec, out=out)
    rows = [
        {"trial_id": "aaa", "trial_number": 0, "status": "COMPLETED", "metric": 0.8,
         "iterations": 20, "train_s": 1.5, "param.learning_rate": 0.001,
         "param.filter_sizes": "[2, 3]", "best_iteration": 20},
        {"trial_id": "bbb", "trial_number": 1, "status": "FAILED", "error": "ValueError: x\nmore",
         "param.learning_rate": 0.005},
    ]  # fmt: skip
    for r in rows:
        c.trial_line(r)
    c.summary(rows, Path("results/smoke"), 12.0)
    text = out.getvalue()
    assert "[1/4]  aaa  COMPLETED" in text and "(baseline)" in text
    assert "filter_sizes=[2,3]" in text
    assert "failed: ValueError: x" in text and "more" not in text
    assert "best config (trial aaa)" in text and "filter_sizes: [2, 3]" in text
    assert "python -m harness.train --replay results/smoke --trial aaa" in text


def test_a_resumed_sweep_counts_on_and_an_interrupted_one_says_how_to_go_on() -> None:
    spec = load_spec(SMOKE)
    out = io.StringIO()
    c = sweep.Console(spec, out=out)
    c.resuming(finished=2, rerun=1, remaining=2)
    c.trial_line({"trial_id": "ccc", "trial_number": 2, "status": "PRUNED", "metric": 0.5})
    c.interrupted(1)
    lines = out.getvalue().splitlines()
    assert lines[0] == "  resuming: 2 trials done, 1 interrupted (run again from the start), 1 new"
    assert lines[1].startswith("[3/4]  ccc  PRUNED")
    assert "--resume" in lines[2]


def test_the_console_names_what_auto_chose_and_why(tmp_path: Path) -> None:
    spec = load_spec(SMOKE, ["method=auto"])
    out = io.StringIO()
    sweep.Console(spec, out=out).search(sweep.plan_search(spec, tmp_path))
    (line,) = out.getvalue().splitlines()
    assert line.startswith("  search: auto chose TPE, multivariate + group, constant liar, 3 ")
    assert "(the baseline and 2 drawn around the classic values)" in line
    assert "2 of 4 parameters continuous; early termination prunes trials" in line
    out = io.StringIO()
    sweep.Console(load_spec(SMOKE), out=out).search(sweep.plan_search(load_spec(SMOKE), tmp_path))
    assert out.getvalue() == ""  # method tpe: nothing was chosen
