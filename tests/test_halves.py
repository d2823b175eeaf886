"""harness.halves: a group out of device memory before its first report trains as two halves."""

from __future__ import annotations

import pytest
import torch
from helpers import tiny_cfg as cfg
from helpers import tiny_dataset

from harness import halves, trainer


def test_a_group_out_of_device_memory_before_its_first_report_trains_as_halves() -> None:
    """Out of memory (here: raised by the hook after a step while more than 2 members train
    at once, as a device that holds 2 would) splits the group; every member still trains
    to its end and reports under its own index, and says why."""
    data = tiny_dataset()
    cfgs = [cfg(seed=s, learning_rate=lr, max_epochs=1, data_seed=3)
            for s, lr in ((1, 0.01), (2, 0.003), (3, 0.02))]  # fmt: skip
    seen: list[tuple[list[int], int]] = []

    def tight(loop) -> None:
        if len(loop.alive) > 2 and loop.reports == 0 and not isinstance(loop, halves.GroupView):
            raise torch.OutOfMemoryError("CUDA out of memory (a test's device holds 2)")

    def after(loop) -> None:
        seen.append((list(loop.alive), len(loop.summaries)))

    reports: dict[int, list[dict]] = {0: [], 1: [], 2: []}
    out = trainer.train_group(cfgs, data, lambda i, m: reports[i].append(m), device="cpu",
                              on_batch=tight, after_report=after)  # fmt: skip
    assert [s.status for s in out] == ["COMPLETED"] * 3
    assert all("did not fit in device memory" in s.reason for s in out)
    assert all(s.group_size == (2 if i < 2 else 1) for i, s in enumerate(out))
    assert all(reports[i] and reports[i][-1]["iteration"] == out[i].iterations for i in range(3))
    assert seen[0] == ([0, 1, 2], 3)  # the first half's hook: member 2 is still to run
    alone = []
    trainer.train(cfgs[2], data, alone.append, device="cpu")
    assert [r["dev_loss"] for r in alone] == pytest.approx([r["dev_loss"] for r in reports[2]])
