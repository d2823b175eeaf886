"""harness.sweep.ray_session: what is checked about Ray before a sweep waits on it."""

from __future__ import annotations

import time

import pytest

from harness import sweep
from harness.errors import UserError


def test_an_unreachable_address_is_a_user_error_in_seconds() -> None:
    t0 = time.monotonic()
    with pytest.raises(UserError, match="nothing answers there"):
        sweep.check_reachable("127.0.0.1:1")
    assert time.monotonic() - t0 < 10
    sweep.check_reachable("auto")  # left to Ray
