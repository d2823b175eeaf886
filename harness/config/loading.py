"""Reading a sweep: a YAML file (or a dict, or a SweepSpec) plus `--set` overrides, checked
by harness.config.sections into one SweepSpec, or one UserError listing every problem."""

from __future__ import annotations

import copy
import dataclasses
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from harness import overrides as overrides_grammar
from harness.config.problems import Problems
from harness.config.sections import build
from harness.config.spec import SweepSpec
from harness.errors import UserError
from harness.values import show


def load_spec(path: str | Path, overrides: Sequence[str] = ()) -> SweepSpec:
    """Read, override (`KEY.PATH=VALUE`, value parsed as YAML) and validate a sweep file."""
    file = str(path)
    return _validate(_read_yaml(Path(path), file), file, overrides, Path(path).stem)


def spec_from_dict(
    raw: Mapping[str, Any], overrides: Sequence[str] = (), source: str = "<dict>"
) -> SweepSpec:
    """A sweep given as a dict (what a file's YAML reads as), checked exactly like a file;
    `source` stands for the file name in error lines. The dict itself is left unchanged."""
    return _validate(copy.deepcopy(dict(raw)), source, overrides, "sweep")


def as_spec(
    spec: SweepSpec | str | os.PathLike | Mapping[str, Any], overrides: Sequence[str] = ()
) -> SweepSpec:
    """A SweepSpec from a SweepSpec (overrides applied through its dict), a file or a dict."""
    if isinstance(spec, SweepSpec):
        if not overrides:
            return spec
        return spec_from_dict(spec.to_dict(), overrides, source=spec.source_path or spec.name)
    if isinstance(spec, Mapping):
        return spec_from_dict(spec, overrides)
    if isinstance(spec, (str, os.PathLike)):
        return load_spec(spec, overrides)
    raise UserError(f"sweep spec: expected a SweepSpec, a file path or a dict, got {show(spec)}")


def _validate(raw: Any, file: str, overrides: Sequence[str], default_name: str) -> SweepSpec:
    """Overrides, then every check of sections.build, every problem at once (UserError). One string
    is one override (`overrides="budget.num_samples=4"`), not a sequence of characters."""
    if isinstance(overrides, str):
        overrides = (overrides,)
    problems = Problems(file)
    if raw is None:
        problems.add("", "empty search-space file (expected keys such as model and parameters)")
    elif not isinstance(raw, dict):
        problems.add(
            "", "the top level must be a mapping of keys (name, model, parameters, ...)", raw
        )
    else:
        parsed, bad = overrides_grammar.parse_all(overrides)
        problems.extend(bad)
        for item in parsed:
            problem = item.set_in(raw)
            if problem is None:
                problems.overridden[item.key] = item.text
            else:
                problems.items.append(problem)
    if not isinstance(raw, dict):
        problems.raise_()
    spec = build(raw, problems, default_name=default_name)
    if problems.items or spec is None:
        problems.raise_()
    return dataclasses.replace(spec, source_path=file, overrides=tuple(overrides))


def _read_yaml(path: Path, file: str) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(f"{file}: no such search-space file") from None
    except IsADirectoryError:
        raise UserError(f"{file}: is a directory, not a search-space file") from None
    except UnicodeDecodeError:
        raise UserError(f"{file}: not UTF-8 text") from None
    except OSError as exc:
        raise UserError(f"{file}: cannot read ({exc.strerror})") from None
    try:
        duplicates: list[str] = []
        _find_duplicate_keys(yaml.compose(text, Loader=yaml.SafeLoader), file, duplicates, set())
        if duplicates:
            raise UserError("\n".join(duplicates))
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        where = f"{file}:{mark.line + 1}:{mark.column + 1}" if mark else file
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise UserError(f"{where}: invalid YAML: {problem}") from None


def _find_duplicate_keys(node: Any, file: str, out: list[str], seen_nodes: set[int]) -> None:
    """PyYAML keeps the last of two equal keys silently; a second `parameters:` is a bug."""
    if node is None or id(node) in seen_nodes:
        return
    seen_nodes.add(id(node))
    if isinstance(node, yaml.MappingNode):
        first: dict[str, int] = {}
        for key, value in node.value:
            if isinstance(key, yaml.ScalarNode) and key.value != "<<":
                line = key.start_mark.line + 1
                if key.value in first:
                    again = f"duplicate key {key.value!r} (first on line {first[key.value]})"
                    out.append(f"{file}:{line}: {again}")
                else:
                    first[key.value] = line
            _find_duplicate_keys(value, file, out, seen_nodes)
    elif isinstance(node, yaml.SequenceNode):
        for item in node.value:
            _find_duplicate_keys(item, file, out, seen_nodes)
