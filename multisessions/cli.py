"""The command line behind ``python agent.py``: run demos, inspect sessions, chat.

    python agent.py [DEMO ...] [--db PATH | --store URL] [--model NAME] [--api API] [--offline]
    python agent.py sessions list [--tenant T | --all-tenants] [--user U] [--prefix P]
                                  [--limit N] [--cursor C] [--db PATH|--store URL]
    python agent.py sessions backfill [--db PATH|--store URL]
    python agent.py sessions show ID | delete ID | delete --user U | expire --older-than DAYS
    python agent.py chat --user NAME [--tenant T] [--feature F | --thread ID | --date today|YYYYMMDD]
                         [--on-busy wait|reject|interrupt]
    python agent.py approvals list | approve ID | reject ID [--reason TEXT]
    python agent.py users export --user U [--tenant T] [--output FILE] | forget --user U [--dry-run]

Every sessions command and the chat work in one tenant: ``--tenant T`` (ids ``T:...``), or
without it the sessions with no tenant. ``--user`` never reaches another tenant; only
``list``/``expire --all-tenants`` span every tenant. ``show``/``delete`` take a full id
(``demo:user_alice``), or an id inside ``--tenant``.

Settings are read once (settings.py); the store and the model are built once, in the one event
loop a command runs, and handed to what needs them. Every user error is one line.
Exit codes: 0 done, 1 a store, model or missing-session problem, 2 bad usage, 130 interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import math
import os
import sqlite3
import sys
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from agents import Agent, RunConfig
from agents.memory import Session
from agents.models.interface import Model

from multisessions.approvals import pending_approvals
from multisessions.chat import chat
from multisessions.conversations import backfill_conversations, decode_position, encode_position
from multisessions.effects import Ledger
from multisessions.errors import ConfigError, SessionBusy, StoreError, TurnFailed, UsageError
from multisessions.inventory import (
    delete_sessions,
    expire_sessions,
    find_session,
    format_listing,
    list_sessions,
)
from multisessions.items import history_lines, read_all
from multisessions.locks import DEFAULT_ON_BUSY, ON_BUSY
from multisessions.models import resolve_model, turn_deadline
from multisessions.naming import (
    check_session_id,
    check_tenant,
    scope_parts,
    tenant_prefix,
    user_scope,
    user_session_id,
)
from multisessions.settings import APIS, Settings, load_settings, parse_api
from multisessions.stores import (
    DEFAULT_DB,
    SessionInfo,
    SessionStore,
    SQLiteStore,
    check_db_path,
    close_session,
    describe_sqlite_failure,
    driver_errors,
    refuse_encrypted,
    refuse_sealed,
    scrub,
    store_for,
)
from multisessions.summaries import summaries_from
from multisessions.turns import resume_turn, why_it_failed
from multisessions.users import export_user, forget_user

Demo = Callable[..., Coroutine[Any, Any, Mapping[str, Session]]]


@dataclass
class Lesson:
    """What the lesson (agent.py) hands the command line: its demos and its support agents."""

    demos: Mapping[str, Demo]
    extras: Mapping[str, Demo] = field(default_factory=dict)
    agents: Callable[[], dict[str, Agent[Any]]] | None = None
    first_agent: str = ""
    program: str = "python agent.py"
    """How the user runs this command line, for its help (the installed command: ``multisessions``)."""
    demo_tenant: str | None = "demo"
    """The tenant the demos keep their sessions in: an empty listing points there when it holds some."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(message)


def _store_options(parser: argparse.ArgumentParser) -> None:
    where = parser.add_mutually_exclusive_group()
    where.add_argument(
        "--db", default=None, metavar="PATH", help=f"SQLite file for the sessions ({DEFAULT_DB})"
    )
    where.add_argument(
        "--store", default=None, metavar="URL", help="redis://... or postgresql://... (or SESSION_STORE_URL)"
    )


def _tenant_option(parser: argparse.ArgumentParser, *, all_tenants: bool = False) -> None:
    if not all_tenants:
        parser.add_argument("--tenant", metavar="T", help="sessions of tenant T (default: no tenant)")
        return
    scope = parser.add_mutually_exclusive_group()
    scope.add_argument("--tenant", metavar="T", help="sessions of tenant T (default: no tenant)")
    scope.add_argument("--all-tenants", action="store_true", help="every tenant's sessions (admin)")


