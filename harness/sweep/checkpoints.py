"""A trial's Tune checkpoints: what the trial puts in them and what the driver takes out.

Every `checkpoint_every` reports (TrainConfig) a trial attaches to that report's result a
Tune checkpoint holding its loop's full state, and when it ends with a model worth keeping
it attaches one to its final result:

    state/           the loop's state (harness.checkpoint: safetensors + JSON)
    final.json       the final result (a trial restored from it reports it again, unchanged)
    models/<row>/    a saved model (harness.bundle) per completed member, named by its row
                     in trials.parquet (the trial id)

Tune copies each into its storage (results/<name>/ray/<trial_id>/checkpoint_<n>/, or under
--storage): a retried trial (max_failures), a paused one (hyperband_sync) and a PBT exploit
continue from there, and `--resume` finds an interrupted trial's last one there. Weights
cross nodes this way, so on a cluster the storage must be shared (a network folder or a
bucket URI). The driver keeps the top trials' models (harness.sweep.shelf) and deletes a
trial's checkpoints when it has ended: a 1,000-trial sweep does not keep 1,000 states.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import pyarrow.fs as pafs
from ray import tune

from harness import checkpoint as loopstate
from harness.sweep.keys import GROUP, SUMMARY

log = logging.getLogger(__name__)

STATE = "state"
FINAL = "final.json"
MODELS = "models"
_PREFIX = "checkpoint_"  # Tune's checkpoint folder names: checkpoint_000003


def temporary(kind: str = "checkpoint") -> Path:
    """A new temporary folder for a checkpoint on its way to storage (or one read back),
    named harness-<kind>-<pid>-*: one that a killed worker left is removed by the next
    trial on the node (remove_orphans)."""
    return Path(tempfile.mkdtemp(prefix=f"harness-{kind}-{os.getpid()}-"))


def remove_orphans(older_than_s: float = 600.0) -> None:
    """Remove the temporary folders (`temporary`) of worker processes that are gone: a worker
    killed between writing a checkpoint and reporting it never removed its own. Only those
    untouched for `older_than_s` (a /tmp shared with another machine's processes, whose
    numbers mean nothing here, keeps its folders in use)."""
    now = time.time()
    for folder in Path(tempfile.gettempdir()).glob("harness-*-*-*"):
        parts = folder.name.split("-", 3)
        if len(parts) != 4 or parts[1] not in ("checkpoint", "final") or not parts[2].isdigit():
            continue
        try:
            if now - folder.stat().st_mtime < older_than_s:
                continue
            os.kill(int(parts[2]), 0)
        except ProcessLookupError:  # gone: nothing will remove it
            shutil.rmtree(folder, ignore_errors=True)
        except OSError:  # removed meanwhile, or another user's process (alive)
            pass


@contextlib.contextmanager
def reporting(fill: Callable[[Path], None]) -> Iterator[tune.Checkpoint]:
    """A Tune checkpoint of a temporary folder that `fill` writes; the folder is removed once
    the `with` ends (tune.report has copied it into storage by then)."""
    folder = temporary()
    try:
        fill(folder)
        yield tune.Checkpoint.from_directory(str(folder))
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def write_state(folder: Path, state: dict[str, Any]) -> None:
    loopstate.write(folder / STATE, state)


def write_final(folder: Path, outcome: dict[str, Any]) -> None:
    (folder / FINAL).write_text(json.dumps(outcome, default=str), encoding="utf-8")


def named(restore: dict[str, Any] | None) -> tune.Checkpoint | None:
    """The checkpoint a --resume plan named for a rerun trial (keys.RESTORE), if any."""
    if not restore:
        return None
    return tune.Checkpoint(path=str(restore["path"]))


@dataclass
class Restored:
    """What a trial found in the checkpoint it was started from."""

    state: dict[str, Any] | None  # the loop's state, or None for a final checkpoint
    final: dict[str, Any] | None  # the final result of a trial that had ended
    source: str  # trial id whose checkpoint it is (another trial's after a PBT exploit)
    iteration: int
    folder: Path | None = None  # a local copy of a final checkpoint (to report it again)

    def note(self, trial_id: str) -> str:
        whose = "its" if self.source == trial_id else f"trial {self.source}'s"
        return f"continued from {whose} checkpoint at iteration {self.iteration}"


def restore(ckpt: tune.Checkpoint | None) -> Restored | None:
    """Read a checkpoint the trial starts from (None: start afresh)."""
    if ckpt is None:
        return None
    source = PurePosixPath(str(ckpt.path)).parent.name
    with ckpt.as_directory() as d:
        folder = Path(d)
        if (folder / FINAL).is_file():
            final = json.loads((folder / FINAL).read_text(encoding="utf-8"))
            copy = temporary("final")
            shutil.copytree(folder, copy, dirs_exist_ok=True)
            ends = [e.get(SUMMARY) or {} for e in final.get(GROUP) or ()]
            iteration = max((int(s.get("iterations") or 0) for s in ends), default=0)
            return Restored(None, final, source, iteration, copy)
        if not loopstate.is_checkpoint(folder / STATE):
            return None  # not ours (or incomplete): start afresh
        state = loopstate.read(folder / STATE)
    return Restored(state, None, source, int(state["counters"]["step_count"]))


@contextlib.contextmanager
def final_models(ckpt: tune.Checkpoint) -> Iterator[dict[str, Path]]:
    """The saved models in a final checkpoint, by row id ({} for a state checkpoint)."""
    with ckpt.as_directory() as d:
        models = Path(d) / MODELS
        yield {p.name: p for p in sorted(models.iterdir())} if models.is_dir() else {}


def storage_reachable() -> bool:
    """Whether this trial's node can write Tune's storage (Ray's own check; a local folder on
    the head is not reachable from other nodes). Unknown counts as reachable."""
    try:
        from ray.train._internal.session import get_session

        get_session().storage._check_validation_file()
    except RuntimeError:
        return False
    except Exception:  # noqa: BLE001 -- no session or a moved private API: let Tune decide
        return True
    return True


# ------------------------------------------------------------------ storage (driver side)


def experiment_dir(folder: Path, storage: str | None, name: str) -> str:
    """Where Tune keeps this sweep's experiment: results/<name>/ray, or <storage>/<name>
    (the same place harness.sweep.runner hands Tune)."""
    from harness.results import RAY_DIR

    return f"{storage.rstrip('/')}/{name}" if storage else str(folder / RAY_DIR)


def _fs(uri: str) -> tuple[pafs.FileSystem, str]:
    if "://" in uri:
        return pafs.FileSystem.from_uri(uri)
    return pafs.LocalFileSystem(), str(Path(uri).resolve())


def _uri(base: str, fs_path: str) -> str:
    """A path on base's filesystem as something tune.Checkpoint(path=...) resolves again."""
    if "://" in base:
        scheme = base.split("://", 1)[0]
        return f"{scheme}://{fs_path}" if scheme != "file" else f"file://{fs_path}"
    return fs_path


