"""A rule-based stand-in for an LLM, so every demo runs with no API key and no network.

``OfflineModel`` is a real implementation of the SDK's ``Model`` interface. It answers only from
what it is sent (instructions, session history, the new message): it picks up facts the user
stated earlier in *this* conversation, answers recall questions from them, says plainly when the
conversation holds no such fact, and routes with the real ``transfer_to_...`` tool call when the
agent has handoffs. It is deterministic and reports estimated token usage.

It is not a language model: it matches a handful of English patterns. Point ``OPENAI_API_KEY``
at a real model to see the same demos with real answers.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from agents.items import ModelResponse, TResponseInputItem, TResponseStreamEvent
from agents.models.interface import Model, ModelTracing
from agents.usage import Usage
from openai.types.responses import (
    Response,
    ResponseCompletedEvent,
    ResponseFunctionToolCall,
    ResponseOutputMessage,
    ResponseOutputText,
    ResponseUsage,
)
from openai.types.responses.response_usage import InputTokensDetails, OutputTokensDetails

from multisessions.items import message_text

# What the offline model can remember, each with the pattern that states it.
_FACT_PATTERNS: dict[str, re.Pattern[str]] = {
    "name": re.compile(
        # Only the trigger ignores case: the name itself must be capitalised ("Alice", not "and").
        r"\b(?i:my name is|my name's|call me|this is)\s+([A-Z][\w'-]*(?:\s+[A-Z][\w'-]*)?)"
    ),
    "email": re.compile(r"\b([\w.+-]+@[\w-]+(?:\.[\w-]+)+)\b"),
    "order": re.compile(r"\border\s*(?:number|no\.?|id)?\s*(?:is\s*)?#?\s*([A-Z0-9-]*\d[A-Z0-9-]*)", re.I),
    "ticket": re.compile(r"\bticket\s*(?:number|no\.?|id)?\s*(?:is\s*)?#?\s*([A-Z0-9-]*\d[A-Z0-9-]*)", re.I),
    "plan": re.compile(r"\b(?:on|have|use|using|want|interested in) (?:the |a |an )?([\w-]+) plan\b", re.I),
    "preference": re.compile(r"\bI (?:prefer|like|love|want)\s+([^.?!]+)", re.I),
    "problem": re.compile(
        r"([^.?!]*\b(?:problem|issue|broken|error|can't|cannot|won't|doesn't work|"
        r"not working|charged|crash\w*|fail\w*)\b[^.?!]*)",
        re.I,
    ),
}

# Recall questions, mapped to the fact they ask about.
_RECALL_PATTERNS: list[tuple[str, re.Pattern[str]]] = [
    ("name", re.compile(r"\b(?:what(?:'s| is) my name|who am i|do you know my name)\b", re.I)),
    ("email", re.compile(r"\bmy (?:e-?mail|email address)\b.*\?|\bwhat(?:'s| is) my e-?mail", re.I)),
    ("order", re.compile(r"\b(?:what|which)(?:'s| is| was)? my order\b", re.I)),
    ("ticket", re.compile(r"\b(?:what|which)(?:'s| is| was)? my ticket\b", re.I)),
    ("plan", re.compile(r"\b(?:what|which)(?:'s| is| was)? (?:my )?plan\b.*\?", re.I)),
    ("preference", re.compile(r"\bwhat do i (?:prefer|like|want)\b", re.I)),
    ("problem", re.compile(r"\bwhat(?:'s| is| was) (?:my|the) (?:problem|issue)\b", re.I)),
]
_RECALL_EVERYTHING = re.compile(
    r"\b(?:what do you (?:know|remember) about me|what did i (?:tell|say)|remind me)\b", re.I
)

_LABELS = {
    "name": "your name",
    "email": "your email",
    "order": "your order number",
    "ticket": "your ticket number",
    "plan": "your plan",
    "preference": "your preference",
    "problem": "the problem you reported",
}

_WORD = re.compile(r"[a-z]+")
_STOPWORDS = frozenset(
    "a an and are as at be but by can do for from has have i if in is it its me my no not "
    "of on or our so that the this to was we what when with you your agent handles".split()
)


def extract_facts(texts: list[str]) -> dict[str, str]:
    """Facts stated in the user's messages; a later statement overrides an earlier one."""
    facts: dict[str, str] = {}
    for text in texts:
        if is_recall_question(text):
            continue
        for kind, pattern in _FACT_PATTERNS.items():
            match = pattern.search(text)
            if match:
                facts[kind] = match.group(1).strip()
    return facts


def is_recall_question(text: str) -> bool:
    """Whether the message asks for something said earlier (it then states no new fact)."""
    return bool(_RECALL_EVERYTHING.search(text)) or any(
        pattern.search(text) for _, pattern in _RECALL_PATTERNS
    )


