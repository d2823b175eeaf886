"""run(): one sweep from a validated spec to its results folder, step by step.

The steps, in order: claim the folder, load the data, check what can be checked before
Ray starts (address, resume spec), route Ray's logs, open the tables (and plan a resume),
start or join Ray, record sweep.json, announce, let Tune fit, settle what it left
running, summarise. Every user error comes before Ray starts.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import shutil
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray
from ray import tune

from harness import results as rs
from harness import warmstart
from harness.config import SweepSpec
from harness.data import Dataset, load_dataset
from harness.errors import UserError
from harness.sweep.callback import SweepCallback
from harness.sweep.console import Console
from harness.sweep.provenance import sweep_info
from harness.sweep.ray_session import LogRoute, check_fits, check_reachable, init_ray
from harness.sweep.resume import ResumePlan, check_same_spec, plan_resume, settle_unfinished
from harness.sweep.search import SearchPlan, build_scheduler, build_searcher, plan_search
from harness.sweep.trial import trainable, trial_name

log = logging.getLogger(__name__)


@dataclass
class SweepOutcome:
    folder: Path
    rows: list[dict[str, Any]]
    seconds: float
    first_trial_s: float | None  # command start -> first trial running (its own clock)
    interrupted: bool = False  # stopped before the end (Ctrl-C): --resume continues it


def run(
    spec: SweepSpec,
    *,
    results_root: str | os.PathLike = "results",
    address: str | None = None,
    storage: str | None = None,
    resume: bool = False,
    overwrite: bool = False,
    console: Console | None | bool = True,
    command: Sequence[str] | None = None,
    started: float | None = None,
    shutdown: bool = True,
) -> SweepOutcome:
    """Run one sweep to its end; returns the trials' rows. UserErrors come before Ray starts."""
    started = time.time() if started is None else started
    warmstart.check_target(spec, Path(results_root) / spec.name)
    folder = _claim_folder(Path(results_root) / spec.name, resume, overwrite)
    data = load_dataset(spec.data)
    address = address or os.environ.get("RAY_ADDRESS") or None
    if address and not ray.is_initialized():
        check_reachable(address)
    console = Console(spec) if console is True else (console or None)
    if resume:
        check_same_spec(folder, spec)
    search = plan_search(spec, folder, resume)  # auto's choice, warm-start trials
    logs = LogRoute(folder)
    own_ray = not ray.is_initialized()
    try:
        writer, plan = _open_tables(spec, folder, resume)
        log.info("timeline: data ready at %.2f s", time.time() - started)
        cluster = init_ray(address, spec)
        log.info("timeline: ray ready at %.2f s", time.time() - started)
        check_fits(spec, cluster, console)
        max_t = spec.max_t(int(data.train_x.shape[0]))
        info = sweep_info(spec, data, cluster, max_t, command, started, folder if resume else None)
        if search.record() is not None:
            info["search"] = search.record()  # --resume builds the same sampler from it
        writer.write_sweep_info(info)
        remaining = spec.budget.num_samples - plan.finished
        _announce(console, spec, folder, cluster, data, plan if resume else None, remaining)
        if console is not None:
            console.search(search)
        callback = SweepCallback(spec, writer, console, started=started)
        tune_config = _tune_config(spec, folder, plan, resume, max_t, remaining, search)
        run_config = _run_config(spec, folder, storage, callback)
        fit_s = _fit(trainable(spec, data), tune_config, run_config, remaining, started)
        left = settle_unfinished(spec, folder, writer, fit_s, console)
        return _finish(spec, folder, writer, console, started, left)
    finally:
        if own_ray and shutdown and ray.is_initialized():
            ray.shutdown()
        logs.close()


def _claim_folder(folder: Path, resume: bool, overwrite: bool) -> Path:
    """results/<name>/: a new one, an earlier sweep's (--resume), or emptied (--overwrite)."""
    folder = folder.resolve()
    if (folder / rs.SWEEP_FILE).exists() and not resume:
        if not overwrite:
            raise UserError(
                f"{folder}: already holds a sweep; pass --resume to continue it, --overwrite to "
                f"start over, or --set name=<other> for a new one"
            )
        shutil.rmtree(folder)
    if resume and not (folder / rs.SWEEP_FILE).exists():
        raise UserError(f"{folder}: nothing to resume (no {rs.SWEEP_FILE})")
    return folder


def _open_tables(
    spec: SweepSpec, folder: Path, resume: bool
) -> tuple[rs.ResultsWriter, ResumePlan]:
    """The results tables (reloaded on resume) and what a resume still has to run."""
    params = list(spec.parameters)
    if not resume:
        return rs.ResultsWriter(folder, params=params), ResumePlan()
    writer = rs.ResultsWriter.open(folder, params=params)
    return writer, plan_resume(spec, folder, writer)


def _announce(
    console: Console | None,
    spec: SweepSpec,
    folder: Path,
    cluster: dict[str, Any],
    data: Dataset,
    resumed: ResumePlan | None,
    remaining: int,
) -> None:
    if console is None:
        return
    console.announce(folder, cluster, data)
    if resumed is not None:
        console.resuming(resumed.finished, len(resumed.rerun), remaining)
    elif spec.baseline:
        console.baseline()


def _tune_config(
    spec: SweepSpec,
    folder: Path,
    plan: ResumePlan,
    resume: bool,
    max_t: int,
    remaining: int,
    search: SearchPlan | None = None,
) -> tune.TuneConfig:
    """Optuna searches, the scheduler stops, at most max_concurrent trials at a time."""
    return tune.TuneConfig(
        search_alg=build_searcher(spec, folder, rerun=plan.rerun, resume=resume, plan=search),
        scheduler=build_scheduler(spec, max_t),
        num_samples=max(remaining, 1),
        max_concurrent_trials=spec.budget.max_concurrent,
        time_budget_s=spec.budget.time_budget_s,
        reuse_actors=True,
        trial_name_creator=trial_name,
        trial_dirname_creator=trial_name,
    )


def _run_config(
    spec: SweepSpec, folder: Path, storage: str | None, callback: SweepCallback
) -> tune.RunConfig:
    """Tune's own state in results/<name>/ray, or under --storage / spec.storage (a dir or URI)."""
    storage_path = storage or spec.storage
    return tune.RunConfig(
        name=spec.name if storage_path else rs.RAY_DIR,
        storage_path=storage_path or str(folder),
        verbose=0,
        callbacks=[callback],
        failure_config=tune.FailureConfig(max_failures=spec.max_failures),
        checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
    )


def _fit(
    trainable: Any,
    tune_config: tune.TuneConfig,
    run_config: tune.RunConfig,
    remaining: int,
    started: float,
) -> float:
    """Tune runs the trials (none when a resume finds the budget spent); returns its seconds."""
    t_fit = time.time()
    log.info("timeline: fit starts at %.2f s", t_fit - started)
    if remaining > 0:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            tune.Tuner(trainable, tune_config=tune_config, run_config=run_config).fit()
    log.info("fit took %.1f s", time.time() - t_fit)
    return time.time() - t_fit


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
