"""The real model path: the SDK's own model classes, over real HTTP, to the stand-in server, on both APIs.

What the offline model cannot show: one event loop per command, a client per loop, bounded model
calls, one line for every failure (secrets redacted), and sessions kept apart on the wire.
"""

from __future__ import annotations

import asyncio
import io
import re
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from types import SimpleNamespace

import openai
import pytest
from agents import Agent, OpenAIChatCompletionsModel, RunConfig, Runner
from openai import AsyncOpenAI

import agent
from conftest import ROOT, subprocess_env
from helpers import reply
from multisessions import SQLiteStore, TurnFailed, read_all, resolve_model, run_turn
from multisessions.chat import chat
from multisessions.cli import main
from multisessions.failures import describe_failure
from multisessions.settings import DEFAULT_MAX_RETRIES, DEFAULT_TIMEOUT, Settings
from standin_fixture import (  # noqa: F401  (the fixtures)
    APIS,
    KEY,
    lesson,
    model_requests,
    module_standin_fixture,
    sent_text,
    sessions_in,
    settings_for,
    standin_fixture,
)
from tools.standin_server import RecordedRequest, StandinServer

pytestmark = pytest.mark.slow  # starts processes or servers: python -m pytest -m slow

# -- python agent.py, end to end -----------------------------------------------------------------


@dataclass
class AgentPyRun:
    """One ``python agent.py`` run and what its server received."""

    result: subprocess.CompletedProcess[str]
    base_url: str
    requests: list[RecordedRequest]