def _days(value: str) -> float:
    try:
        days = float(value)
    except ValueError:
        days = math.nan
    if not math.isfinite(days) or days < 0:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number of days, zero or more")
    return days


def _rows(value: str) -> int:
    if not value.isdigit():
        raise argparse.ArgumentTypeError(f"{value!r} is not a number of rows, zero or more")
    return int(value)


def _model_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default=None, metavar="NAME", help="model name (or OPENAI_MODEL)")
    parser.add_argument("--api", default=None, choices=APIS, help="the API the server speaks (or OPENAI_API)")
    parser.add_argument("--offline", action="store_true", help="use the built-in offline model")


def _demo_parser(lesson: Lesson) -> argparse.ArgumentParser:
    program = lesson.program
    parser = _Parser(
        prog=program,
        description="Run the multi-session demos (the four main ones when no DEMO is named).",
        epilog=f"also: '{program} sessions --help' (inventory), '{program} chat --help', "
        f"'{program} approvals --help', '{program} users --help' (a user's data)",
    )
    names = ", ".join([*lesson.demos, *lesson.extras])
    parser.add_argument("demo", nargs="*", metavar="DEMO", help=f"one of: {names}")
    _store_options(parser)
    _model_options(parser)
    return parser


def _sessions_parser(program: str) -> argparse.ArgumentParser:
    parser = _Parser(prog=f"{program} sessions", description="List, show, delete and expire sessions.")
    sub = parser.add_subparsers(dest="action", required=True, parser_class=_Parser)
    listing = sub.add_parser("list", help="sessions, most recently active first")
    listing.add_argument("--user", help="only this user's sessions (in the tenant)")
    listing.add_argument("--prefix", help="only ids starting with this (in the tenant)")
    listing.add_argument(
        "--limit", type=_rows, default=100, metavar="N", help="at most N rows per page (0: all; default 100)"
    )
    listing.add_argument("--cursor", help="the next page: the cursor the previous page printed")
    _tenant_option(listing, all_tenants=True)
    backfill = sub.add_parser(
        "backfill", help="add sessions written before the conversation index to it (titles included)"
    )
    show = sub.add_parser("show", help="one session's history")
    show.add_argument("session_id", metavar="ID")
    _tenant_option(show)
    delete = sub.add_parser("delete", help="delete one session, or all of a user's")
    target = delete.add_mutually_exclusive_group(required=True)
    target.add_argument("session_id", metavar="ID", nargs="?")
    target.add_argument("--user", help="delete every session of this user (in the tenant)")
    _tenant_option(delete)
    expire = sub.add_parser("expire", help="delete sessions idle longer than DAYS")
    expire.add_argument("--older-than", type=_days, required=True, metavar="DAYS")
    _tenant_option(expire, all_tenants=True)
    for command in (listing, backfill, show, delete, expire):
        _store_options(command)
    for command in (delete, expire):
        command.add_argument("--dry-run", action="store_true", help="say what would go, remove nothing")
    return parser


def _approvals_parser(program: str) -> argparse.ArgumentParser:
    parser = _Parser(
        prog=f"{program} approvals",
        description="Tool calls waiting for a supervisor: list them, approve or reject (from any process).",
    )
    sub = parser.add_subparsers(dest="action", required=True, parser_class=_Parser)
    listing = sub.add_parser("list", help="every tool call waiting for a decision")
    approve = sub.add_parser("approve", help="approve the call paused on a session, and finish its turn")
    approve.add_argument("session_id", metavar="ID")
    reject = sub.add_parser("reject", help="reject the call paused on a session, and finish its turn")
    reject.add_argument("session_id", metavar="ID")
    reject.add_argument("--reason", default=None, help="what the model is told")
    for command in (listing, approve, reject):
        _store_options(command)
    for command in (approve, reject):
        _model_options(command)
    return parser


