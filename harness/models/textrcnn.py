"""TextRCNN (Lai et al. 2015): each token's embedding beside its BiLSTM context, max-pooled.

Classic form: cat(embedding, BiLSTM output) -> ReLU -> max over time -> linear.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from harness.errors import Problem
from harness.models.base import ModelParams, init_weights, make_embedding, positive
from harness.models.textrnn import bilstm


@dataclass(frozen=True)
class TextRCNNParams(ModelParams):
    hidden_size: int = 256
    num_layers: int = 1

    def problems(self) -> list[Problem]:
        return super().problems() + positive(self, "hidden_size", "num_layers")


class TextRCNN(nn.Module):
    def __init__(
        self, params: TextRCNNParams, vocab_size: int, num_classes: int, pad_id: int, seq_len: int
    ):
        super().__init__()
        self.embedding = make_embedding(params, vocab_size, pad_id)
        embed = self.embedding.embedding_dim
        self.lstm = bilstm(embed, params.hidden_size, params.num_layers, params.dropout)
        self.fc = nn.Linear(2 * params.hidden_size + embed, num_classes)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        emb = self.embedding(x)
        out, _ = self.lstm(emb)
        features = torch.relu(torch.cat((emb, out), dim=2))  # [B, L, embed + 2H]
        return self.fc(features.amax(dim=1))
