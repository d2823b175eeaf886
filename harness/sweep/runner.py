"""run(): one sweep from a validated spec to its results folder, step by step.

The steps, in order: claim the folder, load the data, check what can be checked before
Ray starts (address, resume spec), route Ray's logs, open the tables (and plan a resume),
start or join Ray, record sweep.json, announce, let Tune fit, settle what it left
running, summarise. Every user error comes before Ray starts, but one: a joined cluster
whose nodes cannot all see Tune's storage (asked of the nodes, before any trial runs).
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import os
import shutil
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pandas as pd
import ray
from ray import tune

from harness import results as rs
from harness import warmstart
from harness.config import SweepSpec, as_spec
from harness.data import load_dataset
from harness.errors import UserError
from harness.files import shown
from harness.lock import LOCK_FILE, FolderLock
from harness.schema import STATUSES
from harness.sweep import checkpoints
from harness.sweep.callback import SweepCallback
from harness.sweep.console import Console
from harness.sweep.groups import FusePlan, gpu_probe, plan_fuse
from harness.sweep.halt import STORAGE_FAULTS, Halt, caused_by_storage, describe, interrupted
from harness.sweep.population import Population
from harness.sweep.provenance import sweep_info
from harness.sweep.ray_session import (
    LogRoute,
    ResultFiles,
    check_fits,
    check_reachable,
    check_storage,
    init_ray,
)
from harness.sweep.resume import ResumePlan, check_same_spec, plan_resume, settle_unfinished
from harness.sweep.rungs import start_rungs
from harness.sweep.schedulers import build_scheduler
from harness.sweep.search import (
    SearchPlan,
    build_searcher,
    optuna_storage_url,
    plan_search,
)
from harness.sweep.shelf import unkept
from harness.sweep.trial import trainable, trial_name
from harness.tracker import Trackers

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass
class SweepOutcome:
    folder: Path
    rows: list[dict[str, Any]]
    seconds: float
    first_trial_s: float | None  # command start -> first trial running (its own clock)
    interrupted: bool = False  # stopped before the end (Ctrl-C): --resume continues it
    fault: str | None = None  # the record could not be written mid-run (halt.py): one line


def run(
    spec: SweepSpec | str | os.PathLike | Mapping[str, Any],
    *,
    overrides: Sequence[str] = (),
    results_root: str | os.PathLike = "results",
    address: str | None = None,
    storage: str | None = None,
    resume: bool = False,
    overwrite: bool = False,
    console: Console | None | bool = True,
    command: Sequence[str] | None = None,
    started: float | None = None,
    shutdown: bool = True,
    restrict: Any = None,
) -> SweepOutcome:
    """Run one sweep to its end; returns the outcome (folder, the trials' rows, times).

    `spec` is a SweepSpec, a sweep file or a dict of what such a file holds (checked the same
    way), with `overrides` as `--set` gives them. UserErrors come before Ray starts.
    `restrict` (a harness.bench.searchers.restriction.Restriction) samples only a table's recorded
    configurations, as `bench searchers --replay` does (tests compare the two)."""
    started = time.time() if started is None else started
    spec = as_spec(spec, overrides)
    warmstart.check_target(spec, Path(results_root) / spec.name)
    folder, lock = _claim_folder(Path(results_root) / spec.name, resume, overwrite)
    logs: LogRoute | None = None
    trackers = Trackers()
    own_ray = not ray.is_initialized()
    rungs = None
    try:
        data = load_dataset(spec.data)
        address = address or os.environ.get("RAY_ADDRESS") or None
        if address and not ray.is_initialized():
            check_reachable(address)
        console = Console(spec) if console is True else (console or None)
        search = _before_ray(spec, folder, data, console, resume)
        search.restrict = restrict
        logs = LogRoute(folder)
        trackers = Trackers.for_sweep(spec, folder)
        writer, plan = _writing(folder, lambda: _open_tables(spec, folder, resume, storage), "use")
        trackers.keep(writer.trial_ids())  # a resume dropped rows: their curves go too
        log.info("timeline: data ready at %.2f s", time.time() - started)
        if console is not None and not ray.is_initialized():
            console.starting_ray(address)
        cluster = init_ray(address, spec)
        log.info("timeline: ray ready at %.2f s", time.time() - started)
        check_fits(spec, cluster, console)
        where = storage or spec.storage
        check_storage(where or str(folder / rs.RAY_DIR), bool(where), cluster)
        max_t = spec.max_t(int(data.train_x.shape[0]))
        fuse = plan_fuse(spec, data, gpu_probe(spec, data))
        info = sweep_info(spec, data, cluster, max_t, command, started, folder if resume else None)
        _record_sweep(folder, writer, info, fuse, search)
        remaining = spec.budget.num_samples - plan.finished
        _announce(console, spec, folder, cluster, plan if resume else None, remaining, search, fuse)
        rungs = _member_record(spec, folder, max_t, resume) if fuse.fused else None
        halt = Halt()
        callback = SweepCallback(
            spec, writer, console, started=started, trackers=trackers, replaced=plan.replaced,
            halt=halt,
        )  # fmt: skip
        tune_config, population = _tune_config(
            spec, folder, plan, resume, max_t, remaining, halt, fuse, rungs, search
        )
        extra = [ResultFiles(), *([population.recorder] if population is not None else [])]
        run_config = _run_config(spec, folder, storage, callback, halt, extra)
        space = population.param_space if population is not None else None
        fit_s = _fit(
            trainable(spec, data, rungs), tune_config, run_config, remaining, started, halt, space
        )
        if halt.fault:
            return _stopped(spec, folder, halt.fault, started)
        left = settle_unfinished(spec, folder, writer, fit_s, console)
        outcome = _finish(spec, folder, writer, console, started, left)
        info["throughput"] = throughput(spec, outcome.rows, fit_s)
        info["throughput"].update(table_write_s=round(writer.write_seconds, 3),
                                  tables_max_stale_s=round(writer.max_stale_s, 3))  # fmt: skip
        writer.write_sweep_info(info)
        return outcome
    finally:
        trackers.close()
        if isinstance(console, Console):
            console.stop()  # never leave a live block half drawn
        if rungs is not None and ray.is_initialized():
            ray.kill(rungs)  # a Ray session that outlives the sweep keeps no record of it
        if own_ray and shutdown and ray.is_initialized():
            ray.shutdown()
        if logs is not None:
            logs.close()
        lock.release(remove_if_empty=True)


def _record_sweep(
    folder: Path, writer: rs.ResultsWriter, info: dict[str, Any], fuse: FusePlan,
    search: SearchPlan,
) -> None:  # fmt: skip
    """sweep.json as the trials start: the run's settings, the group plan and auto's choice
    (--resume builds the same sampler from it)."""
    info["fuse"] = fuse.to_dict()
    if search.record() is not None:
        info["search"] = search.record()
    _writing(folder / rs.SWEEP_FILE, lambda: writer.write_sweep_info(info))


def _claim_folder(folder: Path, resume: bool, overwrite: bool) -> tuple[Path, FolderLock]:
    """results/<name>/, locked for this sweep's life before anything else happens (see
    harness.lock): a new one, an earlier sweep's (--resume), or emptied (--overwrite)."""
    folder = folder.resolve()
    lock = FolderLock.claim(folder)
    try:
        if (folder / rs.SWEEP_FILE).exists() and not resume:
            if not overwrite:
                raise UserError(
                    f"{shown(folder)}: already holds a sweep; pass --resume to continue it, "
                    "--overwrite to start over, or --set name=<other> for a new one"
                )
            for item in folder.iterdir():  # all but the lock this sweep holds
                if item.is_dir() and not item.is_symlink():
                    shutil.rmtree(item)
                elif item.name != LOCK_FILE:
                    item.unlink()
        if resume and not (folder / rs.SWEEP_FILE).exists():
            raise UserError(f"{shown(folder)}: nothing to resume (no {rs.SWEEP_FILE})")
    except BaseException:
        lock.release(remove_if_empty=True)
        raise
    return folder, lock


