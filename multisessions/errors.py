"""Every error this package raises on purpose, under one base: each message is one line saying
what is wrong and what to do, so a command line can print it as it is."""

from __future__ import annotations


class MultiSessionsError(Exception):
    """Base of the errors below; ``str(error)`` is the one line to show a user."""


class ConfigError(MultiSessionsError):
    """A setting (environment, ``.env`` or a command-line option) has a value that cannot work."""


class StoreError(MultiSessionsError):
    """A store cannot be used as asked (unreachable, missing driver, unusable file, no such session)."""


class TurnFailed(MultiSessionsError):
    """A turn did not complete; the session holds exactly what it held before the turn."""

    def __init__(self, session_id: str, cause: BaseException) -> None:
        self.session_id = session_id
        self.cause = cause
        reason = str(cause).splitlines()[0] if str(cause) else ""
        super().__init__(
            f"turn on session {session_id!r} failed ({type(cause).__name__}"
            f"{': ' + reason if reason else ''}); the session is unchanged"
        )


class UsageError(MultiSessionsError):
    """Bad command-line usage (exit 2)."""


class SessionBusy(MultiSessionsError):
    """Another turn (maybe in another process) held the session for longer than we could wait."""


class LeaseLost(MultiSessionsError):
    """The session's lease expired while this turn ran (the process stalled); the turn was not saved."""


class AwaitingApproval(MultiSessionsError):
    """The session's last turn is paused until someone approves or rejects its tool call."""
