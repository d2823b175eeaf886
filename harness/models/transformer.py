"""Transformer encoder classifier: sinusoidal positions, post-norm encoder layers, and a
linear layer over the flattened [seq_len * d_model] sequence (why seq_len is passed).

Built from torch's nn.TransformerEncoderLayer (post-norm, ReLU, batch_first), fitted to the
classic block: dropout only after the attention projection and after the feed-forward
output, none on attention weights or inside the feed-forward. Unlike the classic code,
heads are split the standard way (the classic reshapes [B, L, d] to [B*h, L, d/h] without a
transpose, which mixes positions across heads) and the encoder layers start from
independent weights (the classic deep-copies one layer and, alone among the zoo, skips the
Xavier init). No attention mask, as in the classic: padding positions are attended to.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from harness.errors import Problem, UserError
from harness.models import fused
from harness.models.base import ModelParams, init_weights, make_embedding, positive


@dataclass(frozen=True)
class TransformerParams(ModelParams):
    ffn_hidden: int = 1024
    num_heads: int = 5
    num_encoders: int = 2

    def problems(self) -> list[Problem]:
        out = super().problems() + positive(self, "ffn_hidden", "num_heads", "num_encoders")
        if self.num_heads >= 1 and self.embed % self.num_heads:
            out.append(Problem("num_heads", f"must divide embed={self.embed}", self.num_heads))
        return out


def positional_encoding(seq_len: int, d_model: int) -> torch.Tensor:
    """Classic sinusoids: pe[pos, i] = sin/cos(pos / 10000^(2*(i//2)/d_model)), [seq_len, d]."""
    pos = torch.arange(seq_len, dtype=torch.float64).unsqueeze(1)
    i = torch.arange(d_model)
    angle = pos / torch.pow(10000.0, (i // 2 * 2).double() / d_model)
    pe = torch.where(i % 2 == 0, torch.sin(angle), torch.cos(angle))
    return pe.float()


class Transformer(nn.Module):
    def __init__(
        self,
        params: TransformerParams,
        vocab_size: int,
        num_classes: int,
        pad_id: int,
        seq_len: int,
    ):
        super().__init__()
        self.embedding = make_embedding(params, vocab_size, pad_id)
        d_model = self.embedding.embedding_dim
        if d_model % params.num_heads:
            raise UserError(
                f"num_heads: must divide the embedding width {d_model} "
                f"(from {params.embedding_path}), got {params.num_heads}"
            )
        self.seq_len = seq_len
        self.register_buffer("pe", positional_encoding(seq_len, d_model), persistent=False)
        self.dropout = nn.Dropout(params.dropout)
        self.encoders = nn.ModuleList()
        for _ in range(params.num_encoders):
            layer = nn.TransformerEncoderLayer(
                d_model,
                params.num_heads,
                dim_feedforward=params.ffn_hidden,
                dropout=params.dropout,
                batch_first=True,
            )
            layer.self_attn.dropout = 0.0  # classic: no dropout on attention weights
            layer.dropout = nn.Identity()  # classic: no dropout between the two FFN linears
            self.encoders.append(layer)
        self.fc1 = nn.Linear(seq_len * d_model, num_classes)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] != self.seq_len:
            raise ValueError(f"Transformer built for seq_len {self.seq_len}, got {x.shape[1]}")
        out = self.dropout(self.embedding(x) + self.pe)
        for layer in self.encoders:
            out = layer(out)
        return self.fc1(out.flatten(1))


def fused_forward(
    m: Transformer, p: dict[str, torch.Tensor], x: torch.Tensor, drop
) -> torch.Tensor:
    """All members at once (harness.models.fused): batched projections, one attention call
    over members x batch, per-member layer norms; the same block as nn.TransformerEncoderLayer
    (post-norm, ReLU, dropout after attention and after the feed-forward output)."""
    if x.shape[1] != m.seq_len:
        raise ValueError(f"Transformer built for seq_len {m.seq_len}, got {x.shape[1]}")
    out = drop(fused.embedding(p["embedding.weight"], x, m.embedding.padding_idx) + m.pe)  # [N, B, L, d]
    n, b, length, d = out.shape
    h = out.reshape(n, b * length, d)
    for j, layer in enumerate(m.encoders):
        q = f"encoders.{j}."
        heads = layer.self_attn.num_heads
        qkv = fused.linear(h, p[q + "self_attn.in_proj_weight"], p[q + "self_attn.in_proj_bias"])
        split = qkv.view(n * b, length, 3, heads, d // heads).permute(2, 0, 3, 1, 4)
        att = F.scaled_dot_product_attention(split[0], split[1], split[2])  # [N*B, h, L, d/h]
        att = att.transpose(1, 2).reshape(n, b * length, d)
        att = fused.linear(
            att, p[q + "self_attn.out_proj.weight"], p[q + "self_attn.out_proj.bias"]
        )
        h = fused.layer_norm(
            h + drop(att, (b, length)), p[q + "norm1.weight"], p[q + "norm1.bias"], layer.norm1.eps
        )
        ff = torch.relu(fused.linear(h, p[q + "linear1.weight"], p[q + "linear1.bias"]))
        ff = fused.linear(ff, p[q + "linear2.weight"], p[q + "linear2.bias"])
        h = fused.layer_norm(
            h + drop(ff), p[q + "norm2.weight"], p[q + "norm2.bias"], layer.norm2.eps
        )
    return fused.linear(h.reshape(n, b, length * d), p["fc1.weight"], p["fc1.bias"])
