"""PostgreSQL's short turn path: a turn's start and its commit, one round trip each, over asyncpg.

Through ``SQLAlchemySession`` and ``SQLLeases`` a turn took 21 round trips (counted through a
relay: lease, paused check, history, renewal, the SDK's locked insert and touch, release, each
with its BEGIN and COMMIT), each through SQLAlchemy's layers: far slower than the no-session
floor with many users. Here two server-side functions do the same work, on one small asyncpg
pool of our own, in the SDK's own tables and formats, so that ``SQLAlchemySession.get_items()``
reads back exactly what it would have written:

- ``multisessions_turn_begin_many_v3`` takes each turn's lease and, if it got it, reads the
  paused flag, the current agent, the user's memory and the newest ``limit`` items. It is a VOLATILE plpgsql
  function so that each statement in it takes a new snapshot (READ COMMITTED): a single
  statement would keep the snapshot from before it waited on a lease row, and miss the turn
  that committed and freed the lease meanwhile.
- ``multisessions_turn_commit_many_v4`` deletes each turn's lease if its owner holds it unexpired
  and, only then, appends that turn's items in order, touches ``agent_sessions.updated_at``, sets
  the session's current agent, writes or consumes its paused turn and writes the facts the turn
  remembered and the conversation's entry in its user's index: the whole turn or nothing.

Both take a batch: the turns starting (or committing) in one pass of the event loop share one
round trip and one transaction (batches.py); with many users a turn's two calls had cost more
in the client (asyncpg's pool, the protocol, the socket write) than in the server.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

from multisessions.locks import LeaseBackend
from multisessions.naming import memory_scope
from multisessions.stores.base import KEEP, TurnStart, TurnWrite, store_failures
from multisessions.stores.batches import Batches
from multisessions.stores.leases import ADD_INTERRUPT_COLUMN, LEASES_TABLE, SETUP_LOCK
from multisessions.stores.sqlite_turns import (
    CONVERSATIONS_TABLE,
    CREATE_CONVERSATIONS_INDEX,
    LAST_AGENT_TABLE,
    MEMORY_TABLE,
    MESSAGES_TABLE,
    PENDING_TABLE,
    SESSIONS_TABLE,
    SUMMARIES_TABLE,
)

BEGIN = "multisessions_turn_begin_many_v3"
COMMIT = "multisessions_turn_commit_many_v4"
POOL_SIZE = 8
"""Connections in the short path's pool: each call holds one for one round trip, so a few serve
hundreds of turns at once without the descriptors (and server processes) of one per turn."""

CREATE_MEMORY_TABLE_SQL = (
    f"CREATE TABLE IF NOT EXISTS {MEMORY_TABLE} (scope VARCHAR NOT NULL, fact VARCHAR NOT NULL, "
    "value TEXT NOT NULL, updated_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP, PRIMARY KEY (scope, fact))"
)
"""Each user's memory (facts by tenant-and-user scope), as SQLStore and the short path create it."""
CREATE_SUMMARIES_TABLE_SQL = (
    f"CREATE TABLE IF NOT EXISTS {SUMMARIES_TABLE} (session_id VARCHAR PRIMARY KEY, summary TEXT NOT NULL, "
    "covered INTEGER NOT NULL, updated_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP)"
)
"""Each session's summary of its older items."""
CREATE_CONVERSATIONS_TABLE_SQL = (
    f"CREATE TABLE IF NOT EXISTS {CONVERSATIONS_TABLE} (scope VARCHAR NOT NULL, session_id VARCHAR NOT NULL, "
    "title TEXT NOT NULL DEFAULT '', last_activity DOUBLE PRECISION NOT NULL, "
    "items INTEGER NOT NULL DEFAULT 0, tags TEXT NOT NULL DEFAULT '{}', PRIMARY KEY (scope, session_id))"
)
"""Each user's conversations (title, last activity, items, tags), written by the turn's commit."""

