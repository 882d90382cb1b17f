"""Streamed turns that outlive their connection: the turn log, rejoining with Last-Event-ID,
the finished answer later, and (slow) two uvicorn servers on one Redis or PostgreSQL store, a
client leaving one mid-turn and rejoining on the other, and a worker killed mid-turn."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from multisessions import ConfigError, load_settings
from serve_fixture import TOKENS, auth, serving
from stores_fixture import REDIS_URL, empty_postgres_database, postgres_url, unavailable

SSE = {"Accept": "text/event-stream"}
ROOT = Path(__file__).resolve().parent.parent


def sse_blocks(body: str) -> list[tuple[str, str, Any]]:
    """Server-sent events as (id, event, data)."""
    found = []
    for block in body.split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
        if "event" in lines:
            found.append((lines.get("id", ""), lines["event"], json.loads(lines["data"])))
    return found


async def test_a_streamed_turn_can_be_read_again_from_any_event_and_fetched_when_done(tmp_path):
    async with serving(tmp_path / "s.db") as client:
        url = "/api/conversations/support/messages"
        first = sse_blocks(
            (await client.post(url, json={"message": "my email is a@b.c"}, headers=auth("alice") | SSE)).text
        )
        assert first[0][1] == "turn" and first[-1][1] == "done"
        turn_id = first[0][2]["turn_id"]
        assert [i for i, _, _ in first] == [f"{turn_id}:{n}" for n in range(1, len(first) + 1)]

        # From the third event on: exactly the events after it, once each.
        again = await client.get(
            "/api/conversations/support/stream", headers=auth("alice") | {"Last-Event-ID": first[2][0]}
        )
        assert again.status_code == 200 and sse_blocks(again.text) == first[3:]
        everything = await client.get("/api/conversations/support/stream", headers=auth("alice"))
        assert sse_blocks(everything.text) == first

        latest = (await client.get("/api/conversations/support/turns/latest", headers=auth("alice"))).json()
        deltas = "".join(data["text"] for _, event, data in first if event == "delta")
        assert (latest["state"], latest["turn_id"], latest["reply"], latest["text"]) == (
            "done",
            turn_id,
            first[-1][2]["reply"],
            deltas,
        )
        history = (await client.get("/api/conversations/support/messages", headers=auth("alice"))).json()
        assert [m["text"] for m in history["messages"]] == ["my email is a@b.c", deltas]

        # A Last-Event-ID that is not one the server sent is a 404, never a traceback.
        for junk in ("latest:0", f"{turn_id}:x", "../x:1", f"{turn_id}:99999999999999", ":1"):
            refused = await client.get(
                "/api/conversations/support/stream", headers=auth("alice") | {"Last-Event-ID": junk}
            )
            assert refused.status_code == 404 and "no such turn" in refused.json()["detail"], junk
        # Another user, or the same name in another tenant, finds no turn, even with its id.
        for who in ("bob", "acme/alice"):
            for headers in ({}, {"Last-Event-ID": first[2][0]}):
                other = await client.get("/api/conversations/support/stream", headers=auth(who) | headers)
                assert other.status_code == 404, (who, other.text)
            assert (
                await client.get("/api/conversations/support/turns/latest", headers=auth(who))
            ).status_code == 404


def test_serve_on_disconnect_is_read_and_checked(tmp_path):
    assert load_settings({}, tmp_path / "none.env").serve_on_disconnect == "continue"
    assert (
        load_settings({"SERVE_ON_DISCONNECT": "cancel"}, tmp_path / "none.env").serve_on_disconnect
        == "cancel"
    )
    with pytest.raises(ConfigError, match="SERVE_ON_DISCONNECT='later' must be one of: continue, cancel"):
        load_settings({"SERVE_ON_DISCONNECT": "later"}, tmp_path / "none.env")


# --- Two servers on one store (slow) ----------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start(folder: Path, store_url: str, delay: float, **env_more: str) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("OPENAI_API_KEY", "SESSION_STORE_URL")}
    env |= {
        "SERVE_TOKENS": ",".join(f"{who}={token}" for who, token in TOKENS.items()),
        "SERVE_RATE": "0",
        "SESSION_STORE_URL": store_url,
        "SLOW_MODEL_DELAY": str(delay),
        "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'tests'}",
    } | env_more
    log = open(folder / f"server-{port}.log", "w")  # noqa: SIM115 (closed with the process)
    command = [
        sys.executable,
        "-m",
        "uvicorn",
        "slow_serve_app:app",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    process = subprocess.Popen(command, cwd=folder, env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert process.poll() is None, (folder / f"server-{port}.log").read_text()
        try:
            if httpx.get(base + "/", timeout=1).status_code == 200:
                return process, base
        except httpx.HTTPError:
            time.sleep(0.1)
    raise AssertionError("the server did not start")


def read_events(
    client: httpx.Client, method: str, url: str, headers: dict[str, str], until: int | None, **kw: Any
) -> list[tuple[str, str, Any]]:
    """Events of one SSE response; with ``until``, leave (close the connection) after that many."""
    seen: list[tuple[str, str, Any]] = []
    with client.stream(method, url, headers=headers | SSE, **kw) as response:
        assert response.status_code == 200, response.read()
        block: list[str] = []
        for line in response.iter_lines():
            if line:
                block.append(line)
                continue
            seen.extend(sse_blocks("\n".join(block) + "\n\n"))
            block = []
            if until is not None and len(seen) >= until:
                return seen  # leaving the with block closes the connection mid-stream
    return seen


@pytest.fixture
async def shared_stores(tmp_path) -> dict[str, str]:
    urls, missing = {}, []
    try:
        import redis

        redis.Redis.from_url(REDIS_URL).ping()
        urls["redis"] = f"{REDIS_URL}?key_prefix=rejoin-{uuid.uuid4().hex[:8]}"
    except Exception as exc:
        missing.append(f"redis: {type(exc).__name__}")
    try:
        await empty_postgres_database()
        urls["postgres"] = postgres_url()
    except BaseException as exc:  # noqa: BLE001 (a skip from the fixture, or no server)
        missing.append(f"postgres: {type(exc).__name__}")
    if not urls:
        unavailable("Redis and PostgreSQL", "; ".join(missing))
    return urls


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["redis", "postgres"])
def test_a_client_that_leaves_mid_turn_rejoins_on_another_worker_and_gets_the_answer_once(
    tmp_path, shared_stores, kind
):
    if kind not in shared_stores:
        unavailable(kind, "not reachable")
    one, base_one = start(tmp_path, shared_stores[kind], 0.2)
    two, base_two = start(tmp_path, shared_stores[kind], 0.2)
    try:
        message = "Hi, my name is Robin and my email is robin@example.com, please note both."
        url = "/api/conversations/support/messages"
        with httpx.Client(timeout=60) as client:
            before = read_events(
                client, "POST", base_one + url, auth("alice"), until=3, json={"message": message}
            )
            assert [event for _, event, _ in before] == ["turn", "delta", "delta"]
            rest = read_events(
                client, "GET", base_two + "/api/conversations/support/stream",
                auth("alice") | {"Last-Event-ID": before[-1][0]}, until=None,
            )  # fmt: skip
            history = client.get(base_two + url, headers=auth("alice")).json()["messages"]
        events = before + rest
        ids = [event_id for event_id, _, _ in events]
        assert len(ids) == len(set(ids)) and ids == [
            f"{before[0][2]['turn_id']}:{n}" for n in range(1, len(ids) + 1)
        ]
        assert rest[-1][1] == "done"
        answer = "".join(data["text"] for _, event, data in events if event == "delta")
        assert answer == rest[-1][2]["reply"]
        assert [(m["role"], m["text"]) for m in history] == [("user", message), ("assistant", answer)]
    finally:
        for process in (one, two):
            process.terminate()
            process.wait(30)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["redis", "postgres"])
def test_a_worker_killed_mid_turn_leaves_the_session_whole_and_its_readers_an_error(
    tmp_path, shared_stores, kind
):
    if kind not in shared_stores:
        unavailable(kind, "not reachable")
    one, base_one = start(tmp_path, shared_stores[kind], 0.5)
    two, base_two = start(tmp_path, shared_stores[kind], 0.0)
    try:
        url = "/api/conversations/killed/messages"
        with httpx.Client(timeout=60) as client:
            before = read_events(
                client, "POST", base_one + url, auth("alice"), until=2, json={"message": "my email is k@x.io"}
            )
            one.send_signal(signal.SIGKILL)
            one.wait(10)
            started = time.monotonic()
            rest = read_events(
                client, "GET", base_two + "/api/conversations/killed/stream",
                auth("alice") | {"Last-Event-ID": before[-1][0]}, until=None,
            )  # fmt: skip
            waited = time.monotonic() - started
            assert [event for _, event, _ in rest][-1] == "error" and rest[-1][2]["status"] == 503, rest
            assert "stopped before it ended" in rest[-1][2]["detail"] and waited < 30
            latest = client.get(
                base_two + "/api/conversations/killed/turns/latest", headers=auth("alice")
            ).json()
            assert (latest["state"], latest["status"]) == ("error", 503) and latest["turn_id"] == before[0][
                2
            ]["turn_id"]
            assert (
                client.get(base_two + url, headers=auth("alice")).json()["messages"] == []
            )  # nothing partial
            # The lease has expired with the log's heartbeat: the next turn runs at once.
            after = read_events(
                client, "POST", base_two + url, auth("alice"), until=None, json={"message": "hello"}
            )
            assert after[-1][1] == "done", after
            assert len(client.get(base_two + url, headers=auth("alice")).json()["messages"]) == 2
    finally:
        for process in (one, two):
            if process.poll() is None:
                process.terminate()
                process.wait(30)


async def test_deleting_the_conversation_or_the_user_removes_its_turn_logs(tmp_path):
    async with serving(tmp_path / "s.db") as client:
        url = "/api/conversations/support"
        for conversation in ("support", "sales"):
            await client.post(
                f"/api/conversations/{conversation}/messages",
                json={"message": "hi"},
                headers=auth("alice") | SSE,
            )
        logs = client.app.state.turn_logs  # type: ignore[attr-defined]
        assert await logs.latest("support_feature_user_alice") and await logs.latest(
            "sales_feature_user_alice"
        )
        assert (await client.delete(url, headers=auth("alice"))).status_code == 200
        assert await logs.latest("support_feature_user_alice") is None
        assert (await client.get(url + "/stream", headers=auth("alice"))).status_code == 404
        assert (await client.delete("/api/me", headers=auth("alice"))).status_code == 200
        assert await logs.latest("sales_feature_user_alice") is None