def estimate_tokens(text: str) -> int:
    """A rough token count (four characters a token), for usage and cost figures."""
    return max(1, (len(text) + 3) // 4)


@dataclass
class _Conversation:
    """What the model was sent, sorted into the parts the rules need."""

    user_texts: list[str] = field(default_factory=list)
    last_user_text: str = ""
    handed_off_this_turn: bool = False

    @classmethod
    def from_input(cls, input: str | list[TResponseInputItem]) -> _Conversation:
        if isinstance(input, str):
            return cls(user_texts=[input], last_user_text=input)
        conv = cls()
        for item in input:
            if not isinstance(item, dict):
                continue
            if item.get("role") == "user":
                text = message_text(item)
                conv.user_texts.append(text)
                conv.last_user_text = text
                conv.handed_off_this_turn = False
            elif item.get("type") == "function_call" and str(item.get("name", "")).startswith("transfer_to_"):
                conv.handed_off_this_turn = True
        return conv


class OfflineModel(Model):
    """A deterministic, rule-based ``Model``: remembers stated facts, recalls them, hands off."""

    model_name = "offline"

    async def get_response(
        self,
        system_instructions: str | None,
        input: str | list[TResponseInputItem],
        model_settings: Any,
        tools: list[Any],
        output_schema: Any,
        handoffs: list[Any],
        tracing: ModelTracing,
        *,
        previous_response_id: str | None = None,
        conversation_id: str | None = None,
        prompt: Any = None,
    ) -> ModelResponse:
        output = self._decide(input, handoffs)
        input_tokens = estimate_tokens((system_instructions or "") + json.dumps(input, default=str))
        output_tokens = estimate_tokens(json.dumps([o.model_dump() for o in output]))
        usage = Usage(
            requests=1,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            total_tokens=input_tokens + output_tokens,
        )
        return ModelResponse(output=output, usage=usage, response_id=None)

    async def stream_response(
        self,
        system_instructions: str | None,
        input: str | list[TResponseInputItem],
        model_settings: Any,
        tools: list[Any],
        output_schema: Any,
        handoffs: list[Any],
        tracing: ModelTracing,
        *,
        previous_response_id: str | None = None,
        conversation_id: str | None = None,
        prompt: Any = None,
    ) -> AsyncIterator[TResponseStreamEvent]:
        response = await self.get_response(
            system_instructions,
            input,
            model_settings,
            tools,
            output_schema,
            handoffs,
            tracing,
            previous_response_id=previous_response_id,
            conversation_id=conversation_id,
            prompt=prompt,
        )
        usage = response.usage
        yield ResponseCompletedEvent(
            type="response.completed",
            sequence_number=0,
            response=Response(
                id=_digest(input, "resp"),
                created_at=0,
                model=self.model_name,
                object="response",
                output=response.output,
                tool_choice="auto",
                tools=[],
                top_p=None,
                parallel_tool_calls=False,
                status="completed",
                usage=ResponseUsage(
                    input_tokens=usage.input_tokens,
                    output_tokens=usage.output_tokens,
                    total_tokens=usage.total_tokens,
                    input_tokens_details=InputTokensDetails.model_validate(
                        {"cached_tokens": 0, "cache_write_tokens": 0}
                    ),
                    output_tokens_details=OutputTokensDetails(reasoning_tokens=0),
                ),
            ),
        )

    def _decide(self, input: str | list[TResponseInputItem], handoffs: list[Any]) -> list[Any]:
        conv = _Conversation.from_input(input)
        if handoffs and not conv.handed_off_this_turn:
            target = choose_handoff(conv.last_user_text, handoffs)
            if target is not None:
                call_id = _digest(input, "call")
                return [
                    ResponseFunctionToolCall(
                        id=call_id,
                        call_id=call_id,
                        type="function_call",
                        name=target.tool_name,
                        arguments="{}",
                    )
                ]
        text = answer(conv.user_texts[:-1], conv.last_user_text)
        return [
            ResponseOutputMessage(
                id=_digest(input, "msg"),
                type="message",
                role="assistant",
                status="completed",
                content=[ResponseOutputText(type="output_text", text=text, annotations=[])],
            )
        ]


def choose_handoff(text: str, handoffs: list[Any]) -> Any | None:
    """The handoff whose agent name and description share the most words with ``text``."""
    words = _keywords(text)
    best, best_score = None, 0
    for handoff in handoffs:
        about = f"{handoff.agent_name} {getattr(handoff, 'tool_description', '') or ''}"
        score = len(words & _keywords(about))
        if score > best_score:
            best, best_score = handoff, score
    return best


def _keywords(text: str) -> set[str]:
    # A crude stem (drop a trailing "s") so "charges" meets "charge" and "refunds" meets "refund".
    return {w.rstrip("s") for w in _WORD.findall(text.lower()) if w not in _STOPWORDS}


def answer(earlier_user_texts: list[str], message: str) -> str:
    """The reply to ``message``, given what the user said earlier in this conversation."""
    known = extract_facts([*earlier_user_texts, message])
    if _RECALL_EVERYTHING.search(message):
        if not known:
            return "This conversation doesn't tell me anything about you yet."
        return (
            "Here is what you told me: " + "; ".join(f"{_LABELS[k]} is {v}" for k, v in known.items()) + "."
        )
    asked = [kind for kind, pattern in _RECALL_PATTERNS if pattern.search(message)]
    if asked:
        return " ".join(
            f"{_LABELS[kind].capitalize()} is {known[kind]}."
            if kind in known
            else f"I don't know {_LABELS[kind]}: nothing in this conversation says it."
            for kind in asked
        )
    new = extract_facts([message])
    if new:
        name = known.get("name")
        greeting = f"Thanks, {name}." if name else "Thanks."
        noted = ", ".join(f"{_LABELS[k]} ({v})" for k, v in new.items() if k != "name")
        return f"{greeting} I've noted {noted}." if noted else f"{greeting} How can I help?"
    return "Understood. What else can I help you with?"


def _digest(input: Any, prefix: str) -> str:
    # Unique per conversation state, identical on every run: ids must not repeat across turns.
    blob = json.dumps(input, sort_keys=True, default=str).encode()
    return f"{prefix}_offline_{hashlib.sha256(blob).hexdigest()[:24]}"
