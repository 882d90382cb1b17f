"""The one place the process reads its settings: the environment, over a ``.env`` file.

``.env`` is read from the folder you run from (not searched for up the tree, and never written
into ``os.environ``), so a ``.env`` elsewhere, or one a test did not make, changes nothing.
Command-line options override these with ``dataclasses.replace``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from dotenv import dotenv_values

from multisessions.errors import ConfigError
from multisessions.locks import DEFAULT_ON_BUSY, ON_BUSY, OnBusy
from multisessions.naming import user_session_id

Api = Literal["responses", "chat_completions"]
APIS: tuple[Api, ...] = ("responses", "chat_completions")

DEFAULT_MODEL = "gpt-4.1-mini"
DEFAULT_TIMEOUT = 30.0
"""Seconds per try of a model call. The openai client retries a timeout too, with 0.5 s then 1 s
of backoff, so with 2 retries a server that never answers ends a call after at most
3 x 30 + 1.5 = 91.5 s, and one that drips its answer is cut at that plus ``DEADLINE_GRACE``:
within 2 minutes with room for the process around it (35 s per try measured 113.6 s end to
end, too close). tests/test_real_model.py checks the sum."""
DEFAULT_MAX_RETRIES = 2
DEADLINE_GRACE = 1.0
"""Seconds a model call's deadline adds to its tries and backoff (see ``Settings.call_deadline``)."""
DEFAULT_TURN_TIMEOUT = 180.0
"""Seconds all the model calls of one turn may take together (``OPENAI_TURN_TIMEOUT``): a handoff
turn makes two calls, each normally seconds long."""
DEFAULT_MAX_ANSWER_CHARS = 100_000
"""The longest model answer a turn keeps (``MAX_ANSWER_CHARS``); a longer one fails the turn."""
DEFAULT_SERVE_RATE = 30
"""Turns per minute per user that serve.py accepts (``SERVE_RATE``; 0 means no limit)."""
TRACES = ("off", "console", "otlp", "openai")
"""Where serve.py sends traces (``SERVE_TRACES``): nowhere, the console, an OpenTelemetry collector
(``OTEL_EXPORTER_OTLP_ENDPOINT``), or the SDK's own exporter, which uploads them to OpenAI."""
MIN_METRICS_TOKEN = 16
"""Characters a ``SERVE_METRICS_TOKEN`` needs at least: it guards the operator's numbers."""


@dataclass(frozen=True)
class ServeToken:
    """One ``SERVE_TOKENS`` entry: who a bearer token stands for. The token never shows in a repr."""

    user: str
    tenant: str | None
    token: str = field(repr=False)


@dataclass(frozen=True)
class Settings:
    """Which model answers and where sessions live."""

    api_key: str = ""
    model: str = DEFAULT_MODEL
    base_url: str = ""
    api: Api = "responses"
    timeout: float = DEFAULT_TIMEOUT
    max_retries: int = DEFAULT_MAX_RETRIES
    max_tokens: int | None = None
    turn_timeout: float = DEFAULT_TURN_TIMEOUT
    """``OPENAI_TURN_TIMEOUT``: seconds the model calls of one turn may take together."""
    max_answer_chars: int = DEFAULT_MAX_ANSWER_CHARS
    """``MAX_ANSWER_CHARS``: a model answer longer than this fails its turn (nothing is saved)."""
    store_url: str | None = None
    encryption_key: str = field(default="", repr=False)
    """``SESSION_ENCRYPTION_KEY``: when set, every session is encrypted at rest (a key per tenant)."""
    offline: bool = False
    """``--offline``: the built-in model even when a key is set."""
    summary_window: int | None = None
    """``SUMMARY_WINDOW``: with it, turns send a summary of older items and this many newest ones."""
    summary_threshold: int | None = None
    """``SUMMARY_THRESHOLD``: items past the window before they are folded in (default: the window)."""
    summary_prompt: str = ""
    """``SUMMARY_PROMPT``: the summarizer's instructions (default: summaries.DEFAULT_PROMPT)."""
    serve_tokens: tuple[ServeToken, ...] = field(default=(), repr=False)
    """``SERVE_TOKENS`` (``alice=TOKEN,acme/bob=TOKEN``): the users serve.py lets in."""
    serve_rate: int = DEFAULT_SERVE_RATE
    serve_on_busy: OnBusy = DEFAULT_ON_BUSY
    """``SERVE_ON_BUSY``: what serve.py does with a message for a conversation busy with another turn:
    ``wait`` for it (the default), ``reject`` it (409), or ``interrupt`` the running turn."""
    serve_on_disconnect: str = "continue"
    """``SERVE_ON_DISCONNECT``: what becomes of a streamed turn whose client leaves: it runs to its
    end and can be rejoined (``continue``, the default), or it stops and saves nothing (``cancel``)."""
    serve_titles: str = "first"
    """``SERVE_TITLES``: a conversation's title is its ``first`` message (the default), or written
    by the ``model`` in the conversation's first turn."""
    serve_api_docs: bool = False
    """``SERVE_API_DOCS=1``: serve.py publishes /docs, /redoc and /openapi.json (off by default)."""
    serve_metrics_token: str = field(default="", repr=False)
    """``SERVE_METRICS_TOKEN``: the bearer token /metrics asks for; without it /metrics is off (404)."""
    serve_traces: str = "off"
    """``SERVE_TRACES``: ``off`` (the default), ``console``, ``otlp`` or ``openai`` (see ``TRACES``)."""
    serve_trace_text: bool = False
    """``SERVE_TRACE_TEXT=1``: traces carry the messages and answers (off: names, timings, ids only)."""

    @property
    def uses_offline_model(self) -> bool:
        return self.offline or not self.api_key

    @property
    def call_deadline(self) -> float:
        """Seconds one model call may take in total, whatever the server sends: each try's
        ``timeout``, the client's backoff between tries (0.5 s, doubling, at most 8 s), and
        ``DEADLINE_GRACE`` so that a server that never answers meets the client's own timeout first."""
        backoff = sum(min(0.5 * 2.0**n, 8.0) for n in range(self.max_retries))
        return (self.max_retries + 1) * self.timeout + backoff + DEADLINE_GRACE


