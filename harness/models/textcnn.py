"""TextCNN (Kim 2014): parallel convolutions over time, max-pooled, then one linear layer.

The classic code convolves a [B, 1, L, embed] image with 2-D kernels as wide as the
embedding; that is the same arithmetic as a 1-D convolution with the embedding as input
channels, which is what runs here because it is much faster on CPU (the 2-D form goes
through a slow, channel-starved kernel). Max over time is taken before the bias and the
ReLU: relu(max_t z_t + b) == max_t relu(z_t + b) because both are monotone, and it skips
two elementwise passes over the full [B, F, L] activations.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from harness.errors import Problem
from harness.models import fused
from harness.models.base import ModelParams, init_weights, make_embedding, positive


@dataclass(frozen=True)
class TextCNNParams(ModelParams):
    filter_sizes: tuple[int, ...] = (2, 3, 4)
    num_filters: int = 256

    def problems(self) -> list[Problem]:
        out = super().problems() + positive(self, "num_filters")
        if not self.filter_sizes or min(self.filter_sizes) < 1:
            rule = "must be a non-empty list of sizes >= 1"
            out.append(Problem("filter_sizes", rule, self.filter_sizes))
        return out


class TextCNN(nn.Module):
    def __init__(
        self, params: TextCNNParams, vocab_size: int, num_classes: int, pad_id: int, seq_len: int
    ):
        super().__init__()
        self.embedding = make_embedding(params, vocab_size, pad_id)
        embed = self.embedding.embedding_dim
        self.convs = nn.ModuleList(
            nn.Conv1d(embed, params.num_filters, k) for k in params.filter_sizes
        )
        self.dropout = nn.Dropout(params.dropout)
        self.fc = nn.Linear(params.num_filters * len(params.filter_sizes), num_classes)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        emb = self.embedding(x).transpose(1, 2)  # [B, embed, L]
        longest = max(c.kernel_size[0] for c in self.convs)
        if emb.shape[2] < longest:  # shorter than the widest filter: pad so every filter fits
            emb = F.pad(emb, (0, longest - emb.shape[2]))
        pooled = [F.conv1d(emb, c.weight).amax(dim=2) + c.bias for c in self.convs]
        return self.fc(self.dropout(torch.relu(torch.cat(pooled, dim=1))))


def fused_forward(m: TextCNN, p: dict[str, torch.Tensor], x: torch.Tensor, drop) -> torch.Tensor:
    """All members at once (harness.models.fused): grouped convolutions, one batched matmul."""
    emb = fused.embedding(p["embedding.weight"], x, m.embedding.padding_idx)  # [N, B, L, E]
    n = emb.shape[0]
    h = fused.to_channels(emb)  # [B, N*E, L]
    longest = max(c.kernel_size[0] for c in m.convs)
    if h.shape[2] < longest:
        h = F.pad(h, (0, longest - h.shape[2]))
    pooled = [
        fused.from_channels(fused.conv1d(h, p[f"convs.{j}.weight"], None, n).amax(dim=2), n)
        + p[f"convs.{j}.bias"].unsqueeze(1)
        for j in range(len(m.convs))
    ]
    return fused.linear(drop(torch.relu(torch.cat(pooled, dim=2))), p["fc.weight"], p["fc.bias"])
