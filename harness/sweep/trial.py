"""What runs inside a Ray trial: the shared loop on the trial's GPU or CPU, reporting as it goes.

The function is shipped to Ray's worker processes by reference (harness.sweep.trial), the
spec and data once through the object store (tune.with_parameters).
"""

from __future__ import annotations

import math
import shutil
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import ray
from ray import tune

from harness import bundle, schema
from harness.config import SweepSpec
from harness.data import Dataset
from harness.schema import Status
from harness.sweep import checkpoints
from harness.sweep.keys import (
    ERROR,
    FINAL,
    GROUP,
    INFO,
    LAST,
    MEMBER,
    MEMBERS,
    PARAMS,
    RESTORE,
    STATUS,
    SUMMARY,
    member_id,
)
from harness.trialconfig import TrialConfig, replace_train

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


class TuneSide:
    """The trial's results to Tune: one per evaluation, sent at once, except
    - the result a checkpoint follows: it waits for that checkpoint and both travel as one
      result (so the schedulers, which count results, see one per evaluation);
    - the report the loop marks its last (schema.LAST: its budget, patience or divergence
      ends the trial there): held back, it travels inside the trial's final result
      (keys.LAST), so no scheduler stops a trial at its last report. Why: a trial stopped
      at a report it is shown (ASHA at a rung or at max_t) is PRUNED, untested, though it
      ran its whole budget; so a trial that ran its budget always ends COMPLETED (or
      DIVERGED)."""

    def __init__(self, info: dict[str, Any], interval: int, lineage: list[str]) -> None:
        self.info = info
        self.interval = interval  # reports between checkpoints (0: none)
        self.lineage = lineage  # other trials' checkpoints this one went on from (PBT)
        self.last: dict[str, Any] = {}
        self.pending: dict[str, Any] | None = None
        self.held: dict[str, Any] | None = None

    def report(self, metrics: dict[str, Any]) -> None:
        out = dict(metrics)
        if not self.last:
            out[INFO] = self.info
        self.last.update(metrics)
        if metrics.get(schema.LAST):
            self.held = out
        elif self.interval and metrics["report"] % self.interval == 0:
            self.pending = out  # checkpoint() sends it, or flush() when the loop ends here
        else:
            tune.report(out)

    def checkpoint(self, state: dict[str, Any]) -> None:
        state = {**state, "lineage": self.lineage}
        with checkpoints.reporting(lambda d: checkpoints.write_state(d, state)) as ckpt:
            out = self.pending if self.pending is not None else dict(self.last)
            self.pending = None  # written: from here on the result is Tune's
            tune.report(out, checkpoint=ckpt)

    def flush(self) -> None:
        if self.pending is not None:
            out, self.pending = self.pending, None
            tune.report(out)


def trial_config(spec: SweepSpec, params: dict[str, Any]) -> TrialConfig:
    """The trial's config; hyperband_sync pauses and PBT clones trials at any report, so there
    a checkpoint follows every report unless checkpoint_every is set."""
    cfg = spec.trial_config(params)
    given = {**spec.train, **spec.parameters, **params}
    if spec.early_terminate.type in ("hyperband_sync", "pbt") and "checkpoint_every" not in given:
        cfg = replace_train(cfg, checkpoint_every=1)
    return cfg


