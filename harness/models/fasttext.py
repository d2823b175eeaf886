"""FastText (TODO docstring)."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from harness.models.base import ModelParams


@dataclass(frozen=True)
class FastTextParams(ModelParams):
    hidden_size: int = 256
    n_gram_buckets: int = 250499
    embed_ngram: int = 300


class FastText(nn.Module):
    def __init__(self, params: FastTextParams, vocab_size: int, num_classes: int, pad_id: int, seq_len: int):
        super().__init__()
        raise NotImplementedError
