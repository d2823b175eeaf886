"""The statistics a search bench reports: IQM over seeds with bootstrap bands, best so far,
regret and time to a target (see the package docstring for what each means)."""

from __future__ import annotations

import math

import numpy as np
from scipy import stats

BOOTSTRAP_SAMPLES = 2000
CONFIDENCE = 0.95


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
