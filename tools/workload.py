"""The simulated user that bench.py and stress.py share: a unique fact, small talk, the fact asked back.

A model input holding the facts of two users is a leak; a final answer that is not the user's
own fact is a wrong recall. Both are counted on the offline model, which answers only from
what it is sent.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agents import Agent, RunConfig, Runner, RunResult, SQLiteSession
from agents.items import TResponseInputItem
from agents.memory import Session, SessionSettings

from multisessions import OfflineModel, run_turn, user_session_id

FACT = re.compile(r"u(\d+)@example\.com")

Turn = Callable[..., Awaitable[RunResult]]


class LeakWatch(OfflineModel):
    """The offline model, counting calls whose input holds facts of more than one user."""

    def __init__(self) -> None:
        self.calls = 0
        self.leaks = 0

    async def get_response(self, system_instructions: Any, input: Any, *args: Any, **kwargs: Any) -> Any:
        self.calls += 1
        if len(set(FACT.findall(json.dumps(input)))) > 1:
            self.leaks += 1
        return await super().get_response(system_instructions, input, *args, **kwargs)


def user_script(i: int, turns: int) -> list[str]:
    """User ``i`` states a unique fact, chats, and finally asks for the fact back."""
    return [
        f"My email is u{i}@example.com.",
        *(f"Small talk {t}." for t in range(1, turns - 1)),
        "What's my email?",
    ]


def recalled(i: int, result: RunResult | None) -> bool:
    """Whether the last answer gave user ``i`` their own fact back."""
    return result is not None and result.final_output == f"Your email is u{i}@example.com."


@dataclass
class Conversation:
    """How one simulated user's conversation went."""

    errors: int = 0
    locked: int = 0
    recalled: bool = False
    latencies: list[float] = field(default_factory=list)


async def converse(
    i: int,
    turns: int,
    agent: Agent[Any],
    session: Session,
    run_config: RunConfig,
    *,
    turn: Turn = run_turn,
    gate: asyncio.Semaphore | None = None,
) -> Conversation:
    """User ``i``'s whole conversation on ``session``, each turn through ``turn`` (and ``gate``)."""
    outcome = Conversation()
    result = None
    slot: AbstractAsyncContextManager[Any] = gate if gate is not None else nullcontext()
    for message in user_script(i, turns):
        started = time.perf_counter()
        try:
            async with slot:
                result = await turn(agent, session, message, run_config=run_config)
        except Exception as exc:
            outcome.errors += 1
            outcome.locked += "locked" in str(exc)
        finally:
            outcome.latencies.append(time.perf_counter() - started)
        await asyncio.sleep(0)
    outcome.recalled = recalled(i, result)
    return outcome


class ListSession:
    """A session in a Python list: no store, no I/O, so ``run_turn`` on it costs only ``run_turn``."""

    def __init__(self, session_id: str) -> None:
        self.session_id = session_id
        self.session_settings: SessionSettings | None = None
        self.items: list[TResponseInputItem] = []

    async def get_items(self, limit: int | None = None) -> list[TResponseInputItem]:
        """The newest ``limit`` items, or all of them."""
        if limit is None:
            return list(self.items)
        return self.items[-limit:] if limit > 0 else []

    async def add_items(self, items: list[TResponseInputItem]) -> None:
        """Append ``items``."""
        self.items.extend(items)

    async def pop_item(self) -> TResponseInputItem | None:
        """Remove and return the newest item, if any."""
        return self.items.pop() if self.items else None

    async def clear_session(self) -> None:
        """Forget every item."""
        self.items.clear()


async def turn_by_hand(
    agent: Agent[Any], session: ListSession, message: str, *, run_config: RunConfig
) -> RunResult:
    """The floor: ``Runner.run`` on the history passed by hand, with no session, lease or commit."""
    result = await Runner.run(
        agent, [*session.items, {"role": "user", "content": message}], run_config=run_config
    )
    session.items = result.to_input_list()
    return result


async def plain_turn(
    agent: Agent[Any], session: Session, message: str, *, run_config: RunConfig
) -> RunResult:
    """The SDK's examples' way: ``Runner.run`` on the session itself (no lease, no all-or-nothing)."""
    return await Runner.run(agent, message, session=session, run_config=run_config)


async def converse_on_file(
    i: int,
    turns: int,
    agent: Agent[Any],
    db_path: str | Path,
    run_config: RunConfig,
    *,
    turn: Turn = run_turn,
) -> Conversation:
    """User ``i``'s whole conversation on a ``SQLiteSession`` of its own in ``db_path``, closed after."""
    session = SQLiteSession(user_session_id(f"u{i}"), db_path)
    try:
        return await converse(i, turns, agent, session, run_config, turn=turn)
    finally:
        session.close()
