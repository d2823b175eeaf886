"""`python -m harness.sweep SPEC.yaml`: Ray Tune schedules the trials, Optuna drives the search.

The one package that speaks to Ray. A spec (harness.config) becomes a Tuner whose search
algorithm is Optuna (sampler per `method`, study in results/<name>/optuna.db), whose
scheduler comes from `early_terminate`, and whose trials run the shared loop
(harness.trainer.train_group) on a dataset prepared once on the driver and shipped through the
object store. A driver-side callback writes the results tables (harness.results), the
TensorBoard / MLflow logs (harness.tracker) and the console lines as trials report.

From Python: `harness.sweep.run(spec)` takes a SweepSpec, a sweep file or a dict (checked
like a file) and returns the SweepOutcome (its folder, the trials' rows, times).

Honest search: Ray's stock OptunaSearch tells Optuna that a trial the scheduler stopped
was COMPLETE. Here a trial's end travels as an entry with a `final` flag only when the loop
ran it to its end (its own early stopping included); a trial that never sent one was
stopped from outside and reaches Optuna as PRUNED, with every evaluation's metric as an
intermediate value at its report index (`report`). A trial that raised is FAIL (error in a user
attribute), a diverged one FAIL with its reason. One searcher (search.OptunaSearcher, over
Optuna's public ask and tell) does this for every sweep, fused or not.

A trial is a group of one: every Ray trial trains a group of Optuna trials with the shared
loop (one when unfused) through one trial function (trial.run_trial), and every result
carries one entry per member report or member end (keys.GROUP), which the callback and the
searcher read the same way. Fused sweeps (resources.fuse > 1): the searcher fills each
group with trials of one shape; every member reports, is stopped early (by Ray's rules,
applied per member from one shared record) and ends as its own trial, with its own rows.

One concept per module:
  keys.py         the keys a trial's results carry besides the metrics
  search.py       the one Optuna searcher (ask and tell; a trial is a group of one or
                  more Optuna trials)
  schedulers.py   the early-termination scheduler per early_terminate
  groups.py       resources.fuse: how many trials a group holds, which trials may share one
  rungs.py        early termination of a group's members: Ray's rules, one shared record
  trial.py        what runs inside a Ray trial (a group of one or more trials)
  callback.py     the driver-side Tune callback that writes the tables
  console.py      the lines a person watches
  resume.py       what an interrupted sweep left, and what a resume does with it
  halt.py         a full disk mid-run: stop, keep what is written, one line
  ray_session.py  Ray start-up, reachability, fit checks, log routing
  provenance.py   what sweep.json records about the run (versions, git, data)
  runner.py       run(): the steps of one sweep, in order
  cli.py          the command line (`__main__.py` calls it)
"""

from __future__ import annotations

import os

# Before Ray is imported (every module of this package imports ray after this): keep a
# single-machine Ray on loopback, keep Tune's per-trial json/csv/tensorboard loggers off
# (results.py writes the tables), let the last result of a failed trial omit the metric,
# don't chdir trials into their folders (relative paths in a spec mean what they meant on
# the command line), legacy (quiet at verbose=0) output, and trial processes at normal
# priority (Ray's default nice 15 lets any other busy process on the machine starve a
# sweep's trials). A reused trial process waits up to 30 s (Tune's default: 2) for the last
# trial's thread to end: on a busy machine 2 s ran out, Tune aborted the next trial ("Could
# not re-use actor ... reset_config()") and the sweep hung there (seen twice with
# `python -m harness.bench scale` at load average 15).
for _k, _v in {
    "TUNE_FUNCTION_THREAD_TIMEOUT_S": "30",
    "RAY_worker_niceness": "0",
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
    "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "1",
    "TUNE_DISABLE_STRICT_METRIC_CHECKING": "1",
    "RAY_CHDIR_TO_TRIAL_DIR": "0",
    "RAY_AIR_NEW_OUTPUT": "0",
    "TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S": "0",
    "RAY_USAGE_STATS_ENABLED": "0",
}.items():
    os.environ.setdefault(_k, _v)
del _k, _v

import ray  # after the environment above

from harness.sweep.callback import SweepCallback
from harness.sweep.cli import main
from harness.sweep.console import Console
from harness.sweep.keys import (
    ERROR,
    FINAL,
    GROUP,
    INFO,
    MEMBER,
    MEMBERS,
    NUMBER,
    PARAMS,
    STATUS,
    SUMMARY,
)
from harness.sweep.ray_session import check_fits, check_reachable, init_ray
from harness.sweep.resume import ResumePlan, plan_resume
from harness.sweep.runner import SweepOutcome, run
from harness.sweep.schedulers import build_scheduler
from harness.sweep.search import (
    GroupSearch,
    HonestOptunaSearch,
    OptunaSearcher,
    build_searcher,
    optuna_storage_url,
    plan_search,
)
from harness.sweep.trial import TrialJob, run_trial

__all__ = [
    "ERROR",
    "FINAL",
    "GROUP",
    "INFO",
    "MEMBER",
    "MEMBERS",
    "NUMBER",
    "PARAMS",
    "STATUS",
    "SUMMARY",
    "Console",
    "GroupSearch",
    "HonestOptunaSearch",
    "OptunaSearcher",
    "ResumePlan",
    "SweepCallback",
    "SweepOutcome",
    "TrialJob",
    "build_scheduler",
    "build_searcher",
    "check_fits",
    "check_reachable",
    "init_ray",
    "main",
    "optuna_storage_url",
    "plan_resume",
    "plan_search",
    "ray",
    "run",
    "run_trial",
]
