"""`python -m harness.bench history`: does a bounded history cost `method: auto`'s TPE its search?

Past space.HISTORY (500) trials, `auto` runs TPE over its best and latest trials only
(harness.history), so that a suggestion's cost stops growing with the sweep. This judges
that on recorded tables (`bench record`; the shipped ones by default), the way `bench
searchers --replay` judges searchers, scaled down so that many seeds run in minutes: a
history of `--history` trials (50) against a budget of `--trials` (500), the same 1:10 as
500 against 5,000. Per table and seed, `auto`'s TPE (its settings for that budget, without
the baseline's draws) searches the table's space twice, with every trial's history and with
the bounded one, paired by seed. A suggestion's answer is the final objective of the
nearest recorded configuration (harness.bench.searchers.restriction; repeats allowed, since
the budget outruns the table); `--concurrency` trials run at once (the oldest ends first), so
the constant liar has running trials to see. Printed per table: the regret (the table's best
minus the best found) after 1.5 and 3 times the history and at the end of the budget (the
history trims from its first trial past it on), as the IQM and mean over seeds, and the
seeds where the bounded search did better, the same and worse, and the CPU milliseconds
per trial (ask, suggestions, tell) over the last tenth of the budget; last, one JSON object.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import optuna

from harness import space
from harness.bench.blackbox import Blackbox
from harness.bench.searchers.restriction import Restriction
from harness.bench.searchers.statistics import best_so_far, iqm, regret

TABLES = sorted((Path(__file__).parent / "tables").glob("*.npz"))


def search(
    table: Blackbox, restriction: Restriction, sampler: optuna.samplers.BaseSampler,
    trials: int, concurrency: int,
) -> tuple[np.ndarray, float]:  # fmt: skip
    """The best final objective after each trial's end, and the CPU ms per trial (its ask
    and suggestions, the oldest running trial's tell) over the last tenth of the budget."""
    study = optuna.create_study(direction=table.goal, sampler=sampler)
    running: list[tuple[optuna.Trial, float]] = []
    ended: list[float] = []  # objective values in the order trials ended (NaN: failed)

    def tell() -> None:
        trial, value = running.pop(0)
        if math.isfinite(value):
            study.tell(trial, value)
        else:
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
        ended.append(value)

    late, cpu = trials - max(1, trials // 10), 0.0
    for i in range(trials):
        t0 = time.process_time()
        trial = study.ask()
        space.suggest(trial, table.spec.parameters)
        row = table.lookup(space.decode(table.spec.parameters, restriction.nearest(trial.params)))
        running.append((trial, float(table.final[row])))
        if len(running) == concurrency:
            tell()
        if i >= late:
            cpu += time.process_time() - t0
    while running:
        tell()
    return best_so_far(np.array(ended), table.goal), 1000 * cpu / (trials - late)


def judge(path: Path, trials: int, history: int, seeds: int, concurrency: int) -> dict[str, Any]:
    """Both searches of one table on every seed, and their comparison."""
    table = Blackbox.load(path)
    restriction = Restriction(table)
    choice = space.choose(table.spec.parameters, trials, prior=False)
    if choice.method != "tpe":
        choice = dataclasses.replace(choice, method="tpe")
    kinds = {"every trial": dataclasses.replace(choice, history=0),
             f"latest {history}": dataclasses.replace(choice, history=history)}  # fmt: skip
    regrets: dict[str, list[np.ndarray]] = {k: [] for k in kinds}
    cpu: dict[str, list[float]] = {k: [] for k in kinds}
    optimum = table.optimum()
    for seed in range(seeds):
        for kind, c in kinds.items():
            curve, ms = search(table, restriction, c.sampler(seed, trials), trials, concurrency)
            regrets[kind].append(regret(curve, optimum, table.goal))
            cpu[kind].append(ms)
    marks = sorted({min(trials, history * 3 // 2), min(trials, history * 3), trials})
    full, bounded = (np.array(regrets[k]) for k in kinds)
    out: dict[str, Any] = {"table": path.name, "trials": trials, "history": history,
                           "seeds": seeds, "concurrency": concurrency}  # fmt: skip
    for m in marks:
        a, b = full[:, m - 1], bounded[:, m - 1]
        out[f"at_{m}"] = {
            "regret_iqm_every": float(iqm(a[:, None])[0]),
            "regret_iqm_bounded": float(iqm(b[:, None])[0]),
            "regret_mean_every": float(a.mean()),
            "regret_mean_bounded": float(b.mean()),
            "bounded_better": int((b < a - 1e-12).sum()),
            "same": int((abs(b - a) <= 1e-12).sum()),
            "bounded_worse": int((b > a + 1e-12).sum()),
        }
    out["cpu_ms_per_trial_every"] = float(np.median(cpu["every trial"]))
    out["cpu_ms_per_trial_bounded"] = float(np.median(cpu[f"latest {history}"]))
    return out


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m harness.bench history", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    ap.add_argument("--table", action="append", type=Path, help="a packed table (.npz); "
                    "repeatable (default: the shipped ones)")  # fmt: skip
    ap.add_argument("--trials", type=int, default=500)
    ap.add_argument("--history", type=int, default=50)
    ap.add_argument("--seeds", type=int, default=50)
    ap.add_argument("--concurrency", type=int, default=4)
    args = ap.parse_args(argv)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
    results = []
    for path in args.table or TABLES:
        r = judge(path, args.trials, args.history, args.seeds, args.concurrency)
        results.append(r)
        print(f"{r['table']}: {args.trials} trials, {args.seeds} seeds, {args.concurrency} at once")
        for key in (k for k in r if k.startswith("at_")):
            v = r[key]
            print(f"  after {key[3:]:>5} trials: regret IQM {v['regret_iqm_every']:.4f}, mean "
                  f"{v['regret_mean_every']:.4f} (every trial) vs {v['regret_iqm_bounded']:.4f}, "
                  f"{v['regret_mean_bounded']:.4f} (latest {args.history}); bounded better/same/"
                  f"worse in {v['bounded_better']}/{v['same']}/{v['bounded_worse']} seeds")  # fmt: skip
        print(f"  CPU per trial, last tenth: {r['cpu_ms_per_trial_every']:.1f} ms (every trial) "
              f"vs {r['cpu_ms_per_trial_bounded']:.1f} ms (latest {args.history})")  # fmt: skip
    print(json.dumps(results))
    return 0
