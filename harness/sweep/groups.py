"""Groups of trials in a sweep: how many Optuna trials one Ray trial trains (resources.fuse),
and which trials may share a group.

A group is N Optuna trials trained as one fused module (harness.trainer.train_group): they
must agree on every *shape* setting (harness.trialconfig.shape_settings: the model's sizes,
batch size, pad size, ..., and the batch order `data_seed`) and may differ in the fusible
ones (learning rate, dropout, seed, ...). The searcher (harness.sweep.search.OptunaSearcher)
fills each group; this module says how big a group is and what makes two trials groupable.

`resources.fuse: auto` picks N by this rule (measured figures: docs/sweeps.md, fused
sweeps, and docs/gpu.md):
  0. 1 under early_terminate hyperband_sync or pbt: they pause, checkpoint and clone single
     Ray trials (a group's members are stopped inside it instead, harness.sweep.rungs).
  1. 1 for a model without a fused form (TextRNN, TextRNN_Att, TextRCNN): its members would
     only run side by side, one after another, where separate trials run in parallel.
  2. 1 for CPU trials (resources.gpu 0): on the 2-core development CPU a fused group of 8 at
     the shipped textcnn.yaml settings trained at 0.95x the members' sequential rate (no
     gain); only toy models gain (smoke settings: 1.9-2.5x), and those set fuse themselves.
  3. GPU trials: measured, never assumed. A Ray task on the trial's GPU share
     (`gpu_probe`) times groups of 1, 2, 4, 8 (no more than ceil(num_samples /
     max_concurrent), so every concurrent slot gets a group, and no more than fit the
     device's free memory by harness.footprint's count) and reports the free memory. N is
     the size with the most member-samples per second, if it beats a trial alone by at
     least MIN_GAIN; else 1. No answer (no GPU, a failure, a timeout) means 1: until a
     group has been measured on the device, one slow or failing trial is never made eight.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from harness.config import SweepSpec
from harness.data import Dataset
from harness.footprint import Probe, fits, member_bytes
from harness.models import model_entry, parameter_count
from harness.trialconfig import fusible_names, shape_settings, with_batch_seed

MAX_AUTO = 8
MIN_GAIN = 1.2  # a group must train this many times the member-samples/s of a trial alone
GPU_SHARE_USED = 0.8  # of the free memory in the trial's GPU share
PROBE_TIMEOUT_S = 300


@dataclass(frozen=True)
class FusePlan:
    """resources.fuse as given, the group size it means for this sweep, and why."""

    setting: int | str
    size: int
    why: str = ""
    probe: dict[str, Any] | None = None  # what the GPU measurement found (sweep.json)

    @property
    def fused(self) -> bool:
        """Trials run as groups (OptunaSearcher, run_trial); False: one trial per Ray trial."""
        return self.size > 1

    def groups(self, trials: int) -> int:
        return math.ceil(trials / self.size) if trials > 0 else 0

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"setting": self.setting, "size": self.size, "why": self.why}
        if self.probe is not None:
            out["probe"] = self.probe
        return out


ProbeFn = Callable[[list[int]], "Probe | None"]


def plan_fuse(spec: SweepSpec, data: Dataset, probe: ProbeFn | None = None) -> FusePlan:
    """The group size for `spec` (see the module docstring for the auto rule); `probe(sizes)`
    measures those group sizes on a GPU (None: no GPU answered)."""
    setting = spec.resources.fuse
    if setting != "auto":
        return FusePlan(setting, int(setting), "as set")
    if spec.early_terminate.type in ("hyperband_sync", "pbt"):
        return FusePlan(setting, 1, f"{spec.early_terminate.type} pauses and clones single trials")
    if model_entry(spec.model).fused_forward is None:
        return FusePlan(setting, 1, f"{spec.model} has no fused form")
    if spec.resources.gpu <= 0:
        return FusePlan(setting, 1, "CPU trials: fused groups measured no faster on CPU")
    budget = spec.budget
    cap = min(MAX_AUTO, max(1, math.ceil(budget.num_samples / budget.max_concurrent)))
    if cap == 1:
        return FusePlan(setting, 1, f"{budget.num_samples} trials {budget.max_concurrent} at a time")
    cfg = spec.trial_config(spec.baseline_params())
    params = parameter_count(spec.model, cfg.params, data)
    member = member_bytes(cfg, data, params, cfg.train.cuda_graphs)
    sizes = [n for n in (1, 2, 4, 8) if n <= cap] + ([cap] if cap not in (1, 2, 4, 8) else [])
    found = probe(sizes) if probe is not None else None
    if found is None:
        return FusePlan(setting, 1, "not measured on a GPU (none answered): one trial per group")
    return choose(setting, found, member, params, spec.resources.gpu, sizes)


def choose(
    setting: int | str, found: Probe, member: int, params: int, share: float, sizes: list[int]
) -> FusePlan:
    """The measured size with the most member-samples/s that fits the free memory and gains
    MIN_GAIN over a trial alone (else 1), and why, in figures."""
    fit = fits(found.free_bytes, share, member, params, GPU_SHARE_USED)
    solo = found.rate(1)
    ok = [r for r in found.runs if r.members in sizes and r.members <= fit and r.samples_per_s > 0]
    best = max(ok, key=lambda r: r.samples_per_s, default=None)
    probe = found.to_dict()
    if solo <= 0 or best is None:
        return FusePlan(setting, 1, "the GPU measurement failed: one trial per group", probe)
    gain = best.samples_per_s / solo
    figures = f"{best.members} together trained {gain:.2f}x the samples/s of one"
    memory = f"{member / 2**30:.2f} GB a member, {fit} fit {found.free_bytes / 2**30:.0f} GB free"
    if best.members == 1 or gain < MIN_GAIN:
        return FusePlan(setting, 1, f"measured: {figures} (under {MIN_GAIN}x); {memory}", probe)
    return FusePlan(setting, best.members, f"measured: {figures}; {memory}", probe)


def gpu_probe(spec: SweepSpec, data: Dataset, timeout_s: float = PROBE_TIMEOUT_S) -> ProbeFn:
    """probe(sizes) for plan_fuse: a Ray task holding the trial's GPU share times the
    baseline's groups there (harness.footprint.measure); None if no GPU answered in time."""

    def probe(sizes: list[int]) -> Probe | None:
        try:
            import ray

            cfg = spec.trial_config(spec.baseline_params())
            # max_calls=1: the worker exits after it, so its CUDA context and cached memory
            # are not kept from the trials
            share = min(spec.resources.gpu, 1.0)
            task = ray.remote(num_cpus=0, num_gpus=share, max_calls=1)(_measure)
            found = ray.get(task.remote(cfg, data, sizes), timeout=timeout_s)
            return Probe.from_dict(found)
        except Exception:  # noqa: BLE001 -- no GPU answered in time: one trial per group
            return None

    return probe


