"""Reliability under load, faults, crashes and bad input, with the figures the README reports.

    python -m tools.stress            # full size: 500 users x 5 turns, 50-turn burst, 20 SIGKILLs, ...
    python -m tools.stress --quick    # the sizes the tests use
    python -m tools.stress --double-text [--store URL ...]   # only: a second message on a busy session

Each scenario is a function the tests call at a small size; this script runs them at full size
and prints one line of figures per scenario. Everything runs on the offline model, offline.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import random
import re
import select
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Coroutine
from contextlib import closing
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from agents import (
    Agent,
    GuardrailFunctionOutput,
    RunConfig,
    Runner,
    SQLiteSession,
    function_tool,
    input_guardrail,
    set_tracing_disabled,
)
from agents.testing import ModelStep, ScriptedModel, function_call

from multisessions import (
    MAX_MESSAGE_CHARS,
    OfflineModel,
    SQLitePool,
    SQLiteStore,
    TurnFailed,
    close_session,
    held_locks,
    open_store,
    read_all,
    resume_turn,
    run_turn,
    stream_turn,
    thread_session_id,
    user_session_id,
)
from multisessions.locks import OnBusy
from multisessions.stores import leases_for
from tools.workload import LeakWatch, converse_on_file

set_tracing_disabled(True)


async def plain_turn(starting_agent: Agent[Any], session: Any, user_input: str, **kwargs: Any) -> Any:
    """What most code does: ``Runner.run`` straight on the session (for ``--plain`` comparisons)."""
    try:
        return await Runner.run(starting_agent, user_input, session=session, **kwargs)
    except Exception as exc:
        raise TurnFailed(session.session_id, exc) from exc


turn = run_turn  # the turn function every scenario uses; main() swaps it for --plain

ROOT = Path(__file__).resolve().parent.parent


def pairs_whole(items: list[dict[str, Any]]) -> bool:
    """Items alternate user message, assistant answer, and each answer answers its own message."""
    if len(items) % 2:
        return False
    for question, answer in zip(items[::2], items[1::2], strict=True):
        if question.get("role") != "user" or answer.get("role") != "assistant":
            return False
        number = re.search(r"order number is (\d+)", question["content"])
        if number and f"({number.group(1)})" not in answer["content"][0]["text"]:
            return False
    return True


def stored_items(db_path: Path) -> int:
    """How many items the SQLite file holds, across all sessions."""
    with closing(sqlite3.connect(db_path)) as conn:
        return int(conn.execute("SELECT count(*) FROM agent_messages").fetchone()[0])


def drain(read_fd: int) -> bytes:
    """Everything left in a pipe until its writer is gone; closes it."""
    data = b""
    while chunk := os.read(read_fd, 65536):
        data += chunk
    os.close(read_fd)
    return data


# --- 1. Many users at once ----------------------------------------------------------------


async def many_users(db_path: Path, users: int = 500, turns: int = 5) -> dict[str, int]:
    """``users`` concurrent users x ``turns`` turns on one SQLite file, each with a unique fact."""
    model = LeakWatch()
    config = RunConfig(model=model)
    agent = Agent(name="Support Agent", instructions="Remember what the customer says.")
    errors = wrong = 0

    async def serve(i: int) -> None:
        nonlocal errors, wrong
        outcome = await converse_on_file(i, turns, agent, db_path, config, turn=turn)
        errors += outcome.errors
        wrong += not outcome.recalled

    await asyncio.gather(*(serve(i) for i in range(users)))
    stored = stored_items(db_path)
    return {
        "users": users,
        "turns": users * turns,
        "errors": errors,
        "wrong_recalls": wrong,
        "leaks": model.leaks,
        "model_calls": model.calls,
        "items_lost": users * turns * 2 - stored,
    }


# --- 2. A burst on one shared session -----------------------------------------------------


async def shared_burst(db_path: Path, turns: int = 50) -> dict[str, int]:
    """``turns`` turns fired at once at one session: the history must end well formed."""
    session = SQLiteSession("thread_burst", db_path)
    config = RunConfig(model=OfflineModel())
    agent = Agent(name="Support Agent")
    messages = [f"Note {k}: my order number is {k}." for k in range(turns)]
    try:
        await asyncio.gather(*(turn(agent, session, m, run_config=config) for m in messages))
        items = await read_all(session)
    finally:
        session.close()
    asked = sorted(i["content"] for i in items if i.get("role") == "user")
    return {
        "turns": turns,
        "items": len(items),
        "pairs_whole": int(pairs_whole(items)),
        "messages_lost": len(set(messages) - set(asked)),
        "messages_duplicated": len(asked) - len(set(asked)),
    }


# --- 3. Faults ----------------------------------------------------------------------------


class FailOnCall(OfflineModel):
    """The offline model, raising on its ``k``-th call."""

    def __init__(self, k: int) -> None:
        self.k = k
        self.calls = 0

    async def get_response(self, *args: Any, **kwargs: Any) -> Any:
        self.calls += 1
        if self.calls == self.k:
            raise RuntimeError(f"injected model failure on call {self.k}")
        return await super().get_response(*args, **kwargs)


@function_tool(failure_error_function=None)
def lookup_order(order: str) -> str:
    """Look an order up (it always fails here)."""
    raise ConnectionError("order service down")


@input_guardrail
async def no_secrets(context: Any, agent: Any, user_input: Any) -> GuardrailFunctionOutput:
    """Trips on messages that mention a password."""
    return GuardrailFunctionOutput(output_info=None, tripwire_triggered="password" in str(user_input))


async def faults(db_path: Path, model_failures: int = 5) -> dict[str, int]:
    """Inject each kind of failure into a live session; count sessions changed by a failed turn."""
    injected = changed = 0

    async def check(
        session: SQLiteSession, attempt: Coroutine[Any, Any, Any], timeout: float | None = None
    ) -> None:
        nonlocal injected, changed
        before = await read_all(session)
        try:
            await asyncio.wait_for(attempt, timeout)
        except (TurnFailed, TimeoutError):
            injected += 1
        if await read_all(session) != before:
            changed += 1

    agent = Agent(name="Support Agent")
    for k in range(1, model_failures + 1):  # the model raises on turn k
        session = SQLiteSession(f"thread_fail{k}", db_path)
        config = RunConfig(model=FailOnCall(k))
        for t in range(1, model_failures + 1):
            if t == k:
                await check(session, turn(agent, session, f"turn {t}", run_config=config))
            else:
                await turn(agent, session, f"turn {t}", run_config=config)
        session.close()

    session = SQLiteSession("thread_faults", db_path)
    await turn(agent, session, "My order number is 77.", run_config=RunConfig(model=OfflineModel()))
    tool_model = ScriptedModel([[function_call("lookup_order", {"order": "77"}, call_id="call-fault-1")]])
    await check(
        session,
        turn(
            agent.clone(tools=[lookup_order]), session, "where is it?", run_config=RunConfig(model=tool_model)
        ),
    )

    async def slow(call: Any) -> Any:
        await asyncio.sleep(30)

    slow_model = ScriptedModel([ModelStep.respond(slow)])
    await check(
        session,
        turn(agent, session, "hello?", run_config=RunConfig(model=slow_model)),
        timeout=0.2,
    )
    guarded = agent.clone(input_guardrails=[no_secrets])
    await check(
        session,
        turn(guarded, session, "my password is hunter2", run_config=RunConfig(model=OfflineModel())),
    )
    session.close()
    return {"faults_injected": injected, "sessions_changed": changed}


# --- 4. Crashes ---------------------------------------------------------------------------


CRASH_LEASE_SECONDS = 0.3


def _crash_child(db_path: str, first: int, write_fd: int) -> None:
    """Run turns forever on one session, reporting each committed turn number on ``write_fd``."""

    async def go() -> None:
        session = SQLiteSession("thread_crash", db_path)
        # A killed child leaves its lease behind; the next child waits it out. Keep that wait short
        # here (the killed-holder scenario measures the wait itself).
        backend = leases_for(session)
        if backend is not None:
            backend.seconds = CRASH_LEASE_SECONDS
        config = RunConfig(model=OfflineModel())
        agent = Agent(name="Support Agent")
        n = first
        while True:
            await turn(agent, session, f"Note {n}: my order number is {n}.", run_config=config)
            os.write(write_fd, f"{n}\n".encode())
            n += 1

    asyncio.run(go())


def crash_kills(db_path: Path, kills: int = 20, seed: int = 7) -> dict[str, int]:
    """SIGKILL a process mid-turns ``kills`` times; after each, every reported turn is there, whole."""
    rng = random.Random(seed)
    ctx = multiprocessing.get_context("fork")
    reported: set[int] = set()
    half = lost = bad_integrity = 0
    next_turn = 0
    for _ in range(kills):
        read_fd, write_fd = os.pipe()
        child = ctx.Process(target=_crash_child, args=(str(db_path), next_turn, write_fd), daemon=True)
        child.start()
        os.close(write_fd)
        buffer = b""
        deadline = time.monotonic() + rng.uniform(0.02, 0.25)
        while time.monotonic() < deadline or not buffer:
            ready, _, _ = select.select([read_fd], [], [], 0.01)
            if ready:
                buffer += os.read(read_fd, 65536)
            if time.monotonic() > deadline + 30:
                break
        assert child.pid is not None
        os.kill(child.pid, signal.SIGKILL)
        child.join()
        buffer += drain(read_fd)
        reported |= {int(n) for n in buffer.decode().split()}

        with closing(sqlite3.connect(db_path)) as conn:
            if conn.execute("PRAGMA integrity_check").fetchone()[0] != "ok":
                bad_integrity += 1
            rows = conn.execute(
                "SELECT message_data FROM agent_messages WHERE session_id = 'thread_crash' ORDER BY id"
            ).fetchall()
        items = [json.loads(r[0]) for r in rows]
        if not pairs_whole(items):
            half += 1
        present = {int(re.findall(r"\d+", i["content"])[0]) for i in items if i.get("role") == "user"}
        lost += len(reported - present)
        next_turn = max(present | reported, default=-1) + 1
    return {
        "kills": kills,
        "turns_completed": len(reported),
        "turns_lost": lost,
        "half_turns": half,
        "integrity_failures": bad_integrity,
    }


# --- 5. Several processes on one file -----------------------------------------------------


def _worker(db_path: str, users: list[int], turns: int, write_fd: int) -> None:
    async def go() -> dict[str, int]:
        config = RunConfig(model=OfflineModel())
        agent = Agent(name="Support Agent")
        errors = locked = 0

        async def serve(i: int) -> None:
            nonlocal errors, locked
            outcome = await converse_on_file(i, turns, agent, db_path, config, turn=turn)
            errors += outcome.errors
            locked += outcome.locked

        await asyncio.gather(*(serve(i) for i in users))
        return {"errors": errors, "locked": locked}

    os.write(write_fd, json.dumps(asyncio.run(go())).encode())
    os._exit(0)


def many_processes(db_path: Path, processes: int = 4, users: int = 200, turns: int = 5) -> dict[str, int]:
    """``processes`` processes serve interleaved users on one SQLite file at the same time."""
    SQLiteSession("init", db_path).close()  # create the tables once, before the race
    ctx = multiprocessing.get_context("fork")
    children = []
    for p in range(processes):
        read_fd, write_fd = os.pipe()
        mine = list(range(p, users, processes))  # interleaved: user i goes to process i % N
        child = ctx.Process(target=_worker, args=(str(db_path), mine, turns, write_fd))
        child.start()
        os.close(write_fd)
        children.append((child, read_fd))
    errors = locked = 0
    for child, read_fd in children:
        data = drain(read_fd)
        child.join()
        report = json.loads(data or b'{"errors": 1, "locked": 0}')
        errors += report["errors"]
        locked += report["locked"]
    stored = stored_items(db_path)
    return {
        "processes": processes,
        "turns": users * turns,
        "errors": errors,
        "locked_errors_seen_by_users": locked,
        "items_lost": users * turns * 2 - stored,
    }


# --- 6. Several processes, one session ----------------------------------------------------


class SeenCounter(OfflineModel):
    """The offline model, noting how many earlier user messages each turn's input held."""

    def __init__(self) -> None:
        self.seen: dict[str, int] = {}

    async def get_response(self, system_instructions: Any, input: Any, *args: Any, **kwargs: Any) -> Any:
        users = [i["content"] for i in input if isinstance(i, dict) and i.get("role") == "user"]
        self.seen.setdefault(users[-1], len(users) - 1)  # the first call of the turn
        return await super().get_response(system_instructions, input, *args, **kwargs)


