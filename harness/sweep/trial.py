"""What runs inside a Ray trial: the shared loop on the trial's GPU or CPU, reporting as it goes.

The function is shipped to Ray's worker processes by reference (harness.sweep.trial), the
spec and data once through the object store (tune.with_parameters).
"""

from __future__ import annotations

import gc
import sys
import time
import traceback
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import ray
from ray import tune

from harness.config import SweepSpec
from harness.data import Dataset
from harness.sweep.keys import (
    ERROR,
    FINAL,
    GROUP,
    INFO,
    MEMBER,
    MEMBERS,
    PARAMS,
    STATUS,
    SUMMARY,
)

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
    rungs: Any = None  # fused sweeps: the members' shared record (harness.sweep.rungs actor)


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
    if outcome.get(STATUS) == "COMPLETED":  # metrics not in the summary: the last report's
        for m in job.spec.metrics:
            if outcome.get(m.name) is None:
                outcome[m.name] = last.get(m.name)
    return outcome


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


def run_group(config: dict[str, Any], job: TrialJob, data: Dataset) -> dict[str, Any]:
    """Ray Tune function trainable of a fused sweep: the members in config[MEMBERS] (Optuna
    trials the searcher grouped) trained as one group, each reporting and ending as a trial.

    Each evaluation sends one result whose GROUP entries are every live member's report and
    every member that ended (FINAL, with its summary). At each report the shared record
    (job.rungs) decides whether that member stops (the loop then drops it: PRUNED). A member
    whose settings do not make a config fails alone; an exception of the group's loop fails
    the members still in it. A retried group (max_failures) trains only the members whose
    end never reached the driver.
    """
    entered = time.time()
    from harness import trainer
    from harness.trialconfig import check_group

    members = list(config[MEMBERS])
    if job.rungs is not None:
        left = set(ray.get(job.rungs.unfinished.remote([m["number"] for m in members])))
        members = [m for m in members if m["number"] in left]
    started = time.time()
    device, shown, note = _choose_device(job.gpu)
    info = _where(shown, note, entered, started)
    metric = job.spec.metric.name
    entries: list[dict[str, Any]] = []
    last: dict[int, dict[str, Any]] = {}

    def failed(m: dict[str, Any], exc: BaseException, tb: str = "") -> dict[str, Any]:
        why = "; ".join(x for x in (note, f"{type(exc).__name__}: {exc}".strip()) if x)
        return {MEMBER: m["member"], FINAL: True, STATUS: "FAILED", ERROR: why, "traceback": tb}

    live, cfgs = [], []
    for m in members:  # a member whose values make no valid group member fails alone
        try:
            cfg = job.spec.trial_config(m["params"])
            if cfgs:
                check_group([cfgs[0], cfg])
            live.append(m)
            cfgs.append(cfg)
        except Exception as exc:  # noqa: BLE001 -- a failed trial is data
            entries.append(failed(m, exc, traceback.format_exc(limit=20)))

    def report(i: int, metrics: dict[str, Any]) -> str | None:
        m = live[i]
        last[i] = metrics
        entries.append({MEMBER: m["member"], **metrics})
        if job.rungs is None or job.spec.early_terminate.type == "none":
            return None
        stop = ray.get(job.rungs.decide.remote(m["number"], metrics.get("report"), metrics.get(metric)))
        # at the group's last report the member has trained to its end: recorded, not stopped
        # (as Ray's ASHA records an unfused trial's last result when it completes)
        last_report = loop is not None and loop.step_count >= loop.total_steps
        return trainer.PRUNE if stop and not last_report else None

    def ended(indices: list[int], loop: Any) -> None:
        for i in indices:
            entry = {MEMBER: live[i]["member"], FINAL: True}
            entry.update(_finished(job.spec, loop.summaries[i], shown, note))
            for m in job.spec.metrics:  # metrics not in the summary: the last report's
                if entry[STATUS] == "COMPLETED" and entry.get(m.name) is None:
                    entry[m.name] = last.get(i, {}).get(m.name)
            entries.append(entry)

    def send() -> None:
        out = {GROUP: list(entries)}
        if info is not None:
            out[INFO] = info
        entries.clear()
        tune.report(out)

    stop: BaseException | None = None
    loop = None
    try:
        if live:
            loop = trainer.Loop(cfgs, data, device=device, threads=max(1, round(job.cpu)))
            for epoch in range(1, loop.max_epochs + 1):
                for xb, yb in loop.batches(epoch):
                    loop.step(xb, yb)
                    if loop.report_due():
                        before = list(loop.alive)
                        loop.evaluate_and_report(report)
                        ended([i for i in before if i not in loop.alive], loop)
                        send()
                        info = None
                    if loop.done():
                        break
                if loop.done():
                    break
            before = list(loop.alive)
            loop.close()
            ended(before, loop)
    except Exception as exc:  # noqa: BLE001 -- the group's loop raised: its members failed
        tb = traceback.format_exc(limit=20)
        gone = {e[MEMBER] for e in entries if e.get(FINAL)}
        alive = loop.alive if loop is not None else range(len(live))
        for i in alive:
            if live[i]["member"] not in gone:
                entries.append(failed(live[i], exc, tb))
    except BaseException as exc:  # noqa: BLE001 -- Ray's stop (SystemExit), an interrupt
        stop = type(exc)(*exc.args)
    loop = None
    _free_device_memory()
    if stop is not None:
        raise stop
    out: dict[str, Any] = {GROUP: entries, FINAL: True}
    if info is not None:
        out[INFO] = info
    return out


def trainable(spec: SweepSpec, data: Dataset, rungs: Any = None) -> Any:
    """run_trial (or run_group when `rungs`, the members' record, says the sweep is fused)
    as Tune's trainable: the job and the data shipped once through the object store, each
    trial holding the spec's cpu and gpu share."""
    job = TrialJob(spec=spec, cpu=spec.resources.cpu, gpu=spec.resources.gpu, rungs=rungs)
    fn = run_trial if rungs is None else run_group
    return tune.with_resources(
        tune.with_parameters(fn, job=job, data=data),
        {"cpu": spec.resources.cpu, "gpu": spec.resources.gpu},
    )
