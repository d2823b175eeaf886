"""What an interrupted sweep left, and what `--resume` does with it.

Optuna's study and the tables are the record (Tune's own state may be older): trials the
study closed stay closed, every other started trial runs again from the start as the same
Optuna trial. At the end of a run, trials Tune left running are settled: PRUNED when the
time budget ran out, else left RUNNING for the next --resume. A resume never drops a started
trial: a budget below the trials the study holds is refused (check_budget), and the rows of
an interrupted trial stay until it really runs again.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import optuna
from optuna.trial import TrialState

from harness import results as rs
from harness import warmstart
from harness.config import SweepSpec
from harness.errors import UserError
from harness.schema import Status
from harness.sweep import checkpoints
from harness.sweep.search import optuna_storage_url, running_trial
from harness.values import finite

if TYPE_CHECKING:
    from harness.sweep.console import Console

_STATE_STATUS = {
    TrialState.COMPLETE: Status.COMPLETED,
    TrialState.PRUNED: Status.PRUNED,
    TrialState.FAIL: Status.FAILED,
}


@dataclass
class ResumePlan:
    """What an interrupted sweep left: trials finished for good, trials to run again."""

    finished: int = 0
    # Optuna numbers of interrupted trials (same params, run from the start)
    rerun: list[int] = field(default_factory=list)
    # Optuna number -> the old Ray trial id of an interrupted trial that starts over: its rows
    # stay until the trial really runs again (SweepCallback drops them when the new run starts)
    replaced: dict[int, str] = field(default_factory=dict)
    dropped: list[str] = field(default_factory=list)  # rows of starts Optuna never heard of
    # number -> {path, trial_id, iteration}: the checkpoint an interrupted trial goes on from
    # (its rows up to that iteration stay; harness.sweep.checkpoints); a fused group's
    # members share theirs, with "members": their numbers in the group's order
    restore: dict[int, dict] = field(default_factory=dict)


def check_same_spec(folder: Path, spec: SweepSpec) -> None:
    """A resume must search the same space the same way; only the budget (and where Tune's
    state and the trackers' logs go) may change."""
    try:
        old = json.loads((folder / rs.SWEEP_FILE).read_text()).get("spec", {})
    except (OSError, ValueError, AttributeError) as exc:
        where = folder / rs.SWEEP_FILE
        raise UserError(f"{where}: unreadable ({exc}); nothing to resume from") from None
    if isinstance(old.get("resources"), dict):  # a sweep from before resources.fuse: auto
        old["resources"].setdefault("fuse", "auto")
    new = spec.to_dict()
    differ = sorted(
        k
        for k in set(old) | set(new)
        if k not in ("budget", "storage", "tensorboard", "mlflow", "keep_best")
        and old.get(k) != new.get(k)
    )
    if differ:
        raise UserError(
            f"--resume: the spec differs from the one {folder / rs.SWEEP_FILE} was run with "
            f"({', '.join(differ)}); resume with the same file and --set values (only budget.* "
            "and keep_best may change), or start a new sweep"
        )


def plan_resume(
    spec: SweepSpec, folder: Path, writer: rs.ResultsWriter, exp_dir: str | None = None
) -> ResumePlan:
    """Optuna's study and the tables are the record (Tune's own state may be older): trials
    the study closed stay closed; one whose final result reached the tables but whose verdict
    never reached the study is told now; every other started trial runs again as the same
    Optuna trial: from its last checkpoint in Tune's storage `exp_dir` when it left one (its
    rows up to there kept), else from the start (its partial rows dropped), so each trial
    appears once."""
    try:
        study = optuna.load_study(study_name=spec.name, storage=optuna_storage_url(folder))
    except KeyError:
        raise UserError(f"{folder}: no Optuna study {spec.name!r} in {rs.OPTUNA_FILE}") from None
    # an earlier sweep's trials (warm_start) are in the study but not of this sweep
    trials = [t for t in study.get_trials(deepcopy=False) if not warmstart.is_warm(t)]
    check_budget(spec, folder, trials)
    plan = ResumePlan()
    known: set[str] = set()
    single = len(spec.metrics) == 1
    groups: dict[str, list[tuple[int, int, str]]] = {}  # group id -> (member, number, row id)
    for t in trials:
        tid = t.user_attrs.get("ray_trial_id")
        row = writer.trial_row(tid) if tid else {}
        if tid:
            known.add(tid)
        if t.state.is_finished():
            plan.finished += 1
            if tid and row.get("status") in (None, Status.RUNNING):
                writer.set_trial(
                    tid,
                    trial_number=t.number,
                    status=t.user_attrs.get("status") or _STATE_STATUS.get(t.state, Status.FAILED),
                )
            continue
        if t.state == TrialState.WAITING:
            continue  # enqueued (the baseline) but never started: study.ask() hands it out
        status = row.get("status")
        if status == Status.COMPLETED and single and finite(row.get("metric")):
            study.tell(t.number, float(row["metric"]))
        elif status in (Status.FAILED, Status.DIVERGED):
            study.tell(t.number, state=TrialState.FAIL)
        else:
            plan.rerun.append(t.number)
            group = row.get("group_id")
            if tid and group and group != tid:  # a fused group's member: the group's, below
                k = row.get("group_member")
                groups.setdefault(group, []).append((-1 if k is None else int(k), t.number, tid))
                continue
            found = None
            if tid and exp_dir:
                found = checkpoints.latest_state(exp_dir, tid, partial(writer.has_report, tid))
            if found is not None:
                plan.restore[t.number] = found
                continue
            if tid and exp_dir:  # it starts over: what it left is of no use
                checkpoints.delete_all(exp_dir, tid)
            if tid and tid in writer.trial_ids():
                plan.replaced[t.number] = tid
            continue
        plan.finished += 1
    for group, members in groups.items():
        _plan_group(plan, writer, exp_dir, group, sorted(members))
    for tid in writer.trial_ids():  # rows Optuna never heard of: a start cut short
        if tid not in known and writer.trial_row(tid).get("status") == Status.RUNNING:
            writer.drop_trial(tid)
            plan.dropped.append(tid)
    writer.flush(force=True)
    return plan


def _plan_group(
    plan: ResumePlan,
    writer: rs.ResultsWriter,
    exp_dir: str | None,
    group: str,
    members: list[tuple[int, int, str]],
) -> None:
    """An interrupted fused group (member, number, row id of each member to run again) goes
    on from its last checkpoint when it was training exactly these members there and each
    one's report of that iteration is in the tables; else its members start over. Their
    old rows are `replaced` either way: the group's run takes them over or drops them."""
    rows = [tid for _, _, tid in members]
    found = None
    if exp_dir and [k for k, _, _ in members] == list(range(len(members))):
        found = checkpoints.latest_state(
            exp_dir, group, lambda it: all(writer.has_report(r, it) for r in rows), len(rows)
        )
    if found is not None:
        found["members"] = [n for _, n, _ in members]
    elif exp_dir:
        checkpoints.delete_all(exp_dir, group)
    for _, number, tid in members:
        if found is not None:
            plan.restore[number] = found
        if tid in writer.trial_ids():
            plan.replaced[number] = tid


def check_budget(spec: SweepSpec, folder: Path, trials: list[optuna.trial.FrozenTrial]) -> None:
    """A resume never drops a started trial (the study would keep it RUNNING for ever, or
    end with more trials than the budget): budget.num_samples below the trials the study
    holds is refused, naming the smallest budget allowed."""
    if spec.budget.num_samples >= len(trials):
        return
    closed = sum(t.state.is_finished() for t in trials)
    raise UserError(
        f"--resume: budget.num_samples {spec.budget.num_samples} is below the {len(trials)} "
        f"trials {folder / rs.OPTUNA_FILE} already holds ({closed} finished, "
        f"{len(trials) - closed} interrupted or not started); resume with "
        f"--set budget.num_samples={len(trials)} or more"
    )


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
    running = [r for r in writer.rows() if r.get("status") == Status.RUNNING]
    study = optuna.load_study(study_name=spec.name, storage=optuna_storage_url(folder))
    by_number = {t.number: t for t in study.get_trials(deepcopy=False)}
    rows = {r.get("trial_number") for r in writer.rows()}
    # asked for but never started (waiting for resources when Ctrl-C came): no row shows them
    unstarted = [t for t in by_number.values() if t.state == TrialState.RUNNING
                 and t.number not in rows]  # fmt: skip
    budget = spec.budget.time_budget_s
    if not budget or fit_seconds < budget * 0.98:
        return len(running) + len(unstarted)
    for t in unstarted:  # the time budget ran out before they started
        running_trial(study, t).set_user_attr("reason", "never started: time budget")
        study.tell(t.number, state=TrialState.FAIL)
    now = dt.datetime.now(dt.timezone.utc)
    for r in running:
        t = by_number.get(r.get("trial_number"))
        if t is not None and not t.state.is_finished():
            pruned = running_trial(study, t)
            pruned.set_user_attr("status", Status.PRUNED)
            pruned.set_user_attr("reason", "budget.time_budget_s")
            study.tell(t.number, state=TrialState.PRUNED)
        writer.set_trial(
            r["trial_id"],
            status=Status.PRUNED,
            error="stopped by budget.time_budget_s",
            end_time=now,
        )
        if console is not None:
            console.trial_line(writer.trial_row(r["trial_id"]))
    writer.flush(force=True)
    return 0
