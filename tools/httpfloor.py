"""The HTTP floor: serve.py's app shape with no session, for ``tools/loadtest.py --compare``.

``uvicorn tools.httpfloor:create_app --factory`` answers ``POST /api/conversations/NAME/messages``
as serve.py does (FastAPI on uvicorn, a bearer token compared in constant time, the body read as a
stream up to 256 KiB, its JSON depth checked, the message checked, the same JSON reply, the app
wrapped in ``OneLineStartupErrors``), but the turn is ``Runner.run`` on a history kept in this
process's memory: no store, no lease, no all-or-nothing commit. What serve.py costs above this
is what the session costs over HTTP. Tokens come from ``SERVE_TOKENS``; the model is the
settings' (the offline model without a key). The agents are the desk's (``multisessions.desk``,
agent.py's agents without the refund tool): a triage agent with two specialists to hand off to.
"""

from __future__ import annotations

import hmac
import json
from typing import Annotated

from agents import RunConfig, Runner
from agents.items import HandoffOutputItem, TResponseInputItem
from fastapi import Depends, FastAPI, Header, HTTPException, Request
from fastapi.responses import JSONResponse

from multisessions import MAX_MESSAGE_CHARS, check_message, load_settings, resolve_model
from multisessions.desk import FIRST_AGENT, support_agents
from multisessions.settings import ServeToken
from multisessions.web import MAX_JSON_DEPTH, ASGIApp, OneLineStartupErrors, too_deep

MAX_BODY_BYTES = 256 * 1024
"""serve.py's body limit."""


def who_is_calling(authorization: str | None, tokens: tuple[ServeToken, ...]) -> str | None:
    """The user a bearer token stands for, every token compared in constant time (as serve.py)."""
    scheme, _, presented = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not presented.strip():
        return None
    given = presented.strip().encode()
    found = None
    for entry in tokens:
        if hmac.compare_digest(given, entry.token.encode()):
            found = entry.user
    return found


async def read_message(request: Request) -> str:
    """serve.py's body reading: a stream counted up to the limit, JSON depth, then the message."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise HTTPException(413, "body too large")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY_BYTES:
            raise HTTPException(413, "body too large")
    if too_deep(bytes(body)):
        raise HTTPException(422, f"body nests deeper than {MAX_JSON_DEPTH} levels")
    try:
        payload = json.loads(body)
    except (ValueError, RecursionError):
        raise HTTPException(422, "body must be JSON") from None
    message = payload.get("message") if isinstance(payload, dict) else None
    if isinstance(message, str) and len(message) > MAX_MESSAGE_CHARS:
        raise HTTPException(413, "message too long")
    try:
        return check_message(message)
    except ValueError as exc:
        raise HTTPException(422, str(exc)) from None


async def caller(request: Request, authorization: Annotated[str | None, Header()] = None) -> str:
    """The user calling, or 401 (serve.py's dependency, answering the user's name)."""
    user = who_is_calling(authorization, request.app.state.tokens)
    if user is None:
        raise HTTPException(401, "missing or unknown token", headers={"WWW-Authenticate": "Bearer"})
    return user


async def post_message(name: str, request: Request, user: Annotated[str, Depends(caller)]) -> JSONResponse:
    """One turn: ``Runner.run`` on the conversation's history in memory, answered as serve.py does."""
    message = await read_message(request)
    state = request.app.state
    key = (user, name)
    history = state.histories.get(key, [])
    turn_input: list[TResponseInputItem] = [*history, {"role": "user", "content": message}]
    result = await Runner.run(state.agent, turn_input, run_config=state.run_config)
    state.histories[key] = result.to_input_list()
    handoffs = [
        {"from": item.source_agent.name, "to": item.target_agent.name}
        for item in result.new_items
        if isinstance(item, HandoffOutputItem)
    ]
    return JSONResponse(
        {
            "reply": str(result.final_output),
            "agent": result.last_agent.name,
            "handoffs": handoffs,
            "session_id": f"{user}:{name}",
        }
    )


def create_app() -> ASGIApp:
    """The floor app (``uvicorn tools.httpfloor:create_app --factory``)."""
    settings = load_settings(serving=True)
    app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)
    app.state.tokens = settings.serve_tokens
    app.state.agent = support_agents(refunds=False)[FIRST_AGENT]
    app.state.run_config = RunConfig(model=resolve_model(None, settings, announce=False))
    app.state.histories = {}
    app.add_api_route("/api/conversations/{name}/messages", post_message, methods=["POST"])
    return OneLineStartupErrors(app)
