"""The spec's side of early termination: which schedulers a sweep file may name, their keys,
how they are checked, and the rules that turn them into numbers (a first rung's report,
a trial's cap). Ray's side, the scheduler objects themselves, is harness.sweep.schedulers,
which imports Ray; this module must not (specs are read without Ray, e.g. harness.bench).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from harness.config.problems import Problems, check_int, check_mapping, check_number, unknown
from harness.errors import did_you_mean
from harness.space import ParamSpec
from harness.trialconfig import fusible_names

# early_terminate keys each scheduler uses (units: reports, i.e. dev evaluations)
TERMINATORS: dict[str, tuple[str, ...]] = {
    "asha": ("grace_period", "reduction_factor", "max_t"),
    "hyperband": ("reduction_factor", "max_t"),
    "hyperband_sync": ("reduction_factor", "max_t"),
    "pbt": ("perturbation_interval", "burn_in_period", "quantile_fraction",
            "resample_probability", "mutations", "synch"),
    "median": ("grace_period",),
    "none": (),
}  # fmt: skip
PBT_MUTATIONS = ("learning_rate", "dropout")  # what pbt perturbs unless `mutations` says
WANDB_EARLY_TERMINATE = {"min_iter": "grace_period", "max_iter": "max_t", "eta": "reduction_factor"}
SYNCED = ("hyperband_sync", "pbt")  # pause and clone single trials: no groups under them


@dataclass(frozen=True)
class EarlyTerminate:
    """Which scheduler stops poor trials early; grace_period and max_t count reports."""

    type: str = "none"  # asha | hyperband | hyperband_sync | pbt | median | none
    grace_period: int | None = None  # None: first_rung's rule
    reduction_factor: float = 3
    max_t: int | None = None  # None: the longest trial's report count (SweepSpec.max_t)
    # pbt: every perturbation_interval reports (after burn_in_period) the bottom
    # quantile_fraction of trials clone the top's checkpoint and perturb `mutations`
    perturbation_interval: int = 2
    burn_in_period: int = 0
    quantile_fraction: float = 0.25
    resample_probability: float = 0.25
    mutations: tuple[str, ...] = ()  # searched fusible settings; () before checking fills it
    synch: bool = False

    @property
    def trial_cap(self) -> int | None:
        """Reports a trial may make at most: an explicit max_t under asha or hyperband, which
        is then each trial's budget (it ends COMPLETED there, not stopped), else None."""
        return self.max_t if self.type in ("asha", "hyperband") else None

    def first_rung(self, max_t: int) -> int:
        """grace_period, or the rule: ASHA's first rung at a ninth of the longest trial
        (max_t / reduction_factor**2, rounded up, at least 1), so two rounds of cuts follow
        and no trial is judged before the classic dev curve has flattened (measured on
        THUCNews; see docs/benchmarks.md, "Search setups"). Rounded up, not down: replayed on the
        built-in table (max_t 11), a first rung at report 1 left auto's final regret at 64
        trials at 0.0080, at report 2 0.0047 (docs/benchmarks.md, "Replayed search benchmarks")."""
        if self.grace_period is not None:
            return self.grace_period
        return max(1, math.ceil(max_t / self.reduction_factor**2 - 1e-9))

    def warnings(self, most_reports: int) -> list[str]:
        """A grace period the longest trial never passes: legal, but nothing is stopped."""
        if self.type not in ("asha", "median") or self.grace_period is None:
            return []  # the rule fits the trials
        if self.grace_period < most_reports:
            return []
        line = (
            f"early_terminate.grace_period {self.grace_period} >= the {most_reports} report(s) "
            f"the longest trial makes: {self.type} can stop no trial early (lower grace_period, "
            "or report more often with a smaller eval_every)"
        )
        return [line]

    def to_dict(self) -> dict[str, Any]:
        def plain(v: Any) -> Any:
            return list(v) if isinstance(v, tuple) else v

        return {"type": self.type, **{k: plain(getattr(self, k)) for k in TERMINATORS[self.type]}}


