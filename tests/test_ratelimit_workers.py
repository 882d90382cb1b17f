"""SERVE_RATE over `uvicorn serve:app --workers 2`: the workers admit the rate once, not once each."""

from __future__ import annotations

import asyncio
import uuid

import httpx
import pytest

from stores_fixture import REDIS_URL, make_store, postgres_url, unavailable
from tools.loadtest import free_port, start_server, stop_server, wait_until_ready

pytestmark = pytest.mark.slow  # starts processes or servers: python -m pytest -m slow

RATE = 4
TOKENS = {"alice": "alice-rate-token-0123456789", "bob": "bob-rate-token-0123456789"}


async def statuses(url: str, user: str, turns: int) -> list[int]:
    """``turns`` messages at once, each on a new connection, so both workers take some."""

    async def one(n: int) -> int:
        async with httpx.AsyncClient(timeout=60) as client:
            reply = await client.post(
                f"{url}/api/conversations/rated/messages",
                json={"message": f"message {n}"},
                headers={"Authorization": f"Bearer {TOKENS[user]}"},
            )
            return reply.status_code

    return list(await asyncio.gather(*(one(n) for n in range(turns))))


async def admitted_on_two_workers(folder, store_url: str | None) -> tuple[list[int], list[int]]:
    folder.mkdir()
    port = free_port()
    process = start_server(folder, port, 2, store_url, TOKENS, rate=RATE)
    try:
        await wait_until_ready(process, folder, 2)
        url = f"http://127.0.0.1:{port}"
        return await statuses(url, "alice", 3 * RATE), await statuses(url, "bob", 1)
    finally:
        stop_server(process)


async def test_two_workers_admit_serve_rate_turns_per_user_in_total(tmp_path):
    stores: dict[str, str | None] = {"sqlite": None}
    missing = {}
    prefix = f"ratetest-{uuid.uuid4().hex[:8]}"
    for kind in ("redis", "postgres"):
        try:
            store = await make_store(kind, tmp_path, prefix)
        except pytest.skip.Exception as reason:
            missing[kind] = str(reason)
            continue
        await store.close()
        stores[kind] = f"{REDIS_URL}?key_prefix={prefix}" if kind == "redis" else postgres_url()

    results = await asyncio.gather(
        *(admitted_on_two_workers(tmp_path / kind, url) for kind, url in stores.items())
    )
    for kind, (alice, bob) in zip(stores, results, strict=True):
        # Each worker alone would admit RATE: together they admit RATE, and refuse the rest.
        assert sorted(alice) == [200] * RATE + [429] * (2 * RATE), kind
        assert bob == [200], kind  # another user's budget is untouched
    if missing:
        unavailable(", ".join(missing), "; ".join(missing.values()))
