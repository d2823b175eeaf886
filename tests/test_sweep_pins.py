"""What harness.sweep relies on inside Ray's OptunaSearch and Optuna, beyond their public API.

HonestOptunaSearch reads and writes OptunaSearch's private attributes, and the searcher and
the resume code reach into Optuna's study and trials. pyproject.toml pins the versions
this was written against (ray 2.60, optuna 5.0); an upgrade that moves one of these fails
here, naming it, instead of as an AttributeError in the middle of a sweep.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import optuna
import pytest

from harness import sweep  # noqa: F401 -- sets Ray's environment before ray's import

optuna.logging.set_verbosity(optuna.logging.WARNING)


def need(obj: Any, attr: str, where: str) -> Any:
    """obj.attr, or a failure that names what moved."""
    if not hasattr(obj, attr):
        pytest.fail(
            f"{where}.{attr} is gone: harness.sweep relies on it; check the new "
            "version's source and update harness/sweep/search.py (or resume.py) and the pins "
            "in pyproject.toml",
            pytrace=False,
        )
    return getattr(obj, attr)


def space(trial: Any) -> None:
    trial.suggest_float("x", 0.0, 1.0)


@pytest.fixture
def searcher(tmp_path: Path) -> Any:
    """A real OptunaSearch over a real SQLite study, as harness.sweep.search builds one."""
    from ray.tune.search.optuna import OptunaSearch

    storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'optuna.db'}")
    sampler = optuna.samplers.TPESampler(seed=0, constant_liar=True)
    s = OptunaSearch(
        space=space, metric="acc", mode="max", sampler=sampler, study_name="pins", storage=storage
    )
    s.set_search_properties(None, None, {})
    return s


def test_optuna_search_private_attributes(searcher: Any) -> None:
    where = "ray.tune.search.optuna.OptunaSearch"
    assert searcher.suggest("t1") is not None
    study = need(searcher, "_ot_study", where)
    assert isinstance(study, optuna.Study), f"{where}._ot_study is not an optuna.Study"
    trials = need(searcher, "_ot_trials", where)
    assert isinstance(trials, dict) and isinstance(trials.get("t1"), optuna.Trial), (
        f"{where}._ot_trials no longer maps Tune trial ids to optuna.Trial"
    )
    done = need(searcher, "_completed_trials", where)
    assert isinstance(done, set), f"{where}._completed_trials is not a set"
    sampler = need(searcher, "_sampler", where)
    assert isinstance(sampler, optuna.samplers.TPESampler), f"{where}._sampler is not ours"
    assert need(sampler, "_constant_liar", "optuna.samplers.TPESampler") is True

    # the base class's bookkeeping the subclass mirrors: a told trial joins _completed_trials
    searcher.on_trial_complete("t1", {"acc": 0.5})
    assert "t1" in searcher._completed_trials, (
        f"{where}.on_trial_complete no longer records the trial in _completed_trials"
    )


def test_optuna_study_and_trial_private_attributes(searcher: Any) -> None:
    searcher.suggest("t1")
    study, trial = searcher._ot_study, searcher._ot_trials["t1"]
    storage = need(study, "_storage", "optuna.Study")
    study_id = need(study, "_study_id", "optuna.Study")
    trial_id = need(trial, "_trial_id", "optuna.Trial")
    assert need(trial, "storage", "optuna.Trial") is storage
    for method in ("get_trial_id_from_study_id_trial_number", "get_trial", "set_trial_user_attr"):
        need(storage, method, "optuna.storages.BaseStorage")
    assert storage.get_trial_id_from_study_id_trial_number(study_id, trial.number) == trial_id

    # a rerun of an interrupted trial: the same Optuna trial, opened again by its storage id
    again = optuna.trial.Trial(study, trial_id)
    assert again.number == trial.number

    (frozen,) = study.get_trials(deepcopy=False)
    assert need(frozen, "_trial_id", "optuna.trial.FrozenTrial") == trial_id


def test_tune_storage_private_attributes() -> None:
    """A trial asks Ray's own storage check whether it can write checkpoints
    (harness.sweep.checkpoints.storage_reachable); the driver deletes an ended trial's
    checkpoints through its StorageContext (checkpoints.delete_trial)."""
    from ray.train._internal import session
    from ray.train._internal.storage import StorageContext

    need(session, "get_session", "ray.train._internal.session")
    need(StorageContext, "_check_validation_file", "ray.train._internal.storage.StorageContext")
    need(StorageContext, "trial_fs_path", "ray.train._internal.storage.StorageContext")


def test_enqueued_trials_carry_their_fixed_params(tmp_path: Any) -> None:
    # GroupSearch fixes a group's shape settings with study.enqueue_trial (public) and, for a
    # grid, counts the points still waiting in the queue by the "fixed_params" system
    # attribute Optuna stores them in (private: pinned here)
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'q.db'}")
    study.enqueue_trial({"nf": 8})
    (waiting,) = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.WAITING,))
    assert waiting.system_attrs.get("fixed_params") == {"nf": 8}, (
        "optuna no longer keeps an enqueued trial's values in system_attrs['fixed_params']"
    )
    trial = study.ask()
    assert trial.suggest_categorical("nf", [8, 16]) == 8
    assert trial.suggest_float("lr", 1e-3, 1e-2) > 0  # the rest is sampled


def test_ray_asha_private_attributes() -> None:
    """BaselineASHA (harness.sweep.search) reads these to keep the baseline running."""
    from ray.tune.schedulers import AsyncHyperBandScheduler

    where = "ray.tune.schedulers.AsyncHyperBandScheduler"
    sched = AsyncHyperBandScheduler(metric="acc", mode="max", max_t=4, grace_period=1,
                                    reduction_factor=3)  # fmt: skip
    for attr in ("_time_attr", "_max_t", "_num_stopped"):
        need(sched, attr, where)
