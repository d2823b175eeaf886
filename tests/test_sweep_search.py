"""harness.sweep.search: the one Optuna searcher, honest about how every trial ended.

No Ray runs here: the searcher is driven the way Tune drives it (suggest, results,
completion) against a real Optuna SQLite study.
"""

from __future__ import annotations

import json
from pathlib import Path

import optuna
from helpers import SMOKE, evaluation, final, searcher, study, write_spec

from harness import sweep
from harness.config import load_spec
from harness.sweep.groups import FusePlan

optuna.logging.set_verbosity(optuna.logging.WARNING)


def test_honest_search_tells_optuna_how_each_trial_ended(tmp_path: Path) -> None:
    s = searcher(tmp_path)
    ids = ["done", "pruned", "failed", "diverged", "early"]
    configs = {t: s.suggest(t) for t in ids}
    assert configs["done"][sweep.NUMBER] == 0
    assert configs["done"][sweep.PARAMS] == load_spec(SMOKE).baseline_params()  # baseline first

    for t in ids:
        s.on_trial_result(t, evaluation(5, 0.6))
    s.on_trial_result("done", evaluation(10, 0.7))
    s.on_trial_complete("done", final(value=0.8))
    # the scheduler's STOP: Tune never passes the stopping result to on_trial_result
    s.on_trial_complete("pruned", evaluation(10, 0.65))
    s.on_trial_complete("failed", error=True)
    s.on_trial_complete("diverged", final("DIVERGED", None, "non-finite loss at iteration 7"))
    s.on_trial_complete("early", final(value=0.61))  # the loop's own early stop: complete

    trials = {t.user_attrs["ray_trial_id"]: t for t in study(tmp_path, "smoke").trials}
    assert trials["done"].state == optuna.trial.TrialState.COMPLETE
    assert trials["done"].value == 0.8
    assert trials["done"].intermediate_values == {1: 0.6, 2: 0.7}
    assert trials["pruned"].state == optuna.trial.TrialState.PRUNED
    assert trials["pruned"].intermediate_values == {1: 0.6, 2: 0.65}
    assert trials["pruned"].value == 0.65
    assert trials["failed"].state == optuna.trial.TrialState.FAIL
    assert trials["diverged"].state == optuna.trial.TrialState.FAIL
    assert trials["diverged"].user_attrs["status"] == "DIVERGED"
    assert "non-finite loss" in trials["diverged"].user_attrs["reason"]
    assert trials["early"].state == optuna.trial.TrialState.COMPLETE


def test_concurrent_tpe_uses_the_constant_liar(tmp_path: Path) -> None:
    s = searcher(tmp_path)  # smoke.yaml: tpe, 2 at a time
    assert isinstance(s.study.sampler, optuna.samplers.TPESampler)
    assert s.study.sampler._constant_liar


def test_a_complete_trial_without_a_finite_objective_is_a_failure(tmp_path: Path) -> None:
    s = searcher(tmp_path)
    s.suggest("t")
    s.on_trial_complete("t", final(value=float("nan")))
    (t,) = study(tmp_path, "smoke").trials
    assert t.state == optuna.trial.TrialState.FAIL


def test_repeated_results_and_completions_are_ignored(tmp_path: Path) -> None:
    s = searcher(tmp_path)
    s.suggest("t")
    s.on_trial_result("t", evaluation(5, 0.6))
    s.on_trial_result("t", evaluation(5, 0.6))
    s.on_trial_complete("t", final(value=0.7))
    s.on_trial_complete("t", final(value=0.1))
    (t,) = study(tmp_path, "smoke").trials
    assert t.value == 0.7 and t.intermediate_values == {1: 0.6}


def test_list_choices_reach_trials_as_lists(tmp_path: Path) -> None:
    s = searcher(tmp_path, baseline=False)
    for i in range(6):
        params = s.suggest(f"t{i}")[sweep.PARAMS]
        assert params["filter_sizes"] in ([2, 3], [3, 4])
    stored = study(tmp_path, "smoke").trials[0].params["filter_sizes"]
    assert isinstance(stored, str)  # Optuna holds the encoded form


