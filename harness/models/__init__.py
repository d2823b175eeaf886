"""The model zoo: the seven classic text classifiers, each built from a typed params dataclass.

`MODELS` maps a model name to its entry; `build_model` is the one way the loop makes a model.
Each entry also carries the classic training settings of the Chinese-Text-Classification
benchmark (epochs, learning rate, patience), which a trial starts from before overrides.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from harness.errors import UserError
from harness.models import dpcnn, fasttext, textcnn, transformer
from harness.models.base import ModelParams
from harness.models.dpcnn import DPCNN, DPCNNParams
from harness.models.fasttext import FastText, FastTextParams
from harness.models.textcnn import TextCNN, TextCNNParams
from harness.models.textrcnn import TextRCNN, TextRCNNParams
from harness.models.textrnn import TextRNN, TextRNNParams
from harness.models.textrnn_att import TextRNNAtt, TextRNNAttParams
from harness.models.transformer import Transformer, TransformerParams


@dataclass(frozen=True)
class ModelEntry:
    name: str
    params_cls: type[ModelParams]
    module_cls: type[nn.Module]
    classic_train: dict[str, Any] = field(default_factory=dict)
    # (template, stacked params, x, dropout) -> logits [N, B, C] for a fused group; None: the
    # members run side by side (the LSTM models: no grouped LSTM kernel, no vmap rule)
    fused_forward: Callable[..., Any] | None = None


MODELS: dict[str, ModelEntry] = {
    e.name: e
    for e in [
        ModelEntry("TextCNN", TextCNNParams, TextCNN, {"max_epochs": 20}, textcnn.fused_forward),
        ModelEntry("TextRNN", TextRNNParams, TextRNN, {"max_epochs": 10}),
        ModelEntry("TextRNN_Att", TextRNNAttParams, TextRNNAtt, {"max_epochs": 10}),
        ModelEntry("TextRCNN", TextRCNNParams, TextRCNN, {"max_epochs": 10}),
        ModelEntry(
            "FastText", FastTextParams, FastText, {"max_epochs": 20}, fasttext.fused_forward
        ),
        ModelEntry("DPCNN", DPCNNParams, DPCNN, {"max_epochs": 20}, dpcnn.fused_forward),
        ModelEntry(
            "Transformer",
            TransformerParams,
            Transformer,
            {"max_epochs": 20, "learning_rate": 5e-4, "require_improvement": 2000},
            transformer.fused_forward,
        ),
    ]
}


def model_entry(name: str) -> ModelEntry:
    try:
        return MODELS[name]
    except KeyError:
        raise UserError(f"unknown model {name!r}; choose one of: {', '.join(MODELS)}") from None


def build_model(
    name: str, params: ModelParams, vocab_size: int, num_classes: int, pad_id: int, seq_len: int
) -> nn.Module:
    """A fresh model; forward(x: LongTensor[B, seq_len]) -> logits[B, num_classes]."""
    entry = model_entry(name)
    return entry.module_cls(
        params, vocab_size=vocab_size, num_classes=num_classes, pad_id=pad_id, seq_len=seq_len
    )


def parameter_count(name: str, params: ModelParams, data: Any) -> int:
    """Parameters of the model as built for `data` (a harness.data.Dataset), counted on
    torch's meta device: no memory, no time."""
    with torch.device("meta"):
        model = build_model(
            name, params, vocab_size=data.vocab_size, num_classes=data.num_classes,
            pad_id=data.pad_id, seq_len=int(data.train_x.shape[1]),
        )  # fmt: skip
    return int(sum(p.numel() for p in model.parameters()))
