"""Where a run's numbers go besides the Parquet tables: TensorBoard event files, and MLflow
when a sweep asks for it.

Why here and not in the trial: the driver sees every report of every trial (the sweep's
callback) and every report of a `harness.train` run, so one process writes all event files:
nothing to install or configure on the workers, and the files land beside the tables
(`results/<name>/tb/<trial_id>/`, `<run>/tb/`), wherever the trials ran. Ray Tune's own
loggers stay off (harness.sweep): they would write a second, differently named copy.

The tags follow the classic repo's (`loss/train`, `loss/dev`, `acc/train`, `acc/dev`) at
the loop's iteration (batches trained), so its TensorBoard habits carry over; the gradient
statistics sit under `grad/` and, per layer, under `layer_grad_norm/` and `layer_vanish_frac/`.

A tracker that fails (a full disk, an MLflow server gone away) is switched off with one
warning in the log; it never ends a trial or a sweep.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import socket
import struct
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.schema import LAYERS, Status
from harness.values import finite

log = logging.getLogger(__name__)

TB_DIR = "tb"  # results/<name>/tb/<trial_id>/, <run folder>/tb/

# report key -> TensorBoard tag
SCALARS: dict[str, str] = {
    "train_loss": "loss/train",
    "dev_loss": "loss/dev",
    "train_acc": "acc/train",
    "dev_acc": "acc/dev",
    "best_dev_loss": "best/dev_loss",
    "best_dev_acc": "best/dev_acc",
    "lr": "lr",
    "grad_norm": "grad/norm",
    "grad_norm_max": "grad/norm_max",
    "grad_max_abs": "grad/max_abs",
    "grad_vanish_frac": "grad/vanish_frac",
    "embed_vanish_frac": "grad/embed_vanish_frac",
    "grad_clip_frac": "grad/clip_frac",
    "update_ratio": "grad/update_ratio",
}
# layer column -> tag prefix (the tag is prefix/<layer name>)
LAYER_SCALARS: dict[str, str] = {
    "grad_norm": "layer_grad_norm",
    "vanish_frac": "layer_vanish_frac",
}
# a trial's status -> MLflow run status
MLFLOW_STATUS = {Status.COMPLETED: "FINISHED", Status.PRUNED: "KILLED", Status.FAILED: "FAILED",
                 Status.DIVERGED: "FAILED"}  # fmt: skip


def scalars(report: Mapping[str, Any]) -> dict[str, float]:
    """One report as {tag: value}: the finite numbers of SCALARS and LAYER_SCALARS."""
    out = {tag: float(report[k]) for k, tag in SCALARS.items() if finite(report.get(k))}
    layers = report.get(LAYERS) or {}
    names = layers.get("layer") or []
    for col, prefix in LAYER_SCALARS.items():
        for name, value in zip(names, layers.get(col) or []):
            if finite(value):
                out[f"{prefix}/{name}"] = float(value)
    return out


def have_mlflow() -> bool:
    return importlib.util.find_spec("mlflow") is not None


@dataclass(frozen=True)
class MlflowSpec:
    """`mlflow: {tracking_uri, experiment}` of a sweep file: one MLflow run per trial."""

    tracking_uri: str
    experiment: str | None = None  # None: the sweep's name


class TensorBoard:
    """Event files under `root`: one folder per key (a trial id), or `root` itself (key '')."""

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)
        self.writers: dict[str, Any] = {}
        self.broken = False

    def __getstate__(self) -> dict[str, Any]:
        # Tune pickles its callbacks (tuner.pkl) before any trial runs: no open writers then,
        # and a copy must never share the original's.
        return {**self.__dict__, "writers": {}}

    def folder(self, key: str = "") -> Path:
        return self.root / key if key else self.root

    def start(self, key: str = "", text: Mapping[str, str] | None = None, fresh: bool = True) -> None:
        """A fresh event folder for `key` (a trial run again from the start replaces the old
        curves, as its table rows are), with `text` (e.g. its parameters) as text summaries;
        fresh=False: the trial goes on from a checkpoint and its curves go on too."""
        if not fresh:
            return
        self.drop(key)
        for tag, value in (text or {}).items():
            self._do(key, lambda w, t=tag, v=value: w.add_text(t, v, 0))

    def log(self, report: Mapping[str, Any], key: str = "") -> None:
        step = int(report.get("iteration") or 0)
        self._do(key, lambda w: w.add_scalars(scalars(report), step))

    def rename(self, old: str, new: str) -> None:
        """A trial that goes on from another's checkpoint under a new id takes its curves."""
        self.close(old)
        source = self.folder(old)
        if old and new and source.is_dir() and not self.folder(new).exists():
            try:
                source.rename(self.folder(new))
            except OSError as exc:
                self._fail(exc)

    def drop(self, key: str) -> None:
        """A trial whose rows a resume dropped (it runs again, under another id): its curves go."""
        self.close(key)
        if key:
            shutil.rmtree(self.folder(key), ignore_errors=True)

    def close(self, key: str = "") -> None:
        w = self.writers.pop(key, None)
        if w is not None:
            try:
                w.close()
            except Exception as exc:  # noqa: BLE001 -- a tracker never ends a run
                self._fail(exc)

    def close_all(self) -> None:
        for key in list(self.writers):
            self.close(key)

    def _do(self, key: str, write: Any) -> None:
        if self.broken:
            return
        try:
            w = self.writers.get(key)
            if w is None:
                w = self.writers[key] = EventFile(self.folder(key))
            write(w)
        except Exception as exc:  # noqa: BLE001 -- a tracker never ends a run
            self._fail(exc)

    def _fail(self, exc: Exception) -> None:
        self.broken = True
        log.warning("TensorBoard event files under %s switched off: %s", self.root, exc)


