"""Population based training: Optuna draws the population, Ray's PBT evolves it.

Ray's PopulationBasedTraining takes no search algorithm (it raises for any Searcher), so an
`early_terminate: {type: pbt}` sweep combines the two this way:

- Before Tune starts, the sweep's Optuna sampler draws the whole population,
  `budget.num_samples` parameter sets (the baseline first with `baseline: true`), through the
  same OptunaSearcher a normal sweep uses. They are all drawn before any result exists,
  so TPE and GP fall back to their independent start-up draws, QMC and grid keep their
  sequence.
- Tune runs that fixed population (a grid over the drawn configs). Every
  `perturbation_interval` reports, after `burn_in_period`, PBT makes each trial in the bottom
  `quantile_fraction` continue from the latest checkpoint of one in the top (weights,
  optimizer, best weights, counters, random streams: harness.trainer.Loop.state_dict) with
  that trial's parameters, the `mutations` perturbed: x0.8 or x1.2 (a choice list: the
  neighbouring value), or with `resample_probability` drawn afresh; always clipped to the
  parameter's own range. Only fusible settings may be perturbed (the learning rate, dropout,
  ...): the cloned weights fix every shape.
- A driver callback (PopulationRecorder) hands every result and each trial's end to the
  searcher, so each Optuna trial records its reports as intermediate values and its end
  (COMPLETE with the objective, FAIL, ...) exactly as in any other sweep.

What Optuna sees: each trial's *initial* parameters, as drawn, and the objective the trial
finally reached, after PBT may have replaced its weights and parameters along the way. The
parameters a trial ended with are in trials.parquet (`param.*`) and in the Optuna trial's
user attribute `pbt_params`; Ray logs every exploit to pbt_global.txt and
pbt_policy_<trial>.txt in its experiment folder. budget.max_concurrent does not limit a
PBT population: all of it is created at once and Tune time-multiplexes it on the resources.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from ray import tune
from ray.tune.schedulers import PopulationBasedTraining

from harness.config import SweepSpec
from harness.space import ParamSpec, thaw
from harness.sweep.keys import FINAL, NUMBER, PARAMS, RESTORE
from harness.sweep.search import OptunaSearcher

log = logging.getLogger(__name__)

_PLACEHOLDER = "pbt-{}"  # the searcher's name for the population member drawn n-th


def _domain(p: ParamSpec) -> Any:
    """The parameter's own range as PBT's resampling distribution (a choice list: PBT steps
    to a neighbouring choice; a range: x0.8 or x1.2, snapped back into it by `clip`)."""
    if p.distribution == "categorical":
        return [thaw(v) for v in p.values]
    lo, hi = p.bounds()
    if p.distribution in ("log_uniform_values", "q_log_uniform_values"):
        return tune.loguniform(lo, hi)
    if p.integer:
        return tune.randint(lo, hi + 1)
    return tune.uniform(lo, hi)


def pbt_scheduler(spec: SweepSpec) -> PopulationBasedTraining:
    """Ray's PBT over the spec's `mutations`, counting time in reports."""
    et = spec.early_terminate
    params = {name: spec.parameters[name] for name in et.mutations}

    def clip(config: dict[str, Any]) -> dict[str, Any]:
        """A x1.2 step may leave the range (a dropout above 1): back to the nearest value."""
        for name, p in params.items():
            config[PARAMS][name] = p.nearest(config[PARAMS][name])
        return config

    return PopulationBasedTraining(
        time_attr="report",  # the final result repeats the last report: never a perturbation
        metric=spec.metric.name,
        mode=spec.metric.mode,
        perturbation_interval=et.perturbation_interval,
        burn_in_period=et.burn_in_period,
        hyperparam_mutations={PARAMS: {name: _domain(p) for name, p in params.items()}},
        quantile_fraction=et.quantile_fraction,
        resample_probability=et.resample_probability,
        custom_explore_fn=clip,
        require_attrs=False,  # the final result of a FAILED trial has no objective
        synch=et.synch,
    )


class Population:
    """The whole population, drawn by the searcher before Tune starts (the reruns of a
    --resume first), as Tune's param_space: a grid over the Optuna numbers, each giving its
    drawn parameters (and checkpoint to go on from); `recorder` reports back to the searcher."""

    def __init__(self, searcher: OptunaSearcher, size: int) -> None:
        drawn: dict[int, dict[str, Any]] = {}
        names: dict[int, str] = {}  # number -> the placeholder it was drawn as
        for i in range(size):
            config = searcher.suggest(_PLACEHOLDER.format(i))
            if not isinstance(config, dict):  # FINISHED (a spent budget), or halted
                break
            drawn[config[NUMBER]] = config
            names[config[NUMBER]] = _PLACEHOLDER.format(i)
        self.size = len(drawn)
        self.param_space = {
            NUMBER: tune.grid_search(list(drawn)),
            PARAMS: tune.sample_from(lambda config: drawn[config[NUMBER]][PARAMS]),
            RESTORE: tune.sample_from(lambda config: drawn[config[NUMBER]].get(RESTORE)),
        }
        self.recorder = PopulationRecorder(searcher, names)


class PopulationRecorder(tune.Callback):
    """Tells the searcher what Tune's searcher slot would have: each trial's results and
    end, under the placeholder name its Optuna trial was drawn with."""

    def __init__(self, searcher: OptunaSearcher, by_number: Mapping[int, str]) -> None:
        self.searcher = searcher
        self.names: dict[str, str] = {}  # Ray trial id -> placeholder
        self._by_number = dict(by_number)  # number -> placeholder
        self._recorded: set[str] = set()  # placeholders whose pbt_params are written

    def _name(self, trial: Any) -> str | None:
        name = self.names.get(trial.trial_id)
        if name is None:  # first sight: the config still holds the number it was drawn with
            name = self._by_number.get(trial.config.get(NUMBER))
            if name is None:
                return None
            self.names[trial.trial_id] = name
            ot_trial = self.searcher.trial(name)
            if ot_trial is not None:
                ot_trial.set_user_attr("ray_trial_id", trial.trial_id)
        return name

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._name(trial)

    def on_trial_result(
        self, iteration: int, trials: list, trial: Any, result: dict, **info: Any
    ) -> None:
        name = self._name(trial)
        if name is not None:
            if result.get(FINAL):  # the searcher tells Optuna the end at its next call
                self._ended_with(trial, name)
            self.searcher.on_trial_result(name, result)

    def _ended_with(self, trial: Any, name: str) -> None:
        """The parameters the trial ended with, on its Optuna trial before its end is told."""
        ot_trial = self.searcher.trial(name)
        if ot_trial is not None and name not in self._recorded:
            self._recorded.add(name)
            params: Mapping[str, Any] = trial.config.get(PARAMS, {})
            ot_trial.set_user_attr("pbt_params", {k: v for k, v in params.items()})

    def _finish(self, trial: Any, error: bool) -> None:
        name = self._name(trial)
        if name is None:
            return
        self._ended_with(trial, name)
        self.searcher.on_trial_complete(name, trial.last_result or {}, error=error)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._finish(trial, error=False)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._finish(trial, error=True)
