"""Every error this package raises on purpose, under one base: each message is one line saying
what is wrong and what to do, so a command line can print it as it is."""

from __future__ import annotations

import re
from collections.abc import Iterable

SECRET_LOOKALIKE = re.compile(r"\bsk-[A-Za-z0-9_\-*]{4,}")
"""Anything shaped like an OpenAI key (``sk-...``, ``sk-proj-...``), masked or not."""

REDACTED = "[redacted]"


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` with every given secret, and anything that looks like an API key, replaced.

    Servers sometimes quote the key back in an error message; nothing we print may carry it.
    Secrets shorter than 6 characters are left to the pattern: masking every "abc" would garble text.
    """
    for secret in sorted({s for s in secrets if len(s) >= 6}, key=len, reverse=True):
        text = text.replace(secret, REDACTED)
    return SECRET_LOOKALIKE.sub(REDACTED, text)


def sent_key(exc: BaseException) -> list[str]:
    """The API key an ``openai`` error's request carried (its ``Authorization`` header), if any."""
    headers = getattr(getattr(exc, "request", None), "headers", None)
    value = headers.get("authorization", "") if headers is not None else ""
    key = value.removeprefix("Bearer ").strip() if isinstance(value, str) else ""
    return [key] if key else []


class MultiSessionsError(Exception):
    """Base of the errors below; ``str(error)`` is the one line to show a user."""


class ConfigError(MultiSessionsError):
    """A setting (environment, ``.env`` or a command-line option) has a value that cannot work."""


class StoreError(MultiSessionsError):
    """A store cannot be used as asked (unreachable, missing driver, unusable file, no such session)."""


class WrongKey(StoreError):
    """A session's stored items cannot be read with this ``SESSION_ENCRYPTION_KEY`` (another key, or none)."""


class TurnFailed(MultiSessionsError):
    """A turn did not complete. ``saved`` is False when the session holds exactly what it held
    before the turn, None when the store may have saved it (it did not confirm the write)."""

    def __init__(self, session_id: str, cause: BaseException, *, saved: bool | None = False) -> None:
        self.session_id = session_id
        self.cause = cause
        self.saved = saved
        reason = redact(str(cause).splitlines()[0], sent_key(cause)) if str(cause).strip() else ""
        outcome = (
            "the session is unchanged"
            if saved is False
            else "the store did not confirm the write, so the turn may be saved: check the session "
            "before sending the message again"
        )
        detail = f"{type(cause).__name__}{': ' + reason if reason else ''}"
        super().__init__(f"turn on session {session_id!r} failed ({detail}); {outcome}")


class CommitUnconfirmed(MultiSessionsError):
    """The connection to the store was lost while a turn was being committed: it may be saved."""

    def __init__(self, session_id: str, cause: BaseException) -> None:
        self.session_id = session_id
        self.cause = cause
        reason = str(cause).splitlines()[0] if str(cause).strip() else type(cause).__name__
        super().__init__(f"the store did not confirm saving the turn on {session_id!r} ({reason})")


class ModelTimeout(MultiSessionsError):
    """A model call (or all of one turn's) took longer than its deadline; the turn is not saved."""


class AnswerTooLong(MultiSessionsError):
    """The model's answer was longer than ``MAX_ANSWER_CHARS``; the turn is not saved."""


class UsageError(MultiSessionsError):
    """Bad command-line usage (exit 2)."""


class SessionBusy(MultiSessionsError):
    """Another turn (maybe in another process) held the session: at once (``on_busy="reject"``),
    or for longer than we could wait."""


class TurnInterrupted(TurnFailed):
    """A newer message on the session stopped this turn (``on_busy="interrupt"``); nothing of it was saved."""

    def __init__(self, session_id: str) -> None:
        self.session_id = session_id
        self.cause = self
        self.saved = False
        MultiSessionsError.__init__(
            self,
            f"turn on session {session_id!r} stopped: a newer message on the session interrupted it "
            "(on_busy='interrupt')",
        )


class LeaseLost(MultiSessionsError):
    """The session's lease expired while this turn ran (the process stalled); the turn was not saved."""


class AwaitingApproval(MultiSessionsError):
    """The session's last turn is paused until someone approves or rejects its tool call."""
