"""A turn on a store's plain ``RedisSession`` in two round trips: one script to start, one to commit.

Through the session and the leases a turn costs nine round trips: ``SET NX`` for the lease,
``HGET`` for a paused turn, ``LRANGE`` for the history, the owner-checked renew, the SDK's
``add_items`` (``WATCH``, ``TYPE`` twice, then ``MULTI``/``EXEC``) and the release. Each costs
the client CPU in redis-py; with many users that, not Redis, bounded the turns.

Here two Lua scripts (sent once, then called by hash) do the same work on the server, each in one
atomic step. ``_COMMIT`` writes exactly what ``RedisSession.add_items`` writes, key for key, so
the SDK, the inventory and a store without this path read the session back unchanged.
"""

from __future__ import annotations

import json
import time
from typing import Any

from multisessions.locks import LEASE_SECONDS
from multisessions.naming import memory_scope
from multisessions.stores.base import KEEP, TurnStart, TurnWrite
from multisessions.stores.batches import Batches
from multisessions.stores.leases import RedisLeases

# KEYS: lease, paused turns (a hash by session id), the session's messages, its current agent,
# its user's memory (a hash by fact).
# ARGV: owner, lease ms, session id, first index to read ('' reads nothing).
# Reads come first, so a read that fails leaves no lease behind. Returns nil when another owner
# holds the lease (the owner's own lease is taken again: redis-py may resend a call whose reply
# was lost); else {paused (0/1), the items, whether the messages key is a list (0: the SDK reads),
# the current agent ('' if none), the memory as fact, value, fact, value...}.
# The items come as one string, each as "<length in bytes>:<bytes>": redis-py parses a reply
# element in Python, one by one: one string costs the client far less for a long read.
_BEGIN = """
local holder = redis.call('get', KEYS[1])
if holder and holder ~= ARGV[1] then return false end
local paused = redis.call('hexists', KEYS[2], ARGV[3])
local kind = redis.call('type', KEYS[3]).ok
local framed = {}
local readable = 1
if kind ~= 'none' and kind ~= 'list' then
  readable = 0
elseif ARGV[4] ~= '' then
  for i, item in ipairs(redis.call('lrange', KEYS[3], ARGV[4], -1)) do
    framed[2 * i - 1] = #item .. ':'
    framed[2 * i] = item
  end
end
local agent = redis.call('get', KEYS[4]) or ''
local memory = redis.call('hgetall', KEYS[5])
redis.call('set', KEYS[1], ARGV[1], 'PX', ARGV[2])
return {paused, table.concat(framed), readable, agent, memory}
"""

# KEYS: lease, session hash, messages, counter (the SDK's three, in its order), commit receipt,
# the current agent, the paused turns (a hash by session id), the user's memory, the summary,
# the user's conversations (a sorted set of session ids by last activity), this conversation's
# entry (a hash: title, items, tags).
# ARGV: owner, session id, now in seconds ('' with a ttl: the server's clock, as the SDK reads
# it then), ttl in seconds ('' for none), the current agent ('' leaves it), what to do with the
# paused turn ('keep', 'drop' or 'set'), its new record, the facts to remember (fact, value...
# as a JSON list, '' for none), the new summary ('' for none) and the count it covers, the title
# ('' for none; a title already there is kept), whether to index the conversation ('1' when the
# id names a user), then the serialized items.
# The checks, the writes and their order are those of RedisSession._mutate_items for an append;
# the agent and the paused turn are written in the same script, so the turn lands whole or not.
# The receipt (the owner, for a minute) answers a commit redis-py resends after losing its reply
# (it retries on a dropped connection): the turn was saved, so the resend must not report it lost.
_COMMIT = """
if redis.call('get', KEYS[1]) ~= ARGV[1] then
  if redis.call('get', KEYS[5]) == ARGV[1] then return 1 end
  return 0
end
local function kind(key) return redis.call('type', key).ok end
local found = kind(KEYS[2])
if found ~= 'none' and found ~= 'hash' then
  return redis.error_reply('WRONGTYPE session metadata key must contain a hash')
end
found = kind(KEYS[3])
if found ~= 'none' and found ~= 'list' then
  return redis.error_reply('WRONGTYPE session messages key must contain a list')
end
local now = ARGV[3]
local expire_at = nil
if ARGV[4] ~= '' then
  found = kind(KEYS[4])
  if found ~= 'none' and found ~= 'string' then
    return redis.error_reply('WRONGTYPE session counter key must contain a string')
  end
  local clock = redis.call('time')
  now = clock[1]
  expire_at = string.format('%.0f',
    tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000) + tonumber(ARGV[4]) * 1000)
end
if #ARGV >= 13 then
  redis.call('hset', KEYS[2], 'session_id', ARGV[2])
  redis.call('hsetnx', KEYS[2], 'created_at', now)
  for first = 13, #ARGV, 1000 do
    redis.call('rpush', KEYS[3], unpack(ARGV, first, math.min(first + 999, #ARGV)))
  end
  redis.call('hset', KEYS[2], 'updated_at', now)
  if expire_at then
    for i = 2, 4 do redis.call('pexpireat', KEYS[i], expire_at) end
  end
  if ARGV[12] == '1' then
    local clock = redis.call('time')
    redis.call('zadd', KEYS[10], clock[1] + clock[2] / 1000000, ARGV[2])
    local title = redis.call('hget', KEYS[11], 'title')
    if (not title or title == '') and ARGV[11] ~= '' then redis.call('hset', KEYS[11], 'title', ARGV[11]) end
    redis.call('hincrby', KEYS[11], 'items', #ARGV - 12)
    if expire_at then redis.call('pexpireat', KEYS[11], expire_at) end
  end
end
if ARGV[5] ~= '' then
  redis.call('set', KEYS[6], ARGV[5])
  if expire_at then redis.call('pexpireat', KEYS[6], expire_at) end
end
if ARGV[8] ~= '' then
  redis.call('hset', KEYS[8], unpack(cjson.decode(ARGV[8])))
end
if ARGV[9] ~= '' then
  redis.call('hset', KEYS[9], 'text', ARGV[9], 'covered', ARGV[10])
  if expire_at then redis.call('pexpireat', KEYS[9], expire_at) end
end
if ARGV[6] == 'drop' then
  redis.call('hdel', KEYS[7], ARGV[2])
elseif ARGV[6] == 'set' then
  redis.call('hset', KEYS[7], ARGV[2], ARGV[7])
end
redis.call('set', KEYS[5], ARGV[1], 'PX', 60000)
redis.call('del', KEYS[1])
return 1
"""
# RPUSH takes at most 1,000 items per call above: Lua's unpack fails past ~8,000 values.


