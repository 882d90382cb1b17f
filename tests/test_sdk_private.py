"""The SDK's private names the package uses (multisessions/sdk_private.py): each one is there and
behaves as relied on; without them every turn takes the SDK's public session path, all or nothing.

Run the whole suite as on an SDK without them: ``python -m pytest --hide-sdk-private``.
"""

from __future__ import annotations

import inspect
import sqlite3
from pathlib import Path
from typing import Any

import agents.run_internal.session_persistence as persistence
import pytest
from agents import Agent, FunctionTool, RunConfig, Runner, SQLiteSession, function_tool, handoff
from agents.memory import OpenAIResponsesCompactionSession
from agents.run_context import RunContextWrapper
from agents.testing import ModelStep, ScriptedModel, assistant_message, function_call

import multisessions.turns as turns
from conftest import needs_sdk_private
from multisessions import TurnFailed, read_all, sdk_private
from multisessions.direct import can_pass_history
from multisessions.turns import PendingTurn, run_turn, stream_turn

needs_them = needs_sdk_private()


@function_tool
def lookup_order(order: int) -> str:
    """The status of an order."""
    return f"order {order} shipped"


@needs_them
def test_the_sdk_input_helpers_are_there_and_prepare_input_as_the_session_path_does():
    helpers = sdk_private.RUN_ITEMS
    assert helpers is not None and sdk_private.direct_path_available()
    call = {"type": "function_call", "call_id": "c1", "name": "lookup_order", "arguments": "{}", "id": "fc1"}
    output = {"type": "function_call_output", "call_id": "c1", "output": "shipped"}
    # A call without its output is dropped from stored history; with its output it stays.
    assert helpers.drop_orphan_function_calls([call], pruning_indexes={0}) == []
    assert helpers.drop_orphan_function_calls([call, output], pruning_indexes={0, 1}) == [call, output]
    # Items sharing an id keep their latest value.
    old, new = {**call, "arguments": '{"order": 1}'}, {**call, "arguments": '{"order": 2}'}
    assert helpers.deduplicate_input_items_preferring_latest([old, new]) == [new]
    # Session-only keys never reach the model.
    assert helpers.strip_internal_input_item_metadata({**output, "created_by": "x"}) == output
    assert helpers.normalize_input_items_for_api([{**output, "created_by": "x"}]) == [output]
    assert helpers.ensure_input_item_format(output) == output


@needs_them
async def test_the_sdk_turns_run_items_into_the_input_items_its_session_stores(tmp_path: Path):
    model = ScriptedModel([ModelStep(output=[assistant_message("Hello.", item_id="m1")])])
    result = await Runner.run(Agent(name="A"), "Hi", run_config=RunConfig(model=model))
    assert sdk_private.RUN_ITEMS is not None
    (item,) = sdk_private.RUN_ITEMS.run_items_to_input_items(result.new_items)
    assert item["role"] == "assistant" and item["content"][0]["text"] == "Hello."  # type: ignore[index,typeddict-item]


@needs_them
def test_a_handoff_tells_the_agent_it_leads_to():
    billing = Agent(name="Billing Agent")
    assert sdk_private.handoff_target(handoff(billing)) is billing


@needs_them
async def test_an_encrypted_session_seals_items_as_its_own_add_items_stores_them(tmp_path: Path):
    from agents.extensions.memory import EncryptedSession

    plain = SQLiteSession("user_e", tmp_path / "e.db")
    session = EncryptedSession("user_e", plain, encryption_key="k" * 40, ttl=3600)
    envelopes = sdk_private.encrypted_envelopes(session)
    assert envelopes is not None
    wrap, unwrap = envelopes
    item = {"role": "user", "content": "secret 5512"}
    sealed = wrap(item)
    assert "5512" not in str(sealed) and unwrap(sealed) == item
    await plain.add_items([sealed])  # what the store's one write stores is what the session reads
    assert await session.get_items() == [item]