def check_early_terminate(raw: Any, method: Any, p: Problems) -> EarlyTerminate | None:
    """The `early_terminate` section (pbt's mutations are checked with the parameters)."""
    raw = check_mapping(p, "early_terminate", raw,
                        "{type: asha, grace_period: 1, reduction_factor: 3}")  # fmt: skip
    if raw is None:
        return None
    if not raw:
        return EarlyTerminate()
    kind = raw.get("type")
    if kind is None:
        p.add("early_terminate.type", f"required: one of {' | '.join(TERMINATORS)}")
        return None
    if kind not in TERMINATORS:
        hint = did_you_mean(str(kind), TERMINATORS)
        p.add("early_terminate.type", f"must be one of {' | '.join(TERMINATORS)}{hint}", kind)
        return None
    if method == "nsga2" and kind != "none":
        p.add("early_terminate.type", "stopping on one metric biases a multi-objective (nsga2)"
              " search; use none", kind)  # fmt: skip
    every = {k for keys in TERMINATORS.values() for k in keys}
    hints = {k: f"W&B's {k} is {v} here" for k, v in WANDB_EARLY_TERMINATE.items()}
    values: dict[str, Any] = {}
    n_before = len(p.items)
    for key, value in raw.items():
        path = f"early_terminate.{key}"
        if key == "type":
            continue
        if key not in every:
            unknown(p, path, key, every, hints)
        elif key not in TERMINATORS[kind]:
            p.add(path, f"not used by {kind}", value)
        else:
            values[key] = _setting(p, path, key, value)
    if len(p.items) > n_before:
        return None
    et = EarlyTerminate(type=kind, **values)
    if et.max_t is not None and et.grace_period is not None and et.max_t < et.grace_period:
        p.add("early_terminate.max_t", f"must be >= grace_period ({et.grace_period})", et.max_t)
        return None
    return et


def _setting(p: Problems, path: str, key: str, value: Any) -> Any:
    """One scheduler setting, checked by its kind."""
    if key == "reduction_factor":
        return check_number(p, path, value, gt=1)
    if key in ("quantile_fraction", "resample_probability"):
        top = 0.5 if key == "quantile_fraction" else 1
        x = check_number(p, path, value, ge=0)
        if x is not None and x > top:
            p.add(path, f"must be in [0, {top:g}]", value)
        return x
    if key == "burn_in_period":
        return check_int(p, path, value, lo=0)
    if key == "synch":
        if not isinstance(value, bool):
            p.add(path, "expected true or false", value)
        return value
    if key == "mutations":
        if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
            p.add(path, "expected a non-empty list of parameter names", value)
            return None
        return tuple(value)
    return None if value is None else check_int(p, path, value, lo=1)


def check_pbt_mutations(
    et: EarlyTerminate, parameters: dict[str, ParamSpec], model: str, p: Problems
) -> EarlyTerminate | None:
    """PBT perturbs searched settings that a checkpoint carries over: fusible ones (learning
    rate, dropout, ...); a shape setting would not fit the cloned weights."""
    fusible = fusible_names(model)
    names = et.mutations or tuple(n for n in PBT_MUTATIONS if n in parameters)
    path = "early_terminate.mutations"
    if not names:
        p.add(path, f"pbt perturbs searched parameters; search {' or '.join(PBT_MUTATIONS)} "
              "or name the ones to perturb")  # fmt: skip
        return None
    for name in names:
        if name not in parameters or not parameters[name].searched:
            p.add(path, f"{name} is not a searched parameter{did_you_mean(name, parameters)}", name)
        elif name not in fusible:
            p.add(path, f"{name} fixes the weights' shapes or the batch order, so a cloned "
                  f"checkpoint cannot take another value; perturb one of: "
                  f"{', '.join(sorted(n for n in fusible if n in parameters))}", name)  # fmt: skip
    return dataclasses.replace(et, mutations=tuple(names))
