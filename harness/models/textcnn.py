"""TextCNN (TODO docstring)."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from harness.models.base import ModelParams


@dataclass(frozen=True)
class TextCNNParams(ModelParams):
    filter_sizes: tuple[int,...] = (2,3,4)
    num_filters: int = 256


class TextCNN(nn.Module):
    def __init__(self, params: TextCNNParams, vocab_size: int, num_classes: int, pad_id: int, seq_len: int):
        super().__init__()
        raise NotImplementedError
