"""A fault that leaves the sweep nowhere to write its record: stop, keep what is written.

When the tables or the Optuna study can no longer be written mid-run (a full disk, a folder
gone read-only), running more trials would only produce results that go nowhere. The first
such fault is recorded here (by the callback that writes the tables, or the searcher that
writes the study); as a Tune Stopper this ends the run at once, and from then on neither
the tables nor the study are told anything more. What was written stays exactly as it was
(every table write is atomic), the trials that were running stay RUNNING in the study, and
`--resume`, once there is room again, runs them from the start as after a Ctrl-C.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any

import optuna
import sqlalchemy.exc
from ray import tune

log = logging.getLogger(__name__)

# What a full or read-only disk raises: the OS (tables, Tune's state), Optuna's storage
STORAGE_FAULTS = (OSError, optuna.exceptions.StorageInternalError, sqlalchemy.exc.SQLAlchemyError)


def describe(where: str, exc: BaseException, doing: str = "write") -> str:
    """'<path>: cannot <doing> (<cause>)' with the cause at the bottom of the chain, e.g.
    'No space left on device' or 'database or disk is full'."""
    cause: BaseException = exc
    # an OSError names its own cause: what it met while handling another error (a full
    # SQLite study, say) is not why this write failed
    while not (isinstance(cause, OSError) and cause.strerror) and (
        cause.__cause__ is not None or cause.__context__ is not None
    ):
        cause = cause.__cause__ or cause.__context__  # type: ignore[assignment]
    if isinstance(cause, OSError) and cause.strerror:
        text = cause.strerror
    elif isinstance(getattr(cause, "orig", None), Exception):
        text = str(cause.orig)  # sqlalchemy: the driver's own message
    else:
        text = str(cause).strip().splitlines()[0] if str(cause).strip() else type(cause).__name__
    if isinstance(exc, OSError) and exc.filename:
        where = str(exc.filename)
    return f"{where}: cannot {doing} ({text})"


class Halt(tune.Stopper):
    """The first storage fault of a run; once set, Tune stops every trial (stop_all)."""

    def __init__(self) -> None:
        self.fault: str | None = None

    def record(self, where: str, exc: BaseException) -> None:
        if self.fault is None:
            self.fault = describe(where, exc)
            log.error("sweep stopped: %s", self.fault, exc_info=exc)

    def __call__(self, trial_id: str, result: dict[str, Any]) -> bool:
        return False

    def stop_all(self) -> bool:
        return self.fault is not None


def _chain(exc: BaseException) -> list[BaseException]:
    """exc and what caused it, or was being handled when it was raised (Tune wraps what it
    catches)."""
    out: list[BaseException] = []
    seen: BaseException | None = exc
    while seen is not None and seen not in out:
        out.append(seen)
        seen = seen.__cause__ or seen.__context__
    return out


def caused_by_storage(exc: BaseException) -> bool:
    """Whether a storage fault is in exc's chain and no Ctrl-C is: an interrupt that lands
    while a file error is being handled is still an interrupt (exit 130, --resume), not a
    full disk."""
    chain = _chain(exc)
    return not any(isinstance(e, KeyboardInterrupt) for e in chain) and any(
        isinstance(e, STORAGE_FAULTS) for e in chain
    )


def interrupted(exc: BaseException) -> bool:
    """Whether a Ctrl-C (KeyboardInterrupt) is anywhere in exc's chain."""
    return any(isinstance(e, KeyboardInterrupt) for e in _chain(exc))


def guarded(where: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """A Tune hook of an object with a `halt` (Halt or None) and the attribute `where` (the
    path it writes): after a fault it does nothing; a storage fault in it halts the run
    instead of escaping into Tune (which would print it twice and end in a traceback)."""

    def wrap(hook: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(hook)
        def guarded_hook(self: Any, *args: Any, **kw: Any) -> Any:
            halt = getattr(self, "halt", None)
            if halt is not None and halt.fault:
                return None
            try:
                return hook(self, *args, **kw)
            except STORAGE_FAULTS as exc:
                if interrupted(exc):  # a file error while a Ctrl-C unwound: the Ctrl-C
                    raise KeyboardInterrupt from exc
                if halt is None:
                    raise
                halt.record(str(getattr(self, where)), exc)
                return None

        return guarded_hook

    return wrap