def _users_parser(program: str) -> argparse.ArgumentParser:
    parser = _Parser(
        prog=f"{program} users",
        description="A user's data on request: export everything kept for them, or forget it all.",
    )
    sub = parser.add_subparsers(dest="action", required=True, parser_class=_Parser)
    export = sub.add_parser("export", help="every session of the user, as one JSON document")
    export.add_argument("--output", metavar="FILE", help="write it to FILE (default: standard output)")
    forget = sub.add_parser("forget", help="remove everything kept for the user, nothing of anyone else")
    forget.add_argument("--dry-run", action="store_true", help="say what would go, remove nothing")
    for command in (export, forget):
        command.add_argument("--user", required=True, help="the user (in the tenant)")
        _tenant_option(command)
        _store_options(command)
    memory = sub.add_parser(
        "memory", help="what is remembered for a user across their conversations (all users: no --user)"
    )
    memory.add_argument("--user", help="the user (in the tenant); without it, every user with memory")
    memory.add_argument(
        "--delete", action="store_true", help="forget the user's memory (their sessions stay)"
    )
    _tenant_option(memory)
    _store_options(memory)
    return parser


def _chat_parser(program: str) -> argparse.ArgumentParser:
    parser = _Parser(prog=f"{program} chat", description="Chat with the support agents yourself.")
    parser.add_argument("--user", required=True)
    _tenant_option(parser)
    kind = parser.add_mutually_exclusive_group()
    kind.add_argument("--feature", help="a feature session: FEATURE_feature_user_USER")
    kind.add_argument("--thread", help="a thread session: thread_ID")
    kind.add_argument("--date", dest="day", metavar="today|YYYYMMDD", help="a dated session")
    parser.add_argument(
        "--on-busy",
        choices=ON_BUSY,
        default=DEFAULT_ON_BUSY,
        help="a message for a session busy with another turn: wait for it (default), "
        "reject it at once, or interrupt that turn",
    )
    _store_options(parser)
    _model_options(parser)
    return parser


def main(argv: Sequence[str], lesson: Lesson, settings: Settings | None = None) -> int:
    """Run the command line; returns the exit code. ``settings`` defaults to the environment's."""
    # The SDK logs failed model calls itself; the one line below says it better.
    logging.getLogger("openai.agents").setLevel(logging.CRITICAL)
    store_url: str | None = None
    db_path = DEFAULT_DB
    try:
        command, args = _parse(list(argv), lesson)
        settings = _with_options(load_settings() if settings is None else settings, args)
        store_url, db_path = settings.store_url, args.db or DEFAULT_DB
        return asyncio.run(command(args, lesson, settings))
    except UsageError as exc:
        return _fail(f"{exc} (see --help)", 2, store_url)
    except ConfigError as exc:
        return _fail(str(exc), 2, store_url)
    except (StoreError, ValueError) as exc:
        return _fail(str(exc), 1, store_url)
    except TurnFailed as exc:
        where = db_path if not store_url else "the store"
        secrets = [settings.api_key] if settings else []
        line = why_it_failed(exc, where=where, store_url=store_url, secrets=secrets)
        return _fail(f"{exc.session_id}: {line}", 1, store_url)
    except sqlite3.Error as exc:
        return _fail(describe_sqlite_failure(exc, db_path), 1, store_url)
    except BrokenPipeError:
        # The reader went away (`| head`): stop quietly, as other command-line tools do.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except OSError as exc:
        return _fail(describe_sqlite_failure(exc, db_path) if not store_url else str(exc), 1, store_url)
    except driver_errors() as exc:
        # A server that went away mid-command: the driver's first line, without the password.
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        return _fail(
            f"the store failed ({type(exc).__name__}: {reason}); is the server running?", 1, store_url
        )
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def _fail(line: str, code: int, store_url: str | None) -> int:
    """Print one error line (the store URL's secrets scrubbed from it); return the exit code.

    Whatever the line quotes (a hostile argument) cannot break it or drive the terminal: line
    breaks of every kind become spaces, other control characters are shown escaped."""
    text = " ".join(scrub(line, store_url).splitlines())
    text = "".join(ch if ch.isprintable() else ascii(ch)[1:-1] for ch in text)
    print(f"error: {text}", file=sys.stderr)
    return code


_COMMANDS = """usage: {program} sessions|approvals|chat|users ...

  {program} sessions list [--tenant T | --all-tenants]   the sessions in a store
  {program} approvals list | approve ID | reject ID        tool calls waiting for a supervisor
  {program} chat --user NAME                               chat with the support agents
  {program} users export|forget --user NAME                a user's data on request

'{program} COMMAND --help' for each command's options."""


Command = Callable[[argparse.Namespace, Lesson, Settings], Coroutine[Any, Any, int]]


