"""What one user's page of conversations costs, whatever else the store holds.

    python -m tools.browse                              # SQLite: 100 vs 100,000 others, 10,000 of one user
    python -m tools.browse --store redis://127.0.0.1:6379/0 --others 100 100000 --mine 10000
    python -m tools.browse --quick                      # the sizes the tests use

The index rows of the other users (and of the user paged through) are written in bulk, as turns
would have left them, straight into the store's index: filling 100,000 sessions through turns
would take minutes and measure the turns, not the listing. Prints one JSON line per measure.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sqlite3
import statistics
import tempfile
import time
import uuid
from contextlib import closing
from pathlib import Path
from typing import Any

from multisessions import (
    RedisStore,
    SQLiteStore,
    SQLStore,
    feature_session_id,
    list_conversations,
    user_scope,
)
from multisessions.stores import SessionStore, open_store
from multisessions.stores.redis_turns import conversation_key, conversations_key
from multisessions.stores.sqlite_turns import (
    CONVERSATIONS_TABLE,
    CREATE_CONVERSATIONS_INDEX,
    CREATE_CONVERSATIONS_TABLE,
)

CHUNK = 5_000


def _rows(user: str, count: int, start: float) -> list[tuple[str, str, str, float, int]]:
    scope = user_scope(user)
    return [
        (scope, feature_session_id(f"c{i}", user), f"Conversation {i} of {user}", start + i / 1000, 2)
        for i in range(count)
    ]


async def fill(store: Any, rows: list[tuple[str, str, str, float, int]]) -> None:
    """Write index rows in bulk, in the store's own layout."""
    if isinstance(store, SQLiteStore):
        with closing(sqlite3.connect(store.db_path)) as conn, conn:
            conn.execute(CREATE_CONVERSATIONS_TABLE)
            conn.execute(CREATE_CONVERSATIONS_INDEX)
            conn.executemany(
                f"INSERT OR REPLACE INTO {CONVERSATIONS_TABLE} "
                "(scope, session_id, title, last_activity, items) VALUES (?, ?, ?, ?, ?)",
                rows,
            )
    elif isinstance(store, RedisStore):
        for first in range(0, len(rows), CHUNK):
            pipe = store.client.pipeline(transaction=False)
            for scope, session_id, title, when, items in rows[first : first + CHUNK]:
                pipe.zadd(conversations_key(store.key_prefix, scope), {session_id: when})
                pipe.hset(
                    conversation_key(store.key_prefix, session_id), mapping={"title": title, "items": items}
                )
            await pipe.execute()
    elif isinstance(store, SQLStore):
        from sqlalchemy import text

        await store.conversation_page("", 1)  # creates the tables
        async with store.engine.begin() as conn:
            for first in range(0, len(rows), CHUNK):
                await conn.execute(
                    text(
                        f"INSERT INTO {CONVERSATIONS_TABLE} (scope, session_id, title, last_activity, items) "
                        "VALUES (:s, :i, :t, :w, :n) ON CONFLICT (scope, session_id) DO NOTHING"
                    ),
                    [
                        {"s": s, "i": i, "t": t, "w": w, "n": n}
                        for s, i, t, w, n in rows[first : first + CHUNK]
                    ],
                )
    else:
        raise SystemExit(f"no bulk fill for {type(store).__name__}")


async def clean(store: Any, rows: list[tuple[str, str, str, float, int]]) -> None:
    """Remove what ``fill`` wrote (a server store outlives the run)."""
    if isinstance(store, RedisStore):
        for first in range(0, len(rows), CHUNK):
            chunk = rows[first : first + CHUNK]
            await store.client.delete(*{conversations_key(store.key_prefix, r[0]) for r in chunk})
            await store.client.delete(*[conversation_key(store.key_prefix, r[1]) for r in chunk])
    elif isinstance(store, SQLStore):
        from sqlalchemy import text

        async with store.engine.begin() as conn:
            for first in range(0, len(rows), CHUNK):
                await conn.execute(
                    text(f"DELETE FROM {CONVERSATIONS_TABLE} WHERE scope = :s AND session_id = :i"),
                    [{"s": r[0], "i": r[1]} for r in rows[first : first + CHUNK]],
                )


async def page_ms(store: SessionStore, user: str, repeats: int) -> float:
    """The median time of one first page (20 conversations) of ``user``, in ms."""
    times = []
    for _ in range(repeats):
        began = time.perf_counter()
        page = await list_conversations(store, user, limit=20)
        times.append((time.perf_counter() - began) * 1000)
        assert page.conversations
    return statistics.median(times)


async def run(store: SessionStore, others: list[int], mine: int, repeats: int) -> list[dict[str, Any]]:
    written: list[tuple[str, str, str, float, int]] = []
    try:
        return await _measure(store, others, mine, repeats, written)
    finally:
        await clean(store, written)


async def _measure(
    store: SessionStore,
    others: list[int],
    mine: int,
    repeats: int,
    written: list[tuple[str, str, str, float, int]],
) -> list[dict[str, Any]]:
    run_id = uuid.uuid4().hex[:6]
    results = []
    filled = 0
    user = f"reader{run_id}"
    written += _rows(user, 30, 1e9)
    await fill(store, written)
    for target in sorted(others):
        more = [row for n in range(filled, target) for row in _rows(f"o{run_id}x{n}", 1, 1e9 + n)]
        written += more
        await fill(store, more)
        filled = target
        results.append(
            {
                "measure": "first page",
                "other_sessions": target,
                "ms": round(await page_ms(store, user, repeats), 3),
            }
        )
    many = f"many{run_id}"
    theirs = _rows(many, mine, 1e9)
    written += theirs
    await fill(store, theirs)
    times: list[float] = []
    cursor, seen = None, 0
    while True:
        began = time.perf_counter()
        page = await list_conversations(store, many, limit=100, cursor=cursor)
        times.append((time.perf_counter() - began) * 1000)
        seen += len(page.conversations)
        cursor = page.next_cursor
        if cursor is None:
            break
    assert seen == mine, (seen, mine)
    results.append(
        {
            "measure": "every page of one user",
            "conversations": mine,
            "pages": len(times),
            "first_ms": round(times[0], 3),
            "middle_ms": round(statistics.median(times[len(times) // 2 - 2 : len(times) // 2 + 3]), 3),
            "last_ms": round(times[-1], 3),
            "median_ms": round(statistics.median(times), 3),
        }
    )
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tools.browse", description=__doc__.splitlines()[0])
    parser.add_argument("--store", help="a store URL (default: a new SQLite file)")
    parser.add_argument("--others", type=int, nargs="+", default=[100, 100_000])
    parser.add_argument("--mine", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--quick", action="store_true", help="small sizes (for the tests)")
    args = parser.parse_args(argv)
    if args.quick:
        args.others, args.mine, args.repeats = [10, 200], 250, 5
    with tempfile.TemporaryDirectory() as folder:
        store = open_store(args.store) if args.store else SQLiteStore(Path(folder) / "browse.db")
        results = asyncio.run(_run_and_close(store, args))
    for result in results:
        print(json.dumps({"store": store.name, **result}))


async def _run_and_close(store: SessionStore, args: argparse.Namespace) -> list[dict[str, Any]]:
    try:
        return await run(store, args.others, args.mine, args.repeats)
    finally:
        await store.close()


if __name__ == "__main__":
    main()
