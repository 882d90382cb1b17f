"""Every session class of the SDK that runs offline keeps its features under run_turn and stream_turn.

Each class: a turn stores the user message and the answer, a failing turn stores nothing, a
streamed turn is committed whole. Then what ``PendingTurn`` passes on: the run context to a
context-aware session, compaction after the commit, and the refusal of OpenAIConversationsSession.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from agents import Agent, RunConfig, RunContextWrapper, SQLiteSession
from agents.extensions.memory import (
    AdvancedSQLiteSession,
    AsyncSQLiteSession,
    EncryptedSession,
    RedisSession,
    SQLAlchemySession,
)
from agents.memory import OpenAIConversationsSession, OpenAIResponsesCompactionSession, Session
from agents.memory.session import _session_accepts_wrapper
from agents.testing import ModelStep, ScriptedModel
from openai import AsyncOpenAI

from helpers import reply
from multisessions import StoreError, TurnFailed, read_all
from multisessions.turns import PendingTurn, run_turn, stream_turn
from stores_fixture import REDIS_URL, empty_postgres_database, postgres_url, unavailable
from tools.standin_server import StandinServer

BOT = Agent(name="Bot")
NOWHERE = "http://127.0.0.1:9/v1"  # a compaction that was not expected fails at once, locally

Opener = Callable[[Path, str], AbstractAsyncContextManager[Session]]


@dataclass
class Tenant:
    """The run context of the context-aware session: which tenant's store a turn belongs to."""

    name: str


class TenantSession:
    """A context-aware session: every method takes ``wrapper`` and routes by its tenant."""

    def __init__(self, session_id: str) -> None:
        self.session_id = session_id
        self.by_tenant: dict[str, list[Any]] = {}
        self.seen: list[tuple[str, str]] = []  # (method, tenant) as each call arrived

    def _items(self, method: str, wrapper: RunContextWrapper[Tenant] | None) -> list[Any]:
        tenant = wrapper.context.name if wrapper is not None else "<no context>"
        self.seen.append((method, tenant))
        return self.by_tenant.setdefault(tenant, [])

    async def get_items(self, limit: int | None = None, *, wrapper: Any = None) -> list[Any]:
        items = self._items("get_items", wrapper)
        return list(items[-limit:] if limit else items)

    async def add_items(self, items: list[Any], *, wrapper: Any = None) -> None:
        self._items("add_items", wrapper).extend(items)

    async def pop_item(self, *, wrapper: Any = None) -> Any:
        items = self._items("pop_item", wrapper)
        return items.pop() if items else None

    async def clear_session(self, *, wrapper: Any = None) -> None:
        self._items("clear_session", wrapper).clear()


@asynccontextmanager
async def sqlite(tmp: Path, session_id: str) -> AsyncIterator[Session]:
    session = SQLiteSession(session_id, tmp / "sessions.db")
    yield session
    session.close()


@asynccontextmanager
async def async_sqlite(tmp: Path, session_id: str) -> AsyncIterator[Session]:
    session = AsyncSQLiteSession(session_id, tmp / "sessions.db")
    yield session
    await session.close()


@asynccontextmanager
async def advanced_sqlite(tmp: Path, session_id: str) -> AsyncIterator[Session]:
    session = AdvancedSQLiteSession(session_id=session_id, db_path=tmp / "sessions.db", create_tables=True)
    yield session
    session.close()


@asynccontextmanager
async def redis(tmp: Path, session_id: str) -> AsyncIterator[Session]:
    session = RedisSession.from_url(session_id, url=REDIS_URL, key_prefix=f"test-{uuid.uuid4().hex[:8]}")
    try:
        await session.get_items()
    except Exception as exc:
        await session.close()
        unavailable("redis", str(exc))
    yield session
    await session.clear_session()
    await session.close()


@asynccontextmanager
async def sqlalchemy_postgres(tmp: Path, session_id: str) -> AsyncIterator[Session]:
    await empty_postgres_database()  # this test process's own database
    session = SQLAlchemySession.from_url(
        f"{session_id}-{uuid.uuid4().hex[:8]}", url=postgres_url("postgresql+asyncpg"), create_tables=True
    )
    try:
        await session.get_items()
    except Exception as exc:
        await session.engine.dispose()
        unavailable("postgres", str(exc))
    yield session
    await session.clear_session()
    await session.engine.dispose()


