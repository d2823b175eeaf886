"""harness.budget: the one rule for a trial's batches and reports, which the loop spends and
the schedulers' max_t counts."""

from __future__ import annotations

import pytest
from helpers import SMOKE, tiny_dataset
from helpers import tiny_cfg as cfg

from harness import budget, trainer
from harness.config import load_spec


@pytest.mark.parametrize(("max_steps", "steps", "reports"), [(0, 8, 3), (5, 5, 2)])
def test_the_loop_makes_exactly_the_reports_its_budget_allows(
    max_steps: int, steps: int, reports: int
) -> None:
    data = tiny_dataset((100, 40, 40))  # 4 batches of 32 an epoch: 2 epochs, 8 batches
    c = cfg(batch_size=32, max_epochs=2, eval_every=3, max_steps=max_steps)
    made: list[dict] = []
    s = trainer.train(c, data, made.append, device="cpu")
    assert s.iterations == budget.steps(100, 32, 2, max_steps) == steps
    assert len(made) == budget.reports(steps, 3) == reports  # every 3 batches and the last
    assert [r["last"] for r in made] == [False] * (reports - 1) + [True]


def test_max_t_counts_the_longest_trial_by_the_same_rule() -> None:
    spec = load_spec(SMOKE, ["parameters={learning_rate: {values: [0.01, 0.02]}}",
                             "train.max_epochs=2", "train.eval_every=3"])  # fmt: skip
    tc = spec.trial_config(spec.baseline_params()).train
    longest = budget.reports(budget.steps(100, tc.batch_size, 2, tc.max_steps), 3)
    assert spec.max_t(train_size=100) == longest + 1
