"""A sweep's results folder: Parquet tables written while the sweep runs, and read back.

Why this shape: the driver-side Tune callback (harness.sweep.callback) hands every report and
every finished trial to a `ResultsWriter`, which keeps rows keyed by (trial_id, iteration)
and writes each table as a folder of Parquet parts (harness.parts: only the changed blocks of
trials, each atomically; fsynced at a trial's end, see `flush`). Keyed rows make writing idempotent: feeding the same report
twice, or reopening a folder after a crash and replaying what Ray re-sends, never duplicates
a row, which is what a resumed sweep needs. Writes are throttled only by their own
cost (at most ~5% of wall time goes to writing), so a small sweep writes on every
report and a crash loses nothing already reported. The writes of one flush happen under the
folder's tables lock (harness.lock), which `load()` takes shared, so a reader of a running
sweep gets the three tables of one moment.

This module does not import Ray: `load()` is for notebooks and the report.
"""

from __future__ import annotations

import bisect
import heapq
import itertools
import json
import math
import os
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from harness import parts
from harness.errors import UserError
from harness.files import write_text
from harness.lock import tables_lock
from harness.parts import KeyedTable, param_value, published, recover, write_parts
from harness.schema import LAYER_KEYS, LAYERS, METRIC_KEYS, PARAM_PREFIX, TRIAL_KEYS, Status
from harness.values import finite, plain

TRIALS_FILE = "trials.parquet"
METRICS_FILE = "metrics.parquet"
LAYERS_FILE = "grad_layers.parquet"
SWEEP_FILE = "sweep.json"
OPTUNA_FILE = "optuna.db"
RAY_DIR = "ray"
MODELS_DIR = "models"  # the kept trials' weights (harness.bundle), one folder per trial id
LOG_FILE = "ray.log"

# Arrow types of the fixed columns (every column not named here is a float); parameter
# columns are inferred.
_NOT_FLOAT: dict[str, pa.DataType] = {
    **dict.fromkeys(("trial_id", "status", "node_id", "node_ip", "device", "error", "confusion",
                     "group_id", "layer"), parts.STR),
    **dict.fromkeys(("trial_number", "best_iteration", "iterations", "epochs", "samples",
                     "group_member", "group_size", "iteration", "report", "epoch",
                     "grad_nonfinite"), parts.INT),
    **dict.fromkeys(("fused", "improved", "grad_vanishing", "grad_exploding", "embedding"),
                    parts.BOOL),
    **dict.fromkeys(("start_time", "end_time"), parts.TIME),
}  # fmt: skip


def _types(keys: Sequence[str]) -> list[tuple[str, pa.DataType]]:
    return [(k, _NOT_FLOAT.get(k, parts.FLOAT)) for k in keys]


METRICS_SCHEMA = pa.schema(_types(["trial_id", *METRIC_KEYS]))
LAYERS_SCHEMA = pa.schema(_types(["trial_id", "iteration", *LAYER_KEYS]))
TRIALS_SCHEMA = pa.schema(_types(TRIAL_KEYS))


def _by_number(table: pa.Table) -> pa.Table:
    """Trials by Optuna number (the baseline first), then as first seen (a stable sort)."""
    try:
        order = pc.sort_indices(table, [("trial_number", "ascending", "at_end")])
    except (TypeError, ValueError, pa.ArrowInvalid):  # pyarrow < 25: one placement for all
        order = pc.sort_indices(table, [("trial_number", "ascending")], null_placement="at_end")
    return table.take(order)


def _read_rows(path: Path) -> list[dict[str, Any]]:
    """A table's rows (none when it does not exist), or one UserError line for a damaged file
    (the writer never leaves one; something else truncated or replaced it)."""
    if not path.exists():
        return []
    try:
        return pq.read_table(path).to_pylist()
    except (pa.ArrowException, OSError) as exc:
        why = " ".join(str(exc).split())[:200]
        raise UserError(
            f"{path}: not a readable Parquet file ({why}); restore it from a copy, or start the "
            "sweep over with --overwrite"
        ) from None


