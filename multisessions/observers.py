"""Watching turns from outside: what a turn ended as, how long it took, how long it waited.

``turns.py`` reports to the observers registered here and knows nothing of what they do with
it; ``metrics.py`` (Prometheus) is one. With none registered a turn pays one empty-tuple check.

    remove = watch_turns(observer)   # observer.turn_ended / turn_waited / leases_changed
    ...
    remove()

``outcome_of(exc)`` names how a turn ended (``ok``, ``busy``, ``model_failed``...), and, for a
model's failure, its kind (``failure_kind``). ``group_traces(True)`` makes every turn's trace
carry its session id as the SDK's ``group_id`` (tracing.py switches it on).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import Protocol

from multisessions.errors import AwaitingApproval, SessionBusy, StoreError, TurnFailed, TurnInterrupted
from multisessions.failures import failure_kind

OUTCOMES = (
    "ok",
    "model_failed",
    "store_failed",
    "busy",
    "interrupted",
    "awaiting_approval",
    "unconfirmed",
    "left",
    "cancelled",
)
"""How a turn can end: answered and saved; the model failed (``failure_kind`` says how); the store
failed; another turn held the session (``SERVE_ON_BUSY=reject``, or waited too long); a newer
message stopped it; it waits for a supervisor; the store did not confirm the save; the reader of a
streamed turn left before its end; it was cancelled."""
_STORE_MODULES = ("sqlite3", "redis", "sqlalchemy", "asyncpg", "aiosqlite")


class TurnObserver(Protocol):
    """What ``watch_turns`` accepts: three calls, each cheap (they run inside every turn)."""

    def turn_ended(self, outcome: str, kind: str | None, seconds: float) -> None:
        """A turn ended as ``outcome`` (``kind``: the model's failure, else None) after ``seconds``."""

    def turn_waited(self, seconds: float) -> None:
        """A turn found its session busy and waited ``seconds`` before holding it."""

    def leases_changed(self, change: int) -> None:
        """This process holds ``change`` (+1 or -1) more sessions for turns."""


observers: tuple[TurnObserver, ...] = ()
"""The registered observers; read by ``turns.py`` on every turn."""
grouping = False
"""Whether turns set the SDK's ``group_id`` to their session id (only worth it when traced)."""


def watch_turns(observer: TurnObserver) -> Callable[[], None]:
    """Register ``observer`` for every turn in this process; returns the call that removes it."""
    global observers
    observers = (*observers, observer)

    def remove() -> None:
        global observers
        observers = tuple(o for o in observers if o is not observer)

    return remove


def group_traces(on: bool) -> None:
    """Have every turn's trace grouped by its session id (the SDK's ``RunConfig.group_id``)."""
    global grouping
    grouping = on


def outcome_of(exc: BaseException | None) -> tuple[str, str | None]:
    """(how a turn ended, the model's failure kind or None) for what the turn raised, if anything."""
    if exc is None:
        return "ok", None
    if isinstance(exc, TurnInterrupted):
        return "interrupted", None
    if not isinstance(exc, Exception):  # the task was cancelled (a client that left, a shutdown)
        return "cancelled", None
    if not isinstance(exc, TurnFailed):
        return "model_failed", failure_kind(exc)
    cause = exc.cause
    if isinstance(cause, SessionBusy):
        return "busy", None
    if exc.saved is None:
        return "unconfirmed", None
    if isinstance(cause, AwaitingApproval):
        return "awaiting_approval", None
    if is_store_failure(cause):
        return "store_failed", None
    return "model_failed", failure_kind(cause)


def is_store_failure(exc: BaseException) -> bool:
    """Whether ``exc`` came from the store (database, Redis) rather than from the model."""
    if isinstance(exc, StoreError | sqlite3.Error):
        return True
    return type(exc).__module__.split(".")[0] in _STORE_MODULES
