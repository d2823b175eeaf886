"""A table kept as rows keyed by trial and written as a folder of Parquet parts.

Why parts: a sweep's tables change at every report and every trial's end; rewriting a whole
file each time grew a trial's end with the sweep (at 5,000 trials trials.parquet alone cost
29 ms of driver CPU per trial, against 10 at the start). Here rows live in blocks of
KeyedTable.BLOCK trials (as first seen), each block one part of the table's folder, and a
write rewrites only the changed blocks' parts. pandas, pyarrow, polars and duckdb read the
folder as one table. harness.results owns the schemas and the folder; this module, the rows
and the files.
"""

from __future__ import annotations

import ctypes
import json
import math
import os
import shutil
import uuid
from collections.abc import Sequence
from datetime import datetime, timezone
from functools import partial
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from harness.files import write_with

PART = "part-{:06d}.parquet"  # a part of each table's folder (trials.parquet/ ...), by block

# the Arrow types of the tables' fixed columns (harness.results names which column has which)
BOOL = pa.bool_()
INT = pa.int64()
FLOAT = pa.float64()
STR = pa.string()
TIME = pa.timestamp("us", tz="UTC")


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
        if typ == BOOL:
            return bool(value)
        if typ == INT:
            f = float(value)
            return int(f) if math.isfinite(f) else None
        if typ == FLOAT:
            return float(value)
        if typ == STR:
            return str(value)
        if typ == TIME:
            if isinstance(value, (int, float)):
                return datetime.fromtimestamp(value, tz=timezone.utc)
            if isinstance(value, str):
                return pd.Timestamp(value).to_pydatetime()
            return value
    except (TypeError, ValueError):
        return None
    return value


class KeyedTable:
    """Rows grouped by trial and keyed by (trial_id, key), with Arrow tables cached per trial
    and per block of BLOCK trials (in the order trials were first seen).

    A change rebuilds its trial's table and its block's, and a write rewrites only the
    changed blocks' parts (write_parts). Trials end in about the order they start, so a
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


def write_parts(path: Path, keyed: KeyedTable, whole: bool) -> list[Path]:
    """Each table is a folder of Parquet files of one schema, one per block of trials
    (KeyedTable.BLOCK, as first seen), that pandas reads as one (`pd.read_parquet(folder /
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
        previous = _swap(new, path, path.with_name(f".{path.name}.old-{tag}"))
    except BaseException:
        _remove(new)
        raise
    if previous is not None:
        _remove(previous)
    keyed.changed.clear()
    keyed.written = shape
    return []


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
            t = t.set_column(i, name, t.column(name).cast(STR))
        out.append(t)
    return out


def _infer_array(values: list[Any]) -> pa.Array:
    """Parameter columns: numbers stay numbers, lists become JSON text, mixed types become text."""
    values = [param_value(v) for v in values]
    try:
        return pa.array(values)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return pa.array([None if v is None else str(v) for v in values], type=STR)


def _swap(new: Path, path: Path, aside: Path) -> Path | None:
    """`new` takes `path`'s place; returns where the table it replaced now is (None: there
    was none). Where the kernel exchanges two names in one step (Linux renameat2 with
    RENAME_EXCHANGE), a reader that takes no lock (plain pandas) never finds the table
    missing; elsewhere `path` first moves `aside` (published and recover handle a crash
    between the two renames)."""
    if not path.exists():
        os.replace(new, path)
        return None
    if _exchange(new, path):
        return new  # it holds the replaced table now (recover removes it after a crash)
    os.replace(path, aside)
    os.replace(new, path)
    return aside


def _exchange(a: Path, b: Path) -> bool:
    """Swap two names atomically (Linux renameat2, RENAME_EXCHANGE); False where that is not
    possible here (another OS, an older kernel or C library, a file system without it)."""
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    return renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0


def _remove(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)


def published(path: Path) -> Path:
    """The table to read: `path`, or the one a writer moved aside when it died between the
    two renames of a whole rewrite (write_parts), before its new folder took the place."""
    if path.exists():
        return path
    aside = sorted(path.parent.glob(f".{path.name}.old-*"), key=lambda p: p.stat().st_mtime)
    return aside[-1] if aside else path


def recover(path: Path) -> None:
    """Before a writer opens a table: a table moved aside by a crash goes back in place (the
    new one may be half written), and what the crash left half done goes."""
    aside = published(path)
    if aside != path:
        os.replace(aside, path)
    for left in [*path.parent.glob(f".{path.name}.new-*"),
                 *path.parent.glob(f".{path.name}.old-*")]:  # fmt: skip
        _remove(left)


def files(path: Path) -> list[Path]:
    """A table's Parquet files: its parts (as pyarrow reads the folder, hidden names
    skipped), or an older sweep's single file."""
    return sorted(path.glob("[!._]*")) if path.is_dir() else [path]
