"""Machines inside this one: Linux network + mount namespaces that a test creates and removes.

Each `Machine` is a network namespace with its own address on a private bridge (10.200.0.0/24,
which exists only inside the namespaces: the bridge lives in a namespace of its own, so the
machine's own network is never touched and nothing listens on its address) and a private
mount namespace, held open by one `sleep` process, in which:

- /tmp is the machine's own folder (its Ray temp folder /tmp/ray, its HOME /tmp/home with
  ~/.ray/auth_token, its results), so no machine sees another's files;
- /mnt/share is the one folder that every machine mounts, as an NFS share would be;
- /dev/shm is its own (Ray's object store);
- the test's own folders are hidden (when they lie outside /tmp).

The project (its virtual environment and worktree) stays visible, as a shared install would,
also when it lies under /tmp (a CI clone): it is bound back into the machine's /tmp.
`run()` / `start()` run a command on a machine through nsenter; `destroy()` kills every
process in the machine's network namespace by pid (only processes this helper started live
there) and removes it. `Network.close()` removes everything, also after a failure.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path

SUBNET = "10.200.0"
SHARE = "/mnt/share"


def available() -> str | None:
    """Why machines cannot be made here (None when they can): root, ip netns, unshare."""
    if os.geteuid() != 0:
        return "needs root (ip netns, mount)"
    for tool in ("ip", "unshare", "nsenter"):
        if shutil.which(tool) is None:
            return f"needs the {tool} command"
    probe = f"hprobe{uuid.uuid4().hex[:6]}"
    made = _try("ip", "netns", "add", probe).returncode == 0
    if made:
        _try("ip", "netns", "del", probe)
    return None if made else "cannot create a network namespace (ip netns add)"


def _outermost(paths: Sequence[Path]) -> list[Path]:
    """The paths, without those inside another of them (each once)."""
    out: list[Path] = []
    for p in sorted({Path(os.path.realpath(q)) for q in paths}, key=lambda q: len(q.parts)):
        if not any(o == p or o in p.parents for o in out):
            out.append(p)
    return out


def _sh(*args: str) -> None:
    subprocess.run(args, check=True, capture_output=True, text=True)


def _try(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(args, check=False, capture_output=True, text=True)


class Machine:
    def __init__(self, net: Network, name: str, index: int) -> None:
        self.net = net
        self.name = name
        self.netns = f"{net.tag}-{name}"
        self.ip = f"{SUBNET}.{index}"
        self.root = net.base / name  # the machine's /tmp, seen from outside
        self.holder: subprocess.Popen | None = None

    # -- the machine's life -----------------------------------------------------------------
    def boot(self) -> None:
        (self.root / "home").mkdir(parents=True)
        _sh("ip", "netns", "add", self.netns)
        self.net.netns.append(self.netns)
        port = f"p{len(self.net.machines)}"
        _sh("ip", "-n", self.net.switch, "link", "add", port, "type", "veth",
            "peer", "name", "eth0", "netns", self.netns)  # fmt: skip
        _sh("ip", "-n", self.net.switch, "link", "set", port, "master", "br0", "up")
        _sh("ip", "-n", self.netns, "addr", "add", f"{self.ip}/24", "dev", "eth0")
        _sh("ip", "-n", self.netns, "link", "set", "eth0", "up")
        _sh("ip", "-n", self.netns, "link", "set", "lo", "up")
        base = self.net.base
        # the project and its Python stay visible where they are, also when they lie under
        # /tmp (a CI clone there): held aside before /tmp becomes the machine's, bound back after
        keep = _outermost(
            [Path(self.net.cwd), Path(sys.prefix), Path(os.path.realpath(sys.executable)).parent]
        )
        keep = [k for k in keep if Path("/tmp") in k.parents]
        hold = "".join(f"mkdir /mnt/keep{i} && mount --rbind {k} /mnt/keep{i} && "
                       for i, k in enumerate(keep))  # fmt: skip
        back = "".join(f"mkdir -p {k} && mount --rbind /mnt/keep{i} {k} && "
                       for i, k in enumerate(keep))  # fmt: skip
        mounts = (
            f"mount -t tmpfs -o size=1m tmpfs /mnt && mkdir {SHARE} && "
            f"mount --bind {self.net.share} {SHARE} && {hold}"
            f"mount --rbind {self.root} /tmp && {back}"
            "mount -t tmpfs -o size=2g tmpfs /dev/shm && "
            f"if [ -d {base} ]; then mount -t tmpfs -o size=1m tmpfs {base}; fi && "
            "echo ready && exec sleep infinity"
        )
        self.holder = subprocess.Popen(
            ["ip", "netns", "exec", self.netns, "unshare", "--mount", "--propagation", "private",
             "sh", "-c", mounts],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        line = self.holder.stdout.readline().strip() if self.holder.stdout else ""
        if line != "ready":
            raise RuntimeError(f"machine {self.name}: mounts failed: {line}")

    def pids(self) -> list[int]:
        return [int(p) for p in _try("ip", "netns", "pids", self.netns).stdout.split()]

    def destroy(self) -> None:
        """The machine goes away: every process in it killed (its Ray too), its network gone."""
        for _ in range(5):
            pids = self.pids()
            if not pids:
                break
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.2)
        if self.holder is not None:
            self.holder.wait(timeout=10)
            self.holder = None
        _try("ip", "netns", "del", self.netns)
        if self.netns in self.net.netns:
            self.net.netns.remove(self.netns)

    # -- commands ---------------------------------------------------------------------------
    def env(self, extra: Mapping[str, str] = ()) -> dict[str, str]:
        """A clean environment, as a login on that machine would have: its own HOME."""
        env = {
            "PATH": f"{Path(sys.executable).parent}:/usr/local/sbin:/usr/local/bin:/usr/sbin:"
            "/usr/bin:/sbin:/bin",
            "HOME": "/tmp/home",
            "LANG": "C.UTF-8",
            "PYTHONUNBUFFERED": "1",
            "HARNESS_CACHE": "/tmp/cache",
        }
        env.update(self.net.env)
        env.update(extra)
        return env

    def _argv(self, argv: Sequence[str]) -> list[str]:
        assert self.holder is not None, f"machine {self.name} is not running"
        return ["nsenter", "-t", str(self.holder.pid), "-m", "-n", f"--wd={self.net.cwd}",
                *argv]  # fmt: skip

    def run(
        self,
        argv: Sequence[str],
        env: Mapping[str, str] = (),
        timeout: float = 120,
        check: bool = True,
    ) -> subprocess.CompletedProcess:
        done = subprocess.run(self._argv(argv), env=self.env(env), capture_output=True,
                              text=True, timeout=timeout, check=False)  # fmt: skip
        if check and done.returncode != 0:
            raise RuntimeError(
                f"{self.name}: {' '.join(argv)} -> {done.returncode}\n{done.stdout}\n{done.stderr}"
            )
        return done

    def start(self, argv: Sequence[str], env: Mapping[str, str] = ()) -> subprocess.Popen:
        return subprocess.Popen(self._argv(argv), env=self.env(env), stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)  # fmt: skip


class Network:
    """Machines on one private bridge; `close()` removes them all (idempotent)."""

    def __init__(self, base: Path, cwd: Path, env: Mapping[str, str] = ()) -> None:
        self.tag = f"hm{uuid.uuid4().hex[:6]}"
        self.base = base
        self.cwd = cwd
        self.env = dict(env)
        self.share = base / "share"
        self.share.mkdir(parents=True)
        self.switch = f"{self.tag}-switch"
        self.netns: list[str] = []
        self.machines: dict[str, Machine] = {}
        _sh("ip", "netns", "add", self.switch)
        self.netns.append(self.switch)
        _sh("ip", "-n", self.switch, "link", "add", "br0", "type", "bridge")
        _sh("ip", "-n", self.switch, "link", "set", "br0", "up")

    def add(self, name: str) -> Machine:
        m = Machine(self, name, len(self.machines) + 1)
        self.machines[name] = m
        m.boot()
        return m

    def close(self) -> None:
        for m in list(self.machines.values()):
            m.destroy()
        for ns in list(self.netns):  # the switch (veths go with their namespaces)
            _try("ip", "netns", "del", ns)
            self.netns.remove(ns)