def _one_session_worker(url: str | None, db: str, tag: str, turns: int, write_fd: int) -> None:
    async def go() -> dict[str, Any]:
        store = open_store(url, db_path=db)
        model = SeenCounter()
        config = RunConfig(model=model)
        agent = Agent(name="Support Agent")
        session = store.open("thread_shared")
        errors = 0

        async def one(t: int) -> None:
            nonlocal errors
            try:
                await run_turn(agent, session, f"{tag}: my order number is {t}.", run_config=config)
            except TurnFailed:
                errors += 1

        try:
            await asyncio.gather(*(one(t) for t in range(turns)))  # all at once, in this process too
        finally:
            await close_session(session)
            await store.close()
        return {"seen": model.seen, "errors": errors}

    os.write(write_fd, json.dumps(asyncio.run(go())).encode())
    os._exit(0)


def one_session_many_processes(
    url: str | None, db: Path, processes: int = 4, turns: int = 25
) -> dict[str, int]:
    """``processes`` processes x ``turns`` concurrent turns, all on one session id.

    A turn is *stale* if its model input missed a turn committed before it (the history it was
    sent holds fewer earlier messages than the store holds before it).
    """
    ctx = multiprocessing.get_context("fork")
    children = []
    for p in range(processes):
        read_fd, write_fd = os.pipe()
        child = ctx.Process(target=_one_session_worker, args=(url, str(db), f"p{p}", turns, write_fd))
        child.start()
        os.close(write_fd)
        children.append((child, read_fd))
    seen: dict[str, int] = {}
    errors = 0
    for child, read_fd in children:
        report = json.loads(drain(read_fd) or b'{"seen": {}, "errors": 1}')
        child.join()
        seen.update(report["seen"])
        errors += report["errors"]

    async def stored() -> list[Any]:
        store = open_store(url, db_path=db)
        session = store.open("thread_shared")
        try:
            return await read_all(session)
        finally:
            await store.delete("thread_shared")
            await close_session(session)
            await store.close()

    items = asyncio.run(stored())
    asked = [i["content"] for i in items if i.get("role") == "user"]
    expected = {f"p{p}: my order number is {t}." for p in range(processes) for t in range(turns)}
    return {
        "processes": processes,
        "turns": processes * turns,
        "errors": errors,
        "stale": sum(seen.get(message) != position for position, message in enumerate(asked)),
        "interleaved": int(not pairs_whole(items)),
        "lost": len(expected - set(asked)),
        "duplicated": len(asked) - len(set(asked)),
    }


