"""The stand-in OpenAI server, driven through the SDK's real model classes over real HTTP."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import httpx
import openai
import pytest
from agents import (
    Agent,
    ModelSettings,
    OpenAIChatCompletionsModel,
    OpenAIResponsesModel,
    RunConfig,
    Runner,
    set_tracing_disabled,
)
from agents.exceptions import ModelBehaviorError
from agents.models.interface import Model
from openai import AsyncOpenAI

from conftest import ROOT, subprocess_env
from multisessions.offline_model import OfflineModel
from tools.standin_server import StandinServer

pytestmark = pytest.mark.slow  # starts processes or servers: python -m pytest -m slow

set_tracing_disabled(True)

APIS = ["responses", "chat_completions"]
KEY = "sk-test-standin-0123456789"


@pytest.fixture(scope="module")
def shared_server() -> Iterator[StandinServer]:
    with StandinServer() as server:
        yield server


@pytest.fixture
def server(shared_server: StandinServer) -> StandinServer:
    """The module's server, with an empty log, no planned failures and its start-up modes."""
    shared_server.reset()
    return shared_server


def model_for(api: str, server: StandinServer, *, max_retries: int = 0, timeout: float = 5.0) -> Model:
    client = AsyncOpenAI(base_url=server.base_url, api_key=KEY, max_retries=max_retries, timeout=timeout)
    if api == "responses":
        return OpenAIResponsesModel(model="gpt-4.1-mini", openai_client=client)
    return OpenAIChatCompletionsModel(model="gpt-4.1-mini", openai_client=client)


def support_agents() -> tuple[Agent, Agent]:
    billing = Agent(name="Billing Agent", handoff_description="refunds and double charges")
    return Agent(name="Triage Agent", handoffs=[billing]), billing


async def run(
    agent: Agent, text: str, model: Model, *, streamed: bool = False, settings: ModelSettings | None = None
):
    config = RunConfig(model=model, model_settings=settings)
    if not streamed:
        return await Runner.run(agent, text, run_config=config)
    result = Runner.run_streamed(agent, text, run_config=config)
    async for _ in result.stream_events():
        pass
    return result


# -- answers -----------------------------------------------------------------------------------


@pytest.mark.parametrize("api", APIS)
@pytest.mark.parametrize("streamed", [False, True], ids=["plain", "streamed"])
async def test_answers_as_the_offline_model_does_in_process(server: StandinServer, api: str, streamed: bool):
    agent = Agent(name="Assistant", instructions="Be brief.")
    over_http = await run(agent, "My name is Alice.", model_for(api, server), streamed=streamed)
    in_process = await run(agent, "My name is Alice.", OfflineModel())
    assert over_http.final_output == in_process.final_output == "Thanks, Alice. How can I help?"


@pytest.mark.parametrize("api", APIS)
@pytest.mark.parametrize("streamed", [False, True], ids=["plain", "streamed"])
async def test_triage_hands_off_to_billing_over_http(server: StandinServer, api: str, streamed: bool):
    triage, billing = support_agents()
    text = "I was charged twice, I want a refund."
    result = await run(triage, text, model_for(api, server), streamed=streamed)
    assert result.last_agent is billing
    assert result.final_output == (await run(triage, text, OfflineModel())).final_output
    # Two model calls: triage's transfer_to_... call, then billing's answer.
    assert len(server.requests) == 2


@pytest.mark.parametrize("api", APIS)
async def test_streamed_text_deltas_join_to_the_final_output(server: StandinServer, api: str):
    result = Runner.run_streamed(
        Agent(name="Assistant"),
        "My email is alice@example.com.",
        run_config=RunConfig(model=model_for(api, server)),
    )
    deltas = [
        event.data.delta
        async for event in result.stream_events()
        if event.type == "raw_response_event" and event.data.type == "response.output_text.delta"
    ]
    assert len(deltas) > 3  # word by word, not one lump
    assert "".join(deltas) == result.final_output
    assert "alice@example.com" in result.final_output


async def test_usage_is_reported_on_both_apis(server: StandinServer):
    responses = await run(Agent(name="A"), "Hello", model_for("responses", server), streamed=True)
    chat = await run(Agent(name="A"), "Hello", model_for("chat_completions", server))
    for result in (responses, chat):
        usage = result.context_wrapper.usage
        assert usage.input_tokens > 0 and usage.output_tokens > 0
        assert usage.total_tokens == usage.input_tokens + usage.output_tokens