def run_trial(config: dict[str, Any], job: TrialJob, data: Dataset) -> None:
    """Ray Tune function trainable: one trial of the shared loop, reporting every evaluation,
    checkpointing every `checkpoint_every` reports, and sending its tested weights with its
    final result (keep_best). Started from a checkpoint (a retry, a paused or PBT-exploited
    trial, a --resume), it goes on from there.

    User-side exceptions end the trial as FAILED data (they are deterministic; retrying
    them wastes the budget); Ray's stop (SystemExit from tune.report) passes through after
    device memory is freed.
    """
    entered = time.time()
    from harness import trainer
    from harness.trainer import train

    started = time.time()
    params = dict(config.get(PARAMS, config))
    device, shown, note = _choose_device(job.gpu)
    trial_id = tune.get_context().get_trial_id()
    reachable = checkpoints.storage_reachable()
    if not reachable:
        note = _join(
            note,
            "no checkpoints or kept weights: Tune's storage is not reachable "
            "from this node (use --storage with a shared folder or a bucket URI)",
        )
    try:
        restored = checkpoints.restore(
            tune.get_checkpoint() or checkpoints.named(config.get(RESTORE))
        )
    except (OSError, ValueError, KeyError) as exc:  # a damaged checkpoint: start afresh
        restored = None
        note = _join(note, f"its checkpoint was unreadable ({exc}); started from zero")
    if restored is not None and restored.final is not None:
        _report_again(restored)  # it had ended: its final result, unchanged
        return
    lineage: list[str] = []
    if restored is not None:
        # a clone of another trial (PBT) says so for good; its own checkpoint only this time
        lineage = list((restored.state or {}).get("lineage", []))
        if restored.source != trial_id:
            lineage.append(restored.note(trial_id))
        note = _join(note, *lineage, restored.note(trial_id) if restored.source == trial_id else "")
    info = _where(shown, note, entered, started)
    side = TuneSide(info, 0, lineage)
    kept: list[dict[str, Any]] = []

    outcome: dict[str, Any] = {FINAL: True, INFO: info}
    stop: BaseException | None = None
    cfg = None
    summary = None
    try:
        cfg = trial_config(job.spec, params)
        per_epoch = math.ceil(len(data.train_y) / cfg.train.batch_size)
        side.interval = cfg.train.checkpoint_interval(per_epoch) if reachable else 0
        summary = train(
            cfg, data, side.report, device=device, threads=max(1, round(job.cpu)),
            checkpoint=side.checkpoint if side.interval else None,
            state=None if restored is None else restored.state,
            tested=kept.append if job.spec.keep_best and reachable else None,
        )  # fmt: skip
        side.flush()
        outcome.update(_finished(job.spec, summary, shown, note))
    except Exception as exc:  # noqa: BLE001 -- a failed trial is data, not a crash
        outcome[STATUS] = Status.FAILED
        outcome[ERROR] = "; ".join(x for x in (note, f"{type(exc).__name__}: {exc}".strip()) if x)
        outcome["traceback"] = traceback.format_exc(limit=20)
    except BaseException as exc:  # noqa: BLE001 -- Ray's stop (SystemExit), an interrupt
        stop = type(exc)(*exc.args)
    trainer.free_device_memory()  # the exception (and the frames holding the model) is gone now
    if stop is not None:
        raise stop
    if outcome.get(STATUS) == Status.FAILED:
        side.flush()  # a report whose checkpoint failed still counts
    if side.held is not None:
        outcome[LAST] = side.held
    last = side.last
    if outcome.get(STATUS) == Status.COMPLETED:  # metrics not in the summary: the last report's
        for m in job.spec.metrics:
            if outcome.get(m.name) is None:
                outcome[m.name] = last.get(m.name)
    # schedulers that count reports (hyperband_sync, pbt) see no progress in the final result
    outcome["report"] = last.get("report", 0)
    if job.spec.early_terminate.type == "hyperband_sync":  # it ranks every live trial's last result
        m = job.spec.metric
        if outcome.get(m.name) is None:
            worst = -math.inf if m.mode == "max" else math.inf
            outcome[m.name] = last.get(m.name, worst)
    models = {}
    if kept and cfg is not None and summary is not None and outcome.get(STATUS) == Status.COMPLETED:
        models[trial_id] = (cfg, kept[0], bundle.scores(summary))
    report_final(outcome, models, job, data)


def report_final(
    outcome: dict[str, Any],
    models: dict[str, tuple[TrialConfig, dict[str, Any], dict[str, Any]]],
    job: TrialJob,
    data: Dataset,
) -> None:
    """The trial's final result; with `models` (row id -> config, tested weights, scores of
    each completed member to offer for keep_best) it carries them in a Tune checkpoint."""
    if not models:
        tune.report(outcome)
        return

    def fill(folder: Path) -> None:
        for row_id, (cfg, weights, scores) in models.items():
            info = {"origin": {"sweep": job.spec.name, "trial_id": row_id}, "scores": scores}
            bundle.save(
                folder / checkpoints.MODELS / row_id, cfg, job.spec.data, data, weights, info
            )
        checkpoints.write_final(folder, outcome)

    with checkpoints.reporting(fill) as ckpt:
        tune.report(outcome, checkpoint=ckpt)


def _join(*parts: str) -> str:
    return "; ".join(p for p in parts if p)


def _report_again(restored: checkpoints.Restored) -> None:
    """A trial restored from its final checkpoint reports that final result again (with its
    models), so whatever restarted it sees the trial end as it did."""
    folder = restored.folder
    try:
        with checkpoints.reporting(
            lambda d: shutil.copytree(folder, d, dirs_exist_ok=True)
        ) as ckpt:
            tune.report(dict(restored.final or {}), checkpoint=ckpt)
    finally:
        if folder is not None:
            shutil.rmtree(folder, ignore_errors=True)


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
    if summary.status == Status.COMPLETED:
        for m in spec.metrics:
            out[m.name] = s.get(_FINAL_FROM_SUMMARY.get(m.name, ""), None)
    return out


