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
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from harness.config import METHODS, TERMINATORS, SweepSpec, load_spec
from harness.errors import UserError, did_you_mean, exit_on_user_error
from harness.files import write_text, write_with
from harness.values import finite

DEFAULT_METHODS = ("auto", "tpe", "gp", "random", "qmc")
DEFAULT_EARLY_TERMINATE = ("asha", "none")
DEFAULT_TOLERANCE = 0.01
BOOTSTRAP_SAMPLES = 2000
CONFIDENCE = 0.95
GRID_POINTS = 200
RUNS_DIR = "runs"
RUNS_FILE = "runs.parquet"
SUMMARY_FILE = "summary.parquet"
BENCH_FILE = "bench.json"
ANYTIME_PNG = "anytime.png"
FINAL_PNG = "final.png"
# keys the bench sets itself; a --set of one of these would break the comparison
_OWN_KEYS = {
    "name": "the bench names each run <method>-<et>-s<k>",
    "method": "use --methods",
    "seed": "use --seeds (seed k seeds the sampler of every run k)",
    "train.seed": "use --seeds (seed k is the training seed of every trial of run k)",
    "early_terminate": "use --early-terminate",
    "early_terminate.type": "use --early-terminate",
}


# ------------------------------------------------------------------------------ statistics


def _seeds(values: np.ndarray) -> np.ndarray:
    """Values as a float array with seeds on axis 0 and one column per point."""
    v = np.asarray(values, dtype=float)
    return v[:, None] if v.ndim == 1 else v


def _trimmed(v: np.ndarray, axis: int) -> np.ndarray:
    return stats.trim_mean(v, 0.25, axis=axis)


def iqm(values: np.ndarray) -> np.ndarray:
    """Interquartile mean over axis 0 (seeds): robust to one lucky or unlucky seed, yet
    uses more of the data than the median. scipy's trim_mean(v, 0.25) trims floor(n/4)
    seeds at each end; a column holding any NaN gives NaN (trim_mean would sort NaN last)."""
    v = _seeds(values)
    if len(v) == 0:
        return np.full(v.shape[1:], np.nan)
    out = np.array(_trimmed(v, axis=0), dtype=float, ndmin=1)
    out[np.isnan(v).any(axis=0)] = np.nan
    return out


