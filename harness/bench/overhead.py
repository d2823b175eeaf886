"""`python -m harness.bench overhead`: what running trials as a Ray Tune sweep costs.

The same N trials (one config, seeds 0..N-1; a grid over the seed, so the sweep runs
exactly these) run twice: once in this process, one after another, each with the
threads a sweep trial gets; then as a real `python -m harness.sweep` command with C at a
time. The ideal sweep takes the in-process time divided by C; the figures are the
sweep's wall time against that ideal, and the time from the command's start to the
first trial running (the trial's own clock at its first line).

`--fuse 1,4,8` runs the sweep once per group size (resources.fuse: that many trials per
Ray trial, trained as one fused group; C groups at a time) and adds each one's trials per
hour (command start to last trial ended) and its ratio to the fuse-1 sweep's.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from harness.config import SweepSpec, load_spec
from harness.errors import UserError
from harness.files import write_text
from harness.schema import Status

DEFAULT_SPEC = Path(__file__).resolve().parents[2] / "search_spaces" / "textcnn.yaml"


def bench_overrides(
    spec_path: str | Path, trials: int, concurrency: int, steps: int, eval_every: int
) -> list[str]:
    """Spec overrides that turn a sweep file into N fixed trials differing only by seed."""
    try:
        raw = yaml.safe_load(Path(spec_path).read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise UserError(f"{spec_path}: cannot read ({exc})") from None
    train = dict(raw.get("train") or {}) if isinstance(raw, dict) else {}
    train.pop("seed", None)  # the seed is what the trials differ by
    train.update(max_steps=steps, eval_every=eval_every, require_improvement=10**6)
    seeds = ", ".join(str(i) for i in range(trials))
    return [
        f"train={json.dumps(train)}",
        "name=overhead",
        "method=grid",
        "baseline=false",
        "early_terminate={type: none}",
        f"parameters={{seed: {{values: [{seeds}]}}}}",
        f"budget={{num_samples: {trials}, max_concurrent: {concurrency}}}",
        "resources={cpu: 1, gpu: 0}",
    ]


def run_in_process(spec: SweepSpec, trials: int) -> list[float]:
    """Seconds per trial, trained here one after another (data loaded once, not timed)."""
    from harness.data import load_dataset
    from harness.trainer import train

    data = load_dataset(spec.data)
    threads = max(1, round(spec.resources.cpu))
    times = []
    for seed in range(trials):
        cfg = spec.trial_config({"seed": seed})
        t0 = time.perf_counter()
        train(cfg, data, lambda _m: None, device="cpu", threads=threads)
        times.append(time.perf_counter() - t0)
    return times


def run_sweep_command(spec_path: str, overrides: Sequence[str], results: Path) -> dict[str, Any]:
    """The sweep as a user runs it; times from just before the command starts."""
    import pandas as pd

    cmd = [sys.executable, "-m", "harness.sweep", spec_path, "--results", str(results)]
    for o in overrides:
        cmd += ["--set", o]
    t0 = time.time()
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    wall = time.time() - t0
    if proc.returncode != 0:
        raise UserError(f"the sweep failed (exit {proc.returncode}):\n{proc.stderr[-2000:]}")
    trials = pd.read_parquet(results / "overhead" / "trials.parquet")
    if set(trials["status"]) != {Status.COMPLETED}:
        raise UserError(f"not every trial completed: {trials['status'].tolist()}")
    start = trials["start_time"].map(lambda t: t.timestamp())
    end = trials["end_time"].map(lambda t: t.timestamp())
    return {
        "wall_s": wall,
        "until_last_trial_s": float(end.max() - t0),
        "first_trial_running_s": float(start.min() - t0),
        "trial_s": [float(x) for x in (end - start)],
    }


def _fuse_sizes(text: str) -> list[int]:
    try:
        sizes = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise UserError(f"--fuse: expected a comma list of whole numbers, got {text!r}") from None
    if not sizes or min(sizes) < 1:
        raise UserError(f"--fuse: group sizes must be >= 1, got {text!r}")
    return list(dict.fromkeys(sizes))


def per_hour(trials: int, seconds: float) -> float:
    return trials * 3600 / seconds if seconds > 0 else float("nan")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m harness.bench overhead", description=__doc__)
    p.add_argument("--spec", default=str(DEFAULT_SPEC), help="sweep file the trials come from")
    p.add_argument("--trials", type=int, default=8, help="N trials (default 8)")
    p.add_argument("--concurrency", type=int, default=2, help="trials at a time (default 2)")
    p.add_argument("--steps", type=int, default=80, help="batches per trial (default 80)")
    p.add_argument("--eval-every", type=int, default=20, help="batches between evaluations")
    p.add_argument("--set", dest="extra", action="append", default=[], metavar="KEY=VALUE",
                   help="further spec overrides, e.g. data.pad_size=32")  # fmt: skip
    p.add_argument("--fuse", default="1",
                   help="group sizes to run the sweep with, e.g. 1,4,8 (resources.fuse)")  # fmt: skip
    p.add_argument("--json", help="also write the figures to this JSON file")
    args = p.parse_args(list(argv) if argv is not None else None)
    if args.trials < 1 or args.concurrency < 1 or args.steps < 1:
        raise UserError("--trials, --concurrency and --steps must be >= 1")
    return args


def announce(args: argparse.Namespace, spec: SweepSpec) -> float:
    """What is about to run, and how busy the machine is: the load average before."""
    print(
        f"overhead: {args.trials} trials of {spec.model} ({args.steps} batches, eval every "
        f"{args.eval_every}) from {args.spec}; sweep runs {args.concurrency} at a time, "
        f"cpu {spec.resources.cpu:g} each, fuse {args.fuse}; {os.cpu_count()} cpus here",
        flush=True,
    )
    load_before = os.getloadavg()[0]
    if load_before > 0.5:
        print(
            f"note: the machine is busy (load average {load_before:.1f} before the run); "
            "other processes share the cores, so the sweep's ratio comes out higher than on an "
            "idle machine",
            flush=True,
        )
    return load_before


def run_sweeps(
    args: argparse.Namespace, overrides: list[str], fuses: list[int], ideal: float
) -> list[dict[str, Any]]:
    """One real sweep command per group size, with its trials per hour and its ratio."""
    sweeps = []
    for fuse in fuses:
        with tempfile.TemporaryDirectory(prefix="harness-overhead-") as tmp:
            sw = run_sweep_command(args.spec, [*overrides, f"resources.fuse={fuse}"], Path(tmp))
        sw["fuse"] = fuse
        sw["trials_per_hour"] = per_hour(args.trials, sw["until_last_trial_s"])
        running = sw["until_last_trial_s"] - sw["first_trial_running_s"]  # start-up left out
        sw["trials_per_hour_running"] = per_hour(args.trials, running)
        sw["ratio_until_last_trial"] = sw["until_last_trial_s"] / ideal
        sweeps.append(sw)
        if len(fuses) > 1:
            print(
                f"sweep, fuse {fuse}: command start -> last trial ended "
                f"{sw['until_last_trial_s']:.1f} s = {sw['ratio_until_last_trial']:.2f}x ideal, "
                f"{sw['trials_per_hour']:.0f} trials/hour (command wall {sw['wall_s']:.1f} s)",
                flush=True,
            )
    return sweeps


def print_first_sweep(figures: dict[str, Any], sw: dict[str, Any]) -> None:
    """The first sweep against the ideal: the headline figures."""
    print(f"ideal sweep (in-process / {figures['concurrency']}): {figures['ideal_s']:.1f} s")
    print(
        f"sweep, command start -> last trial ended: {sw['until_last_trial_s']:.1f} s = "
        f"{figures['ratio_until_last_trial']:.2f}x ideal"
    )
    print(
        f"sweep command wall (with Ray start-up and shutdown): {sw['wall_s']:.1f} s = "
        f"{figures['ratio_command_wall']:.2f}x ideal"
    )
    print(f"command start -> first trial running: {sw['first_trial_running_s']:.1f} s")
    print(
        "trial time inside the sweep: "
        + ", ".join(f"{t:.1f}" for t in sorted(sw["trial_s"]))
        + " s (vs in-process above: the rest of the gap is trials slowing each other)"
    )


def print_fuse_table(figures: dict[str, Any], sweeps: list[dict[str, Any]]) -> None:
    """Trials per hour by group size, against the fuse-1 sweep (or the first one)."""
    base = next((x for x in sweeps if x["fuse"] == 1), sweeps[0])
    print(f"\nsweeps by group size (first: fuse {sweeps[0]['fuse']} above):")
    print("  sweep s: command start -> last trial ended; trials/hour over that, and over "
          "first trial running -> last ended (start-up left out)")  # fmt: skip
    print(f"{'fuse':>4}  {'sweep s':>8}  {'trials/hour':>11}  {'x ideal':>7}  "
          f"{'vs fuse ' + str(base['fuse']):>10}  {'running':>9}  vs")  # fmt: skip
    print(f"{'-':>4}  {figures['in_process_s']:>8.1f}  "
          f"{figures['in_process_trials_per_hour']:>11.0f}  "
          f"{'':>7}  {'':>10}  {'':>9}      (in-process, one at a time)")  # fmt: skip
    for x in sweeps:
        rel = x["trials_per_hour"] / base["trials_per_hour"]
        rel_run = x["trials_per_hour_running"] / base["trials_per_hour_running"]
        print(f"{x['fuse']:>4}  {x['until_last_trial_s']:>8.1f}  {x['trials_per_hour']:>11.0f}  "
              f"{x['ratio_until_last_trial']:>7.2f}  {rel:>9.2f}x  "
              f"{x['trials_per_hour_running']:>9.0f}  {rel_run:.2f}x")  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    # 1. the trials: N seeds of one config, as spec overrides
    args = parse_args(argv)
    fuses = _fuse_sizes(args.fuse)
    overrides = [
        *bench_overrides(args.spec, args.trials, args.concurrency, args.steps, args.eval_every),
        *args.extra,
    ]
    spec = load_spec(args.spec, overrides)
    load_before = announce(args, spec)

    # 2. in this process, one after another: the ideal sweep is that time / concurrency
    seq = run_in_process(spec, args.trials)
    total = sum(seq)
    ideal = total / args.concurrency
    print(
        f"in-process, one after another: {total:.1f} s "
        f"({', '.join(f'{t:.1f}' for t in seq)} s per trial)",
        flush=True,
    )

    # 3. the same trials as real sweep commands, one per group size
    sweeps = run_sweeps(args, overrides, fuses, ideal)
    sw = sweeps[0]
    figures = {
        "load_average_before": load_before,
        "load_average_after": os.getloadavg()[0],
        "trials": args.trials,
        "concurrency": args.concurrency,
        "steps": args.steps,
        "in_process_s": total,
        "in_process_trial_s": seq,
        "ideal_s": ideal,
        **{f"sweep_{k}": v for k, v in sw.items()},
        "ratio_until_last_trial": sw["until_last_trial_s"] / ideal,
        "ratio_command_wall": sw["wall_s"] / ideal,
        "in_process_trials_per_hour": per_hour(args.trials, total),
        "sweeps": sweeps,
    }

    # 4. the figures
    print_first_sweep(figures, sw)
    if len(fuses) > 1:
        print_fuse_table(figures, sweeps)
    print(f"load average before {load_before:.1f}, after {figures['load_average_after']:.1f}")
    if args.json:
        write_text(args.json, json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
