"""harness.sweep.trial: LastReport names the report the real loop ends a trial at.

The loop (harness.trainer) runs for real on test_trainer's tiny task; for every way a trial
ends (its step budget, max_steps, its patience, divergence) exactly its last report must be
the one LastReport calls last, so that report can be held back from the scheduler.
"""

from __future__ import annotations

import pytest
import torch
from test_trainer import built, cfg, data  # noqa: F401 -- fixtures

from harness import trainer
from harness.sweep.trial import LastReport


def _marks(c, ds, scramble_after: int | None = None, model=None) -> tuple[list[bool], object]:
    is_last = LastReport(c, int(ds.train_x.shape[0]))
    marks: list[bool] = []
    gen = torch.Generator().manual_seed(1)

    def report(m: dict) -> None:
        marks.append(is_last(m))
        if scramble_after is not None and m["iteration"] >= scramble_after:
            with torch.no_grad():  # the dev loss never improves again: patience runs out
                for p in model[-1].parameters():
                    p.copy_(torch.randn(p.shape, generator=gen) * 3)

    summary = trainer.train(c, ds, report, device="cpu")
    return marks, summary


@pytest.mark.parametrize(
    "flat",
    [
        {},  # the whole budget: 3 epochs, the last report at the epochs' end (57)
        {"max_steps": 23, "eval_every": 5},  # a cap that is not a multiple of eval_every
        {"max_steps": 20, "eval_every": 5},  # one that is
    ],
)
def test_the_last_report_of_a_full_run(built, data, flat) -> None:  # noqa: F811
    marks, s = _marks(cfg(**flat), data)
    assert s.status == "COMPLETED" and not s.stopped_early
    assert marks == [False] * (len(marks) - 1) + [True]


def test_the_last_report_when_patience_runs_out(built, data) -> None:  # noqa: F811
    marks, s = _marks(cfg(require_improvement=30, max_epochs=20), data, 20, built)
    assert s.stopped_early and s.iterations == 50
    assert marks == [False] * (len(marks) - 1) + [True]


def test_the_last_report_of_a_diverged_trial(built, data) -> None:  # noqa: F811
    marks, s = _marks(cfg(optimizer="sgd", learning_rate=1e6, max_epochs=20), data)
    assert s.status == "DIVERGED" and marks == [True]
