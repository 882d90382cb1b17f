"""Many conversations, kept apart and shared: sessions with the OpenAI Agents SDK.

Four demos, each one idea:

1. ``multi_user_sessions``: a session per user; Alice and Bob never see each other's history.
2. ``context_based_sessions``: a session per context (support, sales, a feature chat).
3. ``shared_session_agents``: one session shared by a triage agent and the specialist it hands
   the customer to; the follow-up goes to whoever answered last.
4. ``session_naming_demo``: session ids built by naming conventions, each its own history.

Each demo is the SDK's own calls: an ``Agent``, a ``SQLiteSession`` per session id, and
``Runner.run(agent, message, session=...)``. What this project adds is one block around each run,
``async with one_turn(session, agent) as turn:``: turns on a session run one at a time (across
processes too), a turn is written whole or not at all, and ``turn.agent`` is the agent that
answered the session's last turn (after a handoff, the specialist).

Run all of them with ``python agent.py`` (``--help`` for options), or one with
``python -c "import asyncio; from agent import multi_user_sessions; asyncio.run(multi_user_sessions())"``.
With no ``OPENAI_API_KEY`` they run on a built-in offline model.

The demos keep their sessions in a tenant of their own, ``demo`` (``demo:user_alice``): they
clear their sessions before each run, and must never clear yours (``python agent.py chat
--user alice`` is ``user_alice``, no tenant). ``python agent.py sessions list --tenant demo``
lists what they left.
"""

from __future__ import annotations

import sys
from datetime import date
from functools import partial
from pathlib import Path
from typing import Any

from agents import (
    Agent,
    RunConfig,
    RunContextWrapper,
    RunHooks,
    Runner,
    RunResult,
    SQLiteSession,
    function_tool,
)
from agents.items import HandoffOutputItem
from agents.memory import Session, SessionSettings
from agents.tool_context import ToolContext
from agents.usage import Usage

from multisessions import (
    DEFAULT_DB,
    Ledger,
    ModelLike,
    SessionStore,
    SQLiteStore,
    TurnFailed,
    close_session,
    dated_session_id,
    feature_session_id,
    format_listing,
    item_summary,
    list_sessions,
    one_turn,
    parse_session_id,
    pending_approvals,
    read_all,
    remember,
    resolve_model,
    resume_turn,
    thread_session_id,
    user_scope,
    user_session_id,
    with_memory,
)
from multisessions.summaries import Summaries

__all__ = [
    "DEMO_TENANT",
    "context_based_sessions",
    "dated_session_id",
    "feature_session_id",
    "history_cap_demo",
    "multi_user_sessions",
    "one_turn",
    "open_session",
    "parse_session_id",
    "session_naming_demo",
    "shared_session_agents",
    "support_agents",
    "thread_session_id",
    "user_session_id",
]


DEMO_TENANT = "demo"
"""The tenant every demo's session ids are built in, apart from any user's own sessions."""


def open_session(session_id: str, where: SessionStore | str | Path = DEFAULT_DB) -> Session:
    """The SDK's ``SQLiteSession`` on a file (its default database is in memory, gone at exit).

    Given a store (``--store redis://...`` or ``postgresql://...``, or encryption on), the same
    conversation lives there instead, as the SDK's ``RedisSession``, ``SQLAlchemySession`` or
    ``EncryptedSession``.
    """
    if isinstance(where, str | Path):
        return SQLiteSession(session_id, where)
    return where.open(session_id)


# --- Demo 1 -------------------------------------------------------------------------------