def _before_ray(
    spec: SweepSpec, folder: Path, data: Any, console: Console | None, resume: bool
) -> SearchPlan:
    """What can be said and checked before Ray's seconds of start-up: the console's first
    line, the spec's warnings, a resumed spec's sameness; returns the search plan (auto's
    choice, warm-start trials: earlier studies are read here, so their errors come first)."""
    if console is not None:
        console.header(data)
    for line in spec.warnings(int(data.train_x.shape[0])):
        _warn(console, line)
    if resume:
        check_same_spec(folder, spec)
    return plan_search(spec, folder, resume)


def _warn(console: Console | None, line: str) -> None:
    if console is not None:
        console.print(f"warning: {line}")
    else:
        log.warning("%s", line)


def _open_tables(
    spec: SweepSpec, folder: Path, resume: bool, storage: str | None = None
) -> tuple[rs.ResultsWriter, ResumePlan]:
    """The results tables (reloaded on resume) and what a resume still has to run."""
    params = list(spec.parameters)
    if not resume:
        return rs.ResultsWriter(folder, params=params), ResumePlan()
    writer = rs.ResultsWriter.open(folder, params=params)
    exp_dir = checkpoints.experiment_dir(folder, storage or spec.storage, spec.name)
    return writer, plan_resume(spec, folder, writer, exp_dir)


