"""A streamed turn, printed word by word, kept only if it arrives whole (docs/turns.md: "stream_turn")."""

import asyncio
import sys
from pathlib import Path

# Run as a file from the project folder (`python examples/NAME.py`), the package is found beside
# this folder; installed (`pip install .`), it is found anyway.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agents import Agent, RunConfig, SQLiteSession
from openai.types.responses import ResponseTextDeltaEvent

from multisessions import OfflineModel, stream_turn

agent = Agent(name="Support Agent", instructions="Remember what the customer says.")
run_config = RunConfig(model=OfflineModel(), tracing_disabled=True)


async def main() -> None:
    session = SQLiteSession("user_ada", "sessions.db")
    await session.add_items([{"role": "user", "content": "My name is Ada."}])
    async with stream_turn(agent, session, "What's my name?", run_config=run_config) as result:
        async for event in result.stream_events():
            if event.type == "raw_response_event" and isinstance(event.data, ResponseTextDeltaEvent):
                print(event.data.delta, end="", flush=True)
    print()  # Your name is Ada.
    session.close()


if __name__ == "__main__":
    asyncio.run(main())
