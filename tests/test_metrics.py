"""/metrics: turns through the HTTP API move the counters, the histograms and the gauges by
exactly what happened (read with prometheus-client's own parser); without its token, nothing."""

from __future__ import annotations

import asyncio
import sqlite3
from typing import Any

import httpx
import openai
import pytest
from agents.exceptions import MaxTurnsExceeded
from prometheus_client.parser import text_string_to_metric_families

from multisessions import OfflineModel
from multisessions.errors import (
    AnswerTooLong,
    AwaitingApproval,
    ConfigError,
    ModelTimeout,
    SessionBusy,
    StoreError,
    TurnFailed,
    TurnInterrupted,
)
from multisessions.failures import FAILURE_KINDS
from multisessions.observers import outcome_of
from multisessions.settings import load_settings
from serve_fixture import auth, events_of, serving

METRICS_TOKEN = "metrics-token-0123456789abcdef"
SCRAPE = {"Authorization": f"Bearer {METRICS_TOKEN}"}
URL = "/api/conversations/{}/messages"


class Steered(OfflineModel):
    """The offline model, slowed by ``delay`` seconds, or failing with ``fail``, as a test says."""

    def __init__(self) -> None:
        self.delay = 0.0
        self.fail: BaseException | None = None

    async def get_response(self, *args: Any, **kwargs: Any) -> Any:
        await asyncio.sleep(self.delay)
        if self.fail is not None:
            raise self.fail
        return await super().get_response(*args, **kwargs)

    async def stream_response(self, *args: Any, **kwargs: Any) -> Any:
        await asyncio.sleep(self.delay)
        if self.fail is not None:
            raise self.fail
        async for event in super().stream_response(*args, **kwargs):
            yield event


