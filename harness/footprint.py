"""What a member of a group holds on the device, and how fast groups of N train there.

Why: `resources.fuse: auto` must never make a sweep slower, nor turn one trial that does not
fit into eight. So the group size on a GPU comes from two things, both here:

- `member_bytes`: what the loop really allocates per member, counted, not assumed. Per
  trainable parameter (float32): the weight, its gradient, the optimizer's state (Adam's two
  moments, SGD's momentum), the kept best weights (harness.keeper) and the gradient
  statistics' weight snapshot (harness.gradstats, sampled steps): 24 bytes under Adam. Plus
  the step's activations (every tensor autograd saves for the backward pass, counted on
  torch's meta device at the trial's batch and pad size, so the Transformer's attention
  grows with pad_size squared as it should), twice when the step is captured as a CUDA graph
  (the eager warm-up's blocks stay cached beside the graphs' one shared pool), and the
  largest intermediate of an evaluation batch. Once per group (`group_bytes`): one plain
  member model, which the test of a completed member builds from the kept weights.
- `measure`: a short timed run of groups of several sizes on the device itself (fused
  against solo, after warm-up and capture), with each size's peak memory and the device's
  free memory. A sweep asks it through a Ray task on the trial's GPU share
  (harness.sweep.groups), so the driver never creates a CUDA context.
"""

from __future__ import annotations

import dataclasses
import gc
import math
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch

from harness.trialconfig import TrialConfig, replace_train

FLOAT = 4  # bytes of a float32 parameter, gradient or optimizer moment


def bytes_per_param(cfg: TrialConfig) -> int:
    """Weight + gradient + optimizer state + kept best weights + statistics snapshot."""
    optimizer_state = 1 if cfg.train.optimizer == "sgd" else 2
    return FLOAT * (1 + 1 + optimizer_state + 1 + 1)


def activation_bytes(cfg: TrialConfig, data: Any, batch: int | None = None) -> int:
    """Bytes autograd saves for one member's backward pass at `batch` (default the trial's
    batch size), counted on the meta device (no memory, no compute). bf16 autocast halves
    most of them; counted as float32 (an upper bound)."""
    from harness.models import build_model

    batch = batch or cfg.train.batch_size
    saved = 0

    def pack(t: torch.Tensor) -> torch.Tensor:
        nonlocal saved
        saved += t.numel() * t.element_size()
        return t

    with torch.device("meta"):
        model = build_model(
            cfg.model, cfg.params, vocab_size=data.vocab_size, num_classes=data.num_classes,
            pad_id=data.pad_id, seq_len=int(data.train_x.shape[1]),
        )  # fmt: skip
        x = torch.zeros(batch, int(data.train_x.shape[1]), dtype=torch.long)
        model.train()
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            out = model(x)
    # the logits and their gradient, the loss's own scratch
    return saved + 2 * out.numel() * out.element_size()


def member_bytes(cfg: TrialConfig, data: Any, params: int, graphs: bool) -> int:
    """Device bytes one member adds to a group (see the module docstring)."""
    act = activation_bytes(cfg, data)
    eval_act = activation_bytes(cfg, data, cfg.train.eval_batch_size) // 4  # no saved graph
    return params * bytes_per_param(cfg) + act * (2 if graphs else 1) + eval_act


@dataclasses.dataclass
class Measurement:
    """A group size's timed run on the device."""

    members: int
    samples_per_s: float  # member-samples per second (a group of N trains N x batch a step)
    peak_bytes: int  # the device's peak allocation during the run (0 on a CPU)
    setup_s: float  # building, warm-up and capture, before the timed steps
    captured: bool  # the step ran as a CUDA graph
    note: str = ""  # why graphs were off, or why the size failed
    samples_per_cpu_s: float = 0.0  # the same per second of this process's CPU time
    fused: bool = False  # the group ran as one fused module (else side by side)


@dataclasses.dataclass
class Probe:
    """What `measure` found: the device's free memory and each group size's run."""

    device: str
    free_bytes: int
    runs: list[Measurement]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Probe:
        return cls(d["device"], int(d["free_bytes"]), [Measurement(**r) for r in d["runs"]])

    def rate(self, n: int) -> float:
        return next((r.samples_per_s for r in self.runs if r.members == n), 0.0)


