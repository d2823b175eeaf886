"""How the harness shows and checks single values: one formatter and one finite check.

Console lines, report tables and error messages all format numbers the same way (4
significant digits, thousands separators for large numbers, '-' for missing), and every
place that must know whether a value is a usable number asks `finite`.
"""

from __future__ import annotations

import json
import math
from typing import Any


def finite(value: Any) -> bool:
    """True for a real number that is neither NaN nor infinite (bools and text are not)."""
    if isinstance(value, bool):
        return False
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def plain(value: Any) -> Any:
    """A cell as plain Python: numpy scalars and arrays to builtins, NaN/NA to None, JSON list
    or object text back to lists and dicts."""
    if hasattr(value, "tolist") and not isinstance(value, (str, bytes)):
        value = value.tolist()  # numpy scalar or array
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, float) and math.isnan(value):
        return None
    if value is not None and type(value).__name__ in ("NAType", "NaTType"):
        return None
    if isinstance(value, str) and value[:1] in "[{" and value[-1:] in "]}":
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value
    return value


def fmt(value: Any) -> str:
    """One value as text: 4 significant digits, thousands separators from 10,000, whole floats
    as integers, true/false, '-' for missing, lists as [a,b]."""
    value = plain(value)
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return f"{value:,}" if abs(value) >= 10_000 else str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        if value == int(value) and abs(value) < 1e15:
            return fmt(int(value))
        if abs(value) >= 10_000:
            return f"{value:,.0f}"
        return f"{value:.4g}"
    if isinstance(value, list):
        return "[" + ",".join(fmt(v) for v in value) + "]"
    if isinstance(value, dict):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


def show(value: Any) -> str:
    """A value as a user typed it, for error messages: null, true/false, repr otherwise."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value)