class EventFile:
    """One TensorBoard event file, written and flushed in the caller's thread at each call.

    Why not tensorboardX's SummaryWriter: it writes from a thread of its own, so an error
    there (a full disk) ends as a traceback on stderr instead of reaching `_fail`. The
    records are tensorboardX's own event protos in TFRecord framing."""

    _count = 0

    def __init__(self, folder: Path) -> None:
        from tensorboardX.proto.event_pb2 import Event

        folder.mkdir(parents=True, exist_ok=True)
        EventFile._count += 1
        name = (
            f"events.out.tfevents.{int(time.time())}.{socket.gethostname()}."
            f"{os.getpid()}.{EventFile._count}"
        )
        self.file = open(folder / name, "wb")  # noqa: SIM115 -- closed by close()
        self._write(Event(wall_time=time.time(), file_version="brain.Event:2"))

    def _write(self, event: Any) -> None:
        from tensorboardX.record_writer import masked_crc32c

        data = event.SerializeToString()
        header = struct.pack("Q", len(data))
        self.file.write(header + struct.pack("I", masked_crc32c(header)))
        self.file.write(data + struct.pack("I", masked_crc32c(data)))
        self.file.flush()

    def add_scalars(self, values: Mapping[str, float], step: int) -> None:
        from tensorboardX.proto.event_pb2 import Event
        from tensorboardX.proto.summary_pb2 import Summary

        summary = Summary(value=[Summary.Value(tag=t, simple_value=v) for t, v in values.items()])
        self._write(Event(wall_time=time.time(), step=step, summary=summary))

    def add_text(self, tag: str, text: str, step: int) -> None:
        from tensorboardX.proto.event_pb2 import Event
        from tensorboardX.summary import text as text_summary

        self._write(Event(wall_time=time.time(), step=step, summary=text_summary(tag, text)))

    def close(self) -> None:
        self.file.close()


