"""A sweep file's `parameters` block (W&B's sweep vocabulary) -> ParamSpecs, every value
run through the trial's own checks (harness.trialconfig.resolve) so a bad bound or choice is
reported at its key path before any trial runs."""

from __future__ import annotations

import dataclasses
import math
import typing
from typing import Any

from harness import space
from harness.coercion import coerce, number
from harness.config.problems import Problems, abspath, check_mapping, check_number, unknown
from harness.config.vocabulary import ALIASES, PARAM_KEYS, UNSUPPORTED, USES
from harness.data import DataSpec
from harness.errors import UserError, did_you_mean
from harness.models import MODELS
from harness.space import DISTRIBUTIONS, GRIDDABLE, ParamSpec
from harness.trialconfig import resolve, setting_names, setting_types
from harness.values import finite, show

_MISSING = object()  # a value that failed its check (its problem is already added)


def _field_kind(model: str, name: str) -> type:
    """int, float, bool, str or tuple: the declared type of a flat setting."""
    typ = setting_types(model)[name]
    if typing.get_origin(typ) is not tuple:  # X | None -> X
        typ = next((a for a in typing.get_args(typ) if a is not type(None)), typ)
    return tuple if typing.get_origin(typ) is tuple else typ


def check_parameters(raw: Any, model: str | None, train: dict | None, method: Any,
                p: Problems) -> dict[str, ParamSpec] | None:  # fmt: skip
    if raw is None or raw == {}:
        p.add("parameters", "required: at least one setting to search, e.g. {learning_rate:"
              " {distribution: log_uniform_values, min: 1.0e-4, max: 1.0e-2}}")  # fmt: skip
        return None
    raw = check_mapping(p, "parameters", raw, "{dropout: {min: 0.1, max: 0.5}}")
    if raw is None or model is None:
        return None
    names = setting_names(model)
    data_fields = {f.name for f in dataclasses.fields(DataSpec)}
    base = train if train is not None else {}
    out: dict[str, ParamSpec] = {}
    n_before = len(p.items)
    for name, spec in raw.items():
        path = f"parameters.{name}"
        if name not in names:
            others = [m for m in MODELS if name in setting_names(m)]
            if others:
                hint = f" (it belongs to {', '.join(others)})"
            elif name in ALIASES:
                hint = f" (did you mean {ALIASES[name]!r}?)"
            elif name in data_fields:
                hint = f" (a data setting: the data is built once per sweep; set data.{name})"
            else:
                hint = did_you_mean(name, names)
            p.add(path, f"not a setting of {model} or of training{hint}")
        elif name in base:
            p.add(path, f"also fixed in train.{name}; set it in one place")
        elif (param := _param(name, spec, path, model, base, method, p)) is not None:
            out[name] = param
    if len(p.items) > n_before:
        return None
    if not any(q.searched for q in out.values()):
        p.add("parameters", "nothing to search: every parameter is a constant (value)")
        return None
    return out


def _param(name: str, spec: Any, path: str, model: str, base: dict, method: Any,
           p: Problems) -> ParamSpec | None:  # fmt: skip
    """One `parameters` entry -> ParamSpec; every problem found is added to `p`."""
    if not isinstance(spec, dict):
        p.add(path, "must be a mapping such as {value: x}, {values: [a, b]} or {min: a, max: b}",
              spec)  # fmt: skip
        return None
    n_before = len(p.items)
    for key in spec:
        if key not in PARAM_KEYS:
            unknown(p, f"{path}.{key}", str(key), PARAM_KEYS)
    if "parameters" in spec:
        p.add(f"{path}.parameters", "nested parameters are not supported: name each setting"
              " directly under parameters")  # fmt: skip
        return None
    kind = _field_kind(model, name)
    dist = spec.get("distribution")
    if dist is None:
        dist = _infer(spec, kind)
        if dist is None:
            p.add(path, "needs value, values, or min and max", spec)
            return None
    dpath = f"{path}.distribution"
    if not isinstance(dist, str):
        p.add(dpath, f"expected a name such as {', '.join(DISTRIBUTIONS[:3])}", dist)
        return None
    if dist in UNSUPPORTED:
        p.add(dpath, f"not supported: {_unsupported_hint(dist, spec)}", dist)
        return None
    if dist not in DISTRIBUTIONS:
        hint = did_you_mean(dist, list(DISTRIBUTIONS) + list(UNSUPPORTED))
        p.add(dpath, f"unknown distribution{hint}; choose one of {', '.join(DISTRIBUTIONS)}", dist)
        return None
    for key in spec:
        if key in PARAM_KEYS and key not in USES[dist] and key != "distribution":
            p.add(f"{path}.{key}", f"not used by {dist}", spec[key])
    if "probabilities" in spec and dist == "categorical":
        p.add(f"{path}.probabilities", "not supported (Optuna's samplers weight the choices"
              " themselves); remove it", spec["probabilities"])  # fmt: skip
    if method == "grid" and dist not in GRIDDABLE:
        p.add(
            dpath, "method grid needs a finite set: use values (or int_uniform / q_uniform)", dist
        )

    def check(value: Any, vpath: str) -> Any:
        """Run one value through resolve (the trial's own type checks); canonical value back."""
        if isinstance(value, str) and name.endswith("_path"):
            value = abspath(value)
        try:
            got = resolve(model, {**base, name: value}).to_flat()[name]
        except UserError as exc:
            # A rule about another setting (num_heads vs embed) is not this value's fault:
            # the baseline trial checks the combination once (harness.config.sections).
            others = set(setting_types(model)) - {name}
            own = [q for q in exc.problems if q.path not in others]
            for q in own:
                p.add(vpath, q.rule, q.value)
            if own:
                return _MISSING
            got = coerce(name, value, setting_types(model)[name])
            got = list(got) if isinstance(got, tuple) else got
        if name == "dropout" and not 0 <= got < 1:
            p.add(vpath, "must be in [0, 1)", got)
            return _MISSING
        if isinstance(got, float) and not finite(got):  # .inf would make every trial diverge
            p.add(vpath, "must be a finite number", got)
            return _MISSING
        return got

    if dist == "constant":
        param = _constant(name, spec, path, check, p)
    elif dist == "categorical":
        param = _categorical(name, spec, path, check, p)
    else:
        param = _range(name, dist, spec, path, kind, check, p)
    return param if len(p.items) == n_before else None


