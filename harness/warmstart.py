"""Warm start: the finished trials of earlier sweeps, added to a new sweep's Optuna study.

`warm_start: [results/<older sweep>, ...]` lets a second sweep begin where the first one
stopped: each earlier trial that lies inside the new space (COMPLETE, and PRUNED with its
curve, which TPE also learns from) is added to the new study with `Study.add_trials`, as
the new space's distributions describe it, so the sampler treats it like one of its own.

What "compatible" means, checked when the spec is read (one line per problem, before Ray
starts): the same model, objective(s) and data settings; every setting the new sweep fixes
and the old one fixed too has the same value (a different `max_epochs` would make the values
incomparable; seeds and device settings may differ); every parameter the new sweep searches
has at least one earlier trial whose value lies inside its new range or choices (a setting
the old sweep did not search counts with its fixed value there). Earlier trials that fall
outside the new space on some setting are left out, and the console says how many.

Exactly once: each added trial carries its origin ("<folder>#<number>", kept through chains
of warm starts) as the user attribute `warm_start`, and `add` skips origins the study holds
already, so a --resume (or a second build of the searcher) adds nothing twice. Added trials
are the study's, not the sweep's: they have no rows in the tables, do not count towards
budget.num_samples, and are not rerun.

An earlier sweep still running (its folder locked, harness.lock) gives the trials finished so
far, and the console warns, naming how many and who runs it; a folder whose trials.parquet is
damaged is refused: its study may be as damaged.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution, IntDistribution
from optuna.trial import FrozenTrial, TrialState

from harness import space
from harness.errors import UserError
from harness.files import shown
from harness.lock import live_holder
from harness.trialconfig import resolve
from harness.values import show

if TYPE_CHECKING:
    from harness.config import SweepSpec

WARM_ATTR = "warm_start"  # user attribute: the added trial's origin, "<folder>#<number>"
# settings that do not change what a trial's objective means
_IGNORED = {"seed", "data_seed", "device", "cuda_graphs", "eval_batch_size", "grad_stats_every",
            "vanish_threshold", "explode_threshold"}  # fmt: skip
_SWEEP_FILE = "sweep.json"  # harness.results.SWEEP_FILE (no import: results imports pyarrow)
_OPTUNA_FILE = "optuna.db"
_TRIALS_FILE = "trials.parquet"


@dataclass
class Earlier:
    """One earlier sweep as read from its folder: the resolved spec and its finished trials."""

    folder: Path
    spec: dict[str, Any]
    trials: list[FrozenTrial]
    live: str | None = None  # who runs it now (harness.lock), if a sweep still does

    @functools.cached_property
    def fixed(self) -> dict[str, Any]:
        """Every flat setting's value in the earlier sweep where it was not searched."""
        params = self.spec.get("parameters") or {}
        consts = {
            n: p.get("value") for n, p in params.items() if p.get("distribution") == "constant"
        }
        flat = {**(self.spec.get("train") or {}), **consts}
        try:
            return resolve(self.spec["model"], flat).to_flat()
        except UserError:  # a rule across settings that only the searched values satisfied
            return {**resolve(self.spec["model"], {}).to_flat(), **flat}

    def searched(self) -> dict[str, dict[str, Any]]:
        params = self.spec.get("parameters") or {}
        return {n: p for n, p in params.items() if p.get("distribution") != "constant"}


def read(folder: Path) -> Earlier:
    """The earlier sweep in `folder`; a UserError line (without the key path) if it is none."""
    info_path, db = folder / _SWEEP_FILE, folder / _OPTUNA_FILE
    where = shown(folder)
    if not folder.is_dir():
        raise UserError(f"{where}: no such results folder")
    if not info_path.exists() or not db.exists():
        missing = _SWEEP_FILE if not info_path.exists() else _OPTUNA_FILE
        raise UserError(f"{where}: not a results folder of a sweep (no {missing})")
    try:
        spec = json.loads(info_path.read_text())["spec"]
        name = spec["name"]
        spec["model"]
    except (OSError, ValueError, KeyError, TypeError):
        raise UserError(f"{where}: {_SWEEP_FILE} is unreadable or holds no spec") from None
    _check_table(folder / _TRIALS_FILE)
    try:
        storage = optuna.storages.RDBStorage(f"sqlite:///{db.resolve()}")
        study = optuna.load_study(study_name=name, storage=storage)
    except Exception as exc:  # noqa: BLE001 -- any failure to read it is the user's file
        raise UserError(f"{where}: cannot read the Optuna study {name!r} in {db.name} "
                        f"({type(exc).__name__})") from None  # fmt: skip
    states = (TrialState.COMPLETE, TrialState.PRUNED)
    trials = [t for t in study.get_trials(deepcopy=False, states=states) if t.values or
              t.intermediate_values]  # fmt: skip
    if len(study.directions) > 1:  # NSGA-II learns from complete trials only
        trials = [t for t in trials if t.state == TrialState.COMPLETE]
    return Earlier(folder, spec, trials, live_holder(folder))


