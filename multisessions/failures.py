"""One line for a failed model call: what failed, the server's own words, and the fix.

``describe_failure(exc)`` turns whatever a model call raised (the ``openai`` client's errors, a
timeout, an answer that is not the API's JSON, the SDK's own errors) into a single line ending
in ``Fix: ...``. The server's message is cut to its first line, and secrets never appear: the
key the request carried, the keys passed in ``secrets`` and anything shaped like ``sk-...`` are
replaced by ``[redacted]``, also when a careless server quotes the key back.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable

import openai
from agents.exceptions import MaxTurnsExceeded, ModelBehaviorError

from multisessions.errors import AnswerTooLong, ModelTimeout, redact, sent_key

OFFLINE = "or run offline with --offline"
CONTEXT_OVERFLOW = re.compile(
    r"context[ _](length|size|window)|maximum context|too many tokens|exceeds? the .*context", re.I
)
"""How OpenAI, vLLM and llama.cpp word "the conversation no longer fits"."""
HISTORY_REJECTED = re.compile(r"messages|tool_calls|'content'|\bcontent\b.*\bnull\b|chat template", re.I)
"""How servers word "I cannot read the messages you sent" (llama.cpp: content null + tool_calls)."""
MAX_SHOWN = 200
"""Characters of the server's message we show; the rest is noise in a one-line error."""


def describe_failure(exc: BaseException, secrets: Iterable[str] = ()) -> str:
    """One line saying what failed in a model call, in the server's words, and what to do about it."""
    secrets = [*secrets, *sent_key(exc)]
    name = type(exc).__name__
    if isinstance(exc, ModelTimeout | AnswerTooLong):  # our own limits: the line names the fix
        return redact(f"{name}: {exc}", secrets)
    says, hint = _explain(exc)
    if isinstance(exc, openai.APIStatusError):
        name += f", HTTP {exc.status_code}"
    stop = "" if says.endswith(("!", "?")) else "."
    return redact(f"{name}: {says}{stop} Fix: {hint}.", secrets)


FAILURE_KINDS = (
    "timeout",
    "too_long",
    "rate_limited",
    "unreachable",
    "server_error",
    "refused",
    "bad_answer",
    "max_turns",
    "other",
)
"""The kinds ``failure_kind`` names: few and fixed, so they can label a metric."""


def failure_kind(exc: BaseException) -> str:
    """What kind of failure a model call raised, in one word of ``FAILURE_KINDS``."""
    if isinstance(exc, ModelTimeout | openai.APITimeoutError):
        return "timeout"
    if isinstance(exc, AnswerTooLong):
        return "too_long"
    if isinstance(exc, openai.RateLimitError):
        return "rate_limited"
    if isinstance(exc, openai.APIConnectionError):
        return "unreachable"
    if isinstance(exc, openai.APIStatusError):
        return "server_error" if exc.status_code >= 500 else "refused"
    if isinstance(exc, openai.APIResponseValidationError | ModelBehaviorError):
        return "bad_answer"
    if isinstance(exc, MaxTurnsExceeded):
        return "max_turns"
    return "other"


