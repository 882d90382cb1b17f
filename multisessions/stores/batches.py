"""Calls made in one pass of the event loop go to the server together, in one round trip.

Many turns at once each start and commit with a short call to the store. Each call has a fixed
cost on the client (the driver's pool, the protocol, a socket write that wakes the server) that
outweighs its own work when many users are served (profiles on the benchmarks page).
``Batches`` queues the calls
made while the event loop runs its ready tasks and sends them as one batch when they are done:
no timer and no added wait (the batch goes out in the loop's next pass), and a quiet store gets
batches of one. A call whose caller was cancelled before its batch left is not sent.

A reply may be an exception: that call alone fails (a Redis pipeline answers each command on
its own). When a whole batch fails and the server refused it (a statement error, so nothing was
written), each call is sent again on its own, so one bad call fails only itself.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any, Generic, TypeVar

Request = TypeVar("Request")
Reply = TypeVar("Reply")

MAX_BATCH = 64
"""Most calls in one batch by default: a longer queue goes out as several batches, side by side."""


class Batches(Generic[Request, Reply]):
    """Queue ``call(request)``s and send them ``send(requests)`` at a time (replies in order).

    ``refused(exc)`` tells whether a batch's failure left nothing written (then each call is
    retried alone); ``abandoned(request, reply)`` is told of a reply whose caller was cancelled
    meanwhile (to give back what the call took, such as a lease). ``max_batch`` caps a batch: a
    server that works through a batch one call at a time answers several smaller ones sooner,
    side by side, while the client works on the first replies."""

    def __init__(
        self,
        send: Callable[[list[Request]], Awaitable[Sequence[Reply | BaseException]]],
        *,
        refused: Callable[[BaseException], bool],
        abandoned: Callable[[Request, Reply], Awaitable[None]] | None = None,
        max_batch: int | None = None,
    ) -> None:
        self._send = send
        self._max_batch = max_batch
        self._refused = refused
        self._abandoned = abandoned
        self._queue: list[tuple[Request, asyncio.Future[Reply]]] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._sending: set[asyncio.Task[None]] = set()

    async def call(self, request: Request) -> Reply:
        """Send ``request`` with the others made in this pass of the loop; its reply."""
        loop = asyncio.get_running_loop()
        if loop is not self._loop:  # calls a stopped loop left queued can never be answered now
            self._loop, self._queue = loop, []
        reply: asyncio.Future[Reply] = loop.create_future()
        if not self._queue:
            loop.call_soon(self._flush, loop)
        self._queue.append((request, reply))
        try:
            return await reply
        except asyncio.CancelledError:
            # Cancelled after the reply came but before this caller woke: give it back all the same.
            if reply.done() and not reply.cancelled() and reply.exception() is None:
                self._later(loop, self._give_back(request, reply.result()))
            raise

    def _flush(self, loop: asyncio.AbstractEventLoop) -> None:
        queue, self._queue = [call for call in self._queue if not call[1].done()], []
        size = self._max_batch or MAX_BATCH
        for first in range(0, len(queue), size):
            self._later(loop, self._run(queue[first : first + size]))

    async def _run(self, batch: list[tuple[Request, asyncio.Future[Reply]]]) -> None:
        try:
            replies = await self._send([request for request, _ in batch])
        except Exception as exc:
            if len(batch) > 1 and self._refused(exc):
                await asyncio.gather(*(self._run([call]) for call in batch))
                return
            for _, reply in batch:
                if not reply.done():
                    reply.set_exception(exc)
            return
        except BaseException as exc:  # cancelled (the loop is closing): the callers are told so
            for _, reply in batch:
                reply.cancel()
            if not isinstance(exc, asyncio.CancelledError):
                raise
            return
        left = []
        for (request, reply), answer in zip(batch, replies, strict=True):
            if isinstance(answer, BaseException):
                if not reply.done():
                    reply.set_exception(answer)
            elif not reply.done():
                reply.set_result(answer)
            else:
                left.append((request, answer))
        for request, answer in left:
            await self._give_back(request, answer)

    async def _give_back(self, request: Request, answer: Reply) -> None:
        if self._abandoned is not None:
            with contextlib.suppress(Exception):  # best effort: a lease left behind runs out
                await self._abandoned(request, answer)

    def _later(self, loop: asyncio.AbstractEventLoop, work: Coroutine[Any, Any, None]) -> None:
        task = loop.create_task(work)
        self._sending.add(task)  # held until done: the loop keeps only weak references
        task.add_done_callback(self._sending.discard)

    async def close(self) -> None:
        """Wait for the batches under way."""
        if self._sending:
            await asyncio.gather(*self._sending, return_exceptions=True)