async def scrape(client: httpx.AsyncClient) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample /metrics shows: (name, labels) -> value."""
    answer = await client.get("/metrics", headers=SCRAPE)
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(answer.text)
        for sample in family.samples
    }


def moved(before: dict[Any, float], after: dict[Any, float]) -> dict[Any, float]:
    """The samples that changed, by how much (buckets left out: the counts say enough)."""
    return {
        key: after[key] - before.get(key, 0.0)
        for key in after
        if after[key] != before.get(key, 0.0) and not key[0].endswith(("_bucket", "_sum", "_created"))
    }


def turns(outcome: str) -> tuple[str, tuple[tuple[str, str], ...]]:
    return ("multisessions_turns_total", (("outcome", outcome),))


async def test_turns_through_the_api_move_the_metrics_by_what_happened(db):
    model = Steered()
    async with serving(db, model=model, serve_metrics_token=METRICS_TOKEN) as client:
        start = await scrape(client)
        # Two answered turns: one JSON, one streamed.
        assert (
            await client.post(URL.format("a"), json={"message": "hi"}, headers=auth("alice"))
        ).status_code == 200
        streamed = await client.post(
            URL.format("a"),
            json={"message": "again"},
            headers={**auth("alice"), "Accept": "text/event-stream"},
        )
        assert events_of(streamed.text)[-1][0] == "done"
        answered = await scrape(client)
        assert moved(start, answered) == {
            turns("ok"): 2,
            ("multisessions_turn_seconds_count", ()): 2,
        }
        # A model that cannot be reached: a failed turn, by kind.
        model.fail = openai.APIConnectionError(request=httpx.Request("POST", "http://127.0.0.1:9/v1"))
        assert (
            await client.post(URL.format("a"), json={"message": "x"}, headers=auth("bob"))
        ).status_code == 502
        model.fail = openai.APITimeoutError(request=httpx.Request("POST", "http://127.0.0.1:9/v1"))
        assert (
            await client.post(URL.format("a"), json={"message": "x"}, headers=auth("bob"))
        ).status_code == 504
        failed = await scrape(client)
        assert moved(answered, failed) == {
            turns("model_failed"): 2,
            ("multisessions_model_failures_total", (("kind", "unreachable"),)): 1,
            ("multisessions_model_failures_total", (("kind", "timeout"),)): 1,
            ("multisessions_turn_seconds_count", ()): 2,
        }


async def test_a_busy_conversation_shows_as_a_wait_and_the_gauges_while_it_runs(db):
    model = Steered()
    model.delay = 0.3
    async with serving(db, model=model, serve_metrics_token=METRICS_TOKEN) as client:
        start = await scrape(client)
        streamed = {**auth("alice"), "Accept": "text/event-stream"}
        first = asyncio.create_task(client.post(URL.format("b"), json={"message": "one"}, headers=streamed))
        await asyncio.sleep(0.15)
        second = asyncio.create_task(
            client.post(URL.format("b"), json={"message": "two"}, headers=auth("alice"))
        )
        await asyncio.sleep(0.05)
        during = await scrape(client)
        # One turn holds the session and streams; the other waits for it (SERVE_ON_BUSY=wait).
        assert during[("multisessions_leases_held", ())] - start[("multisessions_leases_held", ())] == 1
        assert during[("multisessions_streams_open", ())] - start[("multisessions_streams_open", ())] == 1
        assert (await first).status_code == (await second).status_code == 200
        after = await scrape(client)
        assert moved(start, after) == {
            turns("ok"): 2,
            ("multisessions_turn_seconds_count", ()): 2,
            ("multisessions_busy_wait_seconds_count", ()): 1,
        }
        waited = (
            after[("multisessions_busy_wait_seconds_sum", ())]
            - start[("multisessions_busy_wait_seconds_sum", ())]
        )
        assert 0.05 < waited < 1.0  # the rest of the first turn's 0.3 s call, roughly
        for gauge in ("multisessions_leases_held", "multisessions_streams_open"):
            assert after[(gauge, ())] == start[(gauge, ())], gauge  # both turns over: back where they were


DOUBLE_TEXTS = [
    ("reject", (200, 409), {"busy": 1}),
    ("interrupt", (409, 200), {"interrupted": 1, "waited": 1}),  # the newer one waits for it to stop
]


@pytest.mark.parametrize(("on_busy", "statuses", "counted"), DOUBLE_TEXTS)
async def test_a_double_text_counts_as_serve_on_busy_says(db, on_busy, statuses, counted):
    model = Steered()
    model.delay = 0.4
    async with serving(db, model=model, serve_metrics_token=METRICS_TOKEN, serve_on_busy=on_busy) as client:
        start = await scrape(client)
        one, two = {"message": "one"}, {"message": "two"}
        first = asyncio.create_task(client.post(URL.format("c"), json=one, headers=auth("bob")))
        await asyncio.sleep(0.2)
        second = await client.post(URL.format("c"), json=two, headers=auth("bob"))
        assert ((await first).status_code, second.status_code) == statuses
        expected = {turns("ok"): 1, ("multisessions_turn_seconds_count", ()): 2}
        for outcome, count in counted.items():
            key = ("multisessions_busy_wait_seconds_count", ()) if outcome == "waited" else turns(outcome)
            expected[key] = count
        assert moved(start, await scrape(client)) == expected


def test_every_way_a_turn_ends_has_its_outcome():
    request = httpx.Request("POST", "http://127.0.0.1:9/v1")
    response = httpx.Response(429, request=request)
    cases = [
        (None, ("ok", None)),
        (TurnFailed("s", SessionBusy("busy")), ("busy", None)),
        (TurnInterrupted("s"), ("interrupted", None)),
        (TurnFailed("s", AwaitingApproval("s")), ("awaiting_approval", None)),
        (TurnFailed("s", StoreError("down")), ("store_failed", None)),
        (TurnFailed("s", sqlite3.OperationalError("locked")), ("store_failed", None)),
        (TurnFailed("s", ConnectionError("reset"), saved=None), ("unconfirmed", None)),
        (TurnFailed("s", ModelTimeout("late")), ("model_failed", "timeout")),
        (TurnFailed("s", AnswerTooLong("long")), ("model_failed", "too_long")),
        (
            TurnFailed("s", openai.RateLimitError("slow", response=response, body=None)),
            ("model_failed", "rate_limited"),
        ),
        (TurnFailed("s", MaxTurnsExceeded("loop")), ("model_failed", "max_turns")),
        (TurnFailed("s", RuntimeError("?")), ("model_failed", "other")),
        (asyncio.CancelledError(), ("cancelled", None)),
    ]
    for exc, expected in cases:
        assert outcome_of(exc) == expected, exc
    assert {kind for _, (_, kind) in cases if kind} <= set(FAILURE_KINDS)


async def test_metrics_refuse_without_their_token_and_are_off_without_one(db):
    async with serving(db, serve_metrics_token=METRICS_TOKEN) as client:
        assert (await client.get("/metrics")).status_code == 401
        wrong = await client.get(
            "/metrics", headers={"Authorization": "Bearer metrics-token-0123456789abcdeX"}
        )
        assert wrong.status_code == 401
        users = await client.get("/metrics", headers=auth("alice"))  # a user's token is not the operator's
        assert users.status_code == 401
        assert "multisessions_turns_total" not in users.text
    async with serving(db) as client:  # no SERVE_METRICS_TOKEN: no /metrics at all
        off = await client.get("/metrics", headers=SCRAPE)
        assert (off.status_code, off.json()) == (404, {"detail": "Not Found"})


def test_a_weak_or_shared_metrics_token_is_refused_in_one_line(tmp_path):
    env = {"SERVE_TOKENS": "alice=alice-token-0123456789abcdef"}
    with pytest.raises(ConfigError, match="at least 16 printable characters"):
        load_settings({**env, "SERVE_METRICS_TOKEN": "short"}, tmp_path / "none.env", serving=True)
    with pytest.raises(ConfigError, match="must differ from every SERVE_TOKENS token"):
        load_settings(
            {**env, "SERVE_METRICS_TOKEN": "alice-token-0123456789abcdef"},
            tmp_path / "none.env",
            serving=True,
        )
    with pytest.raises(ConfigError, match="SERVE_TRACES='jaeger' must be one of: off, console, otlp, openai"):
        load_settings({**env, "SERVE_TRACES": "jaeger"}, tmp_path / "none.env", serving=True)
    settings = load_settings(
        {**env, "SERVE_METRICS_TOKEN": METRICS_TOKEN}, tmp_path / "none.env", serving=True
    )
    assert (settings.serve_metrics_token, settings.serve_traces, settings.serve_trace_text) == (
        METRICS_TOKEN,
        "off",
        False,
    )
    assert METRICS_TOKEN not in repr(settings)


async def test_a_stream_left_early_is_no_longer_counted_open_and_its_turn_is_closed():
    from multisessions.metrics import METRICS, counted_stream

    closed = []

    async def events():
        try:
            for i in range(10):
                yield f"event {i}".encode()
        finally:
            closed.append(True)  # what serve.py's stream does here: close the session

    before = METRICS.registry.get_sample_value("multisessions_streams_open")
    stream = counted_stream(events())
    assert await anext(stream) == b"event 0"
    assert METRICS.registry.get_sample_value("multisessions_streams_open") == before + 1
    await stream.aclose()  # the client went away: the server closes the response's iterator
    assert (METRICS.registry.get_sample_value("multisessions_streams_open"), closed) == (before, [True])