_ScriptCall = tuple[Any, list[Any], list[Any]]  # a registered script, its keys, its arguments


class RedisTurnIO(RedisLeases):
    """``TurnIO`` for a ``RedisStore``'s own sessions (see ``RedisStore.turn_io``): the lease keys of
    ``RedisLeases``, the SDK's session keys ``<prefix>:<id>[:messages|:counter]`` and its ttl."""

    def __init__(
        self,
        client: Any,
        key_prefix: str,
        pending_key: str,
        ttl: int | None,
        seconds: float = LEASE_SECONDS,
    ) -> None:
        super().__init__(client, key_prefix, seconds)
        self.pending_key = pending_key
        self.agent_key_prefix = f"{key_prefix}/last_agent/"
        self.ttl = ttl
        # EVALSHA, loading the script on the server the first time it is missing there.
        self._begin = client.register_script(_BEGIN)
        self._commit = client.register_script(_COMMIT)
        from redis.exceptions import DataError, NoScriptError  # loaded only with a Redis store

        self._no_script = NoScriptError
        # A call redis-py cannot encode (a lone surrogate in a session id) fails the pipeline
        # before anything is sent: then each call goes alone, and only that one fails.
        unsendable = (UnicodeError, DataError)
        self._calls: Batches[_ScriptCall, Any] = Batches(
            self._send, refused=lambda exc: isinstance(exc, unsendable), abandoned=self._give_back
        )

    def memory_key(self, session_id: str) -> str:
        """The hash of facts remembered for the session's user (our namespace: ``<prefix>/memory/``);
        an id naming no user gets a key nothing ever writes."""
        return memory_key(self.key_prefix, memory_scope(session_id) or "")

    def summary_key(self, session_id: str) -> str:
        """The session's summary of its older items: a hash (text, covered) in our namespace."""
        return f"{self.key_prefix}/summary/{session_id}"

    def receipt_key(self, session_id: str) -> str:
        """Where a commit leaves its owner for a minute (our namespace, like the lease's)."""
        return f"{self.key_prefix}/committed/{session_id}"

    async def begin(self, session_id: str, owner: str, seconds: float, limit: int | None) -> TurnStart | None:
        """Take the lease and read the paused flag and the newest ``limit`` items, in one round trip."""
        first = "0" if limit is None else "" if limit <= 0 else str(-limit)
        keys = [
            self._key(session_id),
            self.pending_key,
            f"{self.key_prefix}:{session_id}:messages",
            self.agent_key_prefix + session_id,
            self.memory_key(session_id),
        ]
        reply = await self._calls.call((self._begin, keys, [owner, int(seconds * 1000), session_id, first]))
        if reply is None:
            return None
        paused, framed, readable, stored_agent, flat_memory = reply
        agent = bytes(stored_agent).decode() or None
        memory = {
            bytes(flat_memory[i]).decode(): bytes(flat_memory[i + 1]).decode()
            for i in range(0, len(flat_memory), 2)
        }
        if not readable:
            # Not a list: reads go through the SDK's get_items, which fails the turn as it would.
            return TurnStart([], 0, bool(paused), agent, memory)
        if limit is not None and limit <= 0:
            return TurnStart([], limit, bool(paused), agent, memory)  # the SDK reads nothing either
        raw = _unframe(framed)
        history, corrupt = _decode(raw)
        if limit is None or len(raw) < limit:
            # The whole list was read: a read of any newest ``n`` is served exactly from it.
            return TurnStart(history, None, bool(paused), agent, memory)
        # The SDK skips a corrupt entry and widens its window to still return ``limit`` items;
        # the valid ones read here serve exactly that many, a longer read goes to the SDK.
        return TurnStart(history, limit - corrupt, bool(paused), agent, memory)

    async def commit(self, session_id: str, owner: str, write: TurnWrite) -> bool:
        """Append the items as ``RedisSession.add_items`` would, set the current agent and the
        paused turn, and free the lease, in one script, iff ``owner`` holds it."""
        session_key = f"{self.key_prefix}:{session_id}"
        keys = [
            self._key(session_id),
            session_key,
            f"{session_key}:messages",
            f"{session_key}:counter",
            self.receipt_key(session_id),
            self.agent_key_prefix + session_id,
            self.pending_key,
            self.memory_key(session_id),
            self.summary_key(session_id),
            conversations_key(self.key_prefix, memory_scope(session_id) or ""),
            conversation_key(self.key_prefix, session_id),
        ]
        # Without a ttl the SDK stamps the time with this machine's clock, with one the server's.
        now = "" if self.ttl is not None else str(int(time.time()))
        ttl = "" if self.ttl is None else str(self.ttl)
        pending = "keep" if write.pending is KEEP else "drop" if write.pending is None else "set"
        record = write.pending if pending == "set" else ""
        serialized = [json.dumps(item, separators=(",", ":")) for item in write.items]
        scope = memory_scope(session_id)
        facts = [part for pair in write.memory.items() for part in pair] if scope is not None else []
        memory = json.dumps(facts) if facts else ""
        summary = write.summary
        folded = [summary.text, str(summary.covered)] if summary is not None else ["", ""]
        index = "1" if scope is not None else ""
        args = [
            owner, session_id, now, ttl, write.agent or "", pending, record, memory, *folded,
            write.title or "", index, *serialized,
        ]  # fmt: skip
        return bool(await self._calls.call((self._commit, keys, args)))

    async def _send(self, calls: list[_ScriptCall]) -> list[Any]:
        """The script calls of one batch, as one pipeline: one write, one read.

        Each call is still one round trip for its turn, but the calls of concurrent turns share
        the write, the read and redis-py's per-command work (a pooled connection, timers, parsing
        set-up). The pipeline is not a transaction: each script stays atomic on its own, and
        fails alone."""
        pipe = self.client.pipeline(transaction=False)
        for script, keys, args in calls:
            pipe.execute_command("EVALSHA", script.sha, len(keys), *keys, *args)
        replies: list[Any] = await pipe.execute(raise_on_error=False)
        for i, ((script, keys, args), reply) in enumerate(zip(calls, replies, strict=True)):
            if isinstance(reply, self._no_script):
                # The server lost the script (a restart, SCRIPT FLUSH); it did not run: load it, run it.
                try:
                    replies[i] = await script(keys=keys, args=args)
                except Exception as exc:
                    replies[i] = exc
        return replies

    async def _give_back(self, call: _ScriptCall, reply: Any) -> None:
        """A lease taken for a turn cancelled meanwhile is freed at once (not when it runs out)."""
        script, _, args = call
        if script is self._begin and reply is not None:
            await self.release(args[2], args[0])


