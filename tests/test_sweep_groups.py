"""Fused sweeps (resources.fuse): how big a group is, who may share one, and real sweeps
whose Ray trials are groups of Optuna trials (real Ray on 127.0.0.1, real Optuna SQLite).

The resume and crash cases are in tests/test_faults.py; the member scheduler's equivalence
with Ray's schedulers in tests/test_sweep_rungs.py; the searcher that fills groups in
tests/test_sweep_search.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from helpers import SMOKE, _tables, study, write_spec

from harness import bundle, footprint, sweep
from harness import results as rs
from harness.config import load_spec
from harness.data import load_dataset
from harness.footprint import Measurement, Probe, member_bytes
from harness.models import parameter_count
from harness.schema import TRIAL_KEYS
from harness.sweep.groups import (
    FusePlan,
    gpu_probe,
    group_by_shape,
    plan_fuse,
    shape_key,
    shape_names,
)


def _data(tiny_corpus: Path, spec_sets=()):
    spec = load_spec(SMOKE, ["data.name=thucnews", f"data.path={tiny_corpus}", *spec_sets])
    return spec, load_dataset(spec.data)


# --------------------------------------------------------------------- the group size (no Ray)


def _probe(rates: dict[int, float], free_gb: float = 100) -> Probe:
    runs = [Measurement(n, r, 0, 0.1, True) for n, r in rates.items()]
    return Probe("cuda:0", int(free_gb * 2**30), runs)


def test_fuse_auto_rule(tiny_corpus: Path) -> None:
    spec, data = _data(tiny_corpus, ["resources.fuse=4"])
    assert plan_fuse(spec, data) == FusePlan(4, 4, "as set")
    spec, data = _data(tiny_corpus)  # auto on CPU trials
    assert plan_fuse(spec, data).size == 1 and "CPU" in plan_fuse(spec, data).why
    spec, _ = _data(tiny_corpus, ["model=TextRNN", "parameters={dropout: {min: 0.1, max: 0.5}}",
                                  "train={max_steps: 20}", "resources.gpu=1"])  # fmt: skip
    assert plan_fuse(spec, data) == FusePlan("auto", 1, "TextRNN has no fused form")
    # GPU trials: sizes up to 8, no more than fills every concurrent slot, are measured
    fast = {1: 1000.0, 2: 1900.0, 3: 2800.0, 4: 3600.0, 8: 6000.0}
    for samples, concurrent, size in ((32, 2, 8), (8, 2, 4), (4, 4, 1), (6, 2, 3)):
        spec, _ = _data(tiny_corpus, ["resources.gpu=1", f"budget.num_samples={samples}",
                                      f"budget.max_concurrent={concurrent}"])  # fmt: skip
        asked: list[list[int]] = []

        def probe(sizes: list[int], asked=asked) -> Probe:
            asked.append(sizes)
            return _probe({n: fast[n] for n in sizes})

        plan = plan_fuse(spec, data, probe)
        assert plan.size == size, (samples, concurrent, plan)
        assert not asked or max(asked[0]) == size
    spec, _ = _data(tiny_corpus, ["resources.gpu=1", "budget.num_samples=32"])
    # nothing measured (no GPU answered), or a group no faster than a trial alone: 1
    plan = plan_fuse(spec, data, lambda sizes: None)
    assert plan.size == 1 and "not measured" in plan.why
    plan = plan_fuse(spec, data, lambda sizes: _probe({n: 1000.0 * (1 + n / 100) for n in sizes}))
    assert plan.size == 1 and "under 1.2x" in plan.why
    plan = plan_fuse(spec, data, lambda sizes: _probe({1: 0.0}))
    assert plan.size == 1 and "failed" in plan.why


def test_fuse_auto_counts_a_members_memory(tiny_corpus: Path) -> None:
    # FastText: 153M parameters whatever the vocabulary (its n-gram tables): 24 bytes each
    # under Adam (weight, gradient, two moments, kept best, statistics snapshot), ~3.4 GiB
    base = ["model=FastText", "parameters={dropout: {min: 0.1, max: 0.5}}",
            "train={max_steps: 20}", "budget.num_samples=64", "budget.max_concurrent=1"]  # fmt: skip
    spec, data = _data(tiny_corpus, [*base, "resources.gpu=1"])
    cfg = spec.trial_config(spec.baseline_params())
    member = member_bytes(cfg, data, parameter_count("FastText", cfg.params, data), True)
    assert 3.3 * 2**30 < member < 3.6 * 2**30
    rates = {1: 1000.0, 2: 1900.0, 4: 3600.0, 8: 6000.0}
    assert plan_fuse(spec, data, lambda s: _probe(rates, free_gb=138)).size == 8  # an H200
    plan = plan_fuse(spec, data, lambda s: _probe(rates, free_gb=20))  # 80% of 20 GB: 4 fit
    assert plan.size == 4 and "4 fit 20 GB free" in plan.why
    spec, data = _data(tiny_corpus, [*base, "resources.gpu=0.25"])
    assert plan_fuse(spec, data, lambda s: _probe(rates, free_gb=24)).size == 1


def test_a_probe_measures_groups_on_the_device(tiny_corpus: Path) -> None:
    """The measurement itself, on the CPU here (on a GPU the sweep runs it in a Ray task)."""
    spec, data = _data(tiny_corpus)
    cfg = spec.trial_config(spec.baseline_params())
    found = footprint.measure(cfg, data, [1, 2], device="cpu", steps=3)
    assert [r.members for r in found.runs] == [1, 2]
    assert all(r.samples_per_s > 0 and not r.captured for r in found.runs)
    assert Probe.from_dict(found.to_dict()) == found


def test_shape_settings_decide_who_shares_a_group() -> None:
    spec = load_spec(SMOKE)
    assert shape_names(spec) == ["num_filters", "filter_sizes"]  # not learning_rate, dropout
    a = {"learning_rate": 1e-3, "dropout": 0.1, "num_filters": 8, "filter_sizes": [2, 3]}
    assert shape_key(spec, a) == shape_key(spec, {**a, "learning_rate": 5e-3, "dropout": 0.4})
    assert shape_key(spec, a) != shape_key(spec, {**a, "num_filters": 16})
    assert shape_key(spec, a) != shape_key(spec, {**a, "data_seed": 3})  # another batch order
    members = [(0, a), (1, {**a, "num_filters": 16}), (2, a), (3, a), (4, {**a, "dropout": 0.3})]
    assert group_by_shape(spec, members, 3) == [[0, 2, 3], [1], [4]]
    assert group_by_shape(spec, [(0, a), (1, {**a, "num_filters": "x"})], 4) == [[0], [1]]


def test_resume_keeps_the_fuse_setting(tmp_path: Path) -> None:
    from harness.errors import UserError
    from harness.sweep.resume import check_same_spec

    spec = load_spec(SMOKE)
    old = spec.to_dict()
    del old["resources"]["fuse"]  # sweep.json of a sweep from before resources.fuse
    (tmp_path / rs.SWEEP_FILE).write_text(json.dumps({"spec": old}))
    check_same_spec(tmp_path, spec)  # read as auto: resumable
    with pytest.raises(UserError, match="resources"):
        check_same_spec(tmp_path, load_spec(SMOKE, ["resources.fuse=4"]))


# --------------------------------------------------------------------- fused sweeps (Ray)


def _sets(tiny_corpus: Path, *extra: str) -> list[str]:
    return ["data.name=thucnews", f"data.path={tiny_corpus}", *extra]


@pytest.mark.ray
@pytest.mark.slow
def test_fused_sweep_of_8_in_groups_of_4_with_asha(
    ray_session: object, tiny_corpus: Path, tmp_path: Path, capsys
) -> None:
    # smoke.yaml searches num_filters and filter_sizes (shape settings) and a learning rate
    # that cannot learn next to one that can: ASHA stops members inside their groups. One
    # group at a time: ASHA's decisions depend on the order reports arrive in (Ray's too),
    # and the baseline (lr 1e-3) reporting first makes a stop certain.
    overrides = _sets(tiny_corpus, "train.max_epochs=3", "resources.fuse=4",
                      "budget.num_samples=8", "budget.max_concurrent=1",
                      "parameters.learning_rate={values: [1.0e-3, 1.0e-9]}")  # fmt: skip
    args = [str(SMOKE), *(x for o in overrides for x in ("--set", o)), "--results", str(tmp_path)]
    assert sweep.main(args) == 0
    folder = tmp_path / "smoke"
    trials, metrics, layers = _tables(folder)
    spec = load_spec(SMOKE, overrides)

    # every member a trial: its own row, number and id '<group>-<member>'
    assert len(trials) == 8 and trials["trial_id"].is_unique
    assert list(trials.columns) == [*TRIAL_KEYS, *(f"param.{n}" for n in spec.parameters),
                                    "param.data_seed"]  # fmt: skip
    assert trials["trial_number"].tolist() == list(range(8))
    assert (
        trials["trial_id"] == trials["group_id"] + "-" + trials["group_member"].astype(str)
    ).all()
    assert trials.groupby("group_id").size().tolist() == [4, 4] and set(trials["group_size"]) == {4}
    for _, g in trials.groupby("group_id"):  # a searched shape setting: equal within a group
        for col in ("param.num_filters", "param.filter_sizes", "param.data_seed"):
            assert g[col].nunique() == 1, g[["trial_id", col]]
    assert trials.iloc[0]["group_member"] == 0  # the baseline is member 0 of the first group
    assert rs.trial_params(rs.load(folder), trials.iloc[0]["trial_id"]) == {
        **spec.baseline_params(), "data_seed": 0}  # fmt: skip

    # PRUNED members with their curves, COMPLETED ones with test metrics, each once per table
    assert {"PRUNED", "COMPLETED"} <= set(trials["status"])
    done = trials[trials["status"] == "COMPLETED"]
    assert done["test_acc"].between(0, 1).all() and done["metric"].notna().all()
    pruned = trials[trials["status"] == "PRUNED"]
    assert pruned["test_acc"].isna().all() and (pruned["iterations"] < 20).all()
    assert not metrics.duplicated(["trial_id", "iteration"]).any()
    assert set(metrics["trial_id"]) == set(trials["trial_id"]) == set(layers["trial_id"])
    assert not layers.duplicated(["trial_id", "iteration", "layer"]).any()
    last = metrics.groupby("trial_id")["iteration"].max()
    assert (last.reindex(trials["trial_id"]).values == trials["iterations"].values).all()
    st = study(folder, "smoke")
    assert len(st.trials) == 8
    by_id = {t.user_attrs["ray_trial_id"]: t for t in st.trials}
    assert set(by_id) == set(trials["trial_id"])
    state = {"COMPLETED": "COMPLETE", "PRUNED": "PRUNED", "FAILED": "FAIL", "DIVERGED": "FAIL"}
    for row in trials.itertuples():
        t = by_id[row.trial_id]
        assert t.state.name == state[row.status] and t.number == row.trial_number
        curve = metrics[metrics["trial_id"] == row.trial_id].set_index("report")
        assert t.intermediate_values == pytest.approx(curve["best_dev_acc"].to_dict())

    # a member reruns alone (--replay takes its id or its number): the same numbers
    from harness.trainer import train

    row = done.iloc[-1]
    for ref in (row["trial_id"], f"#{row['trial_number']}"):
        cfg, data_spec = rs.trial_config_for(folder, ref)
        assert cfg.train.data_seed == 0
    again = train(cfg, load_dataset(data_spec), device="cpu", threads=1)
    assert again.best_dev_acc == pytest.approx(row["best_dev_acc"], abs=1e-6)
    assert again.best_iteration == row["best_iteration"]

    out = capsys.readouterr().out
    assert "8 trials in groups of up to 4 (at least 2; a group shares num_filters, filter_sizes)" in out
    assert sum(line.startswith("[") for line in out.splitlines()) == 8  # a line per trial
    info = json.loads((folder / rs.SWEEP_FILE).read_text())
    assert info["fuse"] == {"setting": 4, "size": 4, "why": "as set"}
    # keep_best (3) keeps the top members' own tested models; TensorBoard has each member
    top = rs.ranking(trials.to_dict("records"), "maximize")[:3]
    assert bundle.kept_models(folder) == sorted(top)
    for tid in top:
        kept = bundle.load(folder / rs.MODELS_DIR / tid)
        assert kept.info["origin"]["trial_id"] == tid
        assert kept.info["scores"]["test_acc"] == trials.set_index("trial_id").loc[tid, "test_acc"]
        assert kept.config == rs.trial_config_for(folder, tid)[0]
    assert {p.name for p in (folder / "tb").iterdir()} == set(trials["trial_id"])
    assert info["throughput"]["trials"] == 8 and info["throughput"]["trials_per_device_hour"] > 0


@pytest.mark.ray
@pytest.mark.slow
def test_a_diverging_member_does_not_end_its_group(ray_session: object, tmp_path: Path) -> None:
    spec_path = write_spec(
        tmp_path / "faults.yaml",
        name="faults",
        method="grid",
        baseline=False,
        early_terminate={"type": "none"},
        parameters={"learning_rate": {"values": [1.0e-3, 1.0e30, 2.0e-3]}},
        budget={"num_samples": 3, "max_concurrent": 1},
        resources={"cpu": 1, "fuse": 3},
    )
    out = sweep.run(load_spec(spec_path), results_root=tmp_path / "results", console=False)
    trials, _, _ = _tables(out.folder)
    assert trials["group_id"].nunique() == 1 and len(trials) == 3
    by_lr = trials.set_index("param.learning_rate")
    assert by_lr.loc[1e30, "status"] == "DIVERGED" and "non-finite" in by_lr.loc[1e30, "error"]
    assert by_lr.loc[1e30, "iterations"] == 5  # it left at the first report
    for lr in (1e-3, 2e-3):  # the others ran on to their end
        assert by_lr.loc[lr, "status"] == "COMPLETED" and by_lr.loc[lr, "iterations"] == 20
    states = {t.params["learning_rate"]: t.state.name for t in study(out.folder, "faults").trials}
    assert states == {1e-3: "COMPLETE", 1e30: "FAIL", 2e-3: "COMPLETE"}


@pytest.mark.ray
@pytest.mark.slow
def test_fuse_1_runs_a_trial_per_ray_trial_as_before(
    ray_session: object, tiny_corpus: Path, tmp_path: Path, capsys
) -> None:
    spec = load_spec(SMOKE, _sets(tiny_corpus, "resources.fuse=1", "budget.num_samples=2"))
    out = sweep.run(spec, results_root=tmp_path)
    trials, metrics, _ = _tables(out.folder)
    assert len(trials) == 2 and "-" not in "".join(trials["trial_id"])  # Ray's own ids
    assert (trials["group_id"] == trials["trial_id"]).all() and set(trials["group_size"]) == {1}
    assert "param.data_seed" not in trials  # nothing added to the params
    ray_dirs = {p.name for p in (out.folder / "ray").iterdir() if p.is_dir()}
    assert ray_dirs == set(trials["trial_id"])
    assert "groups of" not in capsys.readouterr().out
    assert pd.api.types.is_integer_dtype(metrics["report"])


@pytest.mark.ray
def test_the_gpu_probe_without_a_device_means_one_trial_per_group(tiny_corpus: Path, ray_session) -> None:
    """The probe runs as a Ray task on the trial's GPU share (the test session's GPU is a
    logical one, with no CUDA behind it): the measurement fails there, and auto says 1."""
    spec, data = _data(tiny_corpus, ["resources.gpu=0.5", "budget.num_samples=8"])
    plan = plan_fuse(spec, data, gpu_probe(spec, data, timeout_s=120))
    assert plan.size == 1 and "not measured" in plan.why