class Hangs(OfflineModel):
    """A model that tells its parent it is inside a turn, then never answers."""

    def __init__(self, write_fd: int) -> None:
        self.write_fd = write_fd

    async def get_response(self, *args: Any, **kwargs: Any) -> Any:
        os.write(self.write_fd, b"holding\n")
        await asyncio.sleep(3600)


def _holder(url: str | None, db: str, lease: float, write_fd: int) -> None:
    async def go() -> None:
        store = open_store(url, db_path=db)
        session = store.open("thread_killed")
        backend = leases_for(session)
        assert backend is not None
        backend.seconds = lease
        await run_turn(
            Agent(name="Support Agent"), session, "hello?", run_config=RunConfig(model=Hangs(write_fd))
        )

    asyncio.run(go())


def killed_holder(url: str | None, db: Path, lease: float = 2.0) -> dict[str, Any]:
    """SIGKILL a process inside a turn (holding the session); the next turn waits at most one lease."""
    ctx = multiprocessing.get_context("fork")
    read_fd, write_fd = os.pipe()
    child = ctx.Process(target=_holder, args=(url, str(db), lease, write_fd), daemon=True)
    child.start()
    os.close(write_fd)
    ready, _, _ = select.select([read_fd], [], [], 30)
    held = bool(ready) and os.read(read_fd, 64).startswith(b"holding")
    assert child.pid is not None
    os.kill(child.pid, signal.SIGKILL)
    child.join()
    os.close(read_fd)
    killed_at = time.monotonic()

    async def next_turn() -> list[Any]:
        store = open_store(url, db_path=db)
        session = store.open("thread_killed")
        try:
            await run_turn(
                Agent(name="Support Agent"),
                session,
                "My name is Kim.",
                run_config=RunConfig(model=OfflineModel()),
            )
            return await read_all(session)
        finally:
            await store.delete("thread_killed")
            await close_session(session)
            await store.close()

    items = asyncio.run(next_turn())
    return {
        "held_when_killed": int(held),
        "lease_s": lease,
        "next_turn_after_s": round(time.monotonic() - killed_at, 2),
        "items_after": len(items),
    }