async def test_chat_stream_usage_needs_include_usage_off_openai(server: StandinServer):
    # Off api.openai.com the SDK sends no stream_options, so a streamed chat reports no usage
    # unless ModelSettings(include_usage=True) asks for it.
    model = model_for("chat_completions", server)
    silent = await run(Agent(name="A"), "Hello", model, streamed=True)
    asked = await run(
        Agent(name="A"), "Hello", model, streamed=True, settings=ModelSettings(include_usage=True)
    )
    first, second = (r.body for r in server.requests)
    assert "stream_options" not in first and silent.context_wrapper.usage.total_tokens == 0
    assert second["stream_options"] == {"include_usage": True}
    assert asked.context_wrapper.usage.total_tokens > 0


# -- the request log ---------------------------------------------------------------------------


@pytest.mark.parametrize("api", APIS)
async def test_the_log_shows_what_the_client_sent(server: StandinServer, api: str):
    await run(Agent(name="A", instructions="Be brief."), "My name is Alice.", model_for(api, server))
    [request] = server.requests
    assert request.method == "POST" and request.api == api
    assert request.path == ("/v1/responses" if api == "responses" else "/v1/chat/completions")
    assert request.authorization == f"Bearer {KEY}"
    assert KEY not in repr(request)  # the log can be printed safely
    assert request.body["model"] == "gpt-4.1-mini"
    if api == "responses":
        assert request.body["instructions"] == "Be brief."
        assert request.body["input"] == [{"role": "user", "content": "My name is Alice."}]
    else:
        assert request.body["messages"] == [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "My name is Alice."},
        ]


async def test_models_lists_one_model(server: StandinServer):
    client = AsyncOpenAI(base_url=server.base_url, api_key=KEY, max_retries=0)
    models = [model.id async for model in client.models.list()]
    assert len(models) == 1
    assert server.requests[0].path == "/v1/models"


# -- failure modes -----------------------------------------------------------------------------

STATUS_FAILURES = {
    "unauthorized": openai.AuthenticationError,
    "forbidden": openai.PermissionDeniedError,
    "not_found": openai.NotFoundError,
    "rate_limited": openai.RateLimitError,
    "server_error": openai.InternalServerError,
    "context_length": openai.BadRequestError,
}


@pytest.mark.parametrize("api", APIS)
@pytest.mark.parametrize("kind", STATUS_FAILURES)
async def test_each_error_status_raises_its_openai_exception(server: StandinServer, api: str, kind: str):
    server.fail_next(kind)
    model = model_for(api, server)
    with pytest.raises(STATUS_FAILURES[kind]) as caught:
        await run(Agent(name="A"), "Hello", model)
    assert isinstance(caught.value.body, dict) and caught.value.body["message"]
    if kind == "context_length":
        assert caught.value.code == "context_length_exceeded"
        assert "maximum context length" in str(caught.value)
    # Only the next request fails.
    assert (await run(Agent(name="A"), "Hello", model)).final_output


@pytest.mark.parametrize("api", APIS)
async def test_rate_limit_then_success_with_a_retry(server: StandinServer, api: str):
    server.fail_next("rate_limited")
    started = time.monotonic()
    result = await run(Agent(name="A"), "My name is Alice.", model_for(api, server, max_retries=1))
    assert result.final_output == "Thanks, Alice. How can I help?"
    assert len(server.requests) == 2
    assert time.monotonic() - started < 0.4  # retry-after-ms: no half-second default backoff


async def test_a_failure_can_target_one_api(server: StandinServer):
    server.fail_always("server_error", api="responses")
    assert (await run(Agent(name="A"), "Hello", model_for("chat_completions", server))).final_output
    for _ in range(2):
        with pytest.raises(openai.InternalServerError):
            await run(Agent(name="A"), "Hello", model_for("responses", server))
    server.reset()
    assert (await run(Agent(name="A"), "Hello", model_for("responses", server))).final_output


def test_an_unknown_failure_kind_is_refused(server: StandinServer):
    with pytest.raises(ValueError, match="unknown failure kind"):
        server.fail_next("teapot")  # type: ignore[arg-type]


@pytest.mark.parametrize("api", APIS)
async def test_a_200_html_page_is_not_an_openai_error(server: StandinServer, api: str):
    # The openai client hands the page's text back as the "response"; the SDK then trips on it.
    server.fail_next("html")
    with pytest.raises(AttributeError):
        await run(Agent(name="A"), "Hello", model_for(api, server))


