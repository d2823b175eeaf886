"""A sweep's results folder as the report reads it: the tables, the resolved spec, the study.

`load_sweep` is the one place that opens the files (through harness.results.load) and turns
every problem into one UserError line, so a wrong folder fails before anything is written.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from harness import parts, schema
from harness.errors import UserError
from harness.schema import Status
from harness.values import finite, plain

REQUIRED_FILES = ("trials.parquet", "sweep.json")
PREFIX = schema.PARAM_PREFIX


@dataclass(frozen=True)
class Objective:
    name: str
    goal: str = "maximize"

    @property
    def maximize(self) -> bool:
        return not str(self.goal).lower().startswith("min")


@dataclass
class Sweep:
    """One results folder: the three tables, the resolved spec, and where optuna.db lives.

    `trials` gains two columns the report uses everywhere: `objective` (see
    objective_column) and `trial_name` (see trial_name)."""

    path: Path
    spec: dict[str, Any]
    trials: pd.DataFrame
    metrics: pd.DataFrame
    layers: pd.DataFrame
    info: dict[str, Any] = field(default_factory=dict)  # all of sweep.json (versions, data, ...)

    @property
    def name(self) -> str:
        return str(self.spec.get("name") or self.path.name)

    @property
    def objectives(self) -> list[Objective]:
        m = self.spec.get("metric") or {"name": "metric", "goal": "maximize"}
        items = m if isinstance(m, list) else [m]
        out = []
        for item in items:
            if isinstance(item, dict):
                out.append(
                    Objective(str(item.get("name", "metric")), str(item.get("goal", "maximize")))
                )
            else:
                out.append(Objective(str(item)))
        return out or [Objective("metric")]

    @property
    def objective(self) -> Objective:
        """The first (or only) objective: what ranks trials."""
        return self.objectives[0]

    @property
    def param_specs(self) -> dict[str, dict[str, Any]]:
        p = self.spec.get("parameters") or {}
        return {str(k): (v if isinstance(v, dict) else {"value": v}) for k, v in p.items()}

    @property
    def param_names(self) -> list[str]:
        """Every parameter with a column, in the spec's order, then any extra columns."""
        cols = [c[len(PREFIX) :] for c in self.trials.columns if c.startswith(PREFIX)]
        ordered = [n for n in self.param_specs if n in cols]
        return ordered + [n for n in cols if n not in ordered]

    @property
    def searched(self) -> list[str]:
        """Parameters that were searched (not constants) and so are worth plotting."""
        out = []
        for n in self.param_names:
            ps = self.param_specs.get(n)
            if ps is not None:
                if distribution(ps) != "constant":
                    out.append(n)
            elif self.trials[PREFIX + n].map(key).nunique() > 1:
                out.append(n)
        return out

    @property
    def log_params(self) -> set[str]:
        return {n for n, ps in self.param_specs.items() if "log" in distribution(ps)}

    @property
    def categorical_params(self) -> set[str]:
        return {n for n, ps in self.param_specs.items() if distribution(ps) == "categorical"}

    @property
    def baseline_id(self) -> str | None:
        """The baseline trial (Optuna number 0 when the spec says `baseline: true`), if it ran."""
        if self.spec.get("baseline") is not True:
            return None
        rows = self.trials[pd.to_numeric(self.trials["trial_number"], errors="coerce") == 0]
        return None if rows.empty else str(rows["trial_id"].iloc[0])

    @property
    def study_path(self) -> Path:
        return self.path / "optuna.db"


def distribution(ps: dict[str, Any]) -> str:
    """The distribution of a parameter entry, inferred as W&B does when it is not spelled out."""
    d = ps.get("distribution")
    if d:
        return str(d)
    if "values" in ps:
        return "categorical"
    if "min" in ps and "max" in ps:
        ints = all(isinstance(ps[k], int) and not isinstance(ps[k], bool) for k in ("min", "max"))
        return "int_uniform" if ints else "uniform"
    return "constant"


def number(value: Any) -> float | None:
    """A cell as a float when it holds a finite number (text from a Parquet column is not one)."""
    value = plain(value)
    return float(value) if finite(value) and not isinstance(value, str) else None


def key(value: Any) -> str:
    """A hashable stand-in for a cell (lists included)."""
    return json.dumps(plain(value), sort_keys=True, default=str)


def trial_name(row: Any) -> str:
    """How every report output names a trial: Ray's short trial id (what the console prints
    and `--replay` takes) with the Optuna trial number beside it, e.g. '9c6ab8ba (#3)'
    (harness.results.trial_name: the console's name too)."""
    from harness import results

    return results.trial_name(row)


def load_sweep(path: str | os.PathLike[str]) -> Sweep:
    """Read a results folder written by harness.sweep, every problem as one UserError line."""
    from harness import results

    p = Path(path)
    if not p.is_dir():
        raise UserError(f"{p}: not a results folder (no such directory)")
    missing = [f for f in REQUIRED_FILES if not (p / f).exists()]  # a table: a folder of parts
    if missing:
        raise UserError(
            f"{p}: not a results folder (missing {', '.join(missing)}; "
            "expected the output of python -m harness.sweep)"
        )
    try:
        res = results.load(p)
    except UserError:
        raise
    except Exception as exc:  # noqa: BLE001 -- pyarrow raises several types for a damaged file
        raise UserError(_unreadable(p, exc)) from None
    info = res.info
    spec = res.spec or (info if "parameters" in info or "metric" in info else {})
    sweep = Sweep(
        p,
        spec,
        _tidy_trials(res.trials),
        _tidy_steps(res.metrics),
        _tidy_steps(res.grad_layers),
        info,
    )
    sweep.trials["objective"] = objective_column(sweep)
    sweep.trials["trial_name"] = [trial_name(r) for _, r in sweep.trials.iterrows()]
    return sweep


