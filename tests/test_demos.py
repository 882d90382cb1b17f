"""Each demo runs offline, keeps sessions apart, and never mixes sessions in one model call."""

from __future__ import annotations

import pytest
from agents.testing import ScriptedModel

import agent
from helpers import echo_model, user_texts
from multisessions import SQLiteStore, read_all

DEMOS = [
    agent.multi_user_sessions,
    agent.context_based_sessions,
    agent.shared_session_agents,
    agent.session_naming_demo,
]


async def stored_text(session) -> str:
    """Everything the store holds for the session, as one searchable string."""
    return repr(await read_all(session))


@pytest.mark.parametrize("demo", DEMOS, ids=lambda d: d.__name__)
async def test_demo_runs_offline_and_returns_its_sessions(demo, db, capsys, monkeypatch):
    sessions = await demo(db_path=db)
    out = capsys.readouterr().out
    assert "offline model" in out
    assert "Read back from the store" in out
    for session in sessions.values():
        assert len(await read_all(session)) >= 2
        session.close()


@pytest.mark.parametrize("demo", DEMOS, ids=lambda d: d.__name__)
async def test_demo_never_sends_two_sessions_in_one_call_and_survives_no_handoff(demo, db):
    model: ScriptedModel = echo_model()
    sessions = await demo(model=model, db_path=db)
    # Which session each user message was stored in, read back from the store.
    owner: dict[str, set[str]] = {}
    for session in sessions.values():
        for text in user_texts(await read_all(session)):
            owner.setdefault(text, set()).add(session.session_id)
    assert model.calls, "the demo never called the model we supplied"
    for call in model.calls:
        # A question asked in several sessions maps to several ids; what must hold is that
        # every user message in one call belongs to one common session.
        common = set.intersection(*(owner.get(t, set()) for t in user_texts(call.input)))
        assert common, f"one call mixed sessions: {user_texts(call.input)}"
    for session in sessions.values():
        session.close()


async def test_multi_user_each_user_recalls_only_their_own_facts(db):
    sessions = await agent.multi_user_sessions(db_path=db)
    alice, bob, carol = [await stored_text(sessions[u]) for u in ("alice", "bob", "carol")]
    assert "Your email is alice@example.com" in alice and "bob@example.org" not in alice
    assert "Your email is bob@example.org" in bob and "alice@example.com" not in bob
    assert "don't know your name" in carol and "Alice" not in carol and "Bob" not in carol


async def test_context_sessions_hold_only_their_own_context(db):
    sessions = await agent.context_based_sessions(db_path=db)
    support, sales, chat = [await stored_text(sessions[c]) for c in ("support", "sales", "chat")]
    assert "T-4821" in support and "T-4821" not in sales + chat
    assert "Enterprise" in sales and "Enterprise" not in support + chat
    assert "dark mode" in chat and "dark mode" not in support + sales


async def test_shared_session_hands_off_and_remembers_the_specialist(db, capsys):
    sessions = await agent.shared_session_agents(db_path=db)
    out = capsys.readouterr().out
    assert "handoff: Triage Agent -> Billing Agent" in out
    items = await read_all(sessions["support"])
    assert any(i.get("name") == "transfer_to_billing_agent" for i in items)
    # A brand-new session object on the same file finds the specialist recorded beside it.
    fresh = agent.open_session(sessions["support"].session_id, db)
    assert await SQLiteStore(db).load_last_agent(fresh.session_id) == "Billing Agent"


async def test_rerun_starts_fresh_instead_of_piling_up(db):
    first = await agent.multi_user_sessions(db_path=db)
    counts = [len(await read_all(s)) for s in first.values()]
    second = await agent.multi_user_sessions(db_path=db)
    assert [len(await read_all(s)) for s in second.values()] == counts
