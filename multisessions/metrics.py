"""Prometheus metrics for serve.py: turns by outcome, their latency, waits, leases, open streams.

``METRICS`` observes every turn of the process (``observers.watch_turns(METRICS)``); serve.py
counts its open event streams with ``counted_stream`` and answers ``GET /metrics`` with
``exposition()``, behind ``SERVE_METRICS_TOKEN`` (``allowed``).

Several worker processes (``uvicorn --workers N``) each count their own turns. With
``PROMETHEUS_MULTIPROC_DIR`` set (an empty folder, the same for every worker, emptied before the
server starts) every worker writes its numbers there and any worker's ``/metrics`` answers for
all of them: prometheus-client's multiprocess mode. Without it, a scrape sees one worker only.
"""

from __future__ import annotations

import contextlib
import hmac
import os
from collections.abc import AsyncIterator, Callable

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.multiprocess import MultiProcessCollector

from multisessions.errors import ConfigError
from multisessions.failures import FAILURE_KINDS
from multisessions.observers import OUTCOMES, watch_turns

MULTIPROC_DIR = "PROMETHEUS_MULTIPROC_DIR"
TURN_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 180.0)
"""Seconds: from the offline model's milliseconds to a real model's handoff turn near its deadline."""


class TurnMetrics:
    """The metrics, in their own registry (never prometheus-client's global one); a ``TurnObserver``."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.turns = Counter(
            "multisessions_turns",
            "Turns ended, by outcome (ok, model_failed, store_failed, busy, interrupted, ...)",
            ["outcome"],
            registry=self.registry,
        )
        self.model_failures = Counter(
            "multisessions_model_failures",
            "Turns failed by their model, by kind (timeout, rate_limited, unreachable, ...)",
            ["kind"],
            registry=self.registry,
        )
        self.turn_seconds = Histogram(
            "multisessions_turn_seconds",
            "Seconds a turn took, from asking for its session to its end, whatever the outcome",
            buckets=TURN_BUCKETS,
            registry=self.registry,
        )
        self.busy_wait_seconds = Histogram(
            "multisessions_busy_wait_seconds",
            "Seconds a turn waited for its session, busy with another turn, before holding it",
            buckets=TURN_BUCKETS,
            registry=self.registry,
        )
        self.leases_held = Gauge(
            "multisessions_leases_held",
            "Sessions held by running turns",
            registry=self.registry,
            multiprocess_mode="livesum",
        )
        self.streams_open = Gauge(
            "multisessions_streams_open",
            "Server-sent event responses open",
            registry=self.registry,
            multiprocess_mode="livesum",
        )
        # Every label shows from the start, at 0: a dashboard's rate() needs the series to exist.
        self._outcomes = {outcome: self.turns.labels(outcome) for outcome in OUTCOMES}
        self._kinds = {kind: self.model_failures.labels(kind) for kind in FAILURE_KINDS}

    def turn_ended(self, outcome: str, kind: str | None, seconds: float) -> None:
        self._outcomes[outcome].inc()
        if kind is not None:
            self._kinds[kind].inc()
        self.turn_seconds.observe(seconds)

    def turn_waited(self, seconds: float) -> None:
        self.busy_wait_seconds.observe(seconds)

    def leases_changed(self, change: int) -> None:
        self.leases_held.inc(change)

    def exposition(self) -> tuple[bytes, str]:
        """(the text a scrape reads, its content type): every worker's, in multiprocess mode."""
        if os.environ.get(MULTIPROC_DIR):
            registry = CollectorRegistry()
            MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
            return generate_latest(registry), CONTENT_TYPE_LATEST
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


def start_metrics(token: str) -> Callable[[], None]:
    """Count every turn of this process in ``METRICS`` if ``token`` (``SERVE_METRICS_TOKEN``) is
    set; returns the call that stops counting. ``ConfigError`` in one line if
    ``PROMETHEUS_MULTIPROC_DIR`` is set but is no folder."""
    if not token:
        return lambda: None
    folder = os.environ.get(MULTIPROC_DIR)
    if folder and not os.path.isdir(folder):
        raise ConfigError(
            f"{MULTIPROC_DIR}={folder!r} is not a folder; create it (empty) before the server starts"
        )
    return watch_turns(METRICS)


def allowed(authorization: str | None, token: str) -> bool:
    """Whether ``Authorization: Bearer TOKEN`` carries ``token`` (compared in constant time)."""
    scheme, _, presented = (authorization or "").partition(" ")
    if not token or scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(presented.strip().encode(), token.encode())


async def counted_stream(events: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """``events``, counted in ``multisessions_streams_open`` while the response is open."""
    async with contextlib.aclosing(events):  # type: ignore[type-var]
        METRICS.streams_open.inc()
        try:
            async for chunk in events:
                yield chunk
        finally:
            METRICS.streams_open.dec()


METRICS = TurnMetrics()
"""The process's metrics (one set, whatever the number of apps made in it)."""
