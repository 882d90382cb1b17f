"""The README and the documentation site's pages, read as blocks: what the tests run and compare.

A fenced block is ``bash`` (commands a test runs, one a line), ``text`` (output a command on the
same page prints), ``python`` (code included from a file with ``--8<--``) or ``console`` (long or
server commands, each listed in tests/test_docs.py with the test that runs them).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from conftest import ROOT

DOCS = ROOT / "docs"
README = ROOT / "README.md"


@dataclass(frozen=True)
class Page:
    """One Markdown file and its fenced blocks, in order."""

    path: Path
    blocks: tuple[tuple[str, str], ...]

    @property
    def name(self) -> str:
        return self.path.relative_to(ROOT).as_posix()

    def lines(self, lang: str) -> list[str]:
        """The non-blank lines of every block in ``lang``, in page order."""
        bodies = [body for kind, body in self.blocks if kind == lang]
        return [line for body in bodies for line in body.splitlines() if line.strip()]


def read_page(path: Path) -> Page:
    text = path.read_text()
    return Page(path, tuple(re.findall(r"^```(\w+)\n(.*?)^```", text, flags=re.S | re.M)))


DOC_PAGES = [read_page(path) for path in sorted(DOCS.rglob("*.md"))]
PAGES = [read_page(README), *DOC_PAGES]
"""The README first, then every page of the site."""

SHELL_LINES = [line for page in PAGES for line in page.lines("bash")]
"""Every command the README and the site show, in order."""
