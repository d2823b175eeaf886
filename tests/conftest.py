"""Shared fixtures: a tiny learnable corpus on disk and one local Ray session for the suite.

Ray is started at most once per test run (session scope) with 2 CPUs and one *logical*
GPU, so CPU sweeps and the fractional-GPU scheduling test share it; it is always shut
down at the end. Tests that need it carry @pytest.mark.ray (collection fails otherwise).

Tiers: `python -m pytest` runs everything (CI); `-m "not slow"` the quick tier (a few
minutes on 2 cores; docs/testing.md has the figures); `-m "not slow and not ray and not
subprocess"` the unit tests alone; `-m cuda` the CUDA tests on a GPU machine. Every test that
starts Ray or a child process carries `ray`, `subprocess` or `slow`. pytest-timeout stops any
test that hangs (pyproject.toml's `timeout`, longer for slow and ray tests). Helpers shared
by several test modules are in tests/helpers.py.
"""

from __future__ import annotations

import importlib
import os
import random
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

# Tiny two-class corpus: class 0 texts lean on one set of characters, class 1 on another,
# so a few dozen steps of any model beat chance and a diverged or broken trial stands out.
_CHARS = ("天地玄黄宇宙洪荒日月盈昃", "辰宿列张寒来暑往秋收冬藏")


def write_tiny_corpus(
    root: Path, sizes: tuple[int, int, int] = (256, 64, 64), seed: int = 0
) -> Path:
    """A thucnews-layout folder (train/dev/test.txt + class.txt) with two classes."""
    rng = random.Random(seed)
    root.mkdir(parents=True, exist_ok=True)
    (root / "class.txt").write_text("yin\nyang\n", encoding="utf-8")
    for split, n in zip(("train", "dev", "test"), sizes):
        lines = []
        for i in range(n):
            label = i % 2
            own, other = _CHARS[label], _CHARS[1 - label]
            text = "".join(rng.choice(own if rng.random() < 0.8 else other) for _ in range(12))
            lines.append(f"{text}\t{label}")
        (root / f"{split}.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root


SLOW_TIMEOUT_S = 1200  # a Ray sweep, or a kill and a resume, on a loaded 2-core machine


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tiers: every test that starts Ray (the ray_session fixture) must say so with the
    `ray` marker (`-m "not ray"` then runs without Ray); tests marked slow or ray get a
    longer pytest-timeout limit than pyproject.toml's default, unless they set their own.
    Tests marked `cuda` skip themselves where no CUDA device is (CI), so `-m cuda` on a GPU
    machine runs every one of them."""
    if any(item.get_closest_marker("cuda") for item in items):
        import torch

        if not torch.cuda.is_available():
            skip = pytest.mark.skip(reason="needs a CUDA device")
            for item in items:
                if item.get_closest_marker("cuda"):
                    item.add_marker(skip)
    for item in items:
        if "ray_session" in getattr(item, "fixturenames", ()) and not item.get_closest_marker(
            "ray"
        ):
            raise pytest.UsageError(f"{item.nodeid} starts Ray: mark it @pytest.mark.ray")
        if item.get_closest_marker("timeout") is None and (
            item.get_closest_marker("slow") or item.get_closest_marker("ray")
        ):
            item.add_marker(pytest.mark.timeout(SLOW_TIMEOUT_S))


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_corpus(tmp_path_factory.mktemp("tiny_corpus"))


@pytest.fixture(scope="session", autouse=True)
def _private_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Dataset caches of the whole run go to a temporary folder, never ~/.cache."""
    old = os.environ.get("HARNESS_CACHE")
    if old is None:
        os.environ["HARNESS_CACHE"] = str(tmp_path_factory.mktemp("harness_cache"))
    yield
    if old is None:
        os.environ.pop("HARNESS_CACHE", None)


@pytest.fixture
def readonly_dir(tmp_path: Path) -> Iterator[Path]:
    """A folder nobody may write: a read-only tmpfs where we may mount one (root ignores
    permission bits), else a folder with mode 0555."""
    folder = tmp_path / "readonly"
    folder.mkdir()
    if os.geteuid() != 0:
        folder.chmod(0o555)
        yield folder
        folder.chmod(0o755)
        return
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(folder)],
                             capture_output=True, check=False).returncode == 0  # fmt: skip
    if not mounted:
        pytest.skip("running as root and cannot mount a read-only tmpfs")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=False)


@pytest.fixture(scope="session")
def ray_session() -> Iterator[object]:
    """One local Ray (2 CPUs, 1 logical GPU, loopback only, no dashboard) for all Ray tests."""
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    importlib.import_module("harness.sweep")  # sets Ray's environment before ray's import
    import ray

    if ray.is_initialized():
        ray.shutdown()
    ray.init(
        address="local",  # never join another Ray running on this machine
        num_cpus=2,
        num_gpus=1,
        include_dashboard=False,
        log_to_driver=False,
        configure_logging=False,
    )
    try:
        yield ray
    finally:
        ray.shutdown()
