"""`python -m harness.report results/<name> [results/<other> ...] [--out DIR]`.

Turns a sweep's results folder into answers: which settings won and how they compare, how
much compute early termination saved, which parameters mattered, whether the best value sits
at the edge of its range, and what the gradients did. The same blocks go to the terminal and
to a self-contained report.html (PNG figures embedded as base64, no external CSS/JS); the
PNGs are also written beside it. Several folders add one comparison table, one row per sweep.

Only pandas is needed for the tables; matplotlib (harness.plots) and Optuna are imported when
a report is written, so a wrong folder fails fast with one line.
"""

from __future__ import annotations

import argparse
import base64
import html
import json
import math
import os
import textwrap
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from harness import schema
from harness.errors import UserError, exit_on_user_error

TOP_K = 5
EDGE_FRAC = 0.05  # "at the edge": within 5% of min or max, on the parameter's own scale
MIN_IMPORTANCE_TRIALS = 3  # fANOVA needs a few finished trials to say anything
REQUIRED_FILES = ("trials.parquet", "sweep.json")
PREFIX = schema.PARAM_PREFIX


# ------------------------------------------------------------------------------------------
# loading


@dataclass(frozen=True)
class Objective:
    name: str
    goal: str = "maximize"

    @property
    def maximize(self) -> bool:
        return not str(self.goal).lower().startswith("min")


@dataclass
class Sweep:
    """One results folder: the three tables, the resolved spec, and where optuna.db lives."""

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
                if _distribution(ps) != "constant":
                    out.append(n)
            elif self.trials[PREFIX + n].map(_key).nunique() > 1:
                out.append(n)
        return out

    @property
    def log_params(self) -> set[str]:
        return {n for n, ps in self.param_specs.items() if "log" in _distribution(ps)}

    @property
    def study_path(self) -> Path:
        return self.path / "optuna.db"


def _distribution(ps: dict[str, Any]) -> str:
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


def load_sweep(path: str | os.PathLike[str]) -> Sweep:
    """Read a results folder written by harness.sweep: the one place that reads the files
    (through harness.results.load), with every problem as one UserError line."""
    from harness import results

    p = Path(path)
    if not p.is_dir():
        raise UserError(f"{p}: not a results folder (no such directory)")
    missing = [f for f in REQUIRED_FILES if not (p / f).is_file()]
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
        f = folder / name
        if f.is_file():
            try:
                pq.read_metadata(f)
            except Exception as err:  # noqa: BLE001 -- any failure means this file is bad
                return f"{f}: not a readable Parquet file ({_short(err)})"
    return f"{folder}: results tables unreadable ({type(exc).__name__}: {_short(exc)})"


def _tidy_trials(t: pd.DataFrame) -> pd.DataFrame:
    """Every schema column present (NaN where the writer had none), sorted by trial number."""
    t = t.copy()
    for col in schema.TRIAL_KEYS:
        if col not in t:
            t[col] = None if col in ("trial_id", "status", "error") else np.nan
    if t["trial_id"].isna().all():
        t["trial_id"] = [f"t{i}" for i in range(len(t))]
    t["trial_id"] = t["trial_id"].astype(str)
    t["status"] = t["status"].fillna("FAILED").astype(str).str.upper()
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
        return optuna.load_study(study_name=name, storage=url), ""
    except Exception as exc:  # noqa: BLE001 -- a damaged or foreign optuna.db is a note
        return None, f"could not open optuna.db ({type(exc).__name__}: {exc})"


# ------------------------------------------------------------------------------------------
# values


def _py(v: Any) -> Any:
    """A cell as plain Python (numpy -> builtins, JSON list text -> list, NaN -> None)."""
    if isinstance(v, np.ndarray):
        return [_py(x) for x in v.tolist()]
    if isinstance(v, (list, tuple)):
        return [_py(x) for x in v]
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, float) and math.isnan(v):
        return None
    if v is pd.NA or v is pd.NaT:
        return None
    if isinstance(v, str) and v[:1] in "[{" and v[-1:] in "]}":
        try:
            return json.loads(v)
        except json.JSONDecodeError:
            return v
    return v


def _key(v: Any) -> str:
    """A hashable stand-in for a cell (lists included)."""
    return json.dumps(_py(v), sort_keys=True, default=str)


def _number(v: Any) -> float | None:
    v = _py(v)
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        return None
    return float(v)


def _fmt(v: Any) -> str:
    """One table cell as text: 4 significant digits, thousands separators, '-' for missing."""
    v = _py(v)
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return f"{v:,}" if abs(v) >= 10_000 else str(v)
    if isinstance(v, float):
        if not math.isfinite(v):
            return str(v)
        if v == int(v) and abs(v) < 1e15:
            return _fmt(int(v))
        if abs(v) >= 10_000:
            return f"{v:,.0f}"
        return f"{v:.4g}"
    if isinstance(v, (list, dict)):
        return json.dumps(v)
    return str(v)


def _short(text: Any, n: int = 110) -> str:
    s = " ".join(str(text).split())
    return s if len(s) <= n else s[: n - 3] + "..."


def _label(row: pd.Series) -> str:
    n = _number(row.get("trial_number"))
    return f"#{int(n)}" if n is not None else str(row.get("trial_id"))


