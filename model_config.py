"""Which model the demos talk to: a real OpenAI model when a key is configured, else offline.

``OPENAI_API_KEY`` (environment or ``.env``) switches on the real model; ``OPENAI_MODEL``
chooses it and ``OPENAI_BASE_URL`` points at any OpenAI-compatible server (the ``openai``
client reads both variables itself). With no key, or with ``--offline``, every demo runs on
``OfflineModel`` and says so once.
"""

from __future__ import annotations

import os

from agents import set_tracing_disabled
from agents.models.interface import Model
from dotenv import load_dotenv

from offline_model import OfflineModel

DEFAULT_MODEL = "gpt-4.1-mini"

_announced: set[str] = set()
_force_offline = False


def force_offline(offline: bool = True) -> None:
    """Use the offline model even if a key is configured (the ``--offline`` flag)."""
    global _force_offline
    _force_offline = offline


def _say_once(line: str) -> None:
    if line not in _announced:
        _announced.add(line)
        print(line)


def resolve_model(model: Model | str | None = None) -> Model | str:
    """The model for ``RunConfig(model=...)``: a ``Model`` as given, a model name, or offline."""
    if isinstance(model, Model):
        return model
    load_dotenv()
    # Traces would upload every conversation to OpenAI; this tutorial keeps them off everywhere.
    set_tracing_disabled(True)
    key = os.environ.get("OPENAI_API_KEY", "").strip()
    if _force_offline or not key:
        reason = "--offline" if _force_offline else "no OPENAI_API_KEY"
        if isinstance(model, str):
            reason += f"; model {model!r} needs a key"
        _say_once(
            f"Model: built-in offline model ({reason}): rule-based answers from the conversation "
            "only, no network. Set OPENAI_API_KEY in .env for a real model."
        )
        return OfflineModel()
    name = model or os.environ.get("OPENAI_MODEL", "").strip() or DEFAULT_MODEL
    base_url = os.environ.get("OPENAI_BASE_URL", "").strip()
    _say_once(f"Model: {name}" + (f" at {base_url}" if base_url else " (OpenAI)"))
    return name
