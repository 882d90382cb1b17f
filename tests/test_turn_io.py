"""Redis's short turn path (redis_turns.py): two round trips a turn, writing what the SDK writes."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import pytest
from agents import Agent, RunConfig, Runner
from agents.extensions.memory import RedisSession
from agents.memory import SessionSettings
from agents.testing import ModelStep, ScriptedModel, assistant_message
from redis.asyncio.connection import Connection
from redis.exceptions import ResponseError

from conftest import needs_sdk_private
from helpers import cancel_a_start_in_flight, reply, user_texts
from multisessions import OfflineModel, StoreError, TurnFailed, read_all, run_turn, stream_turn
from multisessions.errors import AwaitingApproval, LeaseLost
from multisessions.stores import EncryptedStore, RedisStore, TurnWrite
from multisessions.turns import why_it_failed
from stores_fixture import REDIS_URL, make_store, unavailable

# The short path is taken only for the SDK's own session objects, told by their private fields;
# without them (--hide-sdk-private) turns go through the session, as tests/test_sdk_private.py shows.
pytestmark = needs_sdk_private()


@pytest.fixture
async def redis_store(tmp_path):
    """A ``RedisStore`` (db 15) with a prefix of its own; every key under it is removed after."""
    prefix = f"turnio-{uuid.uuid4().hex[:8]}"
    store: RedisStore = await make_store("redis", tmp_path, prefix)
    yield store
    async for key in store.client.scan_iter(match=f"{prefix}*", count=500):
        await store.client.delete(key)
    await store.close()


async def redis_at(url: str) -> RedisStore:
    """A ``RedisStore`` for ``url``; skipped (failed in CI) without the server, as the fixture does."""
    store = RedisStore(url)
    try:
        await store.check()
    except StoreError as exc:
        unavailable("redis", str(exc))
    return store


class Wire:
    """What the process's Redis connections send from now on: each command's name, and how many
    writes (a write is one round trip: a command, or a pipeline of them)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.commands: list[str] = []
        self.writes = 0
        pack, send = Connection.pack_command, Connection.send_packed_command

        def packing(connection: Connection, *args: Any) -> Any:
            self.commands.append(str(args[0]))
            return pack(connection, *args)

        async def sending(connection: Connection, command: Any, check_health: bool = True) -> None:
            self.writes += 1
            await send(connection, command, check_health)

        monkeypatch.setattr(Connection, "pack_command", packing)
        monkeypatch.setattr(Connection, "send_packed_command", sending)


async def raw(store: RedisStore, session_id: str) -> tuple[list[bytes], dict[bytes, bytes], set[bytes]]:
    """A session's stored bytes: its list, its hash, and which of the SDK's keys exist."""
    key = f"{store.key_prefix}:{session_id}"
    names = [key.encode(), f"{key}:messages".encode(), f"{key}:counter".encode()]
    present = {name for name in names if await store.client.exists(name)}
    return await store.client.lrange(f"{key}:messages", 0, -1), await store.client.hgetall(key), present


def scripted(*texts: str) -> ScriptedModel:
    """A model answering ``texts`` in order, with fixed item ids (so two runs store equal bytes)."""
    return ScriptedModel([[assistant_message(t, item_id=f"msg-{i}")] for i, t in enumerate(texts)])


async def test_a_turn_stores_byte_for_byte_what_the_sdk_itself_would(redis_store):
    ours, theirs = f"user_a-{uuid.uuid4().hex[:6]}", f"user_b-{uuid.uuid4().hex[:6]}"
    session = redis_store.open(ours)
    assert redis_store.turn_io(session) is not None
    plain = RedisSession(theirs, redis_client=redis_store.client, key_prefix=redis_store.key_prefix)
    ours_model, theirs_model = scripted("Hello Ann", "Ann"), scripted("Hello Ann", "Ann")
    for text in ("My name is Ann.", "What's my name?"):
        await run_turn(Agent(name="Bot"), session, text, run_config=RunConfig(model=ours_model))
        await Runner.run(Agent(name="Bot"), text, session=plain, run_config=RunConfig(model=theirs_model))
    assert user_texts(ours_model.calls[1].input) == ["My name is Ann.", "What's my name?"]
    our_list, our_hash, our_keys = await raw(redis_store, ours)
    their_list, their_hash, their_keys = await raw(redis_store, theirs)
    assert our_list == their_list and len(our_list) == 4
    assert set(our_hash) == set(their_hash) == {b"session_id", b"created_at", b"updated_at"}
    assert our_hash[b"session_id"] == ours.encode()
    assert our_keys == {k.replace(theirs.encode(), ours.encode()) for k in their_keys}
    fresh = RedisSession(ours, redis_client=redis_store.client, key_prefix=redis_store.key_prefix)
    assert await fresh.get_items() == await plain.get_items()
    assert not await redis_store.client.exists(f"{redis_store.key_prefix}/lease/{ours}")
    listed = {row.session_id: row.items for row in await redis_store.list_sessions()}
    assert listed[ours] == 4


