"""User-facing errors: one clear line, exit status 2, never a traceback.

Code that validates what a user handed over (files, specs, flags) raises
UserError; each command's entry point wraps its main in `exit_on_user_error`
so the user sees `error: <message>` and the shell sees status 2.
"""

from __future__ import annotations

import difflib
import functools
import sys
from collections.abc import Callable, Iterable
from typing import TypeVar

T = TypeVar("T")

EXIT_USER_ERROR = 2


class UserError(Exception):
    """A mistake in the user's input; the message names the file/key/line and what is wrong."""


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