# Versioned names: a later change to these functions gets new names instead of replacing the
# ones processes of this version still call. The setup runs under SETUP_LOCK: two processes
# creating one table or replacing one function at once fail ("tuple concurrently updated").
# Each function serves a batch of turns (batches.py), in one transaction; it takes the sessions
# in the order of their ids, so two batches from two processes lock rows in one order and
# never deadlock.
_SETUP = [
    f"CREATE TABLE IF NOT EXISTS {LEASES_TABLE} (session_id VARCHAR PRIMARY KEY, "
    "owner VARCHAR NOT NULL, expires TIMESTAMPTZ NOT NULL, interrupt VARCHAR)",
    ADD_INTERRUPT_COLUMN,
    CREATE_MEMORY_TABLE_SQL,
    CREATE_SUMMARIES_TABLE_SQL,
    CREATE_CONVERSATIONS_TABLE_SQL,
    CREATE_CONVERSATIONS_INDEX,
    # For each turn: take the lease and, if taken, read the paused flag and the newest ``limit``
    # items (all: NULL). The lease goes first, so a busy session costs one insert. A transaction
    # that only takes leases commits asynchronously (synchronous_commit off, this transaction
    # only): a lease lost in a server crash can only make its holder's commit fail (LeaseLost),
    # never let two turns write.
    f"""
CREATE OR REPLACE FUNCTION {BEGIN}(
    p_session_ids VARCHAR[], p_owners VARCHAR[], p_seconds DOUBLE PRECISION[], p_limits INTEGER[],
    p_scopes VARCHAR[])
RETURNS TABLE (turn INTEGER, taken BOOLEAN, paused BOOLEAN, items TEXT[], agent VARCHAR, memory TEXT)
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    i INTEGER;
BEGIN
    PERFORM set_config('synchronous_commit', 'off', true);
    FOR i IN SELECT s.i FROM generate_subscripts(p_session_ids, 1) AS s(i) ORDER BY p_session_ids[s.i] LOOP
        turn := i;
        paused := NULL;
        items := NULL;
        agent := NULL;
        memory := NULL;
        INSERT INTO {LEASES_TABLE} AS l (session_id, owner, expires)
        VALUES (p_session_ids[i], p_owners[i], now() + make_interval(secs => p_seconds[i]))
        ON CONFLICT (session_id) DO UPDATE SET owner = excluded.owner, expires = excluded.expires
        WHERE l.expires < now();
        taken := FOUND;
        IF taken THEN
            paused := EXISTS (SELECT 1 FROM {PENDING_TABLE} WHERE session_id = p_session_ids[i]);
            agent := (SELECT a.agent_name FROM {LAST_AGENT_TABLE} a WHERE a.session_id = p_session_ids[i]);
            IF p_scopes[i] IS NOT NULL THEN
                memory := (SELECT json_object_agg(m.fact, m.value)::text FROM {MEMORY_TABLE} m
                           WHERE m.scope = p_scopes[i]);
            END IF;
            IF p_limits[i] IS NULL THEN
                items := ARRAY(SELECT message_data FROM {MESSAGES_TABLE} WHERE session_id = p_session_ids[i]
                               ORDER BY created_at, id);
            ELSE
                items := ARRAY(SELECT newest.message_data FROM (
                                   SELECT message_data, created_at, id FROM {MESSAGES_TABLE}
                                   WHERE session_id = p_session_ids[i]
                                   ORDER BY created_at DESC, id DESC LIMIT greatest(p_limits[i], 0)) AS newest
                               ORDER BY newest.created_at, newest.id);
            END IF;
        END IF;
        RETURN NEXT;
    END LOOP;
END $$""",
    # For each turn: delete its lease if this owner holds it unexpired and, only then, write as
    # SQLAlchemySession.add_items writes: the parent row created or its updated_at touched
    # (CURRENT_TIMESTAMP, the transaction's time, as every inserted row's created_at), the items
    # in order, one by one so that their ids (the tie-break after created_at) follow that order.
    # ``p_items`` holds every turn's items, ``p_counts`` how many are each turn's. Then the
    # current agent (NULL: unchanged) and the paused turn ('keep', 'drop', or 'set' to p_pending).
    f"""
CREATE OR REPLACE FUNCTION {COMMIT}(
    p_session_ids VARCHAR[], p_owners VARCHAR[], p_counts INTEGER[], p_items TEXT[],
    p_agents VARCHAR[], p_pending_ops VARCHAR[], p_pending TEXT[], p_scopes VARCHAR[], p_memory TEXT[],
    p_summaries TEXT[], p_covered INTEGER[], p_titles TEXT[])
RETURNS BOOLEAN[] LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    i INTEGER;
    j INTEGER;
    starts INTEGER[] := '{{}}';
    saved BOOLEAN[] := '{{}}';
    next_item INTEGER := 1;
BEGIN
    FOR i IN 1 .. coalesce(array_length(p_session_ids, 1), 0) LOOP
        starts[i] := next_item;
        next_item := next_item + p_counts[i];
        saved[i] := false;
    END LOOP;
    FOR i IN SELECT s.i FROM generate_subscripts(p_session_ids, 1) AS s(i) ORDER BY p_session_ids[s.i] LOOP
        DELETE FROM {LEASES_TABLE}
        WHERE session_id = p_session_ids[i] AND owner = p_owners[i] AND expires > now();
        CONTINUE WHEN NOT FOUND;
        IF p_counts[i] > 0 THEN
            INSERT INTO {SESSIONS_TABLE} AS s (session_id) VALUES (p_session_ids[i])
            ON CONFLICT (session_id) DO UPDATE SET updated_at = CURRENT_TIMESTAMP;
            FOR j IN starts[i] .. starts[i] + p_counts[i] - 1 LOOP
                INSERT INTO {MESSAGES_TABLE} (session_id, message_data) VALUES (p_session_ids[i], p_items[j]);
            END LOOP;
            IF p_scopes[i] IS NOT NULL THEN
                INSERT INTO {CONVERSATIONS_TABLE} AS c (scope, session_id, title, last_activity, items)
                VALUES (p_scopes[i], p_session_ids[i], coalesce(p_titles[i], ''),
                        extract(epoch FROM clock_timestamp()), p_counts[i])
                ON CONFLICT (scope, session_id) DO UPDATE SET
                    title = CASE WHEN c.title = '' THEN excluded.title ELSE c.title END,
                    last_activity = greatest(c.last_activity, excluded.last_activity),
                    items = c.items + excluded.items;
            END IF;
        END IF;
        IF p_agents[i] IS NOT NULL THEN
            INSERT INTO {LAST_AGENT_TABLE} AS a (session_id, agent_name)
            VALUES (p_session_ids[i], p_agents[i])
            ON CONFLICT (session_id) DO UPDATE SET agent_name = excluded.agent_name,
                updated_at = CURRENT_TIMESTAMP;
        END IF;
        IF p_scopes[i] IS NOT NULL AND p_memory[i] IS NOT NULL THEN
            INSERT INTO {MEMORY_TABLE} AS m (scope, fact, value)
            SELECT p_scopes[i], f.key, f.value FROM json_each_text(p_memory[i]::json) AS f
            ON CONFLICT (scope, fact) DO UPDATE SET value = excluded.value, updated_at = CURRENT_TIMESTAMP;
        END IF;
        IF p_summaries[i] IS NOT NULL THEN
            INSERT INTO {SUMMARIES_TABLE} AS m (session_id, summary, covered)
            VALUES (p_session_ids[i], p_summaries[i], p_covered[i])
            ON CONFLICT (session_id) DO UPDATE SET summary = excluded.summary, covered = excluded.covered,
                updated_at = CURRENT_TIMESTAMP;
        END IF;
        IF p_pending_ops[i] <> 'keep' THEN
            DELETE FROM {PENDING_TABLE} WHERE session_id = p_session_ids[i];
            IF p_pending_ops[i] = 'set' THEN
                INSERT INTO {PENDING_TABLE} (session_id, state) VALUES (p_session_ids[i], p_pending[i]);
            END IF;
        END IF;
        saved[i] := true;
    END LOOP;
    RETURN saved;
END $$""",
]

