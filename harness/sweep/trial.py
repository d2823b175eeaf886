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
from harness.sweep import checkpoints, keys
from harness.sweep.keys import ERROR, FINAL, GROUP, INFO, MEMBER, RESTORE, STATUS, SUMMARY
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


def trial_config(spec: SweepSpec, params: dict[str, Any]) -> TrialConfig:
    """The trial's config; hyperband_sync pauses and PBT clones trials at any report, so there
    a checkpoint follows every report unless checkpoint_every is set."""
    cfg = spec.trial_config(params)
    given = {**spec.train, **spec.parameters, **params}
    if spec.early_terminate.type in ("hyperband_sync", "pbt") and "checkpoint_every" not in given:
        cfg = replace_train(cfg, checkpoint_every=1)
    return cfg


def run_trial(config: dict[str, Any], job: TrialJob, data: Dataset) -> None:
    """Ray Tune function trainable of every sweep: the Ray trial's members (keys.members: a
    fused group's, or the trial itself as the group of one) trained together by the shared
    loop (trainer.train_group), each reporting and ending as a trial (TrialSide).

    Started from a checkpoint (a retry, a paused or PBT-exploited trial, a --resume), it
    goes on from there with the members it was taken with; a retried group leaves out the
    members whose end reached the driver (job.rungs). A member whose settings do not make
    a config fails alone; an exception of the loop fails the members still in it (user-side
    exceptions are deterministic: FAILED data, not retried); Ray's stop (SystemExit from
    tune.report) passes through after device memory is freed.
    """
    entered = time.time()
    from harness import trainer

    started = time.time()
    trial_id = tune.get_context().get_trial_id()
    device, shown, note = _choose_device(job.gpu)
    checkpoints.remove_orphans()
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
    members = keys.members(config)
    gone = _ended_members(job, members)
    state = {} if restored is None else restored.state or {}
    # a clone of another trial (PBT) says so for good; its own checkpoint only this time
    lineage: list[str] = list(state.get("lineage", []))
    if restored is not None:
        if restored.source != trial_id:
            lineage.append(restored.note(trial_id))
        note = _join(note, *lineage, restored.note(trial_id) if restored.source == trial_id else "")
    if "group" in state:  # the members its loop was built with
        members = [m for m in members if m["member"] in state["group"]]
    else:  # a retried group trains only the members whose end never reached the driver
        members = [m for m in members if m["number"] not in gone]
    live, cfgs, bad = _group_configs(job.spec, members)
    side = TrialSide(job, live, _where(shown, note, entered, started), note, lineage, shown)
    side.gone = gone
    if "alive" in state:
        side.running = [int(i) for i in state["alive"]]
    side.entries.extend(side.failed(m, exc, tb) for m, exc, tb in bad)
    stop: BaseException | None = None
    summaries: list[Any] = []
    try:
        if live:
            summaries = trainer.train_group(
                cfgs, data, side.report, device=device, threads=max(1, round(job.cpu)),
                after_report=side.after_report,
                checkpoint=side.checkpoint if reachable else None,
                state=None if restored is None else restored.state,
                tested=side.kept.__setitem__ if job.spec.keep_best and reachable else None,
            )  # fmt: skip
            side.ended(side.running, summaries)
    except Exception as exc:  # noqa: BLE001 -- a failed trial is data, not a crash
        side.fail(exc, traceback.format_exc(limit=20))
    except BaseException as exc:  # noqa: BLE001 -- Ray's stop (SystemExit), an interrupt
        stop = type(exc)(*exc.args)
    side.drop_checkpoint()
    trainer.free_device_memory()  # the exception (and the frames holding the model) is gone now
    if stop is not None:
        raise stop
    models = {
        keys.row_id(trial_id, config, live[i]["member"]): (cfgs[i], w, side.scores[i])
        for i, w in side.kept.items()
        if i in side.scores
    }
    report_final(side.final(), models, job, data)