def _rank_corr(x: pd.Series, y: pd.Series) -> tuple[float | None, int]:
    """Spearman's rho (Pearson on ranks; no scipy needed) over the rows where both are finite."""
    d = pd.DataFrame(
        {"x": pd.to_numeric(x, errors="coerce"), "y": pd.to_numeric(y, errors="coerce")}
    )
    d = d[np.isfinite(d["x"]) & np.isfinite(d["y"])]
    if len(d) < 3 or d["x"].nunique() < 2 or d["y"].nunique() < 2:
        return None, len(d)
    return float(d["x"].rank().corr(d["y"].rank())), len(d)


def _times(col: pd.Series) -> pd.Series:
    """Trial start/end times as UTC timestamps, whatever form the writer chose."""
    try:
        if pd.api.types.is_datetime64_any_dtype(col):
            return pd.to_datetime(col, utc=True)
        if pd.api.types.is_numeric_dtype(col):
            return pd.to_datetime(col, unit="s", utc=True, errors="coerce")
        return pd.to_datetime(col, utc=True, errors="coerce", format="ISO8601")
    except (ValueError, TypeError):
        return pd.Series(pd.NaT, index=col.index, dtype="datetime64[ns, UTC]")


# ------------------------------------------------------------------------------------------
# the answers


def status_counts(sweep: Sweep) -> pd.Series:
    """Trials per status, every schema status listed (0 where none)."""
    counts = sweep.trials["status"].value_counts()
    order = list(schema.STATUSES) + sorted(set(counts.index) - set(schema.STATUSES))
    return counts.reindex(order, fill_value=0).astype(int)


def ranked(sweep: Sweep) -> pd.DataFrame:
    """Trials best first by the objective: COMPLETED ones (they have test metrics); when none
    completed, every trial by the last value it reported."""
    t = sweep.trials
    pool = t[(t["status"] == "COMPLETED") & t["objective"].notna()]
    if pool.empty:
        pool = t[t["objective"].notna()]
    return pool.sort_values("objective", ascending=not sweep.objective.maximize, kind="stable")


def best_trial(sweep: Sweep) -> pd.Series | None:
    r = ranked(sweep)
    return None if r.empty else r.iloc[0]


def top_table(sweep: Sweep, k: int = TOP_K) -> pd.DataFrame:
    cols = [
        "trial_number",
        "status",
        "objective",
        "best_dev_acc",
        "best_dev_loss",
        "test_acc",
        "test_f1_macro",
        "iterations",
        "train_s",
    ]
    r = ranked(sweep).head(k)
    out = r[cols].rename(columns={"trial_number": "trial"})
    out.insert(0, "rank", range(1, len(out) + 1))
    for n in sweep.searched:
        out[n] = r[PREFIX + n]
    return out.reset_index(drop=True)


def best_config(sweep: Sweep, best: pd.Series) -> dict[str, Any]:
    """The `parameters` block with every setting pinned to the best trial's value."""
    out: dict[str, Any] = {}
    for n in list(sweep.param_specs) + [p for p in sweep.param_names if p not in sweep.param_specs]:
        v = _py(best.get(PREFIX + n))
        if v is None and "value" in sweep.param_specs.get(n, {}):
            v = _py(sweep.param_specs[n]["value"])
        if v is None:
            continue
        if isinstance(v, float):
            v = float(f"{v:.4g}")
        out[n] = {"value": v}
    return out


def best_config_yaml(sweep: Sweep, best: pd.Series) -> str:
    return yaml.safe_dump(
        {"parameters": best_config(sweep, best)},
        sort_keys=False,
        default_flow_style=None,
        allow_unicode=True,
        width=100,
    )


@dataclass
class Compute:
    """Trial-iterations and trial-seconds run, and what they would have been without pruning.

    "To the end" lets every PRUNED trial train as many samples as the longest COMPLETED trial
    (samples, not iterations, so a searched batch size does not skew it), scaling its
    iterations and seconds by the same factor; other trials count what they ran.
    """

    trials: int
    pruned: int
    iterations_run: float
    iterations_full: float
    seconds_run: float
    seconds_full: float
    full_run_samples: float

    @property
    def iterations_saved(self) -> float:
        return self.iterations_full - self.iterations_run

    @property
    def saved_frac(self) -> float:
        return self.iterations_saved / self.iterations_full if self.iterations_full > 0 else 0.0

    @property
    def seconds_saved(self) -> float:
        return self.seconds_full - self.seconds_run


def compute(sweep: Sweep) -> Compute:
    t = sweep.trials
    iters = t["iterations"].fillna(0).astype(float)
    secs = t["train_s"].fillna(0).astype(float)
    unit = t["samples"].fillna(0).astype(float)
    if not (unit > 0).any():
        unit = iters
    done = t["status"] == "COMPLETED"
    ref = unit[done].max() if done.any() and unit[done].max() > 0 else unit.max()
    ref_iters = iters[done].max() if done.any() else iters.max()
    ref_secs = secs[done].median() if done.any() else secs.max()
    iters_full, secs_full = iters.copy(), secs.copy()
    for i in t.index[t["status"] == "PRUNED"]:
        if unit[i] > 0:
            f = max(1.0, ref / unit[i])
            iters_full[i], secs_full[i] = iters[i] * f, secs[i] * f
        else:
            iters_full[i], secs_full[i] = ref_iters, ref_secs
    return Compute(
        trials=len(t),
        pruned=int((t["status"] == "PRUNED").sum()),
        iterations_run=float(iters.sum()),
        iterations_full=float(np.nansum(iters_full)),
        seconds_run=float(secs.sum()),
        seconds_full=float(np.nansum(secs_full)),
        full_run_samples=float(ref) if pd.notna(ref) else 0.0,
    )


