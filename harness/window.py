"""The steps since the last report, kept on the device, and the report built from them.

Each training step records, per member, its mean loss, its correct count and its global
gradient norm into a small device buffer (no host sync); a report reads the buffer with the
gradient statistics and the dev result in one transfer and turns the host values into each
member's report row (`row`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from harness import schema

_LOSS, _CORRECT, _NORM = range(3)


class Window:
    """Per member and step: loss, correct predictions, global gradient norm (0 if unmeasured)."""

    def __init__(self, n: int, size: int, device: torch.device) -> None:
        self.buf = torch.zeros(3, n, max(1, size), device=device)
        self.batch_sizes: list[int] = []  # host-side, per recorded step

    @property
    def steps(self) -> int:
        return len(self.batch_sizes)

    def record(self, k: int | Tensor, loss: Tensor, correct: Tensor, norm: Tensor | None) -> None:
        """Step k of the window: an int, or a device index (a captured step reads its
        position from the device, harness.graphs)."""
        rows = [(_LOSS, loss.detach()), (_CORRECT, correct)]
        if norm is not None:
            rows.append((_NORM, norm))
        for r, value in rows:
            if isinstance(k, Tensor):
                self.buf[r].index_copy_(1, k.view(1), value.view(-1, 1).to(self.buf.dtype))
            else:
                self.buf[r, :, k] = value

    def device_values(self) -> Tensor:
        return self.buf[:, :, : self.steps].reshape(-1)

    @property
    def read_size(self) -> int:
        return 3 * self.buf.shape[1] * self.steps

    def decode(self, values: Sequence[float]) -> list[dict[str, list[float]]]:
        """Host values of `device_values()` -> per member {loss, correct, norm} lists."""
        n, k = self.buf.shape[1], self.steps
        rows = [values[r * n * k : (r + 1) * n * k] for r in range(3)]
        return [
            {
                "loss": list(rows[_LOSS][i * k : (i + 1) * k]),
                "correct": list(rows[_CORRECT][i * k : (i + 1) * k]),
                "norm": list(rows[_NORM][i * k : (i + 1) * k]),
            }
            for i in range(n)
        ]

    def reset(self) -> None:
        self.buf.zero_()
        self.batch_sizes = []

    def keep(self, keep: Sequence[int]) -> None:
        idx = torch.tensor(list(keep), device=self.buf.device)
        self.buf = self.buf.index_select(1, idx)


def nonfinite_steps(w: dict[str, list[float]]) -> list[int]:
    """Window positions whose loss or (measured) gradient norm is NaN or infinite."""
    return [
        i for i, (loss, norm) in enumerate(zip(w["loss"], w["norm"]))
        if not (math.isfinite(loss) and math.isfinite(norm))
    ]  # fmt: skip


def row(
    *,
    step: int,
    report: int,
    epoch: int,
    samples: int,
    elapsed: float,
    lr: float,
    window: dict[str, list[float]],
    batch_sizes: Sequence[int],
    dev_loss: float,
    dev_acc: float,
    improved: bool,
    best_loss: float,
    best_acc: float,
    grad: dict[str, Any],
    layers: dict[str, list[Any]],
    last: bool = False,
) -> dict[str, Any]:
    """One member's report: schema.METRIC_KEYS in order, plus schema.LAYERS and schema.LAST.

    train_loss is the mean over the window's samples (a short last batch weighs by its size)
    and includes label smoothing; dev_loss is plain cross entropy.
    """
    seen = sum(batch_sizes)
    metrics: dict[str, Any] = {
        "iteration": step,
        "report": report,
        "epoch": epoch,
        "samples": samples,
        "elapsed_s": elapsed,
        "lr": lr,
        "train_loss": sum(v * b for v, b in zip(window["loss"], batch_sizes)) / seen,
        "train_acc": sum(window["correct"]) / seen,
        "dev_loss": dev_loss,
        "dev_acc": dev_acc,
        "improved": improved,
        "best_dev_loss": best_loss,
        "best_dev_acc": best_acc,
        "grad_nonfinite": len(nonfinite_steps(window)),
        **grad,
    }
    out = {key: metrics[key] for key in schema.METRIC_KEYS}
    out[schema.LAYERS] = layers
    out[schema.LAST] = last
    return out
