"""PostgreSQL's short turn path (multisessions/stores/pg_turns.py): what it writes, how often it
talks to the server, and that the lease still guards every turn."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import pytest
from agents import Agent, RunConfig, SessionSettings
from agents.extensions.memory import SQLAlchemySession
from agents.testing import ModelStep, ScriptedModel, assistant_message

from conftest import needs_sdk_private
from helpers import cancel_a_start_in_flight, reply, user_texts
from multisessions import AwaitingApproval, LeaseLost, StoreError, TurnFailed, open_store, run_turn
from multisessions.stores import SQLStore, TurnStart, TurnWrite, sql_store
from multisessions.stores.base import remember_store
from multisessions.stores.pg_turns import COMMIT, POOL_SIZE, PostgresTurns
from stores_fixture import POSTGRES_SERVER, database_name, empty_postgres_database, postgres_url, unavailable

# The short path is taken only for the SDK's own session objects, told by their private fields;
# without them (--hide-sdk-private) turns go through the session, as tests/test_sdk_private.py shows.
pytestmark = needs_sdk_private()

SERVER = urlsplit(POSTGRES_SERVER)
HOST, PORT = SERVER.hostname or "127.0.0.1", SERVER.port or 5432


def on_database(name: str, *, port: int = PORT) -> str:
    """The test server's URL, on database ``name`` (and, for the relay, another port)."""
    user = SERVER.netloc.rsplit("@", 1)[0] + "@" if "@" in SERVER.netloc else ""
    return SERVER._replace(netloc=f"{user}{HOST}:{port}", path=f"/{name}").geturl()


_made: list[str] = []


def uid(name: str) -> str:
    """A session id of this test's own (the ``pg`` fixture removes it after the test)."""
    _made.append(f"tio-{name}-{uuid.uuid4().hex[:8]}")
    return _made[-1]


async def open_pg(url: str | None = None) -> SQLStore:
    await empty_postgres_database()  # this test process's own database (tests/stores_fixture.py)
    store = SQLStore(url or postgres_url())
    try:
        await store.check()
    except StoreError as exc:
        await store.close()
        unavailable("postgres", str(exc))
    return store


@pytest.fixture
async def pg() -> AsyncIterator[SQLStore]:
    """A PostgreSQL store; the sessions a test names with ``uid`` are removed after it (only those:
    other tests may share the database)."""
    store = await open_pg()
    first = len(_made)
    yield store
    for session_id in _made[first:]:
        await store.delete(session_id)
    await raw("DELETE FROM multisessions_leases WHERE session_id = ANY($1)", _made[first:])
    await store.close()


async def raw(sql: str, *args: Any) -> list[Any]:
    """Rows straight from the server, on a connection of the test's own."""
    conn = await asyncpg.connect(host=HOST, port=PORT, user="postgres", database=database_name())
    try:
        return list(await conn.fetch(sql, *args))
    finally:
        await conn.close()


def short_path(store: SQLStore, session: Any) -> PostgresTurns:
    io = store.turn_io(session)
    assert isinstance(io, PostgresTurns)
    return io


class CountingProxy:
    """A TCP relay to PostgreSQL counting round trips: each time the client speaks after the
    server did (or first), one more. Bursts in one direction count once, however TCP splits them."""

    def __init__(self) -> None:
        self.round_trips = 0
        self._last = ""
        self.server: asyncio.Server | None = None

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    def _note(self, direction: str) -> None:
        if direction == "up" and self._last != "up":
            self.round_trips += 1
        self._last = direction

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(HOST, PORT)

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter, direction: str) -> None:
            try:
                while data := await src.read(65536):
                    self._note(direction)
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, asyncio.CancelledError):
                pass
            finally:
                dst.close()

        await asyncio.gather(pipe(reader, up_writer, "up"), pipe(up_reader, writer, "down"))

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()