def compute_table(c: Compute) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "": ["run", "if run to the end", "saved by early termination"],
            "trial-iterations": [c.iterations_run, c.iterations_full, c.iterations_saved],
            "trial-hours": [c.seconds_run / 3600, c.seconds_full / 3600, c.seconds_saved / 3600],
            "share": [None, None, f"{c.saved_frac:.1%}"],
        }
    )


def compute_text(c: Compute) -> str:
    ran = (
        f"{c.trials} trials ran {_fmt(c.iterations_run)} trial-iterations "
        f"({c.seconds_run / 3600:.2f} trial-hours)."
    )
    if c.pruned == 0:
        return ran + " No trial was stopped early, so early termination saved nothing."
    return (
        f"{ran} Run to the end, the {c.pruned} pruned trial(s) would have trained as many "
        f"samples as the longest completed trial ({_fmt(c.full_run_samples)}): "
        f"{_fmt(c.iterations_full)} trial-iterations in all. Early termination saved "
        f"{_fmt(c.iterations_saved)} ({c.saved_frac:.1%})."
    )


def param_importance(sweep: Sweep, study: Any) -> tuple[pd.Series | None, str]:
    """fANOVA importance over the study's finished trials, or None and why not."""
    if study is None:
        return None, "parameter importance skipped: no Optuna study"
    import optuna
    from optuna.importance import FanovaImportanceEvaluator

    finished = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if len(finished) < MIN_IMPORTANCE_TRIALS:
        return None, (
            f"parameter importance skipped: {len(finished)} finished trial(s) in the study "
            f"(need at least {MIN_IMPORTANCE_TRIALS})"
        )
    multi = len(study.directions) > 1
    try:
        imp = optuna.importance.get_param_importances(
            study,
            evaluator=FanovaImportanceEvaluator(seed=0),
            target=(lambda tr: tr.values[0]) if multi else None,
        )
    except Exception as exc:  # noqa: BLE001 -- fANOVA refuses some spaces; a note, no crash
        return None, f"parameter importance skipped: {type(exc).__name__}: {_short(exc)}"
    if not imp:
        return None, "parameter importance skipped: no parameter varied across finished trials"
    note = f"fANOVA over {len(finished)} finished trials"
    if len(finished) < 10:
        note += " (few trials: a rough guide only)"
    if multi:
        note += f"; target: the first objective ({sweep.objective.name})"
    return pd.Series(imp, dtype=float).sort_values(ascending=False), note


def edge_warnings(sweep: Sweep, best: pd.Series) -> list[str]:
    """Best values at the edge of a searched range: the optimum may lie outside it."""
    out = []
    for n, ps in sweep.param_specs.items():
        v = _number(best.get(PREFIX + n))
        d = _distribution(ps)
        if v is None or d in ("constant",):
            continue
        if d == "categorical":
            vals = [_number(x) for x in ps.get("values", [])]
            if len(vals) >= 3 and all(x is not None for x in vals):
                if v == min(vals):
                    out.append(
                        f"{n}={_fmt(v)} is the smallest of its values {_fmt(ps['values'])}: "
                        "try smaller ones"
                    )
                elif v == max(vals):
                    out.append(
                        f"{n}={_fmt(v)} is the largest of its values {_fmt(ps['values'])}: "
                        "try larger ones"
                    )
            continue
        lo, hi = _number(ps.get("min")), _number(ps.get("max"))
        if lo is None or hi is None or hi <= lo:
            continue
        log = "log" in d and lo > 0 and v > 0
        f = math.log if log else (lambda x: x)
        pos = (f(v) - f(lo)) / (f(hi) - f(lo))
        scale = " (log scale)" if log else ""
        rng = f"[{_fmt(lo)}, {_fmt(hi)}]"
        if pos <= EDGE_FRAC:
            out.append(
                f"{n}={_fmt(v)} is at the lower edge of its range {rng}{scale}: "
                "the optimum may lie below min; widen the range"
            )
        elif pos >= 1 - EDGE_FRAC:
            out.append(
                f"{n}={_fmt(v)} is at the upper edge of its range {rng}{scale}: "
                "the optimum may lie above max; widen the range"
            )
    return out


def trial_lr(sweep: Sweep) -> pd.Series:
    """Learning rate per trial_id: the searched value, else the first reported lr, else the
    spec's fixed train.learning_rate."""
    t = sweep.trials
    if PREFIX + "learning_rate" in t:
        lr = pd.to_numeric(t[PREFIX + "learning_rate"], errors="coerce")
        return pd.Series(lr.values, index=t["trial_id"])
    out = pd.Series(np.nan, index=t["trial_id"], dtype=float)
    m = sweep.metrics
    if not m.empty and "lr" in m:
        first = m.sort_values("iteration").groupby("trial_id")["lr"].first()
        out = out.fillna(pd.to_numeric(first, errors="coerce").reindex(out.index))
    fixed = _number((sweep.spec.get("train") or {}).get("learning_rate"))
    return out.fillna(fixed) if fixed is not None else out


