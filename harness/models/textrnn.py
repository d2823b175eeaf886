"""TextRNN: a bidirectional LSTM read to the end; its last time step feeds one linear layer.

As in the classic code, the last step is position L-1 whatever the padding: the forward
direction has read the whole (padded) title there, the backward direction only one token.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from harness.errors import Problem
from harness.models.base import ModelParams, init_weights, make_embedding, positive


@dataclass(frozen=True)
class TextRNNParams(ModelParams):
    hidden_size: int = 128
    num_layers: int = 2

    def problems(self) -> list[Problem]:
        return super().problems() + positive(self, "hidden_size", "num_layers")


def bilstm(input_size: int, hidden_size: int, num_layers: int, dropout: float) -> nn.LSTM:
    """The classic BiLSTM; dropout between stacked layers only (torch warns on 1 layer)."""
    return nn.LSTM(
        input_size,
        hidden_size,
        num_layers,
        bidirectional=True,
        batch_first=True,
        dropout=dropout if num_layers > 1 else 0.0,
    )


class TextRNN(nn.Module):
    def __init__(
        self, params: TextRNNParams, vocab_size: int, num_classes: int, pad_id: int, seq_len: int
    ):
        super().__init__()
        self.embedding = make_embedding(params, vocab_size, pad_id)
        self.lstm = bilstm(
            self.embedding.embedding_dim, params.hidden_size, params.num_layers, params.dropout
        )
        self.fc = nn.Linear(2 * params.hidden_size, num_classes)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.lstm(self.embedding(x))  # [B, L, 2H]
        return self.fc(out[:, -1, :])
