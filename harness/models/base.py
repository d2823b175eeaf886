"""What every model shares: common hyperparameters, the embedding layer and the classic init."""

from __future__ import annotations

import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from harness.errors import Problem, UserError

FUSIBLE = "fusible"


def fusible(default: Any) -> Any:
    """Mark a setting whose value may differ between the members of one fused group.

    A fusible setting changes no tensor shape and no op sequence (a learning rate, a dropout
    rate, a seed), so members that differ in it still train in one step. Every unmarked
    setting is a *shape* setting: members of a group must agree on it. Declared here, next
    to each field, and read by harness.trialconfig.shape_settings.
    """
    return field(default=default, metadata={FUSIBLE: True})


@dataclass(frozen=True)
class ModelParams:
    """Hyperparameters every model takes. Subclasses add their own, with the classic defaults."""

    embed: int = 300  # ignored when embedding_path is set: the file's width wins
    dropout: float = fusible(0.5)
    embedding_path: str | None = None  # .npz with an `embeddings` array (vocab_size, embed)
    freeze_embedding: bool = False

    def __post_init__(self) -> None:
        problems = self.problems()
        if problems:
            raise UserError(*problems)

    def problems(self) -> list[Problem]:
        """Every invalid value, at its parameter's name; subclasses extend the list."""
        out = positive(self, "embed")
        if not 0 <= self.dropout < 1:
            out.append(Problem("dropout", "must be in [0, 1)", self.dropout))
        return out


def positive(params: ModelParams, *names: str) -> list[Problem]:
    """Problems for integer fields that must be >= 1."""
    return [Problem(n, "must be >= 1", getattr(params, n)) for n in names if getattr(params, n) < 1]


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
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
        # corrupt zip, a plain pickle, object arrays refused by allow_pickle=False, ...
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


def init_weights(module: nn.Module) -> None:
    """The classic init: Xavier-normal weight matrices, zero biases, embeddings left alone.

    Like the classic `init_network`, anything that is neither a >=2-D weight nor a bias
    (LayerNorm scales, TextRNN_Att's attention vector) keeps its own initialisation.
    """
    skip = {id(p) for m in module.modules() if isinstance(m, nn.Embedding) for p in m.parameters()}
    for name, p in module.named_parameters():
        if id(p) in skip:
            continue
        leaf = name.rsplit(".", 1)[-1]
        if "weight" in leaf and p.dim() >= 2:
            nn.init.xavier_normal_(p)
        elif "bias" in leaf:
            nn.init.zeros_(p)