class MLflow:
    """One MLflow run per key (trial) in one experiment, through MlflowClient (no global
    active run, so concurrent trials do not share one). Connects on first use."""

    def __init__(self, spec: MlflowSpec, experiment: str) -> None:
        self.spec = spec
        self.experiment = spec.experiment or experiment
        self.client: Any = None
        self.experiment_id: str | None = None
        self.runs: dict[str, str] = {}
        self.broken = False

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "client": None, "runs": {}}

    def _connect(self) -> Any:
        if self.client is None:
            from mlflow import MlflowClient

            self.client = MlflowClient(tracking_uri=self.spec.tracking_uri)
            found = self.client.get_experiment_by_name(self.experiment)
            self.experiment_id = (
                found.experiment_id if found else self.client.create_experiment(self.experiment)
            )
        return self.client

    def start(self, key: str, name: str, params: Mapping[str, Any]) -> None:
        def go() -> None:
            from mlflow.entities import Param

            client = self._connect()
            run = client.create_run(
                self.experiment_id, run_name=name, tags={"harness.trial_id": key}
            )
            self.runs[key] = run.info.run_id
            client.log_batch(
                run.info.run_id, params=[Param(str(k), str(v)[:500]) for k, v in params.items()]
            )

        self._do(go)

    def log(self, report: Mapping[str, Any], key: str) -> None:
        def go() -> None:
            from mlflow.entities import Metric

            ms = int(time.time() * 1000)
            step = int(report.get("iteration") or 0)
            metrics = [Metric(tag, v, ms, step) for tag, v in scalars(report).items()]
            self._connect().log_batch(self.runs[key], metrics=metrics)

        if key in self.runs:
            self._do(go)

    def end(self, key: str, status: str) -> None:
        run_id = self.runs.pop(key, None)
        if run_id is not None:
            self._do(lambda: self._connect().set_terminated(
                run_id, status=MLFLOW_STATUS.get(status, "FINISHED")))  # fmt: skip

    def _do(self, go: Any) -> None:
        if self.broken:
            return
        try:
            go()
        except Exception as exc:  # noqa: BLE001 -- a tracker never ends a run
            self.broken = True
            log.warning("MLflow logging to %s switched off: %s", self.spec.tracking_uri, exc)


class Trackers:
    """What a sweep's callback feeds, trial by trial: TensorBoard and/or MLflow (either may
    be absent; with neither, every call does nothing)."""

    def __init__(self, tensorboard: TensorBoard | None = None, mlflow: MLflow | None = None):
        self.tensorboard = tensorboard
        self.mlflow = mlflow

    @classmethod
    def for_sweep(cls, spec: Any, folder: Path) -> Trackers:
        """The trackers a SweepSpec asks for (`tensorboard`, `mlflow`)."""
        return cls(
            TensorBoard(folder / TB_DIR) if spec.tensorboard else None,
            MLflow(spec.mlflow, spec.name) if spec.mlflow is not None else None,
        )

    def start(self, key: str, name: str, params: Mapping[str, Any], fresh: bool = True) -> None:
        """fresh=False: the trial goes on from a checkpoint (its curves go on)."""
        if self.tensorboard is not None:
            text = {"trial": name, **{f"param/{k}": str(v) for k, v in params.items()}}
            self.tensorboard.start(key, text, fresh)
        if self.mlflow is not None:
            self.mlflow.start(key, name, params)

    def report(self, key: str, report: Mapping[str, Any]) -> None:
        if self.tensorboard is not None:
            self.tensorboard.log(report, key)
        if self.mlflow is not None:
            self.mlflow.log(report, key)

    def end(self, key: str, status: str) -> None:
        if self.tensorboard is not None:
            self.tensorboard.close(key)
        if self.mlflow is not None:
            self.mlflow.end(key, status)

    def drop(self, key: str) -> None:
        """A trial's rows were dropped (it runs again from the start): its curves go too."""
        if self.tensorboard is not None:
            self.tensorboard.drop(key)

    def rename(self, old: str, new: str) -> None:
        if self.tensorboard is not None:
            self.tensorboard.rename(old, new)

    def keep(self, keys: Iterable[str]) -> None:
        """On resume: the curves of trials the tables no longer hold (dropped, to run again
        under another id; or killed before their row was written) go, as their rows did."""
        tb = self.tensorboard
        if tb is not None and tb.root.is_dir():
            for folder in {p.name for p in tb.root.iterdir() if p.is_dir()} - set(keys):
                tb.drop(folder)

    def close(self) -> None:
        if self.tensorboard is not None:
            self.tensorboard.close_all()
