"""Gradient statistics computed on the training device, read by the host once per report.

Why this shape: a per-step `.item()` forces the host to wait for the device every batch,
which on a GPU costs more than the statistics themselves. So every sampled step runs a
handful of foreach kernels (one launch per statistic for all layers, not one per layer)
and adds the results into device buffers; `read()` returns one flat tensor that the loop
concatenates with its other per-report numbers and copies to the host in a single
transfer, and `decode()` turns those host values into the report's columns.

Sampled steps (every `every` steps, the first step included) measure, before clipping:
per-layer L2 norms, per-layer max |g|, the count of entries with |g| < vanish_threshold,
and (after the optimizer step) the per-layer update norm ||w_after - w_before|| against
||w_before||, which needs a weight snapshot taken only on sampled steps. When clipping is
on, every step needs the global norm anyway; `after_backward` returns it so the loop can
record it (clip fraction, non-finite check) without another pass.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

# rows of the per-layer accumulator (_RATIO_N: samples with nonzero weights, where a ratio exists)
_NORM, _MAXABS, _VANISH, _RATIO, _RATIO_N = range(5)
_LAYER_ROWS = 5
# entries of the global accumulator
_G_NORM, _G_NORM_MAX, _G_RATIO, _G_RATIO_N = range(4)
_GLOBAL_SIZE = 4


class GradStats:
    """Accumulates gradient statistics of `named_params` between reports, on their device."""

    def __init__(
        self,
        named_params: Sequence[tuple[str, nn.Parameter]],
        *,
        every: int,
        clip_norm: float = 0.0,
        vanish_threshold: float = 1e-8,
        explode_threshold: float = 1e3,
        fused: bool | None = None,
    ) -> None:
        """fused: count vanished entries with foreach kernels (few launches, more memory
        passes: right for a GPU, where launches dominate) or layer by layer (fewer bytes:
        right for a CPU, where these statistics are memory-bound). Default: by device."""
        if not named_params:
            raise ValueError("GradStats needs at least one trainable parameter")
        self.names = [n for n, _ in named_params]
        self.params = [p for _, p in named_params]
        self.every = int(every)
        self.clip_norm = float(clip_norm)
        self.vanish_threshold = float(vanish_threshold)
        self.explode_threshold = float(explode_threshold)
        self.numel = [p.numel() for p in self.params]
        self.total_numel = sum(self.numel)
        device = self.params[0].device
        self.fused = device.type == "cuda" if fused is None else bool(fused)
        n = len(self.params)
        self._layer = torch.zeros(_LAYER_ROWS, n, device=device)
        self._global = torch.zeros(_GLOBAL_SIZE, device=device)
        self._scratch: list[Tensor] | None = None  # weight snapshot / scratch, sampled steps only
        self._w_before: Tensor | None = None
        self._zeros: dict[int, Tensor] = {}
        self.sampled = 0  # host-side count of sampled steps since the last reset
        self.reset()

    # ------------------------------------------------------------------ per step

    def is_sampled(self, step: int) -> bool:
        """Step is 0-based; the first step is always sampled so a window starts measured."""
        return self.every > 0 and step % self.every == 0

    def _grads(self) -> list[Tensor]:
        grads = []
        for i, p in enumerate(self.params):
            g = p.grad
            if g is None:  # a parameter the forward pass did not use this step
                g = self._zeros.get(i)
                if g is None:
                    g = self._zeros[i] = torch.zeros_like(p)
            grads.append(g)
        return grads

    @torch.no_grad()
    def after_backward(self, sampled: bool) -> Tensor | None:
        """Measure (if sampled) and clip (if clip_norm > 0) the gradients.

        Returns the global gradient norm before clipping as a 0-d device tensor, or None
        when this step needed no norm at all.
        """
        if not sampled and self.clip_norm <= 0:
            return None
        grads = self._grads()
        layer_norms = torch.stack(torch._foreach_norm(grads))
        total = torch.linalg.vector_norm(layer_norms)
        if sampled:
            self._measure(grads, layer_norms, total)
        if self.clip_norm > 0:
            coef = torch.clamp(self.clip_norm / (total + 1e-6), max=1.0)
            torch._foreach_mul_(grads, coef)
        return total

    def _measure(self, grads: list[Tensor], layer_norms: Tensor, total: Tensor) -> None:
        if self._scratch is None:
            self._scratch = [torch.empty_like(p) for p in self.params]
        scratch = self._scratch
        max_abs = torch.stack(torch._foreach_norm(grads, float("inf")))
        if self.fused:
            # |g| < t counted as the L1 norm of sign(min(|g| - t, 0)): fused foreach kernels
            # only, so the launch count does not grow with the layer count (ord=0 would)
            torch._foreach_copy_(scratch, grads)
            torch._foreach_abs_(scratch)
            torch._foreach_sub_(scratch, self.vanish_threshold)
            torch._foreach_clamp_max_(scratch, 0.0)
            torch._foreach_sign_(scratch)
            vanished = torch.stack(torch._foreach_norm(scratch, 1))
        else:  # ~14 bytes per entry instead of ~44
            vanished = torch.stack([(g.abs() < self.vanish_threshold).sum() for g in grads])
        layer = self._layer
        layer[_NORM] += layer_norms
        torch.maximum(layer[_MAXABS], max_abs, out=layer[_MAXABS])
        layer[_VANISH] += vanished
        self._global[_G_NORM] += total
        torch.maximum(self._global[_G_NORM_MAX], total, out=self._global[_G_NORM_MAX])
        # snapshot the weights for the update ratio (scratch is free again)
        torch._foreach_copy_(scratch, self.params)
        self._w_before = torch.stack(torch._foreach_norm(scratch))
        self.sampled += 1

    @torch.no_grad()
    def after_step(self) -> None:
        """On a sampled step, after optimizer.step(): per-layer ||Δw|| / ||w_before||.

        A layer whose weights are all zero (biases at the classic init) has no ratio at
        that step; it is left out of that layer's mean rather than divided by ~0.
        """
        assert self._scratch is not None and self._w_before is not None
        torch._foreach_sub_(self._scratch, self.params)  # w_before - w_after
        upd = torch.stack(torch._foreach_norm(self._scratch))
        w = self._w_before
        has = w > 0
        self._layer[_RATIO] += torch.where(has, upd / w, 0.0)  # 0/0 lanes are discarded
        self._layer[_RATIO_N] += has
        w_all = torch.linalg.vector_norm(w)
        has_all = w_all > 0
        self._global[_G_RATIO] += torch.where(has_all, torch.linalg.vector_norm(upd) / w_all, 0.0)
        self._global[_G_RATIO_N] += has_all
        self._w_before = None

    # ------------------------------------------------------------------ per report

    @torch.no_grad()
    def read(self) -> Tensor:
        """Flat device tensor: accumulators + current weight norms (size `read_size`)."""
        weight_norms = torch.stack(torch._foreach_norm([p.detach() for p in self.params]))
        return torch.cat([self._layer.reshape(-1), weight_norms, self._global])

    @property
    def read_size(self) -> int:
        return (_LAYER_ROWS + 1) * len(self.params) + _GLOBAL_SIZE

    def reset(self) -> None:
        self._layer.zero_()
        self._global.zero_()
        self.sampled = 0

    def decode(
        self, values: Sequence[float], window_norms: Sequence[float], steps: int
    ) -> tuple[dict[str, Any], dict[str, list[Any]]]:
        """Host values of `read()` -> (report metrics, per-layer columns).

        `window_norms` are the global norms the loop recorded per step (0.0 where a step
        measured none); with clipping on every step has one, so the clip fraction is exact.
        """
        n = len(self.params)
        layer = [list(values[i * n : (i + 1) * n]) for i in range(_LAYER_ROWS)]
        weight_norms = list(values[_LAYER_ROWS * n : (_LAYER_ROWS + 1) * n])
        g_norm, g_norm_max, g_ratio, g_ratio_n = values[(_LAYER_ROWS + 1) * n :][:_GLOBAL_SIZE]
        k = self.sampled
        nan = math.nan
        if self.clip_norm > 0 and steps:
            clip_frac = sum(1 for v in window_norms[:steps] if v > self.clip_norm) / steps
        else:
            clip_frac = 0.0
        if k:
            grad_norm = g_norm / k
            metrics = {
                "grad_norm": grad_norm,
                "grad_norm_max": g_norm_max,
                "grad_max_abs": max(layer[_MAXABS]),
                "grad_vanish_frac": sum(layer[_VANISH]) / (self.total_numel * k),
                "grad_clip_frac": clip_frac,
                "update_ratio": g_ratio / g_ratio_n if g_ratio_n else nan,
                "grad_vanishing": bool(grad_norm < self.vanish_threshold * math.sqrt(self.total_numel)),
                "grad_exploding": bool(not g_norm_max <= self.explode_threshold),
            }
            layers = {
                "layer": list(self.names),
                "grad_norm": [v / k for v in layer[_NORM]],
                "grad_max_abs": layer[_MAXABS],
                "vanish_frac": [v / (m * k) for v, m in zip(layer[_VANISH], self.numel)],
                "weight_norm": weight_norms,
                "update_ratio": [v / c if c else nan for v, c in zip(layer[_RATIO], layer[_RATIO_N])],
            }
        else:
            metrics = {
                "grad_norm": nan,
                "grad_norm_max": nan,
                "grad_max_abs": nan,
                "grad_vanish_frac": nan,
                "grad_clip_frac": clip_frac,
                "update_ratio": nan,
                "grad_vanishing": False,
                "grad_exploding": False,
            }
            layers = {
                "layer": list(self.names),
                "grad_norm": [nan] * n,
                "grad_max_abs": [nan] * n,
                "vanish_frac": [nan] * n,
                "weight_norm": weight_norms,
                "update_ratio": [nan] * n,
            }
        return metrics, layers