def _check_table(path: Path) -> None:
    """A trials.parquet that exists must be whole (the footer of its file, or of each part
    of its folder, readable): a truncated one says the folder was damaged (the sweep's
    writer never leaves one)."""
    if not path.exists():
        return
    import pyarrow.parquet as pq

    from harness.parts import files

    for part in files(path):
        try:
            pq.read_metadata(part)
        except Exception as exc:  # noqa: BLE001 -- any failure to read it is the folder's damage
            why = " ".join(str(exc).split())[:120]
            raise UserError(
                f"{shown(part)}: not a readable Parquet file ({why}); this folder is damaged"
            ) from None


# ------------------------------------------------------------------------- the check


def problems(spec: SweepSpec, folder: Path) -> list[str]:
    """Why `folder`'s trials cannot start this sweep: one line per setting (empty: they can)."""
    try:
        old = read(folder)
    except UserError as exc:
        return [str(exc)]
    lines = []
    where = shown(folder)
    if old.spec.get("model") != spec.model:
        return [f"{where}: model: {old.spec.get('model')} there, {spec.model} here"]
    here = [(m.name, m.goal) for m in spec.metrics]
    there = _metrics(old.spec.get("metric"))
    if there != here:
        lines.append(f"{where}: metric: {_show_metrics(there)} there, {_show_metrics(here)} here "
                     "(the objective must be the same)")  # fmt: skip
    new_data = {k: v for k, v in _jsonable(spec.to_dict()["data"]).items() if k != "cache_dir"}
    for key, value in new_data.items():
        was = (old.spec.get("data") or {}).get(key)
        if was != value:
            lines.append(f"{where}: data.{key}: {show(was)} there, {show(value)} here")
    new_fixed, old_fixed = _fixed(spec), old.fixed
    searched_old = old.searched()
    for name, value in new_fixed.items():
        if name in _IGNORED or name in spec.searched or name in searched_old:
            continue
        if name in old_fixed and not _same(old_fixed[name], value):
            lines.append(f"{where}: train.{name}: {show(old_fixed[name])} there, {show(value)} "
                         "here (the objective values would not compare)")  # fmt: skip
    if not old.trials:
        return lines  # nothing finished there: nothing to add
    fits = {n: [_fits(spec, new_fixed, old, t, n) for t in old.trials] for n in _names(spec, old)}
    before = len(lines)
    for name, ok in fits.items():
        if any(ok):
            continue
        if name in spec.searched:
            lines.append(f"{where}: parameters.{name}: no earlier trial lies in this space "
                         f"({_there(old, name)}; here {_here(spec, name)})")  # fmt: skip
        else:
            lines.append(f"{where}: train.{name}: fixed at {show(new_fixed[name])} here; no "
                         f"earlier trial had it ({_there(old, name)})")  # fmt: skip
    fit_all = any(all(f[i] for f in fits.values()) for i in range(len(old.trials)))
    if not fit_all and len(lines) == before:  # each setting fits some trial, none fits all
        lines.append(f"{where}: no earlier trial lies in this space on every setting at once")
    return lines


def _metrics(raw: Any) -> list[tuple[str, str]]:
    items = raw if isinstance(raw, list) else [raw]
    return [(m.get("name"), m.get("goal")) for m in items if isinstance(m, dict)]


def _show_metrics(ms: Sequence[tuple[str, str]]) -> str:
    return ", ".join(f"{n} ({g})" for n, g in ms)


def _jsonable(v: Any) -> Any:
    return json.loads(json.dumps(v, default=str))


def _fixed(spec: SweepSpec) -> dict[str, Any]:
    return spec.trial_config(spec.baseline_params()).to_flat()


def _names(spec: SweepSpec, old: Earlier) -> list[str]:
    """Settings whose value must be checked trial by trial: searched here or there."""
    return list(dict.fromkeys([*spec.searched, *old.searched()]))


def _plain(v: Any) -> Any:
    """An Optuna-stored value in trial form: JSON text of a list back to the list."""
    if isinstance(v, str) and v.startswith("["):
        try:
            return json.loads(v)
        except ValueError:
            return v
    return v


def _same(a: Any, b: Any) -> bool:
    a, b = _plain(a), _plain(b)
    if (
        isinstance(a, (int, float))
        and isinstance(b, (int, float))
        and not (isinstance(a, bool) or isinstance(b, bool))
    ):
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)
    return space.same_value(a, b)


def _value(old: Earlier, t: FrozenTrial, name: str) -> Any:
    """Setting `name` in earlier trial `t`, in trial form."""
    if name in t.params:
        return _plain(t.params[name])
    return old.fixed.get(name)


def _fits(
    spec: SweepSpec, fixed: Mapping[str, Any], old: Earlier, t: FrozenTrial, name: str
) -> bool:
    """Earlier trial t's value of setting `name` is one this sweep could give it."""
    value = _value(old, t, name)
    p = spec.parameters.get(name)
    if p is not None and p.searched:
        return _internal(p, value) is not None
    return _same(value, fixed[name])


