"""harness.tracker: TensorBoard event files (read back with TensorBoard's own reader) and the
MLflow hook's checks. The sweep writes them end to end in tests/test_sweep.py."""

from __future__ import annotations

import logging
import math
import pickle
from pathlib import Path

import pytest
from helpers import scalars_of

from harness import schema, tracker
from harness.config import load_spec
from harness.errors import UserError

ROOT = Path(__file__).resolve().parents[1]


def report(iteration: int, dev_loss: float) -> dict:
    r = {k: 0.5 for k in schema.METRIC_KEYS}
    r.update(iteration=iteration, dev_loss=dev_loss, train_loss=float("nan"), improved=True)
    r[schema.LAYERS] = {"layer": ["emb.weight", "fc.weight"], "grad_norm": [0.1, 0.2],
                        "vanish_frac": [0.9, 0.0], "grad_max_abs": [1.0, 1.0],
                        "weight_norm": [1.0, 1.0], "update_ratio": [0.0, 0.0],
                        "embedding": [True, False]}  # fmt: skip
    return r


def test_scalars_take_the_finite_numbers_with_the_classic_tags() -> None:
    s = tracker.scalars(report(10, 0.7))
    assert s["loss/dev"] == 0.7 and s["acc/dev"] == 0.5 and s["lr"] == 0.5
    assert "loss/train" not in s  # NaN: no point to draw
    assert s["layer_grad_norm/fc.weight"] == 0.2 and s["layer_vanish_frac/emb.weight"] == 0.9
    assert not any(math.isnan(v) for v in s.values())


def test_event_files_hold_each_trials_scalars_apart(tmp_path: Path) -> None:
    tb = tracker.TensorBoard(tmp_path)
    tb.start("aaa", {"param/lr": "0.1"})
    tb.start("bbb")
    for it, loss in ((5, 0.9), (10, 0.7)):
        tb.log(report(it, loss), "aaa")
    tb.log(report(5, 2.0), "bbb")
    tb.close_all()
    assert scalars_of(tmp_path / "aaa")["loss/dev"] == pytest.approx({5: 0.9, 10: 0.7})
    assert scalars_of(tmp_path / "bbb")["loss/dev"] == pytest.approx({5: 2.0})


def test_a_trial_run_again_from_the_start_replaces_its_curves(tmp_path: Path) -> None:
    tb = tracker.TensorBoard(tmp_path)
    tb.log(report(5, 0.9), "aaa")
    tb.log(report(10, 0.8), "aaa")
    tb.start("aaa")  # e.g. a retried or resumed trial: its old events go, as its rows do
    tb.log(report(5, 0.6), "aaa")
    tb.close_all()
    assert scalars_of(tmp_path / "aaa")["loss/dev"] == pytest.approx({5: 0.6})


def test_a_resume_keeps_the_curves_of_the_trials_the_tables_keep(tmp_path: Path) -> None:
    tb = tracker.TensorBoard(tmp_path)
    for key in ("aaa", "bbb", "ccc"):
        tb.log(report(5, 0.9), key)
    tb.close_all()
    tracker.Trackers(tb).keep(["aaa", "ccc", "ddd"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["aaa", "ccc"]
    tracker.Trackers(tracker.TensorBoard(tmp_path / "none")).keep([])  # no tb/ yet: nothing


def test_pickled_before_a_run_and_never_sharing_writers(tmp_path: Path) -> None:
    """Tune pickles its callbacks (tuner.pkl): the trackers pickle, open writers left behind."""
    tb = tracker.TensorBoard(tmp_path)
    tb.log(report(5, 0.9), "aaa")
    copy = pickle.loads(pickle.dumps(tracker.Trackers(tb)))
    assert copy.tensorboard.writers == {} and tb.writers
    tb.close_all()


def test_a_failing_tracker_switches_off_with_a_warning(tmp_path: Path, caplog) -> None:
    blocked = tmp_path / "file"
    blocked.write_text("not a folder")
    tb = tracker.TensorBoard(blocked)
    with caplog.at_level(logging.WARNING, logger="harness.tracker"):
        tb.log(report(5, 0.9), "aaa")  # cannot make blocked/aaa: no exception
        tb.log(report(10, 0.9), "aaa")
    assert tb.broken and len(caplog.records) == 1 and "switched off" in caplog.text


@pytest.mark.skipif(tracker.have_mlflow(), reason="checks the error without mlflow installed")
def test_mlflow_without_the_package_is_a_clear_error() -> None:
    with pytest.raises(UserError) as exc:
        load_spec(ROOT / "search_spaces" / "smoke.yaml", ["mlflow={tracking_uri: file:///tmp/ml}"])
    assert str(exc.value) == (
        f"{ROOT / 'search_spaces' / 'smoke.yaml'} (--set mlflow={{tracking_uri: file:///tmp/ml}}): "
        "mlflow: needs the mlflow package, which is not installed (pip install mlflow; or "
        "remove the mlflow key)"
    )


def test_mlflow_and_tensorboard_keys_are_checked() -> None:
    smoke = ROOT / "search_spaces" / "smoke.yaml"
    with pytest.raises(UserError) as exc:
        load_spec(smoke, ["tensorboard=maybe", "mlflow={uri: x}"])
    lines = str(exc.value).splitlines()
    assert any(line.endswith("tensorboard: expected true or false, got 'maybe'") for line in lines)
    assert any("mlflow.uri: unknown key" in line for line in lines)
    assert any("mlflow.tracking_uri: required" in line for line in lines)
    assert load_spec(smoke).tensorboard is True
    assert load_spec(smoke, ["tensorboard=false"]).to_dict()["tensorboard"] is False
