"""serve.py as an attacker sees it: every user goes after every other user's conversations.

Names, raw session ids in every field, path tricks, oversized bodies, missing and forged tokens.
The verdict is read from the store, not only from status codes: every other user's sessions hold
exactly what they held, and no session and no answer carries a fact of someone else.
"""

from __future__ import annotations

import itertools
import re
from typing import Any

from multisessions import feature_session_id, message_text, parse_session_id
from serve_fixture import TOKENS, auth, serving, stored

CONVERSATIONS = {
    "alice": ["support", "thread-7731"],
    "bob": ["billing", "support"],
    "acme/alice": ["support"],
}
"""acme/alice has the same user name and conversation name as alice: only the tenant differs."""
SECRET = re.compile(r"secret-(\w+)-\d+@example\.com")


def identity(who: str) -> tuple[str | None, str]:
    tenant, _, user = who.rpartition("/")
    return tenant or None, user


def session_ids(who: str) -> list[str]:
    tenant, user = identity(who)
    return [feature_session_id(name, user, tenant=tenant) for name in CONVERSATIONS[who]]


def owner_tag(who: str) -> str:
    return who.replace("/", "")


def attacks(victim: str, attacker: str) -> list[tuple[str, str, dict[str, Any]]]:
    """Requests (method, path, httpx keywords) the attacker sends, carrying the victim's names and ids."""
    tenant, user = identity(victim)
    mine = auth(attacker)
    raw_ids = session_ids(victim)
    every_field = {
        "session_id": raw_ids[0],
        "user": user,
        "tenant": tenant or "",
        "name": CONVERSATIONS[victim][0],
    }
    planted = [
        {
            **mine,
            "X-Session-Id": raw_ids[0],
            "X-User": user,
            "X-Tenant": tenant or "",
            "Cookie": f"session_id={raw_ids[0]}",
        }
    ]
    forged = [
        {},
        {"Authorization": f"Bearer {TOKENS[victim][:-1]}"},
        {"Authorization": f"Bearer {TOKENS[victim][:-1]}X"},
        {"Authorization": f"Bearer {TOKENS[victim]}x"},
        {"Authorization": f"Bearer {user}"},
        {"Authorization": f"Token {TOKENS[victim]}"},
        {"Authorization": TOKENS[victim]},
    ]
    found: list[tuple[str, str, dict[str, Any]]] = []
    names = [*CONVERSATIONS[victim], *raw_ids, *(f"{n}.." for n in CONVERSATIONS[victim])]
    tricks = [
        "..",
        "%2e%2e",
        "..%2F..%2F" + raw_ids[0],
        "support%2F..%2F" + raw_ids[0],
        "support%252F..",
        "support%00",
        "support\\..\\" + raw_ids[0],
        f"{raw_ids[0]}%3Fuser%3D{user}",
        "%2Fapi%2Fconversations%2F" + raw_ids[0],
    ]
    for name in names + tricks:
        for headers in [mine, *planted]:
            found += [
                ("GET", f"/api/conversations/{name}/messages", {"headers": headers, "params": every_field}),
                (
                    "POST",
                    f"/api/conversations/{name}/messages",
                    {"headers": headers, "json": {"message": "What's my email?", **every_field}},
                ),
            ]
    for name in [*raw_ids, *tricks]:
        found.append(("DELETE", f"/api/conversations/{name}", {"headers": mine, "params": every_field}))
    found.append(("GET", "/api/conversations", {"headers": mine, "params": every_field}))
    for headers in [mine, *planted]:  # the export is the caller's, whatever else the request names
        found.append(("GET", "/api/me/export", {"headers": headers, "params": every_field}))
    found.append(
        (
            "POST",
            f"/api/conversations/{CONVERSATIONS[victim][0]}/messages",
            {"headers": mine, "content": b"x" * (300 * 1024)},
        )
    )
    for headers in forged:
        for name in CONVERSATIONS[victim]:
            found += [
                (
                    "GET",
                    f"/api/conversations/{name}/messages",
                    {"headers": headers, "params": {"token": TOKENS[victim]}},
                ),
                (
                    "POST",
                    f"/api/conversations/{name}/messages",
                    {"headers": headers, "json": {"message": "What's my email?"}},
                ),
                ("DELETE", f"/api/conversations/{name}", {"headers": headers}),
            ]
        found.append(("GET", "/api/conversations", {"headers": headers}))
        found.append(("GET", "/api/me/export", {"headers": headers, "params": every_field}))
        found.append(("DELETE", "/api/me", {"headers": headers, "params": every_field}))
    return found


def facts_in(items: list[Any]) -> set[str]:
    return {m for item in items for m in SECRET.findall(message_text(item))}


async def test_no_user_reaches_another_users_conversations_by_any_route(db):
    async with serving(db) as client:
        for who, names in CONVERSATIONS.items():
            for k, name in enumerate(names):
                message = f"My email is secret-{owner_tag(who)}-{k}@example.com."
                response = await client.post(
                    f"/api/conversations/{name}/messages", json={"message": message}, headers=auth(who)
                )
                assert response.status_code == 200

        sent = 0
        for attacker, victim in itertools.permutations(CONVERSATIONS, 2):
            before = await stored(db)
            statuses = set()
            for method, path, kwargs in attacks(victim, attacker):
                response = await client.request(method, path, **kwargs)
                sent += 1
                statuses.add(response.status_code)
                leaked = set(SECRET.findall(response.text)) - {owner_tag(attacker)}
                assert not leaked, f"{attacker} read {leaked} with {method} {path}"
            after = await stored(db)
            for session_id in session_ids(victim):  # the victim's sessions: exactly as they were
                assert after[session_id] == before[session_id], f"{attacker} changed {session_id}"
            assert statuses <= {200, 401, 404, 405, 413, 422}, statuses
            assert 401 in statuses and 413 in statuses and 422 in statuses

    # On the store: every session belongs to one of the three callers and holds only their facts.
    sessions = await stored(db)
    owners = {(identity(who)[0], identity(who)[1]): owner_tag(who) for who in CONVERSATIONS}
    for session_id, items in sessions.items():
        parsed = parse_session_id(session_id)
        assert parsed.kind == "feature", session_id
        owner = owners[(parsed.tenant, parsed.user)]
        assert facts_in(items) <= {owner}, f"{session_id} holds {facts_in(items)}"
    for who in CONVERSATIONS:
        for session_id in session_ids(who):
            assert facts_in(sessions[session_id]) == {owner_tag(who)}
    assert sent > 500
