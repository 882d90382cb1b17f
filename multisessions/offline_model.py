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

import functools
import hashlib
import itertools
import json
import re
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from agents.items import ModelResponse, TResponseInputItem, TResponseStreamEvent
from agents.models.interface import Model, ModelTracing
from agents.usage import Usage
from openai.types.responses import (
    Response,
    ResponseCompletedEvent,
    ResponseContentPartAddedEvent,
    ResponseContentPartDoneEvent,
    ResponseCreatedEvent,
    ResponseFunctionCallArgumentsDeltaEvent,
    ResponseFunctionCallArgumentsDoneEvent,
    ResponseFunctionToolCall,
    ResponseInProgressEvent,
    ResponseOutputItemAddedEvent,
    ResponseOutputItemDoneEvent,
    ResponseOutputMessage,
    ResponseOutputText,
    ResponseTextDeltaEvent,
    ResponseTextDoneEvent,
    ResponseUsage,
)
from openai.types.responses.response_usage import InputTokensDetails, OutputTokensDetails

from multisessions.items import message_text

# Every pattern below runs in time linear in the text it reads, because one user message can be
# megabytes long and the model runs on the event loop: a quadratic pattern would stall every other
# conversation. Possessive quantifiers (``*+``, ``++``) are used only where giving characters back
# could never lead to a match, so they prune work without changing any answer.

# Only the trigger ignores case: the name itself must be capitalised ("Alice", not "and").
_NAME = re.compile(r"\b(?i:my name is|my name's|call me|this is)\s++([A-Z][\w'-]*+(?:\s++[A-Z][\w'-]*+)?)")
# The address starts at the first word character of its run of address characters: anchoring on
# the run stops the engine from rescanning the same run from each of its dots.
_EMAIL = re.compile(r"(?<![\w.+-])[.+-]*+\b([\w.+-]++@[\w-]+(?:\.[\w-]+)+)\b")
# An id is at most 64 characters either side of its last digit, so a long run after each of many
# "order" words costs a bounded amount each (real order and ticket numbers are far shorter).
_NUMBER_AFTER = r"\s*+(?:number|no\.?|id)?\s*+(?:is\s*+)?#?\s*+([A-Z0-9-]{0,64}\d[A-Z0-9-]{0,64})"
_ORDER = re.compile(r"\border" + _NUMBER_AFTER, re.I)
_TICKET = re.compile(r"\bticket" + _NUMBER_AFTER, re.I)
_PLAN = re.compile(r"\b(?:on|have|use|using|want|interested in) (?:the |a |an )?([\w-]++) plan\b", re.I)
# Linear as it stands: the first trigger followed by text succeeds and the search ends there.
_PREFERENCE = re.compile(r"\bI (?:prefer|like|love|want)\s+([^.?!]+)", re.I)
_PROBLEM_WORD = re.compile(
    r"\b(?:problem|issue|broken|error|can't|cannot|won't|doesn't work|"
    r"not working|charged|crash\w*|fail\w*)\b",
    re.I,
)
_SENTENCE_END = re.compile(r"[.?!]")


def _first_group(pattern: re.Pattern[str]) -> Callable[[str], str | None]:
    def find(text: str) -> str | None:
        match = pattern.search(text)
        return match.group(1) if match else None

    return find


def _problem_sentence(text: str) -> str | None:
    # The sentence (text between . ? or !) holding the first problem word. Searching for the word
    # and then widening to its sentence is one pass; a pattern that matches the whole sentence
    # retries from every character of a long sentence that has no problem word.
    match = _PROBLEM_WORD.search(text)
    if match is None:
        return None
    start = max(text.rfind(mark, 0, match.start()) for mark in ".?!") + 1
    end = _SENTENCE_END.search(text, match.end())
    return text[start : end.start() if end else len(text)]


# What the offline model can remember, each with how to find it in one message.
_FACT_FINDERS: dict[str, Callable[[str], str | None]] = {
    "name": _first_group(_NAME),
    "email": _first_group(_EMAIL),
    "order": _first_group(_ORDER),
    "ticket": _first_group(_TICKET),
    "plan": _first_group(_PLAN),
    "preference": _first_group(_PREFERENCE),
    "problem": _problem_sentence,
}


