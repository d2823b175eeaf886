"""harness.bench zoo: all seven models, tiny, on the tiny corpus; settings routing; errors."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from harness.bench import zoo
from harness.errors import UserError
from harness.models import MODELS

TINY = [
    "--set", "embed=20", "--set", "batch_size=32", "--set", "max_steps=4", "--set", "eval_every=2",
    "--set", "eval_batch_size=64", "--set", "hidden_size=16", "--set", "num_filters=8",
    "--set", "FastText.n_gram_buckets=1000", "--set", "FastText.embed_ngram=8",
    "--set", "Transformer.ffn_hidden=32", "--threads", "1",
]  # fmt: skip


def test_zoo_trains_all_seven_models(
    tiny_corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "zoo"
    assert zoo.main(["--data", f"thucnews:{tiny_corpus}", *TINY, "--out", str(out)]) == 0
    text = capsys.readouterr().out
    for model, acc in zoo.CLASSIC_TEST_ACC.items():
        assert model in text and f"{acc:.2%}" in text
    df = pd.read_parquet(out / zoo.ZOO_FILE)
    assert df["model"].tolist() == list(MODELS)
    assert (df["status"] == "COMPLETED").all()
    assert df["classic_test_acc"].tolist() == [zoo.CLASSIC_TEST_ACC[m] for m in MODELS]
    assert df["test_acc"].between(0, 1).all() and df["test_f1_macro"].between(0, 1).all()
    assert (df["delta_pp"] - (df["test_acc"] - df["classic_test_acc"]) * 100).abs().max() < 1e-9
    assert (df["train_samples_per_s"] > 0).all() and (df["eval_samples_per_s"] > 0).all()
    assert (df["params"] > 0).all() and (df["iterations"] == 4).all() and (df["threads"] == 1).all()
    assert (df["train_size"] == 256).all() and (df["data"] == "thucnews").all()
    cfg = {m: json.loads(c) for m, c in zip(df["model"], df["config"])}
    assert cfg["FastText"]["n_gram_buckets"] == 1000 and cfg["Transformer"]["ffn_hidden"] == 32
    assert cfg["Transformer"]["learning_rate"] == 5e-4  # its classic setting stays
    assert cfg["TextRNN"]["hidden_size"] == 16 and cfg["DPCNN"]["num_filters"] == 8
    md = (out / zoo.TABLE_FILE).read_text()
    lines = [ln for ln in md.splitlines() if ln.startswith("|")]
    assert (
        len(lines) == 2 + 7 and "classic (reported)" in lines[0] and "train samples/s" in lines[0]
    )
    assert "91.22%" in md and "180k" in md
    info = json.loads((out / zoo.INFO_FILE).read_text())
    assert info["threads"] == 1 and info["data"]["train"] == 256


def test_settings_go_to_the_models_that_have_them() -> None:
    cfgs = zoo.model_settings(
        {"num_filters": "8", "TextCNN.filter_sizes": "[2]", "learning_rate": "0.01"},
        ["TextCNN", "DPCNN", "TextRNN"], epochs=2, device=None,
    )  # fmt: skip
    assert cfgs["TextCNN"].params.num_filters == 8 and cfgs["TextCNN"].params.filter_sizes == (2,)
    assert cfgs["DPCNN"].params.num_filters == 8
    assert all(c.train.learning_rate == 0.01 and c.train.max_epochs == 2 for c in cfgs.values())
    assert zoo.model_settings({}, ["Transformer"], None, None)["Transformer"].train.max_epochs == 20


@pytest.mark.parametrize(
    "sets, models, needle",
    [
        ({"num_filter": "8"}, ["TextCNN"], "did you mean 'num_filters'"),
        ({"num_filters": "8"}, ["TextRNN"], "not a setting of any selected model"),
        ({"TextCNNN.num_filters": "8"}, ["TextCNN"], "did you mean 'TextCNN'"),
        ({"embed": "16"}, ["Transformer"], "Transformer: num_heads: must divide embed=16"),
    ],
)
def test_setting_errors(sets: dict, models: list, needle: str) -> None:
    with pytest.raises(UserError, match=needle):
        zoo.model_settings(sets, models, None, None)


def test_cli_errors(capsys: pytest.CaptureFixture) -> None:
    for argv, needle in (
        (["--data", "thucnews:/x", "--models", "TextCNN,CNN"], "--models: unknown model 'CNN'"),
        (["--data", "thucnews:/nowhere/at/all", "--models", "TextCNN"], "/nowhere/at/all"),
        (["--data", "thucnews:/x", "--epochs", "0"], "--epochs: must be >= 1"),
    ):
        with pytest.raises(SystemExit) as exc:
            zoo.main(argv)
        assert exc.value.code == 2
        assert needle in capsys.readouterr().err


def test_default_threads_leave_busy_cores_alone() -> None:
    assert zoo.default_threads(2, 0.1) == 2
    assert zoo.default_threads(2, 1.2) == 1
    assert zoo.default_threads(2, 6.0) == 1
    assert zoo.default_threads(8, 2.0) == 6
