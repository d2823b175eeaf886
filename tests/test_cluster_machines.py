"""A sweep on a Ray cluster of machines: each node its own address, /tmp and Ray temp folder.

The nodes are Linux network + mount namespaces this module makes and removes (tests/machines.py):
`head` (Ray's head with 0 CPUs, and the sweep's driver, so every trial runs on a worker), `w1`
and `w2` (one CPU each), and `s3` (moto's S3 server). They talk over a private bridge
(10.200.0.0/24) that exists only inside the namespaces. Ray is started in them as the README's
cluster section tells a user to, token authentication included; a worker has no view of the
driver's results folder (/tmp/results on the head), and all of them mount /mnt/share, as an
NFS share would be. One cluster serves every test here; the last one takes w2 down.

Run: `python -m pytest -m cluster` (as root; skipped where namespaces cannot be made).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
from helpers import ROOT, SMOKE, _exactly_once, scalars_of
from machines import SHARE, Machine, Network, available

from harness import bundle
from harness import results as rs

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

PORT = 6379
# every login on every node: `export RAY_AUTH_MODE=token`, the head's token in ~/.ray/auth_token
TOKEN = {"RAY_AUTH_MODE": "token"}
S3_PORT = 5000
# what a node would have from its instance profile and config; moto accepts any keys
AWS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
       "AWS_DEFAULT_REGION": "us-east-1"}  # fmt: skip
SETS = ("data.name=thucnews", "data.path=/tmp/data", "max_failures=2",
        "early_terminate={type: none}")  # fmt: skip


class Cluster:
    def __init__(self, net: Network) -> None:
        self.net = net
        self.head, self.w1, self.w2, self.s3 = (net.machines[n] for n in ("head", "w1", "w2", "s3"))
        self.address = f"{self.head.ip}:{PORT}"

    def sweep(self, case: str, storage: str | None, *sets: str) -> list[str]:
        """The driver's command on the head (cwd: the project), results in /tmp/<case>."""
        argv = [sys.executable, "-m", "harness.sweep", str(SMOKE.relative_to(ROOT)),
                "--address", self.address, "--results", f"/tmp/{case}"]  # fmt: skip
        if storage:
            argv += ["--storage", storage]
        for s in (*SETS, *sets):
            argv += ["--set", s]
        return argv

    def folder(self, case: str) -> Path:
        """The driver's results/smoke/ of one case, seen from outside the machines."""
        return self.head.root / case / "smoke"


def _python(machine: Machine, code: str, timeout: float = 120) -> str:
    return machine.run([sys.executable, "-c", code], timeout=timeout).stdout


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, tiny_corpus: Path) -> Iterator[Cluster]:
    why = available()
    if why:
        pytest.skip(f"machines as namespaces: {why}")
    s3_url = "http://10.200.0.4:5000"
    net = Network(tmp_path_factory.mktemp("machines"), ROOT,
                  env={**TOKEN, **AWS, "AWS_ENDPOINT_URL": s3_url})  # fmt: skip
    try:
        head, w1, w2, s3 = (net.add(n) for n in ("head", "w1", "w2", "s3"))
        assert s3.ip == s3_url.split("//")[1].split(":")[0]
        shutil.copytree(tiny_corpus, head.root / "data")  # the data lives on the driver's node
        moto = s3.start(["moto_server", "-H", s3.ip, "-p", str(S3_PORT)])
        assert moto.poll() is None
        # the head makes the cluster's token; each worker gets a copy in its ~/.ray/auth_token
        head.run(["ray", "get-auth-token", "--generate"])
        token = head.root / "home" / ".ray" / "auth_token"
        for w in (w1, w2):
            (w.root / "home" / ".ray").mkdir(parents=True)
            shutil.copy(token, w.root / "home" / ".ray" / "auth_token")
        head.run(["ray", "start", "--head", f"--node-ip-address={head.ip}", f"--port={PORT}",
                  "--num-cpus=0", "--include-dashboard=false", "--disable-usage-stats"], timeout=180)  # fmt: skip
        for w in (w1, w2):
            w.run(["ray", "start", f"--address={head.ip}:{PORT}", f"--node-ip-address={w.ip}",
                   "--num-cpus=1", "--disable-usage-stats"], timeout=180)  # fmt: skip
        _python(s3, "import boto3, time\n"
                "for i in range(100):\n"
                "    try:\n"
                "        boto3.client('s3').create_bucket(Bucket='sweeps'); break\n"
                "    except Exception:\n"
                "        time.sleep(0.3)\n"
                "else:\n"
                "    raise SystemExit('moto did not answer')\n")  # fmt: skip
        yield Cluster(net)
    finally:
        net.close()


def _finish(proc, timeout: float = 300) -> str:
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
        raise AssertionError(f"the sweep did not finish in {timeout} s:\n{out}") from None
    return out


def _complete(c: Cluster, name: str, n: int, out: str) -> pd.DataFrame:
    """Every trial once in each table and in the study, on a worker; the kept models."""
    folder = c.folder(name)
    trials = _exactly_once(folder, n)
    assert set(trials["node_ip"]) <= {c.w1.ip, c.w2.ip}, out
    kept = bundle.kept_models(folder)
    assert len(kept) == min(3, n) and set(kept) <= set(trials["trial_id"])
    return trials


def _curves_complete(folder: Path) -> None:
    metrics = pd.read_parquet(folder / rs.METRICS_FILE)
    for tid, rows in metrics.groupby("trial_id"):
        events = scalars_of(folder / "tb" / str(tid))
        assert sorted(events["loss/dev"]) == sorted(rows["iteration"])