# --8<-- [start:multi_user]
async def multi_user_sessions(
    *, model: ModelLike = None, store: SessionStore | None = None, db_path: str | Path = DEFAULT_DB
) -> dict[str, Session]:
    """A session per user: each user's facts are recalled in their own session only."""
    print("\n=== Demo 1: a session per user ===")
    run_config = RunConfig(model=resolve_model(model))
    agent = Agent(
        name="Support Agent",
        instructions="You are a friendly support agent. Use what the customer told you earlier.",
    )
    # One database file, one session id per user: the id is what keeps them apart.
    sessions = {
        user: open_session(user_session_id(user, tenant=DEMO_TENANT), store or db_path)
        for user in ("alice", "bob", "carol")
    }
    await start_fresh(sessions, store, db_path)

    question = "What's my name, what's my email, and what was my problem?"
    script = [
        ("alice", "Hi, my name is Alice and my email is alice@example.com."),
        ("bob", "Hello, my name is Bob. My email is bob@example.org."),
        ("alice", "I have a problem: I was charged twice for order 1042."),
        ("bob", "The app crashes when I upload a photo."),
        ("alice", question),
        ("bob", question),
        ("carol", question),  # a new user: her session is empty, so nothing is known
    ]
    for user, message in script:
        # One turn at a time per session, written whole or not at all.
        # --8<-- [start:one_turn]
        async with one_turn(sessions[user], agent) as turn:
            result = await Runner.run(turn.agent, message, session=turn, run_config=run_config)
            await turn.commit(result)
        # --8<-- [end:one_turn]
        print_turn(sessions[user], user, message, result)

    await print_sessions(sessions)
    return sessions


# --8<-- [end:multi_user]


# --- Demo 2 -------------------------------------------------------------------------------


# --8<-- [start:context]
async def context_based_sessions(
    *, model: ModelLike = None, store: SessionStore | None = None, db_path: str | Path = DEFAULT_DB
) -> dict[str, Session]:
    """One user, a session per context, each with its own specialised agent."""
    print("\n=== Demo 2: a session per context ===")
    run_config = RunConfig(model=resolve_model(model))
    user = "alice"
    contexts = {
        "support": Agent(name="Support Agent", instructions="You resolve support tickets."),
        "sales": Agent(name="Sales Agent", instructions="You answer questions about plans and pricing."),
        "chat": Agent(name="Feature Chat Agent", instructions="You help with the in-app chat feature."),
    }
    # demo:support_feature_user_alice, demo:sales_feature_user_alice, demo:chat_feature_user_alice
    sessions = {
        context: open_session(feature_session_id(context, user, tenant=DEMO_TENANT), store or db_path)
        for context in contexts
    }
    await start_fresh(sessions, store, db_path)

    script = [
        ("support", "My ticket number is T-4821: the export button gives an error."),
        ("sales", "I'm interested in the Enterprise plan for my team of 50."),
        ("chat", "I prefer dark mode and short answers."),
        ("support", "What do you know about me?"),
        ("sales", "What do you know about me?"),
        ("chat", "What do you know about me?"),
    ]
    for context, message in script:
        async with one_turn(sessions[context], contexts[context]) as turn:
            result = await Runner.run(turn.agent, message, session=turn, run_config=run_config)
            await turn.commit(result)
        print_turn(sessions[context], user, message, result)

    await print_sessions(sessions)
    return sessions


# --8<-- [end:context]


# --- Demo 3 -------------------------------------------------------------------------------


# --8<-- [start:shared]
@function_tool(needs_approval=True, failure_error_function=None)
async def refund_order(ctx: RunContextWrapper[Any], order_id: str) -> str:
    """Refund the double charge on an order. A supervisor must approve every refund."""
    if not isinstance(ctx, ToolContext) or not isinstance(ctx.context, Ledger):
        raise TypeError("refund_order needs the session's Ledger as the run's context")
    # Money moves once per tool call: a resume retried after a crash finds the call's id in the
    # session's ledger and refunds nothing more.
    order, _ = await ctx.context.once("refund", ctx.tool_call_id, order_id)
    return f"refund issued for order {order}"