@dataclass
class GradHealth:
    per_trial: pd.DataFrame  # one row per trial: lr, flags, grad norms, dev loss
    flagged: pd.DataFrame  # vanished, exploded or diverged
    diverged_lr: tuple[float, float] | None
    healthy_lr: tuple[float, float] | None
    correlations: pd.DataFrame
    notes: list[str] = field(default_factory=list)


def grad_health(sweep: Sweep) -> GradHealth:
    t = sweep.trials
    m = sweep.metrics
    lr = trial_lr(sweep)
    per = pd.DataFrame(
        {
            "trial": t["trial_number"].values,
            "trial_id": t["trial_id"].values,
            "status": t["status"].values,
            "lr": lr.reindex(t["trial_id"]).values,
            "best_dev_loss": t["best_dev_loss"].values,
        }
    )
    notes = []
    if m.empty or "grad_norm" not in m:
        notes.append("no gradient statistics in metrics.parquet")
        for c in ("vanished", "exploded", "nonfinite_steps", "grad_norm", "grad_norm_max"):
            per[c] = 0 if c in ("vanished", "exploded", "nonfinite_steps") else np.nan
    else:
        g = m.copy()
        for c in ("grad_vanishing", "grad_exploding"):
            g[c] = g[c].fillna(False).astype(bool) if c in g else False
        g["grad_nonfinite"] = pd.to_numeric(g.get("grad_nonfinite", 0), errors="coerce").fillna(0)
        for c in ("grad_norm", "grad_norm_max"):
            v = pd.to_numeric(g[c], errors="coerce") if c in g else pd.Series(np.nan, index=g.index)
            g[c] = v.where(np.isfinite(v))
        agg = g.groupby("trial_id").agg(
            vanished=("grad_vanishing", "sum"),
            exploded=("grad_exploding", "sum"),
            nonfinite_steps=("grad_nonfinite", "sum"),
            grad_norm=("grad_norm", "median"),
            grad_norm_max=("grad_norm_max", "max"),
        )
        per = per.join(agg, on="trial_id")
        for c in ("vanished", "exploded", "nonfinite_steps"):
            per[c] = per[c].fillna(0).astype(int)
    diverged = (per["status"] == "DIVERGED") | (per["nonfinite_steps"] > 0)
    per["diverged"] = diverged
    flagged = per[(per["vanished"] > 0) | (per["exploded"] > 0) | diverged]

    def lr_range(mask: pd.Series) -> tuple[float, float] | None:
        v = pd.to_numeric(per.loc[mask, "lr"], errors="coerce").dropna()
        return (float(v.min()), float(v.max())) if len(v) else None

    ok = ~diverged & per["status"].isin(["COMPLETED", "PRUNED"])
    rows = []
    for a, b, label in (
        ("grad_norm", "lr", "median grad norm vs learning rate"),
        ("grad_norm", "best_dev_loss", "median grad norm vs best dev loss"),
        ("lr", "best_dev_loss", "learning rate vs best dev loss"),
    ):
        rho, n = _rank_corr(per.loc[ok, a], per.loc[ok, b])
        rows.append({"pair": label, "spearman rho": rho, "trials": n, "reading": _reading(rho)})
    return GradHealth(
        per_trial=per,
        flagged=flagged,
        diverged_lr=lr_range(diverged),
        healthy_lr=lr_range(ok),
        correlations=pd.DataFrame(rows),
        notes=notes,
    )


def _reading(rho: float | None) -> str:
    if rho is None:
        return "too few trials"
    size = abs(rho)
    strength = "weak" if size < 0.3 else "moderate" if size < 0.6 else "strong"
    return f"{strength} {'positive' if rho > 0 else 'negative'}" if size >= 0.05 else "none"


def objective_values(sweep: Sweep, study: Any) -> pd.DataFrame | None:
    """One column per objective, aligned with sweep.trials: from the study's trial values
    (what Optuna was told), else from trials.parquet columns named after the objectives."""
    objs = sweep.objectives
    names = [o.name for o in objs]
    t = sweep.trials
    if len(objs) == 1:
        return pd.DataFrame({names[0]: t["objective"]}, index=t.index)
    if study is not None:
        vals = {
            tr.number: tr.values
            for tr in study.get_trials(deepcopy=False)
            if tr.values is not None and len(tr.values) == len(objs)
        }
        if vals:
            rows = [vals.get(int(n)) if _number(n) is not None else None for n in t["trial_number"]]
            return pd.DataFrame(
                [r if r is not None else [np.nan] * len(objs) for r in rows],
                columns=names,
                index=t.index,
            )
    out = {}
    for o in objs:
        for col in (f"metric.{o.name}", o.name, f"best_{o.name}"):
            if col in t:
                out[o.name] = pd.to_numeric(t[col], errors="coerce")
                break
    return pd.DataFrame(out, index=t.index) if len(out) == len(objs) else None


