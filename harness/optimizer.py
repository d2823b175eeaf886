"""One optimizer step for every member of a group, each with its own hyperparameters.

Why not torch.optim: a fused group keeps each parameter as one stacked tensor whose rows
are the members, while learning rate, weight decay and momentum differ per member. Here
each member's rows are handed to torch's own fused multi-tensor kernels (the functional
`torch.optim.adam.adam` / `adamw` / `sgd` with `fused=True`, the kernels
`torch.optim.Adam(fused=True)` runs), one call per member over all of its layers. A member's
update is therefore bit for bit the update its solo run makes, and a group of one is exactly
the classic loop's fused Adam. Optimizer state lives per member, so dropping a member is
dropping its entries. The learning-rate schedule (`lr_at`) lives here too.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor
from torch.optim import adam as _adam
from torch.optim import adamw as _adamw
from torch.optim import sgd as _sgd

from harness.trialconfig import TrainConfig

BETAS = (0.9, 0.999)  # torch's defaults, as the classic loop used them
EPS = 1e-8


def lr_at(tc: TrainConfig, step: int, epoch: int, total_steps: int) -> float:
    """Learning rate of 0-based `step` in 0-based `epoch`.

    Linear warmup over warmup_steps (any schedule), then: none -> constant;
    exponential -> x gamma per finished epoch; cosine -> half cosine from the base
    rate to 0 at total_steps.
    """
    base = tc.learning_rate
    if step < tc.warmup_steps:
        return base * (step + 1) / tc.warmup_steps
    if tc.schedule == "exponential":
        return base * tc.gamma**epoch
    if tc.schedule == "cosine":
        span = max(1, total_steps - tc.warmup_steps)
        t = min(1.0, (step - tc.warmup_steps) / span)
        return base * 0.5 * (1.0 + math.cos(math.pi * t))
    return base


def _fused_supported(device: torch.device) -> bool:
    return device.type in ("cpu", "cuda")


class MemberOptimizer:
    """Adam, AdamW or SGD with momentum over the members' parameter lists."""

    def __init__(self, configs: Sequence[TrainConfig], params: list[list[Tensor]]) -> None:
        self.kind = configs[0].optimizer  # a shape setting: the same for every member
        self.configs = list(configs)
        device = params[0][0].device if params and params[0] else torch.device("cpu")
        self.fused = _fused_supported(device)
        self.state: list[dict[str, list[Any]]] = [self._new_state(ps) for ps in params]
        self.lr: list[float | Tensor] = [c.learning_rate for c in configs]

    def _new_state(self, ps: list[Tensor]) -> dict[str, list[Any]]:
        if self.kind == "sgd":
            return {"momentum": [None] * len(ps)}
        step_device = ps[0].device if ps and ps[0].device.type == "cuda" else torch.device("cpu")
        return {
            "exp_avg": [torch.zeros_like(p, memory_format=torch.preserve_format) for p in ps],
            "exp_avg_sq": [torch.zeros_like(p, memory_format=torch.preserve_format) for p in ps],
            "step": [torch.zeros((), dtype=torch.float32, device=step_device) for _ in ps],
        }

    def keep(self, keep: Sequence[int]) -> None:
        """Only these members remain (after a drop)."""
        self.state = [self.state[i] for i in keep]
        self.configs = [self.configs[i] for i in keep]
        self.lr = [self.lr[i] for i in keep]

    @torch.no_grad()
    def step(self, params: list[list[Tensor]], grads: list[list[Tensor]]) -> None:
        """One update of every member, with its own learning rate (`self.lr[i]`): one kernel
        call per distinct set of hyperparameters (members that share them share the call)."""
        calls: dict[tuple, list[int]] = {}
        for i, (c, lr) in enumerate(zip(self.configs, self.lr)):
            key = (id(lr), i) if isinstance(lr, Tensor) else (lr, c.weight_decay, c.momentum)
            calls.setdefault(key, []).append(i)
        for members in calls.values():
            self._update(members, params, grads)

    def _update(
        self, members: list[int], params: list[list[Tensor]], grads: list[list[Tensor]]
    ) -> None:
        fused = self.fused or None
        foreach = None if fused else True
        c, lr = self.configs[members[0]], self.lr[members[0]]
        ps = [t for i in members for t in params[i]]
        gs = [t for i in members for t in grads[i]]

        def state(name: str) -> list[Any]:
            return [t for i in members for t in self.state[i][name]]

        if self.kind == "sgd":
            bufs = state("momentum")
            _sgd.sgd(
                ps, gs, bufs, fused=fused, foreach=foreach, weight_decay=c.weight_decay,
                momentum=c.momentum, lr=lr, dampening=0.0, nesterov=False, maximize=False,
            )  # fmt: skip
            at = 0
            for i in members:  # the first step creates the momentum buffers
                k = len(self.state[i]["momentum"])
                self.state[i]["momentum"] = bufs[at : at + k]
                at += k
            return
        fn = _adamw.adamw if self.kind == "adamw" else _adam.adam
        fn(
            ps, gs, state("exp_avg"), state("exp_avg_sq"), [], state("step"),
            fused=fused, foreach=foreach, capturable=isinstance(lr, Tensor), amsgrad=False,
            beta1=BETAS[0], beta2=BETAS[1], lr=lr, weight_decay=c.weight_decay, eps=EPS,
            maximize=False,
        )  # fmt: skip