_COMMAND_WORDS = ("sessions", "chat", "approvals", "users")
_VALUED = ("--db", "--store", "--tenant", "--model", "--api")
"""Options that take a value: ``--store URL sessions list`` is ``sessions list --store URL``."""


def _command_first(argv: list[str]) -> list[str]:
    """``argv`` with options given before a command word moved after it (the command takes them)."""
    at = 0
    while at < len(argv) and argv[at].startswith("-"):
        at += 2 if argv[at] in _VALUED else 1
    if 0 < at < len(argv) and argv[at] in _COMMAND_WORDS:
        return [*argv[at:], *argv[:at]]
    return argv


def _parse(argv: list[str], lesson: Lesson) -> tuple[Command, argparse.Namespace]:
    argv = _command_first(argv)
    if argv[:1] == ["sessions"]:
        return _sessions, _sessions_parser(lesson.program).parse_args(argv[1:])
    if argv[:1] == ["chat"]:
        return _chat, _chat_parser(lesson.program).parse_args(argv[1:])
    if argv[:1] == ["approvals"]:
        return _approvals, _approvals_parser(lesson.program).parse_args(argv[1:])
    if argv[:1] == ["users"]:
        return _users, _users_parser(lesson.program).parse_args(argv[1:])
    if not lesson.demos and not lesson.extras:
        if argv[:1] in (["-h"], ["--help"]):
            print(_COMMANDS.format(program=lesson.program))
            raise SystemExit(0)
        raise UsageError(f"choose a command: {lesson.program} sessions | approvals | chat | users")
    args = _demo_parser(lesson).parse_args(argv)
    known = {**lesson.demos, **lesson.extras}
    unknown = [name for name in args.demo if name not in known]
    if unknown:
        raise UsageError(f"unknown demo {unknown[0]!r}; choose from: {', '.join(known)}")
    return _demos, args


def _with_options(settings: Settings, args: argparse.Namespace) -> Settings:
    """The settings, with what the command line says on top."""
    if getattr(args, "offline", False):
        settings = replace(settings, offline=True)
    if getattr(args, "api", None):
        settings = replace(settings, api=parse_api(args.api))
    if getattr(args, "model", None):
        settings = replace(settings, model=args.model)
    if args.store:
        settings = replace(settings, store_url=args.store)
    if args.db:
        settings = replace(settings, store_url=None)  # --db names the SQLite file explicitly
    return settings


async def _open_store(
    args: argparse.Namespace, settings: Settings, *, must_exist: bool = False, writable: bool = True
) -> SessionStore:
    """The store the options name, checked: a reachable server, or a usable SQLite file."""
    if settings.store_url:
        store = store_for(settings)
        try:
            await store.check()
        except BaseException:
            await store.close()
            raise
        return store
    path = check_db_path(args.db or DEFAULT_DB, must_exist=must_exist, writable=writable)
    return store_for(settings, db_path=path)


def _model(args: argparse.Namespace, settings: Settings) -> Model:
    if args.model and settings.uses_offline_model:
        return resolve_model(args.model, settings)  # says the name is ignored for lack of a key
    return resolve_model(None, settings)


async def _demos(args: argparse.Namespace, lesson: Lesson, settings: Settings) -> int:
    known = {**lesson.demos, **lesson.extras}
    store = await _open_store(args, settings)  # a bad --db or an unreachable server fails here
    try:
        model = _model(args, settings)
        # A plain SQLite file: the demos open the SDK's SQLiteSession on it themselves.
        where: dict[str, Any] = {"store": store}
        if type(store) is SQLiteStore and isinstance(store, SQLiteStore) and store.pool is None:
            where = {"db_path": store.db_path}
        for name in args.demo or list(lesson.demos):
            for session in (await known[name](model=model, **where)).values():
                await close_session(session)
    finally:
        await store.close()
    return 0


async def _chat(args: argparse.Namespace, lesson: Lesson, settings: Settings) -> int:
    if lesson.agents is None:
        raise UsageError("this lesson has no agents to chat with")
    store = await _open_store(args, settings)
    try:
        model = _model(args, settings)
        return await chat(
            store,
            model,
            lesson.agents(),
            args.user,
            first_agent=lesson.first_agent,
            feature=args.feature,
            thread=args.thread,
            day=args.day,
            tenant=args.tenant,
            store_url=settings.store_url,
            turn_timeout=settings.turn_timeout,
            on_busy=args.on_busy,
            summaries=summaries_from(settings),
        )
    finally:
        await store.close()