# --- 7. Streams left early, and turns paused for approval -----------------------------------


async def abandoned_streams(db_path: Path, streams: int = 100) -> dict[str, int]:
    """``streams`` streams left after the first event and ``streams`` cancelled mid-stream: 0 changes."""
    store = SQLiteStore(db_path)
    sessions = [store.open(user_session_id(f"s{i}")) for i in range(streams)]
    config = RunConfig(model=OfflineModel())
    agent = Agent(name="Support Agent")
    for session in sessions:
        await run_turn(agent, session, "My name is Ada.", run_config=config)
    before = [await read_all(s) for s in sessions]

    async def leave_early(session: Any) -> None:
        async with stream_turn(agent, session, "My email is ada@example.com.", run_config=config) as result:
            async for _ in result.stream_events():
                break

    async def cancelled(session: Any) -> None:
        async with stream_turn(agent, session, "My email is ada@example.com.", run_config=config) as result:
            async for _ in result.stream_events():
                await asyncio.sleep(3600)

    await asyncio.gather(*(leave_early(s) for s in sessions))
    tasks = [asyncio.create_task(cancelled(s)) for s in sessions]
    await asyncio.sleep(0.2)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    after = [await read_all(s) for s in sessions]
    for session in sessions:
        await close_session(session)
    return {
        "abandoned": streams,
        "cancelled": streams,
        "sessions_changed": sum(a != b for a, b in zip(after, before, strict=True)),
        "locks_left": held_locks(),
    }


def _supervisor(url: str | None, db: str, ids: list[str], write_fd: int) -> None:
    async def go() -> int:
        store = open_store(url, db_path=db)
        triage = refund_agents()["Triage Agent"]
        decided = 0
        for k, session_id in enumerate(ids):
            session = store.open(session_id)
            await resume_turn(
                triage,
                session,
                approve=k % 2 == 0,
                reason="Not this time.",
                run_config=RunConfig(model=OfflineModel()),
            )
            decided += 1
        await store.close()
        return decided

    os.write(write_fd, str(asyncio.run(go())).encode())
    os._exit(0)


def paused_turns(url: str | None, db: Path, turns: int = 50) -> dict[str, int]:
    """``turns`` sessions pause for approval; new turns on them are refused; another process decides."""
    ids = [thread_session_id(f"refund{i}") for i in range(turns)]
    config = RunConfig(model=OfflineModel())

    async def pause_all() -> int:
        store = open_store(url, db_path=db)
        triage = refund_agents()["Triage Agent"]
        refused = 0
        for session_id in ids:
            session = store.open(session_id)
            await store.delete(session_id)
            await run_turn(triage, session, "My order number is 5512.", run_config=config)
            await run_turn(
                triage, session, "I was charged twice for order 5512, refund it.", run_config=config
            )
            try:
                await run_turn(triage, session, "Hello?", run_config=config)
            except TurnFailed:
                refused += 1
        await store.close()
        return refused

    refused = asyncio.run(pause_all())
    read_fd, write_fd = os.pipe()
    child = multiprocessing.get_context("fork").Process(
        target=_supervisor, args=(url, str(db), ids, write_fd)
    )
    child.start()
    os.close(write_fd)
    decided = int(drain(read_fd) or b"0")
    child.join()

    async def check() -> tuple[int, int]:
        store = open_store(url, db_path=db)
        well_formed = 0
        for session_id in ids:
            items = await read_all(store.open(session_id))
            calls = [i["call_id"] for i in items if i.get("type") == "function_call"]
            outputs = [i["call_id"] for i in items if i.get("type") == "function_call_output"]
            well_formed += calls == outputs and len(items) == 8 and items[-1].get("role") == "assistant"
            await store.delete(session_id)
        waiting = len(await store.list_pending())
        await store.close()
        return well_formed, waiting

    well_formed, waiting = asyncio.run(check())
    return {
        "paused": turns,
        "refused_meanwhile": refused,
        "decided_elsewhere": decided,
        "well_formed": well_formed,
        "still_waiting": waiting,
    }


