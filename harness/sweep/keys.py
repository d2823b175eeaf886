"""Keys a trial's results carry besides the metrics (never in schema.METRIC_KEYS).

The trial (trial.py) sets them, the searcher (search.py) and the callback (callback.py)
read them: one place for the names both sides of the object store must agree on.
"""

from collections.abc import Mapping
from typing import Any

FINAL = "harness_final"  # an entry: its member ended (how: STATUS); a result: the trial's last
SUMMARY = "harness_summary"  # TrainSummary.to_dict() of a finished trial
STATUS = "harness_status"  # COMPLETED, DIVERGED, PRUNED or FAILED
ERROR = "harness_error"  # why a trial failed or diverged, and device notes
INFO = "harness_info"  # node / device / start time, sent with a run's first result
NUMBER = "harness_number"  # Optuna trial number, put into each trial's config by the searcher
PARAMS = "params"  # the sampled parameters in each trial's config
RESTORE = "harness_restore"  # --resume: {path, trial_id, iteration} of the checkpoint to go on from
# every Ray trial trains a group of Optuna trials: one when unfused (its config holds PARAMS and
# NUMBER, its row id is the Ray trial id), several in fused sweeps (resources.fuse > 1)
MEMBERS = "harness_members"  # a group's config: [{member, number, params}] from the searcher
GROUP = "harness_group"  # every result: one entry per member report or member end
MEMBER = "harness_member"  # an entry's member index within its group


def member_id(group_id: str, member: int) -> str:
    """A member's trial id: its group's Ray trial id and its index, e.g. '9c6ab8ba-2'."""
    return f"{group_id}-{member}"


def members(config: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The Optuna trials a Ray trial trains, [{member, number, params}]: a fused group's
    (MEMBERS), or an unfused trial as the group of one."""
    if MEMBERS in config:
        return [dict(m) for m in config[MEMBERS]]
    return [{"member": 0, "number": config.get(NUMBER), "params": dict(config.get(PARAMS, {}))}]


def row_id(trial_id: str, config: Mapping[str, Any], member: int) -> str:
    """A member's trial id in the tables: member_id in a fused group, else the Ray trial's."""
    return member_id(trial_id, member) if MEMBERS in config else trial_id