def _checkpoints(fs: pafs.FileSystem, trial_path: str) -> list[str]:
    try:
        infos = fs.get_file_info(pafs.FileSelector(trial_path, allow_not_found=True))
    except OSError:
        return []
    names = [i.base_name for i in infos if i.type == pafs.FileType.Directory]
    return sorted(n for n in names if n.startswith(_PREFIX))


def latest_state(
    exp_dir: str,
    trial_id: str,
    usable: Callable[[int], bool] = lambda it: True,
    members: int = 1,
) -> dict[str, Any] | None:
    """An interrupted trial's newest complete state checkpoint in Tune's storage whose
    iteration is `usable` (its report reached the tables) and whose loop was training all
    `members` of its group (a fused group's members 0 to members-1; a member that had ended
    makes the checkpoint one the group cannot go on from): {path, trial_id, iteration}."""
    fs, root = _fs(exp_dir)
    trial_path = f"{root}/{trial_id}"
    everyone = list(range(members))
    for name in reversed(_checkpoints(fs, trial_path)):
        tree = f"{trial_path}/{name}/{STATE}/{loopstate.TREE}"
        try:
            with fs.open_input_stream(tree) as f:
                state = json.loads(f.read().decode("utf-8"))
        except (OSError, ValueError):
            continue
        iteration = int(state.get("counters", {}).get("step_count", 0))
        trained = state.get("group", everyone), state.get("alive", everyone)
        if trained == (everyone, everyone) and usable(iteration):
            return {"path": _uri(exp_dir, f"{trial_path}/{name}"), "trial_id": trial_id,
                    "iteration": iteration}  # fmt: skip
    return None


def kept_per_trial(spec: Any) -> int:
    """Checkpoints a trial keeps in storage: its last is all a retry or a pause needs; PBT
    clones from others' checkpoints a little later (Ray warns below 3)."""
    return 4 if spec.early_terminate.type == "pbt" else 1


def keep_newest(checkpoint: Any, keep: int) -> None:
    """A trial reported `checkpoint`: remove the ones older than it but the newest `keep`
    (counting it). Newer ones stay: the worker may have written its next before the driver
    got here. (Tune's own num_to_keep would save the whole experiment state at every
    checkpoint.)"""
    try:
        fs, path = checkpoint.filesystem, str(checkpoint.path)
    except AttributeError:
        return
    trial_path, name = str(PurePosixPath(path).parent), PurePosixPath(path).name
    older = [n for n in _checkpoints(fs, trial_path) if n <= name]
    for old in older[:-keep]:
        _delete(fs, f"{trial_path}/{old}")


def delete_trial(trial: Any) -> None:
    """Remove every checkpoint Tune keeps for an ended trial."""
    try:
        fs, path = trial.storage.storage_filesystem, trial.storage.trial_fs_path
    except AttributeError:
        return
    for name in _checkpoints(fs, path):
        _delete(fs, f"{path}/{name}")


def delete_all(exp_dir: str, trial_id: str) -> None:
    """Remove every checkpoint a trial left in Tune's storage (one that ended before a
    --resume; the run that goes on from it has read it)."""
    fs, root = _fs(exp_dir)
    for name in _checkpoints(fs, f"{root}/{trial_id}"):
        _delete(fs, f"{root}/{trial_id}/{name}")


def delete_beside(uri: str) -> None:
    """Remove the checkpoint a path or URI names and every other one of its trial."""
    fs, path = _fs(uri)
    trial_path = str(PurePosixPath(path).parent)
    for name in _checkpoints(fs, trial_path):
        _delete(fs, f"{trial_path}/{name}")


def _delete(fs: pafs.FileSystem, path: str) -> None:
    try:
        fs.delete_dir(path)
    except FileNotFoundError:
        pass
    except OSError as exc:
        log.warning("could not delete checkpoint %s: %s", path, exc)
