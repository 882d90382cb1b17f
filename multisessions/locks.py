"""One turn at a time per session id, across tasks, processes and machines: a lease lock.

In one process an ``asyncio.Lock`` per session id queues the turns. Across processes each store
keeps a *lease*: a row (SQLite, PostgreSQL) or a key (Redis) naming the holder and when the
lease ends. The holder renews it every third of the lease while its turn runs; a holder that
dies stops renewing, so the session is free again within one lease (``LEASE_SECONDS``).
Before a turn commits, the holder renews once more: a turn whose lease was lost (its process
stalled past the lease and another turn took the session) is not saved (``LeaseLost``).

A message for a session that is busy with a turn is a *double text*. What happens to it is the
caller's choice, ``on_busy``:

- ``"wait"`` (the default): it queues behind the running turn, for at most ``WAIT_SECONDS``, and
  ``on_wait`` is told once that it waits, so a chat can say so. The default because nothing is
  lost or reordered: both messages are answered, in the order they came, each seeing the other's
  turn, which is what a person who sends two messages in a row expects.
- ``"reject"``: ``SessionBusy`` at once; the caller may tell its user to try again later.
- ``"interrupt"``: the running turn is stopped, wherever it runs, and this one runs instead. The
  request travels on the lease (a mark naming the holder, in the store); every holder's process
  asks its store every ``CHECK_SECONDS``, in one round trip for all its running turns, whether
  one of them was asked to stop, and cancels that turn: it fails as a failed turn does (nothing
  written, the lease given up) with ``TurnInterrupted``. A turn already saving its items is not
  stopped: the new message then runs after it.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import time
import uuid
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, Literal, Protocol, get_args

from multisessions.errors import LeaseLost, SessionBusy, TurnInterrupted

LEASE_SECONDS = 15.0
"""How long a lease lasts without renewal: a dead holder frees its session within this."""
WAIT_SECONDS = 150.0
"""How long a turn waits for a busy session: longer than one model call with its retries."""
CHECK_SECONDS = 0.2
"""How often a process asks its store whether a newer message asked one of its running turns to
stop (one round trip for all of them, only while turns run): how quickly ``interrupt`` acts."""

OnBusy = Literal["wait", "reject", "interrupt"]
"""What a message does when its session is busy with another turn (see the module's docstring)."""
ON_BUSY: tuple[OnBusy, ...] = get_args(OnBusy)
DEFAULT_ON_BUSY: OnBusy = "wait"
"""Queue behind the running turn: nothing lost, nothing reordered."""


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

    async def request_interrupt(self, session_id: str) -> None:
        """Mark the session's lease, if held, as asked to stop: the mark names its holder, so a
        later holder is never taken for it."""
        ...

    async def interrupted(self, held: list[tuple[str, str]]) -> list[str]:
        """Of these ``(session id, owner)`` leases, the session ids whose holder was asked to stop."""
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
        self.committing = False
        """Set by the turn before it writes (and when its block ends): from then on an interrupt is
        too late and is ignored, so a turn that is saved is never reported stopped."""
        self.interrupted = False
        """Set when a newer message stopped this turn."""
        self.left = False
        """Set by a streamed turn whose reader left before its end (nothing of it was kept)."""
        self.task: asyncio.Task[Any] | None = asyncio.current_task()

    def interrupt(self) -> None:
        """Stop the turn holding this lease (cancel its task), unless it is already saving."""
        if self.committing or self.interrupted or self.task is None or self.task.done():
            return
        self.interrupted = True
        self.task.cancel("stopped by a newer message on the same session")

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
_holders: dict[str, Lease] = {}
"""The lease of the turn holding each session id in this process (taken or being taken)."""

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


def check_on_busy(on_busy: object) -> OnBusy:
    """``on_busy`` if it is one of ``ON_BUSY``, else ``ValueError`` naming them."""
    if on_busy not in ON_BUSY:
        raise ValueError(f"on_busy={on_busy!r} must be one of: {', '.join(ON_BUSY)}")
    return on_busy


class _Busy:
    """What a turn does on finding its session busy: refuse, or say once that it waits."""

    def __init__(
        self, session_id: str, on_busy: OnBusy, on_wait: Callable[[str], object] | None, wait: float
    ) -> None:
        check_on_busy(on_busy)
        self.session_id = session_id
        self.on_busy = on_busy
        self.on_wait = on_wait
        self.wait = wait
        self.deadline = time.monotonic() + wait
        self.told = False

    def found_busy(self) -> None:
        """Raise ``SessionBusy`` under ``reject``; else tell ``on_wait``, the first time."""
        if self.on_busy == "reject":
            raise SessionBusy(
                f"session {self.session_id!r} is busy with another turn (on_busy='reject'); "
                "send the message again when that turn has answered"
            )
        if self.told or self.on_wait is None:
            return
        self.told = True
        doing = "stopping it" if self.on_busy == "interrupt" else f"waiting for it (up to {self.wait:g} s)"
        self.on_wait(f"session {self.session_id!r} is busy with another turn: {doing}")

    def timed_out(self) -> SessionBusy:
        return SessionBusy(
            f"session {self.session_id!r} is busy with another turn (waited {self.wait:g} s); try again later"
        )


@asynccontextmanager
async def _local_lock(session_id: str, busy: _Busy) -> AsyncIterator[None]:
    """The in-process queue for ``session_id``; dropped when nobody waits on it."""
    lock, users = _local.get(session_id, (None, 0))
    if lock is None:
        lock = asyncio.Lock()
    _local[session_id] = (lock, users + 1)
    try:
        if lock.locked():
            busy.found_busy()
            holder = _holders.get(session_id)
            if busy.on_busy == "interrupt" and holder is not None:
                holder.interrupt()
        try:
            async with asyncio.timeout(max(0.0, busy.deadline - time.monotonic())):
                await lock.acquire()
        except TimeoutError:
            raise busy.timed_out() from None
        try:
            yield
        finally:
            lock.release()
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
    on_busy: OnBusy = DEFAULT_ON_BUSY,
    on_wait: Callable[[str], object] | None = None,
) -> AsyncIterator[Lease]:
    """Hold ``session_id`` for one turn: in this process, and through ``backend`` across processes.

    ``begin(owner, seconds)``, if given, takes the lease instead of ``backend.try_acquire`` and
    may read more in the same round trip: ``None`` means busy, anything else is kept as
    ``lease.start``. A busy session is met as ``on_busy`` says (see the module's docstring):
    ``on_wait`` gets one line when the turn starts waiting; ``SessionBusy`` after ``wait`` seconds
    without the lease, or at once under ``reject``. A turn a newer message stopped raises
    ``TurnInterrupted`` out of the block, once its lease is given up.
    """
    busy = _Busy(session_id, on_busy, on_wait, wait)
    async with _local_lock(session_id, busy):
        owner = _new_owner()
        lease = Lease(backend, session_id, owner, 0 if backend is None else backend.seconds)
        _holders[session_id] = lease
        try:
            try:
                if backend is not None:
                    await _take(lease, busy, begin)
                async with _watched(lease):
                    yield lease
            finally:
                if _holders.get(session_id) is lease:
                    del _holders[session_id]
        except asyncio.CancelledError:
            task = lease.task
            # Our own cancellation, and no other: the caller learns why its turn ended.
            if lease.interrupted and task is not None and task.uncancel() == 0:
                raise TurnInterrupted(session_id) from None
            raise