def conversations_key(key_prefix: str, scope: str) -> str:
    """A user's conversations: a sorted set of session ids scored by last activity (seconds)."""
    return f"{key_prefix}/conversations/{scope}"


def conversation_key(key_prefix: str, session_id: str) -> str:
    """One conversation's entry in its user's index: a hash (title, items, tags as JSON)."""
    return f"{key_prefix}/conversation/{session_id}"


def memory_key(key_prefix: str, scope: str) -> str:
    """Where a scope's facts live: a hash in our own namespace."""
    return f"{key_prefix}/memory/{scope}"


def _unframe(framed: bytes) -> list[bytes]:
    """The list entries ``_BEGIN`` sent as ``<length>:<bytes>`` pieces, byte for byte."""
    entries = []
    at, end = 0, len(framed)
    while at < end:
        colon = framed.index(b":", at)
        at = colon + 1 + int(framed[at:colon])
        entries.append(framed[colon + 1 : at])
    return entries


def _decode(raw: list[bytes]) -> tuple[list[Any], int]:
    """The items as ``RedisSession.get_items`` decodes them, and how many it would skip as corrupt."""
    items = []
    for entry in raw:
        try:
            items.append(json.loads(entry.decode("utf-8")))
        except (json.JSONDecodeError, UnicodeDecodeError):
            continue
    return items, len(raw) - len(items)
