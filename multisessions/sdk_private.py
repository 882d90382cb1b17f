"""Every private name of the SDK (and of its OpenAI client) the package relies on, in one place.

Each is looked up once, here (the input helpers are also probed on a few items), and
tests/test_sdk_private.py checks each one exists and behaves as relied on. A release that renames,
removes or changes one leaves it missing here, and the package then does without it:

- ``RUN_ITEMS`` (``agents.run_internal.items``), ``handoff_target`` (``Handoff._agent_ref``) and
  ``may_run_an_agent`` (``FunctionTool._is_agent_tool``) let ``run_turn`` pass the history by hand
  (direct.py). Without any of them, ``direct_path_available()`` is false and every turn takes the
  SDK's public session path (``Runner.run(agent, message, session=PendingTurn)``): the same
  guarantees (all or nothing, one at a time), with the SDK's own bookkeeping.
- ``automatic_compaction`` (``RunContextWrapper._session_compaction_is_automatic``),
  ``deferred_compaction`` (``session._defer_compaction``) and ``ignores_ids`` keep a compacting
  session's compaction as the SDK runs it; without them compaction still runs after the commit,
  as the session's own default decides.
- ``SESSION_HOOKS``: session methods the SDK calls only when it holds the session; a session
  with one takes the session path.
- ``FinalRequestOptions`` and ``prepares_options`` (``openai._models``, ``AsyncOpenAI._prepare_options``):
  the Chat Completions client's request fix (models.py); without the hook requests go out
  unchanged (the switch below leaves it: it hides what the turns rely on).
- ``plain_redis_session``, ``plain_sqlalchemy_session`` and ``sqlalchemy_session_fields``: the
  stores' short paths check the SDK's session objects by their private fields; without them a
  turn goes through the session (the SDK's writes, the same guarantees).

``MULTISESSIONS_HIDE_SDK_PRIVATE=1`` in the environment (or ``pytest --hide-sdk-private``) makes
every name but the client's hook missing, as on an SDK without them: the test suite runs that
way too (the tests of the hand-passed history and of the short paths then skip).
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import fields, is_dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

from agents import Agent, FunctionTool, Handoff
from agents.run_context import RunContextWrapper
from openai import AsyncOpenAI

if TYPE_CHECKING:
    from openai._models import FinalRequestOptions as FinalRequestOptions

HIDDEN = os.environ.get("MULTISESSIONS_HIDE_SDK_PRIVATE") == "1"
"""True: behave as on an SDK without any of the names below (a test switch)."""


class RunItems(NamedTuple):
    """The SDK's own steps for preparing a turn's input and its items (``agents.run_internal.items``)."""

    deduplicate_input_items_preferring_latest: Callable[..., Any]
    drop_orphan_function_calls: Callable[..., Any]
    ensure_input_item_format: Callable[..., Any]
    normalize_input_items_for_api: Callable[..., Any]
    run_items_to_input_items: Callable[..., Any]
    strip_internal_input_item_metadata: Callable[..., Any]


def _run_items() -> RunItems | None:
    """The helpers, if they are there and still do what the hand-passed history relies on."""
    try:
        module = importlib.import_module("agents.run_internal.items")
        helpers = RunItems(*(getattr(module, name) for name in RunItems._fields))
        return helpers if _behaves(helpers) else None
    except Exception:  # missing, renamed, or failing on the probe: the session path does without
        return None


def _behaves(helpers: RunItems) -> bool:
    """A probe of each helper on a few items (once per process): a release that keeps a name
    but changes what it does turns the hand-passed history off instead of changing what it sends."""
    call = {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}", "id": "fc1"}
    output = {"type": "function_call_output", "call_id": "c1", "output": "done"}
    newer = {**call, "arguments": '{"a": 1}'}
    return bool(
        helpers.ensure_input_item_format(dict(output)) == output
        and helpers.strip_internal_input_item_metadata({**output, "created_by": "x"}) == output
        and helpers.normalize_input_items_for_api([{**output, "created_by": "x"}]) == [output]
        and helpers.drop_orphan_function_calls([dict(call)], pruning_indexes={0}) == []
        and helpers.drop_orphan_function_calls([dict(call), dict(output)], pruning_indexes={0, 1})
        == [call, output]
        and helpers.deduplicate_input_items_preferring_latest([dict(call), dict(newer)]) == [newer]
        and helpers.run_items_to_input_items([]) == []
    )


def _has_field(cls: type, name: str) -> bool:
    return is_dataclass(cls) and any(f.name == name for f in fields(cls))


RUN_ITEMS: RunItems | None = None if HIDDEN else _run_items()

_HANDOFF_REFERENCE = "_agent_ref"
_KNOWS_HANDOFF_TARGETS = not HIDDEN and _has_field(Handoff, _HANDOFF_REFERENCE)

_AGENT_TOOL_MARK = "_is_agent_tool"
_MARKS_AGENT_TOOLS = not HIDDEN and _has_field(FunctionTool, _AGENT_TOOL_MARK)


def direct_path_available() -> bool:
    """Whether every name the hand-passed history needs is there (else turns take the session path)."""
    return RUN_ITEMS is not None and _KNOWS_HANDOFF_TARGETS and _MARKS_AGENT_TOOLS


def handoff_target(handoff: Handoff[Any, Any]) -> Agent[Any] | None:
    """The agent a ``Handoff`` built from an agent leads to; None when that cannot be told."""
    if not _KNOWS_HANDOFF_TARGETS:
        return None
    reference = getattr(handoff, _HANDOFF_REFERENCE, None)
    target = reference() if reference is not None else None
    return target if isinstance(target, Agent) else None


def may_run_an_agent(tool: FunctionTool) -> bool:
    """Whether a function tool may be an agent run as a tool (which can pause inside); true when
    the SDK does not say."""
    return not _MARKS_AGENT_TOOLS or bool(getattr(tool, _AGENT_TOOL_MARK, False))


SESSION_HOOKS = ("_get_items_with_generation", "_add_items_with_generation")
"""Session methods the SDK calls only when it holds the session itself."""

_AUTOMATIC_MARK = "_session_compaction_is_automatic"


@contextmanager
def automatic_compaction(wrapper: RunContextWrapper[Any]) -> Iterator[None]:
    """Mark a compaction call as the SDK's own post-write one (only what the model just saw is
    compacted); without the mark the session compacts as its default says."""
    if HIDDEN:
        yield
        return
    setattr(wrapper, _AUTOMATIC_MARK, True)
    try:
        yield
    finally:
        setattr(wrapper, _AUTOMATIC_MARK, False)


def deferred_compaction(session: object) -> Callable[..., Any] | None:
    """The session's hook for a compaction the SDK deferred (tool outputs still local), if any."""
    hook = None if HIDDEN else getattr(session, "_defer_compaction", None)
    return hook if callable(hook) else None


