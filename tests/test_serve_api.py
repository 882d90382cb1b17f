"""serve.py's API, in process: who the caller is decides the session; every status code it promises."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from typing import Any

import pytest

import serve
from conftest import ROOT, subprocess_env
from multisessions import MAX_MESSAGE_CHARS, ConfigError, OfflineModel, feature_session_id, load_settings
from multisessions.settings import parse_tokens
from multisessions.stores.sqlite_turns import SQLiteTurns
from multisessions.web import OneLineStartupErrors
from serve_fixture import auth, events_of, serving, stored

REFUND = "I was charged twice for order 5512, can I get a refund?"


async def test_a_turn_answers_with_reply_agent_handoffs_and_the_id_built_from_the_token(db):
    async with serving(db) as client:
        response = await client.post(
            "/api/conversations/support/messages", json={"message": REFUND}, headers=auth("alice")
        )
    assert response.status_code == 200
    body = response.json()
    assert body["session_id"] == "support_feature_user_alice" == feature_session_id("support", "alice")
    assert body["agent"] == "Billing Agent"
    assert body["handoffs"] == [{"from": "Triage Agent", "to": "Billing Agent"}]
    assert "5512" in body["reply"]
    assert list(await stored(db)) == ["support_feature_user_alice"]


async def test_the_next_turn_goes_to_the_last_agent_kept_beside_the_session(db):
    async with serving(db) as client:
        await client.post(
            "/api/conversations/support/messages", json={"message": REFUND}, headers=auth("alice")
        )
        again = await client.post(
            "/api/conversations/support/messages",
            json={"message": "What is my order number?"},
            headers=auth("alice"),
        )
        store = client.app.state.store  # type: ignore[attr-defined]
        assert await store.load_last_agent("support_feature_user_alice") == "Billing Agent"
    assert again.json()["agent"] == "Billing Agent" and again.json()["handoffs"] == []
    assert again.json()["reply"] == "Your order number is 5512."


async def test_a_streamed_turn_sends_deltas_the_handoff_and_a_final_event_then_is_stored(db):
    async with serving(db) as client:
        response = await client.post(
            "/api/conversations/support/messages",
            json={"message": REFUND},
            headers={**auth("alice"), "Accept": "text/event-stream"},
        )
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
    events = events_of(response.text)
    kinds = [kind for kind, _ in events]
    assert kinds[:2] == ["turn", "handoff"] and kinds[-1] == "done" and kinds.count("delta") > 3
    assert events[1][1] == {"from": "Triage Agent", "to": "Billing Agent"}
    done = events[-1][1]
    assert done["agent"] == "Billing Agent" and done["session_id"] == "support_feature_user_alice"
    assert "".join(data["text"] for kind, data in events if kind == "delta") == done["reply"]
    assert len((await stored(db))["support_feature_user_alice"]) == 4


async def test_history_lists_messages_and_handoffs_with_the_answering_agent(db):
    async with serving(db) as client:
        await client.post(
            "/api/conversations/support/messages", json={"message": "Hi, I'm Dana."}, headers=auth("bob")
        )
        await client.post(
            "/api/conversations/support/messages", json={"message": REFUND}, headers=auth("bob")
        )
        response = await client.get("/api/conversations/support/messages", headers=auth("bob"))
    rows = response.json()["messages"]
    assert [(r["role"], r["agent"]) for r in rows] == [
        ("user", None),
        ("assistant", "Triage Agent"),
        ("user", None),
        ("handoff", "Billing Agent"),
        ("assistant", "Billing Agent"),
    ]
    assert rows[3]["text"] == "Triage Agent -> Billing Agent"
    assert response.json()["session_id"] == "support_feature_user_bob"


async def test_the_listing_holds_only_the_callers_own_conversations_in_their_tenant(db):
    async with serving(db) as client:
        for who, name in [
            ("alice", "support"),
            ("alice", "sales"),
            ("bob", "support"),
            ("acme/alice", "support"),
        ]:
            response = await client.post(
                f"/api/conversations/{name}/messages", json={"message": "Hello."}, headers=auth(who)
            )
            assert response.status_code == 200
        # A session no helper made, and another user's dated id, are in the store too.
        store = client.app.state.store  # type: ignore[attr-defined]
        await store.open("alice").add_items([{"role": "user", "content": "raw id"}])
        listings = {
            who: (await client.get("/api/conversations", headers=auth(who))).json()
            for who in ("alice", "bob", "acme/alice")
        }
    ids = {who: sorted(c["session_id"] for c in data["conversations"]) for who, data in listings.items()}
    assert ids == {
        "alice": ["sales_feature_user_alice", "support_feature_user_alice"],
        "bob": ["support_feature_user_bob"],
        "acme/alice": ["acme:support_feature_user_alice"],
    }
    first = listings["alice"]["conversations"][0]
    assert set(first) == {"name", "session_id", "title", "items", "last_activity", "tags"}
    assert first["items"] == 2 and first["title"] == "Hello." and listings["alice"]["next_cursor"] is None
    assert listings["acme/alice"]["tenant"] == "acme" and listings["alice"]["tenant"] is None


async def test_conversations_page_with_a_cursor_filter_by_title_and_refuse_a_bad_cursor(db):
    async with serving(db) as client:
        for name in ("one", "two", "three"):
            await client.post(
                f"/api/conversations/{name}/messages",
                json={"message": f"About {name}"},
                headers=auth("alice"),
            )
        first = (await client.get("/api/conversations", params={"limit": 2}, headers=auth("alice"))).json()
        rest = (
            await client.get(
                "/api/conversations",
                params={"limit": 2, "cursor": first["next_cursor"]},
                headers=auth("alice"),
            )
        ).json()
        found = (await client.get("/api/conversations", params={"q": "TWO"}, headers=auth("alice"))).json()
        bob = (await client.get("/api/conversations", params={"q": "two"}, headers=auth("bob"))).json()
        stolen = await client.get(
            "/api/conversations", params={"cursor": first["next_cursor"]}, headers=auth("bob")
        )
        bad = [
            await client.get("/api/conversations", params=params, headers=auth("alice"))
            for params in ({"cursor": "garbage"}, {"limit": "x"}, {"limit": "0"})
        ]
    assert [c["name"] for c in first["conversations"]] == ["three", "two"]
    assert [c["title"] for c in rest["conversations"]] == ["About one"] and rest["next_cursor"] is None
    assert [c["name"] for c in found["conversations"]] == ["two"] and bob["conversations"] == []
    assert stolen.status_code == 422 and "cursor" in stolen.json()["detail"]
    assert [r.status_code for r in bad] == [422] * 3
    assert all(isinstance(r.json()["detail"], str) and "\n" not in r.json()["detail"] for r in bad)


async def test_delete_removes_the_conversation_and_its_last_agent_and_nothing_else(db):
    async with serving(db) as client:
        for who in ("alice", "bob"):
            await client.post(
                "/api/conversations/support/messages", json={"message": REFUND}, headers=auth(who)
            )
        response = await client.delete("/api/conversations/support", headers=auth("alice"))
        store = client.app.state.store  # type: ignore[attr-defined]
        assert await store.load_last_agent("support_feature_user_alice") is None
        assert await store.load_last_agent("support_feature_user_bob") == "Billing Agent"
    assert response.status_code == 200 and response.json()["removed_items"] == 4
    assert list(await stored(db)) == ["support_feature_user_bob"]


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer nope-nope-nope-nope"},
        {"Authorization": "Basic YWxpY2U6eA=="},
        {"Authorization": "Bearer "},
    ],
    ids=["none", "unknown", "other-scheme", "empty"],
)
async def test_no_or_unknown_token_is_401_on_every_endpoint(db, headers):
    async with serving(db) as client:
        answers = [
            await client.get("/api/conversations", headers=headers),
            await client.get("/api/conversations/support/messages", headers=headers),
            await client.post("/api/conversations/support/messages", json={"message": "Hi"}, headers=headers),
            await client.delete("/api/conversations/support", headers=headers),
        ]
    assert [a.status_code for a in answers] == [401] * 4
    assert answers[0].headers["www-authenticate"] == "Bearer"
    assert await stored(db) == {}


@pytest.mark.parametrize("name", ["-support", "a" * 65, "sup port", "sup%3Aport", "é", "x:y", "a@b"])
async def test_a_bad_conversation_name_is_422(db, name):
    async with serving(db) as client:
        response = await client.post(
            f"/api/conversations/{name}/messages", json={"message": "Hi"}, headers=auth("alice")
        )
    assert response.status_code == 422 and "conversation name" in response.json()["detail"]
    assert await stored(db) == {}


@pytest.mark.parametrize(
    "body", [{"message": ""}, {"message": "   "}, {"message": 7}, {}, ["Hi"], {"text": "Hi"}], ids=repr
)
async def test_an_empty_or_missing_message_is_422(db, body):
    async with serving(db) as client:
        response = await client.post("/api/conversations/support/messages", json=body, headers=auth("alice"))
    assert response.status_code == 422
    assert await stored(db) == {}


async def test_a_body_that_is_not_json_is_422(db):
    async with serving(db) as client:
        response = await client.post(
            "/api/conversations/support/messages", content=b"{nope", headers=auth("alice")
        )
    assert response.status_code == 422


async def test_a_body_over_the_limit_or_a_message_over_the_limit_is_413_before_the_store_is_touched(db):
    async with serving(db) as client:
        big = await client.post(
            "/api/conversations/support/messages", json={"message": "x" * (300 * 1024)}, headers=auth("alice")
        )

        async def chunks() -> Any:  # no Content-Length: counted as it arrives
            for _ in range(40):
                yield b"x" * 8192

        unsized = await client.post(
            "/api/conversations/support/messages", content=chunks(), headers=auth("alice")
        )
        long = await client.post(
            "/api/conversations/support/messages",
            json={"message": "x" * (MAX_MESSAGE_CHARS + 1)},
            headers=auth("alice"),
        )
    assert (big.status_code, unsized.status_code, long.status_code) == (413, 413, 413)
    assert not db.exists() or await stored(db) == {}


async def test_too_many_turns_is_429_with_retry_after_per_user(db):
    async with serving(db, rate=2) as client:
        codes = [
            (
                await client.post(
                    "/api/conversations/c/messages", json={"message": "Hi"}, headers=auth("alice")
                )
            ).status_code
            for _ in range(3)
        ]
        limited = await client.post(
            "/api/conversations/c/messages", json={"message": "Hi"}, headers=auth("alice")
        )
        bob = await client.post("/api/conversations/c/messages", json={"message": "Hi"}, headers=auth("bob"))
    assert codes == [200, 200, 429]
    assert limited.status_code == 429 and int(limited.headers["retry-after"]) >= 1
    assert bob.status_code == 200
    assert len((await stored(db))["c_feature_user_alice"]) == 4


class ModelDown(OfflineModel):
    async def get_response(self, *args: Any, **kwargs: Any) -> Any:
        raise ConnectionError("model server went away")

    async def stream_response(self, *args: Any, **kwargs: Any) -> Any:
        raise ConnectionError("model server went away")
        yield


async def test_a_model_failure_is_502_in_one_line_and_the_session_is_unchanged(db):
    async with serving(db) as client:
        await client.post(
            "/api/conversations/support/messages", json={"message": "My name is Ada."}, headers=auth("alice")
        )
    before = await stored(db)
    async with serving(db, model=ModelDown()) as client:
        response = await client.post(
            "/api/conversations/support/messages", json={"message": "Hi"}, headers=auth("alice")
        )
        streamed = await client.post(
            "/api/conversations/support/messages",
            json={"message": "Hi"},
            headers={**auth("alice"), "Accept": "text/event-stream"},
        )
    assert response.status_code == 502
    detail = response.json()["detail"]
    assert (
        detail == "the model failed (ConnectionError); nothing was saved: retry later, or tell the operator"
    )
    assert events_of(streamed.text)[-1][0] == "error"
    assert await stored(db) == before


async def test_a_store_failure_is_503_in_one_line_and_the_session_is_unchanged(db, monkeypatch):
    async with serving(db) as client:
        await client.post(
            "/api/conversations/support/messages", json={"message": "My name is Ada."}, headers=auth("alice")
        )
        before = await stored(db)

        async def disk_error(self: Any, session_id: str, owner: str, items: Any) -> bool:
            raise sqlite3.OperationalError("disk I/O error at /secret/path")

        # Where a pooled session's turn is written (the file's one connection: SQLiteTurns).
        monkeypatch.setattr(SQLiteTurns, "commit", disk_error)
        response = await client.post(
            "/api/conversations/support/messages", json={"message": "Hi"}, headers=auth("alice")
        )
    assert response.status_code == 503
    assert response.json()["detail"] == (
        "the session store failed (OperationalError); nothing was saved, retry later"
    )
    assert await stored(db) == before


def test_serve_tokens_are_read_with_tenants_and_never_shown(tmp_path):
    settings = load_settings(
        {"SERVE_TOKENS": "alice=a-secret-token-123456, acme/bob=b-secret-token-123456"}, serving=True
    )
    assert [(t.user, t.tenant) for t in settings.serve_tokens] == [("alice", None), ("bob", "acme")]
    assert "secret" not in repr(settings) and "secret" not in repr(settings.serve_tokens)
    for bad in (
        "alice",
        "alice=short",
        "/alice=a-secret-token-123456",
        "a=x-secret-token-1234,b=x-secret-token-1234",
    ):
        with pytest.raises(ConfigError) as error:
            parse_tokens(bad)
        assert "secret" not in str(error.value)


def test_authenticate_is_the_one_function_a_real_app_replaces():
    tokens = parse_tokens("alice=a-secret-token-123456,acme/bob=b-secret-token-123456")
    assert serve.authenticate("Bearer b-secret-token-123456", tokens) == serve.Identity("bob", "acme")
    assert serve.authenticate("bearer a-secret-token-123456", tokens) == serve.Identity("alice")
    assert serve.authenticate("Bearer a-secret-token-12345", tokens) is None
    assert serve.authenticate("Bearer a-secret-token-1234567", tokens) is None
    assert serve.authenticate("Bearer ålice", tokens) is None
    assert serve.authenticate(None, tokens) is None


async def test_without_serve_tokens_a_worker_refuses_to_start_in_one_line(db, monkeypatch):
    monkeypatch.delenv("SERVE_TOKENS", raising=False)
    app = OneLineStartupErrors(serve.create_app(db_path=db))
    sent: list[dict[str, Any]] = []
    inbox = [{"type": "lifespan.startup"}]

    async def receive() -> dict[str, Any]:
        return inbox.pop(0)

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    with pytest.raises(ConfigError):
        await app({"type": "lifespan", "asgi": {"version": "3.0"}}, receive, send)
    assert sent[-1]["type"] == "lifespan.startup.failed"
    assert sent[-1]["message"].startswith("error: no SERVE_TOKENS: set SERVE_TOKENS=")
    assert "\n" not in sent[-1]["message"]


def test_python_serve_py_with_a_store_it_cannot_use_says_so_in_one_line(capsys, tmp_path):
    assert serve.main(["--db", str(tmp_path / "no-such-folder" / "x.db")]) == 1
    assert serve.main(["--store", "redis://127.0.0.1:6390/0"]) == 1
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 2 and all(line.startswith("error: ") for line in lines)
    assert "does not exist" in lines[0] and "unreachable" in lines[1]


def test_without_the_server_packages_serve_py_names_the_requirements_file():
    blocked = (
        "import sys, runpy; sys.modules['fastapi'] = None; runpy.run_path('serve.py', run_name='__main__')"
    )
    result = subprocess.run(
        [sys.executable, "-c", blocked],
        cwd=ROOT,
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert result.stderr == "error: serve.py needs fastapi; pip install -r requirements-serve.txt\n"
