"""harness.history: TPE over a mirror of the study's best and latest trials."""

from __future__ import annotations

import random
import warnings

import optuna
from optuna.trial import TrialState

from harness.history import BoundedHistory

optuna.logging.set_verbosity(optuna.logging.WARNING)


def _tpe(seed: int = 0) -> optuna.samplers.TPESampler:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.samplers.TPESampler(
            seed=seed, n_startup_trials=5, multivariate=True, group=True, constant_liar=True
        )


def _suggest(trial: optuna.Trial) -> float:
    """A small space like the smoke sweep's, and a score with one best corner."""
    lr = trial.suggest_float("learning_rate", 1e-4, 1e-1, log=True)
    dropout = trial.suggest_float("dropout", 0.0, 0.5)
    filters = trial.suggest_categorical("num_filters", [8, 16, 32])
    return -abs(lr - 0.01) * 10 - dropout + filters / 32


def test_one_trial_at_a_time_the_mirror_gives_tpes_own_suggestions():
    plain = optuna.create_study(direction="maximize", sampler=_tpe())
    bounded = optuna.create_study(
        direction="maximize", sampler=BoundedHistory(_tpe(), history=1000, best=25)
    )
    for _ in range(40):
        for study in (plain, bounded):
            t = study.ask()
            study.tell(t, _suggest(t))
    assert [t.params for t in bounded.trials] == [t.params for t in plain.trials]


def test_the_mirror_keeps_the_best_and_the_latest_trials_only():
    sampler = BoundedHistory(_tpe(), history=20, best=5)
    study = optuna.create_study(direction="maximize", sampler=sampler)
    rng = random.Random(0)
    for _ in range(150):
        t = study.ask()
        _suggest(t)
        study.tell(t, rng.random())  # distinct values: the best are unambiguous
    seen = {t.value for t in sampler.trials()}
    done = study.get_trials(states=(TrialState.COMPLETE,))
    best = sorted((t.value for t in done), reverse=True)[:5]
    latest = [t.value for t in done[-20:]]
    assert set(best) <= seen and set(latest) <= seen
    assert len(seen) <= 20 + 5 + 20 // 4  # trimmed every history // 4 ends


def test_running_trials_are_mirrored_and_end_there_as_they_end(tmp_path):
    sampler = BoundedHistory(_tpe(), history=1000, best=25)
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"  # as a sweep's study
    study = optuna.create_study(direction="maximize", sampler=sampler, storage=storage)
    for _ in range(6):  # past the start-up trials
        t = study.ask()
        study.tell(t, _suggest(t))
    first = study.ask()
    _suggest(first)
    second = study.ask()
    _suggest(second)  # sampled while `first` runs: the constant liar sees it
    running = [t for t in sampler.trials() if t.state == TrialState.RUNNING]
    assert first.params in [t.params for t in running]
    first.report(0.3, step=1)
    study.tell(first, state=TrialState.PRUNED)
    study.tell(second, 0.9)
    ended = {t.state: t for t in sampler.trials()[-2:]}
    assert ended[TrialState.PRUNED].params == first.params
    assert ended[TrialState.PRUNED].intermediate_values == {1: 0.3}
    assert ended[TrialState.COMPLETE].params == second.params
    assert ended[TrialState.COMPLETE].value == 0.9
    assert sum(t.state == TrialState.RUNNING for t in sampler.trials()) == 0
