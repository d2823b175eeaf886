"""What runs inside a Ray trial: the shared loop on the trial's GPU or CPU, reporting as it goes.

The function is shipped to Ray's worker processes by reference (harness.sweep.trial), the
spec and data once through the object store (tune.with_parameters).
"""

from __future__ import annotations

import gc
import math
import sys
import time
import traceback
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import ray
from ray import tune

from harness.config import SweepSpec
from harness.data import Dataset
from harness.sweep.keys import ERROR, FINAL, INFO, LAST, PARAMS, STATUS, SUMMARY
from harness.trialconfig import TrialConfig
from harness.values import finite

if TYPE_CHECKING:  # the loop (torch) is imported inside the trial, where it runs
    from harness.trainer import TrialSummary

# Metric names whose value for a finished trial is the kept (best-dev-loss) weights' value.
_FINAL_FROM_SUMMARY = {
    "best_dev_acc": "best_dev_acc",
    "dev_acc": "best_dev_acc",
    "best_dev_loss": "best_dev_loss",
    "dev_loss": "best_dev_loss",
}


@dataclass(frozen=True)
class TrialJob:
    """What every trial needs besides its sampled params; shipped once via the object store."""

    spec: SweepSpec
    cpu: float
    gpu: float


def trial_name(trial: Any) -> str:
    """Tune's name and folder name of a trial: its short id (the config is in the tables)."""
    return str(trial.trial_id)


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


def _where(shown: str, note: str, entered: float, started: float) -> dict[str, Any]:
    """Node, device and times of this trial: the callback's first look at it (INFO)."""
    return {
        "node_id": ray.get_runtime_context().get_node_id(),
        "node_ip": ray.util.get_node_ip_address(),
        "device": shown,
        "note": note,
        "start_time": started,
        "entered": entered,
        "process_started": _process_start(),
    }


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
    info = _where(shown, note, entered, started)
    last: dict[str, Any] = {}
    held: list[dict[str, Any]] = []  # the report the loop ends the trial at (LastReport)
    is_last: LastReport | None = None

    def report(metrics: dict[str, Any]) -> None:
        out = dict(metrics)
        if not last:
            out[INFO] = info
        last.update(metrics)
        if held:  # held back, yet the loop went on: send it now, late but not lost
            tune.report(held.pop())
        if is_last is not None and is_last(metrics):
            held.append(out)
        else:
            tune.report(out)

    outcome: dict[str, Any] = {FINAL: True, INFO: info}
    stop: BaseException | None = None
    try:
        cfg = job.spec.trial_config(params)
        is_last = LastReport(cfg, int(data.train_x.shape[0]))
        summary = train(cfg, data, report, device=device, threads=max(1, round(job.cpu)))
        outcome.update(_finished(job.spec, summary, shown, note))
    except Exception as exc:  # noqa: BLE001 -- a failed trial is data, not a crash
        outcome[STATUS] = "FAILED"
        outcome[ERROR] = "; ".join(x for x in (note, f"{type(exc).__name__}: {exc}".strip()) if x)
        outcome["traceback"] = traceback.format_exc(limit=20)
    except BaseException as exc:  # noqa: BLE001 -- Ray's stop (SystemExit), an interrupt
        stop = type(exc)(*exc.args)
    _free_device_memory()  # the exception (and the frames holding the model) is gone now
    if stop is not None:
        raise stop
    if held:
        outcome[LAST] = held.pop()
    if outcome.get(STATUS) == "COMPLETED":  # metrics not in the summary: the last report's
        for m in job.spec.metrics:
            if outcome.get(m.name) is None:
                outcome[m.name] = last.get(m.name)
    return outcome


class LastReport:
    """Whether the loop ends a trial at this report, by the loop's own rules (harness.trainer:
    its step budget, its patience, a non-finite loss or gradient), from the report alone.

    Why: a scheduler may stop a trial at any report it is shown (ASHA at a rung or at
    max_t), and a trial stopped there is PRUNED, untested, though it had run its whole
    budget. So the report the loop ends at is held back and reaches Tune inside the trial's
    final result (keys.LAST): a trial that ran its budget always ends COMPLETED (or
    DIVERGED). Should this guess a report last that is not, the report is sent at the next.
    """

    def __init__(self, cfg: TrialConfig, n_train: int) -> None:
        tc = cfg.train
        steps = math.ceil(n_train / tc.batch_size) * tc.max_epochs
        self.total_steps = min(steps, tc.max_steps) if tc.max_steps else steps
        self.patience = tc.require_improvement
        self.best_it = 0

    def __call__(self, metrics: dict[str, Any]) -> bool:
        step = int(metrics["iteration"])
        if metrics.get("improved"):
            self.best_it = step
        diverged = bool(metrics.get("grad_nonfinite")) or not finite(metrics.get("dev_loss"))
        return diverged or step >= self.total_steps or step - self.best_it >= self.patience


def _finished(spec: SweepSpec, summary: TrialSummary, shown: str, note: str) -> dict[str, Any]:
    """The last result of a trial whose loop ran to its end: its summary, status and, when
    it completed, each objective's value for the kept weights."""
    s = summary.to_dict()
    s["device"] = shown
    out: dict[str, Any] = {
        SUMMARY: s,
        STATUS: summary.status,
        ERROR: "; ".join(x for x in (note, summary.reason) if x),
    }
    if summary.status == "COMPLETED":
        for m in spec.metrics:
            out[m.name] = s.get(_FINAL_FROM_SUMMARY.get(m.name, ""), None)
    return out


def trainable(spec: SweepSpec, data: Dataset) -> Any:
    """run_trial as Tune's trainable: the job and the data shipped once through the object
    store, each trial holding the spec's cpu and gpu share."""
    job = TrialJob(spec=spec, cpu=spec.resources.cpu, gpu=spec.resources.gpu)
    return tune.with_resources(
        tune.with_parameters(run_trial, job=job, data=data),
        {"cpu": spec.resources.cpu, "gpu": spec.resources.gpu},
    )
