"""The captured step's fallback, on the CPU through the graph's code path (capture=False).

Every failure of the graph path (warm-up, capture, replay) turns graphs off for the rest of
the run and the step runs eagerly: the numbers are the eager run's, and the summary says why.
The captured path itself is checked on a GPU (`python -m harness.bench gpu`, `-m cuda`).
"""

from __future__ import annotations

import pytest
import torch
from helpers import configs, same, tiny_dataset

from harness import trainer
from harness.graphs import WARMUP, GraphedStep


@pytest.fixture(scope="module")
def data():
    return tiny_dataset()


def _run(cfgs, data, fail_at: int | None):
    out: dict[int, list[dict]] = {i: [] for i in range(len(cfgs))}
    loop = trainer.Loop(cfgs, data, device="cpu", fuse="fused")
    loop.graph = GraphedStep(loop, capture=False)
    body = loop.graph._body
    calls = [0]

    def failing(xb, yb, key):
        calls[0] += 1
        if fail_at is not None and calls[0] == fail_at:
            raise torch.OutOfMemoryError("out of memory inside the graph path (a test)")
        body(xb, yb, key)

    loop.graph._body = failing
    for epoch in range(1, loop.max_epochs + 1):
        for xb, yb in loop.batches(epoch):
            loop.step(xb, yb)
            if loop.report_due():
                loop.evaluate_and_report(lambda i, m: out[i].append(m))
    return loop.close(), out, loop


@pytest.mark.parametrize("fail_at", [1, WARMUP + 2])
def test_a_failure_in_the_graph_path_runs_the_step_eagerly(fail_at, data) -> None:
    cfgs = configs("TextCNN", max_epochs=1)
    eager, want, _ = _run(cfgs, data, None)
    got_s, got, loop = _run(cfgs, data, fail_at)
    assert loop.graph.disabled and loop.graph.lr_table is None  # what it held is freed
    for i in range(3):
        assert "cuda graphs off: OutOfMemoryError" in got_s[i].reason
        same(want[i], got[i], rel=1e-5)
        assert got_s[i].test_acc == eager[i].test_acc
