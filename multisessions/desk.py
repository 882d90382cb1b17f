"""The support desk the ``multisessions`` command chats with and approves for.

The same agents as the lesson's ``support_agents`` (agent.py), by name, tools and handoffs, so a
turn paused by the demos can be approved from the installed command, and a chat started with
``python agent.py chat`` can go on with ``multisessions chat`` (tests/test_packaging.py compares
the two). The package never imports the lesson: it keeps its own copy.
"""

from __future__ import annotations

from typing import Any

from agents import Agent, RunContextWrapper, function_tool
from agents.tool_context import ToolContext

from multisessions.effects import Ledger


@function_tool(needs_approval=True, failure_error_function=None)
async def refund_order(ctx: RunContextWrapper[Any], order_id: str) -> str:
    """Refund the double charge on an order. A supervisor must approve every refund."""
    if not isinstance(ctx, ToolContext) or not isinstance(ctx.context, Ledger):
        raise TypeError("refund_order needs the session's Ledger as the run's context")
    # Once per tool call: a resume retried after a crash finds the call's id in the ledger.
    order, _ = await ctx.context.once("refund", ctx.tool_call_id, order_id)
    return f"refund issued for order {order}"


FIRST_AGENT = "Triage Agent"
"""The agent a new conversation starts with."""


def support_agents(*, refunds: bool = True) -> dict[str, Agent[Any]]:
    """A triage agent that hands off to a billing or a technical specialist, by name.

    With ``refunds``, the billing specialist can refund an order, once a supervisor approves.
    """
    billing = Agent(
        name="Billing Agent",
        handoff_description="Billing: charges, double charges, refunds, invoices, payments, plans.",
        instructions="You are the billing specialist. Use everything the customer already said.",
        tools=[refund_order] if refunds else [],
    )
    technical = Agent(
        name="Technical Agent",
        handoff_description="Technical problems: crashes, errors, bugs, login, the app not working.",
        instructions="You are the technical specialist. Use everything the customer already said.",
    )
    triage = Agent(
        name=FIRST_AGENT,
        instructions="Greet the customer, then hand billing questions to the Billing Agent and "
        "technical problems to the Technical Agent.",
        handoffs=[billing, technical],
    )
    return {agent.name: agent for agent in (triage, billing, technical)}