async def test_a_turn_takes_two_round_trips(redis_store, monkeypatch):
    session = redis_store.open(f"user_rt-{uuid.uuid4().hex[:6]}")
    config = RunConfig(model=OfflineModel())
    await run_turn(Agent(name="Bot"), session, "My name is Ann.", run_config=config)  # scripts loaded
    wire = Wire(monkeypatch)
    result = await run_turn(Agent(name="Bot"), session, "What's my name?", run_config=config)
    assert "Ann" in str(result.final_output)
    assert wire.commands == ["EVALSHA", "EVALSHA"] and wire.writes == 2


async def test_concurrent_turns_share_their_round_trips(redis_store, monkeypatch):
    sessions = [redis_store.open(f"user_many{i}-{uuid.uuid4().hex[:6]}") for i in range(20)]
    config = RunConfig(model=OfflineModel())
    wire = Wire(monkeypatch)
    await asyncio.gather(
        *(run_turn(Agent(name="Bot"), s, "My name is Ann.", run_config=config) for s in sessions)
    )
    assert wire.commands.count("EVALSHA") == 40 and wire.writes < 40  # batched into pipelines
    for session in sessions:
        assert len(await read_all(session)) == 2


async def test_a_long_turn_adds_only_its_renewals(redis_store, monkeypatch):
    session = redis_store.open(f"user_slow-{uuid.uuid4().hex[:6]}")
    await run_turn(Agent(name="Bot"), session, "hi", run_config=RunConfig(model=OfflineModel()))
    redis_store.turn_io(session).seconds = 0.3  # renewed every 0.1 s

    async def slowly(call: Any) -> list[Any]:
        await asyncio.sleep(0.35)
        return reply("done")

    wire = Wire(monkeypatch)
    await run_turn(
        Agent(name="Bot"),
        session,
        "go",
        run_config=RunConfig(model=ScriptedModel([ModelStep.respond(slowly)])),
    )
    sent = wire.commands
    assert sent[0] == sent[-1] == "EVALSHA" and len(sent) >= 3 and wire.writes == len(sent)
    assert set(sent[1:-1]) == {"EVAL"}  # the owner-checked renewals, nothing else


async def test_a_commit_after_the_lease_was_stolen_writes_nothing(redis_store):
    session_id = f"user_stolen-{uuid.uuid4().hex[:6]}"
    session = redis_store.open(session_id)
    await run_turn(Agent(name="Bot"), session, "first", run_config=RunConfig(model=OfflineModel()))
    before = await raw(redis_store, session_id)
    lease_key = f"{redis_store.key_prefix}/lease/{session_id}"

    async def steal(call: Any) -> list[Any]:
        # As if this process stalled past its lease and another turn took the session.
        await redis_store.client.set(lease_key, "another-owner", px=60_000)
        return reply("too late")

    with pytest.raises(TurnFailed) as failed:
        await run_turn(
            Agent(name="Bot"),
            session,
            "second",
            run_config=RunConfig(model=ScriptedModel([ModelStep.respond(steal)])),
        )
    assert isinstance(failed.value.cause, LeaseLost)
    line = why_it_failed(failed.value)
    assert "\n" not in line and "nothing was saved" in line
    assert await raw(redis_store, session_id) == before
    assert await redis_store.client.get(lease_key) == b"another-owner"  # the other turn keeps it


