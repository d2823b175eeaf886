"""`harness.predict`: label text with a saved model (a run folder, a sweep's best kept trial
or a named one), from Python and from the command line; bad input is one line, exit 2."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers import user_error

from harness import bundle, parts
from harness import results as rs
from harness.errors import UserError
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
        meta = folder / rs.MODELS_DIR / tid / bundle.META  # as a sweep's trial saves it
        info = json.loads(meta.read_text(encoding="utf-8"))
        info["origin"] = {"sweep": "sweep", "trial_id": tid}
        meta.write_text(json.dumps(info), encoding="utf-8")
    return folder


def _texts(corpus: Path, split: str = "test") -> tuple[list[str], list[int]]:
    lines = [ln.strip() for ln in (corpus / f"{split}.txt").read_text(encoding="utf-8").split("\n")]
    pairs = [ln.rpartition("\t") for ln in lines if ln]
    return [p[0] for p in pairs], [int(p[2]) for p in pairs]


def test_predict_gives_the_tests_predictions(run_dir: Path, tiny_corpus: Path) -> None:
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
    return user_error(capsys, main, *argv)


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


def test_text_is_stripped_as_a_file_line_is_and_empty_text_is_refused(
    run_dir: Path, tmp_path: Path, capsys
) -> None:
    p = load(run_dir, device="cpu")
    padded, plain = p.predict([" 天地玄黄 ", "天地玄黄"]).drop(columns="text").to_numpy()
    assert list(padded) == list(plain)
    assert main([str(run_dir), "--text", " 天地玄黄 ", "--device", "cpu"]) == 0
    texts = tmp_path / "t.txt"
    texts.write_text(" 天地玄黄 \n", encoding="utf-8")
    assert main([str(run_dir), "--file", str(texts), "--device", "cpu"]) == 0
    by_text, by_file = capsys.readouterr().out.splitlines()[1::2]
    assert by_text == by_file and by_text.endswith("  天地玄黄")
    assert "--text: empty text" in _error(capsys, str(run_dir), "--text", "")
    assert "--text 2: empty text" in _error(capsys, str(run_dir), "--text", "x", "--text", "  ")
    with pytest.raises(UserError, match="text 2: empty text"):
        p.predict(["天地", ""])


def test_the_model_line_names_a_kept_trial_with_its_optuna_number(sweep_dir: Path, capsys) -> None:
    assert main([str(sweep_dir), "--text", "天地", "--device", "cpu"]) == 0
    assert "(trial bbb (#1), " in capsys.readouterr().err


def test_out_must_be_a_file_that_can_be_written_and_is_never_a_device_replaced(
    run_dir: Path, tmp_path: Path, capsys
) -> None:
    """One line for an unusable --out, before the model runs; a fifo or a device is refused
    (never replaced by the rename); a symbolic link stays one and its file gets the rows."""
    args = [str(run_dir), "--text", "天地", "--device", "cpu", "--out"]
    assert "--out /proc/x.parquet: cannot write in /proc" in _error(capsys, *args, "/proc/x.parquet")
    assert "--out /dev/full: a device, not a regular file" in _error(capsys, *args, "/dev/full")
    assert Path("/dev/full").is_char_device()
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    assert f"--out {fifo}: a fifo, not a regular file" in _error(capsys, *args, str(fifo))
    assert "is a folder" not in _error(capsys, *args, str(tmp_path))  # a folder: its own words
    (tmp_path / "file").write_text("x")
    assert "not a folder" in _error(capsys, *args, str(tmp_path / "file" / "p.parquet"))
    target, link = tmp_path / "real.parquet", tmp_path / "link.parquet"
    target.write_bytes(b"old")
    link.symlink_to(target)
    assert main([*args, str(link)]) == 0
    assert link.is_symlink() and len(pd.read_parquet(target)) == 1


def test_a_damaged_sweep_folder_is_one_line(sweep_dir: Path, tmp_path: Path, capsys) -> None:
    bad = tmp_path / "bad"
    shutil.copytree(sweep_dir, bad)
    trials, part = bad / rs.TRIALS_FILE, Path(rs.TRIALS_FILE, parts.PART.format(0))
    (bad / part).write_bytes((bad / part).read_bytes()[:200])  # truncated
    assert f"{trials}: not a readable Parquet file" in _error(capsys, str(bad), "--text", "x")
    shutil.copy(sweep_dir / part, bad / part)
    info = bad / rs.SWEEP_FILE
    info.write_text("[]", encoding="utf-8")
    assert f"{info}: expected a JSON object" in _error(capsys, str(bad), "--text", "x")
    info.write_text(json.dumps({"spec": {"name": "s", "metric": 5}}), encoding="utf-8")
    assert f"{info}: spec.metric: expected" in _error(capsys, str(bad), "--text", "x")


def test_a_model_json_claiming_huge_sizes_is_one_line(run_dir: Path, tmp_path: Path, capsys) -> None:
    bad = tmp_path / "bad"
    shutil.copytree(run_dir, bad)
    meta = json.loads((bad / bundle.META).read_text(encoding="utf-8"))
    meta["config"]["embed"] = 10**9
    (bad / bundle.META).write_text(json.dumps(meta), encoding="utf-8")
    assert "tensor 'embedding.weight' is" in _error(capsys, str(bad), "--text", "x")
