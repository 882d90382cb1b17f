"""Summaries: a long conversation keeps its beginning in a few lines, for any model, in one write."""

from __future__ import annotations

import logging
import uuid
from typing import Any

import pytest
from agents import Agent, RunConfig

from conftest import needs_sdk_private
from multisessions import OfflineModel, TurnFailed, read_all, run_turn, user_session_id
from multisessions.stores import EncryptedStore, Summary
from multisessions.summaries import SUMMARY_HEADING, Summaries
from standin_fixture import (  # noqa: F401  (the fixtures)
    model_requests,
    module_standin_fixture,
    sent_text,
    settings_for,
    standin_fixture,
)

# The store writing a turn in one write relies on the SDK session classes' private fields (or,
# encrypted, its sealing); without them turns take the session path (docs/guarantees.md).
ONE_WRITE = needs_sdk_private()

BOT = Agent(name="Bot", instructions="You help.")


class Counting(OfflineModel):
    """The offline model, noting how many items each answering call was sent."""

    def __init__(self) -> None:
        self.sizes: list[int] = []
        self.summaries = 0

    async def get_response(self, system_instructions: Any, input: Any, *args: Any, **kwargs: Any) -> Any:
        if "summarize the conversation" in (system_instructions or "").lower():
            self.summaries += 1
        else:
            self.sizes.append(len(input))
        return await super().get_response(system_instructions, input, *args, **kwargs)


async def converse(session: Any, turns: int, config: RunConfig, settings: Summaries) -> Any:
    await run_turn(
        BOT,
        session,
        "Hi, my name is Zoe and my email is zoe@example.com.",
        run_config=config,
        summaries=settings,
    )
    for n in range(2, turns):
        await run_turn(
            BOT, session, f"Note {n}: my order number is {1000 + n}.", run_config=config, summaries=settings
        )
    return await run_turn(BOT, session, "What's my name and my email?", run_config=config, summaries=settings)


async def test_a_200_turn_conversation_recalls_its_first_fact_with_a_20_item_window(db):
    from multisessions import SQLiteStore

    store, model = SQLiteStore(db), Counting()
    session = store.open("user_long")
    last = await converse(session, 200, RunConfig(model=model), Summaries(window=20))
    assert last.final_output == "Your name is Zoe. Your email is zoe@example.com."
    # The summary, the items it does not cover yet (under window + threshold), the new message:
    # bounded whatever the length, to turn 200.
    assert max(model.sizes) == 40
    assert model.summaries == 19  # a fold each time 20 more items passed the window: turns 20, 30 ... 200
    assert len(await read_all(session)) == 400  # the store keeps everything, for audit and export
    summary, total = await store.summary_state("user_long")
    assert total == 400 and summary is not None and summary.covered == 380
    assert "- name: Zoe" in summary.text


async def test_summaries_work_the_same_on_every_store(store):
    model = Counting()
    session = store.open(user_session_id(f"s{uuid.uuid4().hex[:6]}"))
    last = await converse(session, 30, RunConfig(model=model), Summaries(window=8, threshold=8))
    assert "Zoe" in last.final_output and max(model.sizes) == 16  # window + threshold
    summary, total = await store.summary_state(session.session_id)
    assert total == 60 and summary is not None and summary.covered == 48


@ONE_WRITE
async def test_a_summary_is_written_with_its_turn_or_not_at_all(store, monkeypatch):
    model, settings = Counting(), Summaries(window=4, threshold=4)
    session = store.open(user_session_id(f"f{uuid.uuid4().hex[:6]}"))
    config = RunConfig(model=model)
    for n in range(4):  # 8 items: the next turn (10) passes the threshold and folds
        await run_turn(BOT, session, f"My name is Zoe. Note {n}.", run_config=config, summaries=settings)
    before = (await store.summary_state(session.session_id), await read_all(session))
    io = store.turn_io(session)

    async def disk_full(*args: Any, **kwargs: Any) -> bool:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(type(io), "commit", disk_full)
    with pytest.raises(TurnFailed):
        await run_turn(BOT, session, "Note 5.", run_config=config, summaries=settings)
    monkeypatch.undo()
    assert model.summaries == 1  # the summary was written by the model, then not kept
    assert (await store.summary_state(session.session_id), await read_all(session)) == before


async def test_a_failing_summarizer_keeps_the_turn_and_the_old_summary(db, caplog):
    from multisessions import SQLiteStore

    class Broken(OfflineModel):
        async def get_response(self, system_instructions: Any, *args: Any, **kwargs: Any) -> Any:
            if "summarize" in (system_instructions or "").lower():
                raise RuntimeError("the summarizer is down")
            return await super().get_response(system_instructions, *args, **kwargs)

    store = SQLiteStore(db)
    session = store.open("user_x")
    config, settings = RunConfig(model=Broken()), Summaries(window=2, threshold=2)
    with caplog.at_level(logging.WARNING, logger="multisessions.turns"):
        for n in range(4):
            await run_turn(BOT, session, f"Note {n}.", run_config=config, summaries=settings)
    assert len(await read_all(session)) == 8
    assert await store.summary_state("user_x") == (None, 8)
    assert any("the summarizer is down" in r.getMessage() for r in caplog.records)