def _unsupported_hint(dist: str, spec: dict) -> str:
    """The replacement, with the numbers worked out where the bounds are given."""
    hint = UNSUPPORTED[dist]
    lo, hi = number(spec.get("min")), number(spec.get("max"))
    if lo is None or hi is None:
        return hint
    try:
        if dist in ("log_uniform", "q_log_uniform"):
            return f"{hint} (here min: {math.exp(lo):.4g}, max: {math.exp(hi):.4g})"
        if dist == "inv_log_uniform":
            return f"{hint} (here min: {math.exp(-hi):.4g}, max: {math.exp(-lo):.4g})"
    except OverflowError:
        pass
    return hint


def _constant(name: str, spec: dict, path: str, check, p: Problems) -> ParamSpec | None:
    if "value" not in spec:
        p.add(f"{path}.value", "required for constant")
        return None
    value = check(spec["value"], f"{path}.value")
    return None if value is _MISSING else ParamSpec(name, "constant", value=space.freeze(value))


def _categorical(name: str, spec: dict, path: str, check, p: Problems) -> ParamSpec | None:
    values = spec.get("values")
    if not isinstance(values, list) or not values:
        p.add(f"{path}.values", "must be a non-empty list", values)
        return None
    choices: list[Any] = []
    seen: dict[str, int] = {}
    for i, v in enumerate(values):
        vpath = f"{path}.values[{i}]"
        if isinstance(v, dict) or (
            isinstance(v, list) and any(isinstance(x, (dict, list)) for x in v)
        ):
            p.add(vpath, "choices must be numbers, strings, booleans, null or flat lists", v)
            continue
        got = check(v, vpath)
        if got is _MISSING:
            continue
        key = repr(space.encode_choice(got))  # equal choices, or a list and its text form
        if key in seen:
            p.add(vpath, f"same as values[{seen[key]}]", v)
            continue
        seen[key] = i
        choices.append(space.freeze(got))
    return ParamSpec(name, "categorical", values=tuple(choices))


def _range(name: str, dist: str, spec: dict, path: str, kind: type, check,
           p: Problems) -> ParamSpec | None:  # fmt: skip
    if kind not in (int, float):
        word = {bool: "true/false", str: "a string", tuple: "a list"}.get(kind, str(kind))
        p.add(f"{path}.distribution", f"{name} takes {word}: use values (or value)", dist)
        return None
    n_before = len(p.items)
    bounds = {}
    for key in ("min", "max"):
        if key not in spec:
            p.add(f"{path}.{key}", f"required for {dist}")
        else:
            bounds[key] = check_number(p, f"{path}.{key}", spec[key])
    q = check_number(p, f"{path}.q", spec.get("q", 1), gt=0) if dist.startswith("q_") else None
    if kind is int and dist == "uniform":
        p.add(f"{path}.distribution", f"{name} is a whole number: use int_uniform (or q_uniform,"
              " log_uniform_values with whole-number bounds)", dist)  # fmt: skip
    if len(p.items) > n_before:
        return None
    lo, hi = bounds["min"], bounds["max"]
    integer = dist == "int_uniform" or kind is int
    if integer:
        why = f"{name} is a whole number" if kind is int else "int_uniform"
        for key, val in (("min", lo), ("max", hi), ("q", q)):
            if val is not None and not float(val).is_integer():
                p.add(f"{path}.{key}", f"must be a whole number ({why})", spec.get(key, val))
        if len(p.items) > n_before:
            return None
        lo, hi, q = int(lo), int(hi), (int(q) if q is not None else None)
    if not lo < hi:
        p.add(f"{path}.min", f"must be < max ({show(hi)}); for a fixed setting use value", lo)
        return None
    if dist in ("log_uniform_values", "q_log_uniform_values") and not lo > 0:
        p.add(f"{path}.min", f"must be > 0 for {dist}", lo)
        return None
    param = ParamSpec(name, dist, min=lo, max=hi, q=q, integer=integer)
    low, high = param.bounds()
    if low > high:
        p.add(f"{path}.q", f"no multiple of q lies within [{show(lo)}, {show(hi)}]", q)
        return None
    check(low, f"{path}.min")
    check(high, f"{path}.max")
    return param


def _infer(spec: dict, kind: type) -> str | None:
    """W&B's inference: values -> categorical, value -> constant, min/max -> a range.

    For a range the setting's type decides between int_uniform and uniform (W&B looks at
    whether the bounds are ints, which would sample whole numbers for a float setting).
    """
    if "values" in spec or "probabilities" in spec:
        return "categorical"
    if "value" in spec:
        return "constant"
    if "min" in spec or "max" in spec:
        if kind is float:
            return "uniform"
        lo, hi = number(spec.get("min")), number(spec.get("max"))
        whole = all(
            isinstance(x, int) or (isinstance(x, float) and x.is_integer()) for x in (lo, hi)
        )
        if kind is int:
            return "int_uniform" if whole else "uniform"
        return "int_uniform" if all(isinstance(x, int) for x in (lo, hi)) else "uniform"
    if "mu" in spec or "sigma" in spec:
        return "normal"
    if "a" in spec or "b" in spec:
        return "beta"
    return None