def test_the_report_a_trial_ended_at_comes_with_its_final_result(tmp_path: Path) -> None:
    # the evaluation after which no member is left is held back from the scheduler: its
    # entry comes in the final result's GROUP list, before the member's end
    s = searcher(tmp_path)
    s.suggest("t")
    s.on_trial_result("t", evaluation(5, 0.6))
    s.on_trial_complete("t", final(value=0.7, last=evaluation(10, 0.7)))
    (t,) = study(tmp_path, "smoke").trials
    assert t.state == optuna.trial.TrialState.COMPLETE
    assert t.intermediate_values == {1: 0.6, 2: 0.7}


# --------------------------------------------------------------------- groups (resources.fuse)


def group_searcher(tmp_path: Path, size: int, samples: int, *sets: str) -> sweep.OptunaSearcher:
    spec = load_spec(SMOKE, [f"budget.num_samples={samples}", *sets])
    s = sweep.build_searcher(spec, tmp_path, fuse=FusePlan(size, size), new=samples)
    s.set_search_properties(None, None, {})
    assert isinstance(s, sweep.OptunaSearcher)
    return s


def members(config: dict) -> list[dict]:
    return config[sweep.MEMBERS]


def test_groups_share_shape_settings_and_num_samples_counts_members(tmp_path: Path) -> None:
    # smoke.yaml searches num_filters and filter_sizes (shape settings): a group's members
    # share them (and the batch order), the sampler picks the rest; 10 members in 4+4+2
    s = group_searcher(tmp_path, 4, 10)
    groups = []
    while (config := s.suggest(f"g{len(groups)}")) != "FINISHED":
        groups.append(members(config))
    assert [len(g) for g in groups] == [4, 4, 2]
    assert [m["number"] for g in groups for m in g] == list(range(10))
    assert groups[0][0]["params"] == {**load_spec(SMOKE).baseline_params(), "data_seed": 0}
    for g in groups:
        for name in ("num_filters", "filter_sizes", "data_seed"):
            assert len({str(m["params"][name]) for m in g}) == 1, (name, g)
        assert len({m["params"]["learning_rate"] for m in g}) == len(g)  # sampled per member
    trials = study(tmp_path, "smoke").trials
    assert len(trials) == 10
    for i, g in enumerate(groups):
        for m in g:
            attrs = trials[m["number"]].user_attrs
            assert attrs["ray_trial_id"] == f"g{i}-{m['member']}" and attrs["group_id"] == f"g{i}"
    assert s.suggest("g0") == {sweep.MEMBERS: groups[0]}  # asked again: the same group


def test_each_member_is_told_how_it_ended(tmp_path: Path) -> None:
    s = group_searcher(tmp_path, 4, 4, "early_terminate={type: none}")
    assert len(members(s.suggest("g"))) == 4

    def report(k: int, r: int, v: float) -> dict:
        return {sweep.MEMBER: k, "iteration": 5 * r, "report": r, "best_dev_acc": v}

    def end(k: int, status: str, v: float | None = None, error: str = "") -> dict:
        return {sweep.MEMBER: k, sweep.FINAL: True, sweep.STATUS: status, "best_dev_acc": v,
                sweep.ERROR: error}  # fmt: skip

    s.on_trial_result("g", {sweep.GROUP: [report(k, 1, 0.5 + k / 10) for k in range(4)]})
    s.on_trial_result("g", {sweep.GROUP: [report(0, 2, 0.7), report(1, 2, 0.6), end(1, "PRUNED"),
                                          report(2, 2, float("nan")),
                                          end(2, "DIVERGED", error="non-finite loss")]})  # fmt: skip
    s.on_trial_result("g", {sweep.GROUP: [report(0, 2, 0.1)]})  # a repeat: the first stands
    s.on_trial_complete("g", {sweep.GROUP: [report(0, 3, 0.8), end(0, "COMPLETED", 0.75)]})
    trials = study(tmp_path, "smoke").trials
    states = [t.state.name for t in trials]
    assert states == ["COMPLETE", "PRUNED", "FAIL", "PRUNED"]  # member 3: stopped from outside
    assert trials[0].value == 0.75 and trials[0].intermediate_values == {1: 0.5, 2: 0.7, 3: 0.8}
    assert trials[1].intermediate_values == {1: 0.6, 2: 0.6}
    assert trials[2].user_attrs["status"] == "DIVERGED"
    assert "non-finite" in trials[2].user_attrs["reason"]
    assert trials[3].user_attrs["status"] == "PRUNED"

    (tmp_path / "crash").mkdir()
    s2 = group_searcher(tmp_path / "crash", 2, 2)
    s2.suggest("h")
    s2.on_trial_complete("h", error=True)  # the worker died, no retries left
    assert [t.state.name for t in study(tmp_path / "crash", "smoke").trials] == ["FAIL", "FAIL"]


