"""Encryption at rest: the SDK's ``EncryptedSession`` around any store's sessions, a key per tenant.

One secret (``SESSION_ENCRYPTION_KEY``) gives each tenant its own key (HMAC-SHA256 of the secret
and the tenant's name; ids with no tenant get a fixed label of their own), and the SDK derives a
key per session id from that. A copied SQLite file, a Redis dump or a PostgreSQL backup holds
only Fernet tokens: no message text, no tool call, no agent output. Session ids, item counts,
timestamps and the last agent's name stay readable: the inventory needs them.

``EncryptedSession`` hides items older than its ``ttl`` (600 s by default) without deleting
them: a conversation would silently forget everything said ten minutes ago. ``NEVER_HIDE`` is
passed instead; idle sessions are removed by ``sessions expire`` (or Redis ``?ttl=``), not hidden.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from collections.abc import Callable, Iterable
from dataclasses import replace
from typing import Any

from agents.memory import Session

from multisessions.errors import ConfigError, StoreError, WrongKey
from multisessions.locks import LeaseBackend
from multisessions.naming import memory_scope, scope_parts, tenant_label
from multisessions.sdk_private import encrypted_envelopes
from multisessions.stores.base import (
    ConversationRow,
    SessionInfo,
    SessionStore,
    Summary,
    TurnIO,
    TurnStart,
    TurnWrite,
    remember_store,
)

try:
    from agents.extensions.memory import EncryptedSession
    from cryptography.fernet import Fernet, InvalidToken
except ImportError:  # no ``cryptography``: EncryptedStore() says so in one line
    EncryptedSession = None  # type: ignore[assignment,misc]

NEVER_HIDE = 100 * 365 * 24 * 3600
"""The ``ttl`` given to ``EncryptedSession``: a hundred years, so no stored item is ever hidden."""
MIN_SECRET_CHARS = 32
_CONTEXT = b"multisessions tenant key v1\x00"


def check_secret(secret: str) -> str:
    """A secret long enough to be a key (``ConfigError`` otherwise): HKDF does not harden passwords."""
    if len(secret) < MIN_SECRET_CHARS:
        raise ConfigError(
            f"SESSION_ENCRYPTION_KEY has {len(secret)} characters, fewer than {MIN_SECRET_CHARS}; make one: "
            'python -c "import secrets; print(secrets.token_urlsafe(32))"'
        )
    return secret


def tenant_key(secret: str, session_id: str) -> str:
    """The Fernet key of the tenant ``session_id`` belongs to (no tenant: a label of its own)."""
    return key_of_tenant(secret, tenant_label(session_id))


def key_of_tenant(secret: str, tenant: str | None) -> str:
    """The Fernet key of ``tenant`` (None: the ids with no tenant)."""
    label = b"no-tenant" if tenant is None else b"tenant:" + tenant.encode("utf-8")
    digest = hmac.new(secret.encode("utf-8"), _CONTEXT + label, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).decode("ascii")


def wrong_key(session_id: str) -> WrongKey:
    """The one line for a session this key cannot read."""
    return WrongKey(
        f"session {session_id!r} cannot be decrypted with this SESSION_ENCRYPTION_KEY (it was written "
        "with another key, or with none); set the key it was written with. Nothing was changed"
    )


def refuse_encrypted(session_id: str, items: list[Any]) -> None:
    """``WrongKey`` if ``items``, read without a key, hold an encrypted item: the session was
    written with ``SESSION_ENCRYPTION_KEY``, and without it would be sent to a model as tokens and
    continued in plaintext."""
    if any(isinstance(item, dict) and item.get("__enc__") == 1 and "payload" in item for item in items):
        raise WrongKey(
            f"session {session_id!r} is encrypted and no SESSION_ENCRYPTION_KEY is set; set the key "
            "it was written with. Nothing was changed"
        )


_SEALED = re.compile(r"gAAAAA[0-9A-Za-z_-]{40,}={0,2}")
"""A Fernet token (its version byte 0x80 and timestamp, in URL-safe base64): a value written encrypted."""


def refuse_sealed(whose: str, values: Iterable[str]) -> None:
    """``WrongKey`` if ``values`` (memory, a summary, side effects), read without a key, were written
    encrypted: shown or sent to a model they would be tokens, not the user's data."""
    if any(isinstance(value, str) and _SEALED.fullmatch(value) for value in values):
        raise WrongKey(
            f"{whose} is encrypted and no SESSION_ENCRYPTION_KEY is set; set the key it was written "
            "with. Nothing was changed"
        )


