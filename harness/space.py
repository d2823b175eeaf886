"""Search-space parameters, in Weights & Biases sweep vocabulary, mapped onto Optuna.

A `ParamSpec` is one entry of a sweep file's `parameters` block, already checked by
harness.config. This module turns it into an Optuna distribution, samples it define-by-run
(the form Ray Tune's OptunaSearch takes as `space=`), and encodes list-valued choices as
strings, because Optuna's categorical choices must be None, bool, int, float or str.
No Ray import here: harness.sweep does the adapting.
"""

from __future__ import annotations

import copy
import functools
import json
import math
import statistics
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # optuna is imported where it is used: a recorder on a bare GPU box
    import optuna  # reads specs without it (harness.bench.record)
    from optuna.distributions import BaseDistribution

DISTRIBUTIONS = (
    "constant",
    "categorical",
    "uniform",
    "int_uniform",
    "q_uniform",
    "log_uniform_values",
    "q_log_uniform_values",
)
RANGES = ("uniform", "int_uniform", "q_uniform", "log_uniform_values", "q_log_uniform_values")
GRIDDABLE = ("constant", "categorical", "int_uniform", "q_uniform")  # finite value sets


def freeze(value: Any) -> Any:
    """Lists -> tuples, so a frozen ParamSpec holds immutable choices."""
    if isinstance(value, (list, tuple)):
        return tuple(freeze(v) for v in value)
    return value


def thaw(value: Any) -> Any:
    """Tuples -> fresh lists: what trials, Ray configs and JSON get."""
    if isinstance(value, (list, tuple)):
        return [thaw(v) for v in value]
    return value


def _tidy(x: float) -> float:
    """Drop float noise such as 0.30000000000000004 from stepped values."""
    return float(f"{x:.12g}")


def encode_choice(value: Any) -> Any:
    """A categorical choice as Optuna stores it: lists become JSON text like "[2, 3, 4]"."""
    if isinstance(value, (list, tuple)):
        return json.dumps(thaw(value))
    return value


def same_value(a: Any, b: Any) -> bool:
    """Equality that keeps True apart from 1 and compares lists with tuples."""
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(same_value(x, y) for x, y in zip(a, b))
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, (list, tuple)) or isinstance(b, (list, tuple)):
        return False
    return a == b


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


