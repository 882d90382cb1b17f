"""Command line for agent.py: run demos, inspect sessions, chat; every user error is one line.

    python agent.py [DEMO ...] [--db PATH] [--model NAME] [--offline]
    python agent.py sessions list [--user U] [--prefix P] [--db PATH]
    python agent.py sessions show ID | delete ID | delete --user U | expire --older-than DAYS
    python agent.py chat --user NAME [--feature F | --thread ID | --date today|YYYYMMDD]

Exit codes: 0 done, 1 a store, model or missing-session problem, 2 bad usage, 130 interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sqlite3
import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from model_config import force_offline, resolve_model
from naming import check_session_id
from store_urls import close_stores, store_for_url, store_url
from stores import (
    SessionStore,
    SQLiteStore,
    StoreError,
    check_db_path,
    close_session,
    expire_sessions,
    find_session,
    format_listing,
    history_lines,
    list_sessions,
    read_all,
)
from turns import TurnFailed, describe_failure

Demo = Callable[..., Awaitable[Any]]


class UsageError(Exception):
    """Bad command-line usage (exit 2)."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(message)


def _store_options(parser: argparse.ArgumentParser) -> None:
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--db", default=None, metavar="PATH", help="SQLite file for the sessions")
    where.add_argument(
        "--store", default=None, metavar="URL", help="redis://... or postgresql://... (or SESSION_STORE_URL)"
    )


def _model_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default=None, metavar="NAME", help="OpenAI model name")
    parser.add_argument("--offline", action="store_true", help="use the built-in offline model")


def _demo_parser(demos: dict[str, Demo], extras: dict[str, Demo]) -> argparse.ArgumentParser:
    parser = _Parser(
        prog="python agent.py",
        description="Run the multi-session demos (the four main ones when no DEMO is named).",
        epilog="also: 'python agent.py sessions --help' (inventory), 'python agent.py chat --help'",
    )
    names = ", ".join([*demos, *extras])
    parser.add_argument("demo", nargs="*", metavar="DEMO", help=f"one of: {names}")
    _store_options(parser)
    _model_options(parser)
    return parser


def _sessions_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python agent.py sessions", description="List, show, delete and expire sessions.")
    sub = parser.add_subparsers(dest="action", required=True, parser_class=_Parser)
    listing = sub.add_parser("list", help="sessions, most recently active first")
    listing.add_argument("--user", help="only this user's sessions")
    listing.add_argument("--prefix", help="only ids starting with this")
    show = sub.add_parser("show", help="one session's history")
    show.add_argument("session_id", metavar="ID")
    delete = sub.add_parser("delete", help="delete one session, or all of a user's")
    target = delete.add_mutually_exclusive_group(required=True)
    target.add_argument("session_id", metavar="ID", nargs="?")
    target.add_argument("--user", help="delete every session of this user")
    expire = sub.add_parser("expire", help="delete sessions idle longer than DAYS")
    expire.add_argument("--older-than", type=float, required=True, metavar="DAYS")
    for command in (listing, show, delete, expire):
        _store_options(command)
    for command in (delete, expire):
        command.add_argument("--dry-run", action="store_true", help="say what would go, remove nothing")
    return parser


def _chat_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python agent.py chat", description="Chat with the support agents yourself.")
    parser.add_argument("--user", required=True)
    kind = parser.add_mutually_exclusive_group()
    kind.add_argument("--feature", help="a feature session: FEATURE_feature_user_USER")
    kind.add_argument("--thread", help="a thread session: thread_ID")
    kind.add_argument("--date", dest="day", metavar="today|YYYYMMDD", help="a dated session")
    _store_options(parser)
    _model_options(parser)
    return parser


