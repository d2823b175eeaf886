"""PBT: Optuna draws a tiny population, Ray's PBT clones the top trials' checkpoints into the
bottom ones with perturbed learning rates and dropout, and the study records every trial."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from helpers import SMOKE, study

from harness import bundle, sweep
from harness import results as rs
from harness.config import load_spec
from harness.errors import UserError
from harness.space import decode

PBT = "early_terminate={type: pbt, perturbation_interval: 2, quantile_fraction: 0.5}"


def test_pbt_perturbs_only_searched_fusible_settings() -> None:
    spec = load_spec(SMOKE, [PBT])
    assert spec.early_terminate.mutations == ("learning_rate", "dropout")
    with pytest.raises(UserError, match="num_filters fixes the weights' shapes"):
        load_spec(SMOKE, [PBT, "early_terminate.mutations=[num_filters]"])
    with pytest.raises(UserError, match="momentum is not a searched parameter"):
        load_spec(SMOKE, [PBT, "early_terminate.mutations=[momentum]"])
    with pytest.raises(UserError, match="quantile_fraction: must be in"):
        load_spec(SMOKE, [PBT, "early_terminate.quantile_fraction=0.7"])
    with pytest.raises(UserError, match="pbt perturbs searched parameters"):
        load_spec(SMOKE, [PBT, "parameters={num_filters: {values: [8, 16]}}"])


@pytest.mark.ray
@pytest.mark.slow
def test_pbt_runs_a_tiny_population_on_cpu(
    ray_session: object, tiny_corpus: Path, tmp_path: Path
) -> None:
    overrides = ["data.name=thucnews", f"data.path={tiny_corpus}", "train.max_epochs=3",
                 "train.max_steps=24", "train.eval_every=3", "budget.num_samples=4",
                 "keep_best=2", PBT]  # fmt: skip
    spec = load_spec(SMOKE, overrides)
    out = sweep.run(spec, results_root=tmp_path, console=False)
    trials = pd.read_parquet(out.folder / rs.TRIALS_FILE)
    metrics = pd.read_parquet(out.folder / rs.METRICS_FILE)
    assert len(trials) == 4 and set(trials["status"]) == {"COMPLETED"}
    assert sorted(trials["trial_number"]) == [0, 1, 2, 3]
    assert (metrics.groupby("trial_id")["report"].max() == 8).all()  # every member ran to its end
    assert not metrics.duplicated(["trial_id", "iteration"]).any()

    # Optuna: the population as drawn (the baseline first), each trial told how it ended
    st = study(out.folder, "smoke")
    assert [t.state.name for t in st.trials] == ["COMPLETE"] * 4
    assert st.trials[0].params["learning_rate"] == pytest.approx(1e-3)  # the baseline
    by_id = trials.set_index("trial_id")
    for t in st.trials:
        row = by_id.loc[t.user_attrs["ray_trial_id"]]
        assert t.value == pytest.approx(row["metric"]) and "pbt_params" in t.user_attrs
        # the parameters it ended with are in the table (PBT may have changed them)
        assert t.user_attrs["pbt_params"]["learning_rate"] == pytest.approx(
            row["param.learning_rate"]
        )

    # PBT cloned at least one trial into another, and perturbed what it took
    cloned = trials[trials["error"].fillna("").str.contains(r"continued from trial \S+'s")]
    assert len(cloned) >= 1, trials[["trial_id", "error"]]
    drawn = {t.user_attrs["ray_trial_id"]: decode(spec.parameters, t.params) for t in st.trials}
    changed = [
        tid for tid, params in drawn.items()
        if any(params[k] != pytest.approx(by_id.loc[tid, f"param.{k}"])
               for k in ("learning_rate", "dropout"))
    ]  # fmt: skip
    assert changed, "no trial ended with other parameters than it was drawn with"
    for tid in changed:
        lr, p = by_id.loc[tid, "param.learning_rate"], by_id.loc[tid, "param.dropout"]
        assert 1e-3 <= lr <= 1e-2 and 0.1 <= p <= 0.5  # perturbed within the space

    top = rs.ranking(trials.to_dict("records"), "maximize")[:2]
    assert bundle.kept_models(out.folder) == sorted(top)
    assert not list((out.folder / rs.RAY_DIR).glob("*/checkpoint_*"))  # deleted at the end