def test_a_grid_is_walked_in_groups_of_equal_shape(tmp_path: Path) -> None:
    s = group_searcher(
        tmp_path, 3, 6, "method=grid", "baseline=false", "train={embed: 16, batch_size: 32, max_steps: 20, eval_every: 5}",
        "parameters={num_filters: {values: [8, 16]}, seed: {values: [0, 1, 2]}}",
    )  # fmt: skip
    groups = [members(s.suggest(t)) for t in ("a", "b")]
    assert s.suggest("c") == "FINISHED"
    for g in groups:
        assert len(g) == 3 and len({m["params"]["num_filters"] for m in g}) == 1
        assert {m["params"]["seed"] for m in g} == {0, 1, 2}
        assert {m["params"]["data_seed"] for m in g} == {g[0]["params"]["seed"]}
    points = {(m["params"]["num_filters"], m["params"]["seed"]) for g in groups for m in g}
    assert len(points) == 6  # every grid point once


def test_interrupted_members_are_regrouped_by_shape_and_batch_order(tmp_path: Path) -> None:
    s = group_searcher(tmp_path, 4, 8)
    groups = [members(s.suggest(t)) for t in ("a", "b")]
    spec = load_spec(SMOKE, ["budget.num_samples=8"])
    numbers = [g[k]["number"] for g in groups for k in (1, 2, 3)]  # six were interrupted
    storage = optuna.storages.RDBStorage(sweep.optuna_storage_url(tmp_path))
    regrouped = sweep.search.rerun_groups(spec, storage, numbers, 4)
    assert sorted(n for g in regrouped for n in g) == sorted(numbers)
    shape = {m["number"]: (m["params"]["num_filters"], str(m["params"]["filter_sizes"]))
             for g in groups for m in g}  # fmt: skip
    for g in regrouped:
        assert len(g) <= 4 and len({shape[n] for n in g}) == 1
    resumed = sweep.build_searcher(spec, tmp_path, rerun=numbers, resume=True,
                                   fuse=FusePlan(4, 4), new=0)  # fmt: skip
    resumed.set_search_properties(None, None, {})
    again = [members(resumed.suggest(f"r{i}")) for i in range(len(regrouped))]
    assert resumed.suggest("r9") == "FINISHED"
    before = {m["number"]: m["params"] for g in groups for m in g}
    assert all(m["params"] == before[m["number"]] for g in again for m in g)  # same trials


def test_fuse_1_is_todays_searcher_and_scheduler(tmp_path: Path) -> None:
    spec = load_spec(SMOKE)
    s = sweep.build_searcher(spec, tmp_path, fuse=FusePlan(1, 1))
    assert type(s) is sweep.OptunaSearcher
    assert isinstance(sweep.build_scheduler(spec, 9), sweep.schedulers.AsyncHyperBandScheduler)
    fifo = sweep.build_scheduler(spec, 9, fused=True)
    assert "FIFOScheduler" in [c.__name__ for c in type(fifo).__mro__]