async def test_only_the_stores_own_plain_postgres_sessions_take_the_short_path(pg, tmp_path):
    assert isinstance(pg.turn_io(pg.open(uid("a"))), PostgresTurns)

    class Mine(SQLAlchemySession):
        pass

    other = SQLStore(postgres_url())
    try:
        for session in (
            Mine(uid("b"), engine=pg.engine),  # a subclass may serialise differently
            SQLAlchemySession(uid("c"), engine=pg.engine, messages_table="other_messages"),
            SQLAlchemySession(uid("d"), engine=pg.engine, ensure_ascii=False),
            SQLAlchemySession(uid("e"), engine=other.engine),  # another store's engine
        ):
            assert pg.turn_io(session) is None
    finally:
        await other.close()
    sqlite = open_store(f"sqlite+aiosqlite:///{tmp_path / 'aio.db'}")
    try:
        assert sqlite.turn_io(sqlite.open("user_x")) is None
    finally:
        await sqlite.close()


async def test_a_short_path_turn_stores_exactly_what_the_sdks_session_would(pg, monkeypatch):
    # The same conversation twice, with the same answers (same item ids): once through the short
    # path, once through SQLAlchemySession.add_items (the store's turn_io switched off).
    messages = ["My name is Zoë ☕.", 'quote " and \\ backslash', "what's my name?"]
    answers = [f"answer {i} é" for i in range(len(messages))]

    async def converse(session: Any) -> None:
        model = ScriptedModel([[assistant_message(a, item_id=f"msg-{i}")] for i, a in enumerate(answers)])
        for message in messages:
            await run_turn(Agent(name="Bot"), session, message, run_config=RunConfig(model=model))

    fast, slow = pg.open(uid("fast")), pg.open(uid("slow"))
    await converse(fast)
    with monkeypatch.context() as patch:
        patch.setattr(pg, "turn_io", lambda session: None)
        await converse(slow)

    rows = {}
    for session in (fast, slow):
        rows[session.session_id] = await raw(
            "SELECT message_data, created_at FROM agent_messages WHERE session_id = $1 ORDER BY id",
            session.session_id,
        )
    fast_rows, slow_rows = rows[fast.session_id], rows[slow.session_id]
    assert [r["message_data"] for r in fast_rows] == [r["message_data"] for r in slow_rows]
    assert len(fast_rows) == 6
    assert "\\u00eb" in fast_rows[0]["message_data"]  # ASCII-escaped JSON, as the SDK writes it
    for table in (fast_rows, slow_rows):
        stamps = [r["created_at"] for r in table]
        # One transaction per turn: a turn's rows share its timestamp, and turns follow in order.
        assert stamps[0] == stamps[1] < stamps[2] == stamps[3] < stamps[4] == stamps[5]
    (parent,) = await raw(
        "SELECT created_at, updated_at FROM agent_sessions WHERE session_id = $1", fast.session_id
    )
    assert parent["created_at"] == fast_rows[0]["created_at"]
    assert parent["updated_at"] == fast_rows[-1]["created_at"]

    # Read back through the SDK's own class, on a fresh engine: identical.
    other = SQLStore(postgres_url())
    try:
        sdk_fast = SQLAlchemySession(fast.session_id, engine=other.engine)
        sdk_slow = SQLAlchemySession(slow.session_id, engine=other.engine)
        assert await sdk_fast.get_items() == await sdk_slow.get_items()
        assert await sdk_fast.get_items(3) == await sdk_slow.get_items(3)
        assert user_texts(await sdk_fast.get_items()) == messages
    finally:
        await other.close()

    listed = {info.session_id: info for info in await pg.list_sessions()}
    assert listed[fast.session_id].items == 6
    assert await pg.delete(fast.session_id) == 6
    assert await fast.get_items() == []


async def test_a_turn_is_two_round_trips_and_uses_no_other_connection(pg):
    proxy = CountingProxy()
    port = await proxy.start()
    store = await open_pg(f"postgresql://postgres@127.0.0.1:{port}/{database_name()}")
    try:
        session = store.open(uid("rt"))
        model = ScriptedModel([reply(f"r{i}") for i in range(3)])
        config = RunConfig(model=model)
        await run_turn(Agent(name="Bot"), session, "warm up", run_config=config)  # pool, functions
        for message in ("one", "two"):
            before = proxy.round_trips
            await run_turn(Agent(name="Bot"), session, message, run_config=config)
            assert proxy.round_trips - before == 2
        assert user_texts(model.calls[-1].input) == ["warm up", "one", "two"]
        await store.delete(session.session_id)
    finally:
        await store.close()
        await proxy.close()