def test_nodes_are_machines_apart(cluster: Cluster) -> None:
    """Each node has its own address and /tmp; only /mnt/share is common; no node but the
    head sees the driver's results; Ray's nodes are the three addresses."""
    c = cluster
    (c.head.root / "results").mkdir()
    for m in (c.head, c.w1, c.w2):
        (m.root / f"only-{m.name}").write_text(m.name)
    for m in (c.w1, c.w2):
        seen = m.run(["sh", "-c", "ls /tmp; ls /mnt; ip -4 -br addr show eth0"]).stdout
        assert f"only-{m.name}" in seen and "only-head" not in seen and "results" not in seen
        assert m.ip in seen and "share" in seen
    nodes = _python(c.head, f"import ray; ray.init(address='{c.address}'); "
                    "print(sorted((n['NodeManagerAddress'], n['Resources'].get('CPU', 0)) "
                    "for n in ray.nodes() if n['Alive']))", timeout=180)  # fmt: skip
    assert f"('{c.head.ip}', 0)" in nodes and f"('{c.w1.ip}', 1.0)" in nodes, nodes


def test_without_shared_storage_the_sweep_refuses_before_any_trial(cluster: Cluster) -> None:
    c = cluster
    done = c.head.run(c.sweep("local", None), timeout=300, check=False)
    errors = [ln for ln in (done.stdout + done.stderr).splitlines() if ln.startswith("error:")]
    assert done.returncode == 2 and len(errors) == 1, done.stdout + done.stderr
    assert "cannot see this folder" in errors[0] and c.w1.ip in errors[0]
    assert "Traceback" not in done.stderr
    assert not (c.folder("local") / rs.TRIALS_FILE).exists()  # no trial ran


def test_sweep_with_a_shared_folder_runs_on_the_workers(cluster: Cluster) -> None:
    c = cluster
    done = c.head.run(c.sweep("shared", f"{SHARE}/shared", "budget.num_samples=4", "train.max_steps=40"),
                      timeout=400, check=False)  # fmt: skip
    out = done.stdout + done.stderr
    assert done.returncode == 0, out
    assert "3 node(s)" in out, out
    trials = _complete(c, "shared", 4, out)
    assert set(trials["node_ip"]) == {c.w1.ip, c.w2.ip}, out  # 2 at a time, 1 cpu a worker
    _curves_complete(c.folder("shared"))
    # the driver's node labels text with the best kept model
    c.head.run([sys.executable, "-m", "harness.predict", "/tmp/shared/smoke",
                "--text", "天地玄黄宇宙洪荒", "--text", "辰宿列张寒来暑往", "--out", "/tmp/p.parquet"])  # fmt: skip
    preds = pd.read_parquet(c.head.root / "p.parquet")
    assert len(preds) == 2 and set(preds["label"]) <= {"yin", "yang"}
    # Tune's state is on the share; no trial's checkpoints are left there
    exp = c.net.share / "shared" / "smoke"
    assert exp.is_dir() and not list(exp.glob("*/checkpoint_*"))


def test_sweep_with_s3_storage(cluster: Cluster) -> None:
    c = cluster
    done = c.head.run(
        c.sweep("s3", "s3://sweeps/runs", "budget.num_samples=3", "train.max_steps=40"),
        timeout=400, check=False,
    )  # fmt: skip
    out = done.stdout + done.stderr
    assert done.returncode == 0, out
    _complete(c, "s3", 3, out)
    _curves_complete(c.folder("s3"))
    keys = _python(c.s3, "import boto3\n"
                   "r = boto3.client('s3').list_objects_v2(Bucket='sweeps', Prefix='runs/smoke/')\n"
                   "print('\\n'.join(o['Key'] for o in r.get('Contents', [])))")  # fmt: skip
    assert "experiment_state" in keys and "checkpoint_" not in keys, keys


def test_a_lost_node_s_trials_go_on_from_their_checkpoints(cluster: Cluster) -> None:
    """w2 goes away (every process killed, its network gone) while its trial runs: the trial
    runs again on w1 from its last checkpoint on the share; nothing lost or duplicated."""
    c = cluster
    folder = c.folder("loss")
    proc = c.head.start(c.sweep("loss", f"{SHARE}/loss", "budget.num_samples=3",
                                "train.max_epochs=40", "train.max_steps=300",
                                "train.eval_every=20"))  # fmt: skip
    victim, t0 = None, time.monotonic()
    try:
        while victim is None and time.monotonic() - t0 < 240 and proc.poll() is None:
            try:
                t = pd.read_parquet(folder / rs.TRIALS_FILE)
                on_w2 = t[(t["status"] == "RUNNING") & (t["node_ip"] == c.w2.ip)]
                for tid in on_w2["trial_id"]:
                    if list((c.net.share / "loss" / "smoke" / tid).glob("checkpoint_*")):
                        victim = tid
            except (OSError, ValueError, KeyError):
                pass
            time.sleep(0.3)
        assert victim is not None, "no trial seen running on w2 with a checkpoint"
        c.w2.destroy()
        out = _finish(proc, timeout=400)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, out
    trials = _exactly_once(folder, 3).set_index("trial_id")
    assert trials.loc[victim, "node_ip"] == c.w1.ip, out
    assert "continued from its checkpoint" in trials.loc[victim, "error"], out
    assert f"{victim} (#" in out and f"its worker on {c.w2.ip} was lost" in out, out
    assert "retried from its last checkpoint" in out, out
