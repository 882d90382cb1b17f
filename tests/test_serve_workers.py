"""Several workers on one store: `uvicorn serve:app --workers 2` on Redis and on PostgreSQL, over HTTP.

A CI-size run of tools/loadtest.py: every user states a fact and asks for it back while the
workers share one store; judged on the store (no session holds another user's fact, every
history is whole and in order), not only on the replies. The full-size figures are in the README.
"""

from __future__ import annotations

import asyncio
import uuid

import pytest

from stores_fixture import REDIS_URL, make_store, postgres_url, unavailable
from tools.loadtest import run_load

pytestmark = pytest.mark.slow  # starts processes or servers: python -m pytest -m slow


async def test_two_workers_on_redis_and_on_postgresql_serve_every_user_apart(tmp_path):
    usable, missing = {}, {}
    prefix = f"loadtest-{uuid.uuid4().hex[:8]}"  # this test's Redis keys, apart from any other test's
    for kind in ("redis", "postgres"):
        try:
            store = await make_store(kind, tmp_path, prefix)
        except pytest.skip.Exception as reason:  # no server here: run the other store, then skip
            missing[kind] = str(reason)
            continue
        await store.close()
        usable[kind] = f"{REDIS_URL}?key_prefix={prefix}" if kind == "redis" else postgres_url()

    # Both servers at once: their workers start in parallel, which halves the test's time.
    results = await asyncio.gather(*(run_load(20, 3, 2, url, progress=False) for url in usable.values()))
    for kind, result in zip(usable, results, strict=True):
        assert result.answered == 60 and result.errors == 0, (kind, result.first_errors)
        assert (result.leaks, result.interleaved, result.lost) == (0, 0, 0), kind
        assert result.recalled == 20, kind
    if missing:
        unavailable(", ".join(missing), "; ".join(missing.values()))