class ResultsWriter:
    """Keeps a sweep's tables in memory and mirrors them to results/<name>/*.parquet.

    `add_report` and `set_trial` are idempotent (rows are keyed), so replaying reports
    after a resume is harmless. `open()` reloads existing tables so a resumed sweep
    appends to what is there.
    """

    def __init__(
        self,
        folder: str | os.PathLike,
        *,
        params: Sequence[str] = (),
        max_write_share: float = 0.05,
    ) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        for name in (TRIALS_FILE, METRICS_FILE, LAYERS_FILE):  # what a crash left half done
            recover(self.folder / name)
        self.trials = KeyedTable(TRIALS_SCHEMA, [PARAM_PREFIX + p for p in params], _by_number)
        self.metrics = KeyedTable(METRICS_SCHEMA)
        self.layers = KeyedTable(LAYERS_SCHEMA)
        # trial_ids(), kept sorted as trials come (re-sorting all of them at each new trial
        # grew with the sweep): (Optuna number, first seen, trial id), and each trial's entry
        self._index: list[tuple[float, int, str]] = []
        self._places: dict[str, tuple[float, int, str]] = {}
        self._seen = itertools.count()
        self._dirty: set[str] = set()
        self._max_write_share = max_write_share
        self._next_write = 0.0
        self._dirty_since: dict[str, float] = {}  # table -> when its oldest unwritten change came
        self.write_seconds = 0.0
        self.max_stale_s = 0.0  # the longest a change waited to be written
        self._whole: set[str] = set()  # tables to write whole at their next write (reopened)
        self._unsynced: set[Path] = set()  # files written since the last durable flush

    @classmethod
    def open(cls, folder: str | os.PathLike, **kw: Any) -> ResultsWriter:
        """A writer seeded with whatever tables already exist in `folder`."""
        writer = cls(folder, **kw)
        for row in _read_rows(writer.folder / TRIALS_FILE):
            writer._put_trial_row(row)
        for row in _read_rows(writer.folder / METRICS_FILE):
            writer.metrics.put(row["trial_id"], row["iteration"], row)
        for row in _read_rows(writer.folder / LAYERS_FILE):
            writer.layers.put(row["trial_id"], (row["iteration"], row["layer"]), row)
        writer._whole = {"trials", "metrics", "layers"}  # its blocks may not match the parts
        return writer

    def add_report(self, trial_id: str, report: Mapping[str, Any]) -> None:
        """One evaluation report (schema.METRIC_KEYS plus schema.LAYERS) of one trial."""
        iteration = int(report["iteration"])
        row = {"trial_id": trial_id, **{k: report.get(k) for k in METRIC_KEYS}}
        self.metrics.put(trial_id, iteration, row)
        layers = report.get(LAYERS) or {}
        cols = {k: col for k in LAYER_KEYS if (col := layers.get(k)) is not None}
        for i, name in enumerate(layers.get("layer") or []):
            lrow = {k: cols[k][i] if k in cols and i < len(cols[k]) else None for k in LAYER_KEYS}
            self.layers.put(trial_id, (iteration, name),
                            {"trial_id": trial_id, "iteration": iteration, **lrow})  # fmt: skip
        self._mark("metrics", "layers")

    def reports_written(self) -> bool:
        """Whether every report added so far is on disk (what --resume reads)."""
        return not self._dirty & {"metrics", "layers"}

    def _mark(self, *tables: str) -> None:
        for name in tables:
            self._dirty_since.setdefault(name, time.monotonic())
        self._dirty.update(tables)

    def set_trial(self, trial_id: str, **fields: Any) -> None:
        """Create or update a trial's row; `params={...}` become param.<name> columns."""
        params = fields.pop("params", None) or {}
        current = dict(self.trials.rows.get(trial_id, {}).get(0, {"trial_id": trial_id}))
        for k, v in fields.items():
            if k not in TRIAL_KEYS:
                raise KeyError(f"not a trials.parquet column: {k}")
            current[k] = v
        for name, v in params.items():
            current[PARAM_PREFIX + name] = param_value(v)
        self._put_trial_row(current)
        self._mark("trials")

    def _put_trial_row(self, row: dict[str, Any]) -> None:
        tid, number = row["trial_id"], row.get("trial_number")
        old = self._places.get(tid)
        if old is None or self.trials.rows[tid][0].get("trial_number") != number:
            self._unplace(tid)
            place = (float(number) if finite(number) else math.inf,
                     next(self._seen) if old is None else old[1], tid)  # fmt: skip
            bisect.insort(self._index, place)
            self._places[tid] = place
        self.trials.put(tid, 0, row)

    def _unplace(self, trial_id: str) -> None:
        place = self._places.pop(trial_id, None)
        if place is not None:
            del self._index[bisect.bisect_left(self._index, place)]

    def drop_trial(self, trial_id: str) -> None:
        """Forget a trial's rows (an interrupted run that a resume starts over)."""
        for table in (self.trials, self.metrics, self.layers):
            table.drop(trial_id)
        self._unplace(trial_id)
        self._mark("trials", "metrics", "layers")

    def has_report(self, trial_id: str, iteration: int) -> bool:
        return iteration in self.metrics.rows.get(trial_id, {})

    def rename_trial(self, old: str, new: str, until_iteration: int) -> None:
        """An interrupted trial goes on as a new Ray trial from its checkpoint: its rows move
        to the new id, reports after the checkpoint's iteration are dropped (they come again)."""
        row = self.trial_row(old)
        if not row:
            return
        reports = [r for k, r in self.metrics.rows.get(old, {}).items() if k <= until_iteration]
        layers = [r for k, r in self.layers.rows.get(old, {}).items() if k[0] <= until_iteration]
        self.drop_trial(old)
        self._put_trial_row({**row, "trial_id": new})
        for r in reports:
            self.metrics.put(new, r["iteration"], {**r, "trial_id": new})
        for r in layers:
            self.layers.put(new, (r["iteration"], r["layer"]), {**r, "trial_id": new})

    def trial_ids(self) -> list[str]:
        """Trial ids by Optuna trial number (the baseline first), then first seen."""
        return [place[2] for place in self._index]

    def rows(self, copy: bool = True) -> list[dict[str, Any]]:
        """Every trial's row, by trial number; copy=False: the writer's own (read them only)."""
        if not copy:
            return [self.trials.rows[t][0] for t in self.trial_ids()]
        return [self.trial_row(t) for t in self.trial_ids()]

    def trial_row(self, trial_id: str) -> dict[str, Any]:
        return dict(self.trials.rows.get(trial_id, {}).get(0, {}))

    def flush(
        self, force: bool = False, only: Sequence[str] | None = None, durable: bool | None = None
    ) -> bool:
        """Write the changed tables unless writing would exceed its share of wall time.

        `force` writes now; `only` (e.g. ("trials",)) limits a forced write to the small
        tables so a trial's end does not rewrite every report of a large sweep. `durable`
        (default: `force`) then fsyncs every file written since the last durable flush:
        a trial's end, which Optuna hears of next, outlives a crash of the machine. The
        frequent writes between are not fsynced: a driver that dies loses none of them
        (readers see each rename; the page cache outlives the process), a machine that goes
        down only what came after the last trial's end, which nothing was told of yet."""
        durable = force if durable is None else durable
        if force:
            todo = self._dirty & set(only) if only else set(self._dirty)
        elif time.monotonic() >= self._next_write:
            todo = set(self._dirty)
        else:
            return False
        if not todo and not (durable and self._unsynced):
            return False
        t0 = time.monotonic()
        with tables_lock(self.folder, shared=False):  # readers see the tables of one moment
            for name, file in (("trials", TRIALS_FILE), ("metrics", METRICS_FILE),
                               ("layers", LAYERS_FILE)):  # fmt: skip
                if name in todo:
                    try:
                        keyed, whole = getattr(self, name), name in self._whole
                        self._unsynced.update(write_parts(self.folder / file, keyed, whole))
                        self._whole.discard(name)
                    except OSError as exc:  # name the table (pyarrow names none)
                        why = os.strerror(exc.errno) if exc.errno else str(exc)
                        raise OSError(exc.errno, why, str(self.folder / file)) from exc
        while durable and self._unsynced:  # each file once, however often it was replaced
            path = self._unsynced.pop()
            if path.exists():  # else a whole rewrite replaced it (fsynced)
                with open(path, "rb") as f:
                    os.fsync(f.fileno())
        late = [time.monotonic() - self._dirty_since.pop(n) for n in todo & set(self._dirty_since)]
        self.max_stale_s = max([self.max_stale_s, *late])
        self._dirty -= todo
        spent = time.monotonic() - t0
        self.write_seconds += spent
        self._next_write = time.monotonic() + spent / self._max_write_share
        return True

    def write_sweep_info(self, info: Mapping[str, Any]) -> None:
        write_text(self.folder / SWEEP_FILE, json.dumps(info, indent=2, default=str) + "\n")


