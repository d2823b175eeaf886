"""Transformer (TODO docstring)."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from harness.models.base import ModelParams


@dataclass(frozen=True)
class TransformerParams(ModelParams):
    ffn_hidden: int = 1024
    num_heads: int = 5
    num_encoders: int = 2


class Transformer(nn.Module):
    def __init__(self, params: TransformerParams, vocab_size: int, num_classes: int, pad_id: int, seq_len: int):
        super().__init__()
        raise NotImplementedError
