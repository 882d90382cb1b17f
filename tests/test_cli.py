"""The command line: demo selection, help, and one clear line for every mistake."""

from __future__ import annotations

import http.server
import sqlite3
import subprocess
import sys
import threading

import pytest

from conftest import ROOT, subprocess_env


def run_cli(*args: str, cwd=None, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``python agent.py ARGS`` offline, with ``env`` added to the test environment."""
    return subprocess.run(
        [sys.executable, str(ROOT / "agent.py"), *args],
        cwd=cwd,
        env=subprocess_env() | (env or {}),
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_help_lists_every_demo():
    result = run_cli("--help")
    assert result.returncode == 0
    for name in ("multi-user", "context", "shared", "naming"):
        assert name in result.stdout


def test_unknown_demo_lists_the_valid_ones_and_exits_2():
    result = run_cli("nope")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: unknown demo 'nope'; choose from: multi-user, context, shared, naming, history-cap, refund"
        " (see --help)"
    ]


def test_one_demo_runs_by_name(tmp_path):
    result = run_cli("naming", "--db", str(tmp_path / "x.db"))
    assert result.returncode == 0, result.stderr
    assert "Demo 4" in result.stdout and "Demo 1" not in result.stdout


@pytest.mark.parametrize(
    "db, expected",
    [
        (".", "is a directory"),
        ("missing/folder/x.db", "does not exist"),
    ],
)
def test_unusable_db_path_is_one_line(db, expected, tmp_path):
    result = run_cli("multi-user", "--db", db, cwd=tmp_path)
    assert result.returncode == 1
    assert len(result.stderr.strip().splitlines()) == 1 and expected in result.stderr
    assert "Traceback" not in result.stderr


def test_corrupt_database_is_one_line_and_left_untouched(tmp_path):
    bad = tmp_path / "bad.db"
    bad.write_bytes(b"this is not sqlite" * 100)
    result = run_cli("--db", str(bad))
    assert result.returncode == 1
    assert "not a usable SQLite database" in result.stderr and "Traceback" not in result.stderr
    assert bad.read_bytes() == b"this is not sqlite" * 100


def test_unreachable_model_server_is_one_line_with_a_fix_and_no_orphan(tmp_path):
    db = tmp_path / "s.db"
    key = {"OPENAI_API_KEY": "sk-test-not-a-key", "OPENAI_BASE_URL": "http://127.0.0.1:9"}
    result = run_cli("multi-user", "--db", str(db), env=key)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "APIConnectionError" in lines[0] and "--offline" in lines[0]
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT count(*) FROM agent_messages").fetchone() == (0,)


class _Refuses(http.server.BaseHTTPRequestHandler):
    """An OpenAI-compatible server on localhost that refuses every key, as api.openai.com would."""

    def do_POST(self):  # noqa: N802 (the http.server API)
        body = b'{"error": {"message": "Incorrect API key provided", "type": "invalid_request_error"}}'
        self.send_response(401)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def test_a_bad_key_is_one_line_naming_the_key_and_leaves_no_orphan(tmp_path):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Refuses)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    db = tmp_path / "s.db"
    key = {"OPENAI_API_KEY": "sk-wrong", "OPENAI_BASE_URL": f"http://127.0.0.1:{server.server_port}/v1"}
    try:
        result = run_cli("multi-user", "--db", str(db), env=key)
    finally:
        server.shutdown()
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "AuthenticationError" in lines[0] and "check OPENAI_API_KEY" in lines[0]
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT count(*) FROM agent_messages").fetchone() == (0,)
