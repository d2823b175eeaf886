"""The bench's tables: every run's trials in the order they ended (runs.parquet), one row per
combination (summary.parquet), the text table, and `analyse`, which writes them with the
figures (harness.plots)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from harness.bench.searchers.planning import RunKey
from harness.bench.searchers.statistics import (
    BOOTSTRAP_SAMPLES,
    CONFIDENCE,
    best_so_far,
    bootstrap_band,
    default_target,
    iqm,
    regret,
    step_at,
    time_to_target,
)
from harness.config import SweepSpec
from harness.errors import UserError
from harness.files import write_with
from harness.schema import Status

GRID_POINTS = 200
RUNS_FILE = "runs.parquet"
SUMMARY_FILE = "summary.parquet"
ANYTIME_PNG = "anytime.png"
FINAL_PNG = "final.png"


def run_table(key: RunKey, spec: SweepSpec, trials: pd.DataFrame) -> pd.DataFrame:
    """One run's trials in the order they ended, with cumulative trial-seconds and best so far."""
    t = trials.copy()
    end = pd.to_datetime(t.get("end_time"), utc=True, errors="coerce")
    start = pd.to_datetime(t.get("start_time"), utc=True, errors="coerce")
    t["_end"] = end
    t = t.assign(_n=t["trial_number"].fillna(1e9)).sort_values(
        ["_end", "_n"], kind="stable", na_position="last"
    )
    span = (t["_end"] - start.loc[t.index]).dt.total_seconds()
    secs = pd.to_numeric(t["train_s"], errors="coerce").fillna(span).fillna(0.0).clip(lower=0)
    value = pd.to_numeric(t["metric"], errors="coerce").where(t["status"] == Status.COMPLETED)
    batches = pd.to_numeric(t.get("iterations"), errors="coerce").fillna(0.0)
    front = pd.DataFrame(
        {
            "method": key.method,
            "early_terminate": key.early_terminate,
            "seed": key.seed,
            "run": key.name,
            "combo": key.combo,
            "order": np.arange(1, len(t) + 1),
            "trial_s": secs.to_numpy(),
            "cum_trial_s": secs.cumsum().to_numpy(),
            "cum_batches": batches.cumsum().to_numpy(),
            "value": value.to_numpy(),
            "best_so_far": best_so_far(value.to_numpy(), spec.metric.goal),
            "train_seed": spec.train.get("seed"),
            "sampler_seed": spec.seed,
        },
        index=t.index,
    )
    rest = t.drop(columns=["_end", "_n"])
    return pd.concat([front, rest], axis=1).reset_index(drop=True)


def runs_table(runs: Sequence[tuple[RunKey, SweepSpec, Path]]) -> pd.DataFrame:
    from harness import results as rs

    parts = [run_table(k, spec, rs.load(folder).trials) for k, spec, folder in runs]
    parts = [p for p in parts if len(p)]
    if not parts:
        raise UserError("no run of the bench recorded a trial")
    return pd.concat(parts, ignore_index=True)


def add_baseline(runs: pd.DataFrame, baseline: bool) -> pd.DataFrame:
    """`baseline_value` (trial 0's value in the row's seed; NaN without a baseline) and
    `searched` (the trial is not the baseline) columns."""
    out = runs.copy()
    number = pd.to_numeric(out.get("trial_number"), errors="coerce")
    is_base = (number == 0) if baseline and "trial_number" in out else pd.Series(False, out.index)
    out["searched"] = ~is_base.to_numpy()
    per_seed = out[is_base].groupby("seed")["value"].median()
    out["baseline_value"] = out["seed"].map(per_seed).astype(float)
    return out


def add_regret(runs: pd.DataFrame, goal: str) -> tuple[pd.DataFrame, float]:
    """Regret column against the best COMPLETED value any run found."""
    vals = runs["value"].dropna()
    if vals.empty:
        raise UserError(
            "no trial of any run completed: nothing to compare (see each run's ray.log)"
        )
    optimum = float(vals.max() if goal == "maximize" else vals.min())
    out = runs.copy()
    out["regret"] = regret(out["best_so_far"].to_numpy(), optimum, goal)
    return out, optimum


