"""`python -m harness.bench record SPEC --trials N --out DIR`: record a table of learning curves.

A table (harness.bench.blackbox) is what `bench searchers --replay` replays searchers
against. This recorder draws N configurations of the spec's searched parameters uniformly at
random (seeded by --seed; the classic baseline first when the spec has `baseline: true`),
and trains each to its own end, without early termination, in this process:
configurations that share their shape settings train together as fused groups of up to
--fuse (harness.trainer.train_group, one data load for all). It writes the folder format of
a sweep (trials.parquet, metrics.parquet, sweep.json; harness.results), so a finished sweep
folder and a recorded one are both tables, and `python -m harness.report DIR` reads either.

Why not a sweep: a recording needs no search, no scheduler and no Ray; on a lent GPU it runs
with torch, numpy, pandas and pyarrow alone (no Ray, Optuna, snownlp or tensorboardX is
imported on this path; tests/test_bench_record.py checks). A group's members share its
clock, so a member's elapsed_s and train_s are its group's (the replay's clock reads them).

--resume goes on with the same list (same --seed and --trials, or more): configurations
with a recorded end are kept, the rest (a group cut short) train again. --minutes stops
starting new groups after that long (then --resume). --pack FILE also writes the table as
one compressed .npz (a few hundred KB) for shipping.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from harness.bench.blackbox import FINAL_FROM_SUMMARY, Blackbox, random_configs
from harness.config import SweepSpec, load_spec
from harness.errors import UserError, exit_on_user_error
from harness.schema import Status
from harness.trialconfig import shape_settings, with_batch_seed

ID_PREFIX = "c"


def trial_id(i: int) -> str:
    return f"{ID_PREFIX}{i:05d}"


def shape_groups(
    spec: SweepSpec, configs: Sequence[tuple[int, dict]], size: int
) -> list[list[int]]:
    """Configuration indices in groups of at most `size` that share their shape settings
    (as harness.sweep.groups.group_by_shape does for a fused sweep), in order of first
    appearance."""
    by_key: dict[str, list[list[int]]] = {}
    order: list[list[int]] = []
    for i, params in configs:
        cfg = spec.trial_config(params)
        cfg = with_batch_seed([cfg], cfg.train.batch_seed)[0]
        key = json.dumps(shape_settings(cfg), sort_keys=True, default=str)
        groups = by_key.setdefault(key, [])
        if not groups or len(groups[-1]) >= size:
            groups.append([])
            order.append(groups[-1])
        groups[-1].append(i)
    return order


def _objective(spec: SweepSpec, summary: Any, last: dict[str, Any]) -> float | None:
    name = spec.metric.name
    if name in FINAL_FROM_SUMMARY:
        return getattr(summary, FINAL_FROM_SUMMARY[name])
    return last.get(name)


def record(
    spec: SweepSpec,
    out: Path,
    trials: int,
    *,
    seed: int = 0,
    fuse: int = 8,
    device: str | None = None,
    threads: int | None = None,
    resume: bool = False,
    minutes: float | None = None,
    echo: Callable[[str], None] = print,
) -> tuple[int, int]:
    """Record `trials` configurations into `out`; returns (recorded now, recorded in all)."""
    from harness import results as rs
    from harness import trainer
    from harness.data import load_dataset

    if (out / rs.TRIALS_FILE).exists() and not resume:
        raise UserError(f"--out {out}: already holds a table; pass --resume to go on with it")
    t0 = time.time()
    data = load_dataset(spec.data)
    n_train = int(data.train_x.shape[0])
    configs = random_configs(spec, trials, seed)
    writer = rs.ResultsWriter.open(out, params=list(spec.searched))
    done = {
        tid for tid in writer.trial_ids()
        if writer.trial_row(tid).get("status") in (Status.COMPLETED, Status.DIVERGED, Status.FAILED)
    }  # fmt: skip
    for tid in writer.trial_ids():
        if tid not in done:  # a group cut short: its members train again
            writer.drop_trial(tid)
    todo = [(i, c) for i, c in enumerate(configs) if trial_id(i) not in done]
    groups = shape_groups(spec, todo, fuse)
    info = {
        "spec": spec.to_dict(),
        "max_t": spec.max_t(n_train),
        "train_size": n_train,
        "record": {"trials": trials, "seed": seed, "fuse": fuse, "command": sys.argv},
    }
    writer.write_sweep_info(info)
    echo(
        f"record {spec.name}: {len(configs)} configurations ({len(done)} recorded before), "
        f"{len(groups)} group(s) of up to {fuse} to train on {spec.data.name} "
        f"({n_train} training samples) -> {out}/"
    )
    by_index = dict(todo)
    now = 0
    for g, members in enumerate(groups, 1):
        if minutes is not None and time.time() - t0 > 60 * minutes:
            echo(f"--minutes {minutes:g} reached: stopped before group {g}; --resume goes on")
            break
        cfgs = [spec.trial_config(by_index[i]) for i in members]
        ids = [trial_id(i) for i in members]
        start = dt.datetime.now(dt.timezone.utc)
        for k, (i, tid) in enumerate(zip(members, ids)):
            writer.set_trial(tid, trial_number=i, status=Status.RUNNING, params=by_index[i],
                             start_time=start, group_id=ids[0], group_member=k,
                             group_size=len(members))  # fmt: skip
        last: dict[int, dict[str, Any]] = {}

        def report(
            k: int, metrics: dict[str, Any], ids: list[str] = ids, last: dict = last
        ) -> None:
            last[k] = metrics
            writer.add_report(ids[k], metrics)

        g0 = time.time()
        summaries = trainer.train_group(cfgs, data, report, device=device, threads=threads)
        for k, (tid, s) in enumerate(zip(ids, summaries)):
            fields: dict[str, Any] = {
                "status": s.status, "best_dev_loss": s.best_dev_loss,
                "best_dev_acc": s.best_dev_acc, "best_iteration": s.best_iteration,
                "iterations": s.iterations, "epochs": s.epochs, "samples": s.samples,
                "train_s": s.elapsed_seconds, "device": s.device, "fused": s.fused,
                "end_time": dt.datetime.now(dt.timezone.utc), "error": s.reason or None,
            }  # fmt: skip
            if s.status == Status.COMPLETED:
                fields.update(metric=_objective(spec, s, last.get(k, {})), test_acc=s.test_acc,
                              test_loss=s.test_loss, test_f1_macro=s.test_f1_macro)  # fmt: skip
            writer.set_trial(tid, **fields)
        writer.flush(force=True)
        now += len(members)
        best = max((s.best_dev_acc for s in summaries), default=float("nan"))
        echo(f"[{g}/{len(groups)}] {len(members)} configuration(s) in {time.time() - g0:.1f} s "
             f"({summaries[0].device}{', fused' if summaries[0].fused else ''}); "
             f"best dev acc {best:.4f}")  # fmt: skip
    writer.flush(force=True)
    return now, len(done) + now


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m harness.bench record",
        description="Record a table of learning curves for `bench searchers --replay`.",
        epilog=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("spec", help="search-space file, e.g. search_spaces/replay_smoke.yaml")
    p.add_argument("--trials", type=int, required=True, help="configurations to record")
    p.add_argument("--out", required=True, help="the table's folder")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="spec override (repeatable), e.g. data.path=... train.max_epochs=1")  # fmt: skip
    p.add_argument("--seed", type=int, default=0, help="seeds the configurations' draw")
    p.add_argument("--fuse", type=int, default=8, help="configurations per fused group (default 8)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--threads", type=int, help="torch threads (default: torch's own)")
    p.add_argument("--resume", action="store_true", help="go on with the table in --out")
    p.add_argument("--minutes", type=float, help="start no group after this long")
    p.add_argument("--pack", help="also write the table as one compressed .npz file")
    return p


@exit_on_user_error
def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.trials < 1:
        raise UserError(f"--trials: must be >= 1, got {args.trials}")
    if args.fuse < 1:
        raise UserError(f"--fuse: must be >= 1, got {args.fuse}")
    spec = load_spec(args.spec, args.sets)
    out = Path(args.out)
    t0 = time.time()
    now, total = record(spec, out, args.trials, seed=args.seed, fuse=args.fuse,
                        device=args.device, threads=args.threads, resume=args.resume,
                        minutes=args.minutes, echo=lambda s: print(s, flush=True))  # fmt: skip
    line = {"table": str(out), "recorded_now": now, "recorded": total, "trials": args.trials,
            "seconds": round(time.time() - t0, 1)}  # fmt: skip
    if args.pack:
        table = Blackbox.from_folder(out)
        path = table.pack(args.pack)
        line.update(packed=str(path), packed_bytes=path.stat().st_size)
    print(json.dumps(line))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
