"""Across processes, on every store: turns serialised per session id, dead holders, approvals, streams."""

from __future__ import annotations

import os
import uuid

import pytest

from multisessions import StoreError, open_store
from stores_fixture import REDIS_URL, empty_postgres_database, postgres_url
from tools import stress

pytestmark = pytest.mark.slow  # starts processes or servers: python -m pytest -m slow


@pytest.fixture(params=["sqlite", "redis", "postgres"])
async def url(request) -> str | None:
    """No URL (the SQLite file), or a reachable server's URL: Redis with a key prefix of this test's
    own, PostgreSQL in a database of this test process's own."""
    if request.param == "sqlite":
        return None
    if request.param == "redis":
        url = f"{REDIS_URL}?key_prefix=xproc-{uuid.uuid4().hex[:8]}"
    else:
        await empty_postgres_database()  # this test process's own database
        url = postgres_url()
    store = open_store(url)
    try:
        await store.check()
    except StoreError as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{request.param} is required in CI: {exc}")
        pytest.skip(f"{request.param} is not usable here: {exc}")
    finally:
        await store.close()
    return url


def test_concurrent_turns_from_several_processes_each_see_every_turn_committed_before_them(url, db):
    figures = stress.one_session_many_processes(url, db, processes=3, turns=6)
    assert figures == {
        "processes": 3,
        "turns": 18,
        "errors": 0,
        "stale": 0,
        "interleaved": 0,
        "lost": 0,
        "duplicated": 0,
    }


def test_a_holder_killed_mid_turn_frees_the_session_within_its_lease(url, db):
    figures = stress.killed_holder(url, db, lease=0.5)
    assert figures["held_when_killed"] == 1  # the kill really came while the session was held
    assert 0.25 < figures["next_turn_after_s"] < 0.5 + 3.0  # waited for the lease, not forever
    assert figures["items_after"] == 2  # the killed turn left nothing; the next one is whole


def test_turns_paused_for_approval_are_decided_from_another_process_and_end_well_formed(url, db):
    figures = stress.paused_turns(url, db, turns=4)
    assert figures == {
        "paused": 4,
        "refused_meanwhile": 4,
        "decided_elsewhere": 4,
        "well_formed": 4,
        "still_waiting": 0,
    }


async def test_streams_left_early_or_cancelled_change_no_session(db):
    figures = await stress.abandoned_streams(db, streams=10)
    assert figures == {"abandoned": 10, "cancelled": 10, "sessions_changed": 0, "locks_left": 0}