async def test_a_paused_session_refuses_a_turn_in_one_round_trip_and_frees_its_lease(
    redis_store, monkeypatch
):
    session_id = f"thread_paused-{uuid.uuid4().hex[:6]}"
    session = redis_store.open(session_id)
    await run_turn(Agent(name="Bot"), session, "first", run_config=RunConfig(model=OfflineModel()))
    before = await raw(redis_store, session_id)
    await redis_store.save_pending(session_id, "a paused turn")
    model = OfflineModel()
    wire = Wire(monkeypatch)
    with pytest.raises(TurnFailed) as refused:
        await run_turn(Agent(name="Bot"), session, "Hello?", run_config=RunConfig(model=model))
    assert isinstance(refused.value.cause, AwaitingApproval)
    assert wire.commands == ["EVALSHA", "EVAL"]  # begin (which saw the paused turn), then release
    with pytest.raises(TurnFailed):
        async with stream_turn(
            Agent(name="Bot"), session, "Hello?", run_config=RunConfig(model=model)
        ) as result:
            async for _ in result.stream_events():
                pass
    assert await raw(redis_store, session_id) == before
    assert not await redis_store.client.exists(f"{redis_store.key_prefix}/lease/{session_id}")


async def test_a_history_cap_reads_only_the_newest_items(redis_store):
    session_id = f"user_cap-{uuid.uuid4().hex[:6]}"
    session = redis_store.open(session_id)
    await session.add_items([{"role": "user", "content": f"m{i}"} for i in range(10)])
    io = redis_store.turn_io(session)
    start = await io.begin(session_id, "me", 5, 3)
    assert (
        start is not None and start.limit == 3 and [i["content"] for i in start.history] == ["m7", "m8", "m9"]
    )
    await io.release(session_id, "me")
    session.session_settings = SessionSettings(limit=3)
    model, sdk_model = scripted("ok"), scripted("ok")
    await run_turn(Agent(name="Bot"), session, "m10", run_config=RunConfig(model=model))
    plain = RedisSession(
        f"{session_id}-sdk",
        redis_client=redis_store.client,
        key_prefix=redis_store.key_prefix,
        session_settings=SessionSettings(limit=3),
    )
    await plain.add_items([{"role": "user", "content": f"m{i}"} for i in range(10)])
    await Runner.run(Agent(name="Bot"), "m10", session=plain, run_config=RunConfig(model=sdk_model))
    assert (
        user_texts(model.calls[0].input) == user_texts(sdk_model.calls[0].input) == ["m7", "m8", "m9", "m10"]
    )


async def test_corrupt_entries_among_the_newest_read_as_the_sdk_reads_them(redis_store):
    session_id = f"user_corrupt-{uuid.uuid4().hex[:6]}"
    session = redis_store.open(session_id)
    good = [json.dumps({"role": "user", "content": f"m{i}"}) for i in range(6)]
    stored = [*good[:4], "3:{not json\n", b"\xff\xfe:", good[4], good[5]]
    await redis_store.client.rpush(f"{redis_store.key_prefix}:{session_id}:messages", *stored)
    io = redis_store.turn_io(session)
    start = await io.begin(session_id, "me", 5, 4)
    assert start is not None and [i["content"] for i in start.history] == ["m4", "m5"]
    assert start.limit == 2  # two of the four read were corrupt: a longer read goes to the SDK
    await io.release(session_id, "me")
    expected = await RedisSession(
        session_id, redis_client=redis_store.client, key_prefix=redis_store.key_prefix
    ).get_items(4)
    session.session_settings = SessionSettings(limit=4)
    model = scripted("ok")
    await run_turn(Agent(name="Bot"), session, "new", run_config=RunConfig(model=model))
    assert user_texts(model.calls[0].input) == [i["content"] for i in expected] + ["new"]


async def test_limits_of_zero_or_past_the_list_are_served_like_the_sdk(redis_store):
    session_id = f"user_lim-{uuid.uuid4().hex[:6]}"
    session = redis_store.open(session_id)
    await session.add_items([{"role": "user", "content": "only"}])
    io = redis_store.turn_io(session)
    for limit, history, kept in ((0, [], 0), (5, [{"role": "user", "content": "only"}], None)):
        start = await io.begin(session_id, "me", 5, limit)
        assert start is not None and (start.history, start.limit) == (history, kept)
        assert await io.begin(session_id, "someone else", 5, limit) is None  # the lease is held
        await io.release(session_id, "me")
    assert await session.get_items(0) == []


