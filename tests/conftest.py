"""Shared test setup: no key, no tracing, no network beyond this machine, a fresh folder each test."""

from __future__ import annotations

import ipaddress
import socket
import sys
from pathlib import Path

import pytest
from agents import set_tracing_disabled

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

set_tracing_disabled(True)

_real_connect = socket.socket.connect


def _loopback_only(self: socket.socket, address: object) -> object:
    """Let tests reach Redis and PostgreSQL on this machine, and nothing else."""
    if self.family in (socket.AF_INET, socket.AF_INET6):
        host = address[0]  # type: ignore[index]
        try:
            loopback = ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = host == "localhost"
        if not loopback:
            raise OSError(f"tests may not touch the network (tried {host})")
    return _real_connect(self, address)


@pytest.fixture(autouse=True)
def offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Every test: no API key, offline model, working directory a fresh temp folder."""
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9")  # a stray call fails at once, locally
    monkeypatch.setattr(socket.socket, "connect", _loopback_only)
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def db(tmp_path: Path) -> Path:
    """A SQLite file for this test's sessions."""
    return tmp_path / "sessions.db"


def subprocess_env() -> dict[str, str]:
    """Environment for child processes: no key, no reachable model server."""
    import os

    env = {k: v for k, v in os.environ.items() if k not in ("OPENAI_API_KEY", "SESSION_STORE_URL")}
    env["OPENAI_BASE_URL"] = "http://127.0.0.1:9"
    env["PYTHONPATH"] = str(ROOT)
    return env


from stores_fixture import store  # noqa: E402,F401  (the per-store fixture, for every test module)