def _internal(p: space.ParamSpec, value: Any) -> Any:
    """`value` as p's Optuna distribution takes it, or None if it lies outside."""
    dist = p.optuna()
    if dist is None or value is None:
        return None
    v = p.encode(value)
    if isinstance(dist, CategoricalDistribution):
        return next((c for c in dist.choices if space.same_value(c, v)), None)
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        return None
    lo, hi, step = dist.low, dist.high, dist.step
    tol = 1e-9 * max(1.0, abs(lo), abs(hi))
    if not lo - tol <= v <= hi + tol:
        return None
    if step is not None and abs((v - lo) / step - round((v - lo) / step)) > 1e-6:
        return None
    if isinstance(dist, IntDistribution):
        return round(v) if float(v).is_integer() else None
    return float(min(max(v, lo), hi))


def _there(old: Earlier, name: str) -> str:
    p = old.searched().get(name)
    if p is None:
        return f"fixed at {show(old.fixed.get(name))} there"
    if p.get("distribution") == "categorical":
        return f"searched there over {show(p.get('values'))}"
    return f"searched there over [{show(p.get('min'))}, {show(p.get('max'))}]"


def _here(spec: SweepSpec, name: str) -> str:
    p = spec.parameters[name]
    if p.distribution == "categorical":
        return f"{show([space.thaw(v) for v in p.values])}"
    lo, hi = p.bounds()
    return f"[{show(lo)}, {show(hi)}]"


# ------------------------------------------------------------------------- the trials


@dataclass
class WarmTrials:
    """The earlier trials that fit, as this sweep's study takes them, and what was left out."""

    trials: list[FrozenTrial]
    left_out: int  # finished earlier trials outside this space
    folders: tuple[str, ...]
    live: tuple[tuple[str, int, str], ...] = ()  # (folder, trials taken, who runs it) per live one

    def warnings(self) -> list[str]:
        """One line per earlier sweep that still runs: its later trials are not in this study."""
        return [f"warm_start: {shown(folder)} is still running ({who}): took the {n} trial(s) "
                "it has finished so far; the ones it finishes later are not added"
                for folder, n, who in self.live]  # fmt: skip

    def line(self) -> str:
        """The console's line about them."""
        names = ", ".join(shown(f) for f in self.folders)
        out = f"  warm start: {len(self.trials)} finished trial(s) from {names}"
        if self.left_out:
            out += f" ({self.left_out} outside this space left out)"
        return out + " added to the study"


def trials(spec: SweepSpec) -> WarmTrials:
    """Every earlier trial of spec.warm_start that fits this space, as a new FrozenTrial
    (this space's distributions; the origin in the `warm_start` user attribute)."""
    out: list[FrozenTrial] = []
    left_out = 0
    seen: set[str] = set()
    dists = space.optuna_space(spec.parameters)
    fixed = _fixed(spec)
    live = []
    for folder in spec.warm_start:
        old = read(Path(folder))
        names = _names(spec, old)
        taken = len(out)
        for t in old.trials:
            origin = str(t.user_attrs.get(WARM_ATTR) or f"{folder}#{t.number}")
            if origin in seen:
                continue
            if not all(_fits(spec, fixed, old, t, n) for n in names):
                left_out += 1
                continue
            seen.add(origin)
            out.append(_convert(spec, old, t, dists, origin))
        if old.live:
            live.append((folder, len(out) - taken, old.live))
    return WarmTrials(out, left_out, tuple(spec.warm_start), tuple(live))


def _convert(
    spec: SweepSpec,
    old: Earlier,
    t: FrozenTrial,
    dists: Mapping[str, BaseDistribution],
    origin: str,
) -> FrozenTrial:
    params = {n: _internal(spec.parameters[n], _value(old, t, n)) for n in dists}
    attrs = {k: v for k, v in t.user_attrs.items() if k in ("status", "reason")}
    return optuna.trial.create_trial(
        state=t.state,
        values=t.values,
        params=params,
        distributions=dict(dists),
        user_attrs={**attrs, WARM_ATTR: origin},
        intermediate_values=dict(t.intermediate_values),
    )


def add(study: optuna.Study, warm: WarmTrials) -> int:
    """Add the trials whose origin the study does not hold yet; how many were added."""
    have = {
        t.user_attrs.get(WARM_ATTR)
        for t in study.get_trials(deepcopy=False)
        if t.user_attrs.get(WARM_ATTR)
    }
    new = [t for t in warm.trials if t.user_attrs[WARM_ATTR] not in have]
    if new:
        study.add_trials(new)
    return len(new)


def is_warm(t: FrozenTrial) -> bool:
    """An added trial of an earlier sweep (not one of this sweep's own)."""
    return bool(t.user_attrs.get(WARM_ATTR))


def check_target(spec: SweepSpec, folder: Path) -> None:
    """A sweep cannot warm-start from its own results folder (--overwrite would empty it)."""
    for i, w in enumerate(spec.warm_start):
        if Path(w).resolve() == folder.resolve():
            raise UserError(f"{spec.source_path or 'spec'}: warm_start[{i}]: {w} is this sweep's "
                            "own results folder; give the new sweep another name")  # fmt: skip
