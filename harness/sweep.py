"""`python -m harness.sweep SPEC.yaml`: Ray Tune schedules the trials, Optuna drives the search.

The one module that speaks to Ray. A spec (harness.config) becomes a Tuner whose search
algorithm is Optuna (sampler per `method`, study in results/<name>/optuna.db), whose
scheduler comes from `early_terminate`, and whose trials run the shared loop
(harness.trainer.train) on a dataset prepared once on the driver and shipped through the
object store. A driver-side callback writes the results tables (harness.results) and
the console lines as trials report.

Honest search: Ray's stock OptunaSearch tells Optuna that a trial the scheduler stopped
was COMPLETE. Here the trial's last result carries a `final` flag only when the loop ran
to its end (its own early stopping included); a trial whose last result lacks it was
stopped from outside and reaches Optuna as PRUNED, with every evaluation's metric as an
intermediate value at its loop iteration. A trial that raised is FAIL (error in a user
attribute), a diverged one FAIL with its reason.
"""

from __future__ import annotations

import os

# Before Ray is imported: keep a single-machine Ray on loopback, keep Tune's per-trial
# json/csv/tensorboard loggers off (results.py writes the tables), let the last result of
# a failed trial omit the metric, don't chdir trials into their folders (relative paths in
# a spec mean what they meant on the command line), legacy (quiet at verbose=0) output,
# and trial processes at normal priority (Ray's default nice 15 lets any other busy process
# on the machine starve a sweep's trials).
for _k, _v in {
    "RAY_worker_niceness": "0",
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
    "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "1",
    "TUNE_DISABLE_STRICT_METRIC_CHECKING": "1",
    "RAY_CHDIR_TO_TRIAL_DIR": "0",
    "RAY_AIR_NEW_OUTPUT": "0",
    "TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S": "0",
    "RAY_USAGE_STATS_ENABLED": "0",
}.items():
    os.environ.setdefault(_k, _v)

import argparse
import datetime as dt
import gc
import json
import logging
import math
import platform
import shutil
import socket
import subprocess
import sys
import time
import traceback
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, TextIO

import optuna
import ray
import yaml
from optuna.trial import TrialState
from ray import tune
from ray.tune.schedulers import (
    AsyncHyperBandScheduler,
    FIFOScheduler,
    MedianStoppingRule,
    TrialScheduler,
)
from ray.tune.search.optuna import OptunaSearch

from harness import results as rs
from harness import space
from harness.config import SweepSpec, load_spec
from harness.data import Dataset, load_dataset
from harness.errors import UserError, exit_on_user_error
from harness.schema import LAYERS, METRIC_KEYS

# Keys of the trial's last result (the loop ran to its end); never in METRIC_KEYS.
FINAL = "harness_final"
SUMMARY = "harness_summary"
STATUS = "harness_status"
ERROR = "harness_error"
INFO = "harness_info"  # node / device / start time, sent with the first report and the last
NUMBER = "harness_number"  # Optuna trial number, put into each trial's config by the searcher
PARAMS = "params"

# Metric names whose value for a finished trial is the kept (best-dev-loss) weights' value.
_FINAL_FROM_SUMMARY = {
    "best_dev_acc": "best_dev_acc",
    "dev_acc": "best_dev_acc",
    "best_dev_loss": "best_dev_loss",
    "dev_loss": "best_dev_loss",
}

log = logging.getLogger("harness.sweep")


# ------------------------------------------------------------------------------ the search


