"""Store URLs: our own query options, and a form that is safe to print."""

from __future__ import annotations

import importlib
import re
from urllib.parse import parse_qsl, quote, unquote, unquote_plus, urlencode, urlsplit, urlunsplit

INSTALL_HINT = "install the store drivers: pip install -r requirements-stores.txt"


def split_options(url: str, names: tuple[str, ...]) -> tuple[str, dict[str, str]]:
    """Take our own query options out of a URL, leaving the driver's."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)  # "?ttl=" is a ttl, and a wrong one
    ours = {k: v for k, v in query if k in names}
    rest = [(k, v) for k, v in query if k not in names]
    return urlunsplit(parts._replace(query=urlencode(rest))), ours


def redact_url(url: str) -> str:
    """``url`` without anything that can hold a secret: user info and query string are hidden.

    Drivers disagree on where a password ends (SQLAlchemy reads ``pa#ss`` in
    ``postgresql://u:pa#ss@h/db`` as the password; ``urlsplit`` sees none), so everything up to
    the last ``@`` goes, whatever characters it holds, and so does everything after ``?`` or ``#``.
    """
    scheme, sep, rest = url.partition("://")
    if not sep:
        return "(a URL with no scheme://)"
    at = rest.rfind("@")
    if at >= 0:
        rest = "***@" + rest[at + 1 :]
    return f"{scheme}://{re.split('[?#]', rest, maxsplit=1)[0]}"


_SECRET_KEYS = ("pass", "secret", "token", "auth", "key")
_SHORT = 4
"""Secrets shorter than this are replaced only where they stand alone (not inside words)."""


def _sqlalchemy_password(url: str) -> str:
    """The password as SQLAlchemy reads ``url``, or '' (no SQLAlchemy, or not a URL it reads).

    Imported here, on an error path, rather than at start-up: SQLAlchemy is slow to import,
    and every command (the SQLite default included) would pay it.
    """
    try:
        engine = importlib.import_module("sqlalchemy.engine")
        return str(engine.make_url(url).password or "")
    except Exception:  # missing, or not a URL SQLAlchemy reads: the other readings remain
        return ""


def url_secrets(url: str) -> set[str]:
    """Every string in ``url`` that some parser could take as a password, in every spelling.

    The password as SQLAlchemy reads it (``make_url``), as redis-py reads it (``urlparse``, then
    unquoted), everything between the first ``:`` and the last ``@`` of the authority (the
    conservative reading), its pieces between ``/``, ``?``, ``#`` and ``@``, and the values of
    query options named like a secret (``?password=``), each raw and percent-decoded.
    """
    found: set[str] = set()
    _, sep, rest = url.partition("://")
    if sep:
        at = rest.rfind("@")
        if at >= 0:
            userinfo = rest[:at]
            found.add(userinfo.partition(":")[2])
            found.add(userinfo.split("@", 1)[0].partition(":")[2])
    try:
        parts = urlsplit(url)
        found.add(parts.password or "")
        for name, value in parse_qsl(parts.query) + parse_qsl(parts.fragment):
            if any(word in name.lower() for word in _SECRET_KEYS):
                found.add(value)
    except ValueError:
        pass
    found.add(_sqlalchemy_password(url))
    for value in list(found):
        found.update(re.split("[/?#@]", value))
    spelled = set()
    for value in found:
        spelled.update({value, unquote(value), unquote_plus(value), quote(value, safe="")})
    return {value for value in spelled if value}


def scrub(text: str, url: str | None) -> str:
    """``text`` (an error message) with every secret of ``url`` replaced by ``***``.

    Secrets of 4 characters or more are replaced wherever they appear; shorter ones (a tiny
    password, or the tail of one after a ``#`` or ``/``) only where they stand alone, so that
    the words around them stay readable.
    """
    if not url:
        return text
    for secret in sorted(url_secrets(url), key=len, reverse=True):
        if len(secret) >= _SHORT:
            text = text.replace(secret, "***")
        else:
            text = re.sub(rf"(?<![A-Za-z0-9]){re.escape(secret)}(?![A-Za-z0-9])", "***", text)
    return text
