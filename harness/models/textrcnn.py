"""TextRCNN (TODO docstring)."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from harness.models.base import ModelParams


@dataclass(frozen=True)
class TextRCNNParams(ModelParams):
    hidden_size: int = 256
    num_layers: int = 1


class TextRCNN(nn.Module):
    def __init__(self, params: TextRCNNParams, vocab_size: int, num_classes: int, pad_id: int, seq_len: int):
        super().__init__()
        raise NotImplementedError