def pareto_front(values: pd.DataFrame, objectives: list[Objective]) -> pd.Index:
    """Rows no other row beats on every objective (ties kept)."""
    v = values.dropna()
    sign = np.array([-1.0 if o.maximize else 1.0 for o in objectives])
    x = v.to_numpy(dtype=float) * sign  # all minimised
    keep = []
    for i in range(len(x)):
        dominated = np.any(np.all(x <= x[i], axis=1) & np.any(x < x[i], axis=1))
        if not dominated:
            keep.append(v.index[i])
    return pd.Index(keep)


def best_confusion(sweep: Sweep, best: pd.Series) -> tuple[np.ndarray | None, list[str], str]:
    """The best trial's confusion matrix and class names, or None and why not."""
    if "confusion" not in sweep.trials:
        return None, [], "confusion matrix skipped: trials.parquet has no `confusion` column"
    raw = _py(best.get("confusion"))
    if not raw:
        return None, [], "confusion matrix skipped: the best trial has none"
    try:
        mat = np.asarray([[int(x) for x in row] for row in raw])
    except (TypeError, ValueError):
        return None, [], "confusion matrix skipped: not a list of lists of counts"
    if mat.ndim != 2 or mat.shape[0] != mat.shape[1]:
        return None, [], f"confusion matrix skipped: shape {mat.shape} is not square"
    classes: list[Any] = []
    for where in (sweep.spec, sweep.info):  # sweep.json: info["data"]["classes"]
        data = where.get("data")
        classes = (
            classes
            or where.get("classes")
            or (data.get("classes") if isinstance(data, dict) else None)
            or []
        )
    classes = [str(c) for c in classes]
    if len(classes) != mat.shape[0]:
        classes = [str(i) for i in range(mat.shape[0])]
    return mat, classes, ""


# ------------------------------------------------------------------------------------------
# blocks: the same content for the terminal and the HTML page


@dataclass
class Block:
    kind: str  # heading | text | warn | pre | table | image
    text: str = ""
    table: pd.DataFrame | None = None
    path: Path | None = None


@dataclass
class SweepReport:
    sweep: Sweep
    out: Path
    blocks: list[Block]
    figures: list[Path]
    facts: dict[str, Any]  # the numbers behind the tables (for tests and notebooks)

    def text(self) -> str:
        return render_text(self.blocks)


def _table_text(df: pd.DataFrame) -> str:
    if df.empty:
        return "(none)"
    return df.map(_fmt).to_string(index=False)


def render_text(blocks: list[Block]) -> str:
    lines: list[str] = []
    for b in blocks:
        if b.kind == "heading":
            lines += ["", f"== {b.text} =="]
        elif b.kind == "warn":
            lines.append(f"WARNING: {b.text}")
        elif b.kind == "table":
            lines.append(_table_text(b.table))
        elif b.kind == "image":
            lines.append(f"figure: {b.path}")
        elif b.kind == "text":
            lines.append(textwrap.fill(b.text, width=100, break_on_hyphens=False))
        else:
            lines.append(b.text.rstrip("\n"))
    return "\n".join(lines).lstrip("\n") + "\n"


CSS = (
    "body{font-family:system-ui,sans-serif;max-width:1150px;margin:1.5em auto;padding:0 1em;"
    "color:#222}h1{font-size:1.5em}h2{font-size:1.15em;border-bottom:1px solid #ddd;"
    "padding-bottom:.2em;margin-top:1.6em}table{border-collapse:collapse;font-size:13px;"
    "margin:.4em 0}td,th{border:1px solid #ccc;padding:2px 7px;text-align:right}"
    "th{background:#f2f2f2}pre{background:#f6f6f6;padding:.6em;overflow-x:auto}"
    ".warn{color:#a33;font-weight:600}img{max-width:100%;display:block;margin:.5em 0}"
    "figcaption{font-size:12px;color:#666}"
)


