"""Flat trial settings -> typed TrialConfig: defaults, overrides, and the errors a user sees."""

import pytest

from harness.errors import UserError
from harness.models import MODELS
from harness.trialconfig import TrainConfig, resolve, setting_names


def test_classic_defaults_per_model():
    cnn = resolve("TextCNN")
    assert cnn.train.learning_rate == 1e-3 and cnn.train.max_epochs == 20
    assert cnn.params.filter_sizes == (2, 3, 4) and cnn.params.num_filters == 256
    tr = resolve("Transformer")
    assert tr.train.learning_rate == 5e-4 and tr.train.require_improvement == 2000
    assert resolve("TextRNN").train.max_epochs == 10


def test_overrides_go_to_train_or_params_and_are_coerced():
    cfg = resolve("TextCNN", {"learning_rate": "3e-4", "num_filters": 64.0, "filter_sizes": "3,4",
                              "shuffle": "false", "clip_norm": 1})
    assert cfg.train.learning_rate == 3e-4
    assert cfg.params.num_filters == 64 and cfg.params.filter_sizes == (3, 4)
    assert cfg.train.shuffle is False and cfg.train.clip_norm == 1.0


def test_round_trip_through_flat():
    cfg = resolve("FastText", {"dropout": 0.2, "batch_size": 32})
    assert resolve("FastText", cfg.to_flat()) == cfg


def test_all_problems_reported_at_once_with_hints():
    with pytest.raises(UserError) as err:
        resolve("TextCNN", {"learning_rat": 1e-3, "hidden_size": 3, "batch_size": "big"})
    msg = str(err.value)
    assert "learning_rat" in msg and "did you mean 'learning_rate'" in msg
    assert "hidden_size" in msg and "TextRNN" in msg  # belongs to other models
    assert "batch_size: expected an integer, got 'big'" in msg


def test_invalid_values_rejected():
    with pytest.raises(UserError, match="optimizer"):
        TrainConfig(optimizer="lbfgs")
    with pytest.raises(UserError, match="learning_rate: must be > 0"):
        resolve("TextCNN", {"learning_rate": 0})
    with pytest.raises(UserError, match="unknown model"):
        resolve("BERT")


def test_setting_names_cover_every_model():
    for name in MODELS:
        names = setting_names(name)
        assert {"learning_rate", "dropout", "embed", "batch_size"} <= names


def test_problems_carry_the_setting_rule_and_value():
    """Callers (a sweep file's train block, parameters) re-root these paths; no text parsing."""
    with pytest.raises(UserError) as err:
        resolve("Transformer", {"batch_size": "big", "max_epochs": 0})
    assert [(p.path, p.rule, p.value) for p in err.value.problems] == [
        ("batch_size", "expected an integer", "big")
    ]
    with pytest.raises(UserError) as err:
        resolve("Transformer", {"max_epochs": 0, "embed": 128})  # TrainConfig's and the model's
    assert [(p.path, p.rule) for p in err.value.problems] == [("max_epochs", "must be >= 1")]
    with pytest.raises(UserError) as err:
        resolve("Transformer", {"embed": 128})
    assert [(p.path, p.rule, p.value) for p in err.value.problems] == [
        ("num_heads", "must divide embed=128", 5)
    ]