def objective_column(sweep: Sweep) -> pd.Series:
    """The objective per trial: `metric` (what Optuna was told, COMPLETED trials), else the
    last value of the objective's metric the trial reported (pruned and diverged trials)."""
    t = sweep.trials
    value = pd.to_numeric(t["metric"], errors="coerce")
    m = sweep.metrics
    name = sweep.objective.name
    if not m.empty and name in m and "iteration" in m:
        last = m.sort_values("iteration").groupby("trial_id")[name].last()
        value = value.fillna(t["trial_id"].map(pd.to_numeric(last, errors="coerce")))
    return value


def short(text: Any, n: int = 110) -> str:
    """One line of at most n characters (error messages in tables and notes)."""
    s = " ".join(str(text).split())
    return s if len(s) <= n else s[: n - 3] + "..."


def _unreadable(folder: Path, exc: Exception) -> str:
    """Name the file that would not load."""
    import pyarrow.parquet as pq

    try:
        info = json.loads((folder / "sweep.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        return f"{folder / 'sweep.json'}: not valid JSON ({err})"
    if not isinstance(info, dict):
        return f"{folder / 'sweep.json'}: expected a JSON object, got {type(info).__name__}"
    for name in ("trials.parquet", "metrics.parquet", "grad_layers.parquet"):
        table = folder / name
        if not table.exists():
            continue
        for f in parts.files(table):
            try:
                pq.read_metadata(f)
            except Exception as err:  # noqa: BLE001 -- any failure means this file is bad
                return f"{f}: not a readable Parquet file ({short(err)})"
    return f"{folder}: results tables unreadable ({type(exc).__name__}: {short(exc)})"


def _tidy_trials(t: pd.DataFrame) -> pd.DataFrame:
    """Every schema column present (NaN where the writer had none), sorted by trial number."""
    t = t.copy()
    for col in schema.TRIAL_KEYS:
        if col not in t:
            t[col] = None if col in ("trial_id", "status", "error") else np.nan
    if t["trial_id"].isna().all():
        t["trial_id"] = [f"t{i}" for i in range(len(t))]
    t["trial_id"] = t["trial_id"].astype(str)
    t["status"] = t["status"].fillna(Status.FAILED).astype(str).str.upper()
    for col in (
        "metric",
        "best_dev_loss",
        "best_dev_acc",
        "test_acc",
        "test_loss",
        "test_f1_macro",
        "iterations",
        "samples",
        "train_s",
        "best_iteration",
    ):
        if not _listlike_column(t[col]):
            t[col] = pd.to_numeric(t[col], errors="coerce")
    t = t.sort_values(["trial_number", "trial_id"], kind="stable", na_position="last")
    return t.reset_index(drop=True)


def _listlike_column(col: pd.Series) -> bool:
    return col.map(lambda v: isinstance(v, (list, tuple, np.ndarray))).any()


def _tidy_steps(m: pd.DataFrame) -> pd.DataFrame:
    if m.empty:
        return m
    m = m.copy()
    if "trial_id" in m:
        m["trial_id"] = m["trial_id"].astype(str)
    return m


def times(col: pd.Series) -> pd.Series:
    """Trial start/end times as UTC timestamps, whatever form the writer chose."""
    try:
        if pd.api.types.is_datetime64_any_dtype(col):
            return pd.to_datetime(col, utc=True)
        if pd.api.types.is_numeric_dtype(col):
            return pd.to_datetime(col, unit="s", utc=True, errors="coerce")
        return pd.to_datetime(col, utc=True, errors="coerce", format="ISO8601")
    except (ValueError, TypeError):
        return pd.Series(pd.NaT, index=col.index, dtype="datetime64[ns, UTC]")


def open_study(sweep: Sweep) -> tuple[Any, str]:
    """The sweep's Optuna study from optuna.db (read only), or None and why not."""
    if not sweep.study_path.is_file():
        return None, "no optuna.db in the results folder"
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    url = f"sqlite:///{sweep.study_path.resolve()}"
    try:
        names = optuna.study.get_all_study_names(storage=url)
        if not names:
            return None, "optuna.db holds no study"
        name = sweep.name if sweep.name in names else names[0]
        return _in_memory(optuna.load_study(study_name=name, storage=url)), ""
    except Exception as exc:  # noqa: BLE001 -- a damaged or foreign optuna.db is a note
        return None, f"could not open optuna.db ({type(exc).__name__}: {exc})"


def _in_memory(study: Any) -> Any:
    """The study read once into an in-memory copy: fANOVA and Optuna's importance plot read
    every trial several times, and each read of a 5,000-trial study from SQLite took 1.5 s."""
    import optuna

    copy = optuna.create_study(study_name=study.study_name, directions=study.directions)
    copy.add_trials(study.get_trials(deepcopy=False))
    for key, value in study.user_attrs.items():
        copy.set_user_attr(key, value)
    if study.metric_names:
        copy.set_metric_names(study.metric_names)
    return copy