@dataclass(frozen=True)
class ParamSpec:
    """One searched (or constant) setting; field names and meaning follow W&B sweeps."""

    name: str
    distribution: str  # one of DISTRIBUTIONS
    value: Any = None  # constant
    values: tuple[Any, ...] = ()  # categorical choices (lists held as tuples)
    min: float | int | None = None
    max: float | int | None = None
    q: float | int | None = None  # step of q_uniform / q_log_uniform_values
    integer: bool = False  # sample whole numbers (the setting is an int, or int_uniform)

    @property
    def searched(self) -> bool:
        return self.distribution != "constant"

    def bounds(self) -> tuple[float, float]:
        """Smallest and largest value a trial can get.

        q_uniform follows W&B (round(x / q) * q for x in [min, max]); q_log_uniform_values
        keeps to the multiples of q inside [min, max] (W&B could round below min).
        """
        lo, hi, q = self.min, self.max, self.q
        if self.distribution == "q_uniform":
            lo, hi = q * round(lo / q), q * round(hi / q)
        elif self.distribution == "q_log_uniform_values":
            lo, hi = q * math.ceil(lo / q - 1e-9), q * math.floor(hi / q + 1e-9)
        if self.integer:
            return round(lo), round(hi)
        return _tidy(lo), _tidy(hi)

    def grid_values(self) -> list[Any]:
        """Every value, for method grid (finite distributions only)."""
        if self.distribution == "categorical":
            return [thaw(v) for v in self.values]
        if self.distribution == "constant":
            return [thaw(self.value)]
        lo, hi = self.bounds()
        if self.distribution == "int_uniform":
            return list(range(lo, hi + 1))
        if self.distribution == "q_uniform":
            n = round((hi - lo) / self.q)
            vals = [lo + k * self.q for k in range(n + 1)]
            return [round(v) for v in vals] if self.integer else [_tidy(v) for v in vals]
        raise ValueError(f"{self.name}: {self.distribution} has no finite grid")

    def optuna(self) -> BaseDistribution | None:
        """The Optuna distribution Optuna samples (None for a constant)."""
        from optuna.distributions import (
            CategoricalDistribution,
            FloatDistribution,
            IntDistribution,
        )

        d = self.distribution
        if d == "constant":
            return None
        if d == "categorical":
            return CategoricalDistribution([encode_choice(v) for v in self.values])
        lo, hi = self.bounds()
        if d in ("uniform", "int_uniform", "log_uniform_values"):
            log = d == "log_uniform_values"
            return (
                IntDistribution(lo, hi, log=log)
                if self.integer
                else FloatDistribution(lo, hi, log=log)
            )
        if d == "q_uniform":
            if self.integer:
                return IntDistribution(lo, hi, step=round(self.q))
            return FloatDistribution(lo, hi, step=self.q)
        # q_log_uniform_values: Optuna has no log scale with a step; sample on the log scale
        # and snap to a multiple of q afterwards (decode).
        if self.integer:
            return IntDistribution(math.ceil(self.min), math.floor(self.max), log=True)
        return FloatDistribution(self.min, self.max, log=True)

    def decode(self, raw: Any) -> Any:
        """Optuna's value -> the value a trial gets (lists back, steps snapped, ints as int)."""
        d = self.distribution
        if d == "constant":
            return thaw(copy.deepcopy(self.value))
        if d == "categorical":
            for v in self.values:
                if same_value(encode_choice(v), raw):
                    return thaw(v)
            if isinstance(raw, str) and raw.startswith("["):  # a study from an edited spec
                return json.loads(raw)
            return raw
        if d == "q_log_uniform_values":
            return self.snap(raw)
        if self.integer:
            return round(raw)
        return _tidy(float(raw))

    def snap(self, x: float) -> Any:
        """Nearest value this parameter can take (clipped to range, on the q grid, int if int)."""
        lo, hi = self.bounds()
        x = min(max(x, lo), hi)
        if self.distribution in ("q_uniform", "q_log_uniform_values"):
            x = min(max(self.q * round(x / self.q), lo), hi)
        return round(x) if self.integer else _tidy(float(x))

    def encode(self, value: Any) -> Any:
        """A trial value -> the form Optuna stores (for enqueue_trial / points_to_evaluate)."""
        if self.distribution == "categorical":
            return encode_choice(value)
        if self.integer and _is_number(value):
            return round(value)
        return value

    def nearest(self, value: Any) -> Any:
        """The value of this parameter closest to `value` (for the baseline trial).

        A choice equal to `value` if there is one; else, among numbers, the closest choice (or
        the range clipped and snapped); else the first choice.
        """
        d = self.distribution
        if d == "constant":
            return thaw(copy.deepcopy(self.value))
        if d == "categorical":
            for v in self.values:
                if same_value(v, value):
                    return thaw(v)
            numbers = [v for v in self.values if _is_number(v)]
            if _is_number(value) and len(numbers) == len(self.values):
                return min(numbers, key=lambda v: abs(v - value))
            return thaw(self.values[0])
        if not _is_number(value):
            return self.snap((self.bounds()[0] + self.bounds()[1]) / 2)
        return self.snap(value)

    def to_dict(self) -> dict[str, Any]:
        """W&B form with the distribution spelled out (for sweep.json)."""
        out: dict[str, Any] = {"distribution": self.distribution}
        if self.distribution == "constant":
            out["value"] = thaw(self.value)
        elif self.distribution == "categorical":
            out["values"] = [thaw(v) for v in self.values]
        else:
            out["min"], out["max"] = self.min, self.max
            if self.q is not None:
                out["q"] = self.q
        return out


def optuna_space(parameters: Mapping[str, ParamSpec]) -> dict[str, BaseDistribution]:
    """Searched parameters as Optuna distributions (define-and-run form)."""
    return {n: p.optuna() for n, p in parameters.items() if p.searched}


