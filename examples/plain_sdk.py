"""Demo 1 with the SDK alone: a session per user, three users, one database file, no project import.

Needs a model: OPENAI_API_KEY, and OPENAI_BASE_URL for any other OpenAI-compatible server.
"""

import asyncio

from agents import Agent, Runner, SQLiteSession, set_tracing_disabled

SCRIPT = [
    ("alice", "Hi, my name is Alice and my email is alice@example.com."),
    ("bob", "Hello, my name is Bob. My email is bob@example.org."),
    ("alice", "What's my name, and what's my email?"),
    ("bob", "What's my name, and what's my email?"),
    ("carol", "What's my name, and what's my email?"),  # a new user: her session is empty
]


async def main(db_path: str = "plain_sdk.db") -> None:
    set_tracing_disabled(True)  # traces would upload every conversation to OpenAI
    agent = Agent(name="Support Agent", instructions="You are a support agent. Use what the customer said.")
    sessions = {user: SQLiteSession(f"user_{user}", db_path) for user in ("alice", "bob", "carol")}
    for session in sessions.values():
        await session.clear_session()  # every run tells the same story
    for user, message in SCRIPT:
        result = await Runner.run(agent, message, session=sessions[user])
        print(f"[user_{user}] {user}: {message}")
        print(f"[user_{user}] {result.last_agent.name}: {result.final_output}")
    for session in sessions.values():
        print(f"{session.session_id}: {len(await session.get_items())} items")
        session.close()


if __name__ == "__main__":
    asyncio.run(main())