def _found(pattern: re.Pattern[str]) -> Callable[[str], bool]:
    return lambda text: pattern.search(text) is not None


def _either(*checks: Callable[[str], bool]) -> Callable[[str], bool]:
    return lambda text: any(check(text) for check in checks)


def _found_before_question_mark(pattern: re.Pattern[str]) -> Callable[[str], bool]:
    # Means ``pattern.*\?``: the phrase, then a "?" later on the same line. Each line is read once;
    # the regex form rescans the rest of the line from every phrase when no "?" follows.
    def found(text: str) -> bool:
        for line in text.split("\n"):
            mark = line.rfind("?")
            if mark > 0 and pattern.search(line, 0, mark):
                return True
        return False

    return found


# Recall questions, mapped to the fact they ask about.
_MY_EMAIL = re.compile(r"\bmy (?:e-?mail|email address)\b", re.I)
_WHATS_MY_EMAIL = re.compile(r"\bwhat(?:'s| is) my e-?mail", re.I)
_WHICH_PLAN = re.compile(r"\b(?:what|which)(?:'s| is| was)? (?:my )?plan\b", re.I)
_RECALL_CHECKS: list[tuple[str, Callable[[str], bool]]] = [
    ("name", _found(re.compile(r"\b(?:what(?:'s| is) my name|who am i|do you know my name)\b", re.I))),
    ("email", _either(_found_before_question_mark(_MY_EMAIL), _found(_WHATS_MY_EMAIL))),
    ("order", _found(re.compile(r"\b(?:what|which)(?:'s| is| was)? my order\b", re.I))),
    ("ticket", _found(re.compile(r"\b(?:what|which)(?:'s| is| was)? my ticket\b", re.I))),
    ("plan", _found_before_question_mark(_WHICH_PLAN)),
    ("preference", _found(re.compile(r"\bwhat do i (?:prefer|like|want)\b", re.I))),
    ("problem", _found(re.compile(r"\bwhat(?:'s| is| was) (?:my|the) (?:problem|issue)\b", re.I))),
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
        facts.update(_read(text).facts)
    return facts


def is_recall_question(text: str) -> bool:
    """Whether the message asks for something said earlier (it then states no new fact)."""
    reading = _read(text)
    return reading.asks_everything or bool(reading.asked)


@dataclass(frozen=True)
class _Reading:
    """Everything the rules need from one message."""

    asks_everything: bool
    asked: tuple[str, ...]
    facts: tuple[tuple[str, str], ...]


# Every turn resends the whole history, so each message is read once and the result remembered:
# a long message in the history then costs a hash per turn instead of a full scan. The bound keeps
# memory in check; an evicted message is simply read again.
@functools.lru_cache(maxsize=256)
def _read(text: str) -> _Reading:
    asks_everything = bool(_RECALL_EVERYTHING.search(text))
    asked = tuple(kind for kind, asks in _RECALL_CHECKS if asks(text))
    if asks_everything or asked:
        # A question states no new fact.
        return _Reading(asks_everything, asked, ())
    found = ((kind, find(text)) for kind, find in _FACT_FINDERS.items())
    facts = tuple((kind, value.strip()) for kind, value in found if value is not None)
    return _Reading(False, (), facts)


def estimate_tokens(text: str) -> int:
    """A rough token count (four characters a token), for usage and cost figures."""
    return max(1, (len(text) + 3) // 4)


@dataclass
class _Conversation:
    """What the model was sent, sorted into the parts the rules need."""

    user_texts: list[str] = field(default_factory=list)
    system_texts: list[str] = field(default_factory=list)
    """System messages in the input (a summary of older items, say)."""
    last_user_text: str = ""
    handed_off_this_turn: bool = False
    tool_called_this_turn: bool = False
    tool_output_this_turn: tuple[str, str] | None = None
    """(tool name, its output) once a tool of this turn answered."""

    @classmethod
    def from_input(cls, input: str | list[TResponseInputItem]) -> _Conversation:
        if isinstance(input, str):
            return cls(user_texts=[input], last_user_text=input)
        conv = cls()
        calls: dict[str, str] = {}
        for item in input:
            if not isinstance(item, dict):
                continue
            if item.get("role") in ("system", "developer"):
                conv.system_texts.append(message_text(item))
            elif item.get("role") == "user":
                text = message_text(item)
                conv.user_texts.append(text)
                conv.last_user_text = text
                conv.handed_off_this_turn = conv.tool_called_this_turn = False
                conv.tool_output_this_turn = None
            elif item.get("type") == "function_call":
                name = str(item.get("name", ""))
                if name.startswith("transfer_to_"):
                    conv.handed_off_this_turn = True
                else:
                    conv.tool_called_this_turn = True
                    calls[str(item.get("call_id"))] = name
            elif item.get("type") == "function_call_output" and str(item.get("call_id")) in calls:
                conv.tool_output_this_turn = (calls[str(item.get("call_id"))], str(item.get("output", "")))
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
        output = self._decide(input, handoffs, tools, system_instructions)
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
        # The events are replayed from the finished response, so streaming can never decide
        # differently from ``get_response``; they follow the order the Responses API uses.
        for event in _stream_events(_digest(input, "resp"), self.model_name, response):
            yield event

    def _decide(
        self,
        input: str | list[TResponseInputItem],
        handoffs: list[Any],
        tools: list[Any] | None = None,
        system_instructions: str | None = None,
    ) -> list[Any]:
        conv = _Conversation.from_input(input)
        if "summarize the conversation" in (system_instructions or "").lower():
            return [_message(input, summarize(conv.last_user_text))]
        if "write a title for a conversation" in (system_instructions or "").lower():
            return [_message(input, entitle(conv.last_user_text))]
        if handoffs and not conv.handed_off_this_turn:
            target = choose_handoff(conv.last_user_text, handoffs)
            if target is not None:
                return [_call(input, target.tool_name, {})]
        if tools and not conv.tool_called_this_turn:
            to_remember = facts_to_remember(conv.last_user_text, tools)
            if to_remember:
                return [
                    _call([input, fact], "remember", {"fact": fact, "value": value})
                    for fact, value in to_remember.items()
                ]
            chosen = choose_tool(conv.last_user_text, extract_facts(conv.user_texts), tools)
            if chosen is not None:
                return [_call(input, *chosen)]
        if conv.tool_output_this_turn is not None and conv.tool_output_this_turn[0] != "remember":
            tool, output = conv.tool_output_this_turn
            text = f"{tool}: {output}"
        else:
            memory = remembered_facts("\n".join([system_instructions or "", *conv.system_texts]))
            text = answer(conv.user_texts[:-1], conv.last_user_text, memory)
        return [_message(input, text)]


# Word by word, keeping each word's trailing space, so the deltas join back to the exact text.
_PIECE = re.compile(r"\S+\s*|\s+")
# A huge answer is sent in at most this many deltas: the event count stays bounded too.
_MAX_DELTAS = 256


def _text_pieces(text: str) -> list[str]:
    pieces = _PIECE.findall(text)
    if len(pieces) <= _MAX_DELTAS:
        return pieces
    size = -(-len(pieces) // _MAX_DELTAS)
    return ["".join(pieces[i : i + size]) for i in range(0, len(pieces), size)]


def _stream_events(response_id: str, model: str, response: ModelResponse) -> Iterator[TResponseStreamEvent]:
    """The Responses-API event sequence that streams ``response``, numbered in order."""
    seq = itertools.count()
    yield ResponseCreatedEvent(
        type="response.created",
        sequence_number=next(seq),
        response=_response(response_id, model, [], "in_progress", None),
    )
    yield ResponseInProgressEvent(
        type="response.in_progress",
        sequence_number=next(seq),
        response=_response(response_id, model, [], "in_progress", None),
    )
    for index, item in enumerate(response.output):
        if isinstance(item, ResponseOutputMessage):
            yield from _message_events(item, index, seq)
        elif isinstance(item, ResponseFunctionToolCall):
            yield from _function_call_events(item, index, seq)
        else:
            raise TypeError(f"cannot stream output item {type(item).__name__}")
    usage = response.usage
    yield ResponseCompletedEvent(
        type="response.completed",
        sequence_number=next(seq),
        response=_response(
            response_id,
            model,
            response.output,
            "completed",
            ResponseUsage(
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


def _message_events(
    item: ResponseOutputMessage, index: int, seq: Iterator[int]
) -> Iterator[TResponseStreamEvent]:
    # Like the API: the item opens empty, each text part opens empty and grows by deltas.
    yield ResponseOutputItemAddedEvent(
        type="response.output_item.added",
        sequence_number=next(seq),
        output_index=index,
        item=item.model_copy(update={"status": "in_progress", "content": []}),
    )
    for content_index, part in enumerate(item.content):
        where: dict[str, Any] = {"item_id": item.id, "output_index": index, "content_index": content_index}
        yield ResponseContentPartAddedEvent(
            type="response.content_part.added",
            sequence_number=next(seq),
            part=part.model_copy(update={"text": ""}) if isinstance(part, ResponseOutputText) else part,
            **where,
        )
        if isinstance(part, ResponseOutputText):
            for piece in _text_pieces(part.text):
                yield ResponseTextDeltaEvent(
                    type="response.output_text.delta",
                    sequence_number=next(seq),
                    delta=piece,
                    logprobs=[],
                    **where,
                )
            yield ResponseTextDoneEvent(
                type="response.output_text.done",
                sequence_number=next(seq),
                text=part.text,
                logprobs=[],
                **where,
            )
        yield ResponseContentPartDoneEvent(
            type="response.content_part.done", sequence_number=next(seq), part=part, **where
        )
    yield ResponseOutputItemDoneEvent(
        type="response.output_item.done", sequence_number=next(seq), output_index=index, item=item
    )


def _function_call_events(
    item: ResponseFunctionToolCall, index: int, seq: Iterator[int]
) -> Iterator[TResponseStreamEvent]:
    # Like the API: the call opens with empty arguments, which then arrive (here in one delta).
    where: dict[str, Any] = {"item_id": item.id or "", "output_index": index}
    yield ResponseOutputItemAddedEvent(
        type="response.output_item.added",
        sequence_number=next(seq),
        output_index=index,
        item=item.model_copy(update={"status": "in_progress", "arguments": ""}),
    )
    yield ResponseFunctionCallArgumentsDeltaEvent(
        type="response.function_call_arguments.delta",
        sequence_number=next(seq),
        delta=item.arguments,
        **where,
    )
    yield ResponseFunctionCallArgumentsDoneEvent(
        type="response.function_call_arguments.done",
        sequence_number=next(seq),
        arguments=item.arguments,
        **where,
    )
    yield ResponseOutputItemDoneEvent(
        type="response.output_item.done", sequence_number=next(seq), output_index=index, item=item
    )


def _response(
    response_id: str, model: str, output: list[Any], status: Any, usage: ResponseUsage | None
) -> Response:
    return Response(
        id=response_id,
        created_at=0,
        model=model,
        object="response",
        output=output,
        tool_choice="auto",
        tools=[],
        top_p=None,
        parallel_tool_calls=False,
        status=status,
        usage=usage,
    )


def _call(input: Any, name: str, arguments: dict[str, str]) -> ResponseFunctionToolCall:
    call_id = _digest(input, "call")
    return ResponseFunctionToolCall(
        id=call_id, call_id=call_id, type="function_call", name=name, arguments=json.dumps(arguments)
    )


# Which stated fact fills a tool parameter, by a word in the parameter's name.
_PARAMETER_FACTS = {"order": "order", "ticket": "ticket", "email": "email", "name": "name", "plan": "plan"}


def choose_tool(text: str, facts: dict[str, str], tools: list[Any]) -> tuple[str, dict[str, str]] | None:
    """The function tool whose name and description share the most words with ``text``, and its
    arguments filled from the facts the user stated; None if no tool fits or an argument is unknown."""
    words = _keywords(text)
    best: tuple[int, str, dict[str, str]] | None = None
    for tool in tools:
        schema = getattr(tool, "params_json_schema", None)
        if not isinstance(schema, dict):
            continue  # not a function tool
        name = str(tool.name)
        score = len(words & _keywords(f"{name.replace('_', ' ')} {getattr(tool, 'description', '')}"))
        arguments: dict[str, str] = {}
        for parameter in schema.get("properties", {}):
            fact = next((f for word, f in _PARAMETER_FACTS.items() if word in parameter.lower()), None)
            if fact is None or fact not in facts:
                break
            arguments[parameter] = facts[fact]
        else:
            if score and (best is None or score > best[0]):
                best = (score, name, arguments)
    return None if best is None else (best[1], best[2])


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


def answer(earlier_user_texts: list[str], message: str, memory: dict[str, str] | None = None) -> str:
    """The reply to ``message``, given what the user said earlier in this conversation (and what
    is remembered about them from their other conversations, ``memory``)."""
    known = {**(memory or {}), **extract_facts([*earlier_user_texts, message])}
    reading = _read(message)
    if reading.asks_everything:
        if not known:
            return "This conversation doesn't tell me anything about you yet."
        return (
            "Here is what you told me: " + "; ".join(f"{_LABELS[k]} is {v}" for k, v in known.items()) + "."
        )
    asked = reading.asked
    if asked:
        return " ".join(
            f"{_LABELS[kind].capitalize()} is {known[kind]}."
            if kind in known
            else f"I don't know {_LABELS[kind]}: nothing in this conversation says it."
            for kind in asked
        )
    new = dict(reading.facts)
    if new:
        name = known.get("name")
        greeting = f"Thanks, {name}." if name else "Thanks."
        noted = ", ".join(f"{_LABELS[k]} ({v})" for k, v in new.items() if k != "name")
        return f"{greeting} I've noted {noted}." if noted else f"{greeting} How can I help?"
    return "Understood. What else can I help you with?"


# Facts about the user, worth keeping for their other conversations (an order or a ticket
# belongs to the conversation it was given in).
_USER_FACTS = ("name", "email", "preference")
# "- email: alice@example.com" under a heading about the user (memory.with_memory writes them).
_MEMORY_LINE = re.compile(r"^- ([a-z][a-z _-]{0,63}): (.{1,500})$", re.M)


def facts_to_remember(text: str, tools: list[Any]) -> dict[str, str]:
    """The user facts ``text`` states, if the agent has a ``remember`` tool to keep them with."""
    if not any(getattr(tool, "name", None) == "remember" for tool in tools):
        return {}
    return {kind: value for kind, value in _read(text).facts if kind in _USER_FACTS}


def remembered_facts(text: str) -> dict[str, str]:
    """The facts listed as ``- fact: value`` lines (a user's memory, a summary), known kinds only."""
    return {fact: value.strip() for fact, value in _MEMORY_LINE.findall(text) if fact in _LABELS}


def entitle(message: str) -> str:
    """A title for a conversation that begins with ``message``: what it is about, in a few words."""
    words = re.findall(r"[A-Za-z0-9][A-Za-z0-9'@.-]*", message)
    about = [w.rstrip(".") for w in words if w.lower() not in _TITLE_SKIP][:5]
    return " ".join(about).capitalize() if about else "New conversation"


_TITLE_SKIP = frozenset(
    "a an and are can could do does for get hi hello hey i i'm is it me my of on please the there "
    "this to was we what with would you your".split()
)


def summarize(transcript: str) -> str:
    """A summary as ``- fact: value`` lines: the earlier summary's facts, then what the user said
    in the transcript (``user: ...`` lines), a later statement replacing an earlier one."""
    facts = remembered_facts(transcript)
    said = [line[len("user: ") :] for line in transcript.splitlines() if line.startswith("user: ")]
    facts.update(extract_facts(said))
    return "\n".join(f"- {fact}: {value}" for fact, value in facts.items()) or "- nothing: no facts yet"


def _message(input: Any, text: str) -> ResponseOutputMessage:
    return ResponseOutputMessage(
        id=_digest(input, "msg"),
        type="message",
        role="assistant",
        status="completed",
        content=[ResponseOutputText(type="output_text", text=text, annotations=[])],
    )


def _digest(input: Any, prefix: str) -> str:
    # Unique per conversation state, identical on every run: ids must not repeat across turns.
    blob = json.dumps(input, sort_keys=True, default=str).encode()
    return f"{prefix}_offline_{hashlib.sha256(blob).hexdigest()[:24]}"