def _measure(cfg: Any, data: Dataset, sizes: list[int]) -> dict[str, Any]:
    from harness.footprint import measure

    return measure(cfg, data, sizes, device="cuda").to_dict()


# ----------------------------------------------------------------- who may share a group


def shape_names(spec: SweepSpec) -> list[str]:
    """Searched parameters that fix shapes or the batch order: a group's members share them."""
    fusible = fusible_names(spec.model)
    return [n for n in spec.searched if n not in fusible]


def shape_key(spec: SweepSpec, params: Mapping[str, Any]) -> str:
    """Equal for two trials exactly when they may train in one group (batch order included)."""
    cfg = spec.trial_config(params)
    cfg = with_batch_seed([cfg], cfg.train.batch_seed)[0]
    return json.dumps(shape_settings(cfg), sort_keys=True, default=str)


def group_by_shape(
    spec: SweepSpec, members: Sequence[tuple[int, Mapping[str, Any]]], size: int
) -> list[list[int]]:
    """Trials (number, params) in groups of at most `size` that share their shape settings,
    in order of first appearance (a resume regroups its interrupted trials this way). A trial
    whose params no longer make a config stands alone (it will fail with the reason)."""
    by_key: dict[str, list[list[int]]] = {}
    order: list[list[int]] = []
    for number, params in members:
        try:
            key = shape_key(spec, params)
        except Exception:  # noqa: BLE001 -- reported when the trial runs
            key = f"alone:{number}"
        groups = by_key.setdefault(key, [])
        if not groups or len(groups[-1]) >= size:
            groups.append([])
            order.append(groups[-1])
        groups[-1].append(number)
    return order
