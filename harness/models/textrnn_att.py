"""TextRNNAtt (TODO docstring)."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from harness.models.base import ModelParams


@dataclass(frozen=True)
class TextRNNAttParams(ModelParams):
    hidden_size: int = 128
    num_layers: int = 2
    att_hidden: int = 64


class TextRNNAtt(nn.Module):
    def __init__(self, params: TextRNNAttParams, vocab_size: int, num_classes: int, pad_id: int, seq_len: int):
        super().__init__()
        raise NotImplementedError
