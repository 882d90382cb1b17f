"""SERVE_RATE: one budget per user for every worker on the store, kept where the store keeps sessions."""

from __future__ import annotations

import asyncio
import logging
import uuid

import pytest

from multisessions import ratelimit
from multisessions.ratelimit import LocalBuckets, SQLiteBuckets, turn_budget
from multisessions.stores import RedisStore, SQLiteStore, SQLStore
from stores_fixture import REDIS_URL, postgres_url


def test_the_bucket_refills_at_the_configured_rate():
    now = [0.0]
    limiter = LocalBuckets(6, clock=lambda: now[0])  # 6 a minute: one every 10 s
    assert [limiter.take_now("a") for _ in range(6)] == [0.0] * 6
    assert limiter.take_now("a") == pytest.approx(10.0)
    now[0] = 10.0
    assert limiter.take_now("a") == 0.0
    assert LocalBuckets(0).take_now("a") == 0.0


async def test_the_sqlite_bucket_refills_at_the_configured_rate(tmp_path):
    now = [1000.0]
    limiter = SQLiteBuckets(tmp_path / "s.db", 6, clock=lambda: now[0])
    assert [await limiter.take("a") for _ in range(6)] == [0.0] * 6
    assert await limiter.take("a") == pytest.approx(10.0)
    now[0] += 5.0
    assert await limiter.take("a") == pytest.approx(5.0)  # half a token back: five seconds to go
    now[0] += 5.0
    assert await limiter.take("a") == 0.0
    limiter.close()


def second_worker_store(store):
    """Another store object on the same data, as a second worker process opens it."""
    plain = store.store
    if isinstance(plain, SQLiteStore):
        return SQLiteStore(plain.db_path)
    if isinstance(plain, RedisStore):
        return RedisStore(f"{REDIS_URL}?key_prefix={plain.key_prefix}")
    return SQLStore(postgres_url())


async def test_two_workers_on_one_store_share_one_budget_per_user(store):
    other = second_worker_store(store)
    first, second = turn_budget(store.store, 5), turn_budget(other, 5)
    assert (
        type(first).__name__
        == {
            "sqlite": "SQLiteBuckets",
            "pooled": "SQLiteBuckets",
            "redis": "RedisBuckets",
            "postgres": "PostgresBuckets",
        }[store.kind]
    )
    alice, bob = f"alice-{uuid.uuid4().hex[:8]}", f"bob-{uuid.uuid4().hex[:8]}"
    try:
        taken = [await (first if n % 2 else second).take(alice) for n in range(5)]
        assert taken == [0.0] * 5
        # The sixth, on either worker, waits about 12 s (5 a minute), with a moment's refill off.
        assert 11.0 < await first.take(alice) <= 12.0
        assert 11.0 < await second.take(alice) <= 12.0
        assert await second.take(bob) == 0.0  # another user's budget is their own
    finally:
        first.close()
        second.close()
        if other is not store.store:
            await other.close()


async def test_a_store_that_fails_or_hangs_lets_the_turn_through_with_one_logged_line(
    monkeypatch, caplog, tmp_path
):
    dead = RedisStore("redis://127.0.0.1:9/0")  # nothing listens on port 9
    budget = turn_budget(dead, 5)
    with caplog.at_level(logging.WARNING, "multisessions.ratelimit"):
        assert await budget.take("alice") == 0.0
    assert [r.getMessage() for r in caplog.records] == [
        "rate limit not checked: the store failed (ConnectionError); the turn goes ahead"
    ]
    await dead.close()

    hanging = turn_budget(SQLiteStore(tmp_path / "s.db"), 5)

    async def never(key: str) -> float:
        await asyncio.sleep(60)
        return 0.0

    monkeypatch.setattr(hanging, "_take", never)
    monkeypatch.setattr(ratelimit, "CHECK_SECONDS", 0.05)
    caplog.clear()
    with caplog.at_level(logging.WARNING, "multisessions.ratelimit"):
        assert await asyncio.wait_for(hanging.take("alice"), 2) == 0.0
    assert "took over 0.05 s" in caplog.records[0].getMessage()


async def test_no_rate_means_no_limit_and_no_store_call(tmp_path):
    budget = turn_budget(SQLiteStore(tmp_path / "s.db"), 0)
    assert [await budget.take("alice") for _ in range(100)] == [0.0] * 100
    assert not (tmp_path / "s.db").exists()
