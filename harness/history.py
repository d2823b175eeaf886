"""A sampler's bounded history: the best trials and the most recent ones.

Why: Optuna's TPE reads every finished trial at every suggestion (its split into the good and
the rest, its Parzen estimators, the group decomposition), so the driver's time per trial
grows with the trials so far: alone on an in-memory study of the smoke space, `method:
auto`'s TPE spent 2.5, 12.7 and 51 ms of CPU per trial at 100, 1,000 and 5,000 trials. For a
budget past harness.space.HISTORY (500) trials, `auto` runs its TPE on a mirror study that
holds only

- the `best` (space.BEST, 25) best COMPLETE trials (TPE's good group is its best
  min(10%, 25) complete trials, so it stays what it would be over every trial),
- the `history` (500) trials that ended last (TPE already weighs older trials less:
  Optuna's default weights ramp from 1/n for the oldest up to 1 for the newest 25), and
- the trials running now (TPE's constant liar counts them as bad results).

The mirror is kept with Optuna's public API (`create_trial`, the storage's
`create_new_trial`, `set_trial_intermediate_value` and `set_trial_state_values`): each trial
that ends is added once, and every `history` // 4 ends the mirror is rebuilt from itself, so a
suggestion costs about what TPE costs at `history` trials whatever the sweep's size (see
docs/benchmarks.md, "Thousands of trials"). A sweep up to `history` trials never trims, and with
one trial at a time the mirror is the study itself, trial for trial.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import optuna
from optuna.distributions import BaseDistribution
from optuna.trial import FrozenTrial, TrialState

_ENDED = (TrialState.COMPLETE, TrialState.PRUNED)
_MIRROR = "mirror"


class BoundedHistory(optuna.samplers.BaseSampler):
    """`base` (TPE) sampling from a mirror of the study's best and latest trials."""

    def __init__(self, base: optuna.samplers.BaseSampler, history: int, best: int) -> None:
        self.base = base
        self.history = history
        self.best = best
        self._storage: optuna.storages.InMemoryStorage | None = None  # the mirror's
        self._directions: list[optuna.study.StudyDirection] = []
        # the study's running trials in the mirror: number -> the mirror's trial id
        self._running: dict[int, int] = {}
        self._ended = 0  # trials ended since the mirror was last built
        self._viewed: int | None = None  # the trial whose view is current (read once per trial)

    def reseed_rng(self) -> None:
        self.base.reseed_rng()

    def trials(self) -> list[FrozenTrial]:
        """The mirror's trials (what the base sampler sees), oldest first."""
        return [] if self._storage is None else self._mirror().get_trials(deepcopy=False)

    def _mirror(self) -> optuna.Study:
        """A Study over the mirror's storage, new at each call: a Study caches its trials
        between its own ask and tell, and nobody asks or tells the mirror."""
        return optuna.Study(study_name=_MIRROR, storage=self._storage, sampler=self.base)

    def infer_relative_search_space(
        self, study: optuna.Study, trial: FrozenTrial
    ) -> dict[str, BaseDistribution]:
        return self.base.infer_relative_search_space(*self._view(study, trial))

    def sample_relative(
        self, study: optuna.Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        return self.base.sample_relative(*self._view(study, trial), search_space)

    def sample_independent(
        self,
        study: optuna.Study,
        trial: FrozenTrial,
        param_name: str,
        param_distribution: BaseDistribution,
    ) -> Any:
        view, own = self._view(study, trial)
        return self.base.sample_independent(view, own, param_name, param_distribution)

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self.base.before_trial(study, trial)

    def after_trial(
        self,
        study: optuna.Study,
        trial: FrozenTrial,
        state: TrialState,
        values: Sequence[float] | None,
    ) -> None:
        """A trial ends (Optuna stores its state right after): into the mirror, once."""
        self.base.after_trial(study, trial, state, values)
        if self._storage is None:  # not built yet: its first build reads the study
            return
        tid = self._running.pop(trial.number, None)
        if tid is not None:  # mirrored while it ran: it ends there too
            self._update(tid, trial)
            for step, value in trial.intermediate_values.items():
                self._storage.set_trial_intermediate_value(tid, step, value)
            self._storage.set_trial_state_values(tid, state, values)
        elif state in _ENDED:
            self._add(_copy(trial, state, values))
        if state in _ENDED:
            self._ended += 1
            if self._ended >= max(1, self.history // 4):
                self._build(self.trials())

    def _view(self, study: optuna.Study, trial: FrozenTrial) -> tuple[optuna.Study, FrozenTrial]:
        """The mirror with the trials running now, and `trial` (running) as the mirror has
        it: TPE's constant liar leaves the sampled trial out by its number and shares its
        relative sample through that trial's system attributes."""
        if self._storage is None:
            self._directions = list(study.directions)
            self._build(study.get_trials(deepcopy=False, states=_ENDED))
        assert self._storage is not None
        if trial.number != self._viewed:  # a trial's suggestions come in one go: read once
            for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
                tid = self._running.get(t.number)
                if tid is None:
                    self._running[t.number] = self._add(_copy(t, TrialState.RUNNING, None))
                else:
                    self._update(tid, t)
            self._viewed = trial.number
        return self._mirror(), self._storage.get_trial(self._running[trial.number])

    def _update(self, tid: int, trial: FrozenTrial) -> None:
        """Parameters `trial` has been given since the mirror copied it."""
        assert self._storage is not None
        have = self._storage.get_trial(tid).params
        for name, value in trial.params.items():
            if name not in have:
                dist = trial.distributions[name]
                self._storage.set_trial_param(tid, name, dist.to_internal_repr(value), dist)

    def _build(self, trials: Sequence[FrozenTrial]) -> None:
        """A new mirror: the `best` best complete trials, the latest `history` ended ones,
        oldest first (the running ones join it at the next suggestion)."""
        ended = [t for t in trials if t.state in _ENDED]
        latest = ended[-self.history :]
        kept = {id(t) for t in latest}
        best = [t for t in self._best(ended) if id(t) not in kept]
        self._storage = optuna.storages.InMemoryStorage()
        self._storage.create_new_study(self._directions, _MIRROR)
        for t in [*best, *latest]:
            self._add(t)
        self._running = {}
        self._ended = 0
        self._viewed = None

    def _best(self, ended: Sequence[FrozenTrial]) -> list[FrozenTrial]:
        """The best complete trials, in the order they ended (single objective only: more
        objectives have no one best)."""
        if len(self._directions) != 1:
            return []
        done = [(i, t) for i, t in enumerate(ended) if t.state == TrialState.COMPLETE]
        sign = -1.0 if self._directions[0] == optuna.study.StudyDirection.MAXIMIZE else 1.0
        done.sort(key=lambda it: (sign * it[1].values[0], it[0]))
        return [t for _, t in sorted(done[: self.best], key=lambda it: it[0])]

    def _add(self, trial: FrozenTrial) -> int:
        assert self._storage is not None
        study_id = self._storage.get_study_id_from_name(_MIRROR)
        return self._storage.create_new_trial(study_id, template_trial=trial)


def _copy(trial: FrozenTrial, state: TrialState, values: Sequence[float] | None) -> FrozenTrial:
    """`trial` as `state` with `values`: parameters, distributions and reports."""
    return optuna.trial.create_trial(
        state=state, values=None if values is None else list(values), params=trial.params,
        distributions=trial.distributions, intermediate_values=trial.intermediate_values,
    )  # fmt: skip
