"""A sweep's results folder: Parquet tables written while the sweep runs, and read back.

Why this shape: the driver-side Tune callback (harness.sweep.callback) hands every report and
every finished trial to a `ResultsWriter`, which keeps rows keyed by (trial_id, iteration)
and rewrites the tables atomically (harness.files: temporary file, rename; fsynced at a
trial's end, see `flush`). Keyed rows make writing idempotent: feeding the same report
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
import shutil
import tempfile
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import partial
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from harness.errors import UserError
from harness.files import write_text, write_with
from harness.lock import tables_lock
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
PART = "part-{:06d}.parquet"  # a part of each table's folder (trials.parquet/ ...), by block

# Arrow types of the fixed columns; parameter columns are inferred.
_BOOL = pa.bool_()
_INT = pa.int64()
_FLOAT = pa.float64()
_STR = pa.string()
_TIME = pa.timestamp("us", tz="UTC")

# every column not named here is a float
_NOT_FLOAT: dict[str, pa.DataType] = {
    **dict.fromkeys(("trial_id", "status", "node_id", "node_ip", "device", "error", "confusion",
                     "group_id", "layer"), _STR),
    **dict.fromkeys(("trial_number", "best_iteration", "iterations", "epochs", "samples",
                     "group_member", "group_size", "iteration", "report", "epoch",
                     "grad_nonfinite"), _INT),
    **dict.fromkeys(("fused", "improved", "grad_vanishing", "grad_exploding", "embedding"), _BOOL),
    **dict.fromkeys(("start_time", "end_time"), _TIME),
}  # fmt: skip


def _types(keys: Sequence[str]) -> list[tuple[str, pa.DataType]]:
    return [(k, _NOT_FLOAT.get(k, _FLOAT)) for k in keys]


METRICS_SCHEMA = pa.schema(_types(["trial_id", *METRIC_KEYS]))
LAYERS_SCHEMA = pa.schema(_types(["trial_id", "iteration", *LAYER_KEYS]))
TRIALS_SCHEMA = pa.schema(_types(TRIAL_KEYS))


def param_value(value: Any) -> Any:
    """A parameter value as stored in a table: lists become readable JSON text ('[2, 3, 4]')."""
    if isinstance(value, (list, tuple)):
        return json.dumps(list(value))
    return value


def _cell(value: Any, typ: pa.DataType) -> Any:
    """Coerce one value to its column type; NaN/None/unknown become null, never an exception."""
    if value is None:
        return None
    try:
        if typ == _BOOL:
            return bool(value)
        if typ == _INT:
            f = float(value)
            return int(f) if math.isfinite(f) else None
        if typ == _FLOAT:
            return float(value)
        if typ == _STR:
            return str(value)
        if typ == _TIME:
            if isinstance(value, (int, float)):
                return datetime.fromtimestamp(value, tz=timezone.utc)
            if isinstance(value, str):
                return pd.Timestamp(value).to_pydatetime()
            return value
    except (TypeError, ValueError):
        return None
    return value


class _KeyedTable:
    """Rows grouped by trial and keyed by (trial_id, key), with Arrow tables cached per trial
    and per block of BLOCK trials (in the order trials were first seen).

    A change rebuilds its trial's table and its block's, and a write rewrites only the
    changed blocks' parts (_write_parts). Trials end in about the order they start, so a
    5,000-trial sweep's trial end writes one part, not 5,000 trials (it did: the cost of a
    trial's end grew with the trials before it). Trials two blocks back lose their own
    tables (a few kB each; their block's table stays): a late change builds them again.
    """

    BLOCK = 128

    def __init__(self, schema: pa.Schema, extra: Sequence[str] = (), sort: Any = None) -> None:
        self.schema = schema
        self.extra_order = list(extra)  # extra (parameter) columns in this order first
        self.sort = sort  # a part's rows in this order (trials: _by_number), else as seen
        self.written: pa.Schema | None = None  # the schema of every part now in the folder
        self._shape: pa.Schema | None = None  # every block's columns (shape()), None: unknown
        self.rows: dict[str, dict[Any, dict[str, Any]]] = {}
        self._cache: dict[str, pa.Table] = {}
        self._block_of: dict[str, int] = {}
        self._blocks: dict[int, list[str]] = {}  # block -> its trials, first seen first
        self._block_cache: dict[int, pa.Table] = {}
        self._seen = 0
        self.changed: set[int] = set()  # blocks changed since their part was last written

    def put(self, trial_id: str, key: Any, row: dict[str, Any]) -> None:
        if trial_id not in self.rows:
            block = self._seen // self.BLOCK
            if self._seen % self.BLOCK == 0:  # a new block: two blocks back, trials are done
                for done in self._blocks.get(block - 2, ()):
                    self._cache.pop(done, None)
            self._seen += 1
            self._block_of[trial_id] = block
            self._blocks.setdefault(block, []).append(trial_id)
        self.rows.setdefault(trial_id, {})[key] = row
        self._touch(trial_id, self._block_of[trial_id])

    def drop(self, trial_id: str) -> bool:
        """Forget a trial's rows; True if it had any."""
        if self.rows.pop(trial_id, None) is None:
            return False
        block = self._block_of.pop(trial_id)
        self._blocks[block].remove(trial_id)
        self._touch(trial_id, block)
        self._shape = None  # its columns may go with it
        return True

    def __len__(self) -> int:
        return sum(len(r) for r in self.rows.values())

    def _touch(self, trial_id: str, block: int) -> None:
        """A trial's rows changed: its table and its block's go."""
        self._cache.pop(trial_id, None)
        self._block_cache.pop(block, None)
        self.changed.add(block)

    def block(self, block: int) -> pa.Table:
        """One block's rows (a schema-only table once all its trials were dropped)."""
        table = self._block_table(block)
        return self.schema.empty_table() if table is None else self._ordered(table)

    def shape(self) -> pa.Schema:
        """The schema of every part (pandas reads a folder with its first part's: a column only
        a later one has is lost); joined again only when a changed block's differs from it."""
        if self._shape is None or any(self.block(b).schema != self._shape for b in self.changed):
            blocks = (t.schema for t in map(self._block_table, self._blocks) if t is not None)
            distinct = dict.fromkeys([self.schema, *blocks])  # most blocks share one
            self._shape = self._ordered(_concat([s.empty_table() for s in distinct])).schema
        return self._shape

    def part(self, block: int, shape: pa.Schema) -> pa.Table:
        """One block's rows in `shape` (text where another block made a column text)."""
        table = self.block(block)
        if table.schema != shape:
            table = _concat([shape.empty_table(), table]).select(shape.names).cast(shape)
        return self.sort(table) if self.sort else table

    def _trial_table(self, trial_id: str) -> pa.Table:
        table = self._cache.get(trial_id)
        if table is None:
            rows = [self.rows[trial_id][k] for k in sorted(self.rows[trial_id])]
            table = self._build(rows)
            self._cache[trial_id] = table
        return table

    def _build(self, rows: list[dict[str, Any]]) -> pa.Table:
        arrays = [
            pa.array([_cell(r.get(f.name), f.type) for r in rows], type=f.type) for f in self.schema
        ]
        names = [f.name for f in self.schema]
        found = {k for r in rows for k in r} - set(names)
        extra = [c for c in self.extra_order if c in found] + sorted(found - set(self.extra_order))
        for name in extra:
            arrays.append(_infer_array([r.get(name) for r in rows]))
            names.append(name)
        return pa.Table.from_arrays(arrays, names=names)

    def _block_table(self, block: int) -> pa.Table | None:
        table = self._block_cache.get(block)
        if table is None and self._blocks.get(block):
            # one chunk per block: Arrow's kernels (the sort by trial number) stay fast
            table = _concat([self._trial_table(t) for t in self._blocks[block]]).combine_chunks()
            self._block_cache[block] = table
        return table

    def _ordered(self, table: pa.Table) -> pa.Table:
        """The schema's columns, then the others: extra_order's first, the rest by name."""
        names = [f.name for f in self.schema]
        extra = [n for n in table.column_names if n not in names]
        ordered = [c for c in self.extra_order if c in extra]
        return table.select(names + ordered + sorted(set(extra) - set(ordered)))


def _concat(tables: list[pa.Table]) -> pa.Table:
    """One table of several whose extra columns may differ (missing ones become nulls)."""
    if len(tables) == 1:
        return tables[0]
    try:
        return pa.concat_tables(tables, promote_options="permissive")
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return pa.concat_tables(_as_text_where_mixed(tables), promote_options="permissive")


def _write_parts(path: Path, keyed: _KeyedTable, whole: bool) -> list[Path]:
    """Each table is a folder of Parquet files of one schema, one per block of trials
    (_KeyedTable.BLOCK, as first seen), that pandas reads as one (`pd.read_parquet(folder /
    "trials.parquet")`). Only changed blocks' parts are rewritten (a trial's end: one part,
    however long the sweep), each atomically (harness.files; its temporary file outside the
    folder, as polars reads every file in it); a trial's rows all live in one part. A new
    table, an older sweep's single file, a new schema (a new column, one turned text), or
    (`whole`) one reopened for a resume, whose blocks may fall differently now, is written
    whole into a hidden folder that then takes its place (its files fsynced). Returns the
    parts written in place, not yet fsynced (ResultsWriter.flush)."""
    shape = keyed.shape()
    if path.is_dir() and not whole and shape == keyed.written:
        parts = [path / PART.format(block) for block in sorted(keyed.changed)]
        for part, block in zip(parts, sorted(keyed.changed)):
            write = partial(pq.write_table, keyed.part(block, shape))
            write_with(part, write, durable=False, scratch=path.parent)
        keyed.changed.clear()
        return parts
    tag = uuid.uuid4().hex[:8]
    new = path.with_name(f".{path.name}.new-{tag}")
    new.mkdir()
    try:
        for block in sorted(keyed._blocks) or [0]:
            write_with(new / PART.format(block), partial(pq.write_table, keyed.part(block, shape)))
        old = path.with_name(f".{path.name}.old-{tag}")
        if path.exists():
            os.replace(path, old)
        os.replace(new, path)
    except BaseException:
        shutil.rmtree(new, ignore_errors=True)
        raise
    shutil.rmtree(old, ignore_errors=True) if old.is_dir() else old.unlink(missing_ok=True)
    keyed.changed.clear()
    keyed.written = shape
    return []


def _by_number(table: pa.Table) -> pa.Table:
    """Trials by Optuna number (the baseline first), then as first seen (a stable sort)."""
    try:
        order = pc.sort_indices(table, [("trial_number", "ascending", "at_end")])
    except (TypeError, ValueError, pa.ArrowInvalid):  # pyarrow < 25: one placement for all
        order = pc.sort_indices(table, [("trial_number", "ascending")], null_placement="at_end")
    return table.take(order)


def _as_text_where_mixed(tables: list[pa.Table]) -> list[pa.Table]:
    """A parameter whose values differ in type between trials (1 here, "auto" there) is
    stored as text in every row, rather than failing the write."""
    types: dict[str, set[pa.DataType]] = {}
    for t in tables:
        for f in t.schema:
            if not pa.types.is_null(f.type):
                types.setdefault(f.name, set()).add(f.type)
    numeric = (pa.types.is_integer, pa.types.is_floating)
    mixed = {
        n
        for n, ts in types.items()
        if len(ts) > 1 and not all(any(is_(t) for is_ in numeric) for t in ts)
    }
    out = []
    for t in tables:
        for name in mixed & set(t.column_names):
            i = t.column_names.index(name)
            t = t.set_column(i, name, t.column(name).cast(_STR))
        out.append(t)
    return out


def _infer_array(values: list[Any]) -> pa.Array:
    """Parameter columns: numbers stay numbers, lists become JSON text, mixed types become text."""
    values = [param_value(v) for v in values]
    try:
        return pa.array(values)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return pa.array([None if v is None else str(v) for v in values], type=_STR)


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
        for left in self.folder.glob(".*.parquet.new-*"):  # a crash mid-way: never published
            shutil.rmtree(left, ignore_errors=True)
        self.trials = _KeyedTable(TRIALS_SCHEMA, [PARAM_PREFIX + p for p in params], _by_number)
        self.metrics = _KeyedTable(METRICS_SCHEMA)
        self.layers = _KeyedTable(LAYERS_SCHEMA)
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
                        self._unsynced.update(_write_parts(self.folder / file, keyed, whole))
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
        trials = _read(folder / TRIALS_FILE, TRIALS_SCHEMA)  # by part: sort as the file was
        metrics = _read(folder / METRICS_FILE, METRICS_SCHEMA)
        layers = _read(folder / LAYERS_FILE, LAYERS_SCHEMA)
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
