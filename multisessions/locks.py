"""One turn at a time per session id, across tasks, processes and machines: a lease lock.

In one process an ``asyncio.Lock`` per session id queues the turns. Across processes each store
keeps a *lease*: a row (SQLite, PostgreSQL) or a key (Redis) naming the holder and when the
lease ends. The holder renews it every third of the lease while its turn runs; a holder that
dies stops renewing, so the session is free again within one lease (``LEASE_SECONDS``).
Before a turn commits, the holder renews once more: a turn whose lease was lost (its process
stalled past the lease and another turn took the session) is not saved (``LeaseLost``).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, Protocol

from multisessions.errors import LeaseLost, SessionBusy

LEASE_SECONDS = 15.0
"""How long a lease lasts without renewal: a dead holder frees its session within this."""
WAIT_SECONDS = 150.0
"""How long a turn waits for a busy session: longer than one model call with its retries."""


class LeaseBackend(Protocol):
    """Where leases live: a store's table or keys. Each call is one short round trip."""

    seconds: float
    """How long this store's leases last without renewal."""

    async def try_acquire(self, session_id: str, owner: str, seconds: float) -> bool:
        """Take the lease if it is free or expired; True if ``owner`` now holds it."""
        ...

    async def renew(self, session_id: str, owner: str, seconds: float) -> bool:
        """Extend the lease if ``owner`` still holds it; False if it was lost."""
        ...

    async def release(self, session_id: str, owner: str) -> None:
        """Give the lease up if ``owner`` still holds it."""
        ...


class Lease:
    """A held lease: ``confirm()`` just before committing proves it was never lost."""

    def __init__(self, backend: LeaseBackend | None, session_id: str, owner: str, seconds: float) -> None:
        self.backend = backend
        self.session_id = session_id
        self.owner = owner
        self.seconds = seconds
        self.lost = False
        self.start: Any = None
        """What ``hold_session``'s ``begin`` read while taking the lease (a store's turn start)."""
        self.released = False
        """Set by whoever gave the lease up already (a commit that releases it in the same write)."""

    async def confirm(self) -> None:
        """Renew once more; raise ``LeaseLost`` if another turn may have taken the session."""
        if self.backend is None:
            return
        if self.lost or not await self.backend.renew(self.session_id, self.owner, self.seconds):
            raise self.lost_error()

    def lost_error(self) -> LeaseLost:
        """The error for a turn whose lease was lost: marks the lease lost."""
        self.lost = True
        return LeaseLost(
            f"session {self.session_id!r}: this turn's lease expired before it could be saved "
            "(the process stalled); nothing was saved, send the message again"
        )


_local: dict[str, tuple[asyncio.Lock, int]] = {}

_owners = itertools.count()
_process_token = uuid.uuid4().hex[:24]


def _new_owner() -> str:
    """A lease owner no other turn, here or in another process or machine, will ever use: this
    process's random token and a counter (cheaper than a random UUID per turn)."""
    return f"{_process_token}-{next(_owners)}"


def _new_process_token() -> None:
    global _process_token
    _process_token = uuid.uuid4().hex[:24]  # a forked child must not share its parent's owners


os.register_at_fork(after_in_child=_new_process_token)


@asynccontextmanager
async def _local_lock(session_id: str) -> AsyncIterator[None]:
    """The in-process queue for ``session_id``; dropped when nobody waits on it."""
    lock, users = _local.get(session_id, (None, 0))
    if lock is None:
        lock = asyncio.Lock()
    _local[session_id] = (lock, users + 1)
    try:
        async with lock:
            yield
    finally:
        lock, users = _local[session_id]
        if users <= 1:
            del _local[session_id]
        else:
            _local[session_id] = (lock, users - 1)


def held_locks() -> int:
    """How many session ids have a turn running or waiting in this process (0 when idle)."""
    return len(_local)


@asynccontextmanager
async def hold_session(
    session_id: str,
    backend: LeaseBackend | None = None,
    *,
    wait: float = WAIT_SECONDS,
    begin: Callable[[str, float], Awaitable[Any]] | None = None,
) -> AsyncIterator[Lease]:
    """Hold ``session_id`` for one turn: in this process, and through ``backend`` across processes.

    ``begin(owner, seconds)``, if given, takes the lease instead of ``backend.try_acquire`` and
    may read more in the same round trip: ``None`` means busy, anything else is kept as
    ``lease.start``. Raises ``SessionBusy`` after ``wait`` seconds without getting the lease.
    """
    async with _local_lock(session_id):
        owner = _new_owner()
        if backend is None:
            yield Lease(None, session_id, owner, 0)
            return
        seconds = backend.seconds
        lease = Lease(backend, session_id, owner, seconds)
        deadline = time.monotonic() + wait
        pause = 0.002
        while True:
            if begin is not None:
                lease.start = await begin(owner, seconds)
                if lease.start is not None:
                    break
            elif await backend.try_acquire(session_id, owner, seconds):
                break
            if time.monotonic() >= deadline:
                raise SessionBusy(
                    f"session {session_id!r} is busy with another turn (waited {wait:g} s); try again later"
                )
            await asyncio.sleep(pause)
            pause = min(pause * 2, 0.1)
        renewing = _Renewal(lease)
        try:
            yield lease
        finally:
            await renewing.stop()
            # Shielded: a cancelled turn still frees its session at once, not after the lease.
            # If the store is down, the lease simply runs out.
            if not lease.released:
                with contextlib.suppress(Exception):
                    await asyncio.shield(backend.release(session_id, owner))


class _Renewal:
    """Renews ``lease`` every third of its length until stopped, or until it is found lost.

    A timer waits for each renewal, and a task runs only the renewal itself: most turns end
    before the first one is due, and a timer costs them far less than a task per turn would."""

    def __init__(self, lease: Lease) -> None:
        self.lease = lease
        self.loop = asyncio.get_running_loop()
        self.task: asyncio.Task[None] | None = None
        self.timer: asyncio.TimerHandle | None = self.loop.call_later(lease.seconds / 3, self._due)

    def _due(self) -> None:
        self.timer = None
        self.task = self.loop.create_task(self._renew())

    async def _renew(self) -> None:
        lease = self.lease
        assert lease.backend is not None
        try:
            still_held = await lease.backend.renew(lease.session_id, lease.owner, lease.seconds)
        except Exception:
            still_held = True  # a blip in the store: try again; confirm() decides before the commit
        if not still_held:
            lease.lost = True
            return
        self.timer = self.loop.call_later(lease.seconds / 3, self._due)

    async def stop(self) -> None:
        """Stop renewing; a renewal under way is cancelled and awaited."""
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        task, self.task = self.task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
