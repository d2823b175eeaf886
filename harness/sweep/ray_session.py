"""Ray for one sweep: is the cluster there, join it or start a private one, does a trial fit,
and where Ray's (and Optuna's) log lines go while the sweep runs."""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow.fs as pafs
import ray
from ray import tune

from harness import results as rs
from harness.config import SweepSpec
from harness.errors import UserError

if TYPE_CHECKING:
    from harness.sweep.console import Console

# The package's logger: its modules log to children of it (harness.sweep.run, ...).
_sweep_log = logging.getLogger("harness.sweep")


class LogRoute:
    """While a sweep runs, log records of Ray, Tune and Optuna (and Python warnings) go to
    results/<name>/ray.log: their own console handlers come off and they propagate to one
    file handler on the root logger (ray.init clears the "ray" logger's handlers, so a
    handler there would not survive). The console keeps the harness's own lines. Undone by
    close()."""

    PREFIXES = ("ray", "optuna")

    def __init__(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.handler = _QuietFileHandler(folder / rs.LOG_FILE)
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
        self.level = _sweep_log.level
        _sweep_log.setLevel(logging.INFO)
        logging.captureWarnings(True)

    def close(self) -> None:
        for lg, handlers, propagate in self.saved:
            for h in list(lg.handlers):
                lg.removeHandler(h)
            for h in handlers:
                lg.addHandler(h)
            lg.propagate = propagate
        self.root.removeHandler(self.handler)
        _sweep_log.setLevel(self.level)
        logging.captureWarnings(False)
        self.handler.close()


class _QuietFileHandler(logging.FileHandler):
    """ray.log on a full disk: lines are lost quietly, not a traceback on stderr per line
    (the tables' writer meets the same fault and stops the sweep with one line)."""

    def handleError(self, record: logging.LogRecord) -> None:  # logging's own name
        pass

    def flush(self) -> None:
        with contextlib.suppress(OSError):
            super().flush()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            super().close()


class ResultFiles(tune.Callback):
    """An empty result.json in each trial's folder of Ray Tune's storage, made when the trial
    starts. Why: when Tuner.fit() ends, Ray builds an ExperimentAnalysis
    (ray/tune/analysis/experiment_analysis.py, `_fetch_trial_dataframes`) that reads every
    trial's result.json or progress.csv, which Tune's own loggers write; the harness turns
    those off (TUNE_DISABLE_AUTO_CALLBACK_LOGGERS: results.py writes the tables), so each
    trial that reported would log `Failed to fetch metrics ... result.json and progress.csv
    were not found` into ray.log. An empty result.json reads as "no rows", so ray.log keeps
    its warnings for real problems."""

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        storage = trial.storage
        path = f"{storage.trial_fs_path}/result.json"
        fs = storage.storage_filesystem
        try:
            if fs.get_file_info(path).type == pafs.FileType.NotFound:
                fs.create_dir(storage.trial_fs_path, recursive=True)
                with fs.open_output_stream(path):
                    pass
        except Exception as exc:  # noqa: BLE001 -- best effort: at worst Ray's warning comes back
            logging.getLogger(__name__).debug("no empty result.json for %s: %s", trial, exc)


def check_reachable(address: str) -> None:
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


def init_ray(address: str | None, spec: SweepSpec) -> dict[str, Any]:
    """Join a cluster (address / RAY_ADDRESS) or start a private local Ray on 127.0.0.1;
    returns what the sweep records about it (address, dashboard, cpus, gpus, nodes)."""
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
    return {
        "address": ctx.address_info.get("gcs_address") if ctx is not None else "existing",
        "dashboard": (ctx.dashboard_url or "") if ctx is not None else "",
        "joined": bool(address),
        "cpus": res.get("CPU", 0),
        "gpus": res.get("GPU", 0),
        "nodes": len([n for n in ray.nodes() if n.get("Alive")]),
    }


def check_fits(spec: SweepSpec, cluster: Mapping[str, Any], console: Console | None) -> None:
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


def check_storage(storage: str, given: bool, cluster: Mapping[str, Any]) -> None:
    """On a joined cluster, refuse before any trial runs when Tune's storage is a folder that
    some node cannot see. Checkpoints (what a retried trial goes on from) and the kept models
    (how a trial's weights reach the driver) travel through it: on a worker's own disk they
    would be lost with it. The driver leaves a file in the folder and asks every node that
    can run a trial whether it sees that file at the same path. A URI (s3://...) is shared
    by nature; nodes that join later are checked by their trials (harness.sweep.trial)."""
    if not cluster.get("joined") or "://" in storage:
        return
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    nodes = [
        n for n in ray.nodes()
        if n.get("Alive") and any(n.get("Resources", {}).get(r, 0) > 0 for r in ("CPU", "GPU"))
    ]  # fmt: skip
    what = "--storage" if given else "Tune's storage (the default, results/<name>/ray)"
    folder = Path(storage).resolve()
    probe = folder / f".harness-probe-{uuid.uuid4().hex[:12]}"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe.write_text("a file the sweep's driver wrote; every node should see it\n")
    except OSError as exc:
        raise UserError(f"{what} {folder}: cannot write there ({exc.strerror or exc})") from None
    try:
        asked = {
            n["NodeManagerAddress"]: _sees.options(
                scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)
            ).remote(str(probe))
            for n in nodes
        }
        blind = []
        for ip, ref in asked.items():
            try:
                if not ray.get(ref, timeout=120):
                    blind.append(ip)
            except ray.exceptions.GetTimeoutError:  # busy or gone: its trials check again
                _sweep_log.warning("node %s did not say whether it sees %s", ip, folder)
    finally:
        probe.unlink(missing_ok=True)
    if blind:
        raise UserError(
            f"{what} {folder}: node(s) {', '.join(sorted(blind))} cannot see this folder; on a "
            "cluster, trials keep their checkpoints and send their kept models through it, so "
            "it must be one every node mounts at the same path (--storage /shared/folder) or a "
            "bucket URI (--storage s3://bucket/path)"
        )


@ray.remote(num_cpus=0)
def _sees(path: str) -> bool:
    return os.path.exists(path)