def support_agents(*, refunds: bool = False) -> dict[str, Agent[Any]]:
    """A triage agent that hands off to a billing or a technical specialist, by name.

    With ``refunds``, the billing specialist can refund an order, once a supervisor approves.
    """
    billing = Agent(
        name="Billing Agent",
        handoff_description="Billing: charges, double charges, refunds, invoices, payments, plans.",
        instructions="You are the billing specialist. Use everything the customer already said.",
        tools=[refund_order] if refunds else [],
    )
    technical = Agent(
        name="Technical Agent",
        handoff_description="Technical problems: crashes, errors, bugs, login, the app not working.",
        instructions="You are the technical specialist. Use everything the customer already said.",
    )
    triage = Agent(
        name="Triage Agent",
        instructions="Greet the customer, then hand billing questions to the Billing Agent and "
        "technical problems to the Technical Agent.",
        handoffs=[billing, technical],
    )
    return {agent.name: agent for agent in (triage, billing, technical)}


async def shared_session_agents(
    *, model: ModelLike = None, store: SessionStore | None = None, db_path: str | Path = DEFAULT_DB
) -> dict[str, Session]:
    """Several agents, one shared session: a real handoff, and follow-ups go to the specialist."""
    print("\n=== Demo 3: one session shared by several agents ===")
    run_config = RunConfig(model=resolve_model(model))
    triage = support_agents()["Triage Agent"]
    session = open_session(thread_session_id("support-7731", tenant=DEMO_TENANT), store or db_path)
    await start_fresh({"support": session}, store, db_path)

    script = [
        "Hi, my name is Dana and my email is dana@example.com.",
        "I was charged twice for order 5512, can I get a refund?",
        "What's my name, and what is my order number?",
    ]
    for message in script:
        # The SDK's session does not remember who answered last; the turn does: turn.agent is
        # triage on a new session, and the specialist after a handoff.
        async with one_turn(session, triage) as turn:
            result = await Runner.run(turn.agent, message, session=turn, run_config=run_config)
            await turn.commit(result)
        print_turn(session, "dana", message, result)

    # A later process: a new session object on the same store resumes with the same agent.
    resumed = open_session(session.session_id, store or db_path)
    message = "Do you remember my email?"
    async with one_turn(resumed, triage) as turn:
        print(f"\nResuming {resumed.session_id} in a new session object: its agent is {turn.agent.name}.")
        result = await Runner.run(turn.agent, message, session=turn, run_config=run_config)
        await turn.commit(result)
    print_turn(resumed, "dana", message, result)
    await close_session(session)  # SQLiteSession holds a connection per thread that used it

    await print_sessions({"support": resumed})
    return {"support": resumed}


# --8<-- [end:shared]


# --- Demo 4 -------------------------------------------------------------------------------


# --8<-- [start:naming]
async def session_naming_demo(
    *, model: ModelLike = None, store: SessionStore | None = None, db_path: str | Path = DEFAULT_DB
) -> dict[str, Session]:
    """Session ids from naming conventions: user, feature, thread and date, each its own history."""
    print("\n=== Demo 4: session naming conventions ===")
    run_config = RunConfig(model=resolve_model(model))
    agent = Agent(name="Assistant", instructions="You are a helpful assistant.")
    ids = {
        "user": user_session_id("123", tenant=DEMO_TENANT),  # demo:user_123
        "feature": feature_session_id("chat", "123", tenant=DEMO_TENANT),  # demo:chat_feature_user_123
        "thread": thread_session_id("abc123", tenant=DEMO_TENANT),  # demo:thread_abc123
        "dated": dated_session_id("123", date(2024, 12, 15), tenant=DEMO_TENANT),  # demo:user_123_20241215
    }
    sessions = {kind: open_session(session_id, store or db_path) for kind, session_id in ids.items()}
    await start_fresh(sessions, store, db_path)

    facts = {
        "user": "My name is Sam.",
        "feature": "I prefer emoji reactions in chat.",
        "thread": "My ticket number is 9001.",
        "dated": "My order number is 20241215-7.",
    }
    script = [*facts.items(), *((kind, "What do you know about me?") for kind in ids)]
    for kind, message in script:
        async with one_turn(sessions[kind], agent) as turn:
            result = await Runner.run(turn.agent, message, session=turn, run_config=run_config)
            await turn.commit(result)
        print_turn(sessions[kind], "user 123", message, result)

    print("\nWhat each id says about itself (parse_session_id):")
    for session_id in ids.values():
        parsed = parse_session_id(session_id)
        parts = {k: v for k, v in vars(parsed).items() if v is not None and k != "kind"}
        print(f"  {session_id:<29} kind={parsed.kind:<8} {parts}")

    print("\nThe inventory of what this demo created (python agent.py sessions list --tenant demo):")
    inventory = store or SQLiteStore(db_path)
    rows = [
        row for row in await list_sessions(inventory, tenant=DEMO_TENANT) if row.session_id in ids.values()
    ]
    for line in format_listing(rows):
        print(f"  {line}")

    await print_sessions(sessions)
    return sessions


