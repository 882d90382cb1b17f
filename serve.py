"""Serve it: many users over HTTP, streamed, on one worker or several, with a page to try it.

The second lesson, after agent.py. The same agents (triage, billing, technical), the same
``run_turn`` / ``stream_turn`` and naming helpers, behind a FastAPI app. The one rule that
matters most when many people talk at once: **the session id comes from who the user is**
(their token), never from what the client sends. The client picks only a conversation name
(``support``, ``thread-7731``); the server builds the id with ``feature_session_id(name, user,
tenant=tenant)``, so no request can name another user's session.

    python serve.py                       # 127.0.0.1:8000, multi_sessions.db, prints demo tokens
    python serve.py --store redis://127.0.0.1:6379/15
    SERVE_TOKENS=alice=...,bob=... SESSION_STORE_URL=redis://... uvicorn serve:app --workers 4 \
        --timeout-keep-alive 5 --h11-max-incomplete-event-size 16384

``python serve.py`` also closes a connection that takes over 10 s to send a request's headers
(``HeaderTimeoutProtocol``); plain ``uvicorn`` has no such option: put a proxy in front of it
(nginx's ``client_header_timeout``) when it faces the internet.

The API (JSON; ``Authorization: Bearer TOKEN`` on every call):

    GET    /api/conversations                  the caller's conversations, newest first (?limit=&cursor=&q=)
    POST   /api/conversations/NAME/messages    one turn ({"message": ...}); SSE with Accept: text/event-stream
    GET    /api/conversations/NAME/stream      the latest streamed turn's events (SSE), after Last-Event-ID
    GET    /api/conversations/NAME/turns/latest  the latest streamed turn: running, or its answer
    GET    /api/conversations/NAME/messages    the history: role, text, agent
    DELETE /api/conversations/NAME             remove it, and the last agent kept beside it
    GET    /api/me/export                      everything kept for the caller, as one document
    DELETE /api/me                             forget the caller: everything kept for them
    GET    /api/me/memory                      what the caller's conversations share (user memory)
    DELETE /api/me/memory                      forget that memory (the conversations stay)
    GET    /metrics                            Prometheus metrics, with SERVE_METRICS_TOKEN instead

Traces are off unless ``SERVE_TRACES`` names where they go (docs/serving.md, "Watching it").
"""

from __future__ import annotations

import argparse
import asyncio
import hmac
import json
import logging
import re
import secrets
import sys
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Annotated, Any

try:
    import prometheus_client  # noqa: F401  (for multisessions/metrics.py)
    import uvicorn
    from fastapi import Depends, FastAPI, Header, HTTPException, Request
    from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
    from starlette.requests import ClientDisconnect
except ImportError as missing:  # the server's packages are optional, like the stores' drivers
    sys.exit(f"error: serve.py needs {missing.name}; pip install -r requirements-serve.txt")

from agents import Agent, RunConfig
from agents.items import HandoffOutputItem
from agents.models.interface import Model
from agents.stream_events import RawResponsesStreamEvent, RunItemStreamEvent
from openai.types.responses import ResponseTextDeltaEvent

from agent import support_agents
from multisessions import (
    DEFAULT_DB,
    MAX_MESSAGE_CHARS,
    AwaitingApproval,
    ConfigError,
    MultiSessionsError,
    SessionBusy,
    SessionStore,
    Settings,
    TurnFailed,
    TurnInterrupted,
    WrongKey,
    check_message,
    close_session,
    describe_failure,
    describe_model,
    export_user,
    feature_session_id,
    forget_user,
    hold_session,
    list_conversations,
    list_sessions,
    load_settings,
    parse_session_id,
    read_all,
    resolve_model,
    run_turn,
    store_for,
    stream_turn,
    user_scope,
)
from multisessions.metrics import METRICS, counted_stream, start_metrics
from multisessions.metrics import allowed as metrics_allowed
from multisessions.models import turn_deadline
from multisessions.ratelimit import turn_budget
from multisessions.settings import ServeToken
from multisessions.stores import refuse_encrypted, refuse_sealed
from multisessions.stores.urls import redact_url
from multisessions.streams import Event, TurnLogs, TurnWriter, parse_event_id, turn_logs_for
from multisessions.summaries import summaries_from
from multisessions.titles import titles_from
from multisessions.tracing import start_traces
from multisessions.web import (
    MAX_JSON_DEPTH,
    HeaderTimeoutProtocol,
    OneLineStartupErrors,
    client_failure,
    history_entries,
    is_store_failure,
    page_headers,
    retry_after,
    sse,
    too_deep,
)

