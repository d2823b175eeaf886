"""results/<name>/models/: the saved models of a sweep's top `keep_best` trials.

Weights live in each trial's process, possibly on another node; a trial that completes
sends its tested weights to the driver in the Tune checkpoint of its final result
(harness.sweep.checkpoints). When one arrives the driver ranks every finished trial by the
objective (harness.results.ranking, the first metric for nsga2): the new model is put on the
shelf if its trial is in the top `keep_best`, and every model whose trial fell out is
removed, so a 1,000-trial sweep holds `keep_best` models, never more.

A model is placed atomically: copied into a hidden folder beside the others, then renamed
into place; a model it replaces is renamed away first and deleted after. A folder under
models/ that holds model.json is complete (harness.bundle); hidden leftovers of a crash are
removed when the shelf opens.
"""

from __future__ import annotations

import logging
import os
import shutil
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from harness import bundle
from harness.results import MODELS_DIR, ranking

log = logging.getLogger(__name__)


class ModelShelf:
    """The kept models of one sweep's results folder."""

    def __init__(self, folder: str | os.PathLike, keep: int, goal: str) -> None:
        self.root = Path(folder) / MODELS_DIR
        self.keep = int(keep)
        self.goal = goal
        if self.root.is_dir():
            for p in self.root.iterdir():
                if p.name.startswith("."):
                    shutil.rmtree(p, ignore_errors=True)

    def kept(self) -> list[str]:
        return bundle.kept_models(self.root.parent)

    def top(self, rows: Sequence[Mapping[str, Any]]) -> list[str]:
        return ranking(rows, self.goal, top=self.keep)

    def offer(self, row_id: str, source: Path, rows: Sequence[Mapping[str, Any]]) -> bool:
        """A finished trial's saved model (a folder of harness.bundle files): shelved if its
        trial ranks in the top `keep`; then the models that fell out go. True if shelved."""
        top = self.top(rows)
        shelved = row_id in top and bundle.is_bundle(source)
        if shelved:
            self._place(row_id, source)
        self.prune(top)
        return shelved

    def prune(self, top: Sequence[str]) -> None:
        """Remove every kept model whose trial is not in `top`."""
        for name in self.kept():
            if name not in top:
                self._remove(self.root / name)

    def _place(self, row_id: str, source: Path) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        tag = uuid.uuid4().hex[:8]
        tmp = self.root / f".{row_id}.new-{tag}"
        shutil.copytree(source, tmp)
        for f in tmp.iterdir():  # on disk before the rename publishes them
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
        dest = self.root / row_id
        if dest.exists():
            self._remove(dest)
        os.replace(tmp, dest)
        log.info("kept the model of trial %s in %s", row_id, dest)

    def _remove(self, folder: Path) -> None:
        old = folder.with_name(f".{folder.name}.old-{uuid.uuid4().hex[:8]}")
        try:
            os.replace(folder, old)  # gone from models/ in one step
        except FileNotFoundError:
            return
        shutil.rmtree(old, ignore_errors=True)
        log.info("removed the kept model of trial %s (out of the top %d)", folder.name, self.keep)


def unkept(
    folder: str | os.PathLike, rows: Sequence[Mapping[str, Any]], keep: int, goal: str
) -> list[str]:
    """Trials of the top `keep` (by `goal`) with no model on the shelf: their weights never
    reached it (a fault stopped the sweep first, or the final checkpoint failed), and a
    --resume does not train a finished trial again."""
    top = ranking(rows, goal)[: max(int(keep), 0)]
    kept = set(bundle.kept_models(folder))
    return [t for t in top if t not in kept]