# --8<-- [end:naming]


# --- Extra: a refund that waits for a supervisor ------------------------------------------


# --8<-- [start:refund]
async def approval_demo(
    *, model: ModelLike = None, store: SessionStore | None = None, db_path: str | Path = DEFAULT_DB
) -> dict[str, Session]:
    """A tool call that needs a human: the turn pauses, the session waits, another process approves."""
    print("\n=== Extra: a refund that waits for a supervisor's approval ===")
    run_config = RunConfig(model=resolve_model(model))
    triage = support_agents(refunds=True)["Triage Agent"]
    session = open_session(thread_session_id("refund-5512", tenant=DEMO_TENANT), store or db_path)
    await start_fresh({"refund": session}, store, db_path)
    ledger = Ledger(store or SQLiteStore(db_path), session.session_id)
    await ledger.clear("refund")

    for message in (
        "Hi, my name is Dana and my order number is 5512.",
        "I was charged twice for order 5512, please refund it.",
        "Hello, is anyone there?",  # refused: the session waits for the supervisor
    ):
        try:
            async with one_turn(session, triage) as turn:
                result = await Runner.run(turn.agent, message, session=turn, run_config=run_config)
                await turn.commit(result)  # a paused run is kept beside the session, not in it
        except TurnFailed as exc:
            print(f"[{session.session_id}] dana: {message}")
            print(f"[{session.session_id}]   refused: {exc.cause}")
            continue
        if result.interruptions:  # nothing of this turn is in the history yet
            print(f"[{session.session_id}] dana: {message}")
            for call in result.interruptions:
                print(f"[{session.session_id}]   paused: {call.name}({call.arguments}) needs a supervisor")
            continue
        print_turn(session, "dana", message, result)

    # The supervisor, in another process: a new session object; the paused turn comes from the store.
    waiting_calls = await pending_approvals(ledger.store, session.session_id)
    if not waiting_calls:  # a real model may answer without the refund tool: then nothing waits
        print(f"\nNothing waits on {session.session_id}: the model did not call refund_order.")
        await print_sessions({"refund": session})
        return {"refund": session}
    for waiting in waiting_calls:
        asked = f"{waiting.tool}({waiting.arguments})"
        print(f"\nSupervisor sees: {waiting.session_id}: {waiting.agent} asks {asked}")
    resumed = open_session(session.session_id, store or db_path)
    # The decision and the resumed turn are one write: a second approval finds nothing waiting.
    # The session's ledger is the run's context: refund_order records each refund in it, once.
    result = await resume_turn(triage, resumed, approve=True, run_config=run_config, context=ledger)
    print_turn(resumed, "supervisor", "approve", result)
    await close_session(session)

    await print_sessions({"refund": resumed})
    refunds = await ledger.entries("refund")
    print(f"\nThe refund ledger, read back from the store: {len(refunds)} refund(s)")
    for call_id, order in refunds.items():
        print(f"  order {order} (tool call {call_id})")
    return {"refund": resumed}


# --8<-- [end:refund]


# --- Extra: what a user's conversations share -------------------------------------------