if EncryptedSession is not None:

    class CheckedSession(EncryptedSession):
        """``EncryptedSession`` that refuses, in one line, what it cannot decrypt.

        The SDK's class skips an item it cannot decrypt: under a wrong key a conversation reads as
        empty, the model answers without it, and the next turn is appended under the new key (the
        session split in two). Here reading such an item raises ``WrongKey``, and so does appending
        to a session whose latest item this key cannot read.
        """

        _readable = False  # set once a read of this session succeeded

        def _unwrap(self, item: Any) -> Any:
            # NEVER_HIDE as ttl: InvalidToken means another key (or tampering), never age.
            found = super()._unwrap(item)
            if found is None:
                raise wrong_key(self.session_id)
            return found

        async def get_items(self, limit: int | None = None, *, wrapper: Any = None) -> list[Any]:
            items = await super().get_items(limit, wrapper=wrapper)
            self._readable = True
            return items

        async def add_items(self, items: list[Any], *, wrapper: Any = None) -> None:
            if not self._readable:
                await self.get_items(1, wrapper=wrapper)  # the latest item: WrongKey if unreadable
            await super().add_items(items, wrapper=wrapper)


class EncryptedStore:
    """A store whose sessions are encrypted at rest; everything else is the wrapped store's."""

    def __init__(self, store: SessionStore, secret: str) -> None:
        if EncryptedSession is None:
            raise StoreError("encryption needs the cryptography package: pip install cryptography")
        self.store = store
        self._secret = check_secret(secret)
        self.name = f"{store.name}, encrypted"

    @property
    def leases(self) -> LeaseBackend:
        return self.store.leases

    def open(self, session_id: str) -> Session:
        # EncryptedSession only calls the Session protocol's methods; any store's session has them.
        inner: Any = self.store.open(session_id)
        session = CheckedSession(session_id, inner, tenant_key(self._secret, session_id), ttl=NEVER_HIDE)
        return remember_store(session, self)

    def open_read_only(self, session_id: str) -> Session:
        """The wrapped store's read-only session where it has one, decrypted (never the raw one)."""
        reader = getattr(self.store, "open_read_only", self.store.open)
        inner: Any = reader(session_id)
        return CheckedSession(session_id, inner, tenant_key(self._secret, session_id), ttl=NEVER_HIDE)

    def turn_io(self, session: Session) -> TurnIO | None:
        """The wrapped store's short path, encrypting what it writes and decrypting what it reads,
        for a session this store opened: a turn's items, agent and paused turn land in one write."""
        if EncryptedSession is None or type(session) is not CheckedSession:
            return None
        envelopes = encrypted_envelopes(session)
        if envelopes is None:
            return None  # an SDK without these: turns take the session's own writes
        wrap, unwrap = envelopes
        inner = self.store.turn_io(session.underlying_session)
        if inner is None:
            return None
        scope = memory_scope(session.session_id)
        memory_fernet = None if scope is None else self._scope_fernet(scope)
        return EncryptedTurnIO(
            inner, wrap, unwrap, self._fernet(session.session_id), session.session_id, memory_fernet
        )

    async def conversation_page(
        self, scope: str, limit: int, after: tuple[float, str] | None = None
    ) -> list[ConversationRow]:
        """The wrapped store's page, titles decrypted (tags are the app's metadata: plaintext)."""
        rows = await self.store.conversation_page(scope, limit, after)  # type: ignore[attr-defined]
        return [
            replace(
                row,
                title=self.unseal(row.session_id, row.title) if row.title else "",
            )
            for row in rows
        ]

    async def index_conversation(self, scope: str, row: ConversationRow) -> bool:
        sealed = self.seal(row.session_id, row.title) if row.title else ""
        return bool(await self.store.index_conversation(scope, replace(row, title=sealed)))  # type: ignore[attr-defined]

    def _fernet(self, session_id: str) -> Any:
        return Fernet(tenant_key(self._secret, session_id).encode("ascii"))

    def seal(self, session_id: str, text: str) -> str:
        """``text`` encrypted under ``session_id``'s key, as its items are (what else is kept of it)."""
        return seal_text(self._fernet(session_id), text)

    def unseal(self, session_id: str, token: str) -> str:
        """What ``seal`` encrypted; ``StoreError`` (one line) if this key cannot read it."""
        return open_text(self._fernet(session_id), token, session_id)

    async def save_pending(self, session_id: str, state: str | None) -> None:
        # A paused turn holds the conversation too: it is encrypted like the items.
        token = None if state is None else seal_text(self._fernet(session_id), state)
        await self.store.save_pending(session_id, token)

    async def load_pending(self, session_id: str) -> str | None:
        token = await self.store.load_pending(session_id)
        if token is None:
            return None
        try:
            return str(self._fernet(session_id).decrypt(token.encode("ascii")).decode("utf-8"))
        except InvalidToken:
            raise WrongKey(
                f"the paused turn on {session_id!r} cannot be decrypted with this SESSION_ENCRYPTION_KEY"
            ) from None

    async def list_pending(self) -> list[str]:
        return await self.store.list_pending()

    async def check(self) -> None:
        await self.store.check()

    async def list_sessions(self) -> list[SessionInfo]:
        return await self.store.list_sessions()

    async def delete(self, session_id: str) -> int:
        return await self.store.delete(session_id)

    def _effects_fernet(self) -> Any:
        digest = hmac.new(self._secret.encode("utf-8"), _CONTEXT + b"side effects", hashlib.sha256).digest()
        return Fernet(base64.urlsafe_b64encode(digest))

    def _open_effect(self, key: str, token: str) -> str:
        try:
            return str(self._effects_fernet().decrypt(token.encode("ascii")).decode("utf-8"))
        except (InvalidToken, ValueError):
            raise WrongKey(
                f"the side effect {key!r} cannot be decrypted with this SESSION_ENCRYPTION_KEY; "
                "set the key it was written with"
            ) from None

    async def record_once(self, key: str, value: str) -> tuple[str, bool]:
        # A side effect's value (an order id) is the conversation's data: encrypted like the items.
        token = seal_text(self._effects_fernet(), value)
        recorded, fresh = await self.store.record_once(key, token)
        return (value if fresh else self._open_effect(key, recorded)), fresh

    async def list_effects(self, prefix: str = "") -> dict[str, str]:
        sealed = await self.store.list_effects(prefix)
        return {key: self._open_effect(key, token) for key, token in sealed.items()}

    async def forget_effects(self, prefix: str) -> int:
        return await self.store.forget_effects(prefix)

    async def effect_keys(self, prefix: str = "") -> list[str]:
        return await self.store.effect_keys(prefix)  # keys are not sealed: nothing to decrypt

    async def load_last_agent(self, session_id: str) -> str | None:
        return await self.store.load_last_agent(session_id)

    async def save_last_agent(self, session_id: str, agent_name: str) -> None:
        await self.store.save_last_agent(session_id, agent_name)

    def _scope_fernet(self, scope: str) -> Any:
        return Fernet(key_of_tenant(self._secret, scope_parts(scope)[0]).encode("ascii"))

    async def load_memory(self, scope: str) -> dict[str, str]:
        sealed = await self.store.load_memory(scope)
        return open_memory(self._scope_fernet(scope), sealed, scope_parts(scope)[1])

    async def save_memory(self, scope: str, facts: dict[str, str]) -> None:
        await self.store.save_memory(scope, seal_memory(self._scope_fernet(scope), facts))

    async def forget_memory(self, scope: str) -> int:
        return await self.store.forget_memory(scope)

    async def summary_state(self, session_id: str) -> tuple[Summary | None, int]:
        sealed, count = await self.store.summary_state(session_id)
        if sealed is None:
            return None, count
        return Summary(open_text(self._fernet(session_id), sealed.text, session_id), sealed.covered), count

    async def save_summary(self, session_id: str, summary: Summary) -> None:
        sealed = seal_text(self._fernet(session_id), summary.text)
        await self.store.save_summary(session_id, Summary(sealed, summary.covered))

    async def memory_scopes(self) -> dict[str, int]:
        return await self.store.memory_scopes()

    async def close(self) -> None:
        await self.store.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)  # db_path, pool, client, engine: the wrapped store's