@asynccontextmanager
async def sqlalchemy_aiosqlite(tmp: Path, session_id: str) -> AsyncIterator[Session]:
    url = f"sqlite+aiosqlite:///{tmp / 'sessions.db'}"
    session = SQLAlchemySession.from_url(session_id, url=url, create_tables=True)
    yield session
    await session.engine.dispose()


@asynccontextmanager
async def encrypted(tmp: Path, session_id: str) -> AsyncIterator[Session]:
    underlying = SQLiteSession(session_id, tmp / "sessions.db")
    # ttl: items older than this are hidden; an hour is far beyond any test.
    yield EncryptedSession(session_id, underlying, encryption_key="test-key-" + "x" * 32, ttl=3600)
    underlying.close()


@asynccontextmanager
async def compacting(tmp: Path, session_id: str) -> AsyncIterator[Session]:
    underlying = SQLiteSession(session_id, tmp / "sessions.db")
    client = AsyncOpenAI(base_url=NOWHERE, api_key="sk-test", max_retries=0)
    # The default decision hook (10 items to compact) never fires in these short tests.
    yield OpenAIResponsesCompactionSession(session_id, underlying, client=client)
    underlying.close()


@asynccontextmanager
async def tenant_routed(tmp: Path, session_id: str) -> AsyncIterator[Session]:
    yield TenantSession(session_id)


OPENERS: dict[str, Opener] = {
    "SQLiteSession": sqlite,
    "AsyncSQLiteSession": async_sqlite,
    "AdvancedSQLiteSession": advanced_sqlite,
    "RedisSession": redis,
    "SQLAlchemySession-postgres": sqlalchemy_postgres,
    "SQLAlchemySession-aiosqlite": sqlalchemy_aiosqlite,
    "EncryptedSession": encrypted,
    "OpenAIResponsesCompactionSession": compacting,
    "context-aware": tenant_routed,
}


@pytest.fixture(params=list(OPENERS))
async def session(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Session]:
    async with OPENERS[request.param](tmp_path, f"s-{request.param}") as opened:
        yield opened


def config(*steps: Any) -> RunConfig:
    return RunConfig(model=ScriptedModel(list(steps)))


CONTEXT = Tenant("acme")  # every turn carries it; only the context-aware session uses it


async def stored(session: Session) -> list[Any]:
    """What the store holds for this test's session (for the context-aware one: the tenant's)."""
    if isinstance(session, TenantSession):
        return list(session.by_tenant.get(CONTEXT.name, []))
    return await read_all(session)


def texts(items: list[Any]) -> list[tuple[str, str]]:
    def text(item: Any) -> str:
        content = item["content"]
        return content if isinstance(content, str) else content[0]["text"]

    return [(item["role"], text(item)) for item in items]


async def test_a_turn_stores_the_user_message_and_the_answer(session: Session) -> None:
    await run_turn(BOT, session, "hello", run_config=config(reply("hi there")), context=CONTEXT)
    assert texts(await stored(session)) == [("user", "hello"), ("assistant", "hi there")]


async def test_a_failing_turn_leaves_the_stored_items_unchanged(session: Session) -> None:
    await run_turn(BOT, session, "hello", run_config=config(reply("hi there")), context=CONTEXT)
    before = await stored(session)
    failing = config(ModelStep.raise_error(RuntimeError("model down")))
    with pytest.raises(TurnFailed, match="model down"):
        await run_turn(BOT, session, "second", run_config=failing, context=CONTEXT)
    assert await stored(session) == before


async def test_a_streamed_turn_is_committed_whole(session: Session) -> None:
    async with stream_turn(
        BOT, session, "hello", run_config=config(reply("streamed")), context=CONTEXT
    ) as result:
        [event async for event in result.stream_events()]
        assert await stored(session) == []  # nothing is stored before the stream ends
    assert texts(await stored(session)) == [("user", "hello"), ("assistant", "streamed")]


async def test_the_run_context_reaches_a_context_aware_session_on_every_call() -> None:
    session = TenantSession("shared-id")
    await run_turn(BOT, session, "for acme", run_config=config(reply("a")), context=Tenant("acme"))
    async with stream_turn(
        BOT, session, "for globex", run_config=config(reply("g")), context=Tenant("globex")
    ) as r:
        [event async for event in r.stream_events()]
    assert texts(session.by_tenant["acme"]) == [("user", "for acme"), ("assistant", "a")]
    assert texts(session.by_tenant["globex"]) == [("user", "for globex"), ("assistant", "g")]
    assert "<no context>" not in {tenant for _, tenant in session.seen}
    assert ("add_items", "acme") in session.seen and ("add_items", "globex") in session.seen


