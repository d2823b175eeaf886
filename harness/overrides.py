"""The one `--set KEY=VALUE` grammar, shared by `harness.sweep`, `harness.train` and the
benches: KEY is a dotted path (`budget.num_samples`, `data.pad_size`, `learning_rate`) and
VALUE is read as YAML (`8`, `0.25`, `false`, `[2, 3]`, `{type: asha}`), with yaml.safe_load.
Each command decides what its paths mean; the values are typed by harness.coercion.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import yaml

from harness.errors import Problem, UserError

EXAMPLE = "data.pad_size=64"  # a path every command that takes --set understands


@dataclass(frozen=True)
class Override:
    """One `--set`: the text as typed, its key path, and its value as YAML reads it."""

    text: str
    keys: tuple[str, ...]
    value: Any

    @property
    def key(self) -> str:
        return ".".join(self.keys)

    def set_in(self, raw: dict) -> Problem | None:
        """Set raw[a][b][c] = value for `a.b.c` (creating mappings on the way); a Problem
        when a step of the path holds something other than a mapping."""
        node = raw
        for i, part in enumerate(self.keys[:-1]):
            nxt = node.get(part)
            if nxt is None:
                nxt = node[part] = {}
            elif not isinstance(nxt, dict):
                where = ".".join(self.keys[: i + 1])
                return Problem(f"--set {self.text}", f"{where} is not a mapping", nxt)
            node = nxt
        node[self.keys[-1]] = self.value
        return None


def parse(text: str) -> Override:
    """`KEY.PATH=VALUE` -> Override; UserError (one Problem at `--set TEXT`) when it is not."""
    key, sep, value = text.partition("=")
    keys = tuple(part.strip() for part in key.strip().split("."))
    if not sep or not all(keys):
        raise UserError(Problem(f"--set {text}", f"expected KEY=VALUE, e.g. {EXAMPLE}"))
    try:
        return Override(text, keys, yaml.safe_load(value))
    except yaml.YAMLError as exc:
        rule = f"the value is not valid YAML ({getattr(exc, 'problem', None) or exc})"
        raise UserError(Problem(f"--set {text}", rule)) from None


def parse_all(texts: Iterable[str]) -> tuple[list[Override], list[Problem]]:
    """Every `--set` parsed, with a Problem for each that is not KEY=VALUE; all at once."""
    out: list[Override] = []
    problems: list[Problem] = []
    for text in texts:
        try:
            out.append(parse(text))
        except UserError as exc:
            problems += exc.problems
    return out, problems
