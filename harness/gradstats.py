"""Gradient statistics of every member of a group, computed on the device, read once a report.

Why this shape: a per-step `.item()` forces the host to wait for the device every batch,
which on a GPU costs more than the statistics themselves. So a sampled step runs a handful
of foreach kernels over every member's layers at once (one launch per statistic for all
members and layers) and adds the results into device buffers shaped [member, layer];
`read()` returns one flat tensor that the loop copies to the host with its other numbers,
and `decode()` turns those values into each member's report columns.

Sampled steps (every `grad_stats_every` steps of a member, the first included) measure,
before clipping: per-layer L2 norms, per-layer max |g|, the count of entries with
|g| < vanish_threshold, and (after the optimizer step) the per-layer update norm
||w_after - w_before|| against ||w_before||, which needs a weight snapshot taken only on
sampled steps. When a member clips, every step needs its global norm anyway;
`after_backward` returns the members' norms so the loop can record them (clip fraction,
non-finite check) without another pass.

Embedding tables are counted apart: the rows of tokens a batch does not contain get an exact
zero gradient, which says nothing about vanishing gradients, so `grad_vanish_frac` covers the
other layers and `embed_vanish_frac` the tables.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from harness.trialconfig import TrainConfig

# rows of the per-layer accumulator (_RATIO_N: samples with nonzero weights, where a ratio exists)
_NORM, _MAXABS, _VANISH, _RATIO, _RATIO_N = range(5)
_LAYER_ROWS = 5
# entries of the global accumulator, per member
_G_NORM, _G_NORM_MAX, _G_RATIO, _G_RATIO_N = range(4)
_GLOBAL_SIZE = 4


def _flat(per_member: list[list[Tensor]]) -> list[Tensor]:
    return [t for ts in per_member for t in ts]


class GradStats:
    """Accumulates gradient statistics per member and layer between reports, on the device."""

    def __init__(
        self,
        names: Sequence[str],
        params: list[list[Tensor]],
        configs: Sequence[TrainConfig],
        *,
        embedding: Sequence[bool] | None = None,
        fused: bool | None = None,
    ) -> None:
        """params: per member, its trainable parameters in `names` order. embedding: which of
        them are embedding tables. fused: count vanished entries with foreach kernels (few
        launches, more memory passes: right for a GPU, where launches dominate) or layer by
        layer (fewer bytes: right for a CPU, where these statistics are memory-bound).
        Default: by device."""
        if not names:
            raise ValueError("GradStats needs at least one trainable parameter")
        self.names = list(names)
        self.every = [int(c.grad_stats_every) for c in configs]
        self.clip_norm = [float(c.clip_norm) for c in configs]
        self.vanish_threshold = [float(c.vanish_threshold) for c in configs]
        self.explode_threshold = [float(c.explode_threshold) for c in configs]
        self.numel = [p.numel() for p in params[0]]
        self.embedding = list(embedding) if embedding is not None else [False] * len(names)
        device = params[0][0].device
        self.device = device
        self.fused = device.type == "cuda" if fused is None else bool(fused)
        n, p = len(params), len(self.names)
        self._layer = torch.zeros(_LAYER_ROWS, n, p, device=device)
        self._global = torch.zeros(_GLOBAL_SIZE, n, device=device)
        self._mask_cache: dict[tuple[bool, ...], Tensor] = {}
        self._clip = torch.tensor(self.clip_norm, device=device)
        self._scratch: list[Tensor] | None = None  # weight snapshot / scratch, sampled steps only
        self._w_before: Tensor | None = None
        self.sampled = [0] * n  # host-side count of sampled steps since the last reset

    @property
    def n(self) -> int:
        return len(self.every)

    # ------------------------------------------------------------------ per step

    def is_sampled(self, step: int) -> list[bool]:
        """Per member; step is 0-based and the first step is always sampled."""
        return [e > 0 and step % e == 0 for e in self.every]

    def needs_norm(self, sampled: Sequence[bool]) -> bool:
        return any(sampled) or any(c > 0 for c in self.clip_norm)

    def count(self, sampled: Sequence[bool]) -> None:
        """The loop's host-side tally of sampled steps (kept outside any captured step)."""
        for i, s in enumerate(sampled):
            self.sampled[i] += bool(s)

    def _mask(self, sampled: Sequence[bool]) -> Tensor:
        key = tuple(bool(s) for s in sampled)
        m = self._mask_cache.get(key)
        if m is None:
            m = self._mask_cache[key] = torch.tensor(key, dtype=torch.float32, device=self.device)
        return m

    @torch.no_grad()
    def after_backward(
        self, grads: list[list[Tensor]], params: list[list[Tensor]], sampled: Sequence[bool]
    ) -> Tensor | None:
        """Measure (sampled members) and clip (members with clip_norm > 0) the gradients.

        Returns every member's global gradient norm before clipping, a [N] device tensor,
        or None when this step needed no norm at all.
        """
        if not self.needs_norm(sampled):
            return None
        n, p = self.n, len(self.names)
        flat = _flat(grads)
        layer_norms = torch.stack(torch._foreach_norm(flat)).view(n, p)
        total = torch.linalg.vector_norm(layer_norms, dim=1)
        if any(sampled):
            self._measure(flat, _flat(params), layer_norms, total, self._mask(sampled))
        if any(c > 0 for c in self.clip_norm):
            coef = torch.clamp(self._clip / (total + 1e-6), max=1.0)
            for i, g in enumerate(grads):
                if self.clip_norm[i] > 0:
                    torch._foreach_mul_(g, coef[i])
        return total

    def _vanished(self, flat: list[Tensor]) -> Tensor:
        p = len(self.names)
        thresholds = [self.vanish_threshold[i // p] for i in range(len(flat))]
        if self.fused:
            # |g| < t counted as the L1 norm of sign(min(|g| - t, 0)): fused foreach kernels
            # only, so the launch count does not grow with the layer count (ord=0 would)
            scratch = self._scratch
            torch._foreach_copy_(scratch, flat)
            torch._foreach_abs_(scratch)
            torch._foreach_sub_(scratch, thresholds)
            torch._foreach_clamp_max_(scratch, 0.0)
            torch._foreach_sign_(scratch)
            return torch.stack(torch._foreach_norm(scratch, 1))
        # ~14 bytes per entry instead of ~44
        return torch.stack([(g.abs() < t).sum() for g, t in zip(flat, thresholds)]).float()

    def _measure(
        self, flat: list[Tensor], params: list[Tensor], layer_norms: Tensor, total: Tensor,
        mask: Tensor,
    ) -> None:  # fmt: skip
        if self._scratch is None:
            self._scratch = [torch.empty_like(t) for t in params]
        n, p = self.n, len(self.names)
        max_abs = torch.stack(torch._foreach_norm(flat, float("inf"))).view(n, p)
        vanished = self._vanished(flat).view(n, p)
        on = mask.view(n, 1) > 0  # members sampled at this step (all, unless `every` differs)
        layer = self._layer
        layer[_NORM] += torch.where(on, layer_norms, 0.0)
        torch.maximum(layer[_MAXABS], torch.where(on, max_abs, 0.0), out=layer[_MAXABS])
        layer[_VANISH] += torch.where(on, vanished, 0.0)
        g = torch.where(on.view(n), total, 0.0)
        self._global[_G_NORM] += g
        torch.maximum(self._global[_G_NORM_MAX], g, out=self._global[_G_NORM_MAX])
        # snapshot the weights for the update ratio (scratch is free again)
        torch._foreach_copy_(self._scratch, params)
        self._w_before = torch.stack(torch._foreach_norm(self._scratch)).view(n, p)
        self._sample_mask = mask

    @torch.no_grad()
    def after_step(self, params: list[list[Tensor]]) -> None:
        """On a sampled step, after the optimizer step: per-layer ||Δw|| / ||w_before||.

        A layer whose weights are all zero (biases at the classic init) has no ratio at
        that step; it is left out of that layer's mean rather than divided by ~0.
        """
        assert self._scratch is not None and self._w_before is not None
        n, p = self.n, len(self.names)
        torch._foreach_sub_(self._scratch, _flat(params))  # w_before - w_after
        upd = torch.stack(torch._foreach_norm(self._scratch)).view(n, p)
        w = self._w_before
        m = self._sample_mask
        has = (w > 0) & (m.view(n, 1) > 0)
        self._layer[_RATIO] += torch.where(has, upd / w, 0.0)  # 0/0 lanes are discarded
        self._layer[_RATIO_N] += has
        w_all = torch.linalg.vector_norm(w, dim=1)
        has_all = (w_all > 0) & (m > 0)
        ratio = torch.linalg.vector_norm(upd, dim=1) / w_all
        self._global[_G_RATIO] += torch.where(has_all, ratio, 0.0)
        self._global[_G_RATIO_N] += has_all
        self._w_before = None

    # ------------------------------------------------------------------ per report

    @torch.no_grad()
    def read(self, params: list[list[Tensor]]) -> Tensor:
        """Flat device tensor: accumulators + current weight norms (size `read_size`)."""
        weight_norms = torch.stack(torch._foreach_norm([t.detach() for t in _flat(params)]))
        return torch.cat([self._layer.reshape(-1), weight_norms, self._global.reshape(-1)])

    @property
    def read_size(self) -> int:
        return (_LAYER_ROWS + 1) * self.n * len(self.names) + _GLOBAL_SIZE * self.n

    def reset(self) -> None:
        self._layer.zero_()
        self._global.zero_()
        self.sampled = [0] * self.n

    def keep(self, keep: Sequence[int]) -> None:
        """Only these members remain (after a drop); call between reports (after reset)."""
        idx = torch.tensor(list(keep), device=self.device)
        self._layer = self._layer.index_select(1, idx)
        self._global = self._global.index_select(1, idx)
        for name in ("every", "clip_norm", "vanish_threshold", "explode_threshold", "sampled"):
            values = getattr(self, name)
            setattr(self, name, [values[i] for i in keep])
        self._clip = torch.tensor(self.clip_norm, device=self.device)
        self._mask_cache.clear()
        self._scratch = None
        self._w_before = None

    def decode(
        self, values: Sequence[float], window_norms: Sequence[Sequence[float]], steps: int
    ) -> list[tuple[dict[str, Any], dict[str, list[Any]]]]:
        """Host values of `read()` -> per member (report metrics, per-layer columns).

        `window_norms[i]` are the global norms the loop recorded for member i per step (0.0
        where a step measured none); a clipping member has one every step, so its clip
        fraction is exact.
        """
        n, p = self.n, len(self.names)
        size = n * p
        layer = [values[r * size : (r + 1) * size] for r in range(_LAYER_ROWS)]
        weights = values[_LAYER_ROWS * size : (_LAYER_ROWS + 1) * size]
        glob = values[(_LAYER_ROWS + 1) * size :]
        return [
            self._member(
                i,
                [row[i * p : (i + 1) * p] for row in layer],
                weights[i * p : (i + 1) * p],
                [glob[r * n + i] for r in range(_GLOBAL_SIZE)],
                window_norms[i] if i < len(window_norms) else [],
                steps,
            )
            for i in range(n)
        ]

    def _member(
        self, i: int, layer: list[Sequence[float]], weight_norms: Sequence[float],
        glob: list[float], window_norms: Sequence[float], steps: int,
    ) -> tuple[dict[str, Any], dict[str, list[Any]]]:  # fmt: skip
        g_norm, g_norm_max, g_ratio, g_ratio_n = glob
        k = self.sampled[i]
        nan = math.nan
        clip = self.clip_norm[i]
        if clip > 0 and steps:
            clip_frac = sum(1 for v in window_norms[:steps] if v > clip) / steps
        else:
            clip_frac = 0.0
        names = list(self.names)
        if not k:
            metrics = {
                "grad_norm": nan, "grad_norm_max": nan, "grad_max_abs": nan,
                "grad_vanish_frac": nan, "embed_vanish_frac": nan, "grad_clip_frac": clip_frac,
                "update_ratio": nan, "grad_vanishing": False, "grad_exploding": False,
            }  # fmt: skip
            layers = {
                "layer": names, "grad_norm": [nan] * len(names), "grad_max_abs": [nan] * len(names),
                "vanish_frac": [nan] * len(names), "weight_norm": list(weight_norms),
                "update_ratio": [nan] * len(names), "embedding": list(self.embedding),
            }  # fmt: skip
            return metrics, layers
        dense = [j for j, e in enumerate(self.embedding) if not e]
        tables = [j for j, e in enumerate(self.embedding) if e]

        def frac(idx: list[int]) -> float:
            total = sum(self.numel[j] for j in idx)
            return sum(layer[_VANISH][j] for j in idx) / (total * k) if total else nan

        grad_norm = g_norm / k
        total_numel = sum(self.numel)
        metrics = {
            "grad_norm": grad_norm,
            "grad_norm_max": g_norm_max,
            "grad_max_abs": max(layer[_MAXABS]),
            "grad_vanish_frac": frac(dense),
            "embed_vanish_frac": frac(tables),
            "grad_clip_frac": clip_frac,
            "update_ratio": g_ratio / g_ratio_n if g_ratio_n else nan,
            "grad_vanishing": bool(grad_norm < self.vanish_threshold[i] * math.sqrt(total_numel)),
            "grad_exploding": bool(not g_norm_max <= self.explode_threshold[i]),
        }
        layers = {
            "layer": names,
            "grad_norm": [v / k for v in layer[_NORM]],
            "grad_max_abs": list(layer[_MAXABS]),
            "vanish_frac": [v / (m * k) for v, m in zip(layer[_VANISH], self.numel)],
            "weight_norm": list(weight_norms),
            "update_ratio": [v / c if c else nan for v, c in zip(layer[_RATIO], layer[_RATIO_N])],
            "embedding": list(self.embedding),
        }
        return metrics, layers