def render_html(title: str, blocks: list[Block]) -> str:
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title><style>{CSS}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
    ]
    for b in blocks:
        if b.kind == "heading":
            parts.append(f"<h2>{html.escape(b.text)}</h2>")
        elif b.kind == "warn":
            parts.append(f'<p class="warn">warning: {html.escape(b.text)}</p>')
        elif b.kind == "pre":
            parts.append(f"<pre>{html.escape(b.text)}</pre>")
        elif b.kind == "table":
            if b.table is None or b.table.empty:
                parts.append("<p>(none)</p>")
            else:
                parts.append(b.table.map(_fmt).to_html(index=False, border=0, escape=True))
        elif b.kind == "image":
            data = base64.b64encode(b.path.read_bytes()).decode("ascii")
            parts.append(
                f'<figure><img alt="{html.escape(b.path.name)}" '
                f'src="data:image/png;base64,{data}"><figcaption>{html.escape(b.text)}'
                "</figcaption></figure>"
            )
        else:
            parts.append(f"<p>{html.escape(b.text)}</p>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def write_atomic(path: Path, text: str) -> None:
    from harness.results import atomic_write_bytes

    atomic_write_bytes(path, text.encode("utf-8"))


# ------------------------------------------------------------------------------------------
# one sweep


def _describe(sweep: Sweep) -> str:
    spec = sweep.spec
    data = spec.get("data")
    data_name = data.get("name") if isinstance(data, dict) else data
    objs = ", ".join(f"{o.name} ({o.goal})" for o in sweep.objectives)
    early = spec.get("early_terminate")
    early_s = early.get("type") if isinstance(early, dict) else early
    return (
        f"model {spec.get('model', '?')} on {data_name or '?'}; method {spec.get('method', '?')}; "
        f"objective {objs}; early termination {early_s or 'none'}; folder {sweep.path}"
    )


def build_report(
    sweep: Sweep, out: Path, *, top: int = TOP_K, dpi: int | None = None, figures: bool = True
) -> SweepReport:
    """Compute every table, draw every figure into `out` (unless figures=False), write
    out/report.html."""
    out.mkdir(parents=True, exist_ok=True)
    study, study_note = open_study(sweep)
    t = sweep.trials
    obj = sweep.objective
    blocks: list[Block] = [Block("text", _describe(sweep))]
    drawn: list[Path] = []
    facts: dict[str, Any] = {}
    draw = figures
    if draw:
        from harness import plots

        dpi = dpi or plots.DPI

    def figure(make: Callable[[], Path], caption: str) -> None:
        """Draw lazily, so figures=False skips matplotlib altogether."""
        if draw:
            path = make()
            drawn.append(path)
            blocks.append(Block("image", caption, path=path))

    # status
    counts = status_counts(sweep)
    facts["status_counts"] = counts.to_dict()
    blocks.append(Block("heading", "Trials by status"))
    blocks.append(
        Block(
            "table",
            table=pd.DataFrame(
                {
                    "status": counts.index,
                    "trials": counts.values,
                    "share": [f"{c / max(1, len(t)):.0%}" for c in counts.values],
                }
            ),
        )
    )
    bad = t[t["status"].isin(["FAILED", "DIVERGED"])]
    for _, row in bad.iterrows():
        why = row.get("error")
        blocks.append(
            Block(
                "text",
                f"{_label(row)} {row['status']}: "
                f"{_short(why) if isinstance(why, str) and why else 'no reason recorded'}",
            )
        )

    # top trials + best config
    best = best_trial(sweep)
    facts["best_trial"] = None if best is None else _py(best.get("trial_number"))
    blocks.append(Block("heading", f"Top trials by {obj.name} ({obj.goal})"))
    if best is None:
        blocks.append(Block("text", "no trial reported a value of the objective"))
    else:
        tt = top_table(sweep, top)
        facts["top"] = tt
        blocks.append(Block("table", table=tt))
        blocks.append(Block("heading", f"Best config (trial {_label(best)}), ready to paste"))
        facts["best_config"] = best_config(sweep, best)
        blocks.append(Block("pre", best_config_yaml(sweep, best)))
        warns = edge_warnings(sweep, best)
        facts["edge_warnings"] = warns
        blocks += [Block("warn", w) for w in warns]
    if len(sweep.objectives) > 1:
        vals = objective_values(sweep, study)
        if vals is not None and vals.notna().all(axis=1).sum() >= 1:
            front = pareto_front(
                vals[t["status"] == "COMPLETED"] if (t["status"] == "COMPLETED").any() else vals,
                sweep.objectives,
            )
            facts["pareto"] = [_py(t.at[i, "trial_number"]) for i in front]
            blocks.append(Block("heading", "Pareto front"))
            pt = pd.concat(
                [
                    t.loc[front, ["trial_number"]].rename(columns={"trial_number": "trial"}),
                    vals.loc[front],
                ],
                axis=1,
            )
            for n in sweep.searched:
                pt[n] = t.loc[front, PREFIX + n]
            blocks.append(Block("table", table=pt.sort_values(sweep.objectives[0].name)))
            if len(sweep.objectives) >= 2 and len(front):
                figure(
                    lambda: plots.pareto(
                        vals, front, [o.name for o in sweep.objectives], out / "pareto.png", dpi
                    ),
                    f"Pareto front of {sweep.objectives[0].name} and {sweep.objectives[1].name}",
                )
        else:
            blocks.append(Block("text", "Pareto front skipped: no per-objective values found"))

    # compute
    c = compute(sweep)
    facts["compute"] = c
    blocks.append(Block("heading", "Compute"))
    blocks.append(Block("table", table=compute_table(c)))
    blocks.append(Block("text", compute_text(c)))

    # importance
    imp, imp_note = param_importance(sweep, study)
    facts["importance"] = None if imp is None else imp.to_dict()
    blocks.append(Block("heading", "Parameter importance"))
    if study is None and study_note:
        blocks.append(Block("text", study_note))
    blocks.append(Block("text", imp_note))
    if imp is not None:
        blocks.append(
            Block("table", table=pd.DataFrame({"parameter": imp.index, "importance": imp.values}))
        )
        figure(
            lambda: plots.importance(imp, out / "importance.png", dpi),
            "fANOVA parameter importance",
        )

    # gradient health
    gh = grad_health(sweep)
    facts["grad_health"] = gh
    facts["diverged_lr"] = gh.diverged_lr
    blocks.append(Block("heading", "Gradient health"))
    blocks += [Block("text", n) for n in gh.notes]
    if gh.flagged.empty:
        blocks.append(Block("text", "no trial's gradients vanished, exploded or went non-finite"))
    else:
        cols = [
            "trial",
            "status",
            "lr",
            "vanished",
            "exploded",
            "nonfinite_steps",
            "grad_norm",
            "grad_norm_max",
        ]
        blocks.append(
            Block(
                "text",
                "trials whose gradients vanished or exploded (reports with "
                "the flag set), or that diverged:",
            )
        )
        blocks.append(
            Block(
                "table",
                table=gh.flagged[cols].rename(
                    columns={
                        "vanished": "vanished (reports)",
                        "exploded": "exploded (reports)",
                        "grad_norm": "median grad norm",
                        "grad_norm_max": "max grad norm",
                    }
                ),
            )
        )
    if gh.diverged_lr is not None:
        lo, hi = gh.diverged_lr
        n = int(gh.per_trial["diverged"].sum())
        msg = f"{n} trial(s) diverged at learning rate {_fmt(lo)}" + (
            "" if lo == hi else f" .. {_fmt(hi)}"
        )
        if gh.healthy_lr is not None:
            msg += f"; the others ran at {_fmt(gh.healthy_lr[0])} .. {_fmt(gh.healthy_lr[1])}"
        blocks.append(Block("text", msg))
    else:
        blocks.append(Block("text", "no trial diverged"))
    blocks.append(
        Block(
            "text",
            "how the global gradient norm relates to the learning rate and "
            "to dev loss, across trials that did not diverge:",
        )
    )
    blocks.append(Block("table", table=gh.correlations))

    # figures
    blocks.append(Block("heading", "Figures"))
    hist = t.copy()
    start, end = _times(t["start_time"]), _times(t["end_time"])
    if end.notna().any():
        hist["wall_min"] = (end - start.min()).dt.total_seconds() / 60
    has_value = t["objective"].notna().any()
    if has_value:
        figure(
            lambda: plots.history(
                hist, "objective", obj.maximize, out / "history.png", dpi, label=obj.name
            ),
            "optimization history: objective per trial and best so far",
        )
    else:
        blocks.append(Block("text", "history and parameter plots skipped: no trial has a value"))
    top_rows = ranked(sweep).head(top)
    if not sweep.metrics.empty and {"dev_loss", "dev_acc", "iteration"} <= set(sweep.metrics):
        labels = {r["trial_id"]: _label(r) for _, r in top_rows.iterrows()}
        figure(
            lambda: plots.learning_curves(sweep.metrics, labels, out / "curves.png", dpi),
            "learning curves of the top trials",
        )
        if "grad_norm" in sweep.metrics:
            lr = trial_lr(sweep)
            div = set(gh.per_trial.loc[gh.per_trial["diverged"], "trial_id"])
            best_id = None if best is None else best["trial_id"]
            figure(
                lambda: plots.grad_norms(
                    sweep.metrics, sweep.layers, lr, div, best_id, out / "grad_norms.png", dpi
                ),
                "gradient norms: global per trial (log scale) and per layer of the best trial",
            )
    else:
        blocks.append(Block("text", "learning and gradient curves skipped: no reports recorded"))
    if sweep.searched and has_value:
        cols = [PREFIX + n for n in sweep.searched]
        logp = {PREFIX + n for n in sweep.log_params}
        figure(
            lambda: plots.param_scatter(
                t, cols, logp, "objective", out / "params.png", dpi, label=obj.name
            ),
            f"each parameter against the objective ({obj.name}; pruned and diverged trials at "
            "their last report)",
        )
        done = t[(t["status"] == "COMPLETED") & t["objective"].notna()]
        if len(done) >= 2:
            figure(
                lambda: plots.parallel(
                    done, cols, logp, "objective", obj.maximize, out / "parallel.png", dpi, obj.name
                ),
                f"parallel coordinates of the completed trials, coloured by {obj.name}",
            )
    if best is not None:
        mat, classes, note = best_confusion(sweep, best)
        if mat is None:
            blocks.append(Block("text", note))
        else:
            facts["confusion"] = mat
            title = f"test confusion matrix, trial {_label(best)}"
            figure(
                lambda: plots.confusion(mat, classes, title, out / "confusion.png", dpi),
                f"confusion matrix of the best trial ({_label(best)}, test split)",
            )

    if not draw:
        blocks.append(Block("text", "figures skipped (--no-figures)"))
    rep = SweepReport(sweep, out, blocks, drawn, facts)
    write_atomic(out / "report.html", render_html(f"Sweep report: {sweep.name}", blocks))
    return rep


# ------------------------------------------------------------------------------------------
# several sweeps


def comparison_row(sweep: Sweep) -> dict[str, Any]:
    """One line of the comparison table: the trial with the best dev accuracy and its test
    accuracy (COMPLETED trials when there are any)."""
    t = sweep.trials
    spec = sweep.spec
    data = spec.get("data")
    done = t[t["status"] == "COMPLETED"]
    pool = done if done["best_dev_acc"].notna().any() else t
    acc = pd.to_numeric(pool["best_dev_acc"], errors="coerce")
    best_acc = test_acc = best_n = None
    if acc.notna().any():
        i = acc.idxmax()
        best_acc, test_acc, best_n = acc[i], t.at[i, "test_acc"], t.at[i, "trial_number"]
    c = compute(sweep)
    counts = status_counts(sweep)
    return {
        "sweep": sweep.name,
        "model": spec.get("model", "?"),
        "data": (data.get("name") if isinstance(data, dict) else data) or "?",
        "method": spec.get("method", "?"),
        "best dev acc": best_acc,
        "test acc": test_acc,
        "best trial": best_n,
        "trials": len(t),
        "pruned": int(counts.get("PRUNED", 0)),
        "failed/diverged": int(counts.get("FAILED", 0) + counts.get("DIVERGED", 0)),
        "trial-hours": c.seconds_run / 3600,
        "saved": f"{c.saved_frac:.0%}",
    }


def _percent(df: pd.DataFrame, cols: list[str]) -> pd.DataFrame:
    """Accuracies as the classic results table prints them (91.22%)."""
    out = df.copy().astype({c: object for c in cols})
    for c in cols:
        out[c] = [f"{v:.2%}" if _number(v) is not None else "-" for v in df[c]]
    return out


def comparison_table(sweeps: list[Sweep]) -> pd.DataFrame:
    return pd.DataFrame([comparison_row(s) for s in sweeps])


def _anytime(sweep: Sweep) -> pd.DataFrame:
    """Best completed dev accuracy so far against cumulative trial-hours (trials by end time)."""
    t = sweep.trials.copy()
    t["_end"] = _times(t["end_time"])
    t = t.sort_values(["_end", "trial_number"], kind="stable", na_position="last")
    hours = t["train_s"].fillna(0).cumsum() / 3600
    acc = t["best_dev_acc"].where(t["status"] == "COMPLETED")
    return pd.DataFrame({"hours": hours.values, "best": acc.cummax().values}).dropna()


def build_comparison(
    sweeps: list[Sweep], out: Path, *, dpi: int | None = None, figures: bool = True
) -> tuple[pd.DataFrame, list[Block]]:
    """One table and one anytime plot across sweeps, plus each sweep's best config; writes
    out/report.html. Each sweep's full report is its own command."""
    table = comparison_table(sweeps)
    blocks = [
        Block(
            "text",
            "one row per sweep: the trial with the best dev accuracy and its test "
            "accuracy; compute in trial-hours run, and the share early termination saved",
        ),
        Block("table", table=_percent(table, ["best dev acc", "test acc"])),
    ]
    curves = {s.name: _anytime(s) for s in sweeps}
    if figures and any(not c.empty for c in curves.values()):
        from harness import plots

        p = plots.anytime(
            curves, "best dev acc (completed trials)", out / "comparison.png", dpi or plots.DPI
        )
        blocks.append(Block("image", "best dev accuracy so far against compute", path=p))
    for s in sweeps:
        best = best_trial(s)
        blocks.append(Block("heading", f"{s.name}: best config"))
        blocks.append(Block("text", _describe(s)))
        if best is None:
            blocks.append(Block("text", "no trial reported a value of the objective"))
        else:
            blocks.append(
                Block("text", f"trial {_label(best)}, {s.objective.name} = {_fmt(best['metric'])}")
            )
            blocks.append(Block("pre", best_config_yaml(s, best)))
    out.mkdir(parents=True, exist_ok=True)
    write_atomic(out / "report.html", render_html("Sweep comparison", blocks))
    return table, blocks


# ------------------------------------------------------------------------------------------
# command line


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="python -m harness.report",
        description="Tables and plots of what a sweep found; several folders are compared.",
    )
    ap.add_argument(
        "folders", nargs="+", type=Path, help="results folder(s) written by harness.sweep"
    )
    ap.add_argument(
        "--out",
        type=Path,
        default=None,
        help=(
            "where to write report.html and the PNGs (default: <folder>/report; with several "
            "folders: comparison/ beside the first)"
        ),
    )
    ap.add_argument("--top", type=int, default=TOP_K, help="how many top trials to list and plot")
    ap.add_argument("--dpi", type=int, default=None, help="resolution of the PNG figures")
    ap.add_argument(
        "--no-figures",
        action="store_true",
        help="tables only: skip matplotlib (report.html without images)",
    )
    return ap


@exit_on_user_error
def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.top < 1:
        raise UserError(f"--top: must be >= 1, got {args.top}")
    if args.dpi is not None and args.dpi < 10:
        raise UserError(f"--dpi: must be >= 10, got {args.dpi}")
    sweeps = [load_sweep(p) for p in args.folders]  # every folder checked before writing
    figures = not args.no_figures
    if len(sweeps) == 1:
        s = sweeps[0]
        out = args.out or s.path / "report"
        rep = build_report(s, out, top=args.top, dpi=args.dpi, figures=figures)
        print(f"Sweep {s.name}")
        print(rep.text(), end="")
        print(f"\nreport: {out / 'report.html'} ({len(rep.figures)} figures beside it)")
        return 0
    out = args.out or sweeps[0].path.resolve().parent / "comparison"
    _, blocks = build_comparison(sweeps, out, dpi=args.dpi, figures=figures)
    print(f"Comparison of {len(sweeps)} sweeps")
    print(render_text(blocks), end="")
    print(f"\nreport: {out / 'report.html'}")
    return 0


if __name__ == "__main__":
    main()
