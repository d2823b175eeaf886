"""Keys a trial's results carry besides the metrics (never in schema.METRIC_KEYS).

The trial (trial.py) sets them, the searcher (search.py) and the callback (callback.py)
read them: one place for the names both sides of the object store must agree on.
"""

FINAL = "harness_final"  # the loop ran to its end (its own early stop included)
SUMMARY = "harness_summary"  # TrainSummary.to_dict() of a finished trial
STATUS = "harness_status"  # COMPLETED, DIVERGED or FAILED
ERROR = "harness_error"  # why a trial failed or diverged, and device notes
INFO = "harness_info"  # node / device / start time, sent with the first report and the last
NUMBER = "harness_number"  # Optuna trial number, put into each trial's config by the searcher
PARAMS = "params"  # the sampled parameters in each trial's config
RESTORE = "harness_restore"  # --resume: {path, trial_id, iteration} of the checkpoint to go on from
LAST = "harness_last"  # a finished trial's last report, held back and sent with its final result
# fused groups (resources.fuse > 1): one Ray trial trains several Optuna trials
MEMBERS = "harness_members"  # a group's config: [{member, number, params}] from the searcher
GROUP = "harness_group"  # a group's result: one entry per member report or member end
MEMBER = "harness_member"  # an entry's member index within its group


def member_id(group_id: str, member: int) -> str:
    """A member's trial id: its group's Ray trial id and its index, e.g. '9c6ab8ba-2'."""
    return f"{group_id}-{member}"