def load_settings(
    environ: Mapping[str, str] | None = None, dotenv: Path | None = None, *, serving: bool = False
) -> Settings:
    """Settings from ``environ`` (default ``os.environ``) over ``dotenv`` (default ``./.env``).

    Raises ``ConfigError`` naming the variable when a value cannot work. A program checks only
    what it reads: ``SERVE_TOKENS`` and ``SERVE_RATE`` are read with ``serving`` (serve.py), so a
    bad one never stops ``python agent.py``.
    """
    environ = os.environ if environ is None else environ
    path = Path(".env") if dotenv is None else dotenv
    from_file: dict[str, str | None] = {}
    if path.is_file():
        try:
            from_file = dotenv_values(path)
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"cannot read {path} ({exc}); fix or remove it") from None

    def get(name: str) -> str:
        value = environ.get(name)
        if value is None:
            value = from_file.get(name) or ""
        return value.strip()

    serve_tokens: tuple[ServeToken, ...] = ()
    serve_rate = DEFAULT_SERVE_RATE
    serve_api_docs = False
    metrics_token, traces, trace_text = "", "off", False
    if serving:
        serve_tokens = parse_tokens(get("SERVE_TOKENS"))
        serve_rate = parse_count(get("SERVE_RATE"), "SERVE_RATE", DEFAULT_SERVE_RATE, low=0) or 0
        serve_api_docs = parse_switch(get("SERVE_API_DOCS"), "SERVE_API_DOCS")
        metrics_token = parse_metrics_token(get("SERVE_METRICS_TOKEN"), serve_tokens)
        traces = parse_traces(get("SERVE_TRACES") or "off")
        trace_text = parse_switch(get("SERVE_TRACE_TEXT"), "SERVE_TRACE_TEXT")
    return Settings(
        api_key=get("OPENAI_API_KEY"),
        model=get("OPENAI_MODEL") or DEFAULT_MODEL,
        base_url=get("OPENAI_BASE_URL"),
        api=parse_api(get("OPENAI_API") or "responses", "OPENAI_API"),
        timeout=parse_seconds(get("OPENAI_TIMEOUT"), "OPENAI_TIMEOUT", DEFAULT_TIMEOUT),
        max_retries=_or(
            parse_count(get("OPENAI_MAX_RETRIES"), "OPENAI_MAX_RETRIES", None, low=0), DEFAULT_MAX_RETRIES
        ),
        max_tokens=parse_count(get("OPENAI_MAX_TOKENS"), "OPENAI_MAX_TOKENS", None, low=1),
        turn_timeout=parse_seconds(get("OPENAI_TURN_TIMEOUT"), "OPENAI_TURN_TIMEOUT", DEFAULT_TURN_TIMEOUT),
        store_url=get("SESSION_STORE_URL") or None,
        summary_window=parse_count(get("SUMMARY_WINDOW"), "SUMMARY_WINDOW", None, low=1),
        summary_threshold=parse_count(get("SUMMARY_THRESHOLD"), "SUMMARY_THRESHOLD", None, low=1),
        summary_prompt=get("SUMMARY_PROMPT"),
        encryption_key=get("SESSION_ENCRYPTION_KEY"),
        serve_tokens=serve_tokens,
        serve_rate=serve_rate,
        serve_on_busy=parse_on_busy(get("SERVE_ON_BUSY") or DEFAULT_ON_BUSY, "SERVE_ON_BUSY"),
        serve_on_disconnect=parse_on_disconnect(get("SERVE_ON_DISCONNECT") or "continue"),
        serve_titles=parse_titles(get("SERVE_TITLES") or "first"),
        serve_api_docs=serve_api_docs,
        serve_metrics_token=metrics_token,
        serve_traces=traces,
        serve_trace_text=trace_text,
        max_answer_chars=parse_count(
            get("MAX_ANSWER_CHARS"), "MAX_ANSWER_CHARS", DEFAULT_MAX_ANSWER_CHARS, low=1
        )
        or DEFAULT_MAX_ANSWER_CHARS,
    )


