"""Conversations to browse: a per-user index written in the turn's one commit, listed a page at a
time after an opaque cursor, newest activity first, filtered by title, tagged by the app."""

from __future__ import annotations

import base64
import json
import uuid

import pytest
from agents import RunConfig

import agent
from conftest import needs_sdk_private
from multisessions import (
    OfflineModel,
    TurnFailed,
    export_user,
    feature_session_id,
    forget_user,
    list_conversations,
    run_turn,
    set_tags,
    title_of,
)
from multisessions.conversations import MAX_LIMIT, has_index

ONE_WRITE = needs_sdk_private()
CONFIG = RunConfig(model=OfflineModel())


def triage():
    return agent.support_agents()["Triage Agent"]


def indexed(store) -> None:
    if not has_index(store):
        pytest.skip("this store lists conversations by scanning its inventory")


async def talk(store, name: str, user: str, text: str, tenant: str | None = None) -> str:
    session = store.open(feature_session_id(name, user, tenant=tenant))
    await run_turn(triage(), session, text, run_config=CONFIG)
    return session.session_id


def test_a_title_is_the_first_user_message_on_one_line_cut_at_a_word():
    assert title_of([{"role": "user", "content": "  Hello\n  there "}]) == "Hello there"
    long = "word " * 40
    title = title_of([{"role": "assistant", "content": "x"}, {"role": "user", "content": long}])
    assert title is not None and title.endswith("…") and len(title) <= 60 and "wor…" not in title
    assert title_of([{"role": "user", "content": ""}]) is None


@ONE_WRITE
async def test_the_index_lists_a_users_conversations_newest_first_with_titles(store):
    indexed(store)
    user = f"u{uuid.uuid4().hex[:6]}"
    first = await talk(store, "a", user, "Where is my parcel?")
    second = await talk(store, "b", user, "My card was charged twice")
    await talk(store, "c", f"other{user}", "Someone else entirely")
    page = await list_conversations(store, user)
    assert [(c.session_id, c.title, c.items) for c in page.conversations] == [
        (second, "My card was charged twice", 2),
        (first, "Where is my parcel?", 2),
    ]
    assert page.next_cursor is None
    await talk(store, "a", user, "Any news?")  # activity moves it to the top, the title stays
    page = await list_conversations(store, user)
    assert [(c.session_id, c.title, c.items) for c in page.conversations][0] == (
        first,
        "Where is my parcel?",
        4,
    )


@ONE_WRITE
async def test_a_failed_commit_leaves_neither_the_items_nor_the_index_entry(store, monkeypatch):
    indexed(store)
    user = f"u{uuid.uuid4().hex[:6]}"
    session = store.open(feature_session_id("a", user))
    io = store.turn_io(session)

    async def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(type(io), "commit", disk_full)
    with pytest.raises(TurnFailed):
        await run_turn(triage(), session, "Lost?", run_config=CONFIG)
    monkeypatch.undo()
    assert (await list_conversations(store, user)).conversations == []


@ONE_WRITE
async def test_cursor_pages_have_no_duplicates_or_gaps_while_new_turns_arrive(store):
    indexed(store)
    user = f"u{uuid.uuid4().hex[:6]}"
    ids = [await talk(store, f"c{i}", user, f"Question {i}") for i in range(7)]
    seen: list[str] = []
    page = await list_conversations(store, user, limit=3)
    seen += [c.session_id for c in page.conversations]
    new = await talk(store, "late", user, "A new one")  # lands above the cursor: not in later pages
    while page.next_cursor is not None:
        page = await list_conversations(store, user, limit=3, cursor=page.next_cursor)
        seen += [c.session_id for c in page.conversations]
    assert seen == ids[::-1]
    assert (await list_conversations(store, user, limit=1)).conversations[0].session_id == new


@ONE_WRITE
async def test_title_filter_tags_and_delete(store):
    indexed(store)
    user = f"u{uuid.uuid4().hex[:6]}"
    refund = await talk(store, "r", user, "Please REFUND order 5512")
    await talk(store, "p", user, "Where is my parcel?")
    found = await list_conversations(store, user, title="refund")
    assert [c.session_id for c in found.conversations] == [refund]
    assert await set_tags(store, refund, {"topic": "billing"}) is True
    assert (await list_conversations(store, user, title="refund")).conversations[0].tags == {
        "topic": "billing"
    }
    assert await set_tags(store, feature_session_id("never", user), {"x": "y"}) is False
    await store.delete(refund)
    assert [c.title for c in (await list_conversations(store, user)).conversations] == ["Where is my parcel?"]


@ONE_WRITE
async def test_tenants_and_users_are_kept_apart_and_a_forged_cursor_is_refused(store):
    indexed(store)
    user = f"u{uuid.uuid4().hex[:6]}"
    await talk(store, "a", user, "Mine in acme", tenant="acme")
    theirs = await talk(store, "a", user, "Mine without a tenant")
    assert [c.title for c in (await list_conversations(store, user, tenant="acme")).conversations] == [
        "Mine in acme"
    ]
    forged = base64.urlsafe_b64encode(json.dumps([9e12, theirs]).encode()).decode().rstrip("=")
    with pytest.raises(ValueError, match="cursor"):
        await list_conversations(store, user, tenant="acme", cursor=forged)
    with pytest.raises(ValueError, match="cursor"):
        await list_conversations(store, user, cursor="not a cursor")
    with pytest.raises(ValueError):
        await list_conversations(store, user, limit=0)
    assert len((await list_conversations(store, user, limit=MAX_LIMIT + 50)).conversations) == 1


@ONE_WRITE
async def test_forgetting_a_user_removes_their_index_entries(store):
    indexed(store)
    user = f"u{uuid.uuid4().hex[:6]}"
    await talk(store, "a", user, "Forget me")
    exported = await export_user(store, user)
    assert [(c["title"], c["items"]) for c in exported["conversations"]] == [("Forget me", 2)]
    await forget_user(store, user)
    assert (await list_conversations(store, user)).conversations == []
    assert (await export_user(store, user))["conversations"] == []


@ONE_WRITE
async def test_an_encrypted_store_seals_the_title_and_lists_it_decrypted(store):
    from multisessions.stores import EncryptedStore

    indexed(store)
    secure = EncryptedStore(store, "k" * 16 + "-test-secret-" + "z" * 16)
    user = f"u{uuid.uuid4().hex[:6]}"
    session_id = await talk(secure, "a", user, "My secret plan")
    store.opened.add(session_id)
    raw = await store.conversation_page(f"\x1f{user}", 10)
    assert [r.session_id for r in raw] == [session_id] and "secret" not in raw[0].title and raw[0].title
    assert [c.title for c in (await list_conversations(secure, user)).conversations] == ["My secret plan"]


async def test_the_browse_benchmark_pages_through_every_conversation(store):
    indexed(store)
    from tools.browse import run

    results = await run(store.store, [5, 50], 120, 2)
    assert [r.get("other_sessions") for r in results[:2]] == [5, 50]
    assert results[2]["conversations"] == 120 and results[2]["pages"] == 2
    assert all(r.get("ms", 1) > 0 for r in results)
