"""`python -m harness.bench scale --trials 100,1000,5000`: how the driver's cost grows with
the number of trials.

Each size is one real sweep (`harness.sweep.run`, a private local Ray, the console on) of very
short trials: the smoke sweep's tiny TextCNN on a small synthetic two-class corpus, a handful
of batches each, `method: auto` over four parameters (TPE, as ASHA prunes), 2 trials at a
time. Each size runs in a process of its own, so its peak memory is its own. Measured in that (driver) process:

- `wall_s`: the sweep's Tune fit, and `trials_per_hour` over it;
- `driver_cpu_s_per_trial`: the driver process's CPU seconds (every thread: Tune's loop, the
  tables, Optuna, the console) from the first trial's start to the last trial's end, per trial;
- `table_write_s`: seconds spent writing the Parquet tables, and `tables_max_stale_s`, the
  longest a change to them waited before it was on disk;
- `ask_tell_ms_per_trial`: milliseconds in Optuna's `Study.ask`, the parameters'
  suggestions (`Trial.suggest_*`, where TPE does most of its work) and `Study.tell` per
  trial (the sampler's work, with the study's storage);
- `driver_peak_mb`: the driver process's peak resident memory;
- `report_s`: `python -m harness.report` on the finished folder (figures included);
- `table_reads`, `table_read_failures`: `harness.results.load` of the running sweep's tables
  every 5 s from the parent process (another reader, as a notebook would be), and how many
  of those reads failed.

The last line printed is one JSON object with these figures per size.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from harness.errors import UserError
from harness.files import write_text
from harness.schema import STATUSES

SMOKE = Path(__file__).resolve().parents[2] / "search_spaces" / "smoke.yaml"
_CHARS = ("天地玄黄宇宙洪荒日月盈昃", "辰宿列张寒来暑往秋收冬藏")


def write_corpus(root: Path, sizes: tuple[int, int, int] = (128, 32, 32)) -> Path:
    """A small thucnews-layout corpus with two learnable classes (seeded)."""
    rng = random.Random(0)
    root.mkdir(parents=True, exist_ok=True)
    (root / "class.txt").write_text("yin\nyang\n", encoding="utf-8")
    for split, n in zip(("train", "dev", "test"), sizes):
        lines = []
        for i in range(n):
            own, other = _CHARS[i % 2], _CHARS[1 - i % 2]
            text = "".join(rng.choice(own if rng.random() < 0.8 else other) for _ in range(12))
            lines.append(f"{text}\t{i % 2}")
        (root / f"{split}.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root


def overrides(corpus: Path, trials: int, concurrency: int, steps: int) -> list[str]:
    return [
        "name=scale",
        "method=auto",  # what a user gets (TPE here: ASHA prunes)
        "data.name=thucnews",
        f"data.path={corpus}",
        "data.pad_size=16",
        f"train.max_steps={steps}",
        f"train.eval_every={max(1, steps // 2)}",
        "train.batch_size=16",
        f"budget.num_samples={trials}",
        f"budget.max_concurrent={concurrency}",
    ]


class _CpuClock(threading.Thread):
    """Samples this process's CPU seconds (all threads) twice a second, with wall time."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.samples: list[tuple[float, float]] = []
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            self.samples.append((time.time(), time.process_time()))
            self.done.wait(0.5)

    def between(self, t0: float, t1: float) -> float:
        def at(t: float) -> float:
            before = [c for w, c in self.samples if w <= t]
            return before[-1] if before else self.samples[0][1]

        return at(t1) - at(t0)


class _Reader(threading.Thread):
    """Reads a running sweep's tables every `every` seconds, as another process would (a
    notebook, the report): each read must succeed, whatever the writer is doing."""

    def __init__(self, folder: Path, every: float = 5.0) -> None:
        super().__init__(daemon=True)
        self.folder, self.every = folder, every
        self.reads = 0
        self.failures: list[str] = []
        self.done = threading.Event()

    def run(self) -> None:
        from harness import results

        while not self.done.wait(self.every):
            if not (self.folder / results.SWEEP_FILE).exists():
                continue
            try:
                results.load(self.folder)
                self.reads += 1
            except Exception as exc:  # noqa: BLE001 -- any failure to read is the finding
                self.failures.append(f"{type(exc).__name__}: {exc}"[:300])


def _timed_optuna() -> dict[str, float]:
    """Study.ask, Trial._suggest (every suggest_* goes through it) and Study.tell, timed (this
    process only: the benchmark's own wrapper)."""
    import optuna

    spent = {"ask_tell_s": 0.0, "depth": 0}  # depth: an ask that suggests counts once
    for owner, name in ((optuna.study.Study, "ask"), (optuna.trial.Trial, "_suggest"),
                        (optuna.study.Study, "tell")):  # fmt: skip
        original = getattr(owner, name)

        def timed(self: Any, *a: Any, _f: Any = original, **k: Any) -> Any:
            t0 = time.perf_counter()
            spent["depth"] += 1
            try:
                return _f(self, *a, **k)
            finally:
                spent["depth"] -= 1
                if not spent["depth"]:
                    spent["ask_tell_s"] += time.perf_counter() - t0

        setattr(owner, name, timed)
    return spent


