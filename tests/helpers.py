"""Helpers more than one test module uses (imported as `from helpers import ...`)."""

from __future__ import annotations

from collections.abc import Callable

import pytest


def user_error(capsys: pytest.CaptureFixture, main: Callable[[list[str]], object], *argv: str) -> str:
    """Run a command's main(argv) that must stop on a user's mistake: exit status 2 and
    exactly one `error:` line on stderr, no traceback. Returns that line."""
    with pytest.raises(SystemExit) as exit_:
        main(list(argv))
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and "Traceback" not in err, err
    return err