def _explain(exc: BaseException) -> tuple[str, str]:
    """(what happened, in the server's words where it said any; the fix)."""
    says = server_says(exc)
    where = endpoint(exc)
    # Subclasses before their bases: APITimeoutError is an APIConnectionError, and so on.
    if isinstance(exc, openai.APITimeoutError):
        return _timeout(exc), (
            f"check that the server at {where} is running and not overloaded, or raise OPENAI_TIMEOUT "
            f"(seconds per try; OPENAI_MAX_RETRIES more tries), {OFFLINE}"
        )
    if isinstance(exc, openai.APIConnectionError):
        return says, f"start the server or fix OPENAI_BASE_URL (tried {where}), {OFFLINE}"
    if isinstance(exc, openai.APIResponseValidationError):
        return says, (
            f"OPENAI_BASE_URL must point at an OpenAI-compatible API (it usually ends in /v1; "
            f"{where} answered this), {OFFLINE}"
        )
    if isinstance(exc, openai.AuthenticationError):
        return says, f"check OPENAI_API_KEY (in the environment or .env), {OFFLINE}"
    if isinstance(exc, openai.PermissionDeniedError):
        return says, f"check that this key may use OPENAI_MODEL on this server, from where you are, {OFFLINE}"
    if isinstance(exc, openai.NotFoundError):
        return says, _not_found_fix(exc, where)
    if isinstance(exc, openai.RateLimitError):
        if getattr(exc, "code", None) == "insufficient_quota":
            return says, f"add credit or raise the account's quota, {OFFLINE}"
        return says, f"wait a minute and try again (tried {_tries(exc)} times), {OFFLINE}"
    if isinstance(exc, openai.APIStatusError) and CONTEXT_OVERFLOW.search(says):
        return says, (
            "the conversation no longer fits the model's context window: cap the history each turn "
            "sends with SessionSettings(limit=...) (see python agent.py history-cap), and cap answers "
            "with OPENAI_MAX_TOKENS"
        )
    if isinstance(exc, openai.APIStatusError) and HISTORY_REJECTED.search(says):
        return says, (
            "the server rejects the conversation history the SDK sent: try the other API "
            "(OPENAI_API=responses or chat_completions), or start a new session"
        )
    if isinstance(exc, openai.InternalServerError):
        tries = _tries(exc)
        return says, f"the server failed (tried {tries} times): try again later or read its log, {OFFLINE}"
    if isinstance(exc, openai.APIStatusError):
        return says, (
            "check OPENAI_MODEL and OPENAI_API, and that the model can call tools (handoffs use them), "
            f"{OFFLINE}"
        )
    if isinstance(exc, openai.APIError):
        return says, f"the server reported an error mid-answer: try again or read its log, {OFFLINE}"
    if isinstance(exc, json.JSONDecodeError | ModelBehaviorError):
        return f"the answer could not be read ({says})", (
            f"check that OPENAI_BASE_URL points at an OpenAI-compatible API and OPENAI_API is the one "
            f"it speaks, or try another model, {OFFLINE}"
        )
    if isinstance(exc, MaxTurnsExceeded):
        return says, "the agents handed the conversation around too often: check their handoffs"
    if isinstance(exc, openai.OpenAIError):
        return says, "set OPENAI_API_KEY (in the environment or .env), or run offline with --offline"
    return says, (
        "this is not a failure of the model server we know: run with --offline to check the rest, "
        "and report it with the message"
    )


def server_says(exc: BaseException) -> str:
    """The first line of what the server (or the error) said, without HTML tags, at most ~200 chars."""
    body = getattr(exc, "body", None)
    message = body.get("message") if isinstance(body, dict) else None
    if not isinstance(message, str) or not message.strip():
        message = str(exc)
        if isinstance(exc, openai.APIStatusError):
            message = re.sub(r"^Error code: \d+ - ", "", message)
    cause = exc.__cause__
    if isinstance(exc, openai.APIConnectionError) and cause is not None and str(cause):
        message = f"{message.rstrip('.')} ({str(cause).splitlines()[0]})"
    text = re.sub(r"<[^>]*>", " ", message)
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    first = " ".join(lines[0].split()) if lines else type(exc).__name__
    if len(first) > MAX_SHOWN:
        first = first[: MAX_SHOWN - 3].rstrip() + "..."
    return first.rstrip(".")


def endpoint(exc: BaseException) -> str:
    """The URL the failed request went to (without any user:password@), or "OPENAI_BASE_URL"."""
    request = getattr(exc, "request", None)
    url = getattr(request, "url", None)
    if url is None:
        return "OPENAI_BASE_URL"
    return re.sub(r"//[^/@]*@", "//", str(url).split("?")[0])


def _tries(exc: BaseException) -> int:
    """How many times the client sent the request: it numbers its retries in a header."""
    headers = getattr(getattr(exc, "request", None), "headers", None)
    retries = headers.get("x-stainless-retry-count", "0") if headers is not None else "0"
    return int(retries) + 1 if str(retries).isdigit() else 1


def _timeout(exc: BaseException) -> str:
    timeouts = getattr(getattr(exc, "request", None), "extensions", {}).get("timeout") or {}
    read = timeouts.get("read") if isinstance(timeouts, dict) else None
    within = f" within {read:g} s" if isinstance(read, int | float) else ""
    tries = _tries(exc)
    return f"the server did not answer{within}" + (f", {tries} tries" if tries > 1 else "")


def _not_found_fix(exc: openai.NotFoundError, where: str) -> str:
    if getattr(exc, "code", None) == "model_not_found" or "model" in server_says(exc).lower():
        return f"check OPENAI_MODEL (the server at {where} has no such model), {OFFLINE}"
    if where.endswith("/responses"):
        return (
            f"the server may not speak the Responses API ({where} is not there): set "
            "OPENAI_API=chat_completions (or --api chat_completions), or fix OPENAI_BASE_URL"
        )
    if where.endswith("/chat/completions"):
        return (
            f"the server may not speak the Chat Completions API ({where} is not there): set "
            "OPENAI_API=responses (or --api responses), or fix OPENAI_BASE_URL"
        )
    return f"check OPENAI_BASE_URL (it usually ends in /v1; tried {where}), {OFFLINE}"