# --- 8. A second message on a busy session: wait, reject, interrupt -----------------------


POLICIES: tuple[OnBusy, ...] = ("wait", "reject", "interrupt")


def open_where(where: str | None, db: Path | str) -> Any:
    """The store named by ``where``: None or ``sqlite`` (the file), ``pooled`` (the file through a
    ``SQLitePool``), or a ``redis://`` or ``postgresql://`` URL."""
    if where in (None, "sqlite"):
        return SQLiteStore(db)
    if where == "pooled":
        return SQLiteStore(db, pool=SQLitePool(db, max_open=4))
    return open_store(where, db_path=db)


class Timed(OfflineModel):
    """The offline model, slowed to ``seconds`` per call; notes when its first call came and,
    if given a pipe, says there that the turn runs (it holds the session from then on)."""

    def __init__(self, seconds: float = 0.0, write_fd: int | None = None) -> None:
        self.seconds = seconds
        self.write_fd = write_fd
        self.called_at: float | None = None

    async def get_response(self, *args: Any, **kwargs: Any) -> Any:
        if self.called_at is None:
            self.called_at = time.monotonic()
            if self.write_fd is not None:
                os.write(self.write_fd, b"h")
        await asyncio.sleep(self.seconds)
        return await super().get_response(*args, **kwargs)


def _first_turns(
    where: str | None, db: str, ids: dict[str, str], seconds: dict[str, float], fds: Any
) -> None:
    """The child: one slow turn per policy's session, all at once; reports how each ended, and when."""
    ready_fd, report_fd = fds

    async def one(store: Any, policy: str) -> dict[str, Any]:
        session = store.open(ids[policy])
        model = Timed(seconds[policy], ready_fd)
        try:
            await run_turn(
                Agent(name="Support Agent"), session, f"first ({policy})", run_config=RunConfig(model=model)
            )
            outcome = "answered"
        except TurnFailed as exc:
            outcome = type(exc).__name__
        finally:
            await close_session(session)
        return {"outcome": outcome, "ended_at": time.monotonic()}

    async def go() -> dict[str, Any]:
        store = open_where(where, db)
        try:
            return dict(zip(POLICIES, await asyncio.gather(*(one(store, p) for p in POLICIES)), strict=True))
        finally:
            await store.close()

    os.write(report_fd, json.dumps(asyncio.run(go())).encode())
    os._exit(0)


