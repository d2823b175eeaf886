"""FastText (Joulin et al. 2017): averaged word, bigram and trigram embeddings, one hidden layer.

N-grams are hashed into `n_gram_buckets` rows on the fly from the token ids, on the model's
device, with the classic formulas (utils_fasttext.py):

    bigram(t)  = (x[t-1] * 14918087) % buckets
    trigram(t) = (x[t-2] * 14918087 * 18408749 + x[t-1] * 14918087) % buckets

with x[-1] = x[-2] = 0, over the padded sequence. (The classic "bigram" at t is keyed
by the previous token alone; kept for fidelity.) The products overflow int64 for large
ids, so they are reduced modulo `buckets` step by step: every factor is first taken
mod buckets, so no intermediate exceeds 2 * buckets**2 < 2**63 (buckets < 2**31), and
the result equals the exact integer formula.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from harness.errors import Problem
from harness.models import fused
from harness.models.base import ModelParams, init_weights, make_embedding, positive

BIGRAM_PRIME = 14918087
TRIGRAM_PRIME = 18408749
MAX_BUCKETS = 2**31 - 1


@dataclass(frozen=True)
class FastTextParams(ModelParams):
    hidden_size: int = 256
    n_gram_buckets: int = 250499
    embed_ngram: int = 300  # n-gram embedding width (classic: same as embed)

    def problems(self) -> list[Problem]:
        out = super().problems() + positive(self, "hidden_size", "n_gram_buckets", "embed_ngram")
        if self.n_gram_buckets > MAX_BUCKETS:
            out.append(Problem("n_gram_buckets", f"must be <= {MAX_BUCKETS}", self.n_gram_buckets))
        return out


def ngram_hashes(x: torch.Tensor, buckets: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Classic bigram and trigram bucket ids for token ids x [B, L] (int64, same device)."""
    a = BIGRAM_PRIME % buckets
    c = (BIGRAM_PRIME * TRIGRAM_PRIME) % buckets
    xm = x.remainder(buckets)
    prev1 = F.pad(xm, (1, 0))[:, :-1]  # x[t-1], 0 before the start
    prev2 = F.pad(xm, (2, 0))[:, :-2]  # x[t-2]
    bigram = (prev1 * a).remainder(buckets)
    trigram = (prev2 * c + bigram).remainder(buckets)
    return bigram, trigram


class FastText(nn.Module):
    def __init__(
        self, params: FastTextParams, vocab_size: int, num_classes: int, pad_id: int, seq_len: int
    ):
        super().__init__()
        self.buckets = params.n_gram_buckets
        self.embedding = make_embedding(params, vocab_size, pad_id)
        self.embedding_ngram2 = nn.Embedding(params.n_gram_buckets, params.embed_ngram)
        self.embedding_ngram3 = nn.Embedding(params.n_gram_buckets, params.embed_ngram)
        self.dropout = nn.Dropout(params.dropout)
        width = self.embedding.embedding_dim + 2 * params.embed_ngram
        self.fc1 = nn.Linear(width, params.hidden_size)
        self.fc2 = nn.Linear(params.hidden_size, num_classes)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bigram, trigram = ngram_hashes(x, self.buckets)
        # mean over time of the concatenation == concatenation of the per-table means
        out = torch.cat(
            (
                self.embedding(x).mean(dim=1),
                self.embedding_ngram2(bigram).mean(dim=1),
                self.embedding_ngram3(trigram).mean(dim=1),
            ),
            dim=1,
        )
        return self.fc2(torch.relu(self.fc1(self.dropout(out))))


def fused_forward(m: FastText, p: dict[str, torch.Tensor], x: torch.Tensor, drop) -> torch.Tensor:
    """All members at once (harness.models.fused): stacked tables, batched matmuls."""
    bigram, trigram = ngram_hashes(x, m.buckets)
    out = torch.cat(
        (
            fused.embedding(p["embedding.weight"], x, m.embedding.padding_idx).mean(dim=2),
            fused.embedding(p["embedding_ngram2.weight"], bigram).mean(dim=2),
            fused.embedding(p["embedding_ngram3.weight"], trigram).mean(dim=2),
        ),
        dim=2,
    )
    h = torch.relu(fused.linear(drop(out), p["fc1.weight"], p["fc1.bias"]))
    return fused.linear(h, p["fc2.weight"], p["fc2.bias"])
