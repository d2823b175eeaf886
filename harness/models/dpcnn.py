"""DPCNN (TODO docstring)."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from harness.models.base import ModelParams


@dataclass(frozen=True)
class DPCNNParams(ModelParams):
    num_filters: int = 250


class DPCNN(nn.Module):
    def __init__(self, params: DPCNNParams, vocab_size: int, num_classes: int, pad_id: int, seq_len: int):
        super().__init__()
        raise NotImplementedError