def bootstrap_band(
    values: np.ndarray,
    *,
    samples: int = BOOTSTRAP_SAMPLES,
    confidence: float = CONFIDENCE,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """(low, high) percentile bootstrap interval of the IQM over axis 0 (seeds).

    scipy.stats.bootstrap resamples whole seeds: each resample is one draw of seed indices
    applied to every column (a test pins this), so a band is a band of curves, not of
    independent points. With few seeds it is coarse: it cannot be wider than the seeds'
    own spread. A column holding any NaN gives NaN.
    """
    v = _seeds(values)
    if len(v) < 2:  # scipy needs two seeds; one seed's band is that seed
        mid = iqm(v)
        return mid, mid.copy()
    bad = np.isnan(v).any(axis=0)
    res = stats.bootstrap(
        (np.where(bad, 0.0, v),), _trimmed, n_resamples=samples, confidence_level=confidence,
        method="percentile", axis=0, vectorized=True, rng=np.random.default_rng(seed),
    )  # fmt: skip
    lo, hi = (np.array(x, dtype=float, ndmin=1) for x in res.confidence_interval)
    lo[bad] = hi[bad] = np.nan
    return lo, hi


def best_so_far(values: np.ndarray, goal: str) -> np.ndarray:
    """Running best of a run's objective values in trial order (NaN: not a COMPLETED value)."""
    v = np.asarray(values, dtype=float)
    filled = np.where(np.isnan(v), -np.inf if goal == "maximize" else np.inf, v)
    run = np.maximum.accumulate(filled) if goal == "maximize" else np.minimum.accumulate(filled)
    return np.where(np.isfinite(run), run, np.nan)


def regret(best: np.ndarray | float, optimum: float, goal: str) -> np.ndarray:
    """How far a best-so-far is from the best value any run found (>= 0)."""
    b = np.asarray(best, dtype=float)
    return optimum - b if goal == "maximize" else b - optimum


def reached(best: np.ndarray, target: float, goal: str) -> np.ndarray:
    b = np.asarray(best, dtype=float)
    with np.errstate(invalid="ignore"):
        return (b >= target) if goal == "maximize" else (b <= target)


def time_to_target(seconds: np.ndarray, best: np.ndarray, target: float, goal: str) -> float:
    """Cumulative trial-seconds at which the running best first reaches the target; inf if never."""
    hit = np.flatnonzero(reached(best, target, goal))
    return float(np.asarray(seconds, dtype=float)[hit[0]]) if hit.size else math.inf


def default_target(optimum: float, goal: str, tolerance: float) -> float:
    """The best value found, loosened by `tolerance` toward worse."""
    return optimum - tolerance if goal == "maximize" else optimum + tolerance


def step_at(x: np.ndarray, seconds: np.ndarray, best: np.ndarray) -> np.ndarray:
    """A run's best-so-far step curve (right-continuous) read at the grid `x`; NaN before its
    first trial ended, its final value after its last."""
    seconds = np.asarray(seconds, dtype=float)
    best = np.asarray(best, dtype=float)
    i = np.searchsorted(seconds, x, side="right") - 1
    out = np.full(np.shape(x), np.nan)
    ok = i >= 0
    out[ok] = best[i[ok]]
    return out


# ------------------------------------------------------------------------------ the runs


@dataclass(frozen=True)
class RunKey:
    method: str
    early_terminate: str
    seed: int

    @property
    def name(self) -> str:
        return f"{self.method}-{self.early_terminate}-s{self.seed}"

    @property
    def combo(self) -> str:
        return f"{self.method}+{self.early_terminate}"


def _split_list(text: str, what: str, allowed: Sequence[str]) -> list[str]:
    items = [x.strip() for x in text.split(",") if x.strip()]
    if not items:
        raise UserError(f"--{what}: expected a comma-separated list, got {text!r}")
    bad = [x for x in items if x not in allowed]
    if bad:
        raise UserError(
            f"--{what}: unknown {bad[0]!r}{did_you_mean(bad[0], allowed)};"
            f" choose from {', '.join(allowed)}"
        )
    if len(set(items)) != len(items):
        raise UserError(f"--{what}: {text!r} names a value twice")
    return items


def _check_user_sets(sets: Sequence[str]) -> None:
    for item in sets:
        key = item.partition("=")[0].strip()
        if key in _OWN_KEYS:
            raise UserError(f"--set {item}: the bench sets {key} itself ({_OWN_KEYS[key]})")


def base_spec(spec_path: str, sets: Sequence[str]) -> SweepSpec:
    """The spec as every run shares it: the file with the user's --set."""
    _check_user_sets(sets)
    spec = load_spec(spec_path, list(sets))
    if len(spec.metrics) > 1:
        raise UserError(
            f"{spec_path}: metric: several objectives have no single best to compare searchers "
            "by; give one metric"
        )
    if "seed" in spec.parameters:
        raise UserError(
            f"{spec_path}: parameters.seed: the bench fixes the training seed per bench seed "
            "(pairing); remove seed from the parameters"
        )
    return spec


def run_overrides(base: SweepSpec, key: RunKey) -> list[str]:
    """--set values that turn the shared spec into one run of the bench."""
    et = base.early_terminate
    if et.type == key.early_terminate:
        et_dict = et.to_dict()  # the spec's own scheduler settings
    else:
        et_dict = {"type": key.early_terminate}  # the scheduler's defaults
    return [
        f"name={key.name}",
        f"method={key.method}",
        f"seed={key.seed}",
        f"train.seed={key.seed}",
        f"early_terminate={json.dumps(et_dict)}",
    ]


def run_spec(spec_path: str, sets: Sequence[str], base: SweepSpec, key: RunKey) -> SweepSpec:
    return load_spec(spec_path, [*sets, *run_overrides(base, key)])


def _json_roundtrip(obj: Any) -> Any:
    return json.loads(json.dumps(obj, default=str))


def existing_run(folder: Path, spec: SweepSpec) -> str:
    """'new', 'done' (a finished run of this very spec: reused) or 'resume' (interrupted).
    A folder holding a run of another spec is a user error (--overwrite replaces it)."""
    from harness import results as rs

    if not (folder / rs.SWEEP_FILE).exists():
        return "new"
    try:
        old = json.loads((folder / rs.SWEEP_FILE).read_text()).get("spec", {})
    except (OSError, json.JSONDecodeError):
        old = None
    new = _json_roundtrip(spec.to_dict())
    if old != new:
        differ = sorted(k for k in set(old or {}) | set(new) if (old or {}).get(k) != new.get(k))
        raise UserError(
            f"{folder}: holds a run of a different spec (differs in: {', '.join(differ) or '?'}); "
            "pass --overwrite to replace the bench's runs, or --out for a new bench"
        )
    trials = rs.load(folder).trials
    unfinished = trials["status"].isin(["RUNNING", "PENDING"]).any() if len(trials) else True
    short = len(trials) < spec.budget.num_samples and not spec.budget.time_budget_s
    return "resume" if unfinished or short else "done"


def run_all(
    spec_path: str,
    sets: Sequence[str],
    keys: Sequence[RunKey],
    root: Path,
    *,
    overwrite: bool = False,
    verbose: bool = False,
    echo: Callable[[str], None] = print,
    command: Sequence[str] = (),
) -> list[tuple[RunKey, SweepSpec, Path]]:
    """Run (or reuse) every sweep of the bench, one after another in one Ray session."""
    from harness import sweep

    base = base_spec(spec_path, sets)
    specs = [(k, run_spec(spec_path, sets, base, k)) for k in keys]  # every error before Ray
    runs_root = root / RUNS_DIR
    plan = []
    for k, spec in specs:
        folder = runs_root / spec.name
        state = "new" if overwrite else existing_run(folder, spec)
        plan.append((k, spec, folder, state))
    own_ray = not sweep.ray.is_initialized()
    out = []
    try:
        for i, (k, spec, folder, state) in enumerate(plan, 1):
            tag = f"[{i:>{len(str(len(plan)))}}/{len(plan)}] {k.name:<{max(len(p[0].name) for p in plan)}}"
            if state == "done":
                echo(f"{tag}  reused (finished earlier in {folder})")
                out.append((k, spec, folder))
                continue
            t0 = time.time()
            outcome = sweep.run(
                spec,
                results_root=runs_root,
                resume=state == "resume",
                overwrite=overwrite or state == "new",
                console=verbose,
                command=list(command),
                shutdown=False,
            )
            if outcome.fault:  # a results folder that could not be written: one line, exit 1
                print(f"error: {outcome.fault}", file=sys.stderr)
                raise SystemExit(1)
            if outcome.interrupted:
                raise KeyboardInterrupt
            counts = pd.Series([r.get("status") for r in outcome.rows]).value_counts()
            done = ", ".join(f"{n} {s.lower()}" for s, n in counts.items())
            vals = [
                float(r["metric"])
                for r in outcome.rows
                if r.get("status") == "COMPLETED" and finite(r.get("metric"))
            ]
            best = (max if spec.metric.goal == "maximize" else min)(vals) if vals else None
            best_txt = "-" if best is None else f"{best:.4f}"
            resumed = " (resumed)" if state == "resume" else ""
            echo(
                f"{tag}  {len(outcome.rows)} trials ({done}) in {time.time() - t0:.0f} s{resumed}; "
                f"best {spec.metric.name} {best_txt}"
            )
            out.append((k, spec, folder))
    finally:
        if own_ray and sweep.ray.is_initialized():
            sweep.ray.shutdown()
    return out


# ------------------------------------------------------------------------------ tables


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
    value = pd.to_numeric(t["metric"], errors="coerce").where(t["status"] == "COMPLETED")
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
                    "pruned": int((r["status"] == "PRUNED").sum()),
                    "failed": int(r["status"].isin(["FAILED", "DIVERGED"]).sum()),
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


# ------------------------------------------------------------------------------ figures


def _figure(nrows: int, figsize: tuple[float, float]) -> tuple[Any, Any]:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, layout="constrained")
    FigureCanvasAgg(fig)
    return fig, fig.subplots(nrows, 1, squeeze=False)[:, 0]


