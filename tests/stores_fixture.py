"""The `store` fixture: every store the project supports, skipped (or failed in CI) without its server.

Each test process has a PostgreSQL database of its own, so tests that list every session or every
paused turn of the database see only their process's: ``test_gw0``, ``test_gw1``... under
pytest-xdist (``test_main`` in a run without it), emptied when the process first uses it. A file
lock claims the name, so a second run on the same machine at the same time (another developer's)
takes ``test_gw0_1`` instead of sharing. Redis tests keep each test's keys under a key prefix of its
own in db 15. The documented database (``test``) and Redis keys (prefix ``multi_sessions``) are
left to tests/test_docs.py, which runs the commands docs/stores.md shows as it shows them.
"""

from __future__ import annotations

import fcntl
import itertools
import os
import tempfile
import uuid
from pathlib import Path
from typing import IO

import pytest

REDIS_URL = "redis://127.0.0.1:6379/15"
POSTGRES_SERVER = "postgresql://postgres@127.0.0.1:5432"
MAINTENANCE_DATABASES = ("postgres", "test")
"""Where ``CREATE DATABASE`` runs from (it cannot run in the database it creates)."""
STORE_KINDS = ["sqlite", "pooled", "redis", "postgres"]

_claimed: list[tuple[str, IO[str]]] = []  # this process's database name and the lock file holding it
_emptied = False


def unavailable(kind: str, reason: str) -> None:
    """Skip on a machine without the server; in CI (CI=true) a missing server is a failure."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"{kind} is required in CI and is not usable: {reason}")
    pytest.skip(f"{kind} is not usable on this machine: {reason}")


def database_name() -> str:
    """This process's PostgreSQL database: ``test_<xdist worker>``, claimed for the process's lifetime.

    The lock is an ``flock`` on a file in the temp folder: the kernel frees it when the process
    ends, however it ends, so a crashed run never keeps a name from the next one.
    """
    if not _claimed:
        worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
        folder = Path(tempfile.gettempdir()) / "multisessions-test-databases"
        folder.mkdir(exist_ok=True)
        for n in itertools.count():
            name = f"test_{worker}" if n == 0 else f"test_{worker}_{n}"
            lock = open(folder / f"{name}.lock", "a")  # noqa: SIM115 (held until the process ends)
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:  # another test process on this machine has it
                lock.close()
                continue
            _claimed.append((name, lock))
            break
    return _claimed[0][0]


def postgres_url(driver: str = "postgresql") -> str:
    """The URL of this process's database (``driver`` ``postgresql+asyncpg`` for SQLAlchemy itself).

    Await ``empty_postgres_database()`` once before using it (the fixtures below do).
    """
    return f"{driver}://{POSTGRES_SERVER.split('://', 1)[1]}/{database_name()}"


async def empty_postgres_database() -> None:
    """Create this process's database, or empty it, on the process's first use; skip (or fail in CI)
    with the reason if the server cannot be reached.

    The tables are created here, before any test, as they already exist in a long-lived database
    (several processes creating them at once in a new one is not what the tests are about): the
    tests start from the same state every run.
    """
    global _emptied
    if _emptied:
        return
    name = database_name()
    try:
        import asyncpg
    except ImportError:
        unavailable("postgres", "asyncpg is not installed (pip install -r requirements-stores.txt)")
    errors: dict[str, None] = {}  # each reason once, in order
    for maintenance in MAINTENANCE_DATABASES:
        try:
            conn = await asyncpg.connect(f"{POSTGRES_SERVER}/{maintenance}", timeout=10)
        except Exception as exc:
            errors[f"{type(exc).__name__}: {exc}"] = None
            continue
        try:
            exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name)
            if not exists:
                await conn.execute(f'CREATE DATABASE "{name}"')  # outside a transaction, as it must be
        finally:
            await conn.close()
        break
    else:
        unavailable("postgres", f"cannot create database {name} on {POSTGRES_SERVER} ({'; '.join(errors)})")
    conn = await asyncpg.connect(postgres_url(), timeout=10)
    try:
        rows = await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        tables = [row[0] for row in rows]
        if tables:  # left by an earlier run in this database: start empty
            await conn.execute(f"TRUNCATE {', '.join(f'public.{t}' for t in tables)}")
    finally:
        await conn.close()
    await _create_tables()
    _emptied = True


async def _create_tables() -> None:
    """One turn and one listing create every table (the SDK's, last agent, pending turns, leases) that
    is not there yet, and leave none of their rows."""
    from agents import Agent, RunConfig

    from multisessions import OfflineModel, run_turn
    from multisessions.stores import SQLStore

    store = SQLStore(postgres_url())
    try:
        config = RunConfig(model=OfflineModel())
        await run_turn(Agent(name="Setup"), store.open("setup"), "hi", run_config=config)
        await store.list_sessions()
        await store.delete("setup")
    finally:
        await store.close()


class Tracked:
    """A store that remembers the sessions a test opened, so teardown removes exactly those."""

    def __init__(self, store, kind: str) -> None:
        self.store = store
        self.kind = kind
        self.opened: set[str] = set()

    def open(self, session_id: str):
        self.opened.add(session_id)
        return self.store.open(session_id)

    def __getattr__(self, name):
        return getattr(self.store, name)


async def make_store(kind: str, tmp_path, prefix: str):
    # Imported here: conftest.py loads this file in pytest-xdist's controller too, which runs no test.
    from multisessions import SQLitePool, SQLiteStore, StoreError
    from multisessions.stores import RedisStore, SQLStore

    if kind == "sqlite":
        return SQLiteStore(tmp_path / "sessions.db")
    if kind == "pooled":
        return SQLiteStore(tmp_path / "sessions.db", pool=SQLitePool(tmp_path / "sessions.db", max_open=4))
    if kind == "postgres":
        await empty_postgres_database()
    try:
        if kind == "redis":
            store = RedisStore(f"{REDIS_URL}?key_prefix={prefix}")
        else:
            store = SQLStore(postgres_url())
        await store.check()
    except StoreError as exc:
        unavailable(kind, str(exc))
    return store


@pytest.fixture(params=STORE_KINDS)
async def store(request, tmp_path):
    """A store of each kind; Redis keys get a per-test prefix, PostgreSQL rows are removed after."""
    kind = request.param
    tracked = Tracked(await make_store(kind, tmp_path, f"test-{uuid.uuid4().hex[:8]}"), kind)
    yield tracked
    if kind in ("redis", "postgres"):
        for session_id in tracked.opened:
            await tracked.store.delete(session_id)
        await tracked.store.close()