def double_text(where: str | None, db: Path, first_seconds: float = 1.0) -> dict[str, Any]:
    """A second message, from this process, on each of three sessions whose turn runs in another
    process (``first_seconds`` long; the one to interrupt would run 10 s): once per policy.

    Figures, in seconds from the second message: under ``wait`` when it started (``wait_s``) and
    how long after the first turn ended (``wait_after_first_s``); under ``reject`` when it was
    refused (``reject_s``); under ``interrupt`` when the first turn stopped (``interrupt_stop_s``,
    its caller told ``TurnInterrupted``) and when the second started (``interrupt_start_s``).
    ``stored`` is the user messages each session holds afterwards.
    """
    tag = uuid.uuid4().hex[:8]
    ids = {policy: thread_session_id(f"double-{policy}-{tag}") for policy in POLICIES}
    seconds = {"wait": first_seconds, "reject": first_seconds, "interrupt": 10.0}
    ready_fd, ready_write = os.pipe()
    report_fd, report_write = os.pipe()
    child = multiprocessing.get_context("fork").Process(
        target=_first_turns, args=(where, str(db), ids, seconds, (ready_write, report_write)), daemon=True
    )
    child.start()
    os.close(ready_write)
    os.close(report_write)
    running = b""
    while len(running) < len(POLICIES):  # every first turn holds its session
        ready, _, _ = select.select([ready_fd], [], [], 30)
        if not ready:
            break
        running += os.read(ready_fd, 8)
    os.close(ready_fd)

    async def second(store: Any, policy: OnBusy) -> dict[str, Any]:
        session = store.open(ids[policy])
        model = Timed()
        notices: list[str] = []
        sent = time.monotonic()
        try:
            await run_turn(
                Agent(name="Support Agent"),
                session,
                f"second ({policy})",
                run_config=RunConfig(model=model),
                on_busy=policy,
                on_wait=notices.append,
            )
            outcome = "answered"
        except TurnFailed as exc:
            outcome = type(exc.cause).__name__
        finally:
            await close_session(session)
        return {
            "sent": sent,
            "answered_at": time.monotonic(),
            "started": model.called_at,
            "outcome": outcome,
            "notices": notices,
        }

    async def seconds_and_stored() -> tuple[dict[str, Any], dict[str, list[str]]]:
        store = open_where(where, db)
        try:
            # A warm store, as in a running server: its pool or connection already open.
            warm = store.open(f"warm-{tag}")
            await run_turn(Agent(name="Support Agent"), warm, "hi", run_config=RunConfig(model=Timed()))
            await close_session(warm)
            await store.delete(f"warm-{tag}")
            seconds = dict(
                zip(POLICIES, await asyncio.gather(*(second(store, p) for p in POLICIES)), strict=True)
            )
            stored: dict[str, list[str]] = {}
            for policy in POLICIES:
                session = store.open(ids[policy])
                stored[policy] = [i["content"] for i in await read_all(session) if i.get("role") == "user"]
                await close_session(session)
                await store.delete(ids[policy])
            return seconds, stored
        finally:
            await store.close()

    seconds_, stored = asyncio.run(seconds_and_stored())
    first = json.loads(drain(report_fd) or b"{}")
    child.join()

    def after(policy: str, at: float | None) -> float | None:
        return None if at is None else round(at - seconds_[policy]["sent"], 3)

    return {
        "first_running": len(running),
        "wait_notice": len(seconds_["wait"]["notices"]),
        "wait_s": after("wait", seconds_["wait"]["started"]),
        "wait_after_first_s": round(seconds_["wait"]["started"] - first["wait"]["ended_at"], 3)
        if seconds_["wait"]["started"] and first
        else None,
        "reject_s": after("reject", seconds_["reject"]["answered_at"]),
        "interrupt_stop_s": after("interrupt", first["interrupt"]["ended_at"]) if first else None,
        "interrupt_start_s": after("interrupt", seconds_["interrupt"]["started"]),
        "outcomes": {p: (first.get(p, {}).get("outcome"), seconds_[p]["outcome"]) for p in POLICIES},
        "stored": stored,
    }


def refund_agents() -> dict[str, Agent[Any]]:
    """Triage and a billing specialist whose refund tool needs a supervisor (as in agent.py)."""

    @function_tool(needs_approval=True)
    def refund_order(order_id: str) -> str:
        """Refund the double charge on an order."""
        return f"refund issued for order {order_id}"

    billing = Agent(
        name="Billing Agent", handoff_description="Billing: charges, refunds.", tools=[refund_order]
    )
    triage = Agent(name="Triage Agent", handoffs=[billing])
    return {a.name: a for a in (triage, billing)}


# --- 8. Bad input -------------------------------------------------------------------------


@dataclass(frozen=True)
class BadInput:
    """One bad input to the command line: how to set it up, and what the one line must say."""

    label: str
    args: list[str]
    expect: str
    setup: Callable[[Path], None] = lambda folder: None
    stdin: str | None = None
    exit_code: int = 1


def _corrupt(folder: Path) -> None:
    (folder / "s.db").write_bytes(b"\x00garbage" * 512)


def _directory(folder: Path) -> None:
    (folder / "s.db").mkdir()


def _read_only(folder: Path) -> None:
    db = folder / "s.db"
    if os.geteuid() == 0:
        # Root writes through permission bits; an immutable file stops even root.
        subprocess.run(["chattr", "+i", str(db)], check=True, capture_output=True)
    else:
        db.chmod(0o444)


BAD_INPUTS = [
    BadInput("unknown demo", ["nosuch"], "unknown demo", exit_code=2),
    BadInput("unknown option", ["--nosuch"], "unrecognized arguments", exit_code=2),
    BadInput("corrupt database", ["naming", "--db", "{db}"], "not a usable SQLite database", _corrupt),
    BadInput("database is a directory", ["naming", "--db", "{db}"], "is a directory", _directory),
    BadInput("missing parent folder", ["naming", "--db", "{folder}/no/such/s.db"], "does not exist"),
    BadInput("read-only database", ["naming", "--db", "{db}"], "is read-only", _read_only),
    BadInput("missing session", ["sessions", "show", "user_nobody", "--db", "{db}"], "no session"),
    BadInput(
        "SQL in a session id",
        ["sessions", "show", "x'; DROP TABLE agent_sessions;--", "--db", "{db}"],
        "no session",
    ),
    BadInput(
        "control characters in an id",
        ["sessions", "show", "user_\x1b[2J", "--db", "{db}"],
        "control characters",
    ),
    BadInput("empty session id", ["sessions", "delete", "", "--db", "{db}"], "empty"),
    BadInput("bad chat user", ["chat", "--user", "a\tb", "--db", "{db}"], "control characters"),
    BadInput("bad chat date", ["chat", "--user", "a", "--date", "2024-13-01", "--db", "{db}"], "YYYYMMDD"),
    BadInput(
        "negative expiry",
        ["sessions", "expire", "--older-than", "-1", "--db", "{db}"],
        "zero or more",
        exit_code=2,  # a bad option value is bad usage
    ),
]