@pytest.fixture(scope="module")
def agent_py_runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, AgentPyRun]]:
    """``python agent.py`` once per API, both at once (a few seconds each), each on its own server.

    The Chat Completions server is like llama.cpp's: no /v1/responses, and a 500 on
    ``content: null`` beside ``tool_calls``.
    """
    servers = {
        "responses": StandinServer(only="responses"),
        "chat_completions": StandinServer(only="chat_completions", reject_null_tool_call_content=True),
    }
    with ExitStack() as stack:
        for server in servers.values():
            stack.enter_context(server)
        running = {
            api: subprocess.Popen(
                [sys.executable, str(ROOT / "agent.py")],
                cwd=tmp_path_factory.mktemp(api),
                env=subprocess_env()
                | {"OPENAI_API_KEY": KEY, "OPENAI_BASE_URL": server.base_url, "OPENAI_API": api},
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for api, server in servers.items()
        }
        runs = {}
        for api, process in running.items():
            out, err = process.communicate(timeout=90)
            result = subprocess.CompletedProcess(process.args, process.returncode, out, err)
            runs[api] = AgentPyRun(result, servers[api].base_url, model_requests(servers[api]))
        yield runs


@pytest.mark.parametrize("api", APIS)
def test_python_agent_py_runs_all_four_demos_in_one_process(api, agent_py_runs: dict[str, AgentPyRun]):
    run = agent_py_runs[api]
    assert run.result.returncode == 0, run.result.stderr
    out = run.result.stdout
    assert f"Model: gpt-4.1-mini at {run.base_url}, {api} API" in out
    assert "offline model" not in out and "Traceback" not in out + run.result.stderr
    for demo in range(1, 5):
        assert f"=== Demo {demo}:" in out
    assert "[demo:thread_support-7731]   handoff: Triage Agent -> Billing Agent" in out
    assert "[demo:user_alice] Support Agent: Your name is Alice. Your email is alice@example.com." in out
    assert "[demo:user_bob] Support Agent: Your name is Bob. Your email is bob@example.org." in out
    assert "[demo:thread_support-7731] Billing Agent: Your name is Dana. Your order number is 5512." in out
    assert KEY not in out + run.result.stderr


@pytest.mark.parametrize("api", APIS)
def test_no_request_of_python_agent_py_carries_two_sessions(api, agent_py_runs: dict[str, AgentPyRun]):
    requests = agent_py_runs[api].requests
    assert len(requests) > 20 and {r.api for r in requests} == {api}
    for request in requests:
        assert len(sessions_in(request)) <= 1, f"one request mixed sessions {sessions_in(request)}"
    assert not any("alice@example.com" in str(r.body) and "bob@example.org" in str(r.body) for r in requests)


def test_each_event_loop_gets_its_own_client(standin: StandinServer, db):
    """Two asyncio.run calls in one process, as the README's python -c lines do: a model per loop works."""
    settings = settings_for("responses", standin)
    for demo in (agent.multi_user_sessions, agent.shared_session_agents):
        asyncio.run(demo(model=resolve_model(None, settings), db_path=db))
    # The SDK's way, one client shared by two loops, is what failed before ("Event loop is closed").
    shared = resolve_model(None, settings)
    asyncio.run(agent.multi_user_sessions(model=shared, db_path=db))
    with pytest.raises(TurnFailed, match="Event loop is closed"):
        asyncio.run(agent.multi_user_sessions(model=shared, db_path=db))


# -- the chat, the handoff, the resume -------------------------------------------------------------


@pytest.mark.parametrize("api", APIS)
async def test_chat_hands_off_and_a_later_chat_resumes_with_the_specialist(
    api, standin: StandinServer, db, capsys
):
    standin.reject_null_tool_call_content = True
    store, agents = SQLiteStore(db), agent.support_agents()
    script = (
        "My name is Alice.\nI was charged twice for order 1042, I need a refund\n/user bob\nWhat's my name?\n"
    )
    model = resolve_model(None, settings_for(api, standin))
    assert (
        await chat(store, model, agents, "alice", first_agent="Triage Agent", stdin=io.StringIO(script)) == 0
    )
    first = capsys.readouterr().out
    assert "[user_alice] Triage Agent: Thanks, Alice. How can I help?" in first
    assert "[user_alice] Billing Agent: Thanks, Alice." in first
    assert "[user_bob] Triage Agent: I don't know your name" in first
    # A later run, a new client: the session continues, with the agent that answered last.
    model = resolve_model(None, settings_for(api, standin), announce=False)
    stdin = io.StringIO("What's my name, and what is my order number?\n")
    assert await chat(store, model, agents, "alice", first_agent="Triage Agent", stdin=stdin) == 0
    later = capsys.readouterr().out
    assert "[user_alice] Billing Agent: Your name is Alice. Your order number is 1042." in later
    handoff = [r for r in model_requests(standin) if "transfer_to_billing_agent" in str(r.body)]
    if api == "chat_completions":  # what llama.cpp rejects was not sent: content "" beside tool_calls
        replayed = [m for r in handoff for m in r.body["messages"] if m.get("tool_calls")]
        assert replayed and all(m["content"] == "" for m in replayed)


async def test_a_multi_line_answer_keeps_the_session_prefix_in_the_chat(db, capsys):
    from agents.testing import ModelStep, ScriptedModel

    model = ScriptedModel([ModelStep.respond(lambda call: reply("First line.\nSecond line.\n\nLast."))])
    agents = {"Solo": Agent(name="Solo")}
    await chat(SQLiteStore(db), model, agents, "kim", first_agent="Solo", stdin=io.StringIO("Hello\n"))
    answer = [line for line in capsys.readouterr().out.splitlines() if "chatting as" not in line]
    assert answer == [
        "[user_kim] Solo: First line.",
        "[user_kim]   Second line.",
        "[user_kim]   ",
        "[user_kim]   Last.",
    ]


def test_a_multi_line_answer_keeps_the_session_prefix_in_the_demo_transcript(capsys):
    result = SimpleNamespace(
        new_items=[], final_output="One.\nTwo.\nThree.", last_agent=SimpleNamespace(name="A")
    )
    agent.print_turn(SimpleNamespace(session_id="user_x"), "x", "Tell me three things.", result)  # type: ignore[arg-type]
    assert capsys.readouterr().out.splitlines() == [
        "[user_x] x: Tell me three things.",
        "[user_x] A: One.",
        "[user_x]   Two.",
        "[user_x]   Three.",
    ]


# -- every failure: one line with its fix, and the session exactly as before -----------------------

FAILURES = {
    "unauthorized": ("AuthenticationError, HTTP 401: Incorrect API key provided.", "check OPENAI_API_KEY"),
    "forbidden": ("PermissionDeniedError, HTTP 403: Country, region", "may use OPENAI_MODEL"),
    "not_found": ("NotFoundError, HTTP 404: The model does not exist", "check OPENAI_MODEL"),
    "rate_limited": ("RateLimitError, HTTP 429: Rate limit reached", "wait a minute and try again"),
    "server_error": ("InternalServerError, HTTP 500: The server had an error", "the server failed"),
    "context_length": (
        "BadRequestError, HTTP 400: This model's maximum context length",
        "SessionSettings(limit=...)",
    ),
    "html": ("APIResponseValidationError: the answer is text/html", "OpenAI-compatible API"),
    "malformed_json": ("APIResponseValidationError: the answer is not valid JSON", "OpenAI-compatible API"),
    "echo_key": (
        "AuthenticationError, HTTP 401: Incorrect API key provided: [redacted].",
        "check OPENAI_API_KEY",
    ),
    "hang": ("APITimeoutError: the server did not answer within 0.3 s", "raise OPENAI_TIMEOUT"),
    "wrong_api": ("NotFoundError, HTTP 404: File Not Found", "OPENAI_API="),
}


@pytest.mark.parametrize("api", APIS)
@pytest.mark.parametrize("kind", FAILURES)
async def test_a_failed_turn_leaves_the_store_as_it_was_and_says_one_line(
    kind, api, standin: StandinServer, db
):
    store = SQLiteStore(db)
    session = store.open("user_alice")
    helper = Agent(name="Support Agent")
    # Only the hang needs a short timeout, and only on the failing turn: a loaded machine may
    # take longer than 0.3 s to answer the first one.
    timeout = 0.3 if kind == "hang" else 10.0
    first = resolve_model(None, settings_for(api, standin, timeout=10.0), announce=False)
    model = resolve_model(None, settings_for(api, standin, timeout=timeout), announce=False)
    await run_turn(helper, session, "My name is Alice.", run_config=RunConfig(model=first))
    before = await read_all(session)
    if kind == "wrong_api":
        standin.only = "chat_completions" if api == "responses" else "responses"
    else:
        standin.fail_always(kind)

    with pytest.raises(TurnFailed) as failed:
        await run_turn(helper, session, "What's my name?", run_config=RunConfig(model=model))

    assert await read_all(session) == before
    line = describe_failure(failed.value.cause, [KEY])
    said, fix = FAILURES[kind]
    assert line.startswith(said) and fix in line.split("Fix: ")[1], line
    assert len(line.splitlines()) == 1 and "see the message above" not in line
    assert KEY not in line and KEY not in str(failed.value)
    if kind == "wrong_api":
        other = "chat_completions" if api == "responses" else "responses"
        assert f"OPENAI_API={other}" in line
    session.close()


async def test_a_server_that_rejects_the_history_is_named_as_such(standin: StandinServer):
    # The SDK's plain client, without our fix, against a llama.cpp-like server.
    standin.reject_null_tool_call_content = True
    client = AsyncOpenAI(api_key=KEY, base_url=standin.base_url, max_retries=0)
    triage = agent.support_agents()["Triage Agent"]
    model = OpenAIChatCompletionsModel("gpt-4.1-mini", openai_client=client)
    with pytest.raises(openai.InternalServerError) as failed:
        await Runner.run(
            triage,
            "I was charged twice for order 5512, can I get a refund?",
            run_config=RunConfig(model=model),
        )
    line = describe_failure(failed.value)
    assert line.startswith("InternalServerError, HTTP 500: Failed to parse messages")
    assert "rejects the conversation history" in line


def test_connection_refused_is_one_line():
    line = describe_failure(openai.APIConnectionError(request=_request("http://127.0.0.1:9/v1/responses")))
    assert line == (
        "APIConnectionError: Connection error. Fix: start the server or fix OPENAI_BASE_URL "
        "(tried http://127.0.0.1:9/v1/responses), or run offline with --offline."
    )


def test_secrets_are_redacted_from_every_line():
    error = ValueError(f"bad key {KEY} and sk-proj-abcdefgh and the-configured-secret")
    line = describe_failure(error, ["the-configured-secret"])
    assert "bad key [redacted] and [redacted] and [redacted]" in line
    assert "Fix: this is not a failure of the model server we know" in line


def _request(url: str) -> object:
    import httpx2

    return httpx2.Request("POST", url)


# -- the command line: bounded, one line, nothing saved, nothing secret ----------------------------


def test_the_default_timeout_and_retries_end_a_silent_server_within_two_minutes(monkeypatch):
    # The openai client retries a timeout like a 5xx; its own backoff, jitter taken at its longest.
    import openai._base_client as base

    monkeypatch.setattr(base, "random", lambda: 0.0)
    client = AsyncOpenAI(api_key=KEY, max_retries=DEFAULT_MAX_RETRIES, timeout=DEFAULT_TIMEOUT)
    options = base.FinalRequestOptions(method="post", url="/responses")
    backoff = sum(
        client._calculate_retry_timeout(DEFAULT_MAX_RETRIES - taken, options)
        for taken in range(DEFAULT_MAX_RETRIES)
    )
    tries = DEFAULT_MAX_RETRIES + 1
    assert backoff == 0.5 + 1.0
    assert DEFAULT_TIMEOUT * tries + backoff < 120 - 20  # 91.5 s, and room for the process around it


@pytest.mark.parametrize("api", APIS)
def test_a_server_that_never_answers_ends_the_command_in_one_line(api, standin: StandinServer, capsys, db):
    standin.fail_always("hang")
    settings = settings_for(api, standin, timeout=0.3, max_retries=1)
    started = time.monotonic()
    code = main(["multi-user", "--db", str(db)], lesson(), settings=settings)
    took = time.monotonic() - started
    err = capsys.readouterr().err
    assert code == 1
    assert re.fullmatch(
        r"error: demo:user_alice: APITimeoutError: "
        r"the server did not answer within 0\.3 s, 2 tries\. Fix: .*\n",
        err,
    ), err
    assert len(model_requests(standin)) == 2  # the client tried again once, as OPENAI_MAX_RETRIES=1 says
    assert took < 2 * 0.3 + 0.5 + 3  # two tries, one backoff, and the demo around them
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT count(*) FROM agent_messages").fetchone() == (0,)


def test_a_server_that_echoes_the_key_never_gets_it_printed(standin: StandinServer, capsys, db):
    standin.fail_always("echo_key")
    code = main(["multi-user", "--db", str(db)], lesson(), settings=settings_for("responses", standin))
    out, err = capsys.readouterr()
    assert code == 1 and KEY not in out + err and "[redacted]" in err


async def test_the_chat_never_prints_the_key_either(standin: StandinServer, db, capsys):
    standin.fail_always("echo_key")
    model = resolve_model(None, settings_for("chat_completions", standin))
    agents = agent.support_agents()
    await chat(SQLiteStore(db), model, agents, "al", first_agent="Triage Agent", stdin=io.StringIO("Hello\n"))
    out = capsys.readouterr().out
    assert KEY not in out and "error: AuthenticationError, HTTP 401" in out and "(nothing was saved)" in out


def test_api_option_reaches_a_server_that_speaks_only_chat_completions(standin: StandinServer, capsys, db):
    standin.only = "chat_completions"
    settings = settings_for("responses", standin)
    assert main(["naming", "--db", str(db)], lesson(), settings=settings) == 1
    assert "OPENAI_API=chat_completions (or --api chat_completions)" in capsys.readouterr().err
    assert main(["naming", "--db", str(db), "--api", "chat_completions"], lesson(), settings=settings) == 0


@pytest.mark.parametrize("api", APIS)
async def test_max_tokens_reaches_the_server(api, standin: StandinServer):
    model = resolve_model(None, settings_for(api, standin, max_tokens=64), announce=False)
    await Runner.run(Agent(name="A"), "Hello", run_config=RunConfig(model=model))
    [request] = model_requests(standin)
    assert request.body["max_output_tokens" if api == "responses" else "max_tokens"] == 64


def test_settings_read_the_model_path_variables():
    from multisessions.settings import load_settings

    settings = load_settings(
        {
            "OPENAI_API": "chat_completions",
            "OPENAI_TIMEOUT": "2.5",
            "OPENAI_MAX_RETRIES": "0",
            "OPENAI_MAX_TOKENS": "300",
        }
    )
    assert (settings.api, settings.timeout, settings.max_retries, settings.max_tokens) == (
        "chat_completions",
        2.5,
        0,
        300,
    )
    assert Settings().timeout == DEFAULT_TIMEOUT and Settings().max_retries == DEFAULT_MAX_RETRIES


@pytest.mark.parametrize("api", APIS)
def test_a_refund_pauses_over_http_and_a_supervisor_approves_it_from_the_command_line(
    api, standin: StandinServer, capsys, db
):
    settings = settings_for(api, standin)
    assert main(["refund", "--db", str(db)], lesson(), settings=settings) == 0
    out = capsys.readouterr().out
    assert 'paused: refund_order({"order_id": "5512"}) needs a supervisor' in out
    assert "refused: session 'demo:thread_refund-5512' waits for a supervisor" in out
    assert "Billing Agent: refund_order: refund issued for order 5512" in out
    calls = [r for r in model_requests(standin) if "refund_order" in sent_text(r)]
    assert calls, "the server was never offered the refund tool"