class HonestOptunaSearch(OptunaSearch):
    """OptunaSearch that tells Optuna how each trial really ended (see module docstring)."""

    def __init__(
        self,
        *args: Any,
        metric_names: Sequence[str],
        parameters: Mapping[str, Any],
        rerun: Sequence[int] = (),
        **kw: Any,
    ) -> None:
        super().__init__(*args, **kw)
        self._metric_names = list(metric_names)
        self._parameters = dict(parameters)
        self._rerun = list(rerun)  # numbers of interrupted Optuna trials, handed out first
        self._reported: dict[str, set[int]] = {}
        self._number: dict[str, int] = {}

    def _resume_trial(self, trial_id: str, number: int) -> dict:
        """An interrupted trial runs again as the same Optuna trial (same number, params)."""
        study = self._ot_study
        storage_id = study._storage.get_trial_id_from_study_id_trial_number(study._study_id, number)
        ot_trial = optuna.trial.Trial(study, storage_id)
        self._ot_trials[trial_id] = ot_trial
        ot_trial.set_user_attr("ray_trial_id", trial_id)
        self._number[trial_id] = number
        params = space.decode(self._parameters, study._storage.get_trial(storage_id).params)
        return {PARAMS: params, NUMBER: number}

    def suggest(self, trial_id: str) -> dict | None:
        if self._rerun and trial_id not in self._ot_trials:
            return self._resume_trial(trial_id, self._rerun.pop(0))
        params = super().suggest(trial_id)
        if params is None:
            return None
        ot_trial = self._ot_trials[trial_id]
        ot_trial.set_user_attr("ray_trial_id", trial_id)
        self._number[trial_id] = ot_trial.number
        return {PARAMS: params, NUMBER: ot_trial.number}

    def _intermediate(self, trial_id: str, result: Mapping[str, Any]) -> None:
        """Report one evaluation's metric at its loop iteration (single objective only)."""
        if len(self._metric_names) > 1 or result.get(FINAL):
            return
        value, step = result.get(self._metric_names[0]), result.get("iteration")
        if value is None or step is None or not _finite(value):
            return
        done = self._reported.setdefault(trial_id, set())
        if int(step) in done:
            return
        done.add(int(step))
        ot_trial = self._ot_trials[trial_id]
        if int(step) in ot_trial.storage.get_trial(ot_trial._trial_id).intermediate_values:
            return  # a rerun of an interrupted trial: the first run's value stands
        ot_trial.report(float(value), int(step))

    def _finished_in_study(self, ot_trial: optuna.Trial) -> bool:
        return ot_trial.storage.get_trial(ot_trial._trial_id).state.is_finished()

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        if trial_id in self._ot_trials and trial_id not in self._completed_trials:
            self._intermediate(trial_id, result)

    def on_trial_complete(
        self, trial_id: str, result: dict | None = None, error: bool = False
    ) -> None:
        if trial_id in self._completed_trials or trial_id not in self._ot_trials:
            return
        ot_trial = self._ot_trials[trial_id]
        if self._finished_in_study(ot_trial):
            self._completed_trials.add(trial_id)
            return
        result = result or {}
        state, values = TrialState.PRUNED, None
        if error:
            state = TrialState.FAIL
            ot_trial.set_user_attr("status", "FAILED")
        elif result.get(FINAL):
            status = result.get(STATUS, "COMPLETED")
            ot_trial.set_user_attr("status", status)
            if status == "COMPLETED":
                values = [result.get(m) for m in self._metric_names]
                if all(v is not None and _finite(v) for v in values):
                    state = TrialState.COMPLETE
                else:
                    state, values = TrialState.FAIL, None
                    ot_trial.set_user_attr("reason", "objective is not a finite number")
            else:
                state = TrialState.FAIL
                ot_trial.set_user_attr("reason", str(result.get(ERROR, ""))[:1000])
        else:
            # Stopped from outside (scheduler, time budget): the result that triggered the
            # stop never reached on_trial_result, so record it before pruning.
            self._intermediate(trial_id, result)
            ot_trial.set_user_attr("status", "PRUNED")
        try:
            if state == TrialState.COMPLETE:
                out = values if len(values) > 1 else values[0]
                self._ot_study.tell(ot_trial, out, state=state)
            else:
                self._ot_study.tell(ot_trial, state=state)
        except Exception as exc:  # noqa: BLE001 -- a bad tell must not end the sweep
            log.warning("optuna tell for %s failed: %s", trial_id, exc)
        self._completed_trials.add(trial_id)


def _finite(v: Any) -> bool:
    try:
        return math.isfinite(float(v))
    except (TypeError, ValueError):
        return False


def optuna_storage_url(folder: Path) -> str:
    return f"sqlite:///{(folder / rs.OPTUNA_FILE).resolve()}"


def build_searcher(
    spec: SweepSpec, folder: Path, rerun: Sequence[int] = (), resume: bool = False
) -> HonestOptunaSearch:
    storage = optuna.storages.RDBStorage(
        optuna_storage_url(folder), engine_kwargs={"connect_args": {"timeout": 60}}
    )
    points = None  # on resume the baseline is in the study already
    if spec.baseline and not resume:
        points = [space.encode(spec.parameters, spec.baseline_params())]
    sampler = spec.sampler()
    if resume and spec.method not in ("grid", "qmc"):
        # A sampler seeded as before would draw the first run's values again; grid and QMC
        # read their place in the sequence from the study, the others get a fresh seed.
        done = len(
            storage.get_all_trials(storage.get_study_id_from_name(spec.name), deepcopy=False)
        )
        sampler = space.sampler(
            spec.method, spec.seed + done, spec.parameters, spec.budget.num_samples
        )
    many = len(spec.metrics) > 1
    return HonestOptunaSearch(
        space=space.define_by_run(spec.parameters),
        metric=[m.name for m in spec.metrics] if many else spec.metric.name,
        mode=[m.mode for m in spec.metrics] if many else spec.metric.mode,
        points_to_evaluate=points or None,
        sampler=sampler,
        study_name=spec.name,
        storage=storage,
        metric_names=[m.name for m in spec.metrics],
        parameters=spec.parameters,
        rerun=rerun,
    )


