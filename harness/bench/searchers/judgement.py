"""The replay's verdict: every (method, early_terminate, fuse) combination at every budget,
replayed on many seeds against a table, and judged as research benchmarks judge searchers.

Per run (harness.bench.searchers.replay): its final regret (the table's best final
objective minus the run's best COMPLETED value; trial 0, the classic baseline, counts as
the run's answer too), whether a searched trial (any but trial 0) beat the baseline, and
the simulated seconds until a searched trial first COMPLETED at or past the baseline's value
(never: infinite). Per combination and budget over seeds: the IQM of the final regret with
its 95% percentile bootstrap band (harness.bench.searchers.statistics), the fraction of
seeds that beat the baseline, and the median simulated time to the baseline (a seed that
never reached it counts as never, so the median is infinite when half never did).
Seeds pair runs: seed k seeds the sampler of every combination alike.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pandas as pd

from harness.bench.blackbox import Blackbox
from harness.bench.searchers.replay import ReplayKey, replay
from harness.bench.searchers.restriction import Restriction
from harness.bench.searchers.statistics import best_so_far, bootstrap_band, iqm
from harness.schema import Status


def run_scores(runs: pd.DataFrame, table: Blackbox) -> pd.DataFrame:
    """One row per run: final regret, best value, beat the baseline, time to the baseline."""
    goal = table.goal
    optimum = table.optimum()
    b = table.baseline()
    base = float(table.final[b]) if b is not None else math.nan
    rows = []
    for (combo, budget, seed), r in runs.groupby(["combo", "budget", "seed"], sort=False):
        value = r["value"].where(r["status"] == Status.COMPLETED).to_numpy(dtype=float)
        best = best_so_far(value, goal)
        final = float(best[-1]) if len(best) else math.nan
        searched = (r["number"] != 0).to_numpy() if b is not None else np.ones(len(r), bool)
        own = np.where(searched, value, np.nan)
        with np.errstate(invalid="ignore"):
            if goal == "maximize":
                beat, hit = own > base, own >= base
            else:
                beat, hit = own < base, own <= base
        ends = r["end_s"].to_numpy(dtype=float)
        ttb = float(ends[np.flatnonzero(hit)[0]]) if hit.any() else math.inf
        regret = optimum - final if goal == "maximize" else final - optimum
        rows.append({
            "combo": combo, "method": r["method"].iloc[0],
            "early_terminate": r["early_terminate"].iloc[0], "fuse": int(r["fuse"].iloc[0]),
            "budget": int(budget), "seed": int(seed), "final": final, "regret": regret,
            "beat_baseline": bool(beat.any()) if math.isfinite(base) else False,
            "time_to_baseline_s": ttb if math.isfinite(base) else math.nan,
            "end_s": float(ends.max()) if len(ends) else 0.0,
            "pruned": int((r["status"] == Status.PRUNED).sum()),
        })  # fmt: skip
    return pd.DataFrame(rows)


def summarise(scores: pd.DataFrame) -> pd.DataFrame:
    """One row per (combination, budget) over its seeds."""
    rows = []
    for (combo, budget), s in scores.groupby(["combo", "budget"], sort=False):
        reg = s["regret"].to_numpy(dtype=float)
        lo, hi = bootstrap_band(reg)
        rows.append({
            "combo": combo, "method": s["method"].iloc[0],
            "early_terminate": s["early_terminate"].iloc[0], "fuse": int(s["fuse"].iloc[0]),
            "budget": int(budget), "seeds": len(s), "iqm_regret": float(iqm(reg)[0]),
            "ci_lo": float(lo[0]), "ci_hi": float(hi[0]),
            "beat_baseline_frac": float(s["beat_baseline"].mean()),
            "median_time_to_baseline_s": float(np.median(s["time_to_baseline_s"])),
            "median_end_s": float(np.median(s["end_s"])),
            "pruned_per_run": float(s["pruned"].mean()),
        })  # fmt: skip
    return pd.DataFrame(rows)


def judge(
    table: Blackbox,
    methods: Sequence[str],
    early_terminate: Sequence[str],
    fuses: Sequence[int],
    budgets: Sequence[int],
    seeds: Callable[[str], int],
    *,
    max_concurrent: int | None = None,
    echo: Callable[[str], None] = print,
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(every replayed trial, one row per run, one row per combination and budget)."""
    restriction = Restriction(table)
    parts, scores = [], []
    for budget in budgets:
        for method in methods:
            for et in early_terminate:
                for fuse in fuses:
                    t0 = time.time()
                    runs = pd.concat(
                        [replay(table, ReplayKey(method, et, fuse, budget, s), max_concurrent,
                                restriction) for s in range(seeds(method))],
                        ignore_index=True,
                    )  # fmt: skip
                    sc = run_scores(runs, table)
                    parts.append(runs)
                    scores.append(sc)
                    one = summarise(sc).iloc[0]
                    echo(
                        f"{one.combo:<20} n={budget:<3} {int(one.seeds)} seeds in "
                        f"{time.time() - t0:5.1f} s: IQM regret {one.iqm_regret:.4f} "
                        f"[{one.ci_lo:.4f}, {one.ci_hi:.4f}], beat baseline "
                        f"{one.beat_baseline_frac:.0%}, median time to it "
                        f"{_secs(one.median_time_to_baseline_s)}"
                    )
    all_scores = pd.concat(scores, ignore_index=True)
    return pd.concat(parts, ignore_index=True), all_scores, summarise(all_scores)


def _secs(v: float) -> str:
    return "never" if not math.isfinite(v) else f"{v:.1f} s"


def summary_text(summary: pd.DataFrame, metric: str) -> str:
    head = ["combination", "budget", "seeds", f"IQM regret ({metric}) [95% CI]",
            "beat baseline", "median time to baseline", "median run time", "pruned/run"]  # fmt: skip
    cells = [
        [r.combo, str(r.budget), str(r.seeds),
         f"{r.iqm_regret:.4f} [{r.ci_lo:.4f}, {r.ci_hi:.4f}]", f"{r.beat_baseline_frac:.0%}",
         _secs(r.median_time_to_baseline_s), _secs(r.median_end_s), f"{r.pruned_per_run:.1f}"]
        for r in summary.itertuples()
    ]  # fmt: skip
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(head)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(head, widths))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths)) for row in cells]
    return "\n".join(lines)


def verdict(summaries: dict[str, pd.DataFrame]) -> dict[str, Any]:
    """The last line's object: per table, per `<combo>@<budget>`, the four figures
    (median_time_to_baseline in simulated seconds, null for never)."""
    out: dict[str, Any] = {}
    for name, summary in summaries.items():
        out[name] = {
            f"{r.combo}@{r.budget}": {
                "iqm_regret": round(r.iqm_regret, 6),
                "ci": [round(r.ci_lo, 6), round(r.ci_hi, 6)],
                "beat_baseline_frac": round(r.beat_baseline_frac, 4),
                "median_time_to_baseline": (
                    round(r.median_time_to_baseline_s, 2)
                    if math.isfinite(r.median_time_to_baseline_s)
                    else None
                ),
                "seeds": int(r.seeds),
            }
            for r in summary.itertuples()
        }
    return out


def verdict_line(summaries: dict[str, pd.DataFrame]) -> str:
    return json.dumps(verdict(summaries), sort_keys=False)
