"""Per member: the best dev loss so far, a copy of its weights, and the patience left.

The classic loop keeps the weights with the best dev loss, stops after `require_improvement`
batches without improvement, and tests the kept weights, not the last ones. A group does
that for every member independently; the copies live on the training device.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor


class Keeper:
    """Best-so-far bookkeeping of every member of a group."""

    def __init__(self, params: list[list[Tensor]], patience: Sequence[int]) -> None:
        self.weights = [[p.detach().clone() for p in ps] for ps in params]
        self.patience = list(patience)
        n = len(params)
        self.best_loss = [math.inf] * n
        self.best_acc = [math.nan] * n
        self.best_it = [0] * n

    @torch.no_grad()
    def update(
        self, i: int, dev_loss: float, dev_acc: float, step: int, params: list[Tensor]
    ) -> bool:
        """Record member i's dev result; keeps a copy of its weights when the loss improved."""
        if not (math.isfinite(dev_loss) and dev_loss < self.best_loss[i]):
            return False
        self.best_loss[i], self.best_acc[i], self.best_it[i] = dev_loss, dev_acc, step
        torch._foreach_copy_(self.weights[i], [p.detach() for p in params])
        return True

    def exhausted(self, i: int, step: int) -> bool:
        """No improvement for `require_improvement` batches: the classic early stop."""
        return step - self.best_it[i] >= self.patience[i]

    def keep(self, keep: Sequence[int]) -> None:
        for name in ("weights", "patience", "best_loss", "best_acc", "best_it"):
            values = getattr(self, name)
            setattr(self, name, [values[i] for i in keep])
