"""How a model scores on a split: the dev evaluation every report makes (one plain model, or
every member of a group at once) and the test of a completed trial's kept weights.

Nothing here reads the device back except the test: the loop copies a report's results to
the host in one transfer (harness.trainer).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from harness.trialconfig import TrainConfig

if TYPE_CHECKING:
    from harness.trainer import TrialSummary


def full_precision(logits: Tensor) -> Tensor:
    """bf16/fp16 logits (autocast) as float32; float32 and float64 stay as they are."""
    return logits.float() if logits.dtype in (torch.bfloat16, torch.float16) else logits


@torch.inference_mode()
def evaluate(
    model: nn.Module, x: Tensor, y: Tensor, batch_size: int, autocast: Any, preds: bool = False
) -> tuple[Tensor, Tensor | None]:
    """One plain model: device tensor [loss_sum, correct] (plain cross entropy), and argmax
    predictions if asked. Nothing is read back here: the caller copies the result."""
    was_training = model.training
    model.eval()
    acc = torch.zeros(2, device=x.device)
    out = []
    for s in range(0, x.shape[0], batch_size):
        xb, yb = x[s : s + batch_size], y[s : s + batch_size]
        with autocast():
            logits = model(xb)
        logits = full_precision(logits)
        p = logits.argmax(1)
        acc[0] += F.cross_entropy(logits, yb, reduction="sum")
        acc[1] += (p == yb).sum()
        if preds:
            out.append(p)
    model.train(was_training)
    return acc, (torch.cat(out) if preds else None)


@torch.inference_mode()
def evaluate_members(
    members: nn.Module, x: Tensor, y: Tensor, batch_size: int, autocast: Any
) -> Tensor:
    """Every member at once: device tensor [N, 2] of (loss sum, correct) on (x, y)."""
    was_training = members.training
    members.eval()
    acc = None
    for s in range(0, x.shape[0], batch_size):
        xb, yb = x[s : s + batch_size], y[s : s + batch_size]
        with autocast():
            logits = members(xb)
        logits = full_precision(logits)
        n, b, c = logits.shape
        loss = F.cross_entropy(logits.reshape(n * b, c), yb.repeat(n), reduction="none")
        correct = (logits.argmax(2) == yb).sum(1).to(loss.dtype)
        part = torch.stack([loss.view(n, b).sum(1), correct], 1)
        acc = part if acc is None else acc + part
    members.train(was_training)
    assert acc is not None
    return acc


def test(
    model: nn.Module,
    data: Any,
    to_dev: Callable,
    tc: TrainConfig,
    autocast: Any,
    summary: TrialSummary,
) -> None:
    """Accuracy, loss, macro F1, classification report and confusion matrix of the test split."""
    from sklearn.metrics import classification_report, confusion_matrix, f1_score

    x, y = to_dev(data.test_x), to_dev(data.test_y)
    acc, preds = evaluate(model, x, y, tc.eval_batch_size, autocast, preds=True)
    loss_sum, correct = acc.tolist()
    n = int(y.shape[0])
    y_true = np.asarray(data.test_y)
    y_pred = preds.cpu().numpy()
    labels = list(range(data.num_classes))
    summary.test_loss = loss_sum / n
    summary.test_acc = correct / n
    summary.test_f1_macro = float(
        f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0)
    )
    summary.report_text = classification_report(
        y_true, y_pred, labels=labels, target_names=list(data.classes), digits=4, zero_division=0
    )
    summary.confusion = confusion_matrix(y_true, y_pred, labels=labels).tolist()
