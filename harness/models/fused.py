"""Layers of a fused group: N same-shaped members of a model computed by one op each.

Every member parameter is stacked along a new leading dimension (member i holds exactly
the plain model's tensor at index i), and each layer below runs all members in one kernel:
an embedding lookup into the stacked tables with per-member row offsets, a grouped
convolution, a batched matrix multiply, a per-member layer norm. Every member sees the
same input batch. The result for member i is the plain layer's result on member i's
weights, up to floating-point rounding (the arithmetic is the same, the kernels differ).

`MemberDropout` draws each member's mask from that member's own random stream, on every
device, so a member's run never depends on which group it landed in. On the CPU the stream
continues from where the member's solo run would be, so its masks equal its solo run's
(F.dropout on the CPU is x * bernoulli / (1 - p) drawn from the default generator). On CUDA
each member has a device generator seeded with its own seed (a captured step registers them
with the graph, harness.graphs); the solo run's fused dropout kernel draws differently, so
there a member equals its solo run only with dropout 0. Masks are drawn and scaled in at
least float32: under bf16 autocast neither the keep probability nor the scale is rounded.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor
from torch.nn import functional as F


def embedding(weight: Tensor, x: Tensor, padding_idx: int | None = None) -> Tensor:
    """weight [N, V, E], token ids x [B, L] -> [N, B, L, E] (one lookup for all members).

    As nn.Embedding(padding_idx) does, the padding row of every member gets no gradient.
    """
    n, v = weight.shape[:2]
    offsets = torch.arange(n, device=x.device).mul_(v).view(n, *([1] * x.dim()))
    return _Lookup.apply(weight, x.unsqueeze(0) + offsets, padding_idx)


class _Lookup(torch.autograd.Function):
    """Row lookup in the members' tables flattened into one [N*V, E] table. Its backward is
    one dense embedding backward over the flattened table, then each member's padding row
    zeroed (F.embedding takes one padding index, a group has N). On CUDA that is
    `embedding_dense_backward`, F.embedding's own kernel (it sorts the ids: no atomics on
    a zero-filled table); on the CPU one zero fill and one index_add, measured ~2.5x faster
    there for these small tables than the dense backward (which sorts first)."""

    @staticmethod
    def forward(ctx, weight: Tensor, ids: Tensor, padding_idx: int | None) -> Tensor:
        ctx.save_for_backward(ids)
        ctx.shape, ctx.padding_idx = weight.shape, padding_idx
        n, v, e = weight.shape
        return F.embedding(ids, weight.reshape(n * v, e))

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None, None]:
        (ids,) = ctx.saved_tensors
        n, v, e = ctx.shape
        flat_ids, flat_grad = ids.reshape(-1), grad.reshape(-1, e)
        if grad.is_cuda:
            out = torch.ops.aten.embedding_dense_backward(flat_grad, flat_ids, n * v, -1, False)
        else:
            out = grad.new_zeros(n * v, e)
            out.index_add_(0, flat_ids, flat_grad)
        out = out.view(n, v, e)
        if ctx.padding_idx is not None:
            out[:, ctx.padding_idx] = 0
        return out, None, None


def linear(h: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """h [N, ..., in], weight [N, out, in], bias [N, out] -> [N, ..., out] (batched matmul)."""
    n = h.shape[0]
    flat = h.reshape(n, -1, h.shape[-1])
    if bias is None:
        out = torch.bmm(flat, weight.transpose(1, 2))
    else:
        out = torch.baddbmm(bias.unsqueeze(1), flat, weight.transpose(1, 2))
    return out.reshape(*h.shape[:-1], weight.shape[1])


def to_channels(emb: Tensor) -> Tensor:
    """[N, B, L, E] -> [B, N*E, L]: members side by side as channel groups of a convolution."""
    n, b, length, e = emb.shape
    return emb.permute(1, 0, 3, 2).reshape(b, n * e, length)


def conv1d(h: Tensor, weight: Tensor, bias: Tensor | None, n: int, padding: int = 0) -> Tensor:
    """h [B, N*in, L] with weight [N, out, in, k] -> [B, N*out, L'] (a grouped convolution)."""
    w = weight.reshape(-1, *weight.shape[2:])
    b = None if bias is None else bias.reshape(-1)
    return F.conv1d(h, w, b, padding=padding, groups=n)


def from_channels(h: Tensor, n: int) -> Tensor:
    """[B, N*F] -> [N, B, F]."""
    return h.view(h.shape[0], n, -1).transpose(0, 1)


def layer_norm(h: Tensor, weight: Tensor, bias: Tensor, eps: float) -> Tensor:
    """Per-member LayerNorm over the last dimension; weight, bias [N, d]."""
    shape = (h.shape[0],) + (1,) * (h.dim() - 2) + (h.shape[-1],)
    out = F.layer_norm(h, h.shape[-1:], eps=eps)
    return torch.addcmul(bias.view(shape), out, weight.view(shape))


class MemberDropout:
    """Dropout with a rate and a random stream per member (see the module docstring)."""

    def __init__(self, rates: Sequence[float], generators: Sequence[torch.Generator]):
        self.rates = [float(p) for p in rates]
        self.generators = list(generators)
        self.training = True

    def keep(self, keep: Sequence[int]) -> None:
        """Only these members remain (after a drop)."""
        self.rates = [self.rates[i] for i in keep]
        self.generators = [self.generators[i] for i in keep]

    def __call__(self, h: Tensor, time_major: tuple[int, int] | None = None) -> Tensor:
        """h [N, ...]. time_major=(B, L): h is [N, B*L, d] but the plain model drops out a
        [B, L, d] view of a [L, B, d] tensor (nn.MultiheadAttention's batch_first output),
        whose mask F.dropout draws in that memory order."""
        if not self.training or not any(self.rates):
            return h
        dtype = torch.promote_types(h.dtype, torch.float32)  # bf16 would round p and 1/(1-p)
        mask = torch.empty(h.shape, dtype=dtype, device=h.device)
        for i, (p, g) in enumerate(zip(self.rates, self.generators)):
            if p == 0:
                mask[i].fill_(1)
            elif time_major is None:
                mask[i].bernoulli_(1 - p, generator=g).div_(1 - p)
            else:
                b, length = time_major
                m = torch.empty(length, b, h.shape[-1], dtype=dtype, device=h.device)
                m.bernoulli_(1 - p, generator=g).div_(1 - p)
                mask[i] = m.transpose(0, 1).reshape(b * length, -1)
        return (h * mask).to(h.dtype)
