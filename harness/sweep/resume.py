"""What an interrupted sweep left, and what `--resume` does with it.

Optuna's study and the tables are the record (Tune's own state may be older): trials the
study closed stay closed, every other started trial runs again from the start as the same
Optuna trial. At the end of a run, trials Tune left running are settled: PRUNED when the
time budget ran out, else left RUNNING for the next --resume.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import optuna
from optuna.trial import TrialState

from harness import results as rs
from harness import warmstart
from harness.config import SweepSpec
from harness.errors import UserError
from harness.sweep.search import optuna_storage_url
from harness.values import finite

if TYPE_CHECKING:
    from harness.sweep.console import Console

_STATE_STATUS = {"COMPLETE": "COMPLETED", "PRUNED": "PRUNED", "FAIL": "FAILED"}


@dataclass
class ResumePlan:
    """What an interrupted sweep left: trials finished for good, trials to run again."""

    finished: int = 0
    # Optuna numbers of interrupted trials (same params, run from the start)
    rerun: list[int] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)  # their old Ray trial ids, rows removed


def check_same_spec(folder: Path, spec: SweepSpec) -> None:
    """A resume must search the same space the same way; only the budget may change."""
    old = json.loads((folder / rs.SWEEP_FILE).read_text()).get("spec", {})
    new = spec.to_dict()
    differ = sorted(
        k
        for k in set(old) | set(new)
        if k not in ("budget", "storage") and old.get(k) != new.get(k)
    )
    if differ:
        raise UserError(
            f"--resume: the spec differs from the one {folder / rs.SWEEP_FILE} was run with "
            f"({', '.join(differ)}); resume with the same file and --set values (only budget.* "
            "may change), or start a new sweep"
        )


def plan_resume(spec: SweepSpec, folder: Path, writer: rs.ResultsWriter) -> ResumePlan:
    """Optuna's study and the tables are the record (Tune's own state may be older): trials
    the study closed stay closed; one whose final result reached the tables but whose verdict
    never reached the study is told now; every other started trial runs again from the start,
    as the same Optuna trial, its partial rows dropped so each trial appears once."""
    try:
        study = optuna.load_study(study_name=spec.name, storage=optuna_storage_url(folder))
    except KeyError:
        raise UserError(f"{folder}: no Optuna study {spec.name!r} in {rs.OPTUNA_FILE}") from None
    plan = ResumePlan()
    known: set[str] = set()
    single = len(spec.metrics) == 1
    for t in study.get_trials(deepcopy=False):
        if warmstart.is_warm(t):
            continue  # an earlier sweep's trial (warm_start): not one of this sweep's
        tid = t.user_attrs.get("ray_trial_id")
        row = writer.trial_row(tid) if tid else {}
        if tid:
            known.add(tid)
        if t.state.is_finished():
            plan.finished += 1
            if tid and row.get("status") in (None, "RUNNING"):
                writer.set_trial(
                    tid,
                    trial_number=t.number,
                    status=t.user_attrs.get("status") or _STATE_STATUS.get(t.state.name, "FAILED"),
                )
            continue
        if t.state == TrialState.WAITING:
            continue  # enqueued (the baseline) but never started: study.ask() hands it out
        status = row.get("status")
        if status == "COMPLETED" and single and finite(row.get("metric")):
            study.tell(t.number, float(row["metric"]))
        elif status in ("FAILED", "DIVERGED"):
            study.tell(t.number, state=TrialState.FAIL)
        else:
            plan.rerun.append(t.number)
            if tid and tid in writer.trial_ids():
                writer.drop_trial(tid)
                plan.dropped.append(tid)
            continue
        plan.finished += 1
    for tid in writer.trial_ids():  # rows Optuna never heard of: a start cut short
        if tid not in known and writer.trial_row(tid).get("status") == "RUNNING":
            writer.drop_trial(tid)
            plan.dropped.append(tid)
    writer.flush(force=True)
    return plan


def settle_unfinished(
    spec: SweepSpec,
    folder: Path,
    writer: rs.ResultsWriter,
    fit_seconds: float,
    console: Console | None = None,
) -> int:
    """Trials Tune left running when it stopped: past the time budget they were stopped
    from outside (PRUNED, told so); otherwise the sweep was interrupted and they stay
    RUNNING for --resume. Returns how many were left for --resume."""
    running = [r for r in writer.rows() if r.get("status") == "RUNNING"]
    budget = spec.budget.time_budget_s
    if not budget or fit_seconds < budget * 0.98:
        return len(running)
    study = optuna.load_study(study_name=spec.name, storage=optuna_storage_url(folder))
    by_number = {t.number: t for t in study.get_trials(deepcopy=False)}
    rows = {r.get("trial_number") for r in writer.rows()}
    for t in by_number.values():  # asked for, but the budget ran out before it started
        if t.state == TrialState.RUNNING and t.number not in rows:
            study._storage.set_trial_user_attr(t._trial_id, "reason", "never started: time budget")
            study.tell(t.number, state=TrialState.FAIL)
    now = dt.datetime.now(dt.timezone.utc)
    for r in running:
        t = by_number.get(r.get("trial_number"))
        if t is not None and not t.state.is_finished():
            study._storage.set_trial_user_attr(t._trial_id, "status", "PRUNED")
            study._storage.set_trial_user_attr(t._trial_id, "reason", "budget.time_budget_s")
            study.tell(t.number, state=TrialState.PRUNED)
        writer.set_trial(
            r["trial_id"], status="PRUNED", error="stopped by budget.time_budget_s", end_time=now
        )
        if console is not None:
            console.trial_line(writer.trial_row(r["trial_id"]))
    writer.flush(force=True)
    return 0