async def test_a_commit_after_the_lease_was_taken_away_writes_nothing(pg):
    session = pg.open(uid("stolen"))
    model = ScriptedModel([reply("kept")])
    await run_turn(Agent(name="Bot"), session, "first", run_config=RunConfig(model=model))
    before = await session.get_items()

    class Thief(ScriptedModel):
        async def get_response(self, *args: Any, **kwargs: Any) -> Any:
            # While the turn runs, another holder takes the session (as after a stalled process).
            await raw(
                "UPDATE multisessions_leases SET owner = 'thief' WHERE session_id = $1", session.session_id
            )
            return await super().get_response(*args, **kwargs)

    with pytest.raises(TurnFailed) as failure:
        await run_turn(
            Agent(name="Bot"), session, "second", run_config=RunConfig(model=Thief([reply("lost")]))
        )
    assert isinstance(failure.value.cause, LeaseLost)
    assert await session.get_items() == before
    # The thief's lease is untouched: the failed commit freed nothing.
    assert [
        r["owner"]
        for r in await raw("SELECT owner FROM multisessions_leases WHERE session_id = $1", session.session_id)
    ] == ["thief"]
    await raw("DELETE FROM multisessions_leases WHERE session_id = $1", session.session_id)


async def test_a_commit_on_an_expired_lease_writes_nothing(pg):
    session = pg.open(uid("expired"))
    io = short_path(pg, session)
    start = await io.begin(session.session_id, "me", 30, None)
    assert start == TurnStart([], None, False)
    await raw(
        "UPDATE multisessions_leases SET expires = now() - interval '1 second' WHERE session_id = $1",
        session.session_id,
    )
    assert (
        await io.commit(session.session_id, "me", TurnWrite([{"role": "user", "content": "late"}])) is False
    )
    assert await session.get_items() == []
    await io.release(session.session_id, "me")


async def test_a_paused_session_refuses_a_new_turn_on_the_short_path(pg):
    session = pg.open(uid("paused"))
    await pg.save_pending(session.session_id, "{}")
    model = ScriptedModel([reply("never")])
    with pytest.raises(TurnFailed) as failure:
        await run_turn(Agent(name="Bot"), session, "hello", run_config=RunConfig(model=model))
    assert isinstance(failure.value.cause, AwaitingApproval)
    assert not model.calls
    assert await session.get_items() == []
    # The refused turn gave its lease back at once.
    assert await raw("SELECT 1 FROM multisessions_leases WHERE session_id = $1", session.session_id) == []
    await pg.save_pending(session.session_id, None)


async def test_a_history_cap_reads_only_the_newest_items_even_past_corrupt_rows(pg, monkeypatch):
    session_id = uid("cap")
    capped = remember_store(
        SQLAlchemySession(session_id, engine=pg.engine, session_settings=SessionSettings(limit=3)), pg
    )
    io = short_path(pg, capped)
    await capped.add_items([{"role": "user", "content": f"old {i}"} for i in range(8)])
    starts: list[TurnStart | None] = []
    begin = io.begin

    async def spy(*args: Any) -> TurnStart | None:
        starts.append(await begin(*args))
        return starts[-1]

    monkeypatch.setattr(io, "begin", spy)
    model = ScriptedModel([reply("a"), reply("b")])
    await run_turn(Agent(name="Bot"), capped, "new", run_config=RunConfig(model=model))
    assert starts[-1] is not None and starts[-1].limit == 3 and len(starts[-1].history) == 3
    assert user_texts(model.calls[0].input) == ["old 5", "old 6", "old 7", "new"]

    # A corrupt row among the newest: the SDK skips it and widens its window; so does the turn.
    await raw("INSERT INTO agent_messages (session_id, message_data) VALUES ($1, 'not json{')", session_id)
    expected = await capped.get_items(3)
    await run_turn(Agent(name="Bot"), capped, "again", run_config=RunConfig(model=model))
    assert model.calls[1].input[:-1] == expected
    assert user_texts(model.calls[1].input) == ["old 7", "new", "again"]


