"""serve.py over real HTTP (uvicorn in a thread): a client that leaves mid-stream keeps nothing
(SERVE_ON_DISCONNECT=cancel), or leaves the turn running and rejoins it (continue, the default)."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from agents import SQLiteSession

from multisessions import OfflineModel, Settings
from multisessions.turns import held_locks
from serve import create_app
from serve_fixture import auth, serve_tokens, stored


class SlowModel(OfflineModel):
    """The offline model, streaming one word every 0.1 s, counting the events it got to send."""

    def __init__(self) -> None:
        self.sent = 0

    async def stream_response(self, *args: Any, **kwargs: Any) -> Any:
        async for event in super().stream_response(*args, **kwargs):
            await asyncio.sleep(0.1)
            self.sent += 1
            yield event


def run_server(app: Any) -> Iterator[str]:
    """uvicorn on a free port of 127.0.0.1, in a thread with its own event loop; yields the base URL."""
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)


@pytest.fixture
def slow() -> SlowModel:
    return SlowModel()


@pytest.fixture
def base_url(db: Path, slow: SlowModel) -> Iterator[str]:
    settings = Settings(serve_tokens=serve_tokens(), serve_rate=0, serve_on_disconnect="cancel")
    yield from run_server(create_app(settings, db_path=db, model=slow))


@pytest.fixture
def continuing_url(db: Path, slow: SlowModel) -> Iterator[str]:
    settings = Settings(serve_tokens=serve_tokens(), serve_rate=0)  # SERVE_ON_DISCONNECT: continue
    yield from run_server(create_app(settings, db_path=db, model=slow))


async def stream(
    client: httpx.AsyncClient, base_url: str, message: str, *, leave_after_first_delta: bool
) -> list[str]:
    lines = []
    async with client.stream(
        "POST",
        f"{base_url}/api/conversations/support/messages",
        json={"message": message},
        headers={**auth("alice"), "Accept": "text/event-stream"},
    ) as response:
        assert response.status_code == 200
        async for line in response.aiter_lines():
            lines.append(line)
            if leave_after_first_delta and len(lines) > 1 and lines[-2] == "event: delta":
                break  # leaving the block closes the connection mid-stream
    return lines


async def test_a_client_that_disconnects_mid_stream_leaves_the_session_unchanged(db, base_url, slow):
    long_question = "Hi, my name is Ada, my email is ada@example.com and my order number is 5512."
    earlier = [
        {"role": "user", "content": "My plan is Enterprise."},
        {"role": "assistant", "content": [{"type": "output_text", "text": "Noted: Enterprise."}]},
    ]
    session = SQLiteSession("support_feature_user_alice", db)
    await session.add_items(earlier)
    session.close()
    before = await stored(db)

    async with httpx.AsyncClient(timeout=20) as client:
        lines = await stream(client, base_url, long_question, leave_after_first_delta=True)
    assert lines[-2] == "event: delta" and "event: done" not in lines
    deadline = time.monotonic() + 10
    while held_locks() and time.monotonic() < deadline:  # the server abandons the turn and frees the session
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.3)
    assert held_locks() == 0
    assert slow.sent < 8  # the model stream was stopped, not run to the end of a ~20-word answer
    assert await stored(db) == before  # the store holds what it held before, not half a turn


async def test_a_client_that_leaves_mid_stream_leaves_the_turn_running_and_rejoins_it(
    db, continuing_url, slow
):
    question = "Hi, my name is Ada, my email is ada@example.com and my order number is 5512."
    async with httpx.AsyncClient(timeout=20) as client:
        lines = await stream(client, continuing_url, question, leave_after_first_delta=True)
        last_id = [line for line in lines if line.startswith("id: ")][-1].removeprefix("id: ")
        rest = await client.get(
            f"{continuing_url}/api/conversations/support/stream",
            headers={**auth("alice"), "Last-Event-ID": last_id},
        )
    seen = lines + rest.text.splitlines()
    ids = [line.removeprefix("id: ") for line in seen if line.startswith("id: ")]
    turn_id = last_id.split(":")[0]
    assert ids == [f"{turn_id}:{n}" for n in range(1, len(ids) + 1)]  # each event once, none missing
    deltas = [
        json.loads(line.removeprefix("data: "))["text"]
        for line, kind in zip(seen[1:], seen[:-1], strict=True)
        if kind == "event: delta"
    ]
    done = json.loads(seen[seen.index("event: done") + 1].removeprefix("data: "))
    assert "".join(deltas) == done["reply"] and slow.sent > 8  # the model streamed to its end
    items = (await stored(db))["support_feature_user_alice"]
    assert len(items) == 2 and items[-1]["content"][0]["text"] == done["reply"]  # the turn, kept once