def build_scheduler(spec: SweepSpec, max_t: int) -> TrialScheduler:
    et = spec.early_terminate
    metric, mode = spec.metric.name, spec.metric.mode
    if et.type == "asha":
        return AsyncHyperBandScheduler(
            time_attr="training_iteration",
            metric=metric,
            mode=mode,
            max_t=max(max_t, et.grace_period),
            grace_period=et.grace_period,
            reduction_factor=et.reduction_factor,
        )
    if et.type == "hyperband":
        # Asynchronous hyperband (several ASHA brackets): Ray's synchronous HyperBand pauses
        # trials, which a function trainable without checkpoints can only restart from zero.
        return AsyncHyperBandScheduler(
            time_attr="training_iteration",
            metric=metric,
            mode=mode,
            max_t=max_t,
            grace_period=1,
            reduction_factor=et.reduction_factor,
            brackets=max(1, min(3, int(math.log(max(max_t, 1), et.reduction_factor)) + 1)),
        )
    if et.type == "median":
        return MedianStoppingRule(
            time_attr="training_iteration",
            metric=metric,
            mode=mode,
            grace_period=et.grace_period,
            min_samples_required=3,
        )
    return FIFOScheduler()


# ------------------------------------------------------------------------------ one trial


@dataclass(frozen=True)
class TrialJob:
    """What every trial needs besides its sampled params; shipped once via the object store."""

    spec: SweepSpec
    cpu: float
    gpu: float


def _choose_device(gpu: float) -> tuple[str, str, str]:
    """(torch device, device as recorded, note). Ray narrows CUDA_VISIBLE_DEVICES to the
    trial's GPU, so torch's cuda:0 is the GPU Ray handed over; the record names Ray's id."""
    if gpu <= 0:
        return "cpu", "cpu", ""
    ids = [str(i) for i in ray.get_gpu_ids()]
    shown = ",".join(ids) or "?"
    import torch

    if torch.cuda.is_available():
        return "cuda", f"cuda:{ids[0] if ids else 0}", ""
    return "cpu", "cpu", f"Ray assigned GPU {shown} but CUDA is not available here; ran on CPU"


def _process_start() -> float | None:
    try:
        import psutil

        return float(psutil.Process().create_time())
    except Exception:  # noqa: BLE001 -- only a timing note
        return None


def _free_device_memory() -> None:
    gc.collect()
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_initialized():
        torch.cuda.synchronize()
        torch.cuda.empty_cache()


def run_trial(config: dict[str, Any], job: TrialJob, data: Dataset) -> dict[str, Any]:
    """Ray Tune function trainable: one trial of the shared loop, reporting every evaluation.

    User-side exceptions end the trial as FAILED data (they are deterministic; retrying
    them wastes the budget); Ray's stop (SystemExit from tune.report) passes through after
    device memory is freed.
    """
    entered = time.time()
    from harness.trainer import train

    started = time.time()
    params = dict(config.get(PARAMS, config))
    device, shown, note = _choose_device(job.gpu)
    ctx = ray.get_runtime_context()
    info = {
        "node_id": ctx.get_node_id(),
        "node_ip": ray.util.get_node_ip_address(),
        "device": shown,
        "note": note,
        "start_time": started,
        "entered": entered,
        "process_started": _process_start(),
    }
    last: dict[str, Any] = {}

    def report(metrics: dict[str, Any]) -> None:
        out = dict(metrics)
        if not last:
            out[INFO] = info
        last.update(metrics)
        tune.report(out)

    outcome: dict[str, Any] = {FINAL: True, INFO: info}
    stop: BaseException | None = None
    try:
        cfg = job.spec.trial_config(params)
        summary = train(cfg, data, report, device=device, threads=max(1, round(job.cpu)))
        s = summary.to_dict()
        s["device"] = shown
        outcome[SUMMARY] = s
        outcome[STATUS] = summary.status
        outcome[ERROR] = "; ".join(x for x in (note, summary.reason) if x)
        if summary.status == "COMPLETED":
            for m in job.spec.metrics:
                outcome[m.name] = s.get(_FINAL_FROM_SUMMARY.get(m.name, ""), None)
    except Exception as exc:  # noqa: BLE001 -- a failed trial is data, not a crash
        outcome[STATUS] = "FAILED"
        outcome[ERROR] = "; ".join(x for x in (note, f"{type(exc).__name__}: {exc}".strip()) if x)
        outcome["traceback"] = traceback.format_exc(limit=20)
    except BaseException as exc:  # noqa: BLE001 -- Ray's stop (SystemExit), an interrupt
        stop = type(exc)(*exc.args)
    _free_device_memory()  # the exception (and the frames holding the model) is gone now
    if stop is not None:
        raise stop
    if outcome.get(STATUS) == "COMPLETED":  # metrics not in the summary: the last report's
        for m in job.spec.metrics:
            if outcome.get(m.name) is None:
                outcome[m.name] = last.get(m.name)
    return outcome


def _trial_name(trial: Any) -> str:
    return str(trial.trial_id)


# ------------------------------------------------------------------------------ console


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, float):
        if not math.isfinite(v):
            return str(v)
        return f"{v:.4g}"
    if isinstance(v, (list, tuple)):
        return "[" + ",".join(_fmt(x) for x in v) + "]"
    return str(v)