async def test_begin_sees_a_turn_that_committed_while_it_waited_for_the_lease(pg):
    # A turn commits in a transaction held open here; begin waits on its lease row meanwhile. When
    # the commit lands, begin must read the history as it is then, not as it was when it started.
    session = pg.open(uid("snapshot"))
    io = short_path(pg, session)
    assert await io.begin(session.session_id, "first", 30, None) is not None
    conn = await asyncpg.connect(host=HOST, port=PORT, user="postgres", database=database_name())
    try:
        tx = conn.transaction()
        await tx.start()
        item = json.dumps({"role": "user", "content": "committed meanwhile"}, separators=(",", ":"))
        assert await conn.fetchval(
            f"SELECT {COMMIT}($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
            [session.session_id],
            ["first"],
            [1],
            [item],
            ["Bot"],
            ["keep"],
            [None],
            [None],
            [None],
            [None],
            [None],
            [None],
        ) == [True]
        waiting = asyncio.create_task(io.begin(session.session_id, "second", 30, None))
        await asyncio.sleep(0.3)
        assert not waiting.done()  # blocked on the lease row the commit deleted
        await tx.commit()
        start = await asyncio.wait_for(waiting, 10)
    finally:
        await conn.close()
    assert start is not None
    assert start.history == [{"role": "user", "content": "committed meanwhile"}]
    await io.release(session.session_id, "second")


async def test_turns_from_two_stores_on_one_session_never_interleave(pg):
    # Two store objects stand for two processes: each has its own pool, so only the lease row
    # keeps their turns apart. Every turn must see every turn committed before it, whole.
    session_id = uid("two")
    other = await open_pg()
    seen: list[list[str]] = []

    def answer(call: Any) -> list[Any]:
        texts = user_texts(call.input)
        seen.append(texts)
        return reply("re: " + texts[-1])

    try:
        sessions = [pg.open(session_id), other.open(session_id)]
        model = ScriptedModel([ModelStep.respond(answer) for _ in range(16)])

        async def turn(i: int) -> None:
            await run_turn(Agent(name="Bot"), sessions[i % 2], f"m{i}", run_config=RunConfig(model=model))

        await asyncio.gather(*(turn(i) for i in range(16)))
        items = await sessions[0].get_items()
        assert len(items) == 32
        for question, answer_item in zip(items[::2], items[1::2], strict=True):
            assert answer_item["content"][0]["text"] == "re: " + question["content"]
        order = user_texts(items)
        assert sorted(order) == sorted(f"m{i}" for i in range(16))
        # The n-th turn saw exactly the n-1 turns before it, in the order they were stored.
        assert sorted(seen, key=len) == [order[: n + 1] for n in range(16)]
    finally:
        await other.close()


async def test_a_fresh_database_takes_many_first_turns_at_once(pg):
    # Each process made its tables on first use, from every pooled connection at once; PostgreSQL
    # then failed some with a unique violation in its catalog (the bench's errors at 1,000 users).
    name = f"multisessions_fresh_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(on_database("postgres"))
    await admin.execute(f"CREATE DATABASE {name}")
    stores = [SQLStore(on_database(name)) for _ in range(2)]
    try:
        model = ScriptedModel([reply(f"r{i}") for i in range(10)])
        results = await asyncio.gather(
            *(stores[0].leases.try_acquire(f"lease{i}", "me", 5) for i in range(10)),
            *(stores[0].load_pending(f"paused{i}") for i in range(10)),
            *(
                run_turn(
                    Agent(name="Bot"), stores[i % 2].open(f"user{i}"), "hi", run_config=RunConfig(model=model)
                )
                for i in range(10)
            ),
            return_exceptions=True,
        )
        assert [r for r in results if isinstance(r, BaseException)] == []
    finally:
        for store in stores:
            await store.close()
        await admin.execute(f"DROP DATABASE {name}")
        await admin.close()


