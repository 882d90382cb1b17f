"""``multisessions`` (and ``python -m multisessions``): the inventory, approvals and the chat.

The same command line as ``python agent.py sessions|approvals|chat``, with the package's own
support desk (desk.py); the demos are the lesson's and run with ``python agent.py``.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from multisessions.cli import Lesson
from multisessions.cli import main as run
from multisessions.desk import FIRST_AGENT, support_agents


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command; returns its exit code."""
    desk = Lesson({}, agents=support_agents, first_agent=FIRST_AGENT, program="multisessions")
    return run(sys.argv[1:] if argv is None else argv, desk)


if __name__ == "__main__":
    sys.exit(main())
