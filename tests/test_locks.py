"""locks.py: a held lease is renewed every third of its length while the turn runs and never after,
a renewal that finds it taken marks it lost, and every turn's owner is its own, forked children too."""

from __future__ import annotations

import asyncio
import multiprocessing

import pytest

from multisessions.errors import LeaseLost
from multisessions.locks import _new_owner, hold_session


class Backend:
    """Leases in a dict; records each renewal, and can be told to fail or to lose them."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.holders: dict[str, str] = {}
        self.renewals: list[str] = []
        self.failing = 0  # the next renewals that raise, as a store blip would

    async def try_acquire(self, session_id: str, owner: str, seconds: float) -> bool:
        return self.holders.setdefault(session_id, owner) == owner

    async def renew(self, session_id: str, owner: str, seconds: float) -> bool:
        self.renewals.append(owner)
        if self.failing:
            self.failing -= 1
            raise ConnectionError("store blip")
        return self.holders.get(session_id) == owner

    async def release(self, session_id: str, owner: str) -> None:
        if self.holders.get(session_id) == owner:
            del self.holders[session_id]


async def until(condition, timeout: float = 5.0) -> None:
    """Wait for ``condition()`` (timers run late on a loaded machine), failing after ``timeout``."""
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.01)


async def test_a_long_turn_renews_every_third_of_the_lease_and_stops_when_it_ends():
    backend = Backend(seconds=0.3)
    async with hold_session("user_1", backend) as lease:
        await until(lambda: len(backend.renewals) >= 3)  # due every 0.1 s
        await lease.confirm()
    during = len(backend.renewals)
    await asyncio.sleep(0.25)
    assert during >= 4 and set(backend.renewals) == {lease.owner}
    assert len(backend.renewals) == during and backend.holders == {}


async def test_a_short_turn_sends_no_renewal():
    backend = Backend(seconds=0.3)
    async with hold_session("user_1", backend):
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.15)
    assert backend.renewals == []


async def test_a_renewal_that_finds_the_lease_taken_marks_it_lost_and_renews_no_more():
    backend = Backend(seconds=0.3)
    async with hold_session("user_1", backend) as lease:
        backend.holders["user_1"] = "another process"  # it expired and was taken meanwhile
        await until(lambda: lease.lost)
        await asyncio.sleep(0.25)
        assert len(backend.renewals) == 1
        with pytest.raises(LeaseLost):
            await lease.confirm()
    assert backend.holders == {"user_1": "another process"}  # not freed: it is not ours


async def test_a_renewal_that_fails_is_tried_again_at_the_next_third():
    backend = Backend(seconds=0.3)
    backend.failing = 1
    async with hold_session("user_1", backend) as lease:
        await until(lambda: len(backend.renewals) >= 2)
        assert not lease.lost


async def test_a_turn_cancelled_mid_renewal_stops_renewing_and_frees_the_session():
    backend = Backend(seconds=0.3)
    renewing = asyncio.Event()
    renew = backend.renew

    async def slow_renew(*args):
        renewing.set()
        await asyncio.sleep(10)
        return await renew(*args)

    backend.renew = slow_renew  # type: ignore[method-assign]

    async def turn() -> None:
        async with hold_session("user_1", backend):
            await asyncio.sleep(10)

    task = asyncio.create_task(turn())
    await asyncio.wait_for(renewing.wait(), 1)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert backend.holders == {}
    assert [t for t in asyncio.all_tasks() if t is not asyncio.current_task()] == []


def _owner_in_child(pipe) -> None:
    pipe.send(_new_owner())


def test_owners_are_unique_in_a_process_and_a_forked_child_uses_its_own():
    owners = {_new_owner() for _ in range(10_000)}
    assert len(owners) == 10_000
    parent, child = multiprocessing.get_context("fork").Pipe()
    process = multiprocessing.get_context("fork").Process(target=_owner_in_child, args=(child,))
    process.start()
    forked = parent.recv()
    process.join()
    token = next(iter(owners)).rsplit("-", 1)[0]
    assert forked.rsplit("-", 1)[0] != token and _new_owner().rsplit("-", 1)[0] == token