# -- reading ------------------------------------------------------------------------------
@dataclass(frozen=True)
class SweepResults:
    """Everything a finished (or running) sweep left in its folder."""

    path: Path
    trials: pd.DataFrame
    metrics: pd.DataFrame
    grad_layers: pd.DataFrame
    spec: dict[str, Any]  # the resolved spec (sweep.json["spec"])
    info: dict[str, Any]  # all of sweep.json (versions, host, git, command, ...)

    @property
    def param_columns(self) -> list[str]:
        return [c for c in self.trials.columns if c.startswith(PARAM_PREFIX)]

    @property
    def goal(self) -> str:
        """maximize | minimize: the (first) objective's goal."""
        metric = self.spec.get("metric") or {}
        if isinstance(metric, list):
            metric = metric[0] if metric else {}
        return str(metric.get("goal", "maximize"))

    def top(self, n: int = 3) -> pd.DataFrame:
        """The n best trials as the sweep ranks them (the console's top table, keep_best,
        predict's best trial): COMPLETED trials by the objective (`metric`), ties to the
        earlier Optuna trial. A PRUNED trial's `metric` is its value at the report where it
        was stopped, not a finished trial's, so it never ranks here."""
        order = ranking(self.trials.to_dict("records"), self.goal)[:n]
        by_id = self.trials.set_index("trial_id", drop=False)
        return by_id.loc[order].reset_index(drop=True)