# --8<-- [start:memory]
async def memory_demo(
    *, model: ModelLike = None, store: SessionStore | None = None, db_path: str | Path = DEFAULT_DB
) -> dict[str, Session]:
    """User memory: a fact Alice gives support is known in her sales conversation, never in Bob's."""
    print("\n=== Extra: memory a user's conversations share ===")
    run_config = RunConfig(model=resolve_model(model))
    # with_memory: the instructions, then what is remembered about this user; remember: the tool
    # that adds to it. A fact remembered in a turn is written with that turn, or not at all.
    # Features of their own (not demo 2's support and sales sessions): each demo starts afresh.
    agents = {
        "helpdesk": Agent(
            name="Support Agent",
            instructions=with_memory("You resolve support tickets. Remember the customer's details."),
            tools=[remember],
        ),
        "shop": Agent(
            name="Sales Agent",
            instructions=with_memory("You answer questions about plans. Greet customers by name."),
            tools=[remember],
        ),
    }
    sessions = {
        (user, context): open_session(feature_session_id(context, user, tenant=DEMO_TENANT), store or db_path)
        for user, context in (("alice", "helpdesk"), ("alice", "shop"), ("bob", "shop"))
    }
    inventory = store or SQLiteStore(db_path)
    await start_fresh({f"{u}/{c}": session for (u, c), session in sessions.items()}, store, db_path)
    for user in ("alice", "bob"):
        await inventory.forget_memory(user_scope(user, DEMO_TENANT))

    script = [
        ("alice", "helpdesk", "Hi, my name is Alice and my email is alice@example.com."),
        ("alice", "helpdesk", "The export button gives an error."),
        ("alice", "shop", "I'm interested in the Enterprise plan for my team."),
        ("alice", "shop", "What's my name and my email?"),
        ("bob", "shop", "What's my name and my email?"),
    ]
    for user, context, message in script:
        async with one_turn(sessions[user, context], agents[context]) as turn:
            result = await Runner.run(turn.agent, message, session=turn, run_config=run_config)
            await turn.commit(result)
        print_turn(sessions[user, context], user, message, result)

    print("\nRemembered per user, read back from the store:")
    for user in ("alice", "bob"):
        facts = await inventory.load_memory(user_scope(user, DEMO_TENANT))
        print(f"  {user}: {facts or 'nothing'}")
    await print_sessions({f"{u} {c}": session for (u, c), session in sessions.items()})
    return {f"{u}/{c}": session for (u, c), session in sessions.items()}


# --8<-- [end:memory]


# --- Extra: a history cap -----------------------------------------------------------------


# --8<-- [start:history_cap]
class CountInput(RunHooks):
    """Records how many items each model call was sent (what the model saw, not what we hoped)."""

    def __init__(self) -> None:
        self.sent: list[int] = []

    async def on_llm_start(
        self, context: Any, agent: Any, system_prompt: Any, input_items: list[Any]
    ) -> None:
        self.sent.append(len(input_items))


