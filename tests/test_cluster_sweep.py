"""A sweep on a (local, two-node) Ray cluster: joined through --address, trials on both
nodes and recorded per node; a node removed mid-trial loses nothing.

`ray.cluster_utils.Cluster` starts a head and a worker node on 127.0.0.1 inside this test
process (no driver connection here); the sweep is the real command in a subprocess with
`--address`, so the tables and the Optuna study are written on the driver's side exactly as
on a real cluster. Each test shuts its cluster down.
"""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
from helpers import ROOT, SMOKE, _exactly_once

from harness import results as rs

os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"


@pytest.fixture
def cluster() -> Iterator[object]:
    """Head (1 cpu) plus one worker node (1 cpu), loopback only, no dashboard."""
    importlib.import_module("harness.sweep")  # sets Ray's environment before ray's import
    from ray.cluster_utils import Cluster

    c = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 1, "include_dashboard": False},
    )
    try:
        c.add_node(num_cpus=1)
        c.wait_for_nodes()
        yield c
    finally:
        c.shutdown()


def _sweep_args(tiny_corpus: Path, tmp_path: Path, *sets: str) -> list[str]:
    args = [str(SMOKE), "--results", str(tmp_path)]
    for o in ("data.name=thucnews", f"data.path={tiny_corpus}", "early_terminate={type: none}",
              "max_failures=2", *sets):  # fmt: skip
        args += ["--set", o]
    return args


def _start(args: list[str], address: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("RAY_ADDRESS", None)
    return subprocess.Popen(
        [sys.executable, "-m", "harness.sweep", *args, "--address", address],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


def _finish(proc: subprocess.Popen, timeout: float = 300) -> str:
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, 9)
        out, _ = proc.communicate()
        raise AssertionError(f"sweep did not finish in {timeout} s:\n{out}") from None
    assert proc.returncode == 0, out
    return out


@pytest.mark.subprocess
@pytest.mark.ray
@pytest.mark.slow
def test_sweep_joins_a_two_node_cluster_and_records_the_node(
    cluster: object, tiny_corpus: Path, tmp_path: Path
) -> None:
    nodes = {cluster.head_node.node_id, *(n.node_id for n in cluster.worker_nodes)}
    assert len(nodes) == 2
    # two trials at a time, one cpu each, one cpu per node: every pair runs on both nodes
    args = _sweep_args(tiny_corpus, tmp_path, "train.max_steps=60", "budget.num_samples=4")
    out = _finish(_start(args, cluster.address))
    assert "2 node(s)" in out, out
    trials = _exactly_once(tmp_path / "smoke", 4)
    assert set(trials["node_id"]) == nodes
    assert set(trials["node_ip"]) == {"127.0.0.1"}


@pytest.mark.subprocess
@pytest.mark.ray
@pytest.mark.slow
def test_a_node_removed_mid_trial_loses_nothing(
    cluster: object, tiny_corpus: Path, tmp_path: Path
) -> None:
    (worker,) = cluster.worker_nodes
    folder = tmp_path / "smoke"
    args = _sweep_args(
        tiny_corpus,
        tmp_path,
        "train.max_epochs=40",
        "train.max_steps=300",
        "train.eval_every=20",
        "budget.num_samples=3",
    )
    proc = _start(args, cluster.address)
    victim, t0 = None, time.monotonic()
    try:
        while victim is None and time.monotonic() - t0 < 180 and proc.poll() is None:
            try:
                t = pd.read_parquet(folder / rs.TRIALS_FILE)
                on_worker = t[(t["status"] == "RUNNING") & (t["node_id"] == worker.node_id)]
                if len(on_worker) and (on_worker["iterations"].fillna(0) > 0).all():
                    victim = on_worker["trial_id"].iloc[0]
            except (OSError, ValueError, KeyError):
                pass
            time.sleep(0.2)
        assert victim is not None, "no trial seen running on the worker node"
        cluster.remove_node(worker)
        out = _finish(proc)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, 9)
            proc.communicate()
    trials = _exactly_once(folder, 3).set_index("trial_id")
    # the lost trial ran again on the node that is left, from its last checkpoint (it had
    # reported, and a checkpoint follows every report here: 8 batches an epoch, eval_every 20)
    assert trials.loc[victim, "node_id"] == cluster.head_node.node_id, out
    assert "continued from its checkpoint" in trials.loc[victim, "error"], out
    assert set(trials["node_id"]) <= {cluster.head_node.node_id, worker.node_id}
