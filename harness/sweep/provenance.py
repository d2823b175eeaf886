"""What sweep.json records about a run, so a results folder says how it was made: the
resolved spec, the command, host, git revision, package versions, the Ray cluster and the
data it saw."""

from __future__ import annotations

import datetime as dt
import os
import platform
import subprocess
import sys
from collections.abc import Mapping, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

from harness import results as rs
from harness.config import SweepSpec
from harness.data import Dataset

_PACKAGES = ("harness", "torch", "ray", "optuna", "numpy", "pandas", "pyarrow", "scikit-learn")


def sweep_info(
    spec: SweepSpec,
    data: Dataset,
    cluster: Mapping[str, Any],
    max_t: int,
    command: Sequence[str] | None,
    started: float,
    resumed_from: Path | None = None,
) -> dict[str, Any]:
    """sweep.json's content; a resumed sweep (resumed_from: its folder) keeps its first start
    and adds this one to `resumed`."""
    info: dict[str, Any] = {
        "spec": spec.to_dict(),
        "command": list(command) if command is not None else sys.argv,
        "cwd": os.getcwd(),
        "host": platform.node(),
        "git": git_revision(),
        "versions": versions(),
        "ray": dict(cluster),
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
    if resumed_from is not None:
        first = rs.load(resumed_from).info
        info["started"] = first.get("started", info["started"])
        info["resumed"] = [*first.get("resumed", []), dt.datetime.now(dt.timezone.utc).isoformat()]
    return info


def versions() -> dict[str, str]:
    """Python's and the installed packages' versions that shape a sweep's numbers."""
    out = {"python": platform.python_version()}
    for pkg in _PACKAGES:
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    return out


def git_revision() -> str | None:
    """HEAD of the checkout this package runs from, '+dirty' with uncommitted changes to
    tracked files; None outside a git checkout."""
    root = Path(__file__).resolve().parents[2]  # harness/sweep/provenance.py -> the checkout
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
