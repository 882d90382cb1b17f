"""The stand-in OpenAI server for tests of the real model path, and helpers to read its log.

Import explicitly: ``from standin_fixture import module_standin, standin_fixture`` (the fixtures,
named ``standin`` for tests) and the helpers. One server per test module; each test gets it
reset (empty log, no planned failures, start-up modes).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

import agent
from multisessions.cli import Lesson
from multisessions.settings import Api, Settings
from tools.standin_server import RecordedRequest, StandinServer

APIS: list[Api] = ["responses", "chat_completions"]
KEY = "sk-test-standin-secret-4242"
"""The API key the tests configure; no output may ever carry it."""


@pytest.fixture(scope="module", name="module_standin")
def module_standin_fixture() -> Iterator[StandinServer]:
    with StandinServer() as server:
        yield server


@pytest.fixture(name="standin")
def standin_fixture(module_standin: StandinServer) -> StandinServer:
    """The module's stand-in server, reset for this test."""
    module_standin.reset()
    return module_standin


def settings_for(api: Api, server: StandinServer, **changes: Any) -> Settings:
    """Settings for the real model path against ``server``: no environment, no ``.env`` involved."""
    values: dict[str, Any] = {"api_key": KEY, "base_url": server.base_url, "api": api, "max_retries": 0}
    return Settings(**(values | changes))


def lesson() -> Lesson:
    """What ``python agent.py`` hands the command line."""
    return Lesson(agent.DEMOS, agent.EXTRA_DEMOS, agents=agent.support_agents, first_agent="Triage Agent")


def model_requests(server: StandinServer) -> list[RecordedRequest]:
    """The requests that asked a model for an answer (not /v1/models)."""
    return [request for request in server.requests if request.api is not None]


def sent_text(request: RecordedRequest) -> str:
    """Everything one request carried, as one searchable string."""
    return json.dumps(request.body, ensure_ascii=False)


# A fact only one session's user ever states, for every session the four demos use.
FACTS = {
    "user_alice": "alice@example.com",
    "user_bob": "bob@example.org",
    "support_feature_user_alice": "T-4821",
    "sales_feature_user_alice": "Enterprise plan",
    "chat_feature_user_alice": "dark mode",
    "thread_support-7731": "dana@example.com",
    "user_123": "My name is Sam",
    "chat_feature_user_123": "emoji reactions",
    "thread_abc123": "ticket number is 9001",
    "user_123_20241215": "20241215-7",
}


def sessions_in(request: RecordedRequest) -> set[str]:
    """The sessions whose facts appear in one request: more than one means histories were mixed."""
    text = sent_text(request)
    return {session_id for session_id, fact in FACTS.items() if fact in text}