def _announce(
    console: Console | None,
    spec: SweepSpec,
    folder: Path,
    cluster: dict[str, Any],
    resumed: ResumePlan | None,
    remaining: int,
    search: SearchPlan,
    fuse: FusePlan,
) -> None:
    """What the sweep is about to do, as the trials start: where, what a resume left, how it
    searches and groups."""
    if console is None:
        return
    console.announce(folder, cluster)
    if resumed is not None:
        console.resuming(resumed.finished, len(resumed.rerun), remaining)
    elif spec.baseline:
        console.baseline()
    console.search(search)
    console.grouping(fuse, remaining, cluster)
    console.starting_trials(remaining)


def _member_record(spec: SweepSpec, folder: Path, max_t: int, resume: bool) -> Any:
    """The members' shared record (harness.sweep.rungs) as a Ray actor, seeded on resume with
    the study's intermediate values (step = report index)."""
    record: dict[int, dict[int, float]] = {}
    if resume:
        import optuna

        study = optuna.load_study(study_name=spec.name, storage=optuna_storage_url(folder))
        record = {t.number: dict(t.intermediate_values) for t in study.get_trials(deepcopy=False)}
    return start_rungs(spec, max_t, record)


def throughput(spec: SweepSpec, rows: Sequence[dict[str, Any]], fit_s: float) -> dict[str, Any]:
    """What sweep.json records of the run's pace: trials finished per hour of Tune's fit, and
    per device-hour (GPU-hours when trials ask for GPUs, else CPU-hours: each group's wall
    time, first member's start to last member's end, times the share it held)."""
    finished = [r for r in rows if r.get("status") in STATUSES]
    spans: dict[str, list[float]] = {}
    for r in finished:
        if isinstance(r.get("start_time"), dt.datetime) and isinstance(
            r.get("end_time"), dt.datetime
        ):
            g = spans.setdefault(str(r.get("group_id") or r["trial_id"]), [math.inf, -math.inf])
            g[0] = min(g[0], r["start_time"].timestamp())
            g[1] = max(g[1], r["end_time"].timestamp())
    gpu = spec.resources.gpu > 0
    share = spec.resources.gpu if gpu else spec.resources.cpu
    device_h = sum(b - a for a, b in spans.values()) * share / 3600
    return {
        "trials": len(finished),
        "fit_s": round(fit_s, 3),
        "trials_per_hour": len(finished) / (fit_s / 3600) if fit_s > 0 else None,
        "device": "gpu" if gpu else "cpu",
        "device_hours": device_h,
        "trials_per_device_hour": len(finished) / device_h if device_h > 0 else None,
    }


def _tune_config(
    spec: SweepSpec,
    folder: Path,
    plan: ResumePlan,
    resume: bool,
    max_t: int,
    remaining: int,
    halt: Halt | None = None,
    fuse: FusePlan | None = None,
    rungs: Any = None,
    search: SearchPlan | None = None,
) -> tuple[tune.TuneConfig, Population | None]:
    """Optuna searches, the scheduler stops, at most max_concurrent trials at a time (PBT:
    Optuna draws the population up front, harness.sweep.population). In a fused sweep a
    trial is a group: num_samples (members) bounds the groups, the searcher says when all
    are asked, and members are stopped inside their group (rungs)."""
    fused = fuse is not None and fuse.fused
    searcher = _writing(
        folder / rs.OPTUNA_FILE,
        lambda: build_searcher(
            spec,
            folder,
            rerun=plan.rerun,
            resume=resume,
            restore=plan.restore,
            halt=halt,
            fuse=fuse,
            new=remaining - len(plan.rerun),
            rungs=rungs,
            plan=search,
        ),
    )
    pbt = spec.early_terminate.type == "pbt"
    population = Population(searcher, max(remaining, 1)) if pbt else None
    # Synchronous schedulers need a whole rung (population) at once: a concurrency limit
    # would keep trials from being created while others wait paused, so there only the
    # resources limit how many run
    together = spec.early_terminate.type in ("pbt", "hyperband_sync")
    config = tune.TuneConfig(
        search_alg=None if pbt else searcher,  # PBT: a grid over the population
        scheduler=build_scheduler(spec, max_t, fused=fused),
        num_samples=1 if pbt else max(remaining, 1),
        max_concurrent_trials=None if together else spec.budget.max_concurrent,
        time_budget_s=spec.budget.time_budget_s,
        reuse_actors=True,
        trial_name_creator=trial_name,
        trial_dirname_creator=trial_name,
    )
    return config, population