_ACQUIRE = (
    f"INSERT INTO {LEASES_TABLE} AS l (session_id, owner, expires) "
    "VALUES ($1, $2, now() + make_interval(secs => $3)) "
    "ON CONFLICT (session_id) DO UPDATE SET owner = excluded.owner, expires = excluded.expires "
    "WHERE l.expires < now()"
)
_RENEW = (
    f"UPDATE {LEASES_TABLE} SET expires = now() + make_interval(secs => $3) "
    "WHERE session_id = $1 AND owner = $2"
)
_RELEASE = f"DELETE FROM {LEASES_TABLE} WHERE session_id = $1 AND owner = $2"
_REQUEST_INTERRUPT = f"UPDATE {LEASES_TABLE} SET interrupt = owner WHERE session_id = $1 AND expires >= now()"
_INTERRUPTED = (
    f"SELECT session_id, owner FROM {LEASES_TABLE} "
    "WHERE interrupt = owner AND session_id = ANY($1::varchar[])"
)
_BEGIN_CALL = f"SELECT turn, taken, paused, items, agent, memory FROM {BEGIN}($1, $2, $3, $4, $5)"
_COMMIT_CALL = f"SELECT {COMMIT}($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)"

_Begin = tuple[str, str, float, int | None]  # session id, owner, lease seconds, limit
_Commit = tuple[
    str,
    str,
    list[str],
    str | None,
    str,
    str | None,
    str | None,
    str | None,
    str | None,
    int | None,
    str | None,
]
"""Session id, owner, the items as stored, the current agent, the paused-turn step and record,
the memory scope and the facts to remember (JSON), the new summary and the items it covers, the
conversation's title (kept only if it has none yet)."""
_Started = tuple[bool, bool, list[str], str | None, dict[str, str]]
"""Taken, paused, the stored items, the current agent, the user's memory."""