def run_one(trials: int, concurrency: int, steps: int, work: Path) -> dict[str, Any]:
    """One sweep of `trials` trials in this process; its figures."""
    import pandas as pd

    from harness import sweep

    spent = _timed_optuna()
    corpus = write_corpus(work / "corpus")
    clock = _CpuClock()
    clock.start()
    t0 = time.time()
    out = sweep.run(str(SMOKE), overrides=overrides(corpus, trials, concurrency, steps),
                    results_root=work / "results")  # fmt: skip
    clock.done.set()
    clock.join()
    info = json.loads((out.folder / "sweep.json").read_text())
    through = info.get("throughput") or {}
    t = pd.read_parquet(out.folder / "trials.parquet")
    first = t["start_time"].min().timestamp()
    last = t["end_time"].max().timestamp()
    r0 = time.time()
    report = subprocess.run([sys.executable, "-m", "harness.report", str(out.folder), "--out",
                             str(work / "report")], capture_output=True, text=True, check=False)  # fmt: skip
    report_s = time.time() - r0
    if report.returncode != 0:
        raise UserError(f"harness.report failed on {out.folder}:\n{report.stderr[-2000:]}")
    return {
        "trials": trials,
        "finished": int(t["status"].isin(STATUSES).sum()),
        "wall_s": round(through.get("fit_s") or (time.time() - t0), 2),
        "trials_per_hour": round(through.get("trials_per_hour") or 0.0),
        "driver_cpu_s_per_trial": round(clock.between(first, last) / trials, 4),
        "table_write_s": round(through.get("table_write_s", float("nan")), 2),
        "tables_max_stale_s": round(through.get("tables_max_stale_s", float("nan")), 2),
        "ask_tell_ms_per_trial": round(1000 * spent["ask_tell_s"] / trials, 2),
        "driver_peak_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "report_s": round(report_s, 1),
    }


def _sizes(text: str) -> list[int]:
    try:
        sizes = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise UserError(f"--trials: expected a comma list of whole numbers, got {text!r}") from None
    if not sizes or min(sizes) < 1:
        raise UserError(f"--trials: sizes must be >= 1, got {text!r}")
    return sizes


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m harness.bench scale", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--trials", default="100,1000,5000", help="sweep sizes (default 100,1000,5000)")
    p.add_argument("--concurrency", type=int, default=2, help="trials at a time (default 2)")
    p.add_argument("--steps", type=int, default=4, help="batches per trial (default 4)")
    p.add_argument("--json", help="also write the figures to this JSON file")
    p.add_argument("--one", type=int, help=argparse.SUPPRESS)  # a child: one size, here
    p.add_argument("--out", help=argparse.SUPPRESS)
    args = p.parse_args(list(argv) if argv is not None else None)
    if args.concurrency < 1 or args.steps < 1:
        raise UserError("--concurrency and --steps must be >= 1")
    if args.one is not None:  # its work beside --out: the parent reads the tables meanwhile
        figures = run_one(args.one, args.concurrency, args.steps, Path(args.out).parent / "work")
        write_text(args.out, json.dumps(figures) + "\n")
        return 0

    sizes = _sizes(args.trials)
    print(f"scale: sweeps of {', '.join(map(str, sizes))} trials of {args.steps} batches, "
          f"{args.concurrency} at a time; {os.cpu_count()} cpus here, load average "
          f"{os.getloadavg()[0]:.1f}", flush=True)  # fmt: skip
    rows = []
    for n in sizes:
        with tempfile.TemporaryDirectory(prefix="harness-scale-") as tmp:
            out = Path(tmp) / "figures.json"
            cmd = [sys.executable, "-m", "harness.bench", "scale", "--one", str(n), "--out",
                   str(out), "--concurrency", str(args.concurrency), "--steps", str(args.steps)]  # fmt: skip
            reader = _Reader(Path(tmp) / "work" / "results" / "scale")
            reader.start()
            done = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                  text=True, check=False)  # fmt: skip
            reader.done.set()
            reader.join()
            if done.returncode != 0:
                raise UserError(f"the {n}-trial sweep failed:\n{done.stderr[-2000:]}")
            row = {**json.loads(out.read_text()), "table_reads": reader.reads,
                   "table_read_failures": len(reader.failures)}  # fmt: skip
            if reader.failures:
                print(f"  unreadable tables: {reader.failures[0]}", flush=True)
        rows.append(row)
        print(f"{n:>6} trials: {row['wall_s']:.0f} s ({row['trials_per_hour']} trials/hour), "
              f"driver {row['driver_cpu_s_per_trial'] * 1000:.0f} ms cpu/trial, tables "
              f"{row['table_write_s']:.1f} s (stale <= {row['tables_max_stale_s']:.1f} s), "
              f"ask+tell {row['ask_tell_ms_per_trial']:.1f} ms/trial, peak "
              f"{row['driver_peak_mb']} MB, report {row['report_s']:.0f} s, tables read "
              f"{row['table_reads']} times ({row['table_read_failures']} failed)",
              flush=True)  # fmt: skip
    base = rows[0]["driver_cpu_s_per_trial"]
    figures = {
        "sizes": rows,
        "cpu_per_trial_vs_first": [round(r["driver_cpu_s_per_trial"] / base, 2) for r in rows]
        if base
        else None,
        "load_average_after": round(os.getloadavg()[0], 1),
    }
    if args.json:
        write_text(args.json, json.dumps(figures, indent=2) + "\n")
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