def _read(path: Path, schema: pa.Schema) -> pd.DataFrame:
    if not path.exists():
        return schema.empty_table().to_pandas()
    try:
        return pd.read_parquet(path)
    except (pa.ArrowException, OSError, ValueError) as exc:
        why = " ".join(str(exc).split())[:200]
        raise UserError(f"{path}: not a readable Parquet file ({why}); restore it from a copy, "
                        "or run the sweep again with --overwrite") from None  # fmt: skip


def _read_info(path: Path) -> dict[str, Any]:
    """sweep.json: a JSON object whose `spec` is one, with a metric (or a list of them) that
    has a name; one UserError line naming what is wrong."""
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"{path}: unreadable ({exc})") from None
    if not isinstance(info, dict):
        raise UserError(f"{path}: expected a JSON object, got {type(info).__name__}")
    spec = info.get("spec", {})
    if not isinstance(spec, dict):
        raise UserError(f"{path}: spec: expected an object, got {type(spec).__name__}")
    metric = spec.get("metric", {})
    metrics = metric if isinstance(metric, list) else [metric]
    if not metrics or not all(isinstance(m, dict) for m in metrics):
        raise UserError(f"{path}: spec.metric: expected {{name, goal}} (or a list of them), got "
                        f"{json.dumps(metric)[:80]}")  # fmt: skip
    return info


def load(path: str | os.PathLike) -> SweepResults:
    """Read results/<name>/ into DataFrames (raises UserError when it is not a results folder,
    or one of its files is damaged: one line naming the file)."""
    folder = Path(path)
    info_path = folder / SWEEP_FILE
    if not info_path.exists():
        raise UserError(f"{folder}: not a sweep results folder (no {SWEEP_FILE})")
    info = _read_info(info_path)
    with tables_lock(folder, shared=True):  # not between a running sweep's table writes
        # published: a crash between a rewrite's renames left the table aside
        trials = _read(published(folder / TRIALS_FILE), TRIALS_SCHEMA)  # by part: sorted below
        metrics = _read(published(folder / METRICS_FILE), METRICS_SCHEMA)
        layers = _read(published(folder / LAYERS_FILE), LAYERS_SCHEMA)
    if "trial_number" in trials:  # by number, then first seen (stable), as _by_number does
        trials = trials.sort_values("trial_number", kind="stable", ignore_index=True)
    return SweepResults(path=folder, trials=trials, metrics=metrics, grad_layers=layers,
                        spec=dict(info.get("spec") or {}), info=info)  # fmt: skip