def plot_anytime(
    c: Curves, metric: str, target: float, tolerance_floor: float, path: Path, title: str
) -> Path:
    """Best so far (top) and regret (bottom, symlog) against cumulative trial-seconds."""
    from harness.plots import save

    fig, (ax, axr) = _figure(2, (7, 6.4))
    colors = _colors(list(c.best))
    for combo, (mid, lo, hi) in c.best.items():
        color = colors[combo]
        ls = "--" if combo.endswith("+none") else "-"
        ax.plot(c.x, mid, ls, color=color, lw=1.4, label=combo, drawstyle="steps-post")
        ax.fill_between(c.x, lo, hi, color=color, alpha=0.15, step="post", lw=0)
        _end_dot(ax, c.x, mid, c.end_s[combo], color)
        rmid, rlo, rhi = c.regret[combo]
        axr.plot(c.x, rmid, ls, color=color, lw=1.4, label=combo, drawstyle="steps-post")
        axr.fill_between(c.x, rlo, rhi, color=color, alpha=0.15, step="post", lw=0)
        _end_dot(axr, c.x, rmid, c.end_s[combo], color)
    ax.axhline(target, color="k", lw=0.8, ls=":", label="target")
    ax.set_ylabel(f"best {metric} (IQM over seeds)")
    ax.set_title(title, fontsize=9)
    axr.set_yscale("symlog", linthresh=tolerance_floor)
    axr.set_ylabel("regret to best found")
    axr.set_xlabel("cumulative trial-seconds")
    for a in (ax, axr):
        a.grid(alpha=0.3)
        a.set_xlim(left=0)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7, loc="lower right")
    return save(fig, path)