async def test_sessions_a_sqlalchemy_store_opens_are_the_sdks_class_each_with_its_own_id_and_settings(
    tmp_path, monkeypatch
):
    # open() copies a template session instead of building its schema objects anew (sql_store.py).
    store = open_store(f"sqlite+aiosqlite:///{tmp_path / 'aio.db'}")
    try:
        first, second = store.open("user_a"), store.open("user_b")
        assert type(first) is SQLAlchemySession and type(second) is SQLAlchemySession
        assert (first.session_id, second.session_id) == ("user_a", "user_b")
        first.session_settings.limit = 1
        assert second.session_settings.limit is None
        await first.add_items([{"role": "user", "content": "a1"}, {"role": "user", "content": "a2"}])
        await second.add_items([{"role": "user", "content": "b"}])
        assert await first.get_items() == [{"role": "user", "content": "a2"}]  # its own limit
        assert await second.get_items() == [{"role": "user", "content": "b"}]
        assert {info.session_id: info.items for info in await store.list_sessions()} == {
            "user_a": 2,
            "user_b": 1,
        }
        # An SDK whose session keeps other fields: built by its constructor, as before.
        monkeypatch.setattr(sql_store, "sqlalchemy_session_fields", lambda: frozenset({"session_id"}))
        third = store.open("user_c")
        assert third.session_id == "user_c" and third._metadata is not first._metadata
    finally:
        await store.close()


async def test_a_turn_longer_than_its_lease_renews_it_and_commits(pg, monkeypatch):
    # The lease is shortened through the store's leases (as tools/stress.py does): the short path
    # shares its length, renews every third of it while the model runs, and commits whole.
    session = pg.open(uid("long"))
    io = short_path(pg, session)
    monkeypatch.setattr(pg.leases, "seconds", 0.3)
    assert io.seconds == 0.3
    renewals = 0
    renew = io.renew

    async def counted(*args: Any) -> bool:
        nonlocal renewals
        renewals += 1
        return await renew(*args)

    monkeypatch.setattr(io, "renew", counted)

    class Slow(ScriptedModel):
        async def get_response(self, *args: Any, **kwargs: Any) -> Any:
            await asyncio.sleep(0.8)
            return await super().get_response(*args, **kwargs)

    await run_turn(
        Agent(name="Bot"), session, "take your time", run_config=RunConfig(model=Slow([reply("done")]))
    )
    assert renewals >= 2
    assert user_texts(await session.get_items()) == ["take your time"]
    assert len(await session.get_items()) == 2


async def test_the_short_paths_lease_calls_take_renew_and_free_one_holder_at_a_time(pg):
    session = pg.open(uid("lease"))
    io = short_path(pg, session)
    assert await io.try_acquire(session.session_id, "a", 30)
    assert not await io.try_acquire(session.session_id, "b", 30)
    assert await io.renew(session.session_id, "a", 30)
    assert not await io.renew(session.session_id, "b", 30)
    await io.release(session.session_id, "b")  # not b's to free
    assert await io.begin(session.session_id, "b", 30, None) is None
    await io.release(session.session_id, "a")
    assert await io.try_acquire(session.session_id, "b", 30)
    await io.release(session.session_id, "b")


def _check_in_a_child(url: str, results: Any) -> None:
    async def check() -> str:
        store = SQLStore(url)
        try:
            await store.check()
            return "ok"
        except Exception as exc:
            return f"{type(exc).__name__}: {exc}"
        finally:
            await store.close()

    results.put(asyncio.run(check()))


async def test_processes_starting_together_on_a_fresh_database_all_start(pg):
    # As `uvicorn --workers 4` on a new database: each worker's check() makes the tables, the SDK's
    # included; without one lock across processes 2 of 5 such rounds failed a worker.
    import multiprocessing

    name = f"multisessions_fresh_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(on_database("postgres"))
    await admin.execute(f"CREATE DATABASE {name}")
    try:
        context = multiprocessing.get_context("fork")
        results = context.Queue()
        children = [
            context.Process(target=_check_in_a_child, args=(on_database(name), results)) for _ in range(4)
        ]
        for child in children:
            child.start()
        outcomes = [await asyncio.to_thread(results.get, True, 60) for _ in children]
        for child in children:
            child.join()
        assert outcomes == ["ok"] * 4
    finally:
        await admin.execute(f"DROP DATABASE {name}")
        await admin.close()