def suggest(trial: optuna.Trial, parameters: Mapping[str, ParamSpec]) -> dict[str, Any]:
    """Define-by-run sampling: ask `trial` for each searched parameter, return trial values.

    The returned dict holds every parameter (constants too) in trial form (lists, snapped
    steps); Ray's OptunaSearch lets it override what it captured from the suggest_* calls.
    """
    from optuna.distributions import CategoricalDistribution, IntDistribution

    out: dict[str, Any] = {}
    for name, p in parameters.items():
        dist = p.optuna()
        if dist is None:
            out[name] = p.decode(None)
            continue
        if isinstance(dist, CategoricalDistribution):
            raw = trial.suggest_categorical(name, dist.choices)
        elif isinstance(dist, IntDistribution):
            raw = trial.suggest_int(name, dist.low, dist.high, step=dist.step, log=dist.log)
        else:
            raw = trial.suggest_float(name, dist.low, dist.high, step=dist.step, log=dist.log)
        out[name] = p.decode(raw)
    return out


def define_by_run(parameters: Mapping[str, ParamSpec]) -> Callable[[optuna.Trial], dict[str, Any]]:
    """`suggest` bound to `parameters`: pass as OptunaSearch(space=...). Picklable."""
    return functools.partial(_suggest_kw, parameters=dict(parameters))


def _suggest_kw(trial: optuna.Trial, *, parameters: Mapping[str, ParamSpec]) -> dict[str, Any]:
    return suggest(trial, parameters)


def decode(parameters: Mapping[str, ParamSpec], raw: Mapping[str, Any]) -> dict[str, Any]:
    """Optuna trial params (e.g. from optuna.db) -> trial values, constants included."""
    return {n: p.decode(raw.get(n)) for n, p in parameters.items() if n in raw or not p.searched}


def encode(parameters: Mapping[str, ParamSpec], values: Mapping[str, Any]) -> dict[str, Any]:
    """Trial values -> Optuna's form, searched parameters only (constants are not Optuna's)."""
    return {n: p.encode(values[n]) for n, p in parameters.items() if p.searched and n in values}


def grid(parameters: Mapping[str, ParamSpec]) -> dict[str, list[Any]]:
    """optuna.samplers.GridSampler's search_space: every searched parameter's values, encoded."""
    return {n: [p.encode(v) for v in p.grid_values()] for n, p in parameters.items() if p.searched}


def grid_size(parameters: Mapping[str, ParamSpec]) -> int:
    return math.prod(len(v) for v in grid(parameters).values())


def _ask_tell_grid_sampler(search_space: dict[str, list[Any]], seed: int) -> Any:
    """GridSampler that works with ask/tell (as Ray's OptunaSearch drives it).

    GridSampler.after_trial calls study.stop() once the grid is exhausted, which raises
    RuntimeError outside study.optimize; the sweep's num_samples ends the search instead.
    """
    import optuna

    class _AskTellGridSampler(optuna.samplers.GridSampler):
        def after_trial(self, study, trial, state, values) -> None:
            try:
                super().after_trial(study, trial, state, values)
            except RuntimeError:
                pass

    return _AskTellGridSampler(search_space, seed=seed)