def _run_config(
    spec: SweepSpec,
    folder: Path,
    storage: str | None,
    callback: SweepCallback,
    halt: Halt | None = None,
    extra: Sequence[tune.Callback] = (),
) -> tune.RunConfig:
    """Tune's own state in results/<name>/ray, or under --storage / spec.storage (a dir or URI)."""
    storage_path = storage or spec.storage
    return tune.RunConfig(
        name=spec.name if storage_path else rs.RAY_DIR,
        storage_path=storage_path or str(folder),
        verbose=0,
        callbacks=[callback, *extra],
        stop=halt,
        failure_config=tune.FailureConfig(max_failures=spec.max_failures),
        # Tune keeps them all: given a num_to_keep, it saves its whole experiment state (every
        # trial, as JSON) at each checkpoint, a cost that grew with the sweep's size. The
        # driver keeps the newest few instead (checkpoints.keep_newest, from the callback).
        checkpoint_config=tune.CheckpointConfig(num_to_keep=None),
    )


def _fit(
    trainable: Any,
    tune_config: tune.TuneConfig,
    run_config: tune.RunConfig,
    remaining: int,
    started: float,
    halt: Halt | None = None,
    param_space: dict[str, Any] | None = None,
) -> float:
    """Tune runs the trials (none when a resume finds the budget spent); returns its seconds.
    A storage fault Tune itself meets (its experiment state) halts the sweep like one in
    the tables or the study."""
    t_fit = time.time()
    log.info("timeline: fit starts at %.2f s", t_fit - started)
    if remaining > 0:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                tune.Tuner(
                    trainable, param_space=param_space, tune_config=tune_config,
                    run_config=run_config,
                ).fit()  # fmt: skip
            except Exception as exc:
                if interrupted(exc):  # a second Ctrl-C that something wrapped
                    raise KeyboardInterrupt from exc
                if halt is None or not caused_by_storage(exc):
                    raise
                halt.record(str(run_config.storage_path), exc)
    log.info("fit took %.1f s", time.time() - t_fit)
    return time.time() - t_fit


def _writing(path: Path, make: Callable[[], T], doing: str = "write") -> T:
    """make(), with a storage fault (a full disk, a read-only folder, a damaged optuna.db)
    as one UserError line: before the trials run, nothing is lost by stopping."""
    try:
        return make()
    except STORAGE_FAULTS as exc:
        raise UserError(describe(str(path), exc, doing)) from None


def _stopped(spec: SweepSpec, folder: Path, fault: str, started: float) -> SweepOutcome:
    """A fault mid-run: what the folder keeps (the tables as last written, the study, and
    which of the top keep_best trials lost their weights), and how to go on, as the one
    line the command prints."""
    try:
        t = pd.read_parquet(folder / rs.TRIALS_FILE)
        done = int(t["status"].isin(STATUSES).sum())
        kept = f"{len(t)} trial(s) in {rs.TRIALS_FILE} as last written ({done} finished)"
        lost = unkept(folder, t.to_dict("records"), spec.keep_best, spec.metric.goal)
        if lost:
            kept += (
                f" (not kept: the model of {len(lost)} completed trial(s) among the top "
                f"{spec.keep_best}, {', '.join(lost)}: their weights were lost)"
            )
    except Exception:  # noqa: BLE001 -- no table written yet, or unreadable: say so
        kept = f"no readable {rs.TRIALS_FILE}"
    line = (
        f"{fault}; the sweep stopped. Kept in {shown(folder)}/: {kept}, and {rs.OPTUNA_FILE}; "
        "make room (or fix the folder), then run the same command with --resume"
    )
    return SweepOutcome(folder, [], time.time() - started, None, interrupted=True, fault=line)


def _finish(
    spec: SweepSpec,
    folder: Path,
    writer: rs.ResultsWriter,
    console: Console | None,
    started: float,
    left: int,
) -> SweepOutcome:
    """The tables written in full, the summary printed, the trials' rows returned."""
    writer.flush(force=True)
    rows = writer.rows()
    seconds = time.time() - started
    starts = [
        r["start_time"].timestamp() for r in rows if isinstance(r.get("start_time"), dt.datetime)
    ]
    if console is not None:
        console.summary(rows, folder, seconds)
        if len(spec.metrics) > 1:
            console.pareto(folder)
        if left:
            console.interrupted(left)
    return SweepOutcome(
        folder=folder,
        rows=rows,
        seconds=seconds,
        first_trial_s=(min(starts) - started) if starts else None,
        interrupted=left > 0,
    )
