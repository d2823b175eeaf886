"""`harness.predict`: label text with a saved model (a run folder, a sweep's best kept trial
or a named one), from Python and from the command line; bad input is one line, exit 2."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from harness import bundle
from harness import results as rs
from harness.predict import load, main
from harness.train import main as train_main

REPO = Path(__file__).resolve().parents[1]
TINY = ["--set", "embed=16", "--set", "num_filters=8", "--set", "max_steps=12", "--set",
        "eval_every=4", "--set", "batch_size=32", "--set", "data.pad_size=16", "--device", "cpu",
        "--quiet"]  # fmt: skip


@pytest.fixture(scope="module")
def run_dir(tiny_corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("predict") / "run"
    assert train_main(["--data", f"thucnews:{tiny_corpus}", *TINY, "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def sweep_dir(run_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A results folder as a sweep leaves it: three completed trials, two of them kept."""
    folder = tmp_path_factory.mktemp("predict") / "sweep"
    writer = rs.ResultsWriter(folder)
    for number, (tid, metric) in enumerate([("aaa", 0.9), ("bbb", 0.95), ("ccc", 0.99)]):
        writer.set_trial(tid, trial_number=number, status="COMPLETED", metric=metric)
    writer.write_sweep_info({"spec": {"name": "sweep", "metric": {"name": "best_dev_acc",
                                                                  "goal": "maximize"}}})  # fmt: skip
    writer.flush(force=True)
    for tid in ("aaa", "bbb"):  # ccc ranked first but fell out of models/ (not kept)
        shutil.copytree(run_dir, folder / rs.MODELS_DIR / tid)
    return folder


def _texts(corpus: Path, split: str = "test") -> tuple[list[str], list[int]]:
    lines = [ln.strip() for ln in (corpus / f"{split}.txt").read_text(encoding="utf-8").split("\n")]
    pairs = [ln.rpartition("\t") for ln in lines if ln]
    return [p[0] for p in pairs], [int(p[2]) for p in pairs]


def test_predict_gives_the_tests_predictions(run_dir: Path, tiny_corpus: Path) -> None:
    import json

    summary = json.loads((run_dir / "summary.json").read_text(encoding="utf-8"))
    texts, labels = _texts(tiny_corpus)
    p = load(run_dir, device="cpu")
    rows = p.predict(texts)
    assert list(rows.columns) == ["text", "label", "p_yin", "p_yang"] and len(rows) == len(texts)
    assert rows["text"].tolist() == texts
    probs = rows[["p_yin", "p_yang"]].to_numpy()
    assert np.allclose(probs.sum(1), 1, atol=1e-6)
    assert (rows["label"] == np.where(probs.argmax(1) == 0, "yin", "yang")).all()
    # the labels are the test's own predictions: its confusion matrix, entry for entry
    predicted = [p.classes.index(c) for c in rows["label"]]
    confusion = [[sum(1 for t, q in zip(labels, predicted) if (t, q) == (i, j)) for j in range(2)]
                 for i in range(2)]  # fmt: skip
    assert confusion == summary["confusion"]
    assert p.predict([]).empty and list(p.predict([]).columns) == p.columns


def test_a_sweep_folder_means_its_best_kept_trial(sweep_dir: Path) -> None:
    assert bundle.locate(sweep_dir) == sweep_dir / "models" / "bbb"
    assert bundle.locate(sweep_dir, "#0") == sweep_dir / "models" / "aaa"  # an Optuna number
    assert bundle.locate(sweep_dir, "aaa") == sweep_dir / "models" / "aaa"
    assert load(sweep_dir / "models" / "aaa", device="cpu").predict(["天地"]).shape == (1, 4)


@pytest.mark.subprocess
def test_command_prints_a_table_and_writes_parquet(run_dir: Path, tmp_path: Path) -> None:
    texts = tmp_path / "texts.txt"
    texts.write_text("天地玄黄宇宙\n\n  辰宿列张寒来  \n", encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = tmp_path / "preds.parquet"
    proc = subprocess.run(
        [sys.executable, "-m", "harness.predict", str(run_dir), "--file", str(texts), "--text",
         "日月盈昃", "--out", str(out), "--device", "cpu"],
        env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    rows = pd.read_parquet(out)
    assert rows["text"].tolist() == ["日月盈昃", "天地玄黄宇宙", "辰宿列张寒来"]
    assert set(rows["label"]) <= {"yin", "yang"} and "3 rows ->" in proc.stderr


def test_command_table(run_dir: Path, capsys) -> None:
    assert main([str(run_dir), "--text", "天地玄黄", "--text", "寒来暑往", "--device", "cpu"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["label", "p_yin", "p_yang", "text"] and len(lines) == 3
    assert lines[1].endswith("天地玄黄") and lines[1].split()[0] in ("yin", "yang")


def _error(capsys, *argv: str) -> str:
    with pytest.raises(SystemExit) as exit_:
        main(list(argv))
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and "Traceback" not in err, err
    return err


def test_bad_input_is_one_line_exit_2(
    run_dir: Path, sweep_dir: Path, tmp_path: Path, capsys
) -> None:
    assert "no such folder" in _error(capsys, str(tmp_path / "nope"), "--text", "x")
    assert "no trial 'zzz'" in _error(capsys, str(sweep_dir), "--trial", "zzz", "--text", "x")
    assert "ccc has no kept weights" in _error(
        capsys, str(sweep_dir), "--trial", "2", "--text", "x"
    )
    assert "not a sweep's results folder" in _error(
        capsys, str(run_dir), "--trial", "1", "--text", "x"
    )
    empty = tmp_path / "empty.txt"
    empty.write_text("\n  \n", encoding="utf-8")
    assert "no text in it" in _error(capsys, str(run_dir), "--file", str(empty))
    latin = tmp_path / "latin1.txt"
    latin.write_bytes("ok\ncaf\xe9\n".encode("latin-1"))
    assert "latin1.txt:2: not valid UTF-8" in _error(capsys, str(run_dir), "--file", str(latin))
    assert "no such file" in _error(capsys, str(run_dir), "--file", str(tmp_path / "none.txt"))
    assert "nothing to label" in _error(capsys, str(run_dir))
    (tmp_path / "nomodels").mkdir()
    assert "no saved model here" in _error(capsys, str(tmp_path / "nomodels"), "--text", "x")
