"""The `store` fixture: every store the project supports, skipped (or failed in CI) without its server."""

from __future__ import annotations

import os
import uuid

import pytest

from multisessions import SQLitePool, SQLiteStore, StoreError
from multisessions.stores import RedisStore, SQLStore

REDIS_URL = "redis://127.0.0.1:6379/15"
POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/test"
STORE_KINDS = ["sqlite", "pooled", "redis", "postgres"]


def unavailable(kind: str, reason: str) -> None:
    """Skip on a machine without the server; in CI (CI=true) a missing server is a failure."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"{kind} is required in CI and is not usable: {reason}")
    pytest.skip(f"{kind} is not usable on this machine: {reason}")


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
    if kind == "sqlite":
        return SQLiteStore(tmp_path / "sessions.db")
    if kind == "pooled":
        return SQLiteStore(tmp_path / "sessions.db", pool=SQLitePool(tmp_path / "sessions.db", max_open=4))
    try:
        store = RedisStore(f"{REDIS_URL}?key_prefix={prefix}") if kind == "redis" else SQLStore(POSTGRES_URL)
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
