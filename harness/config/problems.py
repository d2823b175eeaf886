"""The error collector of a sweep file, and the small checks every section uses.

Each check adds a Problem (key path, rule, value) and goes on, so a file's every problem is
reported at once; `Problems.raise_` names the file (and the `--set` that changed a key) and
raises them as one UserError, formatted by harness.errors.Problem.line.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from harness.coercion import coerce, number
from harness.errors import NOTHING, Problem, UserError, did_you_mean


def _related(path: str, key: str) -> bool:
    """Whether a problem at `path` may come from an override of `key` (for the message)."""
    if path == key or path.startswith((key + ".", key + "[")) or key.startswith(path + "."):
        return True
    # parameters.x.min against an override of parameters.x.max
    return path.startswith("parameters.") and path.split(".")[:2] == key.split(".")[:2]


class Problems:
    """Collects the Problems of one sweep file; raises them all at once."""

    def __init__(self, file: str) -> None:
        self.file = file
        self.items: list[Problem] = []
        self.overridden: dict[str, str] = {}  # key path -> the --set item that set it

    def add(self, path: str, rule: str, value: Any = NOTHING) -> None:
        self.items.append(Problem(path, rule, value))

    def extend(self, problems: Iterable[Problem], under: str = "") -> None:
        """Problems of a nested check (paths relative to `under`)."""
        self.items += [p.under(under) for p in problems]

    def _located(self, problem: Problem) -> Problem:
        if problem.origin or problem.path.startswith("--set "):
            return problem
        origin = self.file
        for key, item in self.overridden.items():
            if _related(problem.path, key):
                origin = f"{self.file} (--set {item})"
        return dataclasses.replace(problem, origin=origin)

    def raise_(self) -> typing.NoReturn:
        raise UserError(*(self._located(p) for p in self.items))


def check_int(p: Problems, path: str, v: Any, lo: int | None = None) -> int | None:
    try:
        x = coerce(path, v, int)
    except UserError as exc:
        p.extend(exc.problems)
        return None
    if lo is not None and x < lo:
        p.add(path, f"must be >= {lo}", v)
        return None
    return x


def check_number(p: Problems, path: str, v: Any, *, gt: float | None = None,
                 ge: float | None = None) -> float | None:  # fmt: skip
    x = number(v)
    if x is None or not math.isfinite(x):
        p.add(path, "expected a number", v)
        return None
    if gt is not None and not x > gt:
        p.add(path, f"must be > {gt:g}", v)
        return None
    if ge is not None and not x >= ge:
        p.add(path, f"must be >= {ge:g}", v)
        return None
    return x


def check_bool(p: Problems, path: str, v: Any) -> bool:
    if not isinstance(v, bool):
        p.add(path, "expected true or false", v)
    return v


def check_mapping(p: Problems, path: str, v: Any, example: str) -> dict | None:
    if v is None:
        return {}
    if not isinstance(v, dict):
        p.add(path, f"must be a mapping such as {example}", v)
        return None
    for k in v:
        if not isinstance(k, str):
            p.add(path, "keys must be strings", k)
            return None
    return v


def unknown(
    p: Problems, path: str, key: str, known: Iterable[str], hints: Mapping[str, str] = {}
) -> None:
    if key in hints:
        p.add(path, f"unknown key; {hints[key]}")
    else:
        p.add(path, f"unknown key{did_you_mean(key, known)}")


def abspath(v: Any) -> Any:
    """Trials run in their own working directory under Ray: make local paths absolute."""
    if isinstance(v, str) and v and "://" not in v:
        return str(Path(v).expanduser().resolve())
    return v
