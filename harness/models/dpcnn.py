"""DPCNN (Johnson & Zhang 2017): a region embedding, then a pyramid of pre-activation blocks.

Classic structure: region conv (k=3 over the embedding, no padding) -> 2 x [ReLU, conv3]
-> repeat {pad 1 at the end, max-pool(3, stride 2), 2 x [ReLU, conv3], + shortcut from
the pool} -> linear. As in the classic code one 250->250 conv3 (`conv`) is shared by every
block. The classic repeats while the length is > 2 and then squeezes, which breaks for
lengths that land on 2 (e.g. pad 6 or 9); here blocks repeat until the length is 1, which
is the same network whenever the classic works (every length >= 2 shrinks to 1).
Inputs shorter than 3 tokens are zero-padded (like padding embeddings) to fit the region conv.
Convolutions are 1-D over time with the embedding as channels: the classic's full-width
2-D kernels compute the same thing, slower.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from harness.errors import Problem
from harness.models import fused
from harness.models.base import ModelParams, init_weights, make_embedding, positive

REGION = 3


@dataclass(frozen=True)
class DPCNNParams(ModelParams):
    num_filters: int = 250

    def problems(self) -> list[Problem]:
        return super().problems() + positive(self, "num_filters")


class DPCNN(nn.Module):
    def __init__(
        self, params: DPCNNParams, vocab_size: int, num_classes: int, pad_id: int, seq_len: int
    ):
        super().__init__()
        self.embedding = make_embedding(params, vocab_size, pad_id)
        n = params.num_filters
        self.conv_region = nn.Conv1d(self.embedding.embedding_dim, n, REGION)
        self.conv = nn.Conv1d(n, n, 3, padding=1)  # classic: ZeroPad(1, 1) then conv3
        self.fc = nn.Linear(n, num_classes)
        init_weights(self)

    def _convs(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(torch.relu(x))
        return self.conv(torch.relu(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        emb = self.embedding(x).transpose(1, 2)  # [B, embed, L]
        if emb.shape[2] < REGION:
            emb = F.pad(emb, (0, REGION - emb.shape[2]))
        h = self._convs(self.conv_region(emb))  # [B, F, L-2]
        while h.shape[2] > 1:
            # classic _block: ZeroPad(0, 1) at the end, max-pool 3 / stride 2, shortcut
            pooled = F.max_pool1d(F.pad(h, (0, 1)), kernel_size=3, stride=2)
            h = self._convs(pooled) + pooled
        return self.fc(h.squeeze(2))


def fused_forward(m: DPCNN, p: dict[str, torch.Tensor], x: torch.Tensor, drop) -> torch.Tensor:
    """All members at once (harness.models.fused): every convolution is a grouped one."""
    emb = fused.embedding(p["embedding.weight"], x, m.embedding.padding_idx)
    n = emb.shape[0]
    h = fused.to_channels(emb)  # [B, N*E, L]
    if h.shape[2] < REGION:
        h = F.pad(h, (0, REGION - h.shape[2]))
    w, b = p["conv.weight"], p["conv.bias"]

    def convs(z: torch.Tensor) -> torch.Tensor:
        z = fused.conv1d(torch.relu(z), w, b, n, padding=1)
        return fused.conv1d(torch.relu(z), w, b, n, padding=1)

    h = convs(fused.conv1d(h, p["conv_region.weight"], p["conv_region.bias"], n))
    while h.shape[2] > 1:
        pooled = F.max_pool1d(F.pad(h, (0, 1)), kernel_size=3, stride=2)
        h = convs(pooled) + pooled
    return fused.linear(fused.from_channels(h.squeeze(2), n), p["fc.weight"], p["fc.bias"])