async def history_cap_demo(
    *,
    model: ModelLike = None,
    store: SessionStore | None = None,
    db_path: str | Path = DEFAULT_DB,
    turns: int = 50,
    cap: int = 10,
) -> dict[str, Session]:
    """``SessionSettings(limit=...)`` bounds what each turn sends, and forgets the beginning; a
    summary of the older items keeps it. The store keeps everything either way."""
    print(f"\n=== Extra: a history cap over a {turns}-turn conversation ===")
    agent = Agent(name="Assistant", instructions="You are a helpful assistant.")
    resolved = resolve_model(model)
    configs = {
        "uncapped": RunConfig(model=resolved),
        # The cap counts items, not turns: 10 items is about the last 5 exchanges.
        "capped": RunConfig(model=resolved, session_settings=SessionSettings(limit=cap)),
        "summarized": RunConfig(model=resolved),
    }
    # The newest ``cap`` items as they are, and before them a summary of the rest, written by
    # the same model and updated in the turn's own write once ``cap`` more items have passed.
    summaries = {"summarized": Summaries(window=cap, threshold=cap, model=resolved)}
    sessions = {
        label: open_session(feature_session_id(label, "longtalk", tenant=DEMO_TENANT), store or db_path)
        for label in configs
    }
    await start_fresh(sessions, store, db_path)

    counters = {label: CountInput() for label in configs}
    tokens: dict[str, list[int]] = {label: [] for label in configs}
    usage = {label: Usage() for label in configs}
    messages = [f"Hi, my name is Kai. Note 1: my order number is {1001}."]
    messages += [f"Note {n}: my order number is {1000 + n}." for n in range(2, turns + 1)]
    answers: dict[str, str] = {}
    for message in [*messages, "What's my name?"]:
        for label, config in configs.items():
            async with one_turn(sessions[label], agent, summaries=summaries.get(label)) as turn:
                result = await Runner.run(
                    turn.agent, message, session=turn, run_config=config, hooks=counters[label]
                )
                await turn.commit(result)
            usage[label].add(result.context_wrapper.usage)
            tokens[label].append(result.context_wrapper.usage.input_tokens)
            if message == "What's my name?":
                answers[label] = str(result.final_output)

    print("items sent to the model per turn (the new message included), and input tokens:")
    print(f"{'turn':>5} | {'no cap':>8} | {f'cap {cap}':>8} | {'summary':>8} | input tokens, each way")
    for turn_number in sorted({t for t in (1, 2, 5, 10, 20, 30, 40) if t < turns} | {turns}):
        i = turn_number - 1
        sent = [counters[label].sent[i] for label in configs]
        spent = " / ".join(f"{tokens[label][i]}" for label in configs)
        print(f"{turn_number:>5} | {sent[0]:>8} | {sent[1]:>8} | {sent[2]:>8} | {spent}")

    print(f'\nAsked after turn {turns}, "What\'s my name?" (given at turn 1):')
    for label, reply in answers.items():
        print(f"  {label:>10}: {reply}")

    print("\nUsage per session, summed from the run results (the summarizer's own calls not included):")
    for label, session in sessions.items():
        u = usage[label]
        stored = len(await read_all(session))
        print(
            f"  {session.session_id}: {u.requests} requests, {u.input_tokens} input tokens, "
            f"{u.output_tokens} output tokens; the store holds {stored} items"
        )
    return sessions


# --8<-- [end:history_cap]


# --- Shared by the demos ------------------------------------------------------------------


async def start_fresh(sessions: dict[str, Session], store: SessionStore | None, db_path: str | Path) -> None:
    """Demos start from empty sessions so every run prints the same story (the history, the
    session's current agent and any paused turn: ``clear_session`` alone keeps the last two)."""
    inventory = store or SQLiteStore(db_path)
    for session in sessions.values():
        await inventory.delete(session.session_id)


def print_turn(session: Session, speaker: str, message: str, result: RunResult) -> None:
    """One turn of the transcript: session id, who spoke, any handoff, and who answered.

    Every line carries the session id, also each line of an answer that spans several.
    """
    prefix = f"[{session.session_id}]"
    print(f"{prefix} {speaker}: {message}")
    for item in result.new_items:
        if isinstance(item, HandoffOutputItem):
            print(f"{prefix}   handoff: {item.source_agent.name} -> {item.target_agent.name}")
    first, *rest = str(result.final_output).splitlines() or [""]
    print(f"{prefix} {result.last_agent.name}: {first}")
    for line in rest:
        print(f"{prefix}   {line}")


async def print_sessions(sessions: dict[str, Session]) -> None:
    """What each session holds, read back from the store: item count and every turn."""
    print("\nRead back from the store:")
    for label, session in sessions.items():
        items = await read_all(session)
        print(f"  {label} ({session.session_id}): {len(items)} items")
        for item in items:
            print(f"    {item_summary(item)}")


DEMOS = {
    "multi-user": multi_user_sessions,
    "context": context_based_sessions,
    "shared": shared_session_agents,
    "naming": session_naming_demo,
}
"""What ``python agent.py`` runs."""

EXTRA_DEMOS = {"history-cap": history_cap_demo, "refund": approval_demo, "memory": memory_demo}
"""Run by name only: ``python agent.py history-cap``."""


if __name__ == "__main__":
    from multisessions.cli import Lesson, main

    lesson = Lesson(
        DEMOS, EXTRA_DEMOS, agents=partial(support_agents, refunds=True), first_agent="Triage Agent"
    )
    sys.exit(main(sys.argv[1:], lesson))
