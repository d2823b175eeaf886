"""What every model's hyperparameters share, and how pretrained embeddings are loaded."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from harness.errors import UserError


@dataclass(frozen=True)
class ModelParams:
    """Hyperparameters every model takes. Subclasses add their own, with the classic defaults."""

    embed: int = 300
    dropout: float = 0.5
    embedding_path: str | None = None  # .npz with an `embeddings` array (vocab_size, embed)
    freeze_embedding: bool = False


def load_embeddings(path: str, vocab_size: int) -> np.ndarray:
    """Read a pretrained embedding matrix from an .npz without ever unpickling."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f"{path}: embedding file not found")
    try:
        with np.load(p, allow_pickle=False) as npz:
            if "embeddings" not in npz.files:
                raise UserError(f"{path}: no 'embeddings' array (found: {', '.join(npz.files)})")
            emb = np.asarray(npz["embeddings"], dtype=np.float32)
    except UserError:
        raise
    except Exception as exc:  # corrupt zip, object arrays refused by allow_pickle=False, ...
        raise UserError(f"{path}: not a readable .npz embedding file ({exc})") from None
    if emb.ndim != 2 or emb.shape[0] != vocab_size:
        raise UserError(
            f"{path}: embeddings must have shape (vocab_size={vocab_size}, dim), got {emb.shape}"
        )
    return emb


def make_embedding(params: ModelParams, vocab_size: int, pad_id: int) -> nn.Embedding:
    """Random embedding (padding row zero) or the pretrained one named in params."""
    if params.embedding_path:
        emb = load_embeddings(params.embedding_path, vocab_size)
        return nn.Embedding.from_pretrained(
            torch.from_numpy(emb), freeze=params.freeze_embedding, padding_idx=pad_id
        )
    return nn.Embedding(vocab_size, params.embed, padding_idx=pad_id)

