"""User memory: what a user's conversations share, never another user's or tenant's."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from agents import Agent, RunConfig

import agent
from conftest import needs_sdk_private
from multisessions import (
    OfflineModel,
    TurnFailed,
    feature_session_id,
    read_all,
    remember,
    run_turn,
    thread_session_id,
    user_scope,
    user_session_id,
    with_memory,
)
from multisessions.stores import EncryptedStore
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


class Recording(OfflineModel):
    """The offline model, keeping the instructions each call was sent (what the model saw)."""

    def __init__(self) -> None:
        self.instructions: list[str] = []

    async def get_response(self, system_instructions: Any, *args: Any, **kwargs: Any) -> Any:
        self.instructions.append(system_instructions or "")
        return await super().get_response(system_instructions, *args, **kwargs)


def helper() -> Agent[Any]:
    return Agent(name="Helper", instructions=with_memory("You help."), tools=[remember])


async def test_the_memory_demo_shares_alices_email_with_her_sales_conversation_only(db, capsys):
    sessions = await agent.memory_demo(db_path=db)
    out = capsys.readouterr().out
    assert (
        "[demo:shop_feature_user_alice] Sales Agent: Your name is Alice. Your email is alice@example.com."
        in out
    )
    assert "alice: {'email': 'alice@example.com', 'name': 'Alice'}" in out and "bob: nothing" in out
    bob = await read_all(sessions["bob/shop"])
    assert "alice" not in repr(bob).lower()
    sales = await read_all(sessions["alice/shop"])
    assert not any(
        i.get("role") == "user" and "alice@example.com" in str(i) for i in sales
    )  # never said there


async def test_a_remembered_fact_reaches_the_users_other_sessions_and_no_one_else(store):
    tag = uuid.uuid4().hex[:6]
    model = Recording()
    config = RunConfig(model=model)
    alice, lookalike = f"alice{tag}", f"alice{tag}x"
    said = store.open(feature_session_id("support", alice, tenant="acme"))
    await run_turn(helper(), said, "Hi, my email is alice@example.com.", run_config=config)
    assert await store.load_memory(user_scope(alice, "acme")) == {"email": "alice@example.com"}

    model.instructions.clear()
    other_context = store.open(feature_session_id("sales", alice, tenant="acme"))
    result = await run_turn(helper(), other_context, "What's my email?", run_config=config)
    assert "alice@example.com" in result.final_output and "alice@example.com" in model.instructions[-1]

    outsiders = [
        store.open(user_session_id(alice, tenant="globex")),  # the same name in another tenant
        store.open(user_session_id(alice)),  # no tenant
        store.open(feature_session_id("sales", lookalike, tenant="acme")),  # a look-alike user
        store.open(thread_session_id(f"t{tag}", tenant="acme")),  # a thread: no user, no memory
    ]
    model.instructions.clear()
    for session in outsiders:
        answer = await run_turn(helper(), session, "What's my email?", run_config=config)
        assert "alice@example.com" not in answer.final_output
    assert not any("alice@example.com" in text for text in model.instructions)  # never sent to the model
    for scope in (user_scope(alice, "globex"), user_scope(alice), user_scope(lookalike, "acme")):
        assert await store.load_memory(scope) == {}


@ONE_WRITE
async def test_a_failed_turn_leaves_memory_unchanged(store, monkeypatch):
    user = f"ann{uuid.uuid4().hex[:6]}"
    session = store.open(user_session_id(user))
    io = store.turn_io(session)

    async def disk_full(*args: Any, **kwargs: Any) -> bool:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(type(io), "commit", disk_full)
    with pytest.raises(TurnFailed):
        await run_turn(
            helper(), session, "My email is ann@example.com.", run_config=RunConfig(model=OfflineModel())
        )
    monkeypatch.undo()
    assert await store.load_memory(user_scope(user)) == {} and await read_all(session) == []


async def test_a_thread_names_no_user_so_nothing_is_remembered(db):
    from multisessions import SQLiteStore

    store = SQLiteStore(db)
    session = store.open(thread_session_id("abc"))
    await run_turn(
        helper(), session, "My email is t@example.com.", run_config=RunConfig(model=OfflineModel())
    )
    outputs = [i["output"] for i in await read_all(session) if i.get("type") == "function_call_output"]
    assert outputs == ["not remembered: this conversation belongs to no user"]
    assert await store.memory_scopes() == {}


async def test_encrypted_memory_holds_no_plaintext_and_reads_back(store):
    secure = EncryptedStore(store.store, "m" * 40)
    user = f"eve{uuid.uuid4().hex[:6]}"
    session_id = user_session_id(user, tenant="acme")
    store.opened.add(session_id)
    await run_turn(
        helper(),
        secure.open(session_id),
        "My email is eve@example.com.",
        run_config=RunConfig(model=OfflineModel()),
    )
    raw = await store.store.load_memory(user_scope(user, "acme"))
    assert set(raw) == {"email"} and "eve@example.com" not in repr(raw)
    assert await secure.load_memory(user_scope(user, "acme")) == {"email": "eve@example.com"}
    await store.store.forget_memory(user_scope(user, "acme"))


@pytest.mark.parametrize("api", ["responses", "chat_completions"])
async def test_over_http_no_request_carries_another_users_memory(api, standin, tmp_path):
    from multisessions import SQLiteStore, resolve_model

    model = resolve_model(None, settings_for(api, standin), announce=False)
    config = RunConfig(model=model)
    store = SQLiteStore(tmp_path / "memory.db")
    people = [(f"user{n}", tenant) for n in range(4) for tenant in ("acme", "globex", None)]
    email = {person: f"{person[0]}.{person[1] or 'none'}@example.com" for person in people}
    for user, tenant in people:  # each states an email in support ...
        session = store.open(feature_session_id("support", user, tenant=tenant))
        await run_turn(helper(), session, f"Hi, my email is {email[user, tenant]}.", run_config=config)
    standin.reset()
    for user, tenant in people:  # ... and is greeted with it in sales
        session = store.open(feature_session_id("sales", user, tenant=tenant))
        result = await run_turn(helper(), session, "What's my email?", run_config=config)
        assert email[user, tenant] in result.final_output
    requests = model_requests(standin)
    assert len(requests) == len(people)
    for request, person in zip(requests, people, strict=True):
        carried = {p for p in people if email[p] in sent_text(request)}
        assert carried == {person}  # its own user's memory, and no one else's


def test_memory_written_encrypted_and_read_without_the_key_is_one_line_never_tokens(cli, db):
    import asyncio

    from multisessions import SQLiteStore
    from multisessions.settings import Settings

    secret = "k" * 40
    secure = EncryptedStore(SQLiteStore(db), secret)
    asyncio.run(secure.save_memory(user_scope("eve"), {"email": "eve@example.com"}))
    keyed = cli("users", "memory", "--user", "eve", "--db", str(db), settings=Settings(encryption_key=secret))
    assert keyed.out.splitlines()[0] == "email: eve@example.com"
    for args in (("users", "memory", "--user", "eve"), ("users", "export", "--user", "eve")):
        bare = cli(*args, "--db", str(db))  # no key: before, the tokens were shown as the values, exit 0
        assert bare.code == 1 and bare.out == ""
        assert bare.err_lines == [
            "error: the memory of user 'eve' is encrypted and no SESSION_ENCRYPTION_KEY is set; set the key "
            "it was written with. Nothing was changed"
        ]
    chat = cli("chat", "--user", "eve", "--db", str(db), stdin="hi\n")  # a turn never sends the tokens
    assert chat.code == 1 and "is encrypted and no SESSION_ENCRYPTION_KEY is set" in chat.out + chat.err