FIRST_AGENT = "Triage Agent"
"""Who answers a new conversation; later turns go to whoever answered last."""
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
"""A conversation name the client may pick: ``support``, ``sales``, ``thread-7731``."""
MAX_BODY_BYTES = 256 * 1024
PAGE = Path(__file__).resolve().parent / "static" / "index.html"
PAGE_HEADERS = page_headers(PAGE.read_text(encoding="utf-8"))
"""Content-Security-Policy (the page's own script and style only; no framing) and friends."""
log = logging.getLogger("serve")
"""What a client is not told (the model server's address and words) goes here, for the operator."""
DEMO_USERS = ("alice", "bob")
BUSY_RETRY_SECONDS = 2
"""The ``Retry-After`` of a 409 for a conversation busy with another turn (``SERVE_ON_BUSY=reject``)."""
TURNS_AT_ONCE = 64
"""Turns running at once in one worker; the rest wait their turn. Unbounded, a thousand turns at
once exhausted PostgreSQL's connection pool (see the README's load figures)."""


# --- Who the user is ------------------------------------------------------------------------


@dataclass(frozen=True)
class Identity:
    """The authenticated caller. Everything a request may touch is derived from this."""

    user: str
    tenant: str | None = None


def authenticate(authorization: str | None, tokens: Sequence[ServeToken]) -> Identity | None:
    """Who an ``Authorization: Bearer TOKEN`` header stands for, or None.

    A real app replaces this one function (verify a signed session cookie or a JWT from its
    identity provider). Every configured token is compared, in constant time, so the answer
    takes as long whichever token (if any) matched.
    """
    scheme, _, presented = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not presented.strip():
        return None
    given = presented.strip().encode()
    found = None
    for entry in tokens:
        if hmac.compare_digest(given, entry.token.encode()):
            found = Identity(entry.user, entry.tenant)
    return found


async def caller(request: Request, authorization: Annotated[str | None, Header()] = None) -> Identity:
    """The FastAPI dependency every endpoint takes: the caller's identity, or 401.

    ``async``: a plain ``def`` dependency runs in a thread of FastAPI's pool at every request."""
    who = authenticate(authorization, request.app.state.tokens)
    if who is None:
        raise HTTPException(401, "missing or unknown token", headers={"WWW-Authenticate": "Bearer"})
    return who


Caller = Annotated[Identity, Depends(caller)]
"""What an endpoint takes to know who is calling: ``who: Caller``."""


def conversation_session_id(who: Identity, name: str) -> str:
    """The session id for the caller's conversation ``name``: built here, never taken from the client."""
    if not NAME.fullmatch(name):
        raise HTTPException(422, "conversation name must be 1-64 letters, digits, '.', '_' or '-'")
    return feature_session_id(name, who.user, tenant=who.tenant)


# --- The app: one store and one model per worker process ------------------------------------