async def test_the_sdk_sees_the_turn_as_context_aware_exactly_when_the_session_is(tmp_path: Path) -> None:
    plain = SQLiteSession("plain", tmp_path / "sessions.db")
    encrypted_session = EncryptedSession("e", plain, encryption_key="k" * 40)
    for inner in (plain, encrypted_session, TenantSession("t")):
        assert _session_accepts_wrapper(PendingTurn(inner)) == _session_accepts_wrapper(inner)
    assert not _session_accepts_wrapper(PendingTurn(plain))
    assert _session_accepts_wrapper(PendingTurn(TenantSession("t")))
    plain.close()


async def test_the_sdk_sees_run_compaction_exactly_when_the_session_has_it(tmp_path: Path) -> None:
    plain = SQLiteSession("plain", tmp_path / "sessions.db")
    client = AsyncOpenAI(base_url=NOWHERE, api_key="sk-test")
    assert not hasattr(PendingTurn(plain), "run_compaction")
    assert callable(PendingTurn(OpenAIResponsesCompactionSession("c", plain, client=client)).run_compaction)
    plain.close()


@pytest.mark.parametrize("streamed", [False, True], ids=["run_turn", "stream_turn"])
async def test_compaction_runs_after_the_commit_and_the_store_keeps_the_compacted_history(
    tmp_path: Path, streamed: bool
) -> None:
    underlying = SQLiteSession("c", tmp_path / "sessions.db")
    await underlying.add_items([{"role": "user", "content": "earlier"}])
    seen_at_compaction: list[list[Any]] = []

    def compact_every_turn(context: dict[str, Any]) -> bool:
        seen_at_compaction.append(list(context["session_items"]))
        return True

    with StandinServer() as server:
        client = AsyncOpenAI(base_url=server.base_url, api_key="sk-test", max_retries=0)
        session = OpenAIResponsesCompactionSession(
            "c",
            underlying,
            client=client,
            compaction_mode="input",
            should_trigger_compaction=compact_every_turn,
        )
        run = config(reply("the answer"))
        if streamed:
            async with stream_turn(BOT, session, "question", run_config=run) as result:
                [event async for event in result.stream_events()]
        else:
            await run_turn(BOT, session, "question", run_config=run)
        compactions = [r for r in server.requests if r.path == "/v1/responses/compact"]

    # The decision hook saw the whole turn, already stored, and compaction sent exactly that.
    whole = [("user", "earlier"), ("user", "question"), ("assistant", "the answer")]
    assert [texts(items) for items in seen_at_compaction] == [whole]
    assert len(compactions) == 1
    assert [
        (i["role"], i["content"] if isinstance(i["content"], str) else i["content"][0]["text"])
        for i in compactions[0].body["input"]
    ] == whole
    assert texts(await read_all(underlying)) == [("assistant", "Summary of 3 earlier items.")]
    underlying.close()


async def test_a_failing_turn_on_a_compaction_session_neither_stores_nor_compacts(tmp_path: Path) -> None:
    underlying = SQLiteSession("c", tmp_path / "sessions.db")
    session = OpenAIResponsesCompactionSession(
        "c",
        underlying,
        client=AsyncOpenAI(base_url=NOWHERE, api_key="sk-test"),
        should_trigger_compaction=lambda _: True,
    )
    with pytest.raises(TurnFailed, match="model down"):
        await run_turn(
            BOT, session, "q", run_config=config(ModelStep.raise_error(RuntimeError("model down")))
        )
    assert await read_all(underlying) == []
    underlying.close()


async def test_an_openai_conversations_session_is_refused_in_one_line() -> None:
    session = OpenAIConversationsSession(
        conversation_id="conv_x", openai_client=AsyncOpenAI(base_url=NOWHERE, api_key="sk-test")
    )
    with pytest.raises(StoreError, match="OpenAIConversationsSession") as refused:
        await run_turn(BOT, session, "hello", run_config=config(reply("never")))
    assert "\n" not in str(refused.value)
