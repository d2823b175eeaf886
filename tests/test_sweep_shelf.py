"""keep_best: results/<name>/models/ holds exactly the top k trials' saved models, as the
ranking changes while trials finish, after a --resume that shrinks k, and in a real sweep."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from helpers import SMOKE, study

from harness import bundle, sweep
from harness import results as rs
from harness.config import load_spec
from harness.data import DataSpec, load_dataset
from harness.models import build_model
from harness.predict import load
from harness.sweep.shelf import ModelShelf, unkept
from harness.trialconfig import resolve


@pytest.fixture(scope="module")
def model_dir(tiny_corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One real saved model (an untrained tiny TextCNN) to offer under many names."""
    spec = DataSpec(name="thucnews", path=str(tiny_corpus))
    data = load_dataset(spec)
    cfg = resolve("TextCNN", {"embed": 8, "num_filters": 4, "filter_sizes": [2]})
    net = build_model("TextCNN", cfg.params, data.vocab_size, data.num_classes, data.pad_id, 32)
    return bundle.save(tmp_path_factory.mktemp("shelf") / "m", cfg, spec, data, net.state_dict())


def test_exactly_the_top_k_as_the_ranking_changes(model_dir: Path, tmp_path: Path) -> None:
    shelf = ModelShelf(tmp_path, keep=2, goal="maximize")
    rows: list[dict] = []

    def finish(tid: str, metric: float | None, status: str = "COMPLETED") -> list[str]:
        rows.append({"trial_id": tid, "trial_number": len(rows), "status": status,
                     "metric": metric})  # fmt: skip
        shelf.offer(tid, model_dir, rows)
        return shelf.kept()

    assert finish("a", 0.5) == ["a"]
    assert finish("b", 0.7) == ["a", "b"]
    assert finish("c", 0.6) == ["b", "c"]  # a fell out
    assert finish("d", 0.4) == ["b", "c"]  # not good enough to keep
    assert finish("p", 0.99, status="PRUNED") == ["b", "c"]  # only completed trials rank
    assert finish("e", 0.9) == ["b", "e"]
    assert finish("f", 0.7) == ["b", "e"]  # a tie (with b) goes to the earlier trial
    assert not [p for p in (tmp_path / rs.MODELS_DIR).iterdir() if p.name.startswith(".")]
    assert bundle.load(tmp_path / rs.MODELS_DIR / "e").classes == ("yin", "yang")

    low = ModelShelf(tmp_path / "min", keep=1, goal="minimize")  # a loss: lower is better
    done: list[dict] = []
    for tid, loss in [("x", 0.3), ("y", 0.1), ("z", 0.2)]:
        done.append({"trial_id": tid, "status": "COMPLETED", "metric": loss})
        low.offer(tid, model_dir, done)
    assert low.kept() == ["y"]


def test_a_crash_leftover_is_cleared_and_keep_zero_keeps_nothing(model_dir, tmp_path) -> None:
    (tmp_path / rs.MODELS_DIR / ".x.new-1234").mkdir(parents=True)
    shelf = ModelShelf(tmp_path, keep=0, goal="maximize")
    assert not list((tmp_path / rs.MODELS_DIR).iterdir())
    rows = [{"trial_id": "a", "status": "COMPLETED", "metric": 1.0}]
    assert shelf.offer("a", model_dir, rows) is False and shelf.kept() == []


def test_the_top_trials_with_no_kept_model_are_named(model_dir: Path, tmp_path: Path) -> None:
    # what a fault's stop line says was not kept: top keep_best completed trials whose
    # weights never reached the shelf
    rows = [{"trial_id": t, "trial_number": i, "status": "COMPLETED", "metric": m}
            for i, (t, m) in enumerate([("a", 0.9), ("b", 0.8), ("c", 0.7)])]  # fmt: skip
    ModelShelf(tmp_path, keep=2, goal="maximize").offer("b", model_dir, rows)
    assert unkept(tmp_path, rows, 2, "maximize") == ["a"]
    assert unkept(tmp_path, rows, 0, "maximize") == []


@pytest.mark.ray
@pytest.mark.slow
def test_a_sweep_keeps_its_top_trials_models(
    ray_session: object, tiny_corpus: Path, tmp_path: Path
) -> None:
    overrides = ["data.name=thucnews", f"data.path={tiny_corpus}", "train.max_epochs=3",
                 "train.max_steps=24", "budget.num_samples=5", "keep_best=2"]  # fmt: skip
    out = sweep.run(load_spec(SMOKE, overrides), results_root=tmp_path, console=False)
    trials = pd.read_parquet(out.folder / rs.TRIALS_FILE)
    top = rs.ranking(trials.to_dict("records"), "maximize")[:2]
    assert len(top) == 2 and bundle.kept_models(out.folder) == sorted(top)
    for tid in top:  # each is the trial's own tested model, and it labels text
        kept = bundle.load(out.folder / rs.MODELS_DIR / tid)
        row = trials.set_index("trial_id").loc[tid]
        assert kept.info["origin"]["trial_id"] == tid
        assert kept.info["scores"]["test_acc"] == row["test_acc"]
        assert kept.config == rs.trial_config_for(out.folder, tid)[0]
    best = load(out.folder, device="cpu")
    assert best.bundle.path.name == top[0] and len(best.predict(["天地玄黄"])) == 1
    # no trial leaves checkpoints behind in Tune's storage once it has ended
    assert not list((out.folder / rs.RAY_DIR).glob("*/checkpoint_*"))
    assert len(study(out.folder, "smoke").trials) == 5

    # --resume with a smaller keep_best (nothing left to run) shrinks the shelf
    again = sweep.run(load_spec(SMOKE, [*overrides, "keep_best=1"]), results_root=tmp_path,
                      resume=True, console=False)  # fmt: skip
    assert bundle.kept_models(again.folder) == [top[0]]
