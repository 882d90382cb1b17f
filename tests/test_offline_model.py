"""The offline model answers only from what it is sent, and routes with real handoff tool calls."""

from __future__ import annotations

from agents import Agent, RunConfig, Runner
from agents.model_settings import ModelSettings
from agents.models.interface import ModelTracing
from openai.types.responses import ResponseCompletedEvent

from multisessions.offline_model import OfflineModel, answer, choose_handoff, extract_facts


def user(text: str) -> dict[str, str]:
    return {"role": "user", "content": text}


async def ask(model: OfflineModel, items: list, handoffs: list | None = None):
    return await model.get_response(
        "instructions", items, ModelSettings(), [], None, handoffs or [], ModelTracing.DISABLED
    )


def test_facts_stated_earlier_are_recalled():
    text = answer(["My name is Alice and my email is alice@example.com."], "What's my name?")
    assert text == "Your name is Alice."


def test_recall_without_the_fact_says_so_plainly():
    assert "don't know your email" in answer(["My name is Bob."], "What's my email?")


def test_a_recall_question_is_not_taken_as_a_fact():
    assert extract_facts(["What was my problem?"]) == {}


def test_later_statement_overrides_earlier():
    assert extract_facts(["My email is a@x.io.", "My email is b@y.io."])["email"] == "b@y.io"


async def test_answers_only_from_its_input_and_reports_usage():
    model = OfflineModel()
    alone = await ask(model, [user("What's my name?")])
    told = await ask(model, [user("My name is Zed."), user("What's my name?")])
    assert "don't know your name" in alone.output[0].content[0].text
    assert told.output[0].content[0].text == "Your name is Zed."
    assert told.usage.requests == 1 and told.usage.input_tokens > alone.usage.input_tokens > 0


async def test_deterministic_and_message_ids_differ_per_turn():
    model = OfflineModel()
    a = await ask(model, [user("hello")])
    b = await ask(model, [user("hello")])
    c = await ask(model, [user("hello"), user("hello again")])
    assert a.output[0].model_dump() == b.output[0].model_dump()
    assert a.output[0].id != c.output[0].id


def test_handoff_target_chosen_from_name_and_description():
    billing = Agent(name="Billing Agent", handoff_description="refunds and double charges")
    technical = Agent(name="Technical Agent", handoff_description="crashes and errors")
    from agents.handoffs import handoff

    options = [handoff(billing), handoff(technical)]
    assert choose_handoff("I was charged twice, refund please", options).agent_name == "Billing Agent"
    assert choose_handoff("the app crashes", options).agent_name == "Technical Agent"
    assert choose_handoff("hello there", options) is None


async def test_real_runner_handoff_and_streaming_work_with_the_offline_model():
    billing = Agent(name="Billing Agent", handoff_description="refunds")
    triage = Agent(name="Triage Agent", handoffs=[billing])
    config = RunConfig(model=OfflineModel())
    result = await Runner.run(triage, "I need a refund. My name is Kim.", run_config=config)
    assert result.last_agent is billing
    assert result.final_output.startswith("Thanks, Kim.")

    streamed = Runner.run_streamed(triage, "I need a refund", run_config=config)
    async for _ in streamed.stream_events():
        pass
    assert streamed.last_agent is billing


async def test_stream_response_ends_with_a_completed_response():
    model = OfflineModel()
    events = [
        e
        async for e in model.stream_response(
            None, [user("hi")], ModelSettings(), [], None, [], ModelTracing.DISABLED
        )
    ]
    assert isinstance(events[-1], ResponseCompletedEvent)
    assert events[-1].response.usage.output_tokens > 0
