"""harness.bench.history: auto's TPE over its latest trials against over every trial."""

from __future__ import annotations

import json

import numpy as np

from harness.bench import history
from harness.bench.blackbox import Blackbox
from harness.bench.searchers.restriction import Restriction
from harness.history import BoundedHistory
from harness.space import Choice

SMOKE = next(p for p in history.TABLES if p.name == "replay_smoke.npz")


def test_a_search_answers_from_the_table_and_its_curve_only_improves():
    table = Blackbox.load(SMOKE)
    sampler = Choice("tpe", 5, 0, "test", history=10).sampler(0, 40)
    assert isinstance(sampler, BoundedHistory)
    curve, ms = history.search(table, Restriction(table), sampler, 40, concurrency=3)
    assert len(curve) == 40 and ms > 0
    assert np.all(np.diff(curve) >= 0)  # maximize: the best so far never falls
    assert set(curve) <= set(table.final[np.isfinite(table.final)])  # recorded answers only


def test_the_bench_prints_both_searches_per_table_and_json(capsys):
    assert history.main(["--table", str(SMOKE), "--trials", "40", "--history", "10",
                         "--seeds", "2"]) == 0  # fmt: skip
    out = capsys.readouterr().out.strip().splitlines()
    (result,) = json.loads(out[-1])
    assert result["table"] == "replay_smoke.npz" and result["seeds"] == 2
    for mark in ("at_15", "at_30", "at_40"):
        counts = result[mark]
        assert counts["bounded_better"] + counts["same"] + counts["bounded_worse"] == 2
        assert counts["regret_iqm_every"] >= 0 and counts["regret_iqm_bounded"] >= 0
    assert any("latest 10" in line for line in out[:-1])