def baseline_db(path: Path) -> Path:
    """A database holding the naming demo's sessions: what bad input must leave untouched."""

    async def make() -> None:
        # Four sessions of a few turns each, as the naming demo leaves them.
        agent = Agent(name="Assistant")
        config = RunConfig(model=OfflineModel())
        for session_id in ("user_123", "chat_feature_user_123", "thread_abc123", "user_123_20241215"):
            session = SQLiteSession(session_id, path)
            try:
                for message in ("My name is Sam.", "What do you know about me?"):
                    await run_turn(agent, session, message, run_config=config)
            finally:
                await close_session(session)

    asyncio.run(make())
    return path


Ran = tuple[int, str, str]
"""What one command line did: exit code, standard output, standard error."""

RunCommand = Callable[[list[str], str, Path], Ran]
"""Runs ``python agent.py ARGS`` with the given standard input in the given folder."""

SETTINGS_VARIABLES = ("OPENAI_", "SESSION_", "SERVE_TOKENS")
"""Environment variables (by prefix) that would point a child at a real model or another store."""


def run_script(args: list[str], stdin: str, folder: Path) -> Ran:
    """``python agent.py ARGS`` as a user runs it: a new process, offline, in ``folder`` (no .env)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(SETTINGS_VARIABLES)}
    env["OPENAI_BASE_URL"] = "http://127.0.0.1:9"
    result = subprocess.run(
        [sys.executable, str(ROOT / "agent.py"), *args],
        env=env,
        cwd=folder,
        input=stdin,
        capture_output=True,
        text=True,
    )
    return result.returncode, result.stdout, result.stderr


def try_bad_input(
    case: BadInput, folder: Path, baseline: Path, run: RunCommand = run_script
) -> tuple[bool, str]:
    """Run one bad input against a copy of ``baseline`` in ``folder``, through ``run``.

    Passes when the command exits non-zero with one line naming the problem, no traceback,
    and every existing session still holds exactly what it held. ``run`` is a new process by
    default; the tests pass one that calls the command line in their own process.
    """
    db = folder / "s.db"
    shutil.copy(baseline, db)
    before = _snapshot(db)
    if case.setup in (_corrupt, _directory):
        db.unlink()
    case.setup(folder)
    try:
        args = [a.format(db=db, folder=folder) for a in case.args]
        code, stdout, stderr = run(args, case.stdin or "", folder)
    finally:
        if case.setup is _read_only and os.geteuid() == 0:
            subprocess.run(["chattr", "-i", str(db)], capture_output=True)
    lines = stderr.strip().splitlines()
    problems = []
    if code != case.exit_code:
        problems.append(f"exit {code}, wanted {case.exit_code}")
    if len(lines) != 1 or case.expect not in lines[0]:
        problems.append(f"stderr was {stderr!r}")
    if "Traceback" in stdout + stderr:
        problems.append("traceback")
    if case.setup not in (_corrupt, _directory) and _snapshot(db) != before:
        problems.append("existing sessions changed")
    return not problems, "; ".join(problems)


def _snapshot(db: Path) -> list[tuple[Any, ...]]:
    with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
        return conn.execute("SELECT session_id, message_data FROM agent_messages ORDER BY id").fetchall()


def bad_inputs(folder: Path) -> dict[str, int]:
    """Every bad input, each in a fresh folder."""
    baseline = baseline_db(folder / "baseline.db")
    handled = 0
    for case in BAD_INPUTS:
        case_folder = Path(tempfile.mkdtemp(dir=folder))
        try:
            ok, detail = try_bad_input(case, case_folder, baseline)
        finally:
            shutil.rmtree(case_folder, ignore_errors=True)
        handled += ok
        if not ok:
            print(f"  bad input {case.label!r} not handled: {detail}")
    return {"bad_inputs_tried": len(BAD_INPUTS), "handled": handled}


# --- 7. One very long message among other users ------------------------------------------


async def _timed_turns(
    agent: Agent[Any], pool: SQLitePool, users: int, turns: int, config: RunConfig
) -> list[float]:
    """``users`` users taking ``turns`` short turns each, at once; every turn's wall time in ms."""
    times: list[float] = []

    async def serve(i: int) -> None:
        session = pool.session(user_session_id(f"other{i}"))
        for k in range(turns):
            started = time.perf_counter()
            await turn(agent, session, f"Note {k}: my order number is {k}.", run_config=config)
            times.append((time.perf_counter() - started) * 1000)

    await asyncio.gather(*(serve(i) for i in range(users)))
    return times