def ignores_ids(session: object) -> bool:
    """Whether the SDK compares this session's items without their ids (the session says so)."""
    return not HIDDEN and bool(getattr(session, "_ignore_ids_for_matching", False))


def prepares_options() -> bool:
    """Whether the OpenAI client still adjusts each request in ``_prepare_options`` (models.py)."""
    return callable(getattr(AsyncOpenAI, "_prepare_options", None))


def plain_redis_session(session: object, expected: dict[str, object]) -> bool:
    """Whether a ``RedisSession`` holds the ``expected`` private fields (the same client, keys, ttl...),
    so the Redis store's short path writes what it would write (redis_store.py)."""
    if HIDDEN:
        return False
    own = vars(session)
    return all(
        name in own and (own[name] is value or (isinstance(value, str | int | float) and own[name] == value))
        for name, value in expected.items()
    )


def sqlalchemy_session_fields() -> frozenset[str] | None:
    """What ``SQLAlchemySession`` keeps per object, all shareable between the sessions of one
    engine but the id and the settings (sql_store.py copies a template when it matches)."""
    if HIDDEN:
        return None
    return frozenset(
        {
            "session_id",
            "session_settings",
            "_connection_lock",
            "_create_tables",  # a flag each copy rebinds for itself
            "_engine",
            "_ensure_ascii",
            "_init_lock",
            "_messages",
            "_metadata",
            "_session_factory",
            "_sessions",
        }
    )


def plain_sqlalchemy_session(session: object, engine: object, tables: tuple[str, str]) -> bool:
    """Whether a ``SQLAlchemySession`` is on ``engine`` with the ``tables`` (sessions, messages)
    and the default JSON, so the PostgreSQL short path writes what it would write."""
    if HIDDEN:
        return False
    names = tuple(getattr(getattr(session, name, None), "name", None) for name in ("_sessions", "_messages"))
    return (
        getattr(session, "_engine", None) is engine
        and names == tables
        and getattr(session, "_ensure_ascii", None) is True
    )


def encrypted_envelopes(session: object) -> tuple[Callable[[Any], Any], Callable[[Any], Any]] | None:
    """``EncryptedSession``'s own item sealing and opening (``_wrap``, ``_unwrap``), so a turn's
    items can be written in one write with the rest of the turn; None: the session's own writes."""
    if HIDDEN:
        return None
    wrap, unwrap = getattr(session, "_wrap", None), getattr(session, "_unwrap", None)
    return (wrap, unwrap) if callable(wrap) and callable(unwrap) else None
