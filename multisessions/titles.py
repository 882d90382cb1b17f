"""Conversation titles written by a model: a few words for the list, asked once per conversation.

Without them a conversation's title is its first message, cut to one line (``items.title_of``).
With ``Titles()``, a conversation's first turn also asks the turn's own model (or ``model``) for
a short title, and the title is written in that turn's one write; a title writer that fails or
takes longer than ``timeout`` leaves the first-message title, and the turn is kept either way.
"""

from __future__ import annotations

from dataclasses import dataclass

from agents import Agent, RunConfig, Runner
from agents.models.interface import Model

from multisessions.items import TITLE_LENGTH, title_of
from multisessions.settings import Settings

DEFAULT_TITLE_PROMPT = (
    "Write a title for a conversation that begins with the user's message below: at most six "
    "words, in the message's language, no quotes, no final period. Write nothing else."
)


@dataclass(frozen=True)
class Titles:
    """How a conversation's title is written: the settings of ``run_turn(..., titles=)``."""

    prompt: str = DEFAULT_TITLE_PROMPT
    """The title writer's instructions."""
    model: Model | str | None = None
    """Who writes the title; None: the turn's own model (its ``run_config.model``)."""
    timeout: float = 10.0
    """Seconds the title writer may take; past them the first message is the title."""

    def __post_init__(self) -> None:
        if not self.timeout > 0:
            raise ValueError("a title writer's timeout is a number of seconds above 0")


async def write_title(settings: Titles, first_message: str, run_config: RunConfig | None) -> str | None:
    """The model's title for a conversation that begins with ``first_message``: one line of at
    most ``TITLE_LENGTH`` characters, or None if it wrote nothing usable."""
    model = settings.model or (run_config.model if run_config is not None else None)
    config = RunConfig(model=model, tracing_disabled=True)
    if run_config is not None:  # a local server's provider, say; traces as the turn's, in its group
        config.model_provider = run_config.model_provider
        config.tracing_disabled = run_config.tracing_disabled
        config.trace_include_sensitive_data = run_config.trace_include_sensitive_data
        config.group_id = run_config.group_id
    writer = Agent(name="Title writer", instructions=settings.prompt)
    result = await Runner.run(writer, first_message, run_config=config)
    text = str(result.final_output).strip().strip("\"'“”").rstrip(".")
    return title_of([{"role": "user", "content": text}], TITLE_LENGTH)


def titles_from(settings: Settings) -> Titles | None:
    """``Titles()`` when ``SERVE_TITLES=model``; None (the first message is the title) otherwise."""
    return Titles() if settings.serve_titles == "model" else None
