"""Reliability under load, faults, crashes and bad input, with the figures the README reports.

    python -m tools.stress            # full size: 500 users x 5 turns, 50-turn burst, 20 SIGKILLs, ...
    python -m tools.stress --quick    # the sizes the tests use

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
from collections.abc import Callable, Coroutine
from contextlib import closing
from dataclasses import dataclass
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

from multisessions import OfflineModel, TurnFailed, close_session, read_all, run_turn, user_session_id
from tools.workload import LeakWatch, converse

set_tracing_disabled(True)


async def plain_turn(agent: Agent[Any], session: Any, user_input: str, **kwargs: Any) -> Any:
    """What most code does: ``Runner.run`` straight on the session (for ``--plain`` comparisons)."""
    try:
        return await Runner.run(agent, user_input, session=session, **kwargs)
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
        session = SQLiteSession(user_session_id(f"u{i}"), db_path)
        try:
            outcome = await converse(i, turns, agent, session, config, turn=turn)
        finally:
            session.close()
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


def _crash_child(db_path: str, first: int, write_fd: int) -> None:
    """Run turns forever on one session, reporting each committed turn number on ``write_fd``."""

    async def go() -> None:
        session = SQLiteSession("thread_crash", db_path)
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
            session = SQLiteSession(user_session_id(f"u{i}"), db_path)
            try:
                outcome = await converse(i, turns, agent, session, config, turn=turn)
            finally:
                session.close()
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


# --- 6. Bad input -------------------------------------------------------------------------


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
    BadInput("negative expiry", ["sessions", "expire", "--older-than", "-1", "--db", "{db}"], "zero or more"),
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


# --- Main ---------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    """Run every scenario and print one line of figures each."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the small sizes the tests use")
    parser.add_argument(
        "--plain", action="store_true", help="use Runner.run straight on the session instead of run_turn"
    )
    args = parser.parse_args(argv)
    global turn
    turn = plain_turn if args.plain else run_turn
    print(f"turns through {'plain Runner.run' if args.plain else 'run_turn'}")
    quick = args.quick
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        scenarios: list[tuple[str, Callable[[], dict[str, int]]]] = [
            ("many users", lambda: asyncio.run(many_users(folder / "a.db", 100 if quick else 500, 5))),
            ("burst on one session", lambda: asyncio.run(shared_burst(folder / "b.db", 50))),
            ("faults", lambda: asyncio.run(faults(folder / "c.db"))),
            ("crashes", lambda: crash_kills(folder / "d.db", 5 if quick else 20)),
            ("processes", lambda: many_processes(folder / "e.db", 4, 40 if quick else 200, 5)),
            ("bad input", lambda: bad_inputs(folder)),
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


if __name__ == "__main__":
    sys.exit(main())