def run_group(config: dict[str, Any], job: TrialJob, data: Dataset) -> None:
    """Ray Tune function trainable of a fused sweep: the members in config[MEMBERS] (Optuna
    trials the searcher grouped) trained as one group by the shared loop (train_group), each
    reporting and ending as a trial.

    Each evaluation sends one result whose GROUP entries are every live member's report and
    every member that ended (FINAL, with its summary). At each report the shared record
    (job.rungs) decides whether that member stops (the loop then drops it: PRUNED). A member
    whose settings do not make a config fails alone; an exception of the group's loop fails
    the members still in it. A retried group (max_failures) trains only the members whose
    end never reached the driver. With keep_best, the final result carries each completed
    member's tested weights.
    """
    entered = time.time()
    from harness import trainer

    members = list(config[MEMBERS])
    if job.rungs is not None:
        left = set(ray.get(job.rungs.unfinished.remote([m["number"] for m in members])))
        members = [m for m in members if m["number"] in left]
    started = time.time()
    device, shown, note = _choose_device(job.gpu)
    info: dict[str, Any] | None = _where(shown, note, entered, started)
    metric = job.spec.metric.name
    entries: list[dict[str, Any]] = []
    last: dict[int, dict[str, Any]] = {}
    keep = bool(job.spec.keep_best) and checkpoints.storage_reachable()
    kept: dict[int, dict[str, Any]] = {}

    def failed(m: dict[str, Any], exc: BaseException, tb: str = "") -> dict[str, Any]:
        why = _join(note, f"{type(exc).__name__}: {exc}".strip())
        return {MEMBER: m["member"], FINAL: True, STATUS: Status.FAILED, ERROR: why,
                "traceback": tb}  # fmt: skip

    live, cfgs, bad = _group_configs(job.spec, members)
    entries.extend(failed(m, exc, tb) for m, exc, tb in bad)
    running = list(range(len(live)))  # the members alive at the last evaluation

    def report(i: int, metrics: dict[str, Any]) -> str | None:
        m = live[i]
        last[i] = metrics
        entries.append({MEMBER: m["member"], **metrics})
        if job.rungs is None or job.spec.early_terminate.type == "none":
            return None
        value = metrics.get(metric)
        stop = ray.get(job.rungs.decide.remote(m["number"], metrics.get("report"), value))
        # at the group's last report the member has trained to its end: recorded, not stopped
        # (as Ray's ASHA records an unfused trial's last result when it completes)
        return trainer.PRUNE if stop and not metrics.get(schema.LAST) else None

    def ended(indices: list[int], summaries: list[Any]) -> None:
        for i in indices:
            entry = {MEMBER: live[i]["member"], FINAL: True}
            entry.update(_finished(job.spec, summaries[i], shown, note))
            for m in job.spec.metrics:  # metrics not in the summary: the last report's
                if entry[STATUS] == Status.COMPLETED and entry.get(m.name) is None:
                    entry[m.name] = last.get(i, {}).get(m.name)
            entries.append(entry)

    def after_report(loop: Any) -> None:  # one result per evaluation, with who ended
        nonlocal info
        ended([i for i in running if i not in loop.alive], loop.summaries)
        running[:] = list(loop.alive)
        out: dict[str, Any] = {GROUP: list(entries)}
        if info is not None:
            out[INFO] = info
        entries.clear()
        info = None
        tune.report(out)

    stop: BaseException | None = None
    summaries: list[Any] = []
    try:
        if live:
            summaries = trainer.train_group(
                cfgs, data, report, device=device, threads=max(1, round(job.cpu)),
                after_report=after_report, tested=kept.__setitem__ if keep else None,
            )  # fmt: skip
            ended(running, summaries)
    except Exception as exc:  # noqa: BLE001 -- the group's loop raised: its members failed
        tb = traceback.format_exc(limit=20)
        gone = {e[MEMBER] for e in entries if e.get(FINAL)}
        for i in running:
            if live[i]["member"] not in gone:
                entries.append(failed(live[i], exc, tb))
    except BaseException as exc:  # noqa: BLE001 -- Ray's stop (SystemExit), an interrupt
        stop = type(exc)(*exc.args)
    trainer.free_device_memory()
    if stop is not None:
        raise stop
    out: dict[str, Any] = {GROUP: entries, FINAL: True}
    if info is not None:
        out[INFO] = info
    group_id = tune.get_context().get_trial_id()
    models = {
        member_id(group_id, live[i]["member"]): (cfgs[i], w, bundle.scores(summaries[i]))
        for i, w in kept.items()
        if summaries[i].status == Status.COMPLETED
    }
    report_final(out, models, job, data)


def _group_configs(
    spec: SweepSpec, members: list[dict[str, Any]]
) -> tuple[list[dict[str, Any]], list[TrialConfig], list[tuple[dict[str, Any], Exception, str]]]:
    """The members whose values make a valid member of one group, their configs, and the
    others with why (each fails alone)."""
    from harness.trialconfig import check_group

    live, cfgs, bad = [], [], []
    for m in members:
        try:
            cfg = trial_config(spec, m["params"])
            if cfgs:
                check_group([cfgs[0], cfg])
            live.append(m)
            cfgs.append(cfg)
        except Exception as exc:  # noqa: BLE001 -- a failed trial is data
            bad.append((m, exc, traceback.format_exc(limit=20)))
    return live, cfgs, bad


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
