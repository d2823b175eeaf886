"""User-facing errors: one clear line each, exit status 2, never a traceback.

Code that validates what a user handed over (files, specs, flags) raises UserError; each
command's entry point wraps its main in `exit_on_user_error` so the user sees
`error: <message>` and the shell sees status 2.

A check that knows where and why states a `Problem` (key path, rule, value); the one line a
user reads is made from it here, in `Problem.line`, and nowhere else. Callers that gather
problems from a nested check (a sweep file's `train` block asking harness.trialconfig) take
the records from `UserError.problems` and re-root their paths, instead of parsing text.
"""

from __future__ import annotations

import dataclasses
import difflib
import enum
import functools
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

from harness.values import show

T = TypeVar("T")

EXIT_USER_ERROR = 2


class _Nothing(enum.Enum):
    NOTHING = "nothing"  # an enum member: survives pickling (Ray) as the same object


NOTHING = _Nothing.NOTHING  # a Problem's value when no single value is at fault


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a user's input: where it is, which rule it breaks, what was given.

    path: the key path (`budget.num_samples`, `parameters.dropout.values[1]`, `learning_rate`,
    `--set x`; "" for the whole input); origin: the file (and the `--set` that changed it),
    "" when the path says it all."""

    path: str
    rule: str
    value: Any = NOTHING
    origin: str = ""

    def line(self) -> str:
        """`<origin>: <path>: <rule>, got <value>`, leaving out the parts that are empty."""
        text = self.rule if self.value is NOTHING else f"{self.rule}, got {show(self.value)}"
        return ": ".join(part for part in (self.origin, self.path, text) if part)

    def under(self, prefix: str) -> Problem:
        """The same problem one level down: `train` + `num_heads` -> `train.num_heads`."""
        path = f"{prefix}.{self.path}" if prefix and self.path else prefix or self.path
        return dataclasses.replace(self, path=path)


class UserError(Exception):
    """A mistake in the user's input; the message names the file/key/line and what is wrong.

    Give it text (one line or several) or Problem records; `problems` holds the records
    either way (text becomes a Problem with an empty path)."""

    def __init__(self, *problems: Problem | str) -> None:
        self.problems = tuple(p if isinstance(p, Problem) else Problem("", p) for p in problems)
        super().__init__("\n".join(p.line() for p in self.problems))


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """A ` (did you mean 'x'?)` suffix for an unknown name, or '' when nothing is close."""
    close = difflib.get_close_matches(str(name), [str(c) for c in choices], n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def exit_on_user_error(main: Callable[..., T]) -> Callable[..., T]:
    """Turn a UserError into `error: ...` on stderr and exit status 2."""

    @functools.wraps(main)
    def wrapper(*args, **kwargs):
        try:
            return main(*args, **kwargs)
        except UserError as exc:
            for line in str(exc).splitlines() or [""]:
                print(f"error: {line}", file=sys.stderr)
            raise SystemExit(EXIT_USER_ERROR) from None

    return wrapper