@needs_them
def test_an_agent_run_as_a_tool_is_told_from_a_plain_function_tool():
    assert sdk_private.may_run_an_agent(Agent(name="B").as_tool("b", "b"))  # type: ignore[arg-type]
    assert isinstance(lookup_order, FunctionTool) and not sdk_private.may_run_an_agent(lookup_order)


@needs_them
def test_the_sdk_calls_the_session_hooks_and_reads_the_marks_by_these_names():
    source = inspect.getsource(persistence)
    for hook in sdk_private.SESSION_HOOKS:
        assert f'"{hook}"' in source
        assert callable(getattr(OpenAIResponsesCompactionSession, hook))
    compacting = inspect.getsource(OpenAIResponsesCompactionSession)
    assert '"_session_compaction_is_automatic"' in compacting  # read by the session's run_compaction
    assert "_session_compaction_is_automatic = True" in source  # set by the SDK around its own call
    assert '"_defer_compaction"' in source and '"_ignore_ids_for_matching"' in source


@needs_them
def test_the_compaction_mark_is_set_for_the_call_only():
    wrapper = RunContextWrapper(context=None)
    with sdk_private.automatic_compaction(wrapper):
        assert getattr(wrapper, "_session_compaction_is_automatic") is True  # noqa: B009
    assert getattr(wrapper, "_session_compaction_is_automatic") is False  # noqa: B009


@needs_them
def test_a_deferred_compaction_and_id_blind_matching_come_from_the_session(tmp_path: Path):
    plain = SQLiteSession("s", tmp_path / "a.db")
    compacting = OpenAIResponsesCompactionSession("c", plain, client=object())  # type: ignore[arg-type]
    assert sdk_private.deferred_compaction(plain) is None
    assert sdk_private.deferred_compaction(compacting) == compacting._defer_compaction
    assert not sdk_private.ignores_ids(plain)

    class IdBlind:
        _ignore_ids_for_matching = True

    assert sdk_private.ignores_ids(IdBlind())
    assert persistence._ignore_ids_for_matching(IdBlind()) is True  # type: ignore[arg-type]
    plain.close()


def test_the_openai_client_still_prepares_each_request_in_one_hook():
    from openai import AsyncOpenAI
    from openai._models import FinalRequestOptions

    assert sdk_private.prepares_options()
    assert inspect.iscoroutinefunction(AsyncOpenAI._prepare_options)
    assert list(inspect.signature(AsyncOpenAI._prepare_options).parameters) == ["self", "options"]
    options = FinalRequestOptions.construct(method="post", url="/chat/completions", json_data={"a": 1})
    assert (options.url, options.json_data) == ("/chat/completions", {"a": 1})  # what models.py rewrites


@needs_them
async def test_the_sdk_sessions_hold_the_fields_the_store_short_paths_check():
    from agents.extensions.memory import RedisSession, SQLAlchemySession
    from sqlalchemy.ext.asyncio import create_async_engine

    client = object()
    redis = RedisSession("s", redis_client=client, key_prefix="p", ttl=None)  # type: ignore[arg-type]
    expected = {"_redis": client, "_key_prefix": "p", "_ttl": None, "_closed": False}
    keys = {"_session_key": "p:s", "_messages_key": "p:s:messages", "_counter_key": "p:s:counter"}
    assert sdk_private.plain_redis_session(redis, expected | keys)
    assert not sdk_private.plain_redis_session(redis, expected | {"_key_prefix": "other"})
    engine = create_async_engine("sqlite+aiosqlite://")
    try:
        sql = SQLAlchemySession("s", engine=engine)
        assert set(vars(sql)) == sdk_private.sqlalchemy_session_fields()
        assert sdk_private.plain_sqlalchemy_session(sql, engine, ("agent_sessions", "agent_messages"))
        assert not sdk_private.plain_sqlalchemy_session(sql, object(), ("agent_sessions", "agent_messages"))
    finally:
        await engine.dispose()


@pytest.fixture
def hidden(monkeypatch: pytest.MonkeyPatch) -> None:
    """As on an SDK without its private names: every switch sdk_private.py has, turned off."""
    monkeypatch.setattr(sdk_private, "HIDDEN", True)
    monkeypatch.setattr(sdk_private, "RUN_ITEMS", None)
    monkeypatch.setattr(sdk_private, "_KNOWS_HANDOFF_TARGETS", False)
    monkeypatch.setattr(sdk_private, "_MARKS_AGENT_TOOLS", False)


