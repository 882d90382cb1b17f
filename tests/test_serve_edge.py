"""serve.py's HTTP edge: bodies nested too deep, what a client is told when a turn fails (and what
only the server log hears), a paused session, answers over the size cap, the API docs, the page's
security headers, a deadline for a request's headers and for a served turn."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import httpx2
import openai
import pytest
import uvicorn
from agents import Agent, RunConfig

from helpers import reply
from multisessions import OfflineModel, SQLiteStore, TurnFailed, resolve_model, run_turn, stream_turn
from multisessions.errors import AnswerTooLong
from multisessions.models import WithDeadline
from multisessions.web import HeaderTimeoutProtocol, too_deep
from serve_fixture import auth, events_of, serving, stored
from standin_fixture import module_standin_fixture, settings_for, standin_fixture  # noqa: F401

ASK = "/api/conversations/support/messages"
STREAM = {"Accept": "text/event-stream"}


# --- Bodies nested too deep -------------------------------------------------------------------


@pytest.mark.parametrize("body", [b"[" * 10_000, b'{"message": ' + b"[" * 5_000 + b"]" * 5_000 + b"}"])
async def test_a_deeply_nested_body_is_422_not_a_recursion_error(db, body):
    async with serving(db) as client:
        response = await client.post(
            ASK, content=body, headers={**auth("alice"), "Content-Type": "application/json"}
        )
    assert response.status_code == 422 and "nests deeper than 32 levels" in response.json()["detail"]


def test_the_depth_check_ignores_brackets_inside_strings():
    assert not too_deep(b'{"message": "' + b"[" * 1000 + b'"}')
    assert not too_deep(b'{"message": "a \\" [[[[ quote"}', limit=1)
    assert too_deep(b"[[[]]]", limit=2) and not too_deep(b"[[[]]]", limit=3)


# --- What a client is told, and what only the log hears ---------------------------------------

INTERNAL = "http://10.1.2.3:8081/v1/responses"
UPSTREAM = "upstream-says-db-password-is-hunter2"


class Failing(OfflineModel):
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc

    async def get_response(self, *args: Any, **kwargs: Any) -> Any:
        raise self.exc

    async def stream_response(self, *args: Any, **kwargs: Any) -> Any:
        raise self.exc
        yield


def upstream_failures() -> list[tuple[BaseException, int, str]]:
    request = httpx2.Request("POST", INTERNAL)
    response = httpx2.Response(500, request=request, text=UPSTREAM)
    refused = httpx2.Response(401, request=request, text=UPSTREAM)
    return [
        (
            openai.APIConnectionError(message=f"Connection error to {INTERNAL}", request=request),
            502,
            "cannot be reached",
        ),
        (
            openai.InternalServerError(UPSTREAM, response=response, body={"message": UPSTREAM}),
            502,
            "HTTP 500",
        ),
        (
            openai.AuthenticationError(UPSTREAM, response=refused, body={"message": UPSTREAM}),
            502,
            "tell the operator",
        ),
        (openai.APITimeoutError(request=request), 504, "took too long"),
    ]


@pytest.mark.parametrize(
    "exc, status, says", upstream_failures(), ids=["connection", "5xx", "401", "timeout"]
)
async def test_a_model_failure_says_its_kind_never_the_internal_url_or_upstream_body(
    db, exc, status, says, caplog
):
    async with serving(db, model=Failing(exc)) as client:
        with caplog.at_level(logging.WARNING, logger="serve"):
            plain = await client.post(ASK, json={"message": "Hi"}, headers=auth("alice"))
            streamed = await client.post(ASK, json={"message": "Hi"}, headers={**auth("alice"), **STREAM})
    assert plain.status_code == status and says in plain.json()["detail"], plain.text
    assert events_of(streamed.text)[-1] == ("error", {"detail": plain.json()["detail"], "status": status})
    for text in (plain.text, streamed.text):
        assert "10.1.2.3" not in text and "hunter2" not in text and "nothing was saved" in text
    assert "10.1.2.3" in caplog.text or "hunter2" in caplog.text  # the operator still learns it
    assert await stored(db) == {}


async def test_a_session_waiting_for_approval_is_409_with_its_own_line(db):
    async with serving(db) as client:
        await client.app.state.store.save_pending("support_feature_user_alice", '{"waiting": true}')  # type: ignore[attr-defined]
        plain = await client.post(ASK, json={"message": "Hi"}, headers=auth("alice"))
        streamed = await client.post(ASK, json={"message": "Hi"}, headers={**auth("alice"), **STREAM})
    assert plain.status_code == 409
    assert plain.json()["detail"].startswith("this conversation waits for a supervisor to approve or reject")
    assert "--offline" not in plain.text and "model failed" not in plain.text
    assert events_of(streamed.text)[-1][1]["status"] == 409


# --- Answers over the size cap ----------------------------------------------------------------


@pytest.mark.parametrize("api", ["responses", "chat_completions"])
@pytest.mark.parametrize("streamed", [False, True])
async def test_an_answer_over_max_answer_chars_fails_the_turn_and_keeps_nothing(standin, api, streamed, db):
    model = resolve_model(None, settings_for(api, standin, max_answer_chars=10), announce=False)
    store = SQLiteStore(db)
    config = RunConfig(model=model)
    with pytest.raises(TurnFailed) as failed:
        if streamed:
            async with stream_turn(
                Agent(name="Bot"), store.open("user_cap"), "My name is Ada.", run_config=config
            ) as result:
                async for _ in result.stream_events():
                    pass
        else:
            await run_turn(Agent(name="Bot"), store.open("user_cap"), "My name is Ada.", run_config=config)
    assert isinstance(failed.value.cause, AnswerTooLong) and "MAX_ANSWER_CHARS (10 characters)" in str(
        failed.value
    )
    assert await store.open("user_cap").get_items() == []
    # Under the cap the same answer is kept whole.
    roomy = RunConfig(model=resolve_model(None, settings_for(api, standin), announce=False))
    await run_turn(Agent(name="Bot"), store.open("user_cap"), "My name is Ada.", run_config=roomy)
    assert len(await store.open("user_cap").get_items()) == 2


async def test_serve_answers_an_over_long_answer_with_502_in_words(db):
    from agents.testing import ScriptedModel

    model = WithDeadline(ScriptedModel([reply("x" * 50)]), 10, max_chars=20)
    async with serving(db, model=model) as client:
        response = await client.post(ASK, json={"message": "Hi"}, headers=auth("alice"))
    assert response.status_code == 502 and "longer than this server keeps" in response.json()["detail"]
    assert await stored(db) == {}


# --- The served turn's deadline ---------------------------------------------------------------


class Sleepy(OfflineModel):
    async def get_response(self, *args: Any, **kwargs: Any) -> Any:
        await asyncio.sleep(30)

    async def stream_response(self, *args: Any, **kwargs: Any) -> Any:
        await asyncio.sleep(30)
        yield


async def test_a_served_turn_ends_at_its_deadline_with_504(db):
    model = WithDeadline(Sleepy(), 30)  # each call may take 30 s; the turn only 0.5 s
    async with serving(db, model=model, turn_timeout=0.5) as client:
        started = time.monotonic()
        plain = await client.post(ASK, json={"message": "Hi"}, headers=auth("alice"))
        streamed = await client.post(ASK, json={"message": "Hi"}, headers={**auth("alice"), **STREAM})
        took = time.monotonic() - started
    assert plain.status_code == 504 and events_of(streamed.text)[-1][1]["status"] == 504
    assert took < 3, took
    assert await stored(db) == {}


# --- Docs off, security headers on ------------------------------------------------------------


async def test_the_api_docs_are_off_unless_enabled(db):
    async with serving(db) as client:
        for path in ("/docs", "/redoc", "/openapi.json"):
            assert (await client.get(path)).status_code == 404, path
    async with serving(db, serve_api_docs=True) as client:
        for path in ("/docs", "/redoc", "/openapi.json"):
            assert (await client.get(path)).status_code == 200, path


async def test_the_page_carries_a_content_security_policy_and_no_framing(db):
    async with serving(db) as client:
        page = await client.get("/")
    policy = page.headers["content-security-policy"]
    assert "frame-ancestors 'none'" in policy and "default-src 'none'" in policy
    assert "script-src 'sha256-" in policy and "unsafe-inline" not in policy
    assert page.headers["x-frame-options"] == "DENY" and page.headers["x-content-type-options"] == "nosniff"


# --- A deadline for a request's headers -------------------------------------------------------


class QuickHeaders(HeaderTimeoutProtocol):  # type: ignore[misc,valid-type]
    header_timeout = 0.5


async def hello(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
    await send({"type": "http.response.body", "body": b"ok"})


async def test_a_connection_slow_to_send_its_headers_is_closed():
    config = uvicorn.Config(
        hello, host="127.0.0.1", port=0, http=QuickHeaders, lifespan="off", log_level="error"
    )
    server = uvicorn.Server(config)
    serving_task = asyncio.create_task(server.serve())
    try:
        while not server.started:
            await asyncio.sleep(0.01)
        port = server.servers[0].sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        started = time.monotonic()
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n")  # and never the blank line
        assert await asyncio.wait_for(reader.read(), 3) == b""  # closed by the server
        assert 0.4 < time.monotonic() - started < 2
        # A whole request is answered; a slow second one on the same connection is closed too.
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert (await reader.readuntil(b"ok")).startswith(b"HTTP/1.1 200")
        writer.write(b"GET / HTTP/1.1\r\n")
        assert await asyncio.wait_for(reader.read(), 3) == b""
    finally:
        server.should_exit = True
        await serving_task


async def test_a_client_that_leaves_before_sending_its_body_is_a_400_not_a_traceback():
    from fastapi import HTTPException
    from starlette.requests import Request

    import serve

    async def gone() -> dict:
        return {"type": "http.disconnect"}

    request = Request({"type": "http", "method": "POST", "headers": [], "path": "/"}, gone)
    with pytest.raises(
        HTTPException
    ) as refused:  # before: starlette's ClientDisconnect, logged with a traceback
        await serve.read_message(request)
    assert refused.value.status_code == 400 and "went away" in refused.value.detail
