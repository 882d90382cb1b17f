"""Many users on one SQLite file in bounded resources (docs/stores.md: "Many users on one machine")."""

import asyncio
import sys
from pathlib import Path

# Run as a file from the project folder (`python examples/NAME.py`), the package is found beside
# this folder; installed (`pip install .`), it is found anyway.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agents import Agent, RunConfig, RunResult

from multisessions import OfflineModel, SQLitePool, run_turn, user_session_id

agent = Agent(name="Support Agent", instructions="Remember what the customer says.")
run_config = RunConfig(model=OfflineModel(), tracing_disabled=True)  # traces would upload every chat

pool = SQLitePool("sessions.db", max_open=8)  # handles hold no connection; turns share one
turns_at_once = asyncio.Semaphore(64)  # at most 64 turns running at once


async def handle(user_id: str, message: str) -> RunResult:
    async with turns_at_once:
        return await run_turn(agent, pool.session(user_session_id(user_id)), message, run_config=run_config)


async def main() -> None:
    await asyncio.gather(*(handle(f"u{i}", f"My email is u{i}@example.com.") for i in range(100)))
    answers = await asyncio.gather(*(handle(f"u{i}", "What's my email?") for i in range(100)))
    print(answers[42].final_output)  # Your email is u42@example.com.


if __name__ == "__main__":
    asyncio.run(main())