def test_multi_objective_members_are_told_every_objective(tmp_path: Path) -> None:
    metric = "metric=[{name: best_dev_acc, goal: maximize}, {name: best_dev_loss, goal: minimize}]"
    s = group_searcher(tmp_path, 2, 2, "method=nsga2", metric, "early_terminate={type: none}")
    s.suggest("g")
    end = {sweep.FINAL: True, sweep.STATUS: "COMPLETED", "best_dev_acc": 0.8, "best_dev_loss": 0.4}
    s.on_trial_complete("g", {sweep.GROUP: [{sweep.MEMBER: 0, **end},
                                            {sweep.MEMBER: 1, **end, "best_dev_loss": None}]})  # fmt: skip
    first, second = study(tmp_path, "smoke").trials
    assert first.state.name == "COMPLETE" and first.values == [0.8, 0.4]
    assert second.state.name == "FAIL" and "finite" in second.user_attrs["reason"]


def test_auto_runs_the_baseline_then_draws_around_it(tmp_path: Path) -> None:
    s = searcher(tmp_path, method="auto")  # smoke.yaml: 4 trials, asha
    spec = load_spec(write_spec(tmp_path / "s.yaml", method="auto"))
    choice = spec.choice()
    assert choice.method == "tpe" and choice.prior_draws == 2
    assert isinstance(s.study.sampler, optuna.samplers.TPESampler)
    assert s.study.sampler._multivariate and s.study.sampler._group and s.study.sampler._constant_liar
    first = [s.suggest(f"t{i}")[sweep.PARAMS] for i in range(3)]
    assert first == [spec.baseline_params(), *spec.prior_points(choice)]


def test_resume_keeps_the_sampler_auto_chose(tmp_path: Path) -> None:
    """auto's rule depends on the budget, which --resume may change: sweep.json keeps the
    first run's choice and the resumed searcher builds that sampler again."""
    space = {"learning_rate": {"distribution": "log_uniform_values", "min": 1e-3, "max": 1e-2},
             "dropout": {"min": 0.1, "max": 0.5}}  # fmt: skip
    first = load_spec(write_spec(tmp_path / "a.yaml", method="auto", parameters=space,
                                 early_terminate={"type": "none"}))  # fmt: skip
    plan = sweep.plan_search(first, tmp_path)
    assert plan.choice.method == "gp" and plan.record()["method"] == "gp"
    (tmp_path / "sweep.json").write_text(
        json.dumps({"spec": first.to_dict(), "search": plan.record()})
    )
    sweep.build_searcher(first, tmp_path, plan=plan)

    more = load_spec(write_spec(tmp_path / "a.yaml", method="auto", parameters=space,
                                early_terminate={"type": "none"},
                                budget={"num_samples": 500, "max_concurrent": 2}))  # fmt: skip
    assert more.choice().method == "tpe"  # what a fresh sweep of this budget would pick
    again = sweep.plan_search(more, tmp_path, resume=True)
    assert again.choice == plan.choice
    resumed = sweep.build_searcher(more, tmp_path, resume=True, plan=again)
    assert isinstance(resumed.study.sampler, optuna.samplers.GPSampler)
    assert isinstance(sweep.build_searcher(more, tmp_path, resume=True).study.sampler,
                      optuna.samplers.GPSampler)  # fmt: skip


def test_auto_s_draws_around_the_baseline_join_groups_of_their_shape(tmp_path: Path) -> None:
    # method auto queues the baseline and its draws before the sampler's trials: a queued
    # point joins the group it is handed to when its shape settings match, else it opens
    # the next group (nothing is lost or asked twice)
    s = group_searcher(tmp_path, 4, 12, "method=auto")
    spec = load_spec(SMOKE, ["budget.num_samples=12", "method=auto"])
    queued = [spec.baseline_params(), *spec.prior_points(spec.choice())]
    groups = []
    while (config := s.suggest(f"g{len(groups)}")) != "FINISHED":
        groups.append(members(config))
    asked = [m for g in groups for m in g]
    assert [m["number"] for m in asked] == list(range(12))
    for m, point in zip(asked, queued):  # the queued points first, in order
        assert {k: m["params"][k] for k in point} == point
    for g in groups:
        assert len({(m["params"]["num_filters"], str(m["params"]["filter_sizes"])) for m in g}) == 1
    assert sum(len(g) > 1 for g in groups[:2]) >= 1  # a draw of the baseline's shape joined it