async def _approvals(args: argparse.Namespace, lesson: Lesson, settings: Settings) -> int:
    store = await _open_store(args, settings, must_exist=True, writable=args.action != "list")
    try:
        if args.action == "list":
            waiting = await pending_approvals(store)
            for call in waiting:
                print(f"{call.session_id}  {call.agent}: {call.tool}({call.arguments})")
            print(f"{len(waiting)} call(s) waiting in {store.name}")
            return 0
        session_id = check_session_id(args.session_id)
        if await store.load_pending(session_id) is None:
            raise StoreError(
                f"no call waits for approval on {session_id!r}; see: {lesson.program} approvals list"
            )
        agents = lesson.agents() if lesson.agents is not None else {}
        if lesson.first_agent not in agents:
            raise StoreError("this lesson has no agents to resume a paused turn with")
        session = store.open(session_id)
        try:
            with turn_deadline(settings.turn_timeout):
                result = await resume_turn(
                    agents[lesson.first_agent],
                    session,
                    approve=args.action == "approve",
                    reason=getattr(args, "reason", None),
                    run_config=RunConfig(model=_model(args, settings)),
                    context=Ledger(store, session_id),  # tools with side effects record them once
                )
        finally:
            await close_session(session)
        done = {"approve": "approved", "reject": "rejected"}[args.action]
        if result.interruptions:
            print(f"[{session_id}] {done}; the turn paused again for another call")
            return 0
        print(f"[{session_id}] {done}. {result.last_agent.name}: {result.final_output}")
        return 0
    finally:
        await store.close()


async def _sessions(args: argparse.Namespace, lesson: Lesson, settings: Settings) -> int:
    store = await _open_store(args, settings, must_exist=True, writable=args.action in ("delete", "expire"))
    try:
        return await _inventory(args, store, lesson.demo_tenant)
    finally:
        await store.close()


async def _users(args: argparse.Namespace, lesson: Lesson, settings: Settings) -> int:
    if args.action == "memory":
        return await _memory(args, settings)
    # Both take leases (a turn running on a session finishes first): both write the file.
    store = await _open_store(args, settings, must_exist=True)
    try:
        who = f"user {args.user!r}" + (f" (tenant {args.tenant!r})" if args.tenant is not None else "")
        try:
            if args.action == "forget":
                removed = await forget_user(store, args.user, tenant=args.tenant, dry_run=args.dry_run)
                print(f"{'would remove' if args.dry_run else 'removed'} {who}: {removed.describe()}")
                return 0
            exported = await export_user(store, args.user, tenant=args.tenant)
        except SessionBusy as exc:  # a turn of the user's held a session for longer than we wait
            raise StoreError(str(exc)) from None
        document = json.dumps(exported, indent=2)
        if args.output is None:
            print(document)
            return 0
        try:
            with open(args.output, "w", encoding="utf-8") as out:
                out.write(document + "\n")
        except OSError as exc:
            reason = f"cannot write {args.output} ({exc.strerror}); choose another --output"
            raise StoreError(reason) from None
        print(f"exported {who}: {len(exported['sessions'])} session(s) to {args.output}")
        return 0
    finally:
        await store.close()


async def _memory(args: argparse.Namespace, settings: Settings) -> int:
    """``users memory``: every user with memory in the tenant, one user's facts, or forget them."""
    if args.delete and args.user is None:
        raise UsageError("users memory --delete needs --user USER")
    tenant = None if args.tenant is None else check_tenant(args.tenant)
    where = f"tenant {tenant!r}" if tenant is not None else "no tenant"
    store = await _open_store(args, settings, must_exist=True, writable=args.delete)
    try:
        if args.user is None:
            users = sorted(
                (scope_parts(scope)[1], facts)
                for scope, facts in (await store.memory_scopes()).items()
                if scope_parts(scope)[0] == tenant
            )
            for user, facts in users:
                print(f"{user}  {facts} fact(s)")
            print(f"{len(users)} user(s) with memory in {where} of {store.name}")
            return 0
        user_session_id(args.user)  # the same checks as the user's ids
        scope = user_scope(args.user, tenant)
        if args.delete:
            print(
                f"removed {await store.forget_memory(scope)} memory fact(s) of user {args.user!r} in {where}"
            )
            return 0
        remembered = await store.load_memory(scope)
        refuse_sealed(f"the memory of user {args.user!r}", remembered.values())
        for fact, value in remembered.items():
            print(f"{fact}: {value}")
        print(f"{len(remembered)} fact(s) remembered for user {args.user!r} in {where}")
        return 0
    finally:
        await store.close()


