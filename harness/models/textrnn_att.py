"""TextRNN_Att: a BiLSTM whose outputs are pooled by learned attention over time.

Classic attention (Zhou et al. 2016): M = tanh(H), alpha = softmax(M w) over time,
r = sum_t alpha_t H_t, then ReLU, a hidden layer and the classifier. The attention
vector w starts at zero (uniform attention), as in the classic code, whose init skips it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from harness.errors import Problem
from harness.models.base import ModelParams, init_weights, make_embedding, positive
from harness.models.textrnn import bilstm


@dataclass(frozen=True)
class TextRNNAttParams(ModelParams):
    hidden_size: int = 128
    num_layers: int = 2
    att_hidden: int = 64

    def problems(self) -> list[Problem]:
        return super().problems() + positive(self, "hidden_size", "num_layers", "att_hidden")


class TextRNNAtt(nn.Module):
    def __init__(
        self,
        params: TextRNNAttParams,
        vocab_size: int,
        num_classes: int,
        pad_id: int,
        seq_len: int,
    ):
        super().__init__()
        self.embedding = make_embedding(params, vocab_size, pad_id)
        self.lstm = bilstm(
            self.embedding.embedding_dim, params.hidden_size, params.num_layers, params.dropout
        )
        self.w = nn.Parameter(torch.zeros(2 * params.hidden_size))
        self.fc1 = nn.Linear(2 * params.hidden_size, params.att_hidden)
        self.fc = nn.Linear(params.att_hidden, num_classes)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, _ = self.lstm(self.embedding(x))  # [B, L, 2H]
        alpha = torch.softmax(torch.tanh(h) @ self.w, dim=1).unsqueeze(-1)  # [B, L, 1]
        pooled = torch.relu((h * alpha).sum(dim=1))
        return self.fc(self.fc1(pooled))