def _end_dot(ax: Any, x: np.ndarray, y: np.ndarray, end: float, color: str) -> None:
    i = min(int(np.searchsorted(x, end, side="right")) - 1, len(x) - 1)
    if i >= 0 and math.isfinite(y[i]):
        ax.plot([end], [y[i]], "o", color=color, ms=4)


def _colors(combos: list[str]) -> dict[str, str]:
    """One color per method (solid with early termination, dashed without)."""
    palette = ["tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown",
               "tab:pink", "tab:olive", "tab:cyan", "tab:gray"]  # fmt: skip
    methods = list(dict.fromkeys(c.split("+")[0] for c in combos))
    return {c: palette[methods.index(c.split("+")[0]) % len(palette)] for c in combos}


def plot_final(runs: pd.DataFrame, summary: pd.DataFrame, metric: str, path: Path) -> Path:
    """Each seed's final best (dots, paired seeds joined by the seed's marker) and the IQM
    with its band per combination."""
    from harness.plots import save

    fig, (ax,) = _figure(1, (7, 0.45 * len(summary) + 1.4))
    finals = runs.groupby(["combo", "seed"], sort=False)["best_so_far"].last().reset_index()
    order = list(summary["combo"])
    markers = "osD^v<>p*h"
    seeds = sorted(finals["seed"].unique())
    for i, combo in enumerate(order):
        f = finals[finals["combo"] == combo]
        for _, r in f.iterrows():
            m = markers[seeds.index(r["seed"]) % len(markers)]
            ax.plot(r["best_so_far"], i, m, color="tab:gray", ms=4, alpha=0.8)
        s = summary[summary["combo"] == combo].iloc[0]
        ax.plot([s.final_best_lo, s.final_best_hi], [i, i], "-", color="tab:blue", lw=3, alpha=0.5)
        ax.plot([s.final_best_iqm], [i], "|", color="tab:blue", ms=14, mew=2)
    ax.set_yticks(range(len(order)), order, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel(f"final best {metric} (dots: seeds; bar: IQM and 95% bootstrap band)")
    ax.grid(alpha=0.3, axis="x")
    return save(fig, path)


# ------------------------------------------------------------------------------ output


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
        c = curves(runs, optimum, goal)
        floor = max(tolerance / 10.0, 1e-6)
        title = (
            f"{spec.model} on {spec.data.name}: {spec.budget.num_samples} trials per run, "
            f"IQM over {runs['seed'].nunique()} paired seeds, {CONFIDENCE:.0%} bootstrap band"
        )
        plot_anytime(c, metric, tgt, floor, out / ANYTIME_PNG, title)
        plot_final(runs, summary, metric, out / FINAL_PNG)
    return runs, summary, info


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m harness.bench searchers",
        description="Search methods x early termination on one spec and budget, over paired seeds.",
        epilog=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("spec", help="search-space file, e.g. search_spaces/textcnn.yaml")
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
    return p


@exit_on_user_error
def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    methods = _split_list(args.methods, "methods", [m for m in METHODS if m != "nsga2"])
    ets = _split_list(args.early_terminate, "early-terminate", list(TERMINATORS))
    if args.seeds < 1:
        raise UserError(f"--seeds: must be >= 1, got {args.seeds}")
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