def _moment(row: SessionInfo) -> float:
    """Where a session sits in the listing's order (newest first, as ``list_sessions`` sorts)."""
    return row.last_activity.timestamp() if row.last_activity else -1e18  # no time: listed last


def _full_id(args: argparse.Namespace) -> str:
    """``show``/``delete`` ID: a full id, or (with ``--tenant T``) an id inside tenant T."""
    if args.tenant is None:
        return check_session_id(args.session_id)
    return check_session_id(f"{tenant_prefix(check_tenant(args.tenant))}{args.session_id}")


async def _inventory(args: argparse.Namespace, store: SessionStore, demo_tenant: str | None = None) -> int:
    tenant = getattr(args, "tenant", None)
    where = f"tenant {tenant!r}" if tenant is not None else "no tenant"
    if getattr(args, "all_tenants", False):
        where = "any tenant"
    if args.action == "list":
        rows = await list_sessions(
            store, tenant=tenant, user=args.user, prefix=args.prefix, all_tenants=args.all_tenants
        )
        total = len(rows)
        if args.cursor is not None:
            # The operator's listing scans the store (every tenant, any id): the cursor is a place
            # in its order, newest first, so a page never repeats or skips a session.
            try:
                after = decode_position(args.cursor)
            except ValueError as exc:
                raise UsageError(f"--cursor: {exc}") from None
            rows = [r for r in rows if (_moment(r), r.session_id) < after]
        more = bool(args.limit) and len(rows) > args.limit
        page = rows[: args.limit] if args.limit else rows
        for line in format_listing(page):
            print(line)
        if more:
            cursor = encode_position(_moment(page[-1]), page[-1].session_id)
            print(f"{len(page)} of {len(rows)} shown; the next page: --cursor {cursor}")
        if not rows and tenant is None and not args.all_tenants and demo_tenant is not None:
            # Right after the demos: theirs are in a tenant of their own, never beside a user's.
            if await list_sessions(store, tenant=demo_tenant, user=args.user, prefix=args.prefix):
                hint = f"the demos keep theirs in tenant {demo_tenant}: --tenant {demo_tenant}"
                print(f"0 sessions in {store.name} ({hint})")
                return 0
        print(f"{total} session(s) in {store.name}" + (f", {where}" if where != "no tenant" else ""))
        return 0
    if args.action == "backfill":
        added = await backfill_conversations(store)
        print(f"{added} session(s) added to the conversation index of {store.name}")
        return 0
    if args.action == "show":
        row = await find_session(store, _full_id(args))
        # Reading only: a read-only file or folder can be shown (the SDK's session writes on open).
        session = getattr(store, "open_read_only", store.open)(row.session_id)
        try:
            items = await read_all(session)
        finally:
            await close_session(session)
        refuse_encrypted(row.session_id, items)  # read without the key: say so, not 6 odd rows
        agent = await store.load_last_agent(row.session_id)
        print(f"{row.session_id}: {row.items} items" + (f", last agent {agent}" if agent else ""))
        for line in history_lines(items):
            print(f"  {line}")
        return 0
    if args.action == "delete" and args.user is not None:
        rows = await list_sessions(store, tenant=tenant, user=args.user)
        if_none = f"no sessions for user {args.user!r} ({where}) in {store.name}"
    elif args.action == "delete":
        rows = [await find_session(store, _full_id(args))]
        if_none = ""
    else:
        rows = await expire_sessions(
            store, args.older_than, tenant=tenant, all_tenants=args.all_tenants, dry_run=True
        )
        if_none = f"no session ({where}) idle longer than {args.older_than:g} days in {store.name}"
    # Destructive: say what goes before it goes.
    for row in rows:
        print(f"{'would remove' if args.dry_run else 'removing'} {row.session_id} ({row.items} items)")
    total = await delete_sessions(store, rows, dry_run=args.dry_run)
    print(
        f"{'would remove' if args.dry_run else 'removed'} {len(rows)} session(s), {total} items"
        if rows
        else if_none
    )
    return 0


__all__ = ["Lesson", "main"]
