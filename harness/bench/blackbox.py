"""Recorded learning curves (a *table*): what `bench searchers --replay` answers trials from.

A table is a finished sweep folder, or a `bench record` folder written in the same format:
trials.parquet (one row per configuration: its `param.*` values, status, objective, train_s)
and metrics.parquet (one row per report: the objective's column and elapsed_s), with the
spec in sweep.json. `Blackbox` holds them as arrays: per configuration its searched values,
its curve of the objective by report index, the seconds at which each report arrived, its
end status and final objective value, and its total seconds. As Syne Tune's blackbox
repository does for its tabulated benchmarks, a searcher replayed against a table is
*restricted* to the recorded configurations (harness.bench.searchers.restriction).

Why no Ray and no Optuna import here: `bench record` writes tables on a bare GPU machine
(torch, numpy, pandas, pyarrow).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from harness.config import SweepSpec, spec_from_dict
from harness.errors import UserError
from harness.schema import Status
from harness.space import ParamSpec, encode_choice, thaw

PACKED_SUFFIX = ".npz"
# A trial's objective once it ended: the kept (best-dev-loss) weights' value where the metric
# names a report column (as harness.sweep.trial tells Optuna), else the last report's.
FINAL_FROM_SUMMARY = {
    "best_dev_acc": "best_dev_acc",
    "dev_acc": "best_dev_acc",
    "best_dev_loss": "best_dev_loss",
    "dev_loss": "best_dev_loss",
}


# ------------------------------------------------------------------------ configurations


def random_value(p: ParamSpec, rng: np.random.Generator) -> Any:
    """One value of `p` drawn uniformly (log-uniformly for log ranges), as a trial gets it."""
    if p.distribution == "constant":
        return thaw(p.value)
    if p.distribution == "categorical":
        return thaw(p.values[int(rng.integers(len(p.values)))])
    lo, hi = p.bounds()
    if p.distribution in ("log_uniform_values", "q_log_uniform_values") and lo > 0:
        return p.snap(math.exp(rng.uniform(math.log(lo), math.log(hi))))
    if p.integer:
        return p.snap(int(rng.integers(int(lo), int(hi) + 1)))
    return p.snap(rng.uniform(lo, hi))


def config_key(parameters: Mapping[str, ParamSpec], values: Mapping[str, Any]) -> str:
    """Equal for two trials with the same searched values (lists compared as JSON)."""
    return json.dumps(
        {n: encode_choice(thaw(values[n])) for n, p in parameters.items() if p.searched},
        sort_keys=True,
    )


def random_configs(spec: SweepSpec, n: int, seed: int) -> list[dict[str, Any]]:
    """`n` distinct configurations of the spec's searched parameters, uniformly drawn
    (seeded: the same call gives the same list); the first is the classic baseline when the
    spec has `baseline: true`, so a replay's trial 0 has a recorded answer."""
    rng = np.random.default_rng(seed)
    searched = spec.searched
    out: list[dict[str, Any]] = [spec.baseline_params()] if spec.baseline else []
    seen = {config_key(searched, c) for c in out}
    tries = 0
    while len(out) < n and tries < 100 * n:
        tries += 1
        c = {name: random_value(p, rng) for name, p in searched.items()}
        key = config_key(searched, c)
        if key not in seen:
            seen.add(key)
            out.append(c)
    return out[:n]


# ------------------------------------------------------------------------ the table