class Console:
    """Concise progress: a line per finished trial, a table now and then, a summary at the end."""

    def __init__(self, spec: SweepSpec, out: TextIO | None = None, table_every: int = 5) -> None:
        self.spec = spec
        self.out = out
        self.table_every = table_every
        self.finished = 0
        self.total = spec.budget.num_samples
        self.searched = list(spec.searched)
        self.t0 = time.monotonic()

    def print(self, line: str = "") -> None:
        # sys.stdout looked up at each call: Tune pickles its callbacks, and a stream
        # (pytest's capture, say) need not be picklable
        print(line, file=self.out or sys.stdout, flush=True)

    def trial_line(self, row: Mapping[str, Any]) -> None:
        self.finished += 1
        metric = self.spec.metric.name
        value = row.get("metric")
        parts = [
            f"[{self.finished:>{len(str(self.total))}}/{self.total}]",
            f"{row['trial_id']}",
            f"{row.get('status', '?'):<9}",
            f"{metric}={_fmt(value)}",
            f"it={_fmt(row.get('iterations'))}",
            f"{_fmt(row.get('train_s'))}s",
        ]
        if row.get("trial_number") == 0 and self.spec.baseline:
            parts.append("(baseline)")
        params = " ".join(
            f"{n}={_fmt(rs.decode_param(row.get('param.' + n)))}" for n in self.searched
        )
        line = "  ".join(parts) + ("  " + params if params else "")
        if row.get("status") in ("FAILED", "DIVERGED") and row.get("error"):
            line += f"\n      {row['status'].lower()}: {str(row['error']).splitlines()[0][:160]}"
            if row.get("status") == "FAILED":
                line += f"  (traceback in {rs.LOG_FILE})"
        self.print(line)

    def ranked(self, rows: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
        done = [r for r in rows if r.get("status") == "COMPLETED" and _finite(r.get("metric"))]
        return sorted(
            done, key=lambda r: float(r["metric"]), reverse=self.spec.metric.goal == "maximize"
        )

    def table(self, rows: Sequence[Mapping[str, Any]], top: int = 5, title: str = "") -> None:
        ranked = self.ranked(rows)[:top]
        if not ranked:
            return
        cols = [
            "trial_id",
            "metric",
            "best_iteration",
            "train_s",
            *("param." + n for n in self.searched),
        ]
        head = [
            "trial",
            self.spec.metric.name,
            "best_it",
            "train_s",
            *self.searched,
        ]
        cells = [[_fmt(rs.decode_param(r.get(c))) for c in cols] for r in ranked]
        widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(head)]
        if title:
            self.print(title)
        self.print("  " + "  ".join(h.ljust(w) for h, w in zip(head, widths)))
        for c in cells:
            self.print("  " + "  ".join(x.ljust(w) for x, w in zip(c, widths)))

    def maybe_table(self, rows: Sequence[Mapping[str, Any]]) -> None:
        if self.finished % self.table_every == 0 and self.finished < self.total:
            self.table(rows, top=3, title=f"-- top so far ({self.finished} finished) --")

    def summary(self, rows: Sequence[Mapping[str, Any]], folder: Path, seconds: float) -> None:
        counts: dict[str, int] = {}
        for r in rows:
            counts[str(r.get("status"))] = counts.get(str(r.get("status")), 0) + 1
        status = ", ".join(f"{n} {s.lower()}" for s, n in sorted(counts.items()))
        self.print(f"\nsweep {self.spec.name}: {len(rows)} trials in {seconds:.0f} s ({status})")
        self.table(rows, top=5, title="top trials:")
        ranked = self.ranked(rows)
        if ranked:
            best = ranked[0]
            base = next((r for r in rows if r.get("trial_number") == 0), None)
            if self.spec.baseline and base is not None and base is not best:
                if _finite(base.get("metric")):
                    delta = float(best["metric"]) - float(base["metric"])
                    self.print(
                        f"best {self.spec.metric.name} {_fmt(best['metric'])} vs baseline "
                        f"{_fmt(base['metric'])} ({delta:+.4g})"
                    )
                else:
                    self.print(f"baseline ended {base.get('status')}")
            params = {n: rs.decode_param(best.get("param." + n)) for n in self.spec.parameters}
            self.print(f"best config (trial {best['trial_id']}):")
            text = yaml.safe_dump(params, sort_keys=False, default_flow_style=None)
            self.print("  " + text.rstrip().replace("\n", "\n  "))
            self.print(
                f"rerun it alone: python -m harness.train --replay {folder} --trial {best['trial_id']}"
            )
        self.print(
            f"results: {folder}/ (trials.parquet, metrics.parquet, grad_layers.parquet, sweep.json)"
        )
        self.print(f"optuna study: optuna-dashboard {optuna_storage_url(folder)}")
        self.print(f"ray log: {folder / rs.LOG_FILE}")


# ------------------------------------------------------------------------------ callback