class EncryptedTurnIO:
    """``TurnIO`` of an encrypted session: the wrapped store's, with items and paused turns
    encrypted as ``EncryptedSession`` and ``EncryptedStore`` encrypt them."""

    def __init__(
        self,
        inner: TurnIO,
        wrap: Callable[[Any], Any],
        unwrap: Callable[[Any], Any],
        fernet: Any,
        session_id: str,
        memory_fernet: Any = None,
    ) -> None:
        self.inner = inner
        self._memory_fernet = memory_fernet
        self._wrap = wrap
        self._unwrap = unwrap
        self._fernet = fernet
        self._session_id = session_id

    @property
    def seconds(self) -> float:
        return self.inner.seconds

    @seconds.setter
    def seconds(self, value: float) -> None:
        self.inner.seconds = value

    async def try_acquire(self, session_id: str, owner: str, seconds: float) -> bool:
        return await self.inner.try_acquire(session_id, owner, seconds)

    async def renew(self, session_id: str, owner: str, seconds: float) -> bool:
        return await self.inner.renew(session_id, owner, seconds)

    async def release(self, session_id: str, owner: str) -> None:
        await self.inner.release(session_id, owner)

    async def request_interrupt(self, session_id: str) -> None:
        await self.inner.request_interrupt(session_id)

    async def interrupted(self, held: list[tuple[str, str]]) -> list[str]:
        return await self.inner.interrupted(held)

    async def begin(self, session_id: str, owner: str, seconds: float, limit: int | None) -> TurnStart | None:
        start = await self.inner.begin(session_id, owner, seconds, limit)
        if start is None:
            return None
        try:  # a CheckedSession's unwrap raises WrongKey itself; the SDK's returns None
            history = [self._unwrap(item) for item in start.history]
        except WrongKey:
            await self.inner.release(session_id, owner)
            raise
        if any(item is None for item in history):
            await self.inner.release(session_id, owner)
            raise wrong_key(session_id)
        memory = start.memory
        if memory and self._memory_fernet is not None:
            try:
                memory = open_memory(self._memory_fernet, memory, session_id)
            except StoreError:
                await self.inner.release(session_id, owner)
                raise
        return replace(start, history=history, memory=memory)

    async def commit(self, session_id: str, owner: str, write: TurnWrite) -> bool:
        pending = write.pending
        if isinstance(pending, str):
            pending = seal_text(self._fernet, pending)
        memory = write.memory
        if memory and self._memory_fernet is not None:
            memory = seal_memory(self._memory_fernet, memory)
        summary = write.summary
        if summary is not None:
            summary = Summary(seal_text(self._fernet, summary.text), summary.covered)
        title = write.title  # user text: sealed like the items
        if title:
            title = seal_text(self._fernet, title)
        sealed = TurnWrite(
            [self._wrap(item) for item in write.items], write.agent, pending, memory, summary, title
        )
        return await self.inner.commit(session_id, owner, sealed)


