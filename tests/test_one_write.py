"""Everything a turn changes is one write: its items, the agent that answered and the paused turn.

A turn resumes the agent that answered last by itself, and a decision on a paused turn is taken
exactly once: a refund approved once is paid once, whatever fails or crashes on the way.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import uuid

import pytest
from agents import RunConfig
from agents.items import HandoffOutputItem

import agent
from conftest import needs_sdk_private
from multisessions import Ledger, OfflineModel, TurnFailed, pending_approvals, read_all, resume_turn, run_turn
from multisessions.effects import Ledger as LedgerClass
from stores_fixture import make_store

# The store writing a turn in one write relies on the SDK session classes' private fields (or,
# encrypted, its sealing); without them turns take the session path (docs/guarantees.md).
ONE_WRITE = needs_sdk_private()

CONFIG = RunConfig(model=OfflineModel())
ASK = "I was charged twice for order 5512, please refund it."


def triage_agent(*, refunds: bool = False):
    return agent.support_agents(refunds=refunds)["Triage Agent"]


def handoffs(result) -> list[str]:
    return [item.target_agent.name for item in result.new_items if isinstance(item, HandoffOutputItem)]


@ONE_WRITE
async def test_a_failed_commit_leaves_nothing_and_the_next_turn_goes_to_the_agent_that_answered(
    store, monkeypatch
):
    triage = triage_agent()
    session = store.open(f"thread_{uuid.uuid4().hex[:8]}")
    await run_turn(triage, session, "Hi, my name is Dana.", run_config=CONFIG)
    before = await read_all(session)
    io = store.turn_io(session)
    assert io is not None  # every store kind writes its own sessions in one step

    async def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(type(io), "commit", disk_full)
    with pytest.raises(TurnFailed) as failed:
        await run_turn(triage, session, ASK, run_config=CONFIG)  # the model answers, then the write fails
    assert failed.value.saved is False and "the session is unchanged" in str(failed.value)
    monkeypatch.undo()
    assert await read_all(session) == before
    assert await store.load_last_agent(session.session_id) == "Triage Agent"

    moved = await run_turn(triage, session, ASK, run_config=CONFIG)
    assert handoffs(moved) == ["Billing Agent"]
    assert await store.load_last_agent(session.session_id) == "Billing Agent"
    follow_up = await run_turn(triage, session, "What is my order number?", run_config=CONFIG)
    assert follow_up.last_agent.name == "Billing Agent" and handoffs(follow_up) == []
    assert "5512" in follow_up.final_output


@ONE_WRITE
async def test_a_commit_whose_reply_is_lost_says_the_turn_may_be_saved(store, monkeypatch):
    if store.kind not in ("redis", "postgres"):
        pytest.skip("only a server store can lose its connection after writing")
    session = store.open(f"thread_{uuid.uuid4().hex[:8]}")
    io = store.turn_io(session)
    real = type(io).commit
    if store.kind == "redis":
        from redis.exceptions import ConnectionError as Lost
    else:
        from asyncpg.exceptions import ConnectionDoesNotExistError as Lost

    async def written_then_lost(self, *args, **kwargs):
        await real(self, *args, **kwargs)
        raise Lost("connection was closed in the middle of operation")

    monkeypatch.setattr(type(io), "commit", written_then_lost)
    with pytest.raises(TurnFailed) as failed:
        await run_turn(triage_agent(), session, "Hi, my name is Dana.", run_config=CONFIG)
    assert failed.value.saved is None
    assert "may be saved" in str(failed.value) and "unchanged" not in str(failed.value)
    monkeypatch.undo()
    assert len(await read_all(session)) == 2  # it was: the line did not claim otherwise


async def test_two_messages_at_once_the_second_runs_on_the_agent_the_first_handed_off_to(store):
    triage = triage_agent()
    session_id = f"thread_{uuid.uuid4().hex[:8]}"
    first, second = await asyncio.gather(
        run_turn(triage, store.open(session_id), ASK, run_config=CONFIG),
        run_turn(triage, store.open(session_id), "What is my order number?", run_config=CONFIG),
    )
    assert handoffs(first) == ["Billing Agent"]
    assert second.last_agent.name == "Billing Agent" and handoffs(second) == []
    assert await store.load_last_agent(session_id) == "Billing Agent"


async def test_a_stored_agent_no_longer_in_the_graph_falls_back_to_the_starting_agent(store, caplog):
    triage = triage_agent()
    session = store.open(f"thread_{uuid.uuid4().hex[:8]}")
    await run_turn(triage, session, ASK, run_config=CONFIG)  # hands off to billing
    lone = agent.Agent(name="Triage Agent", instructions="Greet the customer.")  # billing is gone
    with caplog.at_level(logging.WARNING, logger="multisessions.turns"):
        result = await run_turn(lone, session, "Hello again.", run_config=CONFIG)
    assert result.last_agent is lone
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert (
        len(warnings) == 1
        and "'Billing Agent'" in warnings[0]
        and "starts with 'Triage Agent'" in warnings[0]
    )
    assert await store.load_last_agent(session.session_id) == "Triage Agent"


async def test_a_pause_keeps_the_agent_that_paused_and_the_resume_consumes_it_in_the_same_write(store):
    triage = triage_agent(refunds=True)
    session = store.open(f"thread_{uuid.uuid4().hex[:8]}")
    await run_turn(triage, session, "Hi, my order number is 5512.", run_config=CONFIG)
    paused = await run_turn(triage, session, ASK, run_config=CONFIG)
    assert [c.name for c in paused.interruptions] == ["refund_order"]
    assert await store.load_last_agent(session.session_id) == "Billing Agent"
    ledger = Ledger(store, session.session_id)
    await resume_turn(triage, session, approve=True, run_config=CONFIG, context=ledger)
    assert await pending_approvals(store.store, session.session_id) == []
    with pytest.raises(TurnFailed, match="no turn is waiting"):  # a second decision finds nothing
        await resume_turn(triage, session, approve=True, run_config=CONFIG, context=ledger)
    assert list((await ledger.entries("refund")).values()) == ["5512"]


# --- The crash matrix: a resume killed or failing at each of its writes -------------------------

FAULTS = [
    ("kill", "after the ledger"),  # the refund is recorded, the turn is not committed
    ("kill", "before the commit"),
    ("kill", "after the commit"),
    ("fail", "the ledger"),  # the store refuses the ledger write
    ("fail", "the commit"),  # the store refuses the turn's write
]
KINDS = ["sqlite", "redis", "postgres"]


def _approve_with_a_fault(kind: str, tmp_path, prefix: str, session_id: str, fault: tuple[str, str]) -> None:
    """In a forked child: approve the paused refund, dying (SIGKILL) or failing at ``fault``."""
    how, where = fault

    async def approve() -> None:
        store = await make_store(kind, tmp_path, prefix)
        store.leases.seconds = 0.5  # a dead holder frees the session quickly for the retry
        session = store.open(session_id)
        io = store.turn_io(session)
        real_once, real_commit = LedgerClass.once, type(io).commit

        async def once(self, *args, **kwargs):
            if (how, where) == ("fail", "the ledger"):
                raise OSError(28, "No space left on device")
            done = await real_once(self, *args, **kwargs)
            if where == "after the ledger":
                os.kill(os.getpid(), signal.SIGKILL)
            return done

        async def commit(self, *args, **kwargs):
            if where == "before the commit":
                os.kill(os.getpid(), signal.SIGKILL)
            if (how, where) == ("fail", "the commit"):
                raise OSError(28, "No space left on device")
            done = await real_commit(self, *args, **kwargs)
            if where == "after the commit":
                os.kill(os.getpid(), signal.SIGKILL)
            return done

        LedgerClass.once, type(io).commit = once, commit  # type: ignore[method-assign]
        try:
            await resume_turn(
                triage_agent(refunds=True),
                session,
                approve=True,
                run_config=CONFIG,
                context=Ledger(store, session_id),
            )
        except TurnFailed as failed:
            assert failed.saved is False and "the session is unchanged" in str(failed)
        finally:
            await store.close()

    try:
        asyncio.run(approve())
        os._exit(0)
    except BaseException:
        os._exit(3)


@ONE_WRITE
@pytest.mark.slow  # forks a process per case and kills it: python -m pytest -m slow
@pytest.mark.parametrize("fault", FAULTS, ids=[f"{h} {w}" for h, w in FAULTS])
@pytest.mark.parametrize("kind", KINDS)
def test_a_refund_approved_once_is_paid_once_whatever_fails(kind, fault, tmp_path):
    prefix = f"test-{uuid.uuid4().hex[:8]}"
    session_id = f"thread_refund_{uuid.uuid4().hex[:8]}"
    triage = triage_agent(refunds=True)

    async def pause() -> None:
        store = await make_store(kind, tmp_path, prefix)
        try:
            await run_turn(triage, store.open(session_id), "Hi, my order number is 5512.", run_config=CONFIG)
            await run_turn(triage, store.open(session_id), ASK, run_config=CONFIG)
            assert len(await pending_approvals(store, session_id)) == 1
        finally:
            await store.close()

    asyncio.run(pause())
    child = os.fork()
    if child == 0:
        _approve_with_a_fault(kind, tmp_path, prefix, session_id, fault)
    _, status = os.waitpid(child, 0)
    killed = os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
    assert killed if fault[0] == "kill" else os.WEXITSTATUS(status) == 0

    async def retry_until_nothing_waits() -> tuple[list, dict[str, str], int]:
        store = await make_store(kind, tmp_path, prefix)
        try:
            ledger = Ledger(store, session_id)
            retries = 0
            while await pending_approvals(store, session_id):
                retries += 1
                assert retries <= 2
                await resume_turn(
                    triage, store.open(session_id), approve=True, run_config=CONFIG, context=ledger
                )
            items = await read_all(store.open(session_id))
            refunds = await ledger.entries("refund")
            await store.delete(session_id)
            await ledger.clear("refund")
            return items, refunds, retries
        finally:
            await store.close()

    items, refunds, retries = asyncio.run(retry_until_nothing_waits())
    assert list(refunds.values()) == ["5512"]  # one refund in the ledger
    outputs = [i for i in items if i.get("type") == "function_call_output" and "refund issued" in str(i)]
    assert len(outputs) == 1  # and one in the history
    assert retries == (0 if fault == ("kill", "after the commit") else 1)


@ONE_WRITE
async def test_an_encrypted_session_writes_its_turn_agent_and_paused_turn_in_one_sealed_write(store):
    from multisessions.stores import EncryptedStore

    secure = EncryptedStore(store.store, "s" * 40)
    triage = triage_agent(refunds=True)
    session_id = f"thread_{uuid.uuid4().hex[:8]}"
    session = secure.open(session_id)
    store.opened.add(session_id)
    assert secure.turn_io(session) is not None  # the wrapped store's one write, sealed
    await run_turn(triage, session, "Hi, my order number is 5512.", run_config=CONFIG)
    await run_turn(triage, session, ASK, run_config=CONFIG)
    raw_record = await store.store.load_pending(session_id)
    # Text with a space or a quote cannot hide in a Fernet token's base64 by chance, as digits can.
    assert raw_record is not None and "order number is" not in raw_record  # the paused turn is sealed
    assert "order number is" not in repr(await read_all(store.store.open(session_id)))
    assert await secure.load_last_agent(session_id) == "Billing Agent"
    ledger = Ledger(secure, session_id)
    result = await resume_turn(
        triage, secure.open(session_id), approve=True, run_config=CONFIG, context=ledger
    )
    assert "refund issued for order 5512" in result.final_output
    assert await pending_approvals(secure, session_id) == []
    assert list((await ledger.entries("refund")).values()) == ["5512"]
    await ledger.clear("refund")
