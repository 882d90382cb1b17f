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
from typing import Any

from agents.memory import Session

from multisessions.errors import ConfigError, StoreError, WrongKey
from multisessions.locks import LeaseBackend
from multisessions.naming import tenant_label
from multisessions.stores.base import SessionInfo, SessionStore, TurnIO, remember_store

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
    tenant = tenant_label(session_id)
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
        """No short path yet: turns go through the session and the leases."""
        return None

    def _fernet(self, session_id: str) -> Any:
        return Fernet(tenant_key(self._secret, session_id).encode("ascii"))

    async def save_pending(self, session_id: str, state: str | None) -> None:
        # A paused turn holds the conversation too: it is encrypted like the items.
        token = None if state is None else self._fernet(session_id).encrypt(state.encode("utf-8")).decode()
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

    async def load_last_agent(self, session_id: str) -> str | None:
        return await self.store.load_last_agent(session_id)

    async def save_last_agent(self, session_id: str, agent_name: str) -> None:
        await self.store.save_last_agent(session_id, agent_name)

    async def close(self) -> None:
        await self.store.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)  # db_path, pool, client, engine: the wrapped store's