def _or(value: int | None, default: int) -> int:
    """``value`` unless it was not given: 0 retries is a choice, not a blank."""
    return default if value is None else value


def parse_api(value: str, name: str = "--api") -> Api:
    """``responses`` or ``chat_completions``."""
    if value not in APIS:
        raise ConfigError(f"{name}={value!r} must be one of: {', '.join(APIS)}")
    return value


def parse_traces(value: str, name: str = "SERVE_TRACES") -> str:
    """``off``, ``console``, ``otlp`` or ``openai``."""
    if value not in TRACES:
        raise ConfigError(f"{name}={value!r} must be one of: {', '.join(TRACES)}")
    return value


def parse_metrics_token(value: str, users: tuple[ServeToken, ...], name: str = "SERVE_METRICS_TOKEN") -> str:
    """A token for /metrics: empty (metrics off), or at least ``MIN_METRICS_TOKEN`` characters and
    not a user's token (a user must not read the operator's numbers)."""
    if not value:
        return ""
    if len(value) < MIN_METRICS_TOKEN or not value.isprintable() or " " in value:
        raise ConfigError(
            f"{name} must be at least {MIN_METRICS_TOKEN} printable characters without spaces "
            '(python -c "import secrets; print(secrets.token_urlsafe(24))" makes one)'
        )
    if any(value == entry.token for entry in users):
        raise ConfigError(f"{name} must differ from every SERVE_TOKENS token")
    return value


def parse_titles(value: str) -> str:
    """``SERVE_TITLES``: ``first`` or ``model``; anything else is a one-line ConfigError."""
    if value.strip().lower() in ("first", "model"):
        return value.strip().lower()
    raise ConfigError(f"SERVE_TITLES={value!r} must be one of: first, model")


def parse_on_disconnect(value: str) -> str:
    """``SERVE_ON_DISCONNECT``: ``continue`` or ``cancel``; anything else is a one-line ConfigError."""
    if value.strip().lower() in ("continue", "cancel"):
        return value.strip().lower()
    raise ConfigError(f"SERVE_ON_DISCONNECT={value!r} must be one of: continue, cancel")


def parse_on_busy(value: str, name: str = "--on-busy") -> OnBusy:
    """``wait``, ``reject`` or ``interrupt`` (see multisessions/locks.py)."""
    for choice in ON_BUSY:
        if value == choice:
            return choice
    raise ConfigError(f"{name}={value!r} must be one of: {', '.join(ON_BUSY)}")


def parse_seconds(value: str, name: str, default: float) -> float:
    """A positive, finite number of seconds; ``default`` when empty."""
    if not value:
        return default
    try:
        seconds = float(value)
    except ValueError:
        seconds = math.nan
    if not math.isfinite(seconds) or seconds <= 0:
        raise ConfigError(f"{name}={value!r} must be a positive number of seconds")
    return seconds


def parse_switch(value: str, name: str) -> bool:
    """``1``/``true``/``yes``/``on`` or ``0``/``false``/``no``/``off`` (empty: off)."""
    lowered = value.lower()
    if lowered in ("", "0", "false", "no", "off"):
        return False
    if lowered in ("1", "true", "yes", "on"):
        return True
    raise ConfigError(f"{name}={value!r} must be 1 or 0 (true or false)")


def parse_count(value: str, name: str, default: int | None, *, low: int) -> int | None:
    """A whole number of at least ``low``; ``default`` when empty."""
    if not value:
        return default
    try:
        count = int(value)
    except ValueError:
        count = low - 1
    if count < low:
        raise ConfigError(f"{name}={value!r} must be a whole number, at least {low}")
    return count


def parse_tokens(value: str, name: str = "SERVE_TOKENS") -> tuple[ServeToken, ...]:
    """``alice=TOKEN,bob=TOKEN`` (a tenant as ``acme/alice=TOKEN``); the tokens never appear in errors."""
    tokens: list[ServeToken] = []
    for number, entry in enumerate(filter(None, (e.strip() for e in value.split(","))), start=1):
        who, sep, token = entry.partition("=")
        tenant, slash, user = who.strip().rpartition("/")
        if not sep or not user.strip() or not token.strip() or (slash and not tenant.strip()):
            raise ConfigError(f"{name} entry {number} must look like user=TOKEN or tenant/user=TOKEN")
        if len(token.strip()) < 16:
            raise ConfigError(f"{name} entry {number} ({who.strip()}): the token is under 16 characters")
        if any(t.token == token.strip() for t in tokens):
            raise ConfigError(f"{name} entry {number} ({who.strip()}) reuses another entry's token")
        try:
            user_session_id(user.strip(), tenant=tenant.strip() or None)  # a user the naming helpers take
        except ValueError as exc:
            raise ConfigError(f"{name} entry {number}: {exc}") from None
        tokens.append(ServeToken(user.strip(), tenant.strip() or None, token.strip()))
    return tuple(tokens)
