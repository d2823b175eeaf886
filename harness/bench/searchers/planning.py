"""Which runs a search bench makes: one (method, early_terminate, seed) key per run, and the
spec each run sweeps (the shared spec with the bench's own settings)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness import overrides
from harness.config import SweepSpec, load_spec
from harness.errors import UserError, did_you_mean
from harness.schema import Status

# keys the bench sets itself; a --set of one of these would break the comparison
_OWN_KEYS = {
    "name": "the bench names each run <method>-<et>-s<k>",
    "method": "use --methods",
    "seed": "use --seeds (seed k seeds the sampler of every run k)",
    "train.seed": "use --seeds (seed k is the training seed of every trial of run k)",
    "early_terminate": "use --early-terminate",
    "early_terminate.type": "use --early-terminate",
}


@dataclass(frozen=True)
class RunKey:
    method: str
    early_terminate: str
    seed: int

    @property
    def name(self) -> str:
        return f"{self.method}-{self.early_terminate}-s{self.seed}"

    @property
    def combo(self) -> str:
        return f"{self.method}+{self.early_terminate}"


def _split_list(text: str, what: str, allowed: Sequence[str]) -> list[str]:
    items = [x.strip() for x in text.split(",") if x.strip()]
    if not items:
        raise UserError(f"--{what}: expected a comma-separated list, got {text!r}")
    bad = [x for x in items if x not in allowed]
    if bad:
        raise UserError(
            f"--{what}: unknown {bad[0]!r}{did_you_mean(bad[0], allowed)};"
            f" choose from {', '.join(allowed)}"
        )
    if len(set(items)) != len(items):
        raise UserError(f"--{what}: {text!r} names a value twice")
    return items


def _check_user_sets(sets: Sequence[str]) -> None:
    for item in sets:
        key = overrides.parse(item).key
        if key in _OWN_KEYS:
            raise UserError(f"--set {item}: the bench sets {key} itself ({_OWN_KEYS[key]})")


def base_spec(spec_path: str, sets: Sequence[str]) -> SweepSpec:
    """The spec as every run shares it: the file with the user's --set."""
    _check_user_sets(sets)
    spec = load_spec(spec_path, list(sets))
    if len(spec.metrics) > 1:
        raise UserError(
            f"{spec_path}: metric: several objectives have no single best to compare searchers "
            "by; give one metric"
        )
    if "seed" in spec.parameters:
        raise UserError(
            f"{spec_path}: parameters.seed: the bench fixes the training seed per bench seed "
            "(pairing); remove seed from the parameters"
        )
    return spec


def run_overrides(base: SweepSpec, key: RunKey) -> list[str]:
    """--set values that turn the shared spec into one run of the bench."""
    et = base.early_terminate
    if et.type == key.early_terminate:
        et_dict = et.to_dict()  # the spec's own scheduler settings
    else:
        et_dict = {"type": key.early_terminate}  # the scheduler's defaults
    return [
        f"name={key.name}",
        f"method={key.method}",
        f"seed={key.seed}",
        f"train.seed={key.seed}",
        f"early_terminate={json.dumps(et_dict)}",
    ]


def run_spec(spec_path: str, sets: Sequence[str], base: SweepSpec, key: RunKey) -> SweepSpec:
    return load_spec(spec_path, [*sets, *run_overrides(base, key)])


def _json_roundtrip(obj: Any) -> Any:
    return json.loads(json.dumps(obj, default=str))


def existing_run(folder: Path, spec: SweepSpec) -> str:
    """'new', 'done' (a finished run of this very spec: reused) or 'resume' (interrupted).
    A folder holding a run of another spec is a user error (--overwrite replaces it)."""
    from harness import results as rs

    if not (folder / rs.SWEEP_FILE).exists():
        return "new"
    try:
        old = json.loads((folder / rs.SWEEP_FILE).read_text()).get("spec", {})
    except (OSError, json.JSONDecodeError):
        old = None
    new = _json_roundtrip(spec.to_dict())
    if old != new:
        differ = sorted(k for k in set(old or {}) | set(new) if (old or {}).get(k) != new.get(k))
        raise UserError(
            f"{folder}: holds a run of a different spec (differs in: {', '.join(differ) or '?'}); "
            "pass --overwrite to replace the bench's runs, or --out for a new bench"
        )
    trials = rs.load(folder).trials
    unfinished = trials["status"].isin([Status.RUNNING, "PENDING"]).any() if len(trials) else True
    short = len(trials) < spec.budget.num_samples and not spec.budget.time_budget_s
    return "resume" if unfinished or short else "done"