@dataclass
class Curves:
    """Per combination: IQM and bootstrap band of best-so-far and regret on a seconds grid."""

    x: np.ndarray
    best: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]  # combo -> (iqm, lo, hi)
    regret: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]
    end_s: dict[str, float]  # median total trial-seconds of the combination's runs


def curves(runs: pd.DataFrame, optimum: float, goal: str, points: int = GRID_POINTS) -> Curves:
    xmax = float(runs["cum_trial_s"].max()) if len(runs) else 1.0
    x = np.linspace(0.0, max(xmax, 1e-9), points)
    best, reg, end = {}, {}, {}
    for combo, g in runs.groupby("combo", sort=False):
        mat = np.stack(
            [step_at(x, r["cum_trial_s"].to_numpy(), r["best_so_far"].to_numpy())
             for _, r in g.groupby("seed", sort=True)]
        )  # fmt: skip
        b_iqm = iqm(mat)
        b_lo, b_hi = bootstrap_band(mat)
        best[combo] = (b_iqm, b_lo, b_hi)
        rmat = regret(mat, optimum, goal)
        r_lo, r_hi = bootstrap_band(rmat)
        reg[combo] = (iqm(rmat), r_lo, r_hi)
        end[combo] = float(np.median(g.groupby("seed")["cum_trial_s"].max()))
    return Curves(x=x, best=best, regret=reg, end_s=end)


def summary_table(runs: pd.DataFrame, optimum: float, target: float, goal: str) -> pd.DataFrame:
    """One row per combination: final best (IQM, band), regret, time-to-target, compute."""
    rows = []
    for combo, g in runs.groupby("combo", sort=False):
        per_seed = []
        for seed, r in g.groupby("seed", sort=True):
            final = r["best_so_far"].iloc[-1]
            per_seed.append(
                {
                    "seed": seed,
                    "final": final,
                    "ttt": time_to_target(
                        r["cum_trial_s"].to_numpy(), r["best_so_far"].to_numpy(), target, goal
                    ),
                    **_against_baseline(r, goal),
                    "trial_s": float(r["trial_s"].sum()),
                    "trials": len(r),
                    "pruned": int((r["status"] == Status.PRUNED).sum()),
                    "failed": int(r["status"].isin([Status.FAILED, Status.DIVERGED]).sum()),
                }
            )
        s = pd.DataFrame(per_seed)
        finals = s["final"].to_numpy(dtype=float)
        lo, hi = bootstrap_band(finals)
        ttt = s["ttt"].to_numpy(dtype=float)
        rows.append(
            {
                "combo": combo,
                "method": g["method"].iloc[0],
                "early_terminate": g["early_terminate"].iloc[0],
                "seeds": len(s),
                "final_best_iqm": float(iqm(finals)[0]),
                "final_best_lo": float(lo[0]),
                "final_best_hi": float(hi[0]),
                "final_regret_iqm": float(iqm(regret(finals, optimum, goal))[0]),
                "reached_target": int(np.isfinite(ttt).sum()),
                "time_to_target_median_s": float(np.median(ttt)),
                "trial_s_per_run": float(s["trial_s"].mean()),
                "trials_per_run": float(s["trials"].mean()),
                "pruned_per_run": float(s["pruned"].mean()),
                "failed_per_run": float(s["failed"].mean()),
                "baseline_mean": float(s["baseline"].mean()),
                "beat_baseline": int(s["beat"].sum()),
                "trials_beating_baseline_per_run": float(s["n_beat"].mean()),
                "time_to_baseline_median_s": float(np.median(s["ttb"].to_numpy(dtype=float))),
                "batches_to_baseline_median": float(np.median(s["btb"].to_numpy(dtype=float))),
                "target": target,
                "optimum": optimum,
            }
        )
    return pd.DataFrame(rows)


def _against_baseline(r: pd.DataFrame, goal: str) -> dict[str, Any]:
    """One run against its seed's baseline: beaten?, by how many trials, and when first
    reached (cumulative trial-seconds; inf if never, NaN without a baseline)."""
    base = float(r["baseline_value"].iloc[0]) if "baseline_value" in r else math.nan
    if not math.isfinite(base):
        return {"baseline": math.nan, "beat": False, "n_beat": math.nan, "ttb": math.nan,
                "btb": math.nan}  # fmt: skip
    own = r["value"].where(r["searched"]).to_numpy(dtype=float)
    better = own > base if goal == "maximize" else own < base
    best = best_so_far(own, goal)
    return {
        "baseline": base,
        "beat": bool(np.nan_to_num(better).any()),
        "n_beat": int(np.nan_to_num(better).sum()),
        "ttb": time_to_target(r["cum_trial_s"].to_numpy(), best, base, goal),
        "btb": time_to_target(r["cum_batches"].to_numpy(), best, base, goal)
        if "cum_batches" in r
        else math.nan,
    }