def startup_trials(num_samples: int) -> int:
    """Random trials before a model-based sampler takes over: a third of a small budget, <= 10."""
    return min(10, max(3, num_samples // 3))


def sampler(
    method: str,
    seed: int,
    parameters: Mapping[str, ParamSpec],
    num_samples: int,
    choice: Choice | None = None,
) -> optuna.samplers.BaseSampler:
    """The Optuna sampler behind a spec's `method` (validated by harness.config); for `auto`
    the one `choice` names, with its settings (see `choose`)."""
    import optuna

    samplers = optuna.samplers
    n0 = startup_trials(num_samples)
    if method == AUTO:
        return (choice or choose(parameters, num_samples)).sampler(seed, num_samples)
    if method == "tpe":
        # constant_liar: concurrent trials see the running ones as bad results, so they do
        # not all draw the same point (explicit: the default has changed between versions)
        return samplers.TPESampler(seed=seed, n_startup_trials=n0, constant_liar=True)
    if method == "random":
        return samplers.RandomSampler(seed=seed)
    if method == "grid":
        return _ask_tell_grid_sampler(grid(parameters), seed=seed)
    if method == "cmaes":
        return samplers.CmaEsSampler(seed=seed, n_startup_trials=n0)
    if method == "gp":
        return samplers.GPSampler(seed=seed, n_startup_trials=n0)
    if method == "qmc":
        with warnings.catch_warnings():  # "experimental since v3.0": noise for users
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return samplers.QMCSampler(seed=seed, scramble=True)
    if method == "nsga2":
        return samplers.NSGAIISampler(seed=seed, population_size=max(4, min(50, num_samples // 3)))
    raise ValueError(f"unknown method {method!r}")


# ------------------------------------------------------------------------ method: auto

AUTO = "auto"
# Budgets up to this many trials may use GPSampler. Its cost is not the limit on trials of
# seconds or more (measured, 1 CPU thread: 0.3-0.5 s per suggestion with 50-200 finished
# trials, against 0.01-0.02 s for TPE); the GP's edge is sample efficiency when trials are
# few, and past about a hundred TPE has the data it needs (a judgement, not measured here).
GP_MAX_TRIALS = 100
PRIOR_DRAWS = 4  # at most this many start-up trials drawn around the classic values
HISTORY = 500  # past this budget, auto's TPE sees only its best BEST and latest HISTORY trials
BEST = 25  # (harness.history: a suggestion's cost then stops growing with the sweep)


@dataclass(frozen=True)
class Choice:
    """What `method: auto` picked for one sweep, and why (sweep.json keeps it, so --resume
    builds the same sampler even when budget.num_samples changed)."""

    method: str  # the sampler: tpe | gp | nsga2 (each as `auto` sets it up)
    startup: int  # trials before the model takes over (baseline and prior draws included)
    prior_draws: int  # trials drawn around the classic values, run right after the baseline
    why: str  # one line for the console
    history: int = 0  # TPE sees its best and this many latest trials (harness.history); 0: all

    def sampler(self, seed: int, num_samples: int) -> optuna.samplers.BaseSampler:
        import optuna

        samplers = optuna.samplers
        if self.method == "gp":
            return samplers.GPSampler(seed=seed, n_startup_trials=self.startup)
        if self.method == "nsga2":
            return samplers.NSGAIISampler(seed=seed, population_size=self.startup)
        with warnings.catch_warnings():  # group is "experimental": noise for users
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            tpe = samplers.TPESampler(
                seed=seed, n_startup_trials=self.startup, multivariate=True, group=True,
                constant_liar=True,
            )  # fmt: skip
        if not self.history:
            return tpe
        from harness.history import BoundedHistory

        return BoundedHistory(tpe, self.history, BEST)

    def describe(self) -> str:
        settings = {
            "tpe": "TPE, multivariate + group, constant liar",
            "gp": "Gaussian process (GPSampler)",
            "nsga2": f"NSGA-II, population {self.startup}",
        }[self.method]
        if self.history:
            settings += f", over its best {BEST} and latest {self.history:,} trials"
        if self.method == "nsga2":
            return f"auto chose {settings}: {self.why}"
        start = f"{self.startup} start-up trials"
        if self.prior_draws:
            start += f" (the baseline and {self.prior_draws} drawn around the classic values)"
        return f"auto chose {settings}, {start}: {self.why}"

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method, "startup": self.startup,
                "prior_draws": self.prior_draws, "why": self.why, "history": self.history}  # fmt: skip

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Choice:
        return cls(str(d["method"]), int(d["startup"]), int(d["prior_draws"]), str(d["why"]),
                   int(d.get("history", 0)))  # fmt: skip


def continuous(p: ParamSpec) -> bool:
    """A numeric range with more than a handful of values (what a GP models well)."""
    if p.distribution not in RANGES:
        return False
    if p.distribution in ("int_uniform", "q_uniform"):
        lo, hi = p.bounds()
        return (hi - lo) / (p.q or 1) >= 8
    return True


def choose(
    parameters: Mapping[str, ParamSpec],
    num_samples: int,
    objectives: int = 1,
    pruning: bool = False,
    prior: bool = True,
) -> Choice:
    """`method: auto`'s rule (from the benchmark on THUCNews, re-derived on 50 replayed seeds
    of the THUCNews and built-in tables; see docs/benchmarks.md, "Replayed search benchmarks").

    - several objectives: NSGA-II (the only multi-objective sampler here);
    - a small budget (<= GP_MAX_TRIALS) over mostly continuous parameters, no scheduler
      stopping trials: GPSampler (it models only COMPLETE trials, so under ASHA, which
      prunes about two thirds, it would stay on its random start for most of the budget);
    - otherwise multivariate TPE with group decomposition and the constant liar (it learns
      from pruned trials' curves too); past HISTORY trials it sees only its best BEST and
      latest HISTORY trials (harness.history), so a suggestion's cost stops growing with
      the sweep.
    Start-up: a third of the budget (3-10, as startup_trials; replayed, half the budget up to
    20 was worse and a quarter the same); with the baseline on, up to PRIOR_DRAWS of the
    others are drawn around the classic values (prior_points) instead of at random (replayed
    on THUCNews they reach the baseline's score sooner than plain TPE at the same regret).
    """
    searched = [p for p in parameters.values() if p.searched]
    n_cont = sum(continuous(p) for p in searched)
    startup = startup_trials(num_samples)
    draws = max(0, min(startup, num_samples, PRIOR_DRAWS + 1) - 1) if prior else 0
    if objectives > 1:
        pop = max(4, min(50, num_samples // 3))
        return Choice("nsga2", pop, 0, f"{objectives} objectives (a Pareto front, not one best)")
    kind = f"{n_cont} of {len(searched)} parameters continuous"
    if num_samples <= GP_MAX_TRIALS and 2 * n_cont > len(searched) and not pruning:
        why = f"{kind}, {num_samples} trials, no early termination"
        return Choice("gp", startup, draws, why)
    if pruning:
        why = f"{kind}; early termination prunes trials, which TPE still learns from"
    elif num_samples > GP_MAX_TRIALS:
        why = f"{kind}; {num_samples} trials is past the GP's budget ({GP_MAX_TRIALS})"
    else:
        why = f"{kind} (categorical-heavy)"
    return Choice("tpe", startup, draws, why, HISTORY if num_samples > HISTORY else 0)


def prior_points(
    parameters: Mapping[str, ParamSpec], center: Mapping[str, Any], n: int, seed: int
) -> list[dict[str, Any]]:
    """`n` trial points drawn around `center` (the classic values, already in the space).

    A range: a Gaussian prior around the centre with a sixth of the range as sigma (on the
    log scale for log ranges), sampled as a Latin hypercube over its middle 90% (each of the
    n points in its own n-quantile, so they spread to both sides instead of clustering),
    mirrored at the range's edges and snapped; a choice: the centre's with probability 1/2, else another one uniformly. A point
    equal to the centre or to another point is drawn again, so each one is a new trial.
    Seeded: the same spec gives the same points.
    """
    rng = np.random.default_rng(seed)
    searched = {k: p for k, p in parameters.items() if p.searched}
    out: list[dict[str, Any]] = []
    seen = {_key(searched, center)}
    for _ in range(20):
        strata = {k: (rng.permutation(n) + rng.random(n)) / n for k in searched}
        for i in range(n):
            if len(out) >= n:
                break
            point = {k: _near(p, center[k], strata[k][i], rng) for k, p in searched.items()}
            if _key(searched, point) not in seen:
                seen.add(_key(searched, point))
                out.append(point)
    return out


def _key(parameters: Mapping[str, ParamSpec], point: Mapping[str, Any]) -> str:
    return json.dumps({k: encode_choice(point[k]) for k in parameters}, sort_keys=True)


def _near(p: ParamSpec, c: Any, u: float, rng: np.random.Generator) -> Any:
    """One value near the centre c; u in (0, 1) is the prior's quantile for a range."""
    if p.distribution == "categorical":
        others = [v for v in p.values if not same_value(v, c)]
        if not others or rng.random() < 0.5:
            return thaw(c)
        return thaw(others[int(rng.integers(len(others)))])
    z = statistics.NormalDist().inv_cdf(0.05 + 0.9 * u)  # the prior's middle 90%
    lo, hi = p.bounds()
    log = p.distribution in ("log_uniform_values", "q_log_uniform_values") and lo > 0
    f, inv = (math.log, math.exp) if log else (float, float)
    a, b = f(lo), f(hi)
    x = f(c) + z * (b - a) / 6
    x = a + abs(x - a) if x < a else b - abs(x - b) if x > b else x  # mirrored at the edges
    return p.snap(inv(min(max(x, a), b)))
