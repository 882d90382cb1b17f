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
from tools.loadtest import compare, compare_table, run_load

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


async def test_compare_measures_both_floors_and_serve_py_in_one_run_with_the_ratios():
    rows = await compare(4, 2, [None], [1], repeat=2, progress=False)
    assert [(row.what, row.result.store, row.workers) for row in rows] == [
        ("SDK floor (in process)", "memory", 0),
        ("HTTP floor", "memory", 1),
        ("serve.py", "sqlite", 1),
    ]
    for row in rows:
        assert row.result.answered == 8 and row.bad == 0, (row.what, row.result.first_errors)
        assert row.result.recalled == 4, row.what
    sdk, http, serve = (row.result.turns_per_s for row in rows)
    assert rows[2].vs_http_floor == round(serve / http, 2)
    assert rows[2].vs_sdk_floor == round(serve / sdk, 2)
    table = compare_table(rows).splitlines()
    assert len(table) == 2 + 3 and table[0].startswith("| what | store | workers | turns/s")
    assert f"| {rows[2].vs_http_floor:.2f} |" in table[4]