def create_app(
    settings: Settings | None = None, *, db_path: str | Path = DEFAULT_DB, model: Model | None = None
) -> FastAPI:
    """The FastAPI app. Settings are read, and the store and model made, when a worker starts."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        config = load_settings(serving=True) if settings is None else settings
        if not config.serve_tokens:
            raise ConfigError(
                "no SERVE_TOKENS: set SERVE_TOKENS=alice=TOKEN,bob=TOKEN (environment or .env), "
                "or start with python serve.py, which makes demo tokens"
            )
        # Redis and SQLAlchemy clients belong to the loop that uses them: this worker's loop.
        # store_for: the settings' store, encrypted with SESSION_ENCRYPTION_KEY as the CLI's is.
        store = store_for(config, db_path=db_path, max_open=8)
        await store.check()
        # Creates what a server store needs now (PostgreSQL's tables), not in the first request.
        await store.load_last_agent("")
        app.state.store = store
        app.state.tokens = config.serve_tokens
        # SERVE_RATE turns a minute per user, one budget for every worker on this store.
        app.state.limiter = turn_budget(store, config.serve_rate)
        app.state.on_busy = config.serve_on_busy  # a second message while a turn runs: SERVE_ON_BUSY
        app.state.agents = support_agents()
        app.state.turns_at_once = asyncio.Semaphore(TURNS_AT_ONCE)
        # Traces go nowhere unless SERVE_TRACES says where; never with the text unless SERVE_TRACE_TEXT=1.
        app.state.run_config = RunConfig(
            model=model or resolve_model(None, config, announce=False),
            tracing_disabled=config.serve_traces == "off",
            trace_include_sensitive_data=config.serve_trace_text,
        )
        stop_traces = start_traces(config.serve_traces, include_text=config.serve_trace_text)
        app.state.metrics_token = config.serve_metrics_token  # /metrics: off (404) without it
        stop_metrics = start_metrics(config.serve_metrics_token)  # every turn counted, if kept
        app.state.turn_timeout = config.turn_timeout
        app.state.summaries = summaries_from(config)  # SUMMARY_WINDOW: long conversations stay short
        app.state.titles = titles_from(config)  # SERVE_TITLES=model: the model titles a new conversation
        app.state.turn_logs = turn_logs_for(store)  # streamed turns' events, readable from any worker
        app.state.on_disconnect = config.serve_on_disconnect  # SERVE_ON_DISCONNECT: continue or cancel
        app.state.running = set()  # this worker's streamed turns, each a task of its own
        if config.serve_api_docs and app.openapi_url is None:
            app.openapi_url, app.docs_url, app.redoc_url = "/openapi.json", "/docs", "/redoc"
            app.setup()  # adds just those three routes
        try:
            yield
        finally:
            for task in list(app.state.running):  # shutting down: stopped turns save nothing
                task.cancel()
            await asyncio.gather(*app.state.running, return_exceptions=True)
            stop_metrics()
            stop_traces()
            app.state.limiter.close()
            await store.close()

    # The API's documentation pages map it for anyone: off, unless SERVE_API_DOCS=1 (lifespan).
    app = FastAPI(title="multi-sessions", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.add_api_route("/", page, methods=["GET"], include_in_schema=False)
    app.add_api_route("/api/conversations", conversations, methods=["GET"])
    app.add_api_route(
        "/api/conversations/{name}/messages", post_message, methods=["POST"], response_model=None
    )
    app.add_api_route("/api/conversations/{name}/messages", history, methods=["GET"])
    app.add_api_route("/api/conversations/{name}/stream", rejoin, methods=["GET"], response_model=None)
    app.add_api_route("/api/conversations/{name}/turns/latest", latest_turn, methods=["GET"])
    app.add_api_route("/api/conversations/{name}", delete_conversation, methods=["DELETE"])
    app.add_api_route("/api/me/export", export_me, methods=["GET"])
    app.add_api_route("/api/me", forget_me, methods=["DELETE"])
    app.add_api_route("/api/me/memory", my_memory, methods=["GET"])
    app.add_api_route("/api/me/memory", forget_my_memory, methods=["DELETE"])
    app.add_api_route("/metrics", metrics, methods=["GET"], include_in_schema=False)
    return app


def page() -> FileResponse:
    """The page to try it in a browser: one static file, plain JavaScript, nothing from the internet."""
    return FileResponse(PAGE, media_type="text/html", headers=PAGE_HEADERS)


def metrics(request: Request, authorization: Annotated[str | None, Header()] = None) -> Response:
    """Prometheus metrics (multisessions/metrics.py), for whoever holds ``SERVE_METRICS_TOKEN``."""
    token = request.app.state.metrics_token
    if not token:
        raise HTTPException(404, "Not Found")
    if not metrics_allowed(authorization, token):
        raise HTTPException(401, "missing or wrong metrics token", headers={"WWW-Authenticate": "Bearer"})
    body, content_type = METRICS.exposition()
    return Response(body, media_type=content_type)


async def conversations(
    request: Request, who: Caller, limit: str = "20", cursor: str | None = None, q: str | None = None
) -> dict[str, Any]:
    """The caller's own conversations, most recently active first, a page at a time: the store's
    per-user index (list_conversations), so a page costs the same whatever else the store holds.
    ``next_cursor`` asks for the next page; ``q`` keeps titles containing it."""
    if not limit.isdigit():
        raise HTTPException(422, "limit must be a whole number from 1 to 100")
    try:
        page = await store_call(
            list_conversations(
                request.app.state.store, who.user, tenant=who.tenant, limit=int(limit), cursor=cursor, title=q
            )
        )
    except ValueError as exc:
        raise HTTPException(422, str(exc)) from None
    mine = []
    for row in page.conversations:
        parsed = parse_session_id(row.session_id)  # exact parts, never prefix matching on strings
        if parsed.kind == "feature" and parsed.user == who.user and parsed.tenant == who.tenant:
            mine.append(
                {
                    "name": parsed.feature,
                    "session_id": row.session_id,
                    "title": row.title,
                    "last_activity": row.last_activity.isoformat() if row.last_activity else None,
                    "items": row.items,
                    "tags": row.tags,
                }
            )
    return {"user": who.user, "tenant": who.tenant, "conversations": mine, "next_cursor": page.next_cursor}


async def history(name: str, request: Request, who: Caller) -> dict[str, Any]:
    """The conversation as stored: one row per message and handoff, with the agent that answered."""
    session_id = conversation_session_id(who, name)
    session = request.app.state.store.open(session_id)
    try:
        items = await store_call(read_all(session))
        refuse_encrypted(session_id, items)  # an encrypted store served without its key
    except WrongKey as exc:
        raise store_failure(exc) from None
    finally:
        await close_session(session)
    return {"name": name, "session_id": session_id, "messages": history_entries(items, FIRST_AGENT)}


async def delete_conversation(name: str, request: Request, who: Caller) -> dict[str, Any]:
    """Remove the conversation and its last agent; waits for a turn running on it in any worker."""
    session_id = conversation_session_id(who, name)
    store: SessionStore = request.app.state.store
    async with hold_session(session_id, store.leases):
        removed = await store_call(store.delete(session_id))
        await store_call(request.app.state.turn_logs.forget(session_id))
    return {"name": name, "session_id": session_id, "removed_items": removed}


# --- The caller's data on request: only ever their own -------------------------------------


async def export_me(request: Request, who: Caller) -> dict[str, Any]:
    """Everything kept for the caller (sessions, items, paused turns, side effects) in one document."""
    document: dict[str, Any] = await store_call(
        export_user(request.app.state.store, who.user, tenant=who.tenant)
    )
    return document


async def forget_me(request: Request, who: Caller) -> dict[str, Any]:
    """Remove everything kept for the caller, waiting for their running turns; says what went."""
    store: SessionStore = request.app.state.store
    theirs = await store_call(list_sessions(store, tenant=who.tenant, user=who.user))
    removed = await store_call(forget_user(store, who.user, tenant=who.tenant))
    for row in theirs:  # their streamed turns' logs too
        await store_call(request.app.state.turn_logs.forget(row.session_id))
    return {"user": who.user, "tenant": who.tenant, "removed": removed.as_dict()}


async def my_memory(request: Request, who: Caller) -> dict[str, Any]:
    """The facts remembered for the caller, shared by all of their conversations."""
    facts = await store_call(request.app.state.store.load_memory(user_scope(who.user, who.tenant)))
    try:
        refuse_sealed("this user's memory", facts.values())  # a worker started without the key
    except WrongKey as exc:
        raise HTTPException(500, str(exc)) from None
    return {"user": who.user, "tenant": who.tenant, "memory": facts}


async def forget_my_memory(request: Request, who: Caller) -> dict[str, Any]:
    """Forget what is remembered for the caller; their conversations stay."""
    removed = await store_call(request.app.state.store.forget_memory(user_scope(who.user, who.tenant)))
    return {"user": who.user, "tenant": who.tenant, "removed_facts": removed}


# --- One turn ---------------------------------------------------------------------------------


async def post_message(name: str, request: Request, who: Caller) -> Response:
    """One turn in the caller's conversation ``name``: JSON, or server-sent events when asked for.

    Everything a client can get wrong is refused before the store is touched.
    """
    session_id = conversation_session_id(who, name)
    message = await read_message(request)
    wait = await request.app.state.limiter.take(user_scope(who.user, who.tenant))
    if wait:
        raise HTTPException(429, "too many turns; wait and retry", headers={"Retry-After": retry_after(wait)})

    store: SessionStore = request.app.state.store
    # The turn resumes the agent that answered last by itself (it is stored with the turn).
    agent = request.app.state.agents[FIRST_AGENT]
    if "text/event-stream" in request.headers.get("accept", ""):
        # The turn runs in a task of its own and writes its events to the turn log; this response
        # (and any client rejoining later, on any worker) reads them from there.
        writer = await store_call(TurnWriter.begin(request.app.state.turn_logs, session_id))
        task = asyncio.create_task(logged_turn(request.app, store, agent, writer, message))
        request.app.state.running.add(task)
        task.add_done_callback(request.app.state.running.discard)
        stop = task if request.app.state.on_disconnect == "cancel" else None
        return event_stream(request.app.state.turn_logs, session_id, writer.turn_id, 0, stop)

    session = store.open(session_id)
    try:
        async with request.app.state.turns_at_once:
            with turn_deadline(request.app.state.turn_timeout):  # the slot is held this long at most
                result = await run_turn(
                    agent,
                    session,
                    message,
                    on_busy=request.app.state.on_busy,
                    run_config=request.app.state.run_config,
                    summaries=request.app.state.summaries,
                    titles=request.app.state.titles,
                )
    except TurnFailed as failed:
        raise turn_failure(failed) from None
    finally:
        await close_session(session)
    handoffs = [
        {"from": item.source_agent.name, "to": item.target_agent.name}
        for item in result.new_items
        if isinstance(item, HandoffOutputItem)
    ]
    return JSONResponse(
        {
            "reply": str(result.final_output),
            "agent": result.last_agent.name,
            "handoffs": handoffs,
            "session_id": session_id,
        }
    )


async def logged_turn(
    app: FastAPI, store: SessionStore, agent: Agent[Any], writer: TurnWriter, message: str
) -> None:
    """The turn, its events written to its log: ``delta`` (text), ``handoff``, then ``done`` or ``error``.

    It runs to its end whether or not anyone reads (``SERVE_ON_DISCONNECT=continue``), within the
    worker's turn slots and the turn deadline. ``stream_turn`` keeps the turn only if its events
    are read to the end: a turn cancelled (``cancel`` policy, or the worker stopping) leaves the
    session exactly as it was.
    """
    session = store.open(writer.session_id)
    handoffs: list[dict[str, str]] = []
    heartbeat = asyncio.create_task(writer.heartbeat())
    try:
        async with (
            app.state.turns_at_once,
            stream_turn_within(
                app.state.turn_timeout,
                agent,
                session,
                message,
                on_busy=app.state.on_busy,
                run_config=app.state.run_config,
                summaries=app.state.summaries,
                titles=app.state.titles,
            ) as result,
        ):
            async for event in result.stream_events():
                if isinstance(event, RawResponsesStreamEvent) and isinstance(
                    event.data, ResponseTextDeltaEvent
                ):
                    await writer.emit("delta", {"text": event.data.delta})
                elif isinstance(event, RunItemStreamEvent) and isinstance(event.item, HandoffOutputItem):
                    handoff = {"from": event.item.source_agent.name, "to": event.item.target_agent.name}
                    handoffs.append(handoff)
                    await writer.emit("handoff", handoff)
        reply = str(result.final_output)
        done = {"reply": reply, "agent": result.last_agent.name, "handoffs": handoffs}
        await writer.emit("done", done | {"session_id": writer.session_id})
    except TurnFailed as failed:
        refused = turn_failure(failed)
        await writer.emit("error", {"detail": refused.detail, "status": refused.status_code})
    except asyncio.CancelledError:
        stopped = {"detail": "the turn was stopped before it ended; nothing of it was saved", "status": 499}
        await asyncio.shield(writer.emit("error", stopped))
        raise
    except Exception as exc:  # the log itself failed: its readers will see the turn as lost
        log.warning("turn on %s could not write its events: %s", writer.session_id, type(exc).__name__)
    finally:
        heartbeat.cancel()
        await close_session(session)


def event_stream(
    logs: TurnLogs, session_id: str, turn_id: str, after: int, stop: asyncio.Task[None] | None = None
) -> StreamingResponse:
    """The turn's events after ``after`` as server-sent events, each with its ``id:``; a client that
    leaves stops only its own reading (and the turn too when ``stop`` is given: policy ``cancel``)."""

    async def events() -> AsyncIterator[bytes]:
        try:
            async for event in logs.follow(session_id, turn_id, after):
                yield sse_with_id(event)
        except Exception as exc:  # the store failed while reading: one line; rejoin to read on
            if not is_store_failure(exc):
                raise
            yield sse("error", {"detail": store_failure(exc).detail, "status": 503})
        finally:
            if stop is not None and not stop.done():
                stop.cancel()

    return StreamingResponse(  # counted in multisessions_streams_open while it is open
        counted_stream(events()), media_type="text/event-stream", headers={"Cache-Control": "no-cache"}
    )


def sse_with_id(event: Event) -> bytes:
    """``id: TURN:SEQ`` before the event: what the client sends back as ``Last-Event-ID``."""
    return f"id: {event.event_id}\n".encode() + sse(event.name, event.data)


async def rejoin(
    name: str,
    who: Caller,
    request: Request,
    last_event_id: Annotated[str | None, Header()] = None,
) -> StreamingResponse:
    """The latest turn's events again: after ``Last-Event-ID`` (``TURN:SEQ``) if given, else all of
    them; then the rest as they come, through ``done`` or ``error``. 404 if there is none."""
    session_id = conversation_session_id(who, name)
    logs: TurnLogs = request.app.state.turn_logs
    turn_id, after = parse_event_id(last_event_id)
    # Looked up under the caller's own session id: a turn id of another session is not found.
    if turn_id is None or not await store_call(logs.known(session_id, turn_id)):
        if last_event_id:
            raise HTTPException(
                404, "no such turn in this conversation; GET .../turns/latest for the last one"
            )
        turn_id, after = await store_call(logs.latest(session_id)), 0
    if turn_id is None:
        raise HTTPException(404, "no streamed turn in this conversation")
    return event_stream(logs, session_id, turn_id, after)


async def latest_turn(name: str, request: Request, who: Caller) -> dict[str, Any]:
    """The latest streamed turn's ``state``: ``running`` with its text so far, ``done`` with its
    answer, or ``error`` with why (``detail``, ``status``; also when the worker running it stopped)."""
    session_id = conversation_session_id(who, name)
    logs: TurnLogs = request.app.state.turn_logs
    turn_id = await store_call(logs.latest(session_id))
    if turn_id is None:
        raise HTTPException(404, "no streamed turn in this conversation")
    events: list[Event] = await store_call(logs.so_far(session_id, turn_id))
    answer: dict[str, Any] = {
        "name": name,
        "turn_id": turn_id,
        "last_event_id": events[-1].event_id if events else None,
        "text": "".join(e.data["text"] for e in events if e.name == "delta"),
        "state": "running",
    }
    if events and events[-1].name in ("done", "error"):  # an error's data has its HTTP status
        answer |= {"state": events[-1].name} | events[-1].data
    return answer


# --- Refusing what cannot work, in one line -------------------------------------------------


async def read_message(request: Request) -> str:
    """The ``message`` of a JSON body of at most ``MAX_BODY_BYTES``: 413 if larger, 422 if unusable."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise HTTPException(413, f"body over {MAX_BODY_BYTES // 1024} KiB")
    body = bytearray()
    try:
        async for chunk in request.stream():  # a body without a length is counted as it arrives
            body += chunk
            if len(body) > MAX_BODY_BYTES:
                raise HTTPException(413, f"body over {MAX_BODY_BYTES // 1024} KiB")
    except ClientDisconnect:  # the client left before sending its body: nothing to answer, nothing done
        raise HTTPException(400, "the client went away before sending the whole body") from None
    if too_deep(bytes(body)):
        raise HTTPException(422, f'body nests deeper than {MAX_JSON_DEPTH} levels; send {{"message": "..."}}')
    try:
        payload = json.loads(body)
    except (ValueError, RecursionError):
        raise HTTPException(422, 'body must be JSON: {"message": "..."}') from None
    message = payload.get("message") if isinstance(payload, dict) else None
    if isinstance(message, str) and len(message) > MAX_MESSAGE_CHARS:
        raise HTTPException(413, f"message over {MAX_MESSAGE_CHARS:,} characters")
    try:
        return check_message(message)
    except ValueError as exc:
        raise HTTPException(422, str(exc)) from None


def turn_failure(failed: TurnFailed) -> HTTPException:
    """The session is unchanged (unless the store lost its connection while committing: then
    the turn may be saved, and the line says so): 503 when the store failed; 409 when another
    turn held the conversation (``Retry-After`` says when to try again), a newer message stopped
    this one, or it waits for approval; else the model's failure by kind (502, 503, 504). The
    client is told what kind and what to do; the model server's address and words go to the
    server's log."""
    if isinstance(failed, TurnInterrupted):
        return HTTPException(409, "a newer message on this conversation stopped this one; nothing was saved")
    if isinstance(failed.cause, SessionBusy):
        return HTTPException(
            409,
            "this conversation is busy with another message; nothing was saved, retry later",
            headers={"Retry-After": retry_after(BUSY_RETRY_SECONDS)},
        )
    if failed.saved is None:
        return HTTPException(
            503,
            "the session store did not confirm saving the turn: it may be saved; "
            "reload the conversation before sending the message again",
        )
    if is_store_failure(failed.cause):
        return store_failure(failed.cause)
    status, line = client_failure(failed.cause)
    if not isinstance(failed.cause, AwaitingApproval):
        log.warning("turn on %s failed: %s", failed.session_id, describe_failure(failed.cause))
    return HTTPException(status, line)


@asynccontextmanager
async def stream_turn_within(
    seconds: float, agent: Agent[Any], session: Any, message: str, **kwargs: Any
) -> AsyncIterator[Any]:
    """``stream_turn`` with its model calls ending within ``seconds`` (``turn_deadline``)."""
    with turn_deadline(seconds):
        async with stream_turn(agent, session, message, **kwargs) as result:
            yield result


def store_failure(exc: BaseException) -> HTTPException:
    """503 in one line; the exception's text (addresses, SQL) stays in the server.

    A session this server's key cannot decrypt is a 500 of its own: retrying will not help."""
    if isinstance(exc, WrongKey):
        return HTTPException(
            500,
            "this conversation cannot be decrypted with the server's SESSION_ENCRYPTION_KEY; nothing "
            "was changed: the operator must start the server with the key it was written with",
        )
    return HTTPException(
        503, f"the session store failed ({type(exc).__name__}); nothing was saved, retry later"
    )


async def store_call(operation: Any) -> Any:
    """Await a store operation; a store failure becomes a one-line 503."""
    try:
        return await operation
    except Exception as exc:
        if is_store_failure(exc):
            raise store_failure(exc) from None
        raise


app = OneLineStartupErrors(create_app())
"""For ``uvicorn serve:app [--workers N]``: each worker reads SERVE_TOKENS and SESSION_STORE_URL."""


# --- python serve.py --------------------------------------------------------------------------


def demo_tokens() -> tuple[ServeToken, ...]:
    """Random tokens for the demo users, made fresh at each start."""
    return tuple(ServeToken(user, None, secrets.token_urlsafe(24)) for user in DEMO_USERS)


async def check_store(settings: Settings, db_path: str | Path) -> None:
    """Open the store, check it, close it: ``StoreError`` in one line if it cannot be used."""
    store = store_for(settings, db_path=db_path)
    try:
        await store.check()
    finally:
        await store.close()


def main(argv: list[str] | None = None) -> int:
    """``python serve.py [--host H] [--port P] [--db PATH | --store URL]``: one worker, on uvicorn."""
    parser = argparse.ArgumentParser(description="Serve the support agents over HTTP, one worker.")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--db", default=DEFAULT_DB, help=f"SQLite file (default {DEFAULT_DB})")
    where.add_argument("--store", help="redis://... or postgresql://... (default: SESSION_STORE_URL)")
    args = parser.parse_args(argv)
    try:
        settings = load_settings(serving=True)
    except MultiSessionsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if args.store:
        settings = replace(settings, store_url=args.store)
    try:  # a store that cannot work says so now, in one line, before any banner
        asyncio.run(check_store(settings, args.db))
    except MultiSessionsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if not settings.serve_tokens:
        settings = replace(settings, serve_tokens=demo_tokens())
        print("No SERVE_TOKENS set; demo tokens for this run (paste one into the page):")
        for entry in settings.serve_tokens:
            print(f"  {entry.user}: {entry.token}")
    print(describe_model(settings))
    print(f"Sessions in: {redact_url(settings.store_url) if settings.store_url else args.db}")
    print(f"Open http://{args.host}:{args.port}/")
    sys.stdout.flush()
    server_app = OneLineStartupErrors(create_app(settings, db_path=args.db))
    uvicorn.run(
        server_app,
        host=args.host,
        port=args.port,
        workers=1,
        log_level="warning",
        http=HeaderTimeoutProtocol,  # a request's headers within 10 s
        timeout_keep_alive=5,  # an idle connection closes after 5 s
        h11_max_incomplete_event_size=16 * 1024,  # headers of at most 16 KiB
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
