"""harness.bench.searchers.restriction: a real Optuna sampler restricted to a table proposes
only recorded configurations, each once while others remain."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import optuna

from harness import space
from harness.bench.blackbox import Blackbox, random_configs
from harness.bench.searchers.restriction import Restriction
from harness.config import load_spec

SPEC = Path(__file__).resolve().parents[1] / "search_spaces" / "replay_smoke.yaml"


def _table(n: int) -> Blackbox:
    """A table of n configurations with made-up curves (the restriction reads only configs)."""
    spec = load_spec(SPEC)
    configs = random_configs(spec, n, seed=0)
    vals = np.linspace(0.5, 0.8, n)[:, None] * np.ones((n, 3))
    secs = np.cumsum(np.ones((n, 3)), axis=1)
    return Blackbox(spec, configs, vals, secs, secs[:, -1] + 1, vals[:, -1],
                    np.array(["COMPLETED"] * n), 4)  # fmt: skip


def test_nearest_keeps_fixed_values_and_skips_used() -> None:
    table = _table(30)
    r = Restriction(table)
    target = r.encoded[7]
    assert r.nearest(target) == target  # a recorded point is its own nearest
    other = r.nearest(target, used={r._key(target)})
    assert other != target
    fixed = {"num_filters": 8}
    assert r.nearest(target, fixed=fixed)["num_filters"] == 8
    pts = r.points([target, target, target])  # three enqueued points: three configurations
    assert pts[0] == target and len({r._key(p) for p in pts}) == 3


def test_restricted_tpe_proposes_only_recorded_configurations() -> None:
    table = _table(25)
    r = Restriction(table)
    spec = table.spec
    sampler = r.sampler(optuna.samplers.TPESampler(seed=0, n_startup_trials=5, multivariate=True))
    study = optuna.create_study(direction="maximize", sampler=sampler)
    seen = set()
    for _ in range(20):
        trial = study.ask()
        params = space.suggest(trial, spec.parameters)
        row = table.lookup(params)  # raises if not recorded
        assert row not in seen
        seen.add(row)
        study.tell(trial, float(table.final[row]))