async def test_ttl_keys_get_the_expiry_the_sdk_gives_them(tmp_path):
    prefix = f"turnio-ttl-{uuid.uuid4().hex[:8]}"
    store = await redis_at(f"{REDIS_URL}?key_prefix={prefix}&ttl=600")
    try:
        ours, theirs = f"user_t-{uuid.uuid4().hex[:6]}", f"user_u-{uuid.uuid4().hex[:6]}"
        session = store.open(ours)
        assert store.turn_io(session) is not None
        await store.client.set(f"{prefix}:{ours}:counter", "7")  # an SDK counter also expires
        await run_turn(Agent(name="Bot"), session, "hi", run_config=RunConfig(model=scripted("hello")))
        plain = RedisSession(theirs, redis_client=store.client, key_prefix=prefix, ttl=600)
        await Runner.run(
            Agent(name="Bot"), "hi", session=plain, run_config=RunConfig(model=scripted("hello"))
        )
        for suffix in ("", ":messages", ":counter"):
            assert 595_000 < await store.client.pttl(f"{prefix}:{ours}{suffix}") <= 600_000
        assert (await raw(store, ours))[0] == (await raw(store, theirs))[0]
        stamps = await store.client.hgetall(f"{prefix}:{ours}")
        assert stamps[b"created_at"] == stamps[b"updated_at"]
    finally:
        async for key in store.client.scan_iter(match=f"{prefix}*", count=500):
            await store.client.delete(key)
        await store.close()


async def test_a_big_turn_is_stored_whole(redis_store):
    ours, theirs = f"user_big-{uuid.uuid4().hex[:6]}", f"user_big2-{uuid.uuid4().hex[:6]}"
    items = [{"role": "user", "content": f"é{i}"} for i in range(2500)]  # past one RPUSH's 1,000
    io = redis_store.turn_io(redis_store.open(ours))
    assert await io.try_acquire(ours, "me", 5)
    assert await io.commit(ours, "me", TurnWrite(items))
    await RedisSession(theirs, redis_client=redis_store.client, key_prefix=redis_store.key_prefix).add_items(
        items
    )
    assert (await raw(redis_store, ours))[0] == (await raw(redis_store, theirs))[0]


async def test_a_commit_resent_after_its_reply_was_lost_counts_once(redis_store):
    session_id = f"user_resent-{uuid.uuid4().hex[:6]}"
    io = redis_store.turn_io(redis_store.open(session_id))
    assert await io.begin(session_id, "me", 5, None) is not None
    assert await io.begin(session_id, "me", 5, None) is not None  # a resent begin: the same owner
    items = [{"role": "user", "content": "once"}]
    assert await io.commit(session_id, "me", TurnWrite(items))
    assert await io.commit(session_id, "me", TurnWrite(items))  # as redis-py resends it: saved, not lost
    assert not await io.commit(session_id, "another-owner", TurnWrite(items))
    assert len((await raw(redis_store, session_id))[0]) == 1


async def test_deleting_a_session_leaves_no_key_of_it(redis_store):
    session_id = f"user_gone-{uuid.uuid4().hex[:6]}"
    await run_turn(
        Agent(name="Bot"), redis_store.open(session_id), "hi", run_config=RunConfig(model=OfflineModel())
    )
    await redis_store.save_last_agent(session_id, "Bot")
    assert await redis_store.delete(session_id) == 2
    assert [key async for key in redis_store.client.scan_iter(match=f"*{session_id}*", count=500)] == []


async def test_a_key_of_the_wrong_type_fails_the_turn_as_the_sdk_does_and_writes_nothing(redis_store):
    session_id = f"user_wrong-{uuid.uuid4().hex[:6]}"
    key = f"{redis_store.key_prefix}:{session_id}"
    await redis_store.client.set(key, "not a hash")
    plain = RedisSession(session_id, redis_client=redis_store.client, key_prefix=redis_store.key_prefix)
    with pytest.raises(ResponseError) as sdk:
        await plain.add_items([{"role": "user", "content": "x"}])
    with pytest.raises(TurnFailed) as failed:
        await run_turn(
            Agent(name="Bot"), redis_store.open(session_id), "hi", run_config=RunConfig(model=OfflineModel())
        )
    assert type(failed.value.cause) is ResponseError and str(failed.value.cause) == str(sdk.value)
    assert not await redis_store.client.exists(f"{key}:messages")
    assert not await redis_store.client.exists(f"{redis_store.key_prefix}/lease/{session_id}")

    await redis_store.client.delete(key)
    await redis_store.client.set(f"{key}:messages", "not a list")
    with pytest.raises(TurnFailed) as unreadable:  # begin leaves the read to the SDK, which fails
        await run_turn(
            Agent(name="Bot"), redis_store.open(session_id), "hi", run_config=RunConfig(model=OfflineModel())
        )
    assert "WRONGTYPE" in str(unreadable.value.cause)
    assert not await redis_store.client.exists(f"{redis_store.key_prefix}/lease/{session_id}")


