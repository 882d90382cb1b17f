"""One line for a store server that refused us: what is wrong, in the server's words, and its own fix.

A server that is not running, a user it does not know, a wrong password, a database that does
not exist and a Redis database index past the server's last one each need a different fix:
"is unreachable; start the server" is right only for the first. The driver's words are kept
(first line only, the URL's secrets scrubbed), so the line also says what the server said.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from multisessions.stores.urls import scrub

FIX_THE_URL = "fix --store / SESSION_STORE_URL"

# PostgreSQL's error codes (SQLSTATE) for a connection it refused, and the fix for each.
_POSTGRES: dict[str, tuple[str, str]] = {
    "28000": (
        "refused the user",
        "name a user it knows in the URL (postgresql://USER@host/db), or create it (createuser {user})",
    ),
    "28P01": ("refused the password", "put the user's password in the URL, percent-encoded"),
    "3D000": (
        "has no such database",
        "create it (createdb {database}) or name an existing database in the URL",
    ),
    "42501": ("refused the user access", "grant the user access to the database"),
    "53300": ("has no free connection", "try again later or raise max_connections on the server"),
    "57P03": ("is starting up or shutting down", "try again in a moment"),
}


def describe_store_failure(exc: BaseException, *, name: str, url: str, server: str) -> str:
    """The one line for ``exc``, raised while ``name`` (the store, as printed) connected to ``url``.

    ``server`` names the software for the fallback ("Redis", "the server").
    """
    words = _first_line(exc, url)
    sqlstate = _sqlstate(exc)
    parts = urlsplit(url)
    if sqlstate in _POSTGRES:
        what, fix = _POSTGRES[sqlstate]
        user, database = parts.username or "USER", parts.path.strip("/") or "NAME"
        fix = scrub(fix.format(user=user, database=database), url)  # never a password, whatever the URL
        return f"{name} {what} ({words}); {fix}: {FIX_THE_URL}"
    text = str(exc)
    classes = {cls.__name__ for cls in type(exc).__mro__}
    if "DB index is out of range" in text:
        index = parts.path.strip("/") or "0"
        return (
            f"{name} has no database {index} ({words}); Redis has databases 0 to 15 unless its "
            f"`databases` setting says more: use /0 to /15 in the URL, {FIX_THE_URL}"
        )
    if "NOAUTH" in text or "Authentication required" in text:  # redis-py words NOAUTH so
        return (
            f"{name}: Redis wants a password ({words}); put it in the URL "
            f"(redis://:PASSWORD@host:6379/0, percent-encoded): {FIX_THE_URL}"
        )
    if "WRONGPASS" in text or "AuthenticationError" in classes:
        return (
            f"{name} refused the user name or password ({words}); put the right ones in the URL "
            f"(redis://USER:PASSWORD@host:6379/0, percent-encoded): {FIX_THE_URL}"
        )
    if "NOPERM" in text or classes & {"NoPermissionError", "AuthorizationError"}:
        return f"{name}: the Redis user may not run what the store needs ({words}); grant it in the ACL"
    return f"{name} is unreachable ({words}); start {server} (see README) or {FIX_THE_URL}"


def _first_line(exc: BaseException, url: str) -> str:
    """The driver's words: its first line, without the URL's secrets or SQLAlchemy's class prefix."""
    text = str(exc).strip()
    line = text.splitlines()[0] if text else ""
    if line.startswith("(") and ") " in line:  # "(sqlalchemy.dialects.postgresql.asyncpg.Error) ..."
        line = line.split(") ", 1)[1]
    cause = _driver_error(exc)
    return f"{type(cause).__name__}: {scrub(line, url)}" if line else type(cause).__name__


def _driver_error(exc: BaseException) -> BaseException:
    """The driver's own exception under SQLAlchemy's wrappers (asyncpg's, with its class name)."""
    seen: BaseException | None = exc
    for _ in range(5):
        if seen is None:
            break
        if getattr(type(seen), "sqlstate", None) or type(seen).__module__.startswith(("asyncpg", "redis")):
            return seen
        seen = seen.__cause__ or getattr(seen, "orig", None)
    return exc


def _sqlstate(exc: BaseException) -> str | None:
    """PostgreSQL's error code for ``exc``, from the exception or one it wraps."""
    seen: BaseException | None = exc
    for _ in range(5):
        if seen is None:
            return None
        code = getattr(seen, "sqlstate", None)
        if isinstance(code, str):
            return code
        seen = seen.__cause__ or getattr(seen, "orig", None)
    return None