async def _take(lease: Lease, busy: _Busy, begin: Callable[[str, float], Awaitable[Any]] | None) -> None:
    """Take ``lease`` in its store, meeting a busy session as ``busy`` says."""
    backend = lease.backend
    assert backend is not None
    session_id, owner, seconds = lease.session_id, lease.owner, lease.seconds
    pause = 0.002
    asked_at: float | None = None
    while True:
        if begin is not None:
            lease.start = await begin(owner, seconds)
            if lease.start is not None:
                return
        elif await backend.try_acquire(session_id, owner, seconds):
            return
        busy.found_busy()
        now = time.monotonic()
        if busy.on_busy == "interrupt" and asked_at is None:
            request = getattr(backend, "request_interrupt", None)
            if request is not None:
                await request(session_id)
                asked_at = now
        if now >= busy.deadline:
            raise busy.timed_out()
        if asked_at is not None and now - asked_at < 2 * CHECK_SECONDS + 1:
            # The stopped turn frees the session within about CHECK_SECONDS: look often till then.
            await asyncio.sleep(0.01)
            continue
        await asyncio.sleep(pause)
        pause = min(pause * 2, 0.1)


@asynccontextmanager
async def _watched(lease: Lease) -> AsyncIterator[None]:
    """While the block runs: the lease renewed, and watched for a request to stop its turn.
    Afterwards the lease is given up (unless a commit already did)."""
    backend = lease.backend
    if backend is None:
        yield
        return
    renewing = _Renewal(lease)
    watch = _watch_for(backend)
    if watch is not None:
        watch.add(lease)
    try:
        yield
    finally:
        lease.committing = True
        if watch is not None:
            watch.discard(lease)
        await renewing.stop()
        # Shielded: a cancelled turn still frees its session at once, not after the lease.
        # If the store is down, the lease simply runs out.
        if not lease.released:
            with contextlib.suppress(Exception):
                await asyncio.shield(backend.release(lease.session_id, lease.owner))


class _Watch:
    """Asks one store, every ``CHECK_SECONDS`` while this process holds leases in it, whether a
    newer message asked any of their turns to stop: one round trip for all of them, and a timer
    (no task) between checks, so a turn shorter than ``CHECK_SECONDS`` costs only two dict writes."""

    def __init__(self, backend: LeaseBackend) -> None:
        self.backend = backend
        self.loop = asyncio.get_running_loop()
        self.leases: dict[str, Lease] = {}
        self.timer: asyncio.TimerHandle | None = None
        self.checking = False

    def add(self, lease: Lease) -> None:
        self.leases[lease.owner] = lease
        if self.timer is None and not self.checking:
            self.timer = self.loop.call_later(CHECK_SECONDS, self._due)

    def discard(self, lease: Lease) -> None:
        self.leases.pop(lease.owner, None)
        if not self.leases and self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def _due(self) -> None:
        self.timer = None
        if self.leases:
            self.checking = True
            self.loop.create_task(self._check())

    async def _check(self) -> None:
        try:
            held = [(lease.session_id, owner) for owner, lease in self.leases.items() if not lease.committing]
            asked: set[str] = set()
            if held:
                try:
                    asked = set(await self.backend.interrupted(held))
                except Exception:
                    pass  # a blip in the store: the next check asks again
            for lease in list(self.leases.values()):
                if lease.session_id in asked:
                    lease.interrupt()
        finally:
            self.checking = False
            if self.leases and self.timer is None:
                self.timer = self.loop.call_later(CHECK_SECONDS, self._due)


_watches: weakref.WeakKeyDictionary[Any, _Watch] = weakref.WeakKeyDictionary()


def _watch_for(backend: LeaseBackend) -> _Watch | None:
    """This event loop's watch on ``backend``; None for a backend that cannot carry interrupts."""
    if getattr(backend, "interrupted", None) is None:
        return None
    watch = _watches.get(backend)
    if watch is None or watch.loop is not asyncio.get_running_loop():
        watch = _watches[backend] = _Watch(backend)
    return watch


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
