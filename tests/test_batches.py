"""batches.py: calls made in one pass of the event loop go out together, replies go back in order,
one refused call fails only itself, and a lease taken for a cancelled caller is given back."""

from __future__ import annotations

import asyncio

import pytest

from multisessions.stores import batches
from multisessions.stores.batches import Batches


class Refused(Exception):
    """A statement error: the batch wrote nothing."""


class Server:
    """Answers each request with its double; refuses a batch holding a negative request."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.down = False

    async def send(self, requests: list[int]) -> list[int]:
        self.batches.append(list(requests))
        await asyncio.sleep(0.01)
        if self.down:
            raise ConnectionError("server gone")
        if any(r < 0 for r in requests):
            raise Refused(f"bad request in {requests}")
        return [2 * r for r in requests]


def refused(exc: BaseException) -> bool:
    return isinstance(exc, Refused)


async def test_calls_made_in_one_pass_go_in_one_batch_and_get_their_own_replies():
    server = Server()
    calls = Batches(server.send, refused=refused)
    assert await asyncio.gather(*(calls.call(i) for i in range(5))) == [0, 2, 4, 6, 8]
    assert server.batches == [[0, 1, 2, 3, 4]]
    assert await calls.call(7) == 14  # a quiet store: a batch of one
    assert server.batches[1:] == [[7]]


async def test_a_long_queue_goes_out_in_batches_of_at_most_max_batch(monkeypatch):
    monkeypatch.setattr(batches, "MAX_BATCH", 4)
    server = Server()
    calls = Batches(server.send, refused=refused)
    assert await asyncio.gather(*(calls.call(i) for i in range(10))) == [2 * i for i in range(10)]
    assert server.batches == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    capped = Batches(server.send, refused=refused, max_batch=3)  # a store's own cap
    assert await asyncio.gather(*(capped.call(i) for i in range(5))) == [0, 2, 4, 6, 8]
    assert server.batches[3:] == [[0, 1, 2], [3, 4]]


async def test_a_refused_batch_is_sent_again_call_by_call_so_only_the_bad_call_fails():
    server = Server()
    calls = Batches(server.send, refused=refused)
    replies = await asyncio.gather(*(calls.call(i) for i in (1, -1, 2)), return_exceptions=True)
    assert replies[0] == 2 and replies[2] == 4
    assert isinstance(replies[1], Refused)
    assert server.batches == [[1, -1, 2], [1], [-1], [2]]


async def test_a_lost_server_fails_every_call_of_the_batch_without_sending_it_again():
    # After a lost connection a commit may have landed: sending it again could write it twice.
    server = Server()
    server.down = True
    calls = Batches(server.send, refused=refused)
    replies = await asyncio.gather(*(calls.call(i) for i in (1, 2)), return_exceptions=True)
    assert all(isinstance(r, ConnectionError) for r in replies)
    assert server.batches == [[1, 2]]


async def test_a_reply_for_a_cancelled_caller_is_handed_back_and_the_others_get_theirs():
    server = Server()
    handed_back: list[tuple[int, int]] = []

    async def abandoned(request: int, reply: int) -> None:
        handed_back.append((request, reply))

    calls = Batches(server.send, refused=refused, abandoned=abandoned)
    first = asyncio.create_task(calls.call(1))
    second = asyncio.create_task(calls.call(2))
    await asyncio.sleep(0)  # both queued, the batch sent
    await asyncio.sleep(0)
    first.cancel()
    assert await second == 4
    with pytest.raises(asyncio.CancelledError):
        await first
    await calls.close()
    assert handed_back == [(1, 2)]


def test_calls_a_stopped_loop_left_queued_do_not_block_the_next_loop():
    server = Server()
    calls = Batches(server.send, refused=refused)
    old = asyncio.new_event_loop()
    calls._loop, calls._queue = old, [(99, old.create_future())]
    old.close()  # stopped before that batch left: nothing will ever send it

    async def call_in_a_new_loop() -> int:
        return await asyncio.wait_for(calls.call(3), 5)

    assert asyncio.run(call_in_a_new_loop()) == 6
    assert server.batches == [[3]]


async def test_a_call_cancelled_before_its_batch_left_is_not_sent():
    server = Server()
    calls = Batches(server.send, refused=refused)
    first = asyncio.create_task(calls.call(1))
    second = asyncio.create_task(calls.call(2))
    await asyncio.sleep(0)  # both queued, the batch not yet sent
    first.cancel()
    assert await second == 4
    assert server.batches == [[2]]


async def test_an_exception_in_the_replies_fails_that_call_alone():
    async def send(requests: list[int]) -> list[int | BaseException]:
        return [ValueError("no") if r == 2 else r for r in requests]

    calls = Batches(send, refused=refused)
    replies = await asyncio.gather(*(calls.call(i) for i in (1, 2, 3)), return_exceptions=True)
    assert replies[0] == 1 and replies[2] == 3 and isinstance(replies[1], ValueError)


async def test_a_caller_cancelled_after_its_reply_came_but_before_it_woke_hands_the_reply_back():
    handed_back: list[tuple[int, int]] = []

    async def abandoned(request: int, reply: int) -> None:
        handed_back.append((request, reply))

    callers: list[asyncio.Task[int]] = []

    async def send(requests: list[int]) -> list[int]:
        asyncio.get_running_loop().call_soon(callers[0].cancel)  # runs before the caller wakes
        return [2 * r for r in requests]

    calls = Batches(send, refused=refused, abandoned=abandoned)
    callers.append(asyncio.create_task(calls.call(5)))
    with pytest.raises(asyncio.CancelledError):
        await callers[0]
    await calls.close()
    assert handed_back == [(5, 10)]