class SweepCallback(tune.Callback):
    """Driver side: every report and trial end goes to the results tables and the console."""

    def __init__(self, spec: SweepSpec, writer: rs.ResultsWriter, console: Console | None) -> None:
        self.spec = spec
        self.writer = writer
        self.console = console
        self.metric = spec.metric.name
        self._best_it: dict[str, int] = {}
        self._done: set[str] = set()
        self.started = time.time()  # reset by run() to the command's start

    # rows -------------------------------------------------------------------------------
    def _params(self, trial: Any) -> dict[str, Any]:
        return dict(trial.config.get(PARAMS, {}))

    def _start_row(self, trial: Any) -> None:
        if self.writer.trial_row(trial.trial_id).get("status") in (None, "PENDING"):
            self.writer.set_trial(
                trial.trial_id,
                trial_number=trial.config.get(NUMBER),
                status="RUNNING",
                params=self._params(trial),
            )

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        log.info(
            "timeline: trial %s started by Tune at %.2f s",
            trial.trial_id,
            time.time() - self.started,
        )
        self._start_row(trial)
        self.writer.flush()

    def on_trial_result(
        self, iteration: int, trials: list, trial: Any, result: dict, **info: Any
    ) -> None:
        tid = trial.trial_id
        self._start_row(trial)
        extra = result.get(INFO)
        if extra:
            t0 = self.started
            log.info(
                "timeline: trial %s worker process started at %s s, entered at %.2f s, "
                "loop imported at %.2f s, first result on the driver at %.2f s",
                tid,
                "?"
                if extra.get("process_started") is None
                else f"{extra['process_started'] - t0:.2f}",
                extra.get("entered", 0) - t0,
                extra.get("start_time", 0) - t0,
                time.time() - t0,
            )
            self.writer.set_trial(
                tid,
                node_id=extra.get("node_id"),
                node_ip=extra.get("node_ip"),
                device=extra.get("device"),
                start_time=rs._cell(extra.get("start_time"), rs._TIME),
                error=extra.get("note") or None,
            )
        if result.get(FINAL):
            self._final(tid, result)
        elif "iteration" in result:
            self.writer.add_report(tid, {k: result.get(k) for k in (*METRIC_KEYS, LAYERS)})
            if result.get("improved"):
                self._best_it[tid] = int(result["iteration"])
            self.writer.set_trial(
                tid,
                metric=result.get(self.metric),
                best_dev_loss=result.get("best_dev_loss"),
                best_dev_acc=result.get("best_dev_acc"),
                best_iteration=self._best_it.get(tid),
                iterations=result.get("iteration"),
                epochs=result.get("epoch"),
                samples=result.get("samples"),
                train_s=result.get("elapsed_s"),
            )
        self.writer.flush()

    def _final(self, tid: str, result: Mapping[str, Any]) -> None:
        if result.get("traceback"):
            log.warning("trial %s failed:\n%s", tid, result["traceback"])
        s = result.get(SUMMARY) or {}
        status = result.get(STATUS, "COMPLETED")
        fields: dict[str, Any] = {"status": status, "error": result.get(ERROR) or None}
        if s:
            fields.update(
                best_dev_loss=s.get("best_dev_loss"),
                best_dev_acc=s.get("best_dev_acc"),
                best_iteration=s.get("best_iteration"),
                iterations=s.get("iterations"),
                epochs=s.get("epochs"),
                samples=s.get("samples"),
                train_s=s.get("elapsed_seconds"),
                device=s.get("device"),
            )
            if status == "COMPLETED":
                fields.update(
                    test_acc=s.get("test_acc"),
                    test_loss=s.get("test_loss"),
                    test_f1_macro=s.get("test_f1_macro"),
                    metric=result.get(self.metric),
                    confusion=json.dumps(s["confusion"]) if s.get("confusion") else None,
                )
        if status != "COMPLETED":
            fields["metric"] = None
        self.writer.set_trial(tid, **fields)

    def _end(self, trial: Any, status: str | None = None, error: str | None = None) -> None:
        tid = trial.trial_id
        if tid in self._done:
            return
        self._done.add(tid)
        row = self.writer.trial_row(tid)
        if status is None:
            last = trial.last_result or {}
            status = "PRUNED" if not last.get(FINAL) else row.get("status", "COMPLETED")
        fields: dict[str, Any] = {"status": status, "end_time": dt.datetime.now(dt.timezone.utc)}
        if error:
            fields["error"] = error
            fields["metric"] = None
        if status == "PRUNED" and not row.get("error"):
            fields["error"] = None
        self.writer.set_trial(tid, params=self._params(trial), **fields)
        self.writer.flush(force=True, only=("trials",))
        self.writer.flush()  # the reports too, when their turn has come
        if self.console is not None:
            self.console.trial_line(self.writer.trial_row(tid))
            self.console.maybe_table(self._rows())

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._end(trial)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._end(trial, status="FAILED", error=_ray_error_text(trial))

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        self.writer.flush(force=True)

    def _rows(self) -> list[dict[str, Any]]:
        return self.writer.rows()


def _ray_error_text(trial: Any) -> str:
    """The last line of the error Ray recorded (e.g. 'RayActorError: ...'), not the whole trace."""
    path = getattr(trial, "error_file", None)
    text = ""
    if path and Path(path).exists():
        text = Path(path).read_text(errors="replace")
    lines = [
        ln.strip() for ln in text.splitlines() if ln.strip() and not ln.startswith("Failure #")
    ]
    return (lines[-1] if lines else "trial failed (no error text from Ray)")[:2000]


# ------------------------------------------------------------------------------ running