def seal_memory(fernet: Any, facts: dict[str, str]) -> dict[str, str]:
    """Each fact's value encrypted (the fact names stay readable, as the inventory lists them)."""
    return {fact: seal_text(fernet, value) for fact, value in facts.items()}


def open_memory(fernet: Any, sealed: dict[str, str], whose: str) -> dict[str, str]:
    """The values ``seal_memory`` encrypted; ``StoreError`` (one line) if this key cannot read them."""
    try:
        return {fact: fernet.decrypt(token.encode("ascii")).decode("utf-8") for fact, token in sealed.items()}
    except (InvalidToken, UnicodeError, ValueError):
        raise StoreError(
            f"the memory of {whose!r} cannot be decrypted with this SESSION_ENCRYPTION_KEY; "
            "use the key it was written with"
        ) from None


def seal_text(fernet: Any, text: str) -> str:
    """``text`` encrypted with ``fernet``, as stored: what ``open_text`` reads back."""
    return str(fernet.encrypt(text.encode("utf-8")).decode("ascii"))


def open_text(fernet: Any, token: str, whose: str) -> str:
    """Text encrypted with ``fernet``; ``StoreError`` (one line) if this key cannot read it."""
    try:
        return str(fernet.decrypt(token.encode("ascii")).decode("utf-8"))
    except (InvalidToken, UnicodeError, ValueError):
        raise StoreError(
            f"{whose!r} holds data this SESSION_ENCRYPTION_KEY cannot decrypt; "
            "use the key it was written with"
        ) from None