async def test_an_encrypted_summary_holds_no_plaintext(store):
    secure = EncryptedStore(store.store, "z" * 40)
    session_id = user_session_id(f"e{uuid.uuid4().hex[:6]}")
    store.opened.add(session_id)
    await converse(
        secure.open(session_id), 8, RunConfig(model=OfflineModel()), Summaries(window=2, threshold=2)
    )
    sealed, _ = await store.store.summary_state(session_id)
    assert sealed is not None and "- name:" not in sealed.text  # a space and a colon: never in a token
    opened, _ = await secure.summary_state(session_id)
    assert opened is not None and "- name: Zoe" in opened.text


@pytest.mark.parametrize("api", ["responses", "chat_completions"])
async def test_a_local_server_writes_the_summary_over_http(api, standin, tmp_path):
    from multisessions import SQLiteStore, resolve_model

    config = RunConfig(model=resolve_model(None, settings_for(api, standin), announce=False))
    store = SQLiteStore(tmp_path / "s.db")
    last = await converse(store.open("user_http"), 12, config, Summaries(window=4, threshold=4))
    assert last.final_output == "Your name is Zoe. Your email is zoe@example.com."
    sent = [sent_text(r) for r in model_requests(standin)]
    assert sum("Summarize the conversation" in text for text in sent) == 5  # at turns 4, 6, 8, 10, 12
    assert SUMMARY_HEADING in sent[-1] and "Zoe" in sent[-1]  # the last answer was sent the summary


def test_a_window_or_threshold_below_one_is_refused():
    with pytest.raises(ValueError, match="1 or more"):
        Summaries(window=0)
    assert Summary("x", 3).covered == 3


def test_the_summary_settings_come_from_the_environment_and_bad_ones_are_one_line(tmp_path):
    from multisessions import ConfigError
    from multisessions.settings import load_settings
    from multisessions.summaries import DEFAULT_PROMPT, summaries_from

    none = tmp_path / "no.env"
    assert summaries_from(load_settings({}, none)) is None
    got = summaries_from(load_settings({"SUMMARY_WINDOW": "6", "SUMMARY_PROMPT": "Be brief."}, none))
    assert got == Summaries(window=6, threshold=6, prompt="Be brief.")
    got = summaries_from(load_settings({"SUMMARY_WINDOW": "6", "SUMMARY_THRESHOLD": "3"}, none))
    assert got == Summaries(window=6, threshold=3, prompt=DEFAULT_PROMPT)
    with pytest.raises(ConfigError, match="SUMMARY_WINDOW='0' must be a whole number, at least 1"):
        load_settings({"SUMMARY_WINDOW": "0"}, none)


def test_the_chat_summarizes_a_long_conversation_when_the_settings_ask(cli, db):
    import asyncio

    from multisessions import SQLiteStore
    from multisessions.settings import Settings

    lines = (
        ["My name is Zoe."]
        + [f"Note {n}: my order number is {n}." for n in range(2, 8)]
        + ["What's my name?"]
    )
    ran = cli(
        "chat",
        "--user",
        "zoe",
        "--db",
        str(db),
        stdin="\n".join(lines) + "\n",
        settings=Settings(summary_window=4),
    )
    assert ran.code == 0, ran.err
    assert "Your name is Zoe." in ran.out
    summary, total = asyncio.run(SQLiteStore(db).summary_state("user_zoe"))
    assert total == 16 and summary is not None and "- name: Zoe" in summary.text


async def test_items_past_the_window_are_sent_until_the_summary_covers_them(db):
    from multisessions import SQLiteStore

    store, model = SQLiteStore(db), Counting()
    session = store.open("user_gap")
    config, settings = RunConfig(model=model), Summaries(window=4, threshold=4)
    await run_turn(BOT, session, "Hi, my name is Zoe.", run_config=config, summaries=settings)
    await run_turn(BOT, session, "My order number is 5512.", run_config=config, summaries=settings)
    await run_turn(BOT, session, "I prefer phone.", run_config=config, summaries=settings)
    last = await run_turn(BOT, session, "What's my name?", run_config=config, summaries=settings)
    assert model.sizes[-1] == 7  # turn 1 is out of the window of 4 but not folded yet: it is sent
    assert last.final_output == "Your name is Zoe."


async def test_a_summarizer_that_hangs_is_cut_at_its_timeout_and_the_turn_is_kept(db, caplog):
    import asyncio

    from multisessions import SQLiteStore

    class Hangs(OfflineModel):
        async def get_response(self, system_instructions: Any, *args: Any, **kwargs: Any) -> Any:
            if "summarize" in (system_instructions or "").lower():
                await asyncio.sleep(3600)
            return await super().get_response(system_instructions, *args, **kwargs)

    store = SQLiteStore(db)
    session = store.open("user_hang")
    config, settings = RunConfig(model=Hangs()), Summaries(window=2, threshold=1, timeout=0.2)
    with caplog.at_level(logging.WARNING, logger="multisessions.turns"):
        for n in range(3):
            await asyncio.wait_for(
                run_turn(BOT, session, f"Note {n}: my name is Zoe.", run_config=config, summaries=settings), 5
            )
    assert len(await read_all(session)) == 6 and await store.summary_state("user_hang") == (None, 6)
    assert sum("summarizing older items failed" in r.getMessage() for r in caplog.records) == 2
