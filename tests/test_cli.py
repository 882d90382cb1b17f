"""The command line, in process: demo selection, help, and one clear line for every mistake."""

from __future__ import annotations

import http.server
import sqlite3
import threading
from collections.abc import Iterator

import pytest

from conftest import NOWHERE, Cli
from multisessions import Settings


def stored_messages(db) -> int:
    with sqlite3.connect(db) as conn:
        return int(conn.execute("SELECT count(*) FROM agent_messages").fetchone()[0])


def test_help_lists_every_demo(cli: Cli):
    result = cli("--help")
    assert result.code == 0
    for name in ("multi-user", "context", "shared", "naming"):
        assert name in result.out


def test_unknown_demo_lists_the_valid_ones_and_exits_2(cli: Cli):
    result = cli("nope")
    assert result.code == 2
    assert result.err_lines == [
        "error: unknown demo 'nope'; choose from: multi-user, context, shared, naming, history-cap, refund, "
        "memory (see --help)"
    ]


def test_one_demo_runs_by_name_and_leaves_only_its_sessions(cli: Cli, tmp_path):
    db = tmp_path / "x.db"
    result = cli("naming", "--db", str(db))
    assert result.code == 0, result.err
    assert "Demo 4" in result.out and "Demo 1" not in result.out
    with sqlite3.connect(db) as conn:
        ids = {row[0] for row in conn.execute("SELECT session_id FROM agent_sessions")}
    assert ids == {
        "demo:user_123",
        "demo:chat_feature_user_123",
        "demo:thread_abc123",
        "demo:user_123_20241215",
    }


@pytest.mark.parametrize(
    "db, expected",
    [
        (".", "is a directory"),
        ("missing/folder/x.db", "does not exist"),
    ],
)
def test_unusable_db_path_is_one_line(cli: Cli, db, expected, tmp_path):
    result = cli("multi-user", "--db", db)  # relative to tmp_path, the working directory
    assert result.code == 1
    assert len(result.err_lines) == 1 and expected in result.err
    assert not (tmp_path / "missing").exists()


def test_corrupt_database_is_one_line_and_left_untouched(cli: Cli, tmp_path):
    bad = tmp_path / "bad.db"
    bad.write_bytes(b"this is not sqlite" * 100)
    result = cli("--db", str(bad))
    assert result.code == 1
    assert len(result.err_lines) == 1 and "not a usable SQLite database" in result.err
    assert bad.read_bytes() == b"this is not sqlite" * 100


def test_unreachable_model_server_is_one_line_with_a_fix_and_no_orphan(cli: Cli, tmp_path):
    db = tmp_path / "s.db"
    settings = Settings(api_key="sk-test-not-a-key", base_url=NOWHERE, max_retries=0)
    result = cli("multi-user", "--db", str(db), settings=settings)
    assert result.code == 1
    assert len(result.err_lines) == 1
    assert "APIConnectionError" in result.err_lines[0] and "--offline" in result.err_lines[0]
    assert stored_messages(db) == 0


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


@pytest.fixture
def refusing_server() -> Iterator[str]:
    """The base URL of a local server that answers 401 to every request."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Refuses)
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}/v1"
    server.shutdown()


def test_a_bad_key_is_one_line_naming_the_key_and_leaves_no_orphan(cli: Cli, tmp_path, refusing_server):
    db = tmp_path / "s.db"
    result = cli(
        "multi-user", "--db", str(db), settings=Settings(api_key="sk-wrong", base_url=refusing_server)
    )
    assert result.code == 1
    assert len(result.err_lines) == 1
    assert "AuthenticationError" in result.err_lines[0] and "check OPENAI_API_KEY" in result.err_lines[0]
    assert stored_messages(db) == 0


@pytest.mark.parametrize("hostile", ["\x1e", "a\nb", "\x1b[2J", "x\u2028y"])
def test_a_hostile_argument_in_an_error_stays_one_line_and_drives_no_terminal(cli: Cli, hostile):
    # argparse quotes unrecognised arguments as they are; the error line must not carry them raw.
    ran = cli("sessions", "list", hostile)
    assert ran.code == 2
    assert len(ran.err.strip().splitlines()) == 1 and ran.err.startswith("error: ")
    assert "\x1b" not in ran.err and "\x1e" not in ran.err