async def big_message(
    db_path: Path, others: int = 10, turns: int = 5, chars: int = MAX_MESSAGE_CHARS
) -> dict[str, int]:
    """One user sends a ``chars``-character message while ``others`` users take turns.

    Figures, in ms: ``big_turn_loop_ms`` is the event-loop thread's CPU time for the big turn
    run alone (``time.thread_time``: what it holds every other user up by, in total;
    ``big_turn_wall_ms`` adds the SQLite writes, which run off the loop);
    ``max_loop_stall_ms`` the longest the loop was held at once while everyone ran (a 1 ms
    ticker's worst lateness: the most any other user's turn can have been delayed by a single
    stall); ``others_max_turn_ms`` / ``others_alone_max_ms`` the slowest other turn with and
    without the big message.
    """
    pool = SQLitePool(db_path, max_open=8)
    config = RunConfig(model=OfflineModel())
    agent = Agent(name="Support Agent", instructions="Remember what the customer says.")
    big = ("My order number is 4242. " + "x" * chars)[:chars]

    await turn(agent, pool.session(user_session_id("warm-up")), "Hello.", run_config=config)
    loop_started, wall_started = time.thread_time(), time.perf_counter()
    await turn(agent, pool.session(user_session_id("big-solo")), big, run_config=config)
    big_turn_loop_ms = (time.thread_time() - loop_started) * 1000
    big_turn_wall_ms = (time.perf_counter() - wall_started) * 1000

    alone = await _timed_turns(agent, pool, others, turns, config)

    stall = 0.0
    running = True

    async def ticker() -> None:
        nonlocal stall
        while running:
            before = time.perf_counter()
            await asyncio.sleep(0.001)
            stall = max(stall, (time.perf_counter() - before) * 1000 - 1)

    tick = asyncio.create_task(ticker())
    await asyncio.sleep(0.01)
    big_session = pool.session(user_session_id("big"))
    _, together = await asyncio.gather(
        turn(agent, big_session, big, run_config=config), _timed_turns(agent, pool, others, turns, config)
    )
    running = False
    await tick
    return {
        "message_chars": chars,
        "other_users": others,
        "big_turn_loop_ms": round(big_turn_loop_ms),
        "big_turn_wall_ms": round(big_turn_wall_ms),
        "max_loop_stall_ms": round(stall),
        "others_max_turn_ms": round(max(together)),
        "others_alone_max_ms": round(max(alone)),
    }


# --- Main ---------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    """Run every scenario and print one line of figures each."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the small sizes the tests use")
    parser.add_argument(
        "--plain", action="store_true", help="use Runner.run straight on the session instead of run_turn"
    )
    parser.add_argument(
        "--store",
        action="append",
        default=[],
        metavar="URL",
        help="also run the one-session scenarios on this store (redis://..., postgresql://...)",
    )
    parser.add_argument(
        "--double-text",
        action="store_true",
        help="only time a second message on a busy session (wait, reject, interrupt), per store",
    )
    args = parser.parse_args(argv)
    if args.double_text:
        return _double_texts(args.store)
    global turn
    turn = plain_turn if args.plain else run_turn
    print(f"turns through {'plain Runner.run' if args.plain else 'run_turn'}")
    quick = args.quick
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        scenarios: list[tuple[str, Callable[[], dict[str, Any]]]] = [
            ("many users", lambda: asyncio.run(many_users(folder / "a.db", 100 if quick else 500, 5))),
            ("burst on one session", lambda: asyncio.run(shared_burst(folder / "b.db", 50))),
            ("faults", lambda: asyncio.run(faults(folder / "c.db"))),
            ("crashes", lambda: crash_kills(folder / "d.db", 5 if quick else 20)),
            ("processes", lambda: many_processes(folder / "e.db", 4, 40 if quick else 200, 5)),
            ("bad input", lambda: bad_inputs(folder)),
            ("streams left early", lambda: asyncio.run(abandoned_streams(folder / "h.db", 100))),
            ("one 100k message", lambda: asyncio.run(big_message(folder / "f.db", 10, 5))),
        ]
        for url in [None, *args.store]:
            where = (url or "sqlite").split(":")[0]
            scenarios += [
                (f"one session, {where}", partial(one_session_many_processes, url, folder / "f.db", 4, 25)),
                (f"killed holder, {where}", partial(killed_holder, url, folder / "g.db", 2.0)),
                (f"approvals, {where}", partial(paused_turns, url, folder / "i.db", 50)),
            ]
        for name, scenario in scenarios:
            started = time.perf_counter()
            figures = scenario()
            elapsed = time.perf_counter() - started
            print(
                f"{name:<22} {' '.join(f'{k}={v}' for k, v in figures.items())} seconds={elapsed:.1f}",
                flush=True,
            )
    return 0


def _double_texts(urls: list[str]) -> int:
    """``double_text`` on the SQLite file, alone and pooled, and on each ``--store``: one line each."""
    print("seconds from the second message; the first turn runs 1 s (10 s under interrupt)")
    with tempfile.TemporaryDirectory() as tmp:
        for where in ["sqlite", "pooled", *urls]:
            figures = double_text(where, Path(tmp) / "double.db")
            name = where.split(":")[0]
            timing = {k: v for k, v in figures.items() if k.endswith("_s")}
            bad = {p for p, (first, second) in figures["outcomes"].items() if (first, second) != _EXPECTED[p]}
            print(
                f"{name:<10} {' '.join(f'{k}={v}' for k, v in timing.items())} wrong={sorted(bad)}",
                flush=True,
            )
    return 0


_EXPECTED = {
    "wait": ("answered", "answered"),
    "reject": ("answered", "SessionBusy"),
    "interrupt": ("TurnInterrupted", "answered"),
}


if __name__ == "__main__":
    sys.exit(main())
