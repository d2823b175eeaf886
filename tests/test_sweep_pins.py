"""What harness.sweep relies on inside Ray and Optuna, beyond their public API.

The searcher drives Optuna through its public ask-and-tell API; the one private read left,
reopening an interrupted run's RUNNING trial (harness.sweep.search.running_trial), is
pinned here with Ray's private pieces the trials and the schedulers use. pyproject.toml pins
the versions this was written against (ray 2.60, optuna 5.0); an upgrade that moves one of
these fails here, naming it, instead of as an AttributeError in the middle of a sweep.
"""

from __future__ import annotations

from typing import Any

import optuna
import pytest

from harness import sweep  # noqa: F401 -- sets Ray's environment before ray's import
from harness.sweep.search import running_trial

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


def test_an_interrupted_trial_is_reopened_as_the_same_optuna_trial(tmp_path: Any) -> None:
    # a --resume reruns a RUNNING trial of the first run (another process asked it): it is
    # reported to and told as that trial, by its storage id (FrozenTrial._trial_id)
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    first = optuna.create_study(study_name="pins", storage=url)
    asked = first.ask()
    asked.suggest_float("x", 0.0, 1.0)
    asked.report(0.25, 1)
    study = optuna.load_study(study_name="pins", storage=url)  # a later process
    (frozen,) = study.get_trials(deepcopy=False)
    need(frozen, "_trial_id", "optuna.trial.FrozenTrial")
    again = running_trial(study, frozen)
    assert again.number == asked.number and again.params == {"x": frozen.params["x"]}
    again.report(0.5, 2)
    again.set_user_attr("status", "COMPLETED")
    study.tell(again, 0.5)
    (done,) = study.get_trials(deepcopy=False)
    assert done.state.name == "COMPLETE" and done.value == 0.5
    assert done.intermediate_values == {1: 0.25, 2: 0.5}
    assert done.user_attrs == {"status": "COMPLETED"}


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
    # The searcher fixes a group's shape settings with study.enqueue_trial (public) and, for a
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
    """BaselineASHA (harness.sweep.schedulers) reads these to keep the baseline running."""
    from ray.tune.schedulers import AsyncHyperBandScheduler

    where = "ray.tune.schedulers.AsyncHyperBandScheduler"
    sched = AsyncHyperBandScheduler(metric="acc", mode="max", max_t=4, grace_period=1,
                                    reduction_factor=3)  # fmt: skip
    for attr in ("_time_attr", "_max_t", "_num_stopped"):
        need(sched, attr, where)
