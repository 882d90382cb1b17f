"""Command line for agent.py: run demos, and turn every user error into one line and an exit code.

    python agent.py [DEMO ...] [--db PATH] [--model NAME] [--offline]

Exit codes: 0 done, 1 a store or model problem, 2 bad usage, 130 interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sqlite3
import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from model_config import force_offline
from stores import StoreError, check_db_path
from turns import TurnFailed, describe_failure

Demo = Callable[..., Awaitable[Any]]


class UsageError(Exception):
    """Bad command-line usage (exit 2)."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(message)


def _demo_parser(demos: dict[str, Demo]) -> argparse.ArgumentParser:
    parser = _Parser(
        prog="python agent.py",
        description="Run the multi-session demos (all of them when no DEMO is named).",
        epilog="demos: " + ", ".join(demos),
    )
    parser.add_argument("demo", nargs="*", metavar="DEMO", help="one of: " + ", ".join(demos))
    parser.add_argument("--db", default=None, metavar="PATH", help="SQLite file for the sessions")
    parser.add_argument("--model", default=None, metavar="NAME", help="OpenAI model name")
    parser.add_argument("--offline", action="store_true", help="use the built-in offline model")
    return parser


def main(argv: Sequence[str], demos: dict[str, Demo]) -> int:
    """Run the command line; returns the exit code."""
    # The SDK logs failed model calls itself; the one line below says it better.
    logging.getLogger("openai.agents").setLevel(logging.CRITICAL)
    try:
        return _run(list(argv), demos)
    except UsageError as exc:
        print(f"error: {exc} (see --help)", file=sys.stderr)
        return 2
    except StoreError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except TurnFailed as exc:
        print(f"error: {exc.session_id}: {describe_failure(exc.cause)}", file=sys.stderr)
        return 1
    except sqlite3.Error as exc:
        print(f"error: the database failed ({exc}); check the --db file and its folder", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def _run(argv: list[str], demos: dict[str, Demo]) -> int:
    args = _demo_parser(demos).parse_args(argv)
    unknown = [name for name in args.demo if name not in demos]
    if unknown:
        raise UsageError(f"unknown demo {unknown[0]!r}; choose from: {', '.join(demos)}")
    force_offline(args.offline)
    kwargs: dict[str, Any] = {"model": args.model}
    if args.db is not None:
        kwargs["db_path"] = check_db_path(args.db)
    else:
        from agent import DEFAULT_DB

        check_db_path(DEFAULT_DB)
    for name in args.demo or list(demos):
        sessions = asyncio.run(demos[name](**kwargs))
        for session in sessions.values():
            close = getattr(session, "close", None)
            if callable(close):
                close()
    return 0
