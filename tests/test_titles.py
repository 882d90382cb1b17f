"""SERVE_TITLES=model: a conversation's first turn asks the model for a title, written in that turn's
one write; a title writer that fails leaves the first message as the title, and the turn is kept."""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import Any

import pytest
from agents import RunConfig

import agent
from conftest import needs_sdk_private
from multisessions import (
    ConfigError,
    OfflineModel,
    SQLiteStore,
    feature_session_id,
    list_conversations,
    load_settings,
    read_all,
    resolve_model,
    run_turn,
)
from multisessions.conversations import has_index
from multisessions.titles import DEFAULT_TITLE_PROMPT, Titles, titles_from
from serve_fixture import auth, events_of, serving
from standin_fixture import (  # noqa: F401  (the fixtures)
    model_requests,
    module_standin_fixture,
    sent_text,
    settings_for,
    standin_fixture,
)

ONE_WRITE = needs_sdk_private()
REFUND = "I was charged twice for order 5512, can I get a refund?"


class Recording(OfflineModel):
    """The offline model, noting what each title request sent; ``fail`` makes title requests fail."""

    def __init__(self, fail: BaseException | None = None, delay: float = 0.0) -> None:
        super().__init__()
        self.title_requests: list[tuple[str | None, Any]] = []
        self.fail, self.delay = fail, delay

    async def get_response(
        self, system_instructions: str | None, input: Any, *args: Any, **kwargs: Any
    ) -> Any:
        if system_instructions == DEFAULT_TITLE_PROMPT:
            self.title_requests.append((system_instructions, input))
            await asyncio.sleep(self.delay)
            if self.fail is not None:
                raise self.fail
        return await super().get_response(system_instructions, input, *args, **kwargs)


async def turns(store, model: OfflineModel, messages: list[str], titles: Titles | None) -> tuple[str, str]:
    user = f"u{uuid.uuid4().hex[:6]}"
    session = store.open(feature_session_id("support", user))
    for message in messages:
        await run_turn(
            agent.support_agents()["Triage Agent"],
            session,
            message,
            titles=titles,
            run_config=RunConfig(model=model),
        )
    page = await list_conversations(store, user)
    assert [c.session_id for c in page.conversations] == [session.session_id]
    return session.session_id, page.conversations[0].title


@ONE_WRITE
async def test_the_model_titles_a_new_conversation_once_in_its_first_turn(store):
    if not has_index(store):
        pytest.skip("this store lists conversations by scanning its inventory")
    model = Recording()
    _, title = await turns(store, model, [REFUND, "My email is alice@example.com"], Titles())
    assert title == "Charged twice order 5512 refund"  # the offline model's title, not the message
    assert len(model.title_requests) == 1  # the first turn only
    assert REFUND in str(model.title_requests[0][1])  # it saw the first message
    _, plain = await turns(store, Recording(), [REFUND], None)
    assert plain == REFUND  # without Titles: the first message


@pytest.mark.parametrize("fail, delay", [(RuntimeError("model down"), 0.0), (None, 5.0)])
@ONE_WRITE
async def test_a_title_writer_that_fails_or_hangs_leaves_the_first_message_and_keeps_the_turn(
    store, caplog, fail, delay
):
    if not has_index(store):
        pytest.skip("this store lists conversations by scanning its inventory")
    with caplog.at_level(logging.WARNING):
        session_id, title = await turns(store, Recording(fail, delay), [REFUND], Titles(timeout=0.2))
    assert title == REFUND
    assert len(await read_all(store.open(session_id))) >= 2  # the turn is kept
    assert [r for r in caplog.records if "writing a title failed" in r.getMessage()]


def test_serve_titles_is_read_and_checked(monkeypatch):
    assert titles_from(load_settings()) is None  # the first message, by default
    monkeypatch.setenv("SERVE_TITLES", "model")
    assert titles_from(load_settings()) == Titles()
    monkeypatch.setenv("SERVE_TITLES", "poetry")
    with pytest.raises(ConfigError, match="SERVE_TITLES='poetry' must be one of: first, model"):
        load_settings()


@ONE_WRITE
@pytest.mark.parametrize("streamed", [False, True])
async def test_serve_titles_model_titles_conversations_over_http_json_and_streamed(tmp_path, streamed):
    headers = auth("alice") | ({"Accept": "text/event-stream"} if streamed else {})
    async with serving(tmp_path / "s.db", serve_titles="model") as client:
        sent = await client.post(
            "/api/conversations/support/messages", json={"message": REFUND}, headers=headers
        )
        assert sent.status_code == 200
        if streamed:  # the turn runs on in its own task: its last event says it is saved
            assert events_of(sent.text)[-1][0] == "done"
        listed = (await client.get("/api/conversations", headers=auth("alice"))).json()
    assert [c["title"] for c in listed["conversations"]] == ["Charged twice order 5512 refund"]


@ONE_WRITE
@pytest.mark.parametrize("api", ["responses", "chat_completions"])
async def test_with_a_real_model_over_http_the_title_request_carries_the_first_message_only(
    api, standin, tmp_path
):
    model = resolve_model(None, settings_for(api, standin), announce=False)
    store = SQLiteStore(tmp_path / "titles.db")
    session = store.open(feature_session_id("support", "alice"))
    for message in (REFUND, "And my email is alice@example.com"):
        await run_turn(
            agent.support_agents()["Triage Agent"],
            session,
            message,
            titles=Titles(),
            run_config=RunConfig(model=model),
        )
    asked = [r for r in model_requests(standin) if "Write a title for a conversation" in sent_text(r)]
    assert len(asked) == 1  # one title request, in the first turn
    assert REFUND in sent_text(asked[0]) and "alice@example.com" not in sent_text(asked[0])
    page = await list_conversations(store, "alice")
    assert [c.title for c in page.conversations] == ["Charged twice order 5512 refund"]