@dataclass
class Blackbox:
    """A table's configurations and curves as arrays (row i: configuration i).

    values[i, r]: the objective at report r+1 (NaN past the trial's last report);
    seconds[i, r]: seconds since the trial started when report r+1 arrived;
    total_s[i]: the trial's whole time (its final test included); final[i]: its objective
    as told to Optuna when it COMPLETED (NaN otherwise); status[i]: how it ended."""

    spec: SweepSpec
    configs: list[dict[str, Any]]
    values: np.ndarray
    seconds: np.ndarray
    total_s: np.ndarray
    final: np.ndarray
    status: np.ndarray
    max_t: int
    source: str = ""

    def __post_init__(self) -> None:
        self.index = {config_key(self.spec.searched, c): i for i, c in enumerate(self.configs)}

    def __len__(self) -> int:
        return len(self.configs)

    @property
    def goal(self) -> str:
        return self.spec.metric.goal

    def reports(self, i: int) -> int:
        """How many reports configuration i made."""
        return int(np.isfinite(self.values[i]).sum())

    def lookup(self, params: Mapping[str, Any]) -> int:
        """The row of a trial's values (a restricted searcher only proposes recorded ones)."""
        key = config_key(self.spec.searched, params)
        if key not in self.index:
            raise KeyError(f"configuration not in the table: {key}")
        return self.index[key]

    def optimum(self) -> float:
        """The best final objective of any recorded configuration."""
        ok = self.final[np.isfinite(self.final)]
        if not ok.size:
            raise UserError(f"{self.source}: no recorded configuration completed")
        return float(ok.max() if self.goal == "maximize" else ok.min())

    def baseline(self) -> int | None:
        """The row of the classic baseline configuration, if recorded."""
        if not self.spec.baseline:
            return None
        return self.index.get(config_key(self.spec.searched, self.spec.baseline_params()))

    # -------------------------------------------------------------------- reading

    @classmethod
    def from_folder(cls, folder: str | Path) -> Blackbox:
        """A finished sweep (or `bench record`) folder as a table; only trials that ran to
        their own end count (COMPLETED or DIVERGED): a pruned trial's curve is cut short."""
        from harness import results as rs

        folder = Path(folder)
        info_path = folder / rs.SWEEP_FILE
        if not info_path.exists():
            raise UserError(f"{folder}: not a sweep or record folder (no {rs.SWEEP_FILE})")
        info = json.loads(info_path.read_text())
        spec = spec_from_dict(info["spec"], source=str(info_path))
        res = rs.load(folder)
        ran = [Status.COMPLETED, Status.DIVERGED, Status.FAILED]
        trials = res.trials[res.trials["status"].isin(ran)]
        if trials.empty:
            raise UserError(f"{folder}: no trial ran to its end; nothing to replay")
        metric = spec.metric.name
        curves = res.metrics.sort_values(["trial_id", "report"])
        by_trial = {tid: g for tid, g in curves.groupby("trial_id", sort=False)}
        configs, rows = [], []
        seen: set[str] = set()
        for _, t in trials.sort_values("trial_number", kind="stable").iterrows():
            params = {n: _py(rs.decode_param(t.get(f"param.{n}"))) for n in spec.searched}
            key = config_key(spec.searched, params)
            if key in seen:  # a configuration recorded twice: the first stands
                continue
            seen.add(key)
            g = by_trial.get(t["trial_id"])
            configs.append(params)
            rows.append((t, g))
        width = max((len(g) for _, g in rows if g is not None), default=0)
        n = len(rows)
        values = np.full((n, width), np.nan)
        seconds = np.full((n, width), np.nan)
        total, final = np.zeros(n), np.full(n, np.nan)
        status = np.empty(n, dtype=object)
        for i, (t, g) in enumerate(rows):
            if g is not None and len(g):
                r = g["report"].to_numpy(dtype=int) - 1
                values[i, r] = pd.to_numeric(g[metric], errors="coerce").to_numpy(dtype=float)
                seconds[i, r] = pd.to_numeric(g["elapsed_s"], errors="coerce").to_numpy(float)
            status[i] = str(t["status"])
            last = float(np.nanmax(seconds[i])) if np.isfinite(seconds[i]).any() else 0.0
            train_s = pd.to_numeric(t.get("train_s"), errors="coerce")
            total[i] = max(float(train_s) if np.isfinite(train_s) else last, last)
            if status[i] == Status.COMPLETED and np.isfinite(
                pd.to_numeric(t["metric"], errors="coerce")
            ):
                final[i] = float(t["metric"])
        max_t = int(info.get("max_t") or width)
        return cls(spec, configs, values, seconds, total, final, status.astype(str), max_t,
                   str(folder))  # fmt: skip

    @classmethod
    def load(cls, path: str | Path) -> Blackbox:
        """A folder (see from_folder) or a packed table file (`pack`)."""
        path = Path(path)
        if path.is_dir():
            return cls.from_folder(path)
        if not path.exists():
            raise UserError(f"--replay {path}: no such folder or table file")
        if path.suffix != PACKED_SUFFIX:
            raise UserError(
                f"--replay {path}: expected a results folder or a {PACKED_SUFFIX} table"
            )
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            spec = spec_from_dict(meta["spec"], source=str(path))
            return cls(
                spec, [dict(c) for c in meta["configs"]], z["values"], z["seconds"],
                z["total_s"], z["final"], z["status"].astype(str), int(meta["max_t"]), str(path),
            )  # fmt: skip

    def pack(self, path: str | Path) -> Path:
        """The table as one compressed .npz (no pickles: plain arrays and JSON text)."""
        from harness.files import write_with

        meta = {"spec": self.spec.to_dict(), "configs": self.configs, "max_t": self.max_t}
        arrays = {
            "meta": np.array(json.dumps(meta, default=str)),
            "values": self.values.astype(np.float32),
            "seconds": self.seconds.astype(np.float32),
            "total_s": self.total_s.astype(np.float32),
            "final": self.final,
            "status": np.array(self.status, dtype=str),
        }
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)

        def write(tmp: Path) -> None:
            with open(tmp, "wb") as f:  # a file object: savez would append .npz to a name
                np.savez_compressed(f, **arrays)

        write_with(path, write)
        return path


def _py(v: Any) -> Any:
    """A Parquet cell as a plain Python value (numpy scalars would not compare as JSON)."""
    return v.item() if isinstance(v, np.generic) else v