async def test_turns_at_once_share_round_trips_and_each_session_keeps_only_its_own(pg, monkeypatch):
    # Turns started together go to the server in batches of at most one per pooled connection
    # (stores/batches.py): fewer calls than two per turn, and still each session holds exactly
    # its own turn, whole.
    sessions = [pg.open(uid(f"batch{i}")) for i in range(20)]
    io = short_path(pg, sessions[0])
    sent: list[int] = []
    for name in ("_begin_many", "_commit_many"):
        send = getattr(io, name)

        async def counted(turns: list[Any], send: Any = send) -> Any:
            sent.append(len(turns))
            return await send(turns)

        monkeypatch.setattr(io, name, counted)
    io._begins._send, io._commits._send = io._begin_many, io._commit_many
    model = ScriptedModel([ModelStep.respond(lambda call: reply("re: " + user_texts(call.input)[-1]))] * 20)
    await asyncio.gather(
        *(
            run_turn(Agent(name="Bot"), session, f"m{i}", run_config=RunConfig(model=model))
            for i, session in enumerate(sessions)
        )
    )
    assert sum(sent) == 40 and len(sent) < 20 and max(sent) <= POOL_SIZE
    for i, session in enumerate(sessions):
        items = await session.get_items()
        assert [items[0]["content"], items[1]["content"][0]["text"]] == [f"m{i}", f"re: m{i}"]
        assert len(items) == 2


async def test_a_turn_the_server_refuses_fails_alone_and_the_turns_batched_with_it_are_saved(pg):
    # A session id PostgreSQL cannot store (a NUL character) fails the batch it went in; each of
    # its turns is then sent alone, so only that one fails.
    bad = "user_\x00nul"
    sessions = [pg.open(uid(f"fine{i}")) for i in range(3)] + [pg.open(bad)]
    model = ScriptedModel([reply("ok")] * 4)
    results = await asyncio.gather(
        *(run_turn(Agent(name="Bot"), s, "hello", run_config=RunConfig(model=model)) for s in sessions),
        return_exceptions=True,
    )
    assert [isinstance(r, Exception) for r in results] == [False, False, False, True]
    failed = results[3]
    assert isinstance(failed, TurnFailed) and isinstance(failed.cause, StoreError)
    assert "0x00" in str(failed.cause)  # it failed while starting the turn: nothing of it was stored
    for session in sessions[:3]:
        assert len(await session.get_items()) == 2


async def test_two_processes_batching_the_same_sessions_in_opposite_orders_never_deadlock(pg):
    # Each batch takes its sessions' rows in the order of their ids, so two stores (two processes)
    # turning the same sessions at once only wait for each other's leases.
    other = await open_pg()
    try:
        ids = [uid(f"order{i}") for i in range(12)]
        stores = [pg, other]
        model = ScriptedModel([reply("ok")] * 48)

        async def turn(store: SQLStore, session_id: str) -> None:
            await run_turn(Agent(name="Bot"), store.open(session_id), "hi", run_config=RunConfig(model=model))

        await asyncio.gather(
            *(turn(stores[0], s) for s in ids),
            *(turn(stores[1], s) for s in reversed(ids)),
            *(turn(stores[0], s) for s in reversed(ids)),
            *(turn(stores[1], s) for s in ids),
        )
        for session_id in ids:
            assert len(await pg.open(session_id).get_items()) == 8
    finally:
        await other.close()


async def test_a_lease_taken_for_a_turn_cancelled_while_its_start_was_in_flight_is_freed(pg):
    # The start went out in a batch; its caller was cancelled before the reply came back. The
    # lease the server gave it is given back at once, not left to run out (15 s).
    session = pg.open(uid("cancel"))
    io = short_path(pg, session)
    await io.release(session.session_id, "warm-up")  # the pool and functions exist
    await cancel_a_start_in_flight(io, session.session_id, io._begins)
    assert await raw("SELECT owner FROM multisessions_leases WHERE session_id = $1", session.session_id) == []
    assert await io.begin(session.session_id, "next", 30, None) is not None  # free at once
    await io.release(session.session_id, "next")
