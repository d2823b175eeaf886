"""Groups of trials in a sweep: how many Optuna trials one Ray trial trains (resources.fuse),
and which trials may share a group.

A group is N Optuna trials trained as one fused module (harness.trainer.train_group): they
must agree on every *shape* setting (harness.trialconfig.shape_settings: the model's sizes,
batch size, pad size, ..., and the batch order `data_seed`) and may differ in the fusible
ones (learning rate, dropout, seed, ...). The searcher (harness.sweep.search.GroupSearch)
fills each group; this module says how big a group is and what makes two trials groupable.

`resources.fuse: auto` picks N by this rule (each step's figures are in README's measured
figures):
  0. 1 under early_terminate hyperband_sync or pbt: they pause, checkpoint and clone single
     Ray trials (a group's members are stopped inside it instead, harness.sweep.rungs).
  1. 1 for a model without a fused form (TextRNN, TextRNN_Att, TextRCNN): its members would
     only run side by side, one after another, where separate trials run in parallel.
  2. 1 for CPU trials (resources.gpu 0): on the 2-core development CPU a fused group of 8 at
     the shipped textcnn.yaml settings trained at 0.95x the members' sequential rate (no
     gain); only toy models gain (smoke settings: 1.9-2.5x), and those set fuse themselves.
  3. GPU trials: up to 8 (a TextCNN step at batch 128 is bound by kernel launches on a GPU,
     ~3 ms of host time against 0.8 ms of GPU time on an H200, which a fused step shares
     among its members), no more than ceil(num_samples / max_concurrent)
     so every concurrent slot gets a group, and no more than fit in 80% of the trial's GPU
     share at 20 bytes per parameter per member (weights, gradients, Adam's two moments =
     16 bytes, plus a quarter for activations and the allocator): FastText's 153.5M parameters
     take about 3 GB a member.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from harness.config import SweepSpec
from harness.data import Dataset
from harness.models import model_entry, parameter_count
from harness.trialconfig import fusible_names, shape_settings, with_batch_seed

MAX_AUTO = 8
BYTES_PER_PARAM = 20  # weights + grads + Adam m, v (4 x 4 bytes), x 1.25 for activations
GPU_SHARE_USED = 0.8
DEFAULT_GPU_BYTES = 16 * 2**30  # assumed when no GPU can be asked (said so in `why`)


@dataclass(frozen=True)
class FusePlan:
    """resources.fuse as given, the group size it means for this sweep, and why."""

    setting: int | str
    size: int
    why: str = ""

    @property
    def fused(self) -> bool:
        """Trials run as groups (GroupSearch, run_group); False: one trial per Ray trial."""
        return self.size > 1

    def groups(self, trials: int) -> int:
        return math.ceil(trials / self.size) if trials > 0 else 0

    def to_dict(self) -> dict[str, Any]:
        return {"setting": self.setting, "size": self.size, "why": self.why}


def plan_fuse(
    spec: SweepSpec, data: Dataset, gpu_bytes: Callable[[], int | None] | None = None
) -> FusePlan:
    """The group size for `spec` (see the module docstring for the auto rule); `gpu_bytes`
    tells a GPU's memory, asked only when the members might not fit (over 1 GB together)."""
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
    n = min(MAX_AUTO, max(1, math.ceil(budget.num_samples / budget.max_concurrent)))
    why = f"GPU trials: up to {MAX_AUTO}, {budget.num_samples} trials {budget.max_concurrent} at a time"
    member = member_params(spec, data) * BYTES_PER_PARAM if n > 1 else 0
    if n * member > 2**30:
        total = gpu_bytes() if gpu_bytes is not None else None
        share = (total or DEFAULT_GPU_BYTES) * min(1.0, spec.resources.gpu) * GPU_SHARE_USED
        fit = max(1, int(share // member))
        if fit < n:
            n = fit
            assumed = (
                "" if total else f" (assumed {DEFAULT_GPU_BYTES / 2**30:g} GB: no GPU answered)"
            )
            why += f"; {member / 2**30:.1f} GB a member, {fit} fit the GPU share{assumed}"
    return FusePlan(setting, n, why)


def member_params(spec: SweepSpec, data: Dataset) -> int:
    """Parameters of a member (the baseline's settings)."""
    cfg = spec.trial_config(spec.baseline_params())
    return parameter_count(spec.model, cfg.params, data)


def needs_gpu_memory(spec: SweepSpec) -> bool:
    """Whether plan_fuse would look at the GPU's memory."""
    return (
        spec.resources.fuse == "auto"
        and spec.resources.gpu > 0
        and model_entry(spec.model).fused_forward is not None
    )


def gpu_memory(gpu: float, timeout_s: float = 60) -> int | None:
    """Bytes of memory of a GPU a trial would get: the driver's own GPU when it has one, else
    asked of the cluster by a tiny Ray task holding the trial's GPU share (None: no answer)."""
    here = _device_memory()
    if here is not None:
        return here
    try:
        import ray

        ref = ray.remote(num_cpus=0, num_gpus=min(gpu, 1.0))(_device_memory).remote()
        return ray.get(ref, timeout=timeout_s)
    except Exception:  # noqa: BLE001 -- no GPU answered in time: the default is assumed
        return None


def _device_memory() -> int | None:
    import torch

    if not torch.cuda.is_available():
        return None
    return int(torch.cuda.get_device_properties(0).total_memory)


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