def decode_param(value: Any) -> Any:
    """Inverse of `param_value`: JSON list text back to a list."""
    if isinstance(value, str) and value.startswith("["):
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def trial_name(row: Mapping[str, Any]) -> str:
    """How every output names a trial: Ray's short trial id (the tables' key) with the Optuna
    trial number beside it, e.g. '9c6ab8ba (#3)'; either one finds it again (find_trial)."""
    n = plain(row.get("trial_number"))
    tid = row.get("trial_id")
    return f"{tid} (#{int(n)})" if finite(n) and not isinstance(n, str) else str(tid)


def find_trial(results: SweepResults, ref: str | int) -> str:
    """The trial_id a user means by `ref`: a trial id, or an Optuna trial number (`3`, `#3`).

    Every command that takes a trial (--replay, predict) accepts either name, because the
    console and the report show both: `9c6ab8ba (#3)`.
    """
    t = results.trials
    ids = t["trial_id"].astype(str)
    text = str(ref).strip()
    if text in set(ids):
        return text
    number = text.removeprefix("#")
    if number.isdigit() and "trial_number" in t:
        hit = t[t["trial_number"] == int(number)]
        if len(hit) == 1:
            return str(hit["trial_id"].iloc[0])
    known = ", ".join(
        f"{i} (#{int(n)})" if finite(n) else i
        for i, n in zip(ids.tolist()[:20], t.get("trial_number", [float("nan")] * len(t)))
    )
    raise UserError(f"{results.path}: no trial {text!r} (trials: {known or 'none'})")


def ranking(rows: Sequence[Mapping[str, Any]], goal: str, top: int | None = None) -> list[str]:
    """Trial ids of the COMPLETED trials with a finite objective (`metric`), best first for
    `goal` (maximize | minimize); ties go to the earlier Optuna trial. What keep_best keeps
    and what `harness.predict` calls the best trial. `top`: only the first `top` (a partial
    sort: the shelf asks at every trial's end, the console every few)."""
    return [str(r["trial_id"]) for r in ranked_rows(rows, goal, top)]


def ranked_rows(
    rows: Sequence[Mapping[str, Any]], goal: str, top: int | None = None
) -> list[Mapping[str, Any]]:
    """The rows `ranking` names, in its order."""
    done = [r for r in rows if r.get("status") == Status.COMPLETED and finite(r.get("metric"))]
    sign = -1.0 if goal == "maximize" else 1.0

    def key(r: Mapping[str, Any]) -> tuple[float, float]:
        number = r.get("trial_number")
        return (sign * float(r["metric"]), float(number) if finite(number) else math.inf)

    return sorted(done, key=key) if top is None else heapq.nsmallest(top, done, key=key)


def trial_params(results: SweepResults, trial_id: str) -> dict[str, Any]:
    """The searched parameter values of one trial (a trial id or an Optuna number), as the
    trial saw them."""
    trial_id = find_trial(results, trial_id)
    rows = results.trials[results.trials["trial_id"] == trial_id]
    row = rows.iloc[0]
    out = {}
    for col in results.param_columns:
        v = decode_param(row[col].item() if hasattr(row[col], "item") else row[col])
        if v is not None:
            out[col[len(PARAM_PREFIX) :]] = v
    return out


def trial_config_for(path: str | os.PathLike, trial_id: str) -> tuple[Any, Any]:
    """(TrialConfig, DataSpec) of one trial of a sweep: `python -m harness.train --replay`.

    The resolved spec in sweep.json gives the model, data and fixed settings; the trial's
    row gives its sampled values; the seed is part of them, so the rerun is the same trial.
    """
    from harness.config import load_spec

    res = load(path)
    params = trial_params(res, trial_id)
    with tempfile.TemporaryDirectory(prefix="harness-replay-") as tmp:
        spec_file = Path(tmp) / f"{res.spec.get('name', 'sweep')}.yaml"
        trial_spec = {k: v for k, v in res.spec.items() if k != "mlflow"}  # trackers: not the trial
        spec_file.write_text(json.dumps(trial_spec), encoding="utf-8")  # JSON is YAML
        try:
            spec = load_spec(spec_file)
        except UserError as exc:
            raise UserError(f"{Path(path) / SWEEP_FILE}: its spec no longer loads: {exc}") from None
    return spec.trial_config(params), spec.data