def _end(k: int, value: float = 0.8) -> dict:
    return {sweep.MEMBER: k, sweep.FINAL: True, sweep.STATUS: "COMPLETED", "best_dev_acc": value}


def test_a_member_s_end_reaches_optuna_after_the_tables(tmp_path: Path) -> None:
    # Tune calls on_trial_result before the callbacks that write the tables: a member's end
    # is told at the searcher's next call, so a driver killed in between leaves it RUNNING
    # in the study (--resume reads it from the tables), never COMPLETE with no row.
    s = group_searcher(tmp_path, 2, 4, "early_terminate={type: none}")
    s.suggest("g")
    s.on_trial_result("g", {sweep.GROUP: [_end(0, 0.7), _end(1, 0.6)], sweep.FINAL: True})
    assert [t.state.name for t in study(tmp_path, "smoke").trials] == ["RUNNING", "RUNNING"]
    s.on_trial_complete("g", {sweep.GROUP: [_end(0, 0.7), _end(1, 0.6)], sweep.FINAL: True})
    trials = study(tmp_path, "smoke").trials
    assert [t.state.name for t in trials] == ["COMPLETE", "COMPLETE"]
    assert [t.value for t in trials] == [0.7, 0.6]
    s.suggest("h")  # a member that ended mid-group is told at the next call of any kind
    s.on_trial_result("h", {sweep.GROUP: [_end(0)]})
    assert study(tmp_path, "smoke").trials[2].state.name == "RUNNING"
    s.suggest("i")
    assert study(tmp_path, "smoke").trials[2].state.name == "COMPLETE"


def test_a_storage_fault_in_a_fused_sweep_halts_it(tmp_path: Path, monkeypatch) -> None:
    # the study stops taking tells after two: the searcher records the fault (the run stops,
    # as an unfused one does), tells nothing more and asks for no new group
    s = group_searcher(tmp_path, 2, 6, "early_terminate={type: none}")
    s.halt = sweep.search.Halt()
    tells = {"n": 0}
    real = optuna.Study.tell

    def tell(self, *args, **kw):
        tells["n"] += 1
        if tells["n"] > 2:
            raise optuna.exceptions.StorageInternalError("database or disk is full")
        return real(self, *args, **kw)

    monkeypatch.setattr(optuna.Study, "tell", tell)
    for g in ("a", "b"):
        s.suggest(g)
        s.on_trial_result(g, {sweep.GROUP: [_end(0), _end(1)], sweep.FINAL: True})
        s.on_trial_complete(g, {sweep.GROUP: [_end(0), _end(1)], sweep.FINAL: True})
    assert s.halt.stop_all() and "disk is full" in s.halt.fault
    assert s.suggest("c") is None  # no new group after the fault
    monkeypatch.setattr(optuna.Study, "tell", real)
    states = [t.state.name for t in study(tmp_path, "smoke").trials]
    assert states == ["COMPLETE", "COMPLETE", "RUNNING", "RUNNING"]  # --resume reruns these


def test_a_fused_grid_runs_every_point_once_whatever_the_group_size(tmp_path: Path) -> None:
    # 9 points, groups of up to 8: a group holds only points of one num_filters (a shape
    # setting), so it stops at 3 rather than repeating them
    grid = "parameters={learning_rate: {values: [0.001, 0.003, 0.01]}, num_filters: {values: [4, 8, 16]}}"
    s = group_searcher(tmp_path, 8, 9, "method=grid", "baseline=false", grid)
    groups = []
    while (config := s.suggest(f"g{len(groups)}")) != "FINISHED":
        groups.append(members(config))
    points = [(m["params"]["learning_rate"], m["params"]["num_filters"]) for g in groups for m in g]
    assert len(points) == 9 and len(set(points)) == 9
    assert [len(g) for g in groups] == [3, 3, 3]