class _LogRoute:
    """While a sweep runs, log records of Ray, Tune and Optuna (and Python warnings) go to
    results/<name>/ray.log: their own console handlers come off and they propagate to one
    file handler on the root logger (ray.init clears the "ray" logger's handlers, so a
    handler there would not survive). The console keeps the harness's own lines. Undone by
    close()."""

    PREFIXES = ("ray", "optuna")

    def __init__(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.handler = logging.FileHandler(folder / rs.LOG_FILE)
        self.handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
        )
        self.saved: list[tuple[logging.Logger, list[logging.Handler], bool]] = []
        names = {"ray", "optuna"}
        for name, lg in list(logging.Logger.manager.loggerDict.items()):
            if isinstance(lg, logging.Logger) and name.split(".")[0] in self.PREFIXES:
                names.add(name)
        for name in sorted(names):
            lg = logging.getLogger(name)
            self.saved.append((lg, list(lg.handlers), lg.propagate))
            for h in list(lg.handlers):
                lg.removeHandler(h)
            lg.propagate = True
        self.root = logging.getLogger()
        self.root.addHandler(self.handler)
        self.level = log.level
        log.setLevel(logging.INFO)
        logging.captureWarnings(True)

    def close(self) -> None:
        for lg, handlers, propagate in self.saved:
            for h in list(lg.handlers):
                lg.removeHandler(h)
            for h in handlers:
                lg.addHandler(h)
            lg.propagate = propagate
        self.root.removeHandler(self.handler)
        log.setLevel(self.level)
        logging.captureWarnings(False)
        self.handler.close()


