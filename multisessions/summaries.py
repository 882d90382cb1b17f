"""Summaries for any model: a long conversation's older part, folded into a few lines.

A history cap (``SessionSettings(limit=...)``) keeps each turn's cost flat, but a name given at
turn 1 falls out of the window. With ``Summaries(window=20)``, a turn sends one system message
with the summary and, after it, every item the summary does not cover yet: at least the newest
``window`` items, at most ``window + threshold``.
When ``threshold`` more items have passed out of the window, the turn folds them into the
summary: it asks the turn's own model (the offline model, a local server over Chat
Completions, or OpenAI) with ``prompt``, and writes the new summary in the turn's one write.
The full history stays in the store, for audit and export; only what is sent changes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from agents import Agent, RunConfig, Runner
from agents.models.interface import Model

from multisessions.items import item_summary
from multisessions.settings import Settings
from multisessions.stores import Summary

SUMMARY_HEADING = "Summary of the earlier conversation:"
"""How the summary message sent before the window begins."""
DEFAULT_PROMPT = (
    "Summarize the conversation so far for the assistant who continues it. Keep every fact the "
    "user gave about themselves and their requests (names, emails, numbers, plans, preferences, "
    "decisions), one per line as '- fact: value'. Write nothing else."
)


@dataclass(frozen=True)
class Summaries:
    """How a session's older items are summarized: the settings of ``run_turn(..., summaries=)``."""

    window: int = 20
    """Newest items sent as they are, every turn."""
    threshold: int = 20
    """Items that may pass out of the window before they are folded into the summary."""
    prompt: str = DEFAULT_PROMPT
    """The summarizer's instructions."""
    model: Model | str | None = None
    """Who writes the summary; None: the turn's own model (its ``run_config.model``)."""
    timeout: float = 30.0
    """Seconds the summarizer may take; past them the turn is kept without a new summary."""

    def __post_init__(self) -> None:
        if self.window < 1 or self.threshold < 1:
            raise ValueError("a summary window and threshold are whole numbers of items, 1 or more")
        if not self.timeout > 0:
            raise ValueError("a summarizer's timeout is a number of seconds above 0")


def summary_message(summary: Summary) -> Any:
    """The message sent before the window: what the older items said."""
    return {"role": "system", "content": f"{SUMMARY_HEADING}\n{summary.text}"}


def due(settings: Summaries, summary: Summary | None, total: int) -> int | None:
    """How many items the summary should cover once the session holds ``total``; None if not yet."""
    covered = summary.covered if summary is not None else 0
    keep_from = total - settings.window
    return keep_from if keep_from - covered >= settings.threshold else None


async def fold(
    settings: Summaries, summary: Summary | None, older: list[Any], covered: int, run_config: RunConfig | None
) -> Summary:
    """The summary of ``summary`` and the ``older`` items after it, covering the first ``covered``."""
    lines = [SUMMARY_HEADING, summary.text if summary is not None else "(nothing yet)", "", "Conversation:"]
    lines += [item_summary(item) for item in older]
    model = settings.model or (run_config.model if run_config is not None else None)
    config = RunConfig(model=model)
    if run_config is not None:
        config.model_provider = run_config.model_provider  # a local server's provider, say
    summarizer = Agent(name="Summarizer", instructions=settings.prompt)
    result = await Runner.run(summarizer, "\n".join(lines), run_config=config)
    return Summary(str(result.final_output).strip(), covered)


def summaries_from(settings: Settings) -> Summaries | None:
    """The summaries ``SUMMARY_WINDOW``, ``SUMMARY_THRESHOLD`` and ``SUMMARY_PROMPT`` ask for; None
    without a window (turns then send the whole history, or the session's own cap)."""
    if settings.summary_window is None:
        return None
    return Summaries(
        window=settings.summary_window,
        threshold=settings.summary_threshold or settings.summary_window,
        prompt=settings.summary_prompt or DEFAULT_PROMPT,
    )
