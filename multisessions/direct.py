"""A turn with its history passed by hand: what the SDK's session path does, without a session.

Given a session, ``Runner.run`` reads the history through it, prepares the model's input, and
then fingerprints and writes every step's items back through it. Measured on the offline
model (tools/bench.py), that bookkeeping is a noticeable share of a turn's CPU (the benchmarks
page has the figures).

A turn that cannot pause and that no session hook can change can skip it: ``run_turn`` reads
the history itself (one read, or none when the store read it while taking the lease), passes
it to ``Runner.run`` as the input, and writes the turn's items itself in its one commit. This
module builds that input and those items from the SDK's own helpers, in the order its session
path applies them, so the model sees the same input and the session stores the same items
(tests/test_direct_turns.py runs both paths side by side). Everything else takes the SDK's
session path: ``can_pass_history`` says which.
"""

from __future__ import annotations

from typing import Any

from agents import Agent, FunctionTool, Handoff, RunConfig, RunResult, RunResultStreaming
from agents.items import ItemHelpers, TResponseInputItem
from agents.memory import OpenAIConversationsSession, Session, SessionSettings
from agents.memory import is_openai_responses_compaction_aware_session as _compacts

from multisessions import sdk_private

# What ``Runner.run`` may be given beside the input for the history to be passed by hand;
# anything else (a conversation id, a previous response id...) takes the session path.
_PLAIN_RUN_ARGUMENTS = frozenset({"run_config", "context", "max_turns", "hooks"})


def can_pass_history(agent: Agent[Any], session: Session, runner_kwargs: dict[str, Any]) -> bool:
    """Whether a turn of ``agent`` on ``session`` can run with its history passed by hand.

    Only when nothing could make the SDK's session path differ from it: the run cannot pause
    for approval (every tool, across handoffs, is a plain function tool that never asks), no
    handoff rewrites the history, the run config has no session callback or reasoning-id
    policy, and the session is a plain one (no run context, compaction or server conversation).
    Never when the SDK lacks a private helper this path is built from (sdk_private.py).
    """
    if not sdk_private.direct_path_available():
        return False
    if not _PLAIN_RUN_ARGUMENTS.issuperset(runner_kwargs):
        return False
    config = runner_kwargs.get("run_config")
    if config is not None and not _plain_config(config):
        return False
    if isinstance(session, OpenAIConversationsSession) or _compacts(session):
        return False
    if any(getattr(session, hook, None) is not None for hook in sdk_private.SESSION_HOOKS):
        return False
    return _cannot_pause(agent)


def _plain_config(config: RunConfig) -> bool:
    return (
        config.session_input_callback is None
        and config.reasoning_item_id_policy is None
        and config.handoff_input_filter is None
        and not config.nest_handoff_history
    )


def _cannot_pause(agent: Agent[Any]) -> bool:
    """Whether no agent reachable through handoffs has a tool that may pause the run, or a
    handoff that rewrites its history."""
    seen: set[int] = set()
    waiting: list[Any] = [agent]
    while waiting:
        current = waiting.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        if type(current) is not Agent or current.mcp_servers:
            return False
        for tool in current.tools:
            if (
                not isinstance(tool, FunctionTool)
                or tool.needs_approval is not False
                or sdk_private.may_run_an_agent(tool)  # an agent as a tool may pause inside
            ):
                return False
        for handoff in current.handoffs:
            if isinstance(handoff, Agent):
                waiting.append(handoff)
                continue
            target = _target(handoff)
            if target is None:
                return False
            waiting.append(target)
    return True


def _target(handoff: object) -> Agent[Any] | None:
    """The agent a plain ``Handoff`` leads to; None if it filters the history or cannot be told."""
    if not isinstance(handoff, Handoff) or handoff.input_filter is not None or handoff.nest_handoff_history:
        return None
    return sdk_private.handoff_target(handoff)


def handoff_target(handoff: object) -> Agent[Any] | None:
    """The agent a ``Handoff`` made by ``handoff(agent)`` leads to; None if it cannot be told."""
    return sdk_private.handoff_target(handoff) if isinstance(handoff, Handoff) else None


def history_limit(session: Session, runner_kwargs: dict[str, Any]) -> int | None:
    """How many stored items the turn reads: the session's settings, overridden by the run config's,
    as the SDK resolves them."""
    settings = getattr(session, "session_settings", None) or SessionSettings()
    config = runner_kwargs.get("run_config")
    if config is not None and config.session_settings is not None:
        settings = settings.resolve(config.session_settings)
    return settings.limit


def model_input(
    history: list[TResponseInputItem], message: str, *, limited: bool
) -> tuple[list[TResponseInputItem], list[TResponseInputItem]]:
    """The model's input for ``message`` after ``history``, and the turn's own input items to store.

    The steps of the SDK's ``prepare_input_with_session`` with no callback: history items are
    normalised, a tool call without its output is dropped (with ``limited``, a cut-off history,
    an output without its call too), and items sharing an id keep their latest value."""
    sdk = _sdk()
    new = sdk.normalize_input_items_for_api(
        [sdk.ensure_input_item_format(item) for item in ItemHelpers.input_to_new_input_list(message)]
    )
    if all(_is_message(item) for item in history):  # ``new`` is the user's message
        # Only messages: no call can be an orphan and no message has an id to deduplicate by,
        # so the SDK's steps reduce to dropping its internal keys (tests compare both ways).
        return [*(sdk.strip_internal_input_item_metadata(item) for item in history), *new], new
    return _prepared(history, new, limited=limited), new


def _is_message(item: object) -> bool:
    return (
        isinstance(item, dict) and item.get("role") is not None and item.get("type", "message") == "message"
    )


def _prepared(
    history: list[TResponseInputItem], new: list[TResponseInputItem], *, limited: bool
) -> list[TResponseInputItem]:
    """Every step of the SDK's preparation, in its order."""
    sdk = _sdk()
    stored = [sdk.strip_internal_input_item_metadata(sdk.ensure_input_item_format(item)) for item in history]
    old = set(range(len(stored)))
    kept = sdk.drop_orphan_function_calls(
        [sdk.ensure_input_item_format(item) for item in stored + new],
        pruning_indexes=old,
        output_pruning_indexes=old if limited else None,
    )
    prepared: list[TResponseInputItem] = sdk.deduplicate_input_items_preferring_latest(
        sdk.normalize_input_items_for_api(kept)
    )
    return prepared


def turn_items(
    new_input: list[TResponseInputItem], result: RunResult | RunResultStreaming
) -> list[TResponseInputItem]:
    """What the SDK's session path would have stored for this turn: its input, then every
    item the run produced, as input items (approval placeholders skipped, as it does)."""
    sdk = _sdk()
    produced = [sdk.ensure_input_item_format(item) for item in sdk.run_items_to_input_items(result.new_items)]
    return [*new_input, *produced]


def _sdk() -> sdk_private.RunItems:
    """The SDK's input helpers; only reached once ``can_pass_history`` said they are there."""
    assert sdk_private.RUN_ITEMS is not None
    return sdk_private.RUN_ITEMS