class Spy:
    """What ``Runner.run`` was given as the session, turn by turn; and whether history went by hand."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.sessions: list[object] = []
        self.by_hand = 0
        run, run_streamed, model_input = Runner.run, Runner.run_streamed, turns.model_input

        async def spied_run(*args: Any, **kwargs: Any) -> Any:
            self.sessions.append(kwargs.get("session"))
            return await run(*args, **kwargs)

        def spied_streamed(*args: Any, **kwargs: Any) -> Any:
            self.sessions.append(kwargs.get("session"))
            return run_streamed(*args, **kwargs)

        def counted(*args: Any, **kwargs: Any) -> Any:
            self.by_hand += 1
            return model_input(*args, **kwargs)

        monkeypatch.setattr(turns.Runner, "run", spied_run)
        monkeypatch.setattr(turns.Runner, "run_streamed", spied_streamed)
        monkeypatch.setattr(turns, "model_input", counted)


def stored(db: Path) -> list[str]:
    with sqlite3.connect(db) as conn:
        return [row[0] for row in conn.execute("SELECT message_data FROM agent_messages ORDER BY id")]


@pytest.mark.usefixtures("hidden")
async def test_without_them_a_turn_takes_the_session_path_and_is_all_or_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    spy = Spy(monkeypatch)
    db = tmp_path / "s.db"
    session = SQLiteSession("user_ada", db)
    agent = Agent(name="Triage Agent", tools=[lookup_order], handoffs=[Agent(name="Billing Agent")])
    assert not can_pass_history(agent, session, {})
    model = ScriptedModel(
        [
            ModelStep(output=[function_call("lookup_order", {"order": 7}, call_id="c1")]),
            ModelStep(output=[assistant_message("Shipped.", item_id="m1")]),
            ModelStep(output=[function_call("lookup_order", {"order": 8}, call_id="c2")]),
            ModelStep(error=RuntimeError("the model went away")),
        ]
    )
    config = RunConfig(model=model)
    result = await run_turn(agent, session, "Where is order 7?", run_config=config)
    assert result.final_output == "Shipped."
    assert len(stored(db)) == 4  # message, call, output, answer: the whole turn
    with pytest.raises(TurnFailed):
        await run_turn(agent, session, "And order 8?", run_config=config)
    assert len(stored(db)) == 4  # the failed turn left nothing, not even its message
    assert spy.by_hand == 0 and len(spy.sessions) == 2
    assert all(isinstance(s, PendingTurn) for s in spy.sessions)
    assert [item.get("role") for item in await read_all(session)][0] == "user"
    session.close()


@pytest.mark.usefixtures("hidden")
async def test_without_them_a_streamed_turn_takes_the_session_path_and_is_stored_once_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    spy = Spy(monkeypatch)
    db = tmp_path / "s.db"
    session = SQLiteSession("user_ada", db)
    model = ScriptedModel([ModelStep(output=[assistant_message("Hello Ada.", item_id="m1")])])
    config = RunConfig(model=model)
    async with stream_turn(Agent(name="A"), session, "Hi, I'm Ada.", run_config=config) as run:
        async for _event in run.stream_events():
            pass
    assert len(stored(db)) == 2
    assert spy.by_hand == 0 and [type(s) for s in spy.sessions] == [PendingTurn]
    session.close()


@needs_them
def test_a_helper_that_keeps_its_name_but_changes_what_it_does_turns_the_hand_path_off():
    helpers = sdk_private.RUN_ITEMS
    assert helpers is not None and sdk_private._behaves(helpers)
    keeps_internal_keys = helpers._replace(strip_internal_input_item_metadata=lambda item: item)
    assert not sdk_private._behaves(keeps_internal_keys)
    keeps_orphans = helpers._replace(drop_orphan_function_calls=lambda items, **kwargs: items)
    assert not sdk_private._behaves(keeps_orphans)
