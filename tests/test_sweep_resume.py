"""harness.sweep.resume: what --resume makes of an interrupted sweep's study and tables.

No Ray: the searcher is driven the way Tune drives it against a real Optuna SQLite study,
and the tables are real Parquet files, as an interrupted sweep leaves them.
"""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
from helpers import evaluation, final, searcher, study, write_spec

from harness import results as rs
from harness import sweep
from harness.config import load_spec
from harness.errors import UserError
from harness.sweep.resume import settle_unfinished

optuna.logging.set_verbosity(optuna.logging.WARNING)


def interrupted(tmp_path: Path) -> rs.ResultsWriter:
    """A sweep cut short: trial 0 finished, 1 and 2 ran part way, 3 was asked for and waits
    for resources (no row), as Ctrl-C or a kill leaves them."""
    s = searcher(tmp_path)
    params = list(load_spec(write_spec(tmp_path / "s.yaml")).parameters)
    writer = rs.ResultsWriter(tmp_path, params=params)
    for i in range(4):
        cfg = s.suggest(f"t{i}")
        if i < 3:
            writer.set_trial(f"t{i}", trial_number=cfg[sweep.NUMBER], status="RUNNING",
                             params=cfg[sweep.PARAMS])  # fmt: skip
            writer.add_report(f"t{i}", {"iteration": 5, "report": 1, "best_dev_acc": 0.6})
            s.on_trial_result(f"t{i}", evaluation(5, 0.6))
    s.on_trial_complete("t0", final(value=0.8))
    writer.set_trial("t0", status="COMPLETED", metric=0.8)
    writer.flush(force=True)
    return writer


def test_a_budget_below_the_started_trials_is_refused_untouched(tmp_path: Path) -> None:
    interrupted(tmp_path)
    spec = load_spec(write_spec(tmp_path / "s.yaml", budget={"num_samples": 3}))
    before = [(t.number, t.state) for t in study(tmp_path, "smoke").trials]
    writer = rs.ResultsWriter.open(tmp_path, params=list(spec.parameters))
    with pytest.raises(UserError) as exc:
        sweep.plan_resume(spec, tmp_path, writer)
    assert str(exc.value) == (
        f"--resume: budget.num_samples 3 is below the 4 trials {tmp_path / rs.OPTUNA_FILE} "
        "already holds (1 finished, 3 interrupted or not started); resume with "
        "--set budget.num_samples=4 or more"
    )
    assert [(t.number, t.state) for t in study(tmp_path, "smoke").trials] == before
    assert rs.ResultsWriter.open(tmp_path).trial_ids() == ["t0", "t1", "t2"]


def test_interrupted_trials_keep_their_rows_until_they_run_again(tmp_path: Path) -> None:
    interrupted(tmp_path)
    spec = load_spec(write_spec(tmp_path / "s.yaml", budget={"num_samples": 6}))
    writer = rs.ResultsWriter.open(tmp_path, params=list(spec.parameters))
    plan = sweep.plan_resume(spec, tmp_path, writer)
    assert plan.finished == 1 and plan.rerun == [1, 2, 3]
    assert plan.replaced == {1: "t1", 2: "t2"}  # dropped when the new run starts
    assert rs.ResultsWriter.open(tmp_path).trial_ids() == ["t0", "t1", "t2"]
    assert len(rs.ResultsWriter.open(tmp_path).metrics) == 3


def test_trials_asked_for_but_never_started_count_as_interrupted(tmp_path: Path) -> None:
    # Ctrl-C while trials wait for resources: no row shows them, the study does (RUNNING),
    # so the sweep is interrupted (exit 130, --resume hint), not finished.
    s = searcher(tmp_path)
    s.suggest("t0")
    s.suggest("t1")
    spec = load_spec(write_spec(tmp_path / "s.yaml"))
    writer = rs.ResultsWriter(tmp_path, params=list(spec.parameters))
    assert settle_unfinished(spec, tmp_path, writer, fit_seconds=59.0) == 2
    assert {t.state.name for t in study(tmp_path, "smoke").trials} == {"RUNNING"}
