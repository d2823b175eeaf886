"""The training step of a group replayed as a CUDA graph.

Why: at batch 128 a classic TextCNN step on an H200 is bound by kernel launches (about 3 ms
of host time for 0.8 ms of GPU work); a captured graph replays every kernel of the step
(forward, loss, backward, gradient statistics and clipping, each member's optimizer update,
the window's bookkeeping) with one launch.

How: the loop's own step (`Loop.step_eager`) is captured as it is, so there is one step and
not a second copy. What changes from step to step lives in device tensors the graph reads:
the batch (static buffers the new batch is copied into), the window position and the step
number (filled before each replay), and each member's learning rate, looked up inside the
step from a device table of the whole schedule (so the optimizer runs with a tensor learning
rate, capturable). Steps that sample gradient statistics run a second graph. The first few
steps run eagerly (warm-up: lazy allocations, cuDNN and cuBLAS handles), as does the short
last batch of an epoch (another shape) through the same code. Dropout draws from each
member's own device generator, registered with every graph (a group of one draws from the
device's default generator, which graphs register themselves). All of a loop's graphs share
one memory pool, so a second statistics pattern does not hold a second copy of the step's
activations. After members leave the group (`reset`) the weights are re-stacked and the
graphs captured again.

Falling back: a failure anywhere in the graph path (warm-up, capture, replay; out of memory
included) turns graphs off for the rest of the run, frees what they held, and the step runs
eagerly; the members' summaries say why (`note`). A failed capture ran nothing, and a failed
warm-up or replay fails before the optimizer's update (the step's last kernels), so the
eager step that follows is the step that was due.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from harness.optimizer import lr_at

WARMUP = 3  # eager steps before the first capture


class GraphedStep:
    """Captures and replays `loop.step_eager` (see the module docstring)."""

    def __init__(self, loop: Any, capture: bool = True) -> None:
        """capture=False runs every step through the graph's code path eagerly (device
        learning-rate table, device window index): how the tests check that path on a CPU."""
        self.loop = loop
        self.capture = capture
        self.device = loop.device
        self.graphs: dict[tuple[bool, ...], torch.cuda.CUDAGraph] = {}
        self.seen: set[tuple[bool, ...]] = set()  # variants that ran eagerly at least once
        self.warm = 0
        self.captured = False  # some step ran as a graph
        self.captures = 0  # graphs captured so far (a reset captures again)
        self.setup_seconds = 0.0  # wall time of warm-up steps and captures
        self.disabled = False
        self.note = ""
        self.pool: Any = None  # the memory pool every graph of this loop shares
        self.static_x: Tensor | None = None
        self.static_y: Tensor | None = None
        self.k = torch.zeros((), dtype=torch.long, device=self.device)
        self.step = torch.zeros(1, dtype=torch.long, device=self.device)
        self._schedule()

    def _schedule(self) -> None:
        """Every step's learning rate of every current member, on the device."""
        loop = self.loop
        rows = [
            [lr_at(c, s, s // loop.per_epoch, loop.total_steps) for c in loop.optimizer.configs]
            for s in range(loop.total_steps)
        ]
        self.lr_table = torch.tensor(rows, dtype=torch.float32, device=self.device)
        self.lr_now = torch.empty(1, len(loop.optimizer.configs), device=self.device)

    def reset(self) -> None:
        """Members left: the weights were re-stacked, capture again after a warm-up."""
        self.graphs.clear()
        self.pool = None
        self.seen.clear()
        self.warm = 0
        self.static_x = self.static_y = None
        if not self.disabled:
            self._schedule()

    def _body(self, xb: Tensor, yb: Tensor, sampled: Sequence[bool]) -> None:
        torch.index_select(self.lr_table, 0, self.step, out=self.lr_now)
        self.loop.optimizer.lr = list(self.lr_now[0].unbind(0))
        self.loop.step_eager(xb, yb, self.k, list(sampled))

    def run(self, xb: Tensor, yb: Tensor, k: int, sampled: Sequence[bool]) -> bool:
        """Run this step as a graph (or eagerly through the same code while warming up);
        False when graphs are off and the caller must run its plain eager step."""
        if self.disabled:
            return False
        self.k.fill_(k)
        self.step.fill_(self.loop.step_count)
        key = tuple(bool(s) for s in sampled)
        full = xb.shape[0] == self.loop.batch_size
        graph = self.graphs.get(key)
        try:
            if graph is not None and full:
                self.static_x.copy_(xb)
                self.static_y.copy_(yb)
                graph.replay()
                return True
            t = time.perf_counter()
            if self.capture and full and self.warm >= WARMUP and key in self.seen:
                self._capture(xb, yb, key)
            else:
                self._warm_up(xb, yb, key)
            self.setup_seconds += time.perf_counter() - t
        except Exception as exc:  # noqa: BLE001 -- any failure of the graph path: run eagerly
            self._give_up(exc)
            return False
        return True

    def _warm_up(self, xb: Tensor, yb: Tensor, key: tuple[bool, ...]) -> None:
        """An eager step through the graph's code; while graphs are still to be captured it runs
        on a side stream, as PyTorch's capture recipe asks (lazy handles and workspaces are
        made there, not inside a capture)."""
        if self.capture and self.device.type == "cuda" and self.warm < WARMUP + 2:
            side = torch.cuda.Stream(self.device)
            side.wait_stream(torch.cuda.current_stream(self.device))
            with torch.cuda.stream(side):
                self._body(xb, yb, key)
            torch.cuda.current_stream(self.device).wait_stream(side)
        else:
            self._body(xb, yb, key)
        self.warm += 1
        self.seen.add(key)

    def _capture(self, xb: Tensor, yb: Tensor, key: tuple[bool, ...]) -> None:
        if self.static_x is None:
            self.static_x, self.static_y = torch.empty_like(xb), torch.empty_like(yb)
        self.static_x.copy_(xb)
        self.static_y.copy_(yb)
        torch.cuda.synchronize(self.device)
        self.loop.members.zero_grad_()  # gradients are allocated inside the graph's pool
        graph = torch.cuda.CUDAGraph()
        for g in self.loop.member_generators():
            graph.register_generator_state(g)
        with torch.cuda.graph(graph, pool=self.pool):
            self._body(self.static_x, self.static_y, key)
        if self.pool is None:
            self.pool = graph.pool()
        self.graphs[key] = graph
        graph.replay()  # capturing recorded the step; replaying runs it
        self.captured = True
        self.captures += 1

    def _give_up(self, exc: BaseException) -> None:
        """Graphs off for the rest of the run: free what they hold, say why."""
        self.disabled = True
        self.graphs.clear()
        self.pool = None
        self.static_x = self.static_y = None
        self.lr_table = self.lr_now = None
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        self.note = f"cuda graphs off: {type(exc).__name__}: {text}"[:300]
        self.loop.members.zero_grad_()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.empty_cache()