def measure(
    cfg: TrialConfig,
    data: Any,
    sizes: Sequence[int],
    *,
    device: str = "cuda",
    steps: int = 10,
    fuse: str = "auto",
) -> Probe:
    """Time `steps` training steps of groups of each size (members differ in seed and
    learning rate as a sweep's would), after warm-up and capture; an out-of-memory size
    is recorded with its note and the larger sizes are skipped."""
    from harness import graphs, trainer

    dev = torch.device(device)
    free = torch.cuda.mem_get_info(dev)[0] if dev.type == "cuda" else 0  # before any of ours
    runs: list[Measurement] = []
    for n in sorted(set(sizes)):
        members = [
            replace_train(cfg, seed=cfg.train.seed + i, learning_rate=cfg.train.learning_rate * (1 + i / 8))
            for i in range(n)
        ]  # fmt: skip
        try:
            runs.append(timed(members, data, dev, steps, fuse, graphs.WARMUP + 3))
        except torch.OutOfMemoryError as exc:
            runs.append(Measurement(n, 0.0, 0, 0.0, False, f"out of memory: {str(exc)[:120]}"))
            trainer.free_device_memory(exc)
            break
    return Probe(str(dev), int(free), runs)


def timed(
    cfgs: Sequence[TrialConfig], data: Any, dev: torch.device, steps: int, fuse: str, warm: int,
    on_clock: Callable[[], Any] | None = None,
) -> Measurement:
    """One group trained for `warm` steps (building, warm-up and capture: `setup_s`), then
    timed over `steps` more: the steady rate a long trial sees, what benchmarks compare.
    `on_clock()` runs as the clock starts (a benchmark resets its own counters there)."""
    from harness import trainer

    # past the first capture of every statistics pattern (a sampled step is captured apart)
    warm = max(warm, max(c.train.grad_stats_every for c in cfgs) + 1)
    long = [replace_train(c, max_steps=warm + steps, eval_every=10**9, max_epochs=10**6) for c in cfgs]
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
        torch.cuda.reset_peak_memory_stats(dev)
    t0 = time.perf_counter()
    loop = trainer.Loop(long, data, device=str(dev), fuse=fuse)
    batches = full_batches(loop, warm + steps)
    for xb, yb in batches[:warm]:
        loop.step(xb, yb)
    trainer._sync(dev)
    if on_clock is not None:
        on_clock()
    t1, c1 = time.perf_counter(), time.process_time()
    for xb, yb in batches[warm:]:
        loop.step(xb, yb)
    trainer._sync(dev)
    t2, c2 = time.perf_counter(), time.process_time()
    peak = torch.cuda.max_memory_allocated(dev) if dev.type == "cuda" else 0
    captured = bool(loop.graph is not None and loop.graph.captured)
    note = loop.graph.note if loop.graph is not None else ""
    fused = loop.members.fused
    samples = len(cfgs) * loop.batch_size * steps
    del loop, batches
    gc.collect()  # the loop and its graph refer to each other: free its memory before the next
    return Measurement(
        len(cfgs), samples / max(t2 - t1, 1e-9), int(peak), t1 - t0, captured, note,
        samples / max(c2 - c1, 1e-9), fused,
    )  # fmt: skip


def full_batches(loop: Any, count: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """`count` full batches in the loop's order (epochs repeat if the split is short)."""
    out: list[tuple[torch.Tensor, torch.Tensor]] = []
    epoch = 1
    while len(out) < count:
        out += [b for b in loop.batches(epoch) if b[1].shape[0] == loop.batch_size]
        epoch += 1
        if epoch > count + 1:
            break
    loop.epoch = 1
    return out[:count] or [(loop.train_x[: loop.batch_size], loop.train_y[: loop.batch_size])] * count


def group_bytes(n: int, member: int, params: int) -> int:
    """Device bytes of a group of n: n members and the one plain model a test builds."""
    return n * member + params * FLOAT


def fits(free_bytes: int, share: float, member: int, params: int, used: float = 0.8) -> int:
    """Members that fit in `used` of the trial's share of the free memory (at least 1)."""
    room = free_bytes * min(1.0, share) * used - params * FLOAT
    return max(1, math.floor(room / max(member, 1)))