class TrialSide:
    """The trial's results to Tune, one per evaluation: every live member's report and every
    member that ended there (GROUP entries; a member's end, FINAL, with its summary).

    - A checkpoint due after an evaluation travels with that evaluation's result (the
      schedulers count results: one per evaluation).
    - The evaluation after which no member is left is held back and travels inside the
      trial's final result. The loop says when that is (it knows the budget, patience and
      divergence): a trial stopped at a result it is shown (ASHA at a rung or at max_t) is
      PRUNED, untested, though it ran its whole budget; so a trial that ran its budget
      always ends COMPLETED (or DIVERGED).
    - `scheduled` (an unfused sweep's trial, judged by Tune's scheduler): results also carry
      its one member's objective(s) and report index at the top level, where the scheduler
      reads them. Members of fused groups are judged one by one by the shared record
      (job.rungs): PRUNE stops a member (the loop drops it), never at its last report."""

    def __init__(
        self, job: TrialJob, live: list[dict[str, Any]], info: dict[str, Any], note: str,
        lineage: list[str], shown: str,
    ) -> None:  # fmt: skip
        from harness.trainer import PRUNE  # the loop (torch) is imported inside the trial

        self.prune = PRUNE
        self.job = job
        self.shown = shown  # the device as recorded
        self.live = live  # the members the loop trains, by loop index
        self.info: dict[str, Any] | None = info  # sent with the first result
        self.note = note
        self.lineage = lineage  # other trials' checkpoints this one went on from (PBT)
        self.scheduled = job.rungs is None
        self.entries: list[dict[str, Any]] = []  # what the next result carries
        self.last: dict[int, dict[str, Any]] = {}  # each member's last report
        self.running = list(range(len(live)))  # members alive at the last evaluation
        self.kept: dict[int, dict[str, Any]] = {}  # tested weights of completed members
        self.scores: dict[int, dict[str, Any]] = {}  # and their scores (bundle.scores)
        self.folder: Path | None = None  # a checkpoint written at this evaluation
        self.gone: set[int] = set()  # numbers whose end reached the driver (a retried group)

    def failed(self, m: dict[str, Any], exc: BaseException, tb: str = "") -> dict[str, Any]:
        why = _join(self.note, f"{type(exc).__name__}: {exc}".strip())
        return {MEMBER: m["member"], FINAL: True, STATUS: Status.FAILED, ERROR: why,
                "traceback": tb}  # fmt: skip

    def report(self, i: int, metrics: dict[str, Any]) -> str | None:
        """Member i's evaluation; PRUNE when the shared record stops it."""
        m = self.live[i]
        self.last[i] = metrics
        self.entries.append({MEMBER: m["member"], **metrics})
        if m["number"] in self.gone:
            return self.prune  # its end is recorded: it does not train on
        if self.job.rungs is None or self.job.spec.early_terminate.type == "none":
            return None
        value = metrics.get(self.job.spec.metric.name)
        stop = ray.get(self.job.rungs.decide.remote(m["number"], metrics.get("report"), value))
        return self.prune if stop and not metrics.get(schema.LAST) else None

    def checkpoint(self, state: dict[str, Any]) -> None:
        """The loop's state after this evaluation, written now (its tensors are live), sent
        with the evaluation's result."""
        self.drop_checkpoint()
        folder = checkpoints.temporary()
        self.folder = folder
        group = [m["member"] for m in self.live]
        checkpoints.write_state(folder, {**state, "lineage": self.lineage, "group": group})

    def drop_checkpoint(self) -> None:
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)
            self.folder = None

    def after_report(self, loop: Any) -> None:
        """The evaluation's result, with the members that ended there (held back when none
        is left: it goes with the final result)."""
        self.ended([i for i in self.running if i not in loop.alive], loop.summaries)
        self.running = list(loop.alive)
        if not self.running:
            return
        out = self._result()
        if self.folder is None:
            tune.report(out)
            return
        try:
            tune.report(out, checkpoint=tune.Checkpoint.from_directory(str(self.folder)))
        finally:
            self.drop_checkpoint()

    def ended(self, indices: list[int], summaries: list[Any]) -> None:
        """End entries of these members (their summaries; a completed member's objectives
        are its kept weights', or its last report's where the summary has none)."""
        for i in indices:
            entry = {MEMBER: self.live[i]["member"], FINAL: True}
            entry.update(_finished(self.job.spec, summaries[i], self.shown, self.note))
            if summaries[i].status == Status.COMPLETED:
                self.scores[i] = bundle.scores(summaries[i])
            for m in self.job.spec.metrics:
                if entry[STATUS] == Status.COMPLETED and entry.get(m.name) is None:
                    entry[m.name] = self.last.get(i, {}).get(m.name)
            self.entries.append(entry)
        self.running = [i for i in self.running if i not in indices]

    def fail(self, exc: BaseException, tb: str) -> None:
        """The loop raised: the members still in it failed."""
        gone = {e[MEMBER] for e in self.entries if e.get(FINAL)}
        for i in self.running:
            if self.live[i]["member"] not in gone:
                self.entries.append(self.failed(self.live[i], exc, tb))
        self.running = []

    def final(self) -> dict[str, Any]:
        """The trial's final result; a scheduled trial's carries its member's objectives
        when it completed (hyperband_sync ranks every live trial's last result: there the
        last report's, or a worst value) and its report count (schedulers that count
        reports see no progress in it)."""
        out = self._result(top=False)
        out[FINAL] = True
        if self.scheduled:
            end = next((e for e in out[GROUP] if e.get(FINAL)), {})
            last = self.last.get(0, {})
            for m in self.job.spec.metrics:
                if end.get(m.name) is not None:
                    out[m.name] = end[m.name]
            if self.job.spec.early_terminate.type == "hyperband_sync":
                m = self.job.spec.metric
                if out.get(m.name) is None:
                    out[m.name] = last.get(m.name, -math.inf if m.mode == "max" else math.inf)
            out["report"] = last.get("report", 0)
        return out

    def _result(self, top: bool = True) -> dict[str, Any]:
        """The entries so far (and the trial's place, first time); `top`: a scheduled
        trial's objectives and report index at the top level, for Tune's scheduler."""
        out: dict[str, Any] = {GROUP: self.entries}
        if top and self.scheduled and self.last:
            report = self.last[0]
            out.update({m.name: report[m.name] for m in self.job.spec.metrics if m.name in report})
            out["report"] = report.get("report")
        if self.info is not None:
            out[INFO], self.info = self.info, None
        self.entries = []
        return out


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


def _ended_members(job: TrialJob, members: list[dict[str, Any]]) -> set[int]:
    """The members (Optuna numbers) whose end reached the driver: a retried group's."""
    if job.rungs is None:
        return set()
    numbers = [m["number"] for m in members]
    return set(numbers) - set(ray.get(job.rungs.unfinished.remote(numbers)))


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
    """run_trial as Tune's trainable: the job (with `rungs`, the members' record of a fused
    sweep) and the data shipped once through the object store, each trial holding the
    spec's cpu and gpu share."""
    job = TrialJob(spec=spec, cpu=spec.resources.cpu, gpu=spec.resources.gpu, rungs=rungs)
    return tune.with_resources(
        tune.with_parameters(run_trial, job=job, data=data),
        {"cpu": spec.resources.cpu, "gpu": spec.resources.gpu},
    )
