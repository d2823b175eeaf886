"""A trial's budget: how many batches it trains and how many reports it makes at most.

One rule, read by the loop (harness.trainer: when a member has spent its budget) and by the
sweep's schedulers (SweepSpec.max_t: the longest trial's report count), so the two never
disagree about where a trial ends.
"""

from __future__ import annotations

import math


def steps(train_size: int, batch_size: int, max_epochs: int, max_steps: int = 0) -> int:
    """Batches a trial trains at most: max_epochs epochs of ceil(train_size / batch_size)
    batches, capped at max_steps (0: no cap)."""
    total = math.ceil(train_size / batch_size) * max_epochs
    return min(total, max_steps) if max_steps else total


def reports(total_steps: int, eval_every: int) -> int:
    """Reports (dev evaluations) in `total_steps` batches: one every eval_every batches and
    one at the last batch (at least 1)."""
    return max(1, math.ceil(total_steps / eval_every))
