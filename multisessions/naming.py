"""Session ids that can never put two users in one conversation.

Four conventions, each readable at a glance::

    user_session_id("123")                       -> "user_123"
    feature_session_id("chat", "123")            -> "chat_feature_user_123"
    thread_session_id("abc123")                  -> "thread_abc123"
    dated_session_id("123", date(2024, 12, 15))  -> "user_123_20241215"

Naive f-strings collide: user ``"123_20241215"`` and user ``"123"`` on 2024-12-15 both give
``user_123_20241215``. Here ``_`` only ever separates fields, because every part is escaped:
letters, digits, ``-``, ``.`` and ``@`` stay as they are and every other character (``_``
included) becomes ``%XX`` per UTF-8 byte. So any real user id (an email, ``a_b``, ``José``)
works, the documented examples stay exactly as shown, and ``parse_session_id`` recovers the
parts. The kinds are told apart by the number of fields and their fixed words, so no two
different inputs of any kinds give the same id.

Rejected with ``ValueError`` naming the part: non-strings, empty or whitespace-only parts,
leading or trailing whitespace, control characters, text that is not NFC-normalised (it would
look identical to another spelling), and parts over ``MAX_PART_LENGTH`` characters.

An optional tenant prefix (``tenant="acme"`` -> ``acme:user_123``) keeps apps apart in a
shared store; ``:`` never appears inside an escaped part.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Literal

MAX_PART_LENGTH = 128
_MAX_ESCAPED_PART = MAX_PART_LENGTH * 4 * 3  # 4 UTF-8 bytes a character, each byte as %XX
MAX_ID_LENGTH = _MAX_ESCAPED_PART * 3 + len(":") + len("_feature_user_")
"""The longest id the helpers can build (tenant, feature and user all at the limit, all escaped):
4,623 characters. ``check_session_id`` takes ids up to this, so any id a helper built can be
shown and deleted by id."""
_SAFE = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.@")
_ESCAPED_PART = re.compile(r"(?:[A-Za-z0-9.@-]|%[0-9A-F]{2})+")
_DAY = re.compile(r"\d{8}")

SessionKind = Literal["user", "feature", "thread", "dated", "unknown"]


@dataclass(frozen=True)
class ParsedSessionId:
    """What a session id says: its kind and parts (``kind="unknown"`` if no helper made it)."""

    kind: SessionKind
    user: str | None = None
    feature: str | None = None
    thread: str | None = None
    day: date | None = None
    tenant: str | None = None


def _check_part(label: str, value: object, limit: int = MAX_PART_LENGTH) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{label} must be a string, got {type(value).__name__}")
    if not value.strip():
        raise ValueError(f"{label} is empty or whitespace only")
    if value != value.strip():
        raise ValueError(f"{label} {value!r} has leading or trailing whitespace (ambiguous)")
    if len(value) > limit:
        raise ValueError(f"{label} is {len(value)} characters long (limit {limit})")
    if any(unicodedata.category(ch) in ("Cc", "Cf", "Cs") for ch in value):
        raise ValueError(f"{label} {value!r} contains control characters")
    if unicodedata.normalize("NFC", value) != value:
        raise ValueError(f"{label} {value!r} is not NFC-normalised (ambiguous spelling)")
    return value


def _escape(label: str, value: object) -> str:
    text = _check_part(label, value)
    return "".join(ch if ch in _SAFE else "".join(f"%{b:02X}" for b in ch.encode("utf-8")) for ch in text)


def _unescape(field: str) -> str | None:
    """The part an escaped field came from, or None if ``_escape`` could not have made it."""
    if not _ESCAPED_PART.fullmatch(field):
        return None
    raw = bytearray()
    i = 0
    while i < len(field):
        if field[i] == "%":
            raw.append(int(field[i + 1 : i + 3], 16))
            i += 3
        else:
            raw.extend(field[i].encode())
            i += 1
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return None
    try:
        canonical = _escape("part", text)
    except ValueError:
        return None
    return text if canonical == field else None


def _with_tenant(session_id: str, tenant: str | None) -> str:
    return session_id if tenant is None else f"{_escape('tenant', tenant)}:{session_id}"


def _day(value: date | datetime | str) -> str:
    if isinstance(value, datetime):
        # Aware datetimes are converted to UTC first, so one instant names one day everywhere.
        if value.tzinfo is not None:
            value = value.astimezone(UTC)
        return value.strftime("%Y%m%d")
    if isinstance(value, date):
        return value.strftime("%Y%m%d")
    if isinstance(value, str) and _DAY.fullmatch(value):
        try:
            datetime.strptime(value, "%Y%m%d")
        except ValueError:
            pass
        else:
            return value
    raise ValueError(f"day {value!r} must be a date, a datetime or a YYYYMMDD string")


def user_session_id(user_id: str, *, tenant: str | None = None) -> str:
    """One conversation per user: ``user_<user>``."""
    return _with_tenant(f"user_{_escape('user_id', user_id)}", tenant)


def feature_session_id(feature: str, user_id: str, *, tenant: str | None = None) -> str:
    """One conversation per feature per user: ``<feature>_feature_user_<user>``."""
    return _with_tenant(f"{_escape('feature', feature)}_feature_user_{_escape('user_id', user_id)}", tenant)


def thread_session_id(thread_id: str, *, tenant: str | None = None) -> str:
    """One conversation per thread, whoever takes part: ``thread_<thread>``."""
    return _with_tenant(f"thread_{_escape('thread_id', thread_id)}", tenant)


def dated_session_id(user_id: str, day: date | datetime | str, *, tenant: str | None = None) -> str:
    """One conversation per user per day: ``user_<user>_<YYYYMMDD>``.

    ``day`` is a ``date``, a ``datetime`` (aware ones are converted to UTC) or ``"YYYYMMDD"``.
    """
    return _with_tenant(f"user_{_escape('user_id', user_id)}_{_day(day)}", tenant)


def parse_session_id(session_id: str) -> ParsedSessionId:
    """The kind and parts of an id the helpers made; ``kind="unknown"`` for any other id."""
    unknown = ParsedSessionId("unknown")
    if not isinstance(session_id, str):
        return unknown
    tenant = None
    body = session_id
    if ":" in session_id:
        prefix, body = session_id.split(":", 1)
        tenant = _unescape(prefix)
        if tenant is None:
            return unknown
    fields = body.split("_")
    values = [_unescape(f) for f in fields]
    if None in values:
        return unknown
    match fields:
        case ["user", _]:
            return ParsedSessionId("user", user=values[1], tenant=tenant)
        case ["thread", _]:
            return ParsedSessionId("thread", thread=values[1], tenant=tenant)
        case ["user", _, day] if _DAY.fullmatch(day):
            try:
                parsed_day = datetime.strptime(day, "%Y%m%d").date()
            except ValueError:
                return unknown
            return ParsedSessionId("dated", user=values[1], day=parsed_day, tenant=tenant)
        case [_, "feature", "user", _]:
            return ParsedSessionId("feature", feature=values[0], user=values[3], tenant=tenant)
    return unknown


def make_session_id(parsed: ParsedSessionId) -> str:
    """The id a ``ParsedSessionId`` came from (the inverse of ``parse_session_id``)."""
    if parsed.kind == "user":
        return user_session_id(parsed.user, tenant=parsed.tenant)  # type: ignore[arg-type]
    if parsed.kind == "feature":
        return feature_session_id(parsed.feature, parsed.user, tenant=parsed.tenant)  # type: ignore[arg-type]
    if parsed.kind == "thread":
        return thread_session_id(parsed.thread, tenant=parsed.tenant)  # type: ignore[arg-type]
    if parsed.kind == "dated":
        return dated_session_id(parsed.user, parsed.day, tenant=parsed.tenant)  # type: ignore[arg-type]
    raise ValueError("an unknown session id has no parts to rebuild it from")


def check_session_id(session_id: object) -> str:
    """Any session id a store will take: a printable, trimmed string of at most ``MAX_ID_LENGTH``."""
    return _check_part("session id", session_id, limit=MAX_ID_LENGTH)


def check_tenant(tenant: object) -> str:
    """A tenant name the helpers take (``ValueError`` naming what is wrong otherwise)."""
    _escape("tenant", tenant)
    return tenant  # type: ignore[return-value]


def tenant_prefix(tenant: str) -> str:
    """What every id of ``tenant`` starts with: the escaped tenant and ``:``."""
    return f"{_escape('tenant', tenant)}:"


def in_tenant(session_id: str, tenant: str | None) -> bool:
    """Whether ``session_id`` belongs to ``tenant``; ``tenant=None`` means ids with no tenant.

    Decided on the id's text, not on what it parses to: an id is in tenant ``T`` exactly when it
    starts with ``escape(T) + ":"``, and has no tenant exactly when it holds no ``:``. Escaped
    parts never hold ``:``, so no user, feature or thread name can reach another tenant.
    """
    if tenant is None:
        return ":" not in session_id
    return session_id.startswith(tenant_prefix(tenant))


def tenant_label(session_id: str) -> str | None:
    """The tenant field of an id as written (``acme`` in ``acme:user_1``), or None without one."""
    prefix, sep, _ = session_id.partition(":")
    return prefix if sep else None


_SCOPE_SEP = "\x1f"  # never in a tenant or user name (they are printable)


def memory_scope(session_id: str) -> str | None:
    """Whose memory a session reads and writes: its tenant and user; None if the id names no user."""
    parsed = parse_session_id(session_id)
    if parsed.user is None:
        return None
    return user_scope(parsed.user, parsed.tenant)


def user_scope(user: str, tenant: str | None = None) -> str:
    """The memory scope of ``user`` in ``tenant`` (None: no tenant), as ``memory_scope`` gives it."""
    return f"{tenant or ''}{_SCOPE_SEP}{user}"


def scope_parts(scope: str) -> tuple[str | None, str]:
    """The tenant (None: no tenant) and user a memory scope stands for."""
    tenant, _, user = scope.partition(_SCOPE_SEP)
    return tenant or None, user
