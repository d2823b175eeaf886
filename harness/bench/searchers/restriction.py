"""The restriction of a search to a table's recorded configurations (as Syne Tune restricts
its searchers on tabulated blackboxes): whatever point the real Optuna sampler proposes moves
to the nearest recorded configuration not yet tried, so every suggestion has a recorded
answer. Distance: the unit cube of each searched range (log scale for log ranges) plus 1 per
differing choice. `bench searchers --replay` and a real sweep (harness.sweep.run(...,
restrict=)) take the same restriction, so a test can hold them side by side.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import optuna

from harness.bench.blackbox import Blackbox
from harness.errors import UserError
from harness.space import ParamSpec


def _unit(p: ParamSpec, v: Any) -> float | None:
    """A range value as its place in [0, 1] (None: a choice, compared by equality)."""
    if p.distribution == "categorical":
        return None
    lo, hi = p.bounds()
    if p.distribution in ("log_uniform_values", "q_log_uniform_values") and lo > 0:
        lo, hi, v = math.log(lo), math.log(hi), math.log(max(float(v), 1e-300))
    return 0.0 if hi == lo else (float(v) - lo) / (hi - lo)


class Restriction:
    """The recorded configurations a restricted search may propose (see the module doc)."""

    def __init__(self, table: Blackbox) -> None:
        self.table = table
        self.parameters = {n: p for n, p in table.spec.parameters.items() if p.searched}
        self.names = list(self.parameters)
        encoded = [{n: self.parameters[n].encode(c[n]) for n in self.names} for c in table.configs]
        self.encoded = encoded
        ranges = [n for n in self.names if self.parameters[n].distribution != "categorical"]
        self._ranges = ranges
        self._unit = np.array(
            [[_unit(self.parameters[n], c[n]) for n in ranges] for c in table.configs], dtype=float
        ).reshape(len(encoded), len(ranges))
        self._choices = [n for n in self.names if n not in ranges]
        self._keys = [self._key(e) for e in encoded]

    def _key(self, encoded: Mapping[str, Any]) -> str:
        return json.dumps({n: encoded[n] for n in self.names}, sort_keys=True, default=str)

    def nearest(
        self,
        point: Mapping[str, Any],
        used: set[str] = frozenset(),  # type: ignore[assignment]
        fixed: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """The recorded configuration (Optuna's encoded form) closest to `point` among those
        not `used` and agreeing with `fixed`; the closest used one when all are used."""
        fixed = fixed or {}
        ok = np.array([all(e[n] == v for n, v in fixed.items() if n in e) for e in self.encoded])
        if not ok.any():
            raise UserError(f"no recorded configuration has {dict(fixed)}")
        x = np.array(
            [_unit(self.parameters[n], point[n]) if n in point else np.nan for n in self._ranges],
            dtype=float,
        )
        d = np.nansum((self._unit - x) ** 2, axis=1) if len(self._ranges) else np.zeros(len(ok))
        for n in self._choices:
            if n in point:
                d = d + np.array([e[n] != point[n] for e in self.encoded], dtype=float)
        fresh = ok & np.array([k not in used for k in self._keys])
        pool = fresh if fresh.any() else ok
        i = int(np.flatnonzero(pool)[np.argmin(d[pool])])
        return dict(self.encoded[i])

    def used(self, study: optuna.Study) -> set[str]:
        """Configurations the study's trials hold or wait to run (enqueued)."""
        out = set()
        for t in study.get_trials(deepcopy=False):
            p = t.params if len(t.params) == len(self.names) else t.system_attrs.get("fixed_params")
            if p and all(n in p for n in self.names):
                out.add(self._key(p))
        return out

    def points(self, points: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """Points to enqueue (the baseline, auto's draws around it), each moved to the nearest
        recorded configuration, all different."""
        used: set[str] = set()
        out = []
        for p in points:
            q = self.nearest(p, used)
            used.add(self._key(q))
            out.append(q)
        return out

    def sampler(self, base: optuna.samplers.BaseSampler) -> optuna.samplers.BaseSampler:
        """`base` (the real Optuna sampler) with its proposals moved onto the table."""
        return RestrictedSampler(base, self)


class RestrictedSampler(optuna.samplers.BaseSampler):
    """Every trial's whole configuration is sampled relatively: the base sampler proposes
    (its relative sample for its own relative space, its independent sample for the
    rest, exactly as Optuna would ask it), and the proposal moves to the nearest
    recorded configuration. Enqueued values (a group's shape) stay fixed."""

    def __init__(self, base: optuna.samplers.BaseSampler, restriction: Restriction) -> None:
        self.base = base
        self.restriction = restriction
        self.space = {n: p.optuna() for n, p in restriction.parameters.items()}

    def reseed_rng(self) -> None:
        self.base.reseed_rng()

    def before_trial(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        self.base.before_trial(study, trial)

    def after_trial(self, study, trial, state, values) -> None:
        self.base.after_trial(study, trial, state, values)

    def infer_relative_search_space(self, study, trial) -> dict:
        return dict(self.space)

    def sample_relative(self, study, trial, search_space) -> dict:
        fixed = trial.system_attrs.get("fixed_params") or {}
        inner = self.base.infer_relative_search_space(study, trial)
        proposal = dict(self.base.sample_relative(study, trial, inner)) if inner else {}
        proposal.update(fixed)
        for name, dist in self.space.items():
            if name not in proposal:
                proposal[name] = self.base.sample_independent(study, trial, name, dist)
        used = self.restriction.used(study)
        return self.restriction.nearest(proposal, used, fixed)

    def sample_independent(self, study, trial, param_name, param_distribution):
        return self.base.sample_independent(study, trial, param_name, param_distribution)
