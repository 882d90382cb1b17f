"""A model call ends within its deadline whatever the server sends: against a loopback server that
drips one byte every 0.15 s (each read succeeds, so the client's per-read timeout never fires), on
both APIs, streamed and not; and a turn's calls together end within OPENAI_TURN_TIMEOUT."""

from __future__ import annotations

import asyncio
import io
import sys
import time
from collections.abc import AsyncIterator

import pytest
from agents import Agent, RunConfig

from conftest import lesson
from multisessions import SQLiteStore, TurnFailed, resolve_model, run_turn, stream_turn
from multisessions.cli import main
from multisessions.errors import ModelTimeout
from multisessions.settings import Settings, load_settings

DRIP_EVERY = 0.15


@pytest.fixture
async def dripping() -> AsyncIterator[str]:
    """A base URL whose server answers 200 and then sends one byte every DRIP_EVERY seconds, for ever."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            length = next(
                (
                    int(line.split(b":")[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length")
                ),
                0,
            )
            body = await reader.readexactly(length)
            kind = (
                b"text/event-stream"
                if b'"stream": true' in body or b'"stream":true' in body
                else b"application/json"
            )
            writer.write(
                b"HTTP/1.1 200 OK\r\ncontent-type: " + kind + b"\r\ntransfer-encoding: chunked\r\n\r\n"
            )
            while True:
                writer.write(b"1\r\n \r\n")  # one space: valid before JSON, no event in a stream
                await writer.drain()
                await asyncio.sleep(DRIP_EVERY)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        server.close()


def settings(url: str, api: str, **more) -> Settings:
    return Settings(api_key="sk-test-drip-0000", base_url=url, api=api, **more)  # type: ignore[arg-type]


@pytest.mark.parametrize("api", ["responses", "chat_completions"])
@pytest.mark.parametrize("streamed", [False, True])
async def test_a_dripping_server_is_cut_at_the_call_deadline(dripping, api, streamed, db, monkeypatch):
    # The grace (1 s, for a plain hang's own message) shortened to keep the test short.
    monkeypatch.setattr("multisessions.settings.DEADLINE_GRACE", 0.1)
    config = settings(dripping, api, timeout=0.6, max_retries=0)  # deadline: 1 x 0.6 s + 0.1 s
    assert config.call_deadline == 0.7
    store = SQLiteStore(db)
    run_config = RunConfig(model=resolve_model(None, config, announce=False))
    started = time.monotonic()
    with pytest.raises(TurnFailed) as failed:
        async with asyncio.timeout(8):  # the old code never returned: fail, do not hang
            if streamed:
                session = store.open("user_drip")
                async with stream_turn(Agent(name="Bot"), session, "hi", run_config=run_config) as result:
                    async for _ in result.stream_events():
                        pass
            else:
                await run_turn(Agent(name="Bot"), store.open("user_drip"), "hi", run_config=run_config)
    took = time.monotonic() - started
    assert isinstance(failed.value.cause, ModelTimeout), failed.value
    assert "took longer than 0.7 s in total" in str(failed.value.cause)
    assert 0.65 <= took < config.call_deadline + 0.8, took
    assert await store.open("user_drip").get_items() == []  # nothing of the turn was kept


def test_the_call_deadline_is_the_documented_sum():
    # 3 tries of 30 s, 0.5 s + 1 s of backoff and 1 s of grace: the README's 92.5 s.
    assert Settings().call_deadline == 3 * 30 + 1.5 + 1
    assert Settings(timeout=2, max_retries=6).call_deadline == 7 * 2 + (0.5 + 1 + 2 + 4 + 8 + 8) + 1
    assert load_settings({"OPENAI_TURN_TIMEOUT": "7"}, dotenv=None).turn_timeout == 7


async def test_a_chat_turn_ends_at_the_turn_deadline_and_the_chat_exits_1(dripping, db, capsys, monkeypatch):
    # Each call may take 30 s; the turn's calls together only 0.5 s.
    config = settings(dripping, "chat_completions", timeout=10.0, max_retries=2, turn_timeout=0.5)
    monkeypatch.setattr(sys, "stdin", io.StringIO("hello\n"))
    started = time.monotonic()
    code = await asyncio.wait_for(
        asyncio.to_thread(main, ["chat", "--user", "ada", "--db", str(db)], lesson(), config), 8
    )
    took = time.monotonic() - started
    out, err = capsys.readouterr()
    assert code == 1, out + err
    assert "OPENAI_TURN_TIMEOUT" in out and took < 3, (took, out)