def _baseline_cells(r: Any, secs: Callable[[float], str]) -> list[str]:
    b = r.batches_to_baseline_median
    return [
        f"{r.beat_baseline}/{r.seeds}",
        f"{r.trials_beating_baseline_per_run:.1f}",
        secs(r.time_to_baseline_median_s),
        "-" if math.isnan(b) else "never" if math.isinf(b) else f"{b:.0f}",
    ]


def summary_text(summary: pd.DataFrame, metric: str) -> str:
    def num(v: float) -> str:
        return "-" if not math.isfinite(v) else f"{v:.4f}"

    def secs(v: float) -> str:
        return "never" if not math.isfinite(v) else f"{v:.0f} s"

    base = "baseline_mean" in summary and summary["baseline_mean"].notna().any()
    head = ["combination", f"final {metric} IQM [95% CI]", "regret", "reached", "time to target",
            *(["beat baseline", "trials > baseline/run", "time to baseline",
               "batches to baseline"] if base else []),
            "trial-s/run", "pruned/run", "failed/run"]  # fmt: skip
    cells = [
        [
            r.combo,
            f"{num(r.final_best_iqm)} [{num(r.final_best_lo)}, {num(r.final_best_hi)}]",
            num(r.final_regret_iqm),
            f"{r.reached_target}/{r.seeds}",
            secs(r.time_to_target_median_s),
            *(_baseline_cells(r, secs) if base else []),
            f"{r.trial_s_per_run:.0f}",
            f"{r.pruned_per_run:.1f}",
            f"{r.failed_per_run:.1f}",
        ]
        for r in summary.itertuples()
    ]
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(head)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(head, widths))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths)) for row in cells]
    return "\n".join(lines)


def analyse(
    runs_in: Sequence[tuple[RunKey, SweepSpec, Path]],
    out: Path,
    *,
    target: float | None,
    tolerance: float,
    figures: bool = True,
) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, Any]]:
    """runs.parquet, summary.parquet, bench.json and the PNGs from the runs' folders."""
    spec = runs_in[0][1]
    goal, metric = spec.metric.goal, spec.metric.name
    runs, optimum = add_regret(add_baseline(runs_table(runs_in), spec.baseline), goal)
    tgt = default_target(optimum, goal, tolerance) if target is None else float(target)
    summary = summary_table(runs, optimum, tgt, goal)
    best_row = runs.loc[runs["value"].idxmax() if goal == "maximize" else runs["value"].idxmin()]
    info = {
        "metric": metric,
        "goal": goal,
        "optimum": optimum,
        "optimum_run": best_row["run"],
        "optimum_trial": best_row["trial_id"],
        "target": tgt,
        "target_source": "--target" if target is not None else f"best found -/+ {tolerance}",
        "tolerance": tolerance,
        "bootstrap_samples": BOOTSTRAP_SAMPLES,
        "confidence": CONFIDENCE,
        "baseline": {
            int(k): float(v)
            for k, v in runs.groupby("seed")["baseline_value"].first().dropna().items()
        },
    }
    out.mkdir(parents=True, exist_ok=True)
    write_with(out / RUNS_FILE, partial(runs.to_parquet, index=False))
    write_with(out / SUMMARY_FILE, partial(summary.to_parquet, index=False))
    if figures:
        from harness import plots

        c = curves(runs, optimum, goal)
        floor = max(tolerance / 10.0, 1e-6)
        title = (
            f"{spec.model} on {spec.data.name}: {spec.budget.num_samples} trials per run, "
            f"IQM over {runs['seed'].nunique()} paired seeds, {CONFIDENCE:.0%} bootstrap band"
        )
        plots.save(plots.searchers_anytime(c, metric, tgt, floor, title), out / ANYTIME_PNG)
        plots.save(plots.searchers_final(runs, summary, metric), out / FINAL_PNG)
    return runs, summary, info
