"""`python -m harness.bench searchers SPEC.yaml`: which search setup pays on this problem.

Every (method, early_terminate) combination searches the spec's space with the spec's
budget, once per bench seed, each run a real sweep (harness.sweep.run, all in one Ray
session) whose folder is results/<bench>/runs/<method>-<et>-s<k>/, so
`python -m harness.report` reads any of them.

Pairing: bench seed k fixes the training seed of every trial (train.seed = k: the same
data order and model init whatever the parameters) and seeds the sampler (seed = k), for
every combination alike; so seed k of two combinations differs only in how they search.
The spec's baseline trial (trial 0, the classic settings) is on, as it is for a user's sweep
(`--set baseline=false` turns it off): with the same training seed it is the same trial in
every run of seed k, so the runs still differ only in how they search, and it gives each
seed the value a search has to beat.

Anytime curves: a run's trials in the order they ended; x is the cumulative trial-seconds
(each trial's own train_s, evaluation included; a pruned trial counts up to its stop),
y the best objective among the COMPLETED trials so far (a pruned trial's partial value is
never the answer). Per combination the curves of the seeds are aggregated pointwise as the
interquartile mean (IQM: the mean of the middle 50% after sorting, trimming floor(n/4)
values at each end, so up to 3 seeds it is the plain mean; scipy.stats.trim_mean) with a
percentile bootstrap band over seeds (scipy.stats.bootstrap: seeds resampled with
replacement, the same draw for every x); a combination's curve starts once every seed has
a completed trial, and after a run has spent its budget its final value carries on (a dot
marks where the median run ended).
Against the classic baseline (trial 0, when on): its value in seed k is what each run of
seed k has to beat (the same trial in all of them; where it completed in several runs,
their median). Per combination: the seeds whose best searched trial (any trial but 0) beat
it, the searched trials per run that beat it, and the time to the baseline: the cumulative
trial-seconds (trial 0's own included) at which a searched trial first reached it, the
median over seeds, a seed that never did counting as never; and the same in trial-batches
(batches trained, summed over trials), which the machine's load does not change.
Regret is the distance to the best value any run of the bench found. Time-to-target is the
cumulative trial-seconds at which a run's best first reaches the target (by default that
best value minus --tolerance, 0.01, in the metric's units, toward worse); per combination
the median over seeds, a run that never reaches it counting as never.

Modules: statistics (IQM, bootstrap bands, regret, time to target), planning (the runs and
their specs), driver (the real sweeps, in one Ray session), tables (runs.parquet,
summary.parquet, the text table, `analyse`), replay (`--replay TABLE`: searchers replayed
against recorded learning curves on a simulated clock) and judgement (the replay's many-seed
verdict); figures are harness.plots'.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from collections.abc import Sequence
from functools import partial
from pathlib import Path

import pandas as pd

from harness import overrides
from harness.bench.searchers.driver import RUNS_DIR, run_all
from harness.bench.searchers.planning import (
    RunKey,
    _split_list,
    base_spec,
    existing_run,
    run_overrides,
    run_spec,
)
from harness.bench.searchers.statistics import (
    BOOTSTRAP_SAMPLES,
    CONFIDENCE,
    best_so_far,
    bootstrap_band,
    default_target,
    iqm,
    reached,
    regret,
    step_at,
    time_to_target,
)
from harness.bench.searchers.tables import (
    ANYTIME_PNG,
    FINAL_PNG,
    RUNS_FILE,
    SUMMARY_FILE,
    Curves,
    add_baseline,
    add_regret,
    analyse,
    curves,
    run_table,
    runs_table,
    summary_table,
    summary_text,
)
from harness.config import METHODS, TERMINATORS
from harness.errors import UserError, exit_on_user_error
from harness.files import write_text, write_with

DEFAULT_METHODS = ("auto", "tpe", "gp", "random", "qmc")
DEFAULT_EARLY_TERMINATE = ("asha", "none")
DEFAULT_TOLERANCE = 0.01
BENCH_FILE = "bench.json"

__all__ = [
    "ANYTIME_PNG", "BENCH_FILE", "BOOTSTRAP_SAMPLES", "CONFIDENCE", "DEFAULT_TOLERANCE",
    "FINAL_PNG", "RUNS_DIR", "RUNS_FILE", "SUMMARY_FILE", "Curves", "RunKey", "add_baseline",
    "add_regret", "analyse", "base_spec", "best_so_far", "bootstrap_band", "curves",
    "default_target", "existing_run", "iqm", "main", "reached", "regret", "run_all",
    "run_overrides", "run_spec", "run_table", "runs_table", "step_at", "summary_table",
    "summary_text", "time_to_target",
]  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m harness.bench searchers",
        description="Search methods x early termination on one spec and budget, over paired seeds.",
        epilog=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("spec", nargs="?",
                   help="search-space file, e.g. search_spaces/textcnn.yaml (not with --replay)")  # fmt: skip
    p.add_argument("--methods", default=",".join(DEFAULT_METHODS),
                   help=f"comma list of {'|'.join(m for m in METHODS if m != 'nsga2')} "
                   f"(default {','.join(DEFAULT_METHODS)})")  # fmt: skip
    p.add_argument("--early-terminate", default=",".join(DEFAULT_EARLY_TERMINATE),
                   help=f"comma list of {'|'.join(TERMINATORS)} (default "
                   f"{','.join(DEFAULT_EARLY_TERMINATE)}); the spec's own settings where its "
                   "type matches, else the scheduler's defaults")  # fmt: skip
    p.add_argument("--seeds", type=int, default=3, help="paired seeds 0..N-1 (default 3)")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="spec override shared by every run (repeatable), e.g. budget.num_samples=8")  # fmt: skip
    p.add_argument("--out", help="bench folder (default results/searchers-<spec name>)")
    p.add_argument("--target", type=float,
                   help="objective value for time-to-target (default: best found minus --tolerance)")  # fmt: skip
    p.add_argument("--tolerance", type=float, default=DEFAULT_TOLERANCE,
                   help=f"default target = best found minus this (default {DEFAULT_TOLERANCE})")  # fmt: skip
    p.add_argument("--overwrite", action="store_true",
                   help="rerun every run (default: finished runs of the same spec are reused, "
                   "interrupted ones resumed)")  # fmt: skip
    p.add_argument("--verbose", action="store_true", help="each sweep's own console output")
    r = p.add_argument_group("replay (--replay TABLE: no training; see harness.bench.searchers.replay)")
    r.add_argument("--replay", action="append", default=[], metavar="TABLE",
                   help="a table (a finished sweep or `bench record` folder, or a packed .npz) "
                   "to replay the searchers against instead of running sweeps (repeatable)")  # fmt: skip
    r.add_argument("--fuse", default="1,8",
                   help="replay: comma list of group sizes (resources.fuse; default 1,8)")
    r.add_argument("--budgets", default="16,64",
                   help="replay: comma list of trial budgets (num_samples; default 16,64)")
    r.add_argument("--method-seeds", default="", metavar="METHOD=N,...",
                   help="replay: fewer (or more) seeds for named methods, e.g. gp=10 "
                   "(GPSampler's suggestions take 0.5-3 s each on a busy 2-core machine)")  # fmt: skip
    r.add_argument("--concurrent", type=int,
                   help="replay: simulated workers (default: the table's budget.max_concurrent)")
    return p


def _ints(text: str, what: str) -> list[int]:
    try:
        vals = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise UserError(f"--{what}: expected a comma list of whole numbers, got {text!r}") from None
    if not vals or min(vals) < 1:
        raise UserError(f"--{what}: expected whole numbers >= 1, got {text!r}")
    return list(dict.fromkeys(vals))


def _method_seeds(text: str, methods: Sequence[str], default: int) -> dict[str, int]:
    out = dict.fromkeys(methods, default)
    for item in (x.strip() for x in text.split(",") if x.strip()):
        name, _, n = item.partition("=")
        if name not in out or not n.strip().isdigit() or int(n) < 1:
            raise UserError(
                f"--method-seeds: expected METHOD=N with METHOD one of --methods, got {item!r}"
            )
        out[name] = int(n)
    return out


def main_replay(args: argparse.Namespace, argv: Sequence[str], methods: list[str],
                ets: list[str]) -> int:  # fmt: skip
    """`--replay`: every combination on every table, many seeds, no training."""
    import time

    from harness.bench.blackbox import Blackbox
    from harness.bench.searchers import judgement

    if args.spec:
        raise UserError("--replay: the table's own spec is replayed; give no SPEC")
    for item in args.sets:  # settings a table can answer: the scheduler's and the workers'
        key = overrides.parse(item).key
        if not (key.startswith("early_terminate.") or key == "budget.max_concurrent"):
            raise UserError(
                f"--set {item}: with --replay only early_terminate.* and budget.max_concurrent "
                "can change (the table answers for its own space and training)"
            )
    if args.concurrent is not None and args.concurrent < 1:
        raise UserError(f"--concurrent: must be >= 1, got {args.concurrent}")
    fuses = _ints(args.fuse, "fuse")
    budgets = _ints(args.budgets, "budgets")
    seeds = _method_seeds(args.method_seeds, methods, args.seeds)
    tables = {Path(t).name.removesuffix(".npz"): Blackbox.load(t) for t in args.replay}
    if args.sets:
        from harness.config import as_spec

        for table in tables.values():
            table.spec = as_spec(table.spec, args.sets)
    out = Path(args.out) if args.out else Path("results") / "searchers-replay"
    summaries: dict[str, pd.DataFrame] = {}
    t0 = time.time()
    for name, table in tables.items():
        b = table.baseline()
        print(
            f"replay {name}: {len(table)} recorded configurations of {table.spec.model} on "
            f"{table.spec.data.name}; best {table.spec.metric.name} {table.optimum():.4f}, the "
            f"classic baseline's {'-' if b is None else f'{table.final[b]:.4f}'}; "
            f"{args.concurrent or table.spec.budget.max_concurrent} simulated workers",
            flush=True,
        )
        trials, scores, summary = judgement.judge(
            table, methods, ets, fuses, budgets, seeds.__getitem__,
            max_concurrent=args.concurrent, echo=lambda s: print(s, flush=True),
        )  # fmt: skip
        summaries[name] = summary
        folder = out / name
        folder.mkdir(parents=True, exist_ok=True)
        write_with(folder / "replay.parquet", partial(trials.to_parquet, index=False))
        write_with(folder / "scores.parquet", partial(scores.to_parquet, index=False))
        write_with(folder / "judgement.parquet", partial(summary.to_parquet, index=False))
        from harness import plots

        plots.save(plots.replay_regret(summary, name, table.spec.metric.name),
                   folder / "regret.png")  # fmt: skip
        print(judgement.summary_text(summary, table.spec.metric.name), flush=True)
    line = judgement.verdict_line(summaries)
    command = [sys.executable, "-m", "harness.bench", "searchers", *argv]
    write_text(out / "judgement.json", json.dumps(
        {"command": command, "seconds": round(time.time() - t0, 1),
         "load_average": list(os.getloadavg()), "tables": judgement.verdict(summaries)},
        indent=2) + "\n")  # fmt: skip
    print(f"{time.time() - t0:.0f} s; tables and figures in {out}/<table>/")
    print(line)
    return 0


@exit_on_user_error
def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    methods = _split_list(args.methods, "methods", [m for m in METHODS if m != "nsga2"])
    ets = _split_list(args.early_terminate, "early-terminate", list(TERMINATORS))
    if args.seeds < 1:
        raise UserError(f"--seeds: must be >= 1, got {args.seeds}")
    if args.replay:
        bad = [e for e in ets if e not in ("asha", "none")]
        if bad:
            raise UserError(f"--early-terminate: the replay runs asha and none, not {bad[0]}")
        return main_replay(args, argv, methods, ets)
    if not args.spec:
        raise UserError("give a SPEC file to sweep, or --replay TABLE")
    if not args.tolerance >= 0:
        raise UserError(f"--tolerance: must be >= 0, got {args.tolerance}")
    base = base_spec(args.spec, args.sets)
    out = Path(args.out) if args.out else Path("results") / f"searchers-{base.name}"
    keys = [RunKey(m, e, s) for s in range(args.seeds) for m in methods for e in ets]
    print(
        f"searchers on {args.spec}: {base.model} on {base.data.name}, {base.metric.name} "
        f"({base.metric.goal}), {base.budget.num_samples} trials per run, "
        f"{base.budget.max_concurrent} at a time; {len(methods)} method(s) x {len(ets)} "
        f"early_terminate x {args.seeds} seed(s) = {len(keys)} sweep(s) -> {out}/",
        flush=True,
    )
    load = os.getloadavg()[0]
    if load > 0.5:
        print(f"note: load average {load:.1f} before the runs (others share the cores; "
              "trial-seconds come out longer)", flush=True)  # fmt: skip
    command = [sys.executable, "-m", "harness.bench", "searchers", *argv]
    try:
        done = run_all(args.spec, args.sets, keys, out, overwrite=args.overwrite,
                       verbose=args.verbose, echo=lambda s: print(s, flush=True),
                       command=command)  # fmt: skip
    except KeyboardInterrupt:
        print("interrupted: rerun the same command to continue (finished runs are reused)")
        return 130
    _, summary, info = analyse(done, out, target=args.target, tolerance=args.tolerance)
    info.update(
        command=command,
        spec=args.spec,
        sets=list(args.sets),
        methods=methods,
        early_terminate=ets,
        seeds=args.seeds,
        runs=[dataclasses.asdict(k) | {"folder": str(f)} for k, _, f in done],
        load_average=[load, os.getloadavg()[0]],
    )
    write_text(out / BENCH_FILE, json.dumps(info, indent=2, default=str) + "\n")
    goal_word = "minus" if info["goal"] == "maximize" else "plus"
    how = "--target" if args.target is not None else f"best found {goal_word} {args.tolerance:g}"
    print(
        f"\nbest {info['metric']} any run found: {info['optimum']:.4f} "
        f"({info['optimum_run']}, trial {info['optimum_trial']}); target {info['target']:.4f} ({how})"
    )
    if info["baseline"]:
        seeds = ", ".join(f"seed {k} {v:.4f}" for k, v in info["baseline"].items())
        print(f"classic baseline (trial 0) {info['metric']}: {seeds}")
    print(summary_text(summary, info["metric"]))
    print(
        "final: IQM over seeds of each run's best COMPLETED value, 95% bootstrap band; "
        "time to target: median over seeds of cumulative trial-seconds (never = not reached)"
    )
    if info["baseline"]:
        print(
            "beat baseline: seeds whose best searched trial (not trial 0) beat the baseline; "
            "time to baseline: median cumulative trial-seconds until a searched trial reached it"
        )
    best = summary.sort_values(
        "final_best_iqm", ascending=info["goal"] != "maximize", kind="stable"
    ).iloc[0]
    print(f"best final {info['metric']}: {best['combo']}")
    print(
        f"tables: {out / RUNS_FILE}, {out / SUMMARY_FILE}; figures: {out / ANYTIME_PNG}, "
        f"{out / FINAL_PNG}; each run: python -m harness.report {out / RUNS_DIR}/<run>"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())