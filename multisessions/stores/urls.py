"""Store URLs: our own query options, and a form that is safe to print."""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

INSTALL_HINT = "install the store drivers: pip install -r requirements-stores.txt"


def split_options(url: str, names: tuple[str, ...]) -> tuple[str, dict[str, str]]:
    """Take our own query options out of a URL, leaving the driver's."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query)
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