async def test_only_sessions_the_store_would_open_itself_take_the_short_path(redis_store, tmp_path):
    class Mine(RedisSession):
        pass

    client, prefix = redis_store.client, redis_store.key_prefix
    other = await make_store("redis", tmp_path, prefix)
    try:
        assert redis_store.turn_io(redis_store.open("user_x")) is not None
        for session in (
            Mine("user_x", redis_client=client, key_prefix=prefix),
            RedisSession("user_x", redis_client=other.client, key_prefix=prefix),
            RedisSession("user_x", redis_client=client, key_prefix=f"{prefix}-2"),
            RedisSession("user_x", redis_client=client, key_prefix=prefix, ttl=60),
            RedisSession("user_x:messages", redis_client=client, key_prefix=prefix),
            EncryptedStore(redis_store, "k" * 40 + "-test").open("user_x"),
        ):
            assert redis_store.turn_io(session) is None, session
        assert redis_store.turn_io(RedisSession("user_x", redis_client=client, key_prefix=prefix)) is not None
    finally:
        await other.close()


async def test_a_script_the_server_lost_is_loaded_again(redis_store):
    session_id = f"user_noscript-{uuid.uuid4().hex[:6]}"
    io = redis_store.turn_io(redis_store.open(session_id))
    real = io._begin.sha
    io._begin.sha = "0" * 40  # as after a restart or SCRIPT FLUSH: the server knows no such script
    start = await io.begin(session_id, "me", 5, None)
    assert start is not None and start.history == [] and io._begin.sha == real
    assert await io.commit(session_id, "me", TurnWrite([{"role": "user", "content": "hi"}]))


async def test_a_call_cancelled_before_its_batch_leaves_is_not_sent(redis_store, monkeypatch):
    session_id = f"user_cancel-{uuid.uuid4().hex[:6]}"
    io = redis_store.turn_io(redis_store.open(session_id))
    wire = Wire(monkeypatch)
    begin = asyncio.create_task(io.begin(session_id, "me", 5, None))
    await asyncio.sleep(0)  # the call is queued; its batch leaves after this pass of the loop
    begin.cancel()
    await asyncio.gather(begin, return_exceptions=True)
    await asyncio.sleep(0.01)
    assert wire.writes == 0
    assert not await redis_store.client.exists(f"{redis_store.key_prefix}/lease/{session_id}")


async def test_a_client_that_decodes_replies_keeps_the_sdks_path(tmp_path):
    prefix = f"turnio-dec-{uuid.uuid4().hex[:8]}"
    store = await redis_at(f"{REDIS_URL}?key_prefix={prefix}&decode_responses=true")
    try:
        session = store.open("user_d")
        assert store.turn_io(session) is None
        await run_turn(Agent(name="Bot"), session, "hi", run_config=RunConfig(model=OfflineModel()))
        assert len(await read_all(session)) == 2
    finally:
        await store.delete("user_d")
        await store.close()


async def test_a_lease_taken_for_a_turn_cancelled_while_its_start_was_in_flight_is_freed(redis_store):
    # The start went out in a batch; its caller was cancelled before the reply came back. The
    # lease the server gave it is given back at once, not left to run out (15 s).
    session = redis_store.open(f"user_cancel-{uuid.uuid4().hex[:8]}")
    io = redis_store.turn_io(session)
    await cancel_a_start_in_flight(io, session.session_id, io._calls)
    assert await redis_store.client.exists(io._key(session.session_id)) == 0
    assert await io.begin(session.session_id, "next", 30, None) is not None  # free at once
    await io.release(session.session_id, "next")


async def test_a_session_id_redis_cannot_encode_fails_alone_in_its_batch(redis_store):
    # A lone surrogate cannot be encoded: the pipeline fails before anything is sent, and each of
    # its calls is then sent alone, so the turns batched with it are saved.
    good = [redis_store.open(f"user_good{i}-{uuid.uuid4().hex[:8]}") for i in range(3)]
    bad = redis_store.open("user_bad\ud800")
    model = ScriptedModel([reply("ok")] * 4)
    results = await asyncio.gather(
        *(run_turn(Agent(name="Bot"), s, "hi", run_config=RunConfig(model=model)) for s in [*good, bad]),
        return_exceptions=True,
    )
    assert [isinstance(r, TurnFailed) for r in results] == [False, False, False, True]
    for session in good:
        assert len(await read_all(session)) == 2