def _check_reachable(address: str) -> None:
    """Fail in seconds, not after Ray's minute of retries, when host:port does not answer."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or "://" in address:
        return  # "auto", ray://..., or something Ray itself will judge
    try:
        with socket.create_connection((host or "127.0.0.1", int(port)), timeout=5):
            pass
    except OSError as exc:
        raise UserError(
            f"--address {address}: nothing answers there ({exc.strerror or exc}); start the "
            "cluster first (ray start --head) or check the address"
        ) from None


def _init_ray(address: str | None, spec: SweepSpec) -> dict[str, Any]:
    """Join a cluster (address / RAY_ADDRESS) or start a private local Ray on 127.0.0.1."""
    common: dict[str, Any] = {
        "log_to_driver": False,
        "logging_level": logging.WARNING,
        "configure_logging": False,
    }
    address = address or os.environ.get("RAY_ADDRESS") or None
    if ray.is_initialized():
        ctx = None
    elif address:
        try:
            ctx = ray.init(address=address, **common)
        except (ConnectionError, ray.exceptions.AuthenticationError) as exc:
            raise UserError(
                f"--address {address}: cannot join that Ray cluster ({type(exc).__name__}: "
                f"{str(exc).strip().splitlines()[0] if str(exc).strip() else ''}). Is it running? "
                "If it uses token authentication, set RAY_AUTH_MODE=token and provide its "
                "token (~/.ray/auth_token or RAY_AUTH_TOKEN)"
            ) from None
    else:
        ctx = ray.init(
            address="local",  # a new private Ray, even when another runs on this machine
            include_dashboard=None,  # only when ray[default] (the dashboard's deps) is installed
            dashboard_host="127.0.0.1",
            **common,
        )
    res = ray.cluster_resources()
    out = {
        "address": ctx.address_info.get("gcs_address") if ctx is not None else "existing",
        "dashboard": (ctx.dashboard_url or "") if ctx is not None else "",
        "joined": bool(address),
        "cpus": res.get("CPU", 0),
        "gpus": res.get("GPU", 0),
        "nodes": len([n for n in ray.nodes() if n.get("Alive")]),
    }
    return out


def _check_fits(spec: SweepSpec, cluster: Mapping[str, Any], console: Console | None) -> None:
    """A trial bigger than the whole Ray cluster would wait forever: say so up front (a joined
    cluster may autoscale, so there it is a warning)."""
    r = spec.resources
    if r.cpu <= cluster["cpus"] and r.gpu <= cluster["gpus"]:
        return
    msg = (
        f"resources: each trial asks for cpu {r.cpu:g}, gpu {r.gpu:g} but the Ray cluster has "
        f"cpu {cluster['cpus']:g}, gpu {cluster['gpus']:g}"
    )
    if not cluster.get("joined"):
        raise UserError(msg + "; lower resources (e.g. --set resources.gpu=0) or use --address")
    if console is not None:
        console.print(f"  warning: {msg}; trials wait until the cluster grows")


def _versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for pkg in ("harness", "torch", "ray", "optuna", "numpy", "pandas", "pyarrow", "scikit-learn"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    return out


def _git_revision() -> str | None:
    root = Path(__file__).resolve().parents[1]
    try:
        rev = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"],
            check=False,
            capture_output=True,
            text=True,
            timeout=5,
        )
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            check=False,
            capture_output=True,
            text=True,
            timeout=5,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if rev.returncode != 0:
        return None
    return rev.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


@dataclass
class SweepOutcome:
    folder: Path
    rows: list[dict[str, Any]]
    seconds: float
    first_trial_s: float | None  # command start -> first trial running (its own clock)
    interrupted: bool = False  # stopped before the end (Ctrl-C): --resume continues it


# ------------------------------------------------------------------------------ resume

_STATE_STATUS = {"COMPLETE": "COMPLETED", "PRUNED": "PRUNED", "FAIL": "FAILED"}


@dataclass
class ResumePlan:
    """What an interrupted sweep left: trials finished for good, trials to run again."""

    finished: int
    rerun: list[int]  # Optuna numbers of interrupted trials (same params, run from the start)
    dropped: list[str]  # their old Ray trial ids, whose partial rows were removed


def _check_same_spec(folder: Path, spec: SweepSpec) -> None:
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
    finished, rerun, dropped = 0, [], []
    known: set[str] = set()
    single = len(spec.metrics) == 1
    for t in study.get_trials(deepcopy=False):
        tid = t.user_attrs.get("ray_trial_id")
        row = writer.trial_row(tid) if tid else {}
        if tid:
            known.add(tid)
        if t.state.is_finished():
            finished += 1
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
        if status == "COMPLETED" and single and _finite(row.get("metric")):
            study.tell(t.number, float(row["metric"]))
        elif status in ("FAILED", "DIVERGED"):
            study.tell(t.number, state=TrialState.FAIL)
        else:
            rerun.append(t.number)
            if tid and tid in writer.trial_ids():
                writer.drop_trial(tid)
                dropped.append(tid)
            continue
        finished += 1
    for tid in writer.trial_ids():  # rows Optuna never heard of: a start cut short
        if tid not in known and writer.trial_row(tid).get("status") == "RUNNING":
            writer.drop_trial(tid)
            dropped.append(tid)
    writer.flush(force=True)
    return ResumePlan(finished=finished, rerun=rerun, dropped=dropped)


def _settle_unfinished(
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
    folder = (Path(results_root) / spec.name).resolve()
    if (folder / rs.SWEEP_FILE).exists() and not resume:
        if not overwrite:
            raise UserError(
                f"{folder}: already holds a sweep; pass --resume to continue it, --overwrite to "
                f"start over, or --set name=<other> for a new one"
            )
        shutil.rmtree(folder)
    if resume and not (folder / rs.SWEEP_FILE).exists():
        raise UserError(f"{folder}: nothing to resume (no {rs.SWEEP_FILE})")
    data = load_dataset(spec.data)
    address = address or os.environ.get("RAY_ADDRESS") or None
    if address and not ray.is_initialized():
        _check_reachable(address)
    if console is True:
        console = Console(spec)
    elif console is False:
        console = None

    if resume:
        _check_same_spec(folder, spec)
    logs = _LogRoute(folder)
    params = list(spec.parameters)
    writer = (
        rs.ResultsWriter.open(folder, params=params)
        if resume
        else rs.ResultsWriter(folder, params=params)
    )
    plan = plan_resume(spec, folder, writer) if resume else ResumePlan(0, [], [])
    own_ray = not ray.is_initialized()
    try:
        log.info("timeline: data ready at %.2f s", time.time() - started)
        cluster = _init_ray(address, spec)
        log.info("timeline: ray ready at %.2f s", time.time() - started)
        _check_fits(spec, cluster, console)
        max_t = spec.max_t(int(data.train_x.shape[0]))
        info = {
            "spec": spec.to_dict(),
            "command": list(command) if command is not None else sys.argv,
            "cwd": os.getcwd(),
            "host": platform.node(),
            "git": _git_revision(),
            "versions": _versions(),
            "ray": cluster,
            "data": {
                "fingerprint": data.fingerprint,
                "train": int(data.train_x.shape[0]),
                "dev": int(data.dev_x.shape[0]),
                "test": int(data.test_x.shape[0]),
                "vocab": data.vocab_size,
                "classes": list(data.classes),
            },
            "max_t": max_t,
            "started": dt.datetime.fromtimestamp(started, dt.timezone.utc).isoformat(),
        }
        if resume:
            first_info = rs.load(folder).info
            info["started"] = first_info.get("started", info["started"])
            info["resumed"] = [
                *first_info.get("resumed", []),
                dt.datetime.now(dt.timezone.utc).isoformat(),
            ]
        writer.write_sweep_info(info)
        remaining = spec.budget.num_samples - plan.finished
        if console is not None:
            _announce(console, spec, folder, cluster, data)
            if resume:
                console.finished = plan.finished
                console.print(
                    f"  resuming: {plan.finished} trials done, {len(plan.rerun)} interrupted "
                    f"(run again from the start), {max(0, remaining - len(plan.rerun))} new"
                )
            elif spec.baseline:
                for note in spec.baseline_notes():
                    console.print(f"  baseline: {note}")

        job = TrialJob(spec=spec, cpu=spec.resources.cpu, gpu=spec.resources.gpu)
        trainable = tune.with_resources(
            tune.with_parameters(run_trial, job=job, data=data),
            {"cpu": spec.resources.cpu, "gpu": spec.resources.gpu},
        )
        callback = SweepCallback(spec, writer, console)
        callback.started = started
        storage_path = storage or spec.storage
        run_config = tune.RunConfig(
            name=spec.name if storage_path else rs.RAY_DIR,
            storage_path=storage_path or str(folder),
            verbose=0,
            callbacks=[callback],
            failure_config=tune.FailureConfig(max_failures=spec.max_failures),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
        )
        tune_config = tune.TuneConfig(
            search_alg=build_searcher(spec, folder, rerun=plan.rerun, resume=resume),
            scheduler=build_scheduler(spec, max_t),
            num_samples=max(remaining, 1),
            max_concurrent_trials=spec.budget.max_concurrent,
            time_budget_s=spec.budget.time_budget_s,
            reuse_actors=True,
            trial_name_creator=_trial_name,
            trial_dirname_creator=_trial_name,
        )
        t_fit = time.time()
        log.info("timeline: fit starts at %.2f s", t_fit - started)
        if remaining > 0:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                tune.Tuner(trainable, tune_config=tune_config, run_config=run_config).fit()
        log.info("fit took %.1f s", time.time() - t_fit)
        left = _settle_unfinished(spec, folder, writer, time.time() - t_fit, console)
        writer.flush(force=True)
        rows = writer.rows()
        seconds = time.time() - started
        starts = [
            r["start_time"].timestamp()
            for r in rows
            if isinstance(r.get("start_time"), dt.datetime)
        ]
        first = (min(starts) - started) if starts else None
        if console is not None:
            console.summary(rows, folder, seconds)
            if len(spec.metrics) > 1:
                _print_pareto(console, spec, folder)
            if left:
                console.print(
                    f"interrupted: {left} trial(s) did not finish; continue with the same "
                    "command plus --resume"
                )
        return SweepOutcome(
            folder=folder, rows=rows, seconds=seconds, first_trial_s=first, interrupted=left > 0
        )
    finally:
        if own_ray and shutdown and ray.is_initialized():
            ray.shutdown()
        logs.close()


def _print_pareto(console: Console, spec: SweepSpec, folder: Path) -> None:
    """Several objectives have no single best: name the trials on the Pareto front."""
    study = optuna.load_study(study_name=spec.name, storage=optuna_storage_url(folder))
    names = ", ".join(m.name for m in spec.metrics)
    front = [
        f"{t.user_attrs.get('ray_trial_id', t.number)} ({', '.join(_fmt(v) for v in t.values)})"
        for t in study.best_trials
    ]
    console.print(f"pareto front over {names}: {'; '.join(front) or '-'}")


def _announce(
    console: Console, spec: SweepSpec, folder: Path, cluster: Mapping, data: Dataset
) -> None:
    et = spec.early_terminate.type
    r = spec.resources
    console.print(
        f"sweep {spec.name}: {spec.budget.num_samples} trials of {spec.model} on {data.name} "
        f"({data.train_x.shape[0]} train), method {spec.method}, early_terminate {et}, "
        f"{spec.metric.name} ({spec.metric.goal})"
    )
    where = f"Ray {cluster['address']} ({cluster['nodes']} node(s), {cluster['cpus']:g} cpu, {cluster['gpus']:g} gpu)"
    if cluster.get("dashboard"):
        where += f", dashboard http://{cluster['dashboard']}"
    console.print(
        f"  {spec.budget.max_concurrent} at a time, cpu {r.cpu:g} gpu {r.gpu:g} each; {where}"
    )
    console.print(f"  results -> {folder}/  (Ray's log: {folder / rs.LOG_FILE})")


# ------------------------------------------------------------------------------ CLI


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m harness.sweep",
        description="Run a hyperparameter sweep: Ray Tune schedules, Optuna searches, "
        "Parquet holds the results.",
    )
    p.add_argument("spec", help="search-space file, e.g. search_spaces/textcnn.yaml")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a spec value by dotted key (repeatable), e.g. budget.num_samples=8",
    )
    p.add_argument("--address", help="join a running Ray cluster (default: RAY_ADDRESS, else a "
                   "private local Ray on 127.0.0.1)")  # fmt: skip
    p.add_argument("--storage", help="where Ray Tune keeps its experiment state (dir or URI such "
                   "as s3://bucket/path); default results/<name>/ray")  # fmt: skip
    p.add_argument("--resume", action="store_true", help="continue an interrupted sweep")
    p.add_argument("--overwrite", action="store_true", help="replace results/<name>/ if it exists")
    p.add_argument("--results", default="results", help="folder holding results/<name>/")
    return p


@exit_on_user_error
def main(argv: Sequence[str] | None = None) -> int:
    started = time.time()
    args = _parser().parse_args(argv)
    spec = load_spec(args.spec, args.overrides)
    out = run(
        spec,
        results_root=args.results,
        address=args.address,
        storage=args.storage,
        resume=args.resume,
        overwrite=args.overwrite,
        command=[
            sys.executable,
            "-m",
            "harness.sweep",
            *(argv if argv is not None else sys.argv[1:]),
        ],
        started=started,
    )
    return 130 if out.interrupted else 0


if __name__ == "__main__":
    raise SystemExit(main())