@pytest.mark.parametrize("api", APIS)
async def test_malformed_json_raises_a_plain_json_error(server: StandinServer, api: str):
    server.fail_next("malformed_json")
    with pytest.raises(json.JSONDecodeError):
        await run(Agent(name="A"), "Hello", model_for(api, server))


async def test_a_garbage_stream_fails_on_responses_but_is_silent_on_chat(server: StandinServer):
    server.fail_next("html", times=2)
    with pytest.raises(ModelBehaviorError):
        await run(Agent(name="A"), "Hello", model_for("responses", server), streamed=True)
    # No SSE event at all reads as an empty answer on Chat Completions: no exception.
    result = await run(Agent(name="A"), "Hello", model_for("chat_completions", server), streamed=True)
    assert result.final_output == ""


@pytest.mark.parametrize("api", APIS)
async def test_echo_key_puts_the_secret_in_the_error_message(server: StandinServer, api: str):
    server.fail_next("echo_key")
    with pytest.raises(openai.AuthenticationError) as caught:
        await run(Agent(name="A"), "Hello", model_for(api, server))
    assert KEY in str(caught.value)  # so anything that prints API errors must redact them


@pytest.mark.parametrize("api", APIS)
async def test_a_hang_times_out_without_blocking_other_requests(server: StandinServer, api: str):
    server.fail_next("hang", api=api)
    hung = asyncio.create_task(run(Agent(name="A"), "Hello", model_for(api, server, timeout=0.5)))
    await asyncio.sleep(0.05)
    # Meanwhile the server keeps answering.
    assert (await run(Agent(name="A"), "My name is Bob.", model_for(api, server))).final_output
    with pytest.raises(openai.APITimeoutError):
        await hung


def test_stop_is_quick_while_a_request_hangs():
    server = StandinServer().start()
    port = server.port
    server.fail_always("hang")
    # A plain thread, not the test's event loop: the call blocks until the server lets go.
    outcome: list[int] = []

    def call() -> None:
        outcome.append(httpx.post(f"{server.base_url}/responses", json={}, timeout=10).status_code)

    caller = threading.Thread(target=call)
    caller.start()
    while not server.requests:
        time.sleep(0.01)
    started = time.monotonic()
    server.stop()
    assert time.monotonic() - started < 2
    assert f"standin-server-{port}" not in [t.name for t in threading.enumerate()]
    caller.join(timeout=2)
    assert not caller.is_alive() and outcome


async def test_only_chat_completions_answers_404_on_responses(server: StandinServer):
    server.only = "chat_completions"  # like llama.cpp's server
    with pytest.raises(openai.NotFoundError):
        await run(Agent(name="A"), "Hello", model_for("responses", server))
    assert (await run(Agent(name="A"), "Hello", model_for("chat_completions", server))).final_output


async def test_llama_cpp_mode_rejects_the_request_after_a_handoff(server: StandinServer):
    server.reject_null_tool_call_content = True
    triage, _ = support_agents()
    with pytest.raises(openai.InternalServerError):
        await run(triage, "I was charged twice, I want a refund.", model_for("chat_completions", server))
    first, second = server.requests
    assert "tool_calls" not in json.dumps(first.body["messages"])
    # After the handoff the SDK replays the transfer call as an assistant message with content None.
    assistant = next(m for m in second.body["messages"] if m["role"] == "assistant")
    assert assistant["content"] is None
    assert assistant["tool_calls"][0]["function"]["name"] == "transfer_to_billing_agent"


def test_runs_as_a_script_and_prints_the_base_url():
    process = subprocess.Popen(
        [sys.executable, "-m", "tools.standin_server", "--port", "0", "--api", "chat_completions"],
        cwd=ROOT,
        env=subprocess_env(),
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline().strip()
        assert line.startswith("OPENAI_BASE_URL=http://127.0.0.1:") and line.endswith("/v1")
        base_url = line.removeprefix("OPENAI_BASE_URL=")
        assert httpx.post(f"{base_url}/responses", json={}).status_code == 404
        assert httpx.get(f"{base_url}/models").json()["data"]
    finally:
        process.send_signal(signal.SIGINT)  # Ctrl-C
        assert process.wait(timeout=30) == 0  # generous: a loaded machine stops uvicorn slowly