def main(argv: Sequence[str], demos: dict[str, Demo], extras: dict[str, Demo] | None = None) -> int:
    """Run the command line; returns the exit code."""
    # The SDK logs failed model calls itself; the one line below says it better.
    logging.getLogger("openai.agents").setLevel(logging.CRITICAL)
    try:
        return _dispatch(list(argv), demos, extras or {})
    except UsageError as exc:
        print(f"error: {exc} (see --help)", file=sys.stderr)
        return 2
    except (StoreError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except TurnFailed as exc:
        print(f"error: {exc.session_id}: {describe_failure(exc.cause)}", file=sys.stderr)
        return 1
    except sqlite3.Error as exc:
        print(f"error: the database failed ({exc}); check the --db file and its folder", file=sys.stderr)
        return 1
    except BrokenPipeError:
        # The reader went away (`| head`): stop quietly, as other command-line tools do.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except OSError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def _dispatch(argv: list[str], demos: dict[str, Demo], extras: dict[str, Demo]) -> int:
    if argv[:1] == ["sessions"]:
        return asyncio.run(_sessions(_with_store(_sessions_parser().parse_args(argv[1:]))))
    if argv[:1] == ["chat"]:
        return asyncio.run(_chat(_with_store(_chat_parser().parse_args(argv[1:]))))
    return _demos(argv, demos, extras)


def _with_store(args: argparse.Namespace) -> argparse.Namespace:
    if args.store:
        os.environ["SESSION_STORE_URL"] = args.store  # open_session in agent.py reads it
    if not store_url():
        from agent import DEFAULT_DB

        args.db = args.db or DEFAULT_DB
    return args


async def _open_store(
    args: argparse.Namespace, *, must_exist: bool = False, writable: bool = True
) -> SessionStore:
    """The store the options name, checked: a reachable server, or a usable SQLite file."""
    url = store_url()
    if url:
        store = store_for_url(url)
        await store.check()
        return store
    return SQLiteStore(check_db_path(args.db, must_exist=must_exist, writable=writable))


async def _chat(args: argparse.Namespace) -> int:
    from chat import chat

    force_offline(args.offline)
    try:
        store = await _open_store(args)
        model = resolve_model(args.model)
        return await chat(store, model, args.user, feature=args.feature, thread=args.thread, day=args.day)
    finally:
        await close_stores()


def _demos(argv: list[str], demos: dict[str, Demo], extras: dict[str, Demo]) -> int:
    args = _demo_parser(demos, extras).parse_args(argv)
    known = {**demos, **extras}
    unknown = [name for name in args.demo if name not in known]
    if unknown:
        raise UsageError(f"unknown demo {unknown[0]!r}; choose from: {', '.join(known)}")
    force_offline(args.offline)
    _with_store(args)
    for name in args.demo or list(demos):
        asyncio.run(_run_demo(known[name], args))
    return 0


async def _run_demo(demo: Demo, args: argparse.Namespace) -> None:
    try:
        await _open_store(args)  # a bad --db or an unreachable server fails here, in one line
        kwargs: dict[str, Any] = {"model": args.model}
        if args.db:
            kwargs["db_path"] = args.db
        for session in (await demo(**kwargs)).values():
            await close_session(session)
    finally:
        await close_stores()


async def _sessions(args: argparse.Namespace) -> int:
    try:
        return await _inventory(args)
    finally:
        await close_stores()


async def _inventory(args: argparse.Namespace) -> int:
    store = await _open_store(args, must_exist=True, writable=args.action in ("delete", "expire"))
    if args.action == "list":
        rows = await list_sessions(store, user=args.user, prefix=args.prefix)
        for line in format_listing(rows):
            print(line)
        print(f"{len(rows)} session(s) in {store.name}")
    elif args.action == "show":
        row = await find_session(store, check_session_id(args.session_id))
        session = store.open(row.session_id)
        try:
            items = await read_all(session)
        finally:
            await close_session(session)
        agent = await store.load_last_agent(row.session_id)
        print(f"{row.session_id}: {row.items} items" + (f", last agent {agent}" if agent else ""))
        for line in history_lines(items):
            print(f"  {line}")
    else:
        if args.action == "delete" and args.user is not None:
            rows = await list_sessions(store, user=args.user)
            if_none = f"no sessions for user {args.user!r} in {store.name}"
        elif args.action == "delete":
            rows = [await find_session(store, check_session_id(args.session_id))]
            if_none = ""
        else:
            rows = await expire_sessions(store, args.older_than, dry_run=True)
            if_none = f"no session idle longer than {args.older_than:g} days in {store.name}"
        # Destructive: say what goes before it goes.
        for row in rows:
            print(f"{'would remove' if args.dry_run else 'removing'} {row.session_id} ({row.items} items)")
        if not args.dry_run:
            for row in rows:
                await store.delete(row.session_id)
        total = sum(row.items for row in rows)
        print(
            f"{'would remove' if args.dry_run else 'removed'} {len(rows)} session(s), {total} items"
            if rows
            else if_none
        )
    return 0
