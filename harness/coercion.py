"""The one value coercer: a value a user gave (a file's YAML, a `--set`) -> a field's type.

Sweep files, `python -m harness.train --set`, the benches and saved models' settings all
reach typed dataclass fields through `coerce`; so `1e-4` (which YAML 1.1 reads as text),
`64.0` for a whole number and `"3,4,5"` for a list mean the same everywhere, and a wrong
value is one Problem (the field's name, the rule, the value) wherever it was typed.
"""

from __future__ import annotations

import math
import types
import typing
from collections.abc import Mapping
from typing import Any

from harness.errors import Problem, UserError, did_you_mean


def number(value: Any) -> int | float | None:
    """A number as given, or a numeric string as a number (PyYAML reads 1e-4 without a dot
    as a string); None for anything else (bools, other text, NaN or infinite text)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return value
    if isinstance(value, str):
        try:
            return int(value)
        except ValueError:
            try:
                x = float(value)
            except ValueError:
                return None
            return x if math.isfinite(x) else None
    return None


def coerce(name: str, value: Any, typ: Any) -> Any:
    """Check and convert one value to a declared type (int, float, bool, str, tuple[X, ...],
    X | None); UserError with one Problem at `name` when it does not fit."""
    origin, args = typing.get_origin(typ), typing.get_args(typ)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        return coerce(name, value, next(a for a in args if a is not type(None)))
    if typ is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.lower() in ("true", "1", "yes")
        raise UserError(Problem(name, "expected true or false", value))
    if typ is int:
        x = number(value)
        if isinstance(x, int) or (isinstance(x, float) and x.is_integer()):
            return int(x)
        raise UserError(Problem(name, "expected an integer", value))
    if typ is float:
        x = number(value)
        if x is None:
            raise UserError(Problem(name, "expected a number", value))
        return float(x)
    if typ is str:
        if isinstance(value, str):
            return value
        raise UserError(Problem(name, "expected a string", value))
    if origin is tuple:
        if isinstance(value, str):  # "3,4,5" or "[3, 4, 5]" as a shell passes it
            value = [v for v in value.replace("[", "").replace("]", "").split(",") if v.strip()]
        if not isinstance(value, (list, tuple)) or not value:
            raise UserError(Problem(name, "expected a non-empty list", value))
        return tuple(coerce(name, v, args[0]) for v in value)
    return value


def coerce_fields(
    cls: type, raw: Mapping[str, Any], prefix: str = ""
) -> tuple[dict[str, Any], list[Problem]]:
    """A mapping of a dataclass's field names -> values of the fields' types, with a Problem
    (path `prefix.name`) for each unknown name or bad value; every problem at once."""
    hints = typing.get_type_hints(cls)
    kw: dict[str, Any] = {}
    problems: list[Problem] = []
    for key, value in raw.items():
        path = f"{prefix}.{key}" if prefix else str(key)
        if key not in hints:
            problems.append(Problem(path, f"unknown key{did_you_mean(key, hints)}"))
            continue
        try:
            kw[key] = coerce(path, value, hints[key])
        except UserError as exc:
            problems += exc.problems
    return kw, problems