async def _no_reset(connection: Any) -> None:
    """Nothing to reset: the pool's connections never change session state or keep a transaction
    (asyncpg's default reset would cost a round trip on every release)."""


class PostgresTurns:
    """The ``TurnIO`` of a PostgreSQL ``SQLStore``, for its plain ``SQLAlchemySession`` sessions.

    ``connect`` holds asyncpg's connection arguments (the store's URL as SQLAlchemy reads it);
    ``ready`` creates the SDK's tables and the store's own (``SQLStore._ready``); ``leases`` are the
    store's, whose lease length this shares. The pool and the functions are made on first use,
    in the event loop that uses them.
    """

    def __init__(
        self,
        connect: dict[str, Any],
        ready: Callable[[], Awaitable[None]],
        leases: LeaseBackend,
        name: str,
        url: str,
    ) -> None:
        self._leases = leases
        self._connect = connect
        self._ready = ready
        self._name = name
        self._url = url  # kept only to scrub its secrets from driver errors
        self._pool: Any = None
        self._opening = asyncio.Lock()
        # One batch per pooled connection at most: a batch runs in one server process, turn after
        # turn, so larger batches left the client idle while one server process worked through them.
        self._begins: Batches[_Begin, _Started] = Batches(
            self._begin_many, refused=_refused, abandoned=self._give_back, max_batch=POOL_SIZE
        )
        self._commits: Batches[_Commit, bool] = Batches(
            self._commit_many, refused=_refused, max_batch=POOL_SIZE
        )

    @property
    def seconds(self) -> float:
        """The store's lease length: one setting for both paths (tests and tools shorten it)."""
        return self._leases.seconds

    @seconds.setter
    def seconds(self, value: float) -> None:
        self._leases.seconds = value

    async def _connection_pool(self) -> Any:
        if self._pool is not None:
            return self._pool
        async with self._opening:
            if self._pool is None:
                import asyncpg

                await self._ready()
                pool = await asyncpg.create_pool(
                    min_size=1, max_size=POOL_SIZE, reset=_no_reset, **self._connect
                )
                try:
                    async with pool.acquire() as conn, conn.transaction():
                        await conn.execute("SELECT pg_advisory_xact_lock($1)", SETUP_LOCK)
                        for sql in _SETUP:
                            await conn.execute(sql)
                except BaseException:
                    await pool.close()
                    raise
                self._pool = pool
        return self._pool

    async def begin(self, session_id: str, owner: str, seconds: float, limit: int | None) -> TurnStart | None:
        """Take the lease; if taken, also read the paused flag and the newest ``limit`` items."""
        with store_failures(self._name, self._url, "starting a turn"):
            taken, paused, raw, agent, memory = await self._begins.call((session_id, owner, seconds, limit))
        if not taken:
            return None
        history = _decode(raw)
        if limit is not None and len(history) < len(raw) and len(raw) >= limit:
            # Corrupt rows among the newest: the SDK widens its window to count ``limit`` valid
            # items. The items read are still the newest valid ones; say only that many were read,
            # so that a read for more goes to the session itself.
            limit = len(history)
        return TurnStart(history, limit, paused, agent, memory)

    async def commit(self, session_id: str, owner: str, write: TurnWrite) -> bool:
        """Apply ``write`` (items, current agent, paused turn) and free the lease, in one
        transaction, iff ``owner`` holds it unexpired."""
        # As SQLAlchemySession._serialize_item writes them (its default ensure_ascii).
        payload = [json.dumps(item, ensure_ascii=True, separators=(",", ":")) for item in write.items]
        step = "keep" if write.pending is KEEP else "drop" if write.pending is None else "set"
        record = write.pending if step == "set" else None
        scope = memory_scope(session_id)
        facts = json.dumps(write.memory) if write.memory and scope is not None else None
        with store_failures(self._name, self._url, "saving a turn"):
            summary = write.summary
            text, covered = (summary.text, summary.covered) if summary is not None else (None, None)
            return await self._commits.call(
                (
                    session_id,
                    owner,
                    payload,
                    write.agent,
                    step,
                    record,
                    scope,
                    facts,
                    text,
                    covered,
                    write.title,
                )
            )

    async def _begin_many(self, turns: list[_Begin]) -> list[_Started]:
        pool = await self._connection_pool()
        ids, owners, seconds, limits = (list(column) for column in zip(*turns, strict=True))
        scopes = [memory_scope(session_id) for session_id in ids]
        rows = await pool.fetch(_BEGIN_CALL, ids, owners, seconds, limits, scopes)
        started: list[_Started] = [(False, False, [], None, {})] * len(turns)
        for row in rows:
            started[row["turn"] - 1] = (
                bool(row["taken"]),
                bool(row["paused"]),
                row["items"] or [],
                row["agent"],
                json.loads(row["memory"]) if row["memory"] else {},
            )
        return started

    async def _commit_many(self, turns: list[_Commit]) -> list[bool]:
        pool = await self._connection_pool()
        items = [item for turn in turns for item in turn[2]]
        counts = [len(turn[2]) for turn in turns]
        ids, owners, agents, steps, records, scopes, facts, summaries, covered, titles = (
            [turn[k] for turn in turns] for k in (0, 1, 3, 4, 5, 6, 7, 8, 9, 10)
        )
        saved = await pool.fetchval(
            _COMMIT_CALL,
            ids,
            owners,
            counts,
            items,
            agents,
            steps,
            records,
            scopes,
            facts,
            summaries,
            covered,
            titles,
        )
        return [bool(ok) for ok in saved]

    async def _give_back(self, turn: _Begin, started: _Started) -> None:
        """A lease taken for a turn cancelled meanwhile is freed at once (not when it runs out)."""
        if started[0]:
            await self.release(turn[0], turn[1])

    async def try_acquire(self, session_id: str, owner: str, seconds: float) -> bool:
        """As ``SQLLeases.try_acquire``, on this pool."""
        with store_failures(self._name, self._url, "taking a lease"):
            pool = await self._connection_pool()
            return str(await pool.execute(_ACQUIRE, session_id, owner, seconds)) == "INSERT 0 1"

    async def renew(self, session_id: str, owner: str, seconds: float) -> bool:
        """As ``SQLLeases.renew``, on this pool."""
        with store_failures(self._name, self._url, "renewing a lease"):
            pool = await self._connection_pool()
            return str(await pool.execute(_RENEW, session_id, owner, seconds)) == "UPDATE 1"

    async def release(self, session_id: str, owner: str) -> None:
        """As ``SQLLeases.release``, on this pool."""
        with store_failures(self._name, self._url, "releasing a lease"):
            pool = await self._connection_pool()
            await pool.execute(_RELEASE, session_id, owner)

    async def request_interrupt(self, session_id: str) -> None:
        """As ``SQLLeases.request_interrupt``, on this pool."""
        with store_failures(self._name, self._url, "asking a turn to stop"):
            pool = await self._connection_pool()
            await pool.execute(_REQUEST_INTERRUPT, session_id)

    async def interrupted(self, held: list[tuple[str, str]]) -> list[str]:
        """As ``SQLLeases.interrupted``, on this pool: one query for every turn this process runs."""
        owners = dict(held)
        with store_failures(self._name, self._url, "checking for interrupted turns"):
            pool = await self._connection_pool()
            rows = await pool.fetch(_INTERRUPTED, list(owners))
        return [row["session_id"] for row in rows if owners.get(row["session_id"]) == row["owner"]]

    async def close(self) -> None:
        """Close the pool, if it was opened, once the batches under way are done."""
        await self._begins.close()
        await self._commits.close()
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()


def _refused(exc: BaseException) -> bool:
    """Whether the server refused a batch (a statement error: its transaction wrote nothing), or
    asyncpg refused to send it; not a lost connection, after which a commit may have landed."""
    import asyncpg

    refused_here = isinstance(exc, asyncpg.InterfaceError) and isinstance(exc, ValueError)  # bad input
    return refused_here or isinstance(exc, asyncpg.PostgresError)


def _decode(rows: list[str]) -> list[Any]:
    """The stored items, skipping corrupt rows, as ``SQLAlchemySession.get_items`` decodes them."""
    items = []
    for raw in rows:
        try:
            items.append(json.loads(raw))
        except json.JSONDecodeError:
            continue
    return items
