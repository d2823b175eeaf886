"""User-facing errors: one clear line, exit status 2, never a traceback.

Code that validates what a user handed over (files, specs, flags) raises
UserError; each command's entry point wraps its main in `exit_on_user_error`
so the user sees `error: <message>` and the shell sees status 2.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

EXIT_USER_ERROR = 2


class UserError(Exception):
    """A mistake in the user's input; the message names the file/key/line and what is wrong."""


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
