"""What a new user meets in the README's order: each stumble ends in one line that says what to do.

The store errors are met on the real local servers (PostgreSQL and Redis): a user the server does
not know, a database that does not exist, a Redis database index past the last, a wrong password.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from conftest import ROOT, Cli, subprocess_env
from stores_fixture import REDIS_URL, unavailable


def needs_server(kind: str, port: int) -> None:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    except OSError as exc:
        unavailable(kind, str(exc))


def one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


def test_the_stand_in_server_without_its_packages_is_one_line_naming_the_requirements_file(tmp_path: Path):
    hidden = tmp_path / "hidden"
    for module in ("fastapi", "uvicorn"):
        (hidden / module).mkdir(parents=True)
        (hidden / module / "__init__.py").write_text(f"raise ImportError('hidden', name={module!r})\n")
    env = subprocess_env() | {"PYTHONPATH": f"{hidden}:{ROOT}"}
    ran = subprocess.run(
        [sys.executable, "-m", "tools.standin_server", "--port", "0"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert ran.returncode == 1
    assert ran.stderr.strip().splitlines() == [
        "error: the stand-in server needs uvicorn; pip install -r requirements-serve.txt"
    ]


def test_sessions_list_after_the_demos_points_at_their_tenant(cli: Cli, tmp_path: Path):
    db = str(tmp_path / "s.db")
    assert cli("multi-user", "--db", db).code == 0
    listed = cli("sessions", "list", "--db", db)
    assert listed.code == 0
    assert listed.out.splitlines()[-1].endswith("(the demos keep theirs in tenant demo: --tenant demo)")
    assert listed.out.splitlines()[-1].startswith("0 sessions in ")
    theirs = cli("sessions", "list", "--db", db, "--tenant", "demo")
    assert "demo:user_alice" in theirs.out and "demo:user_bob" in theirs.out


def test_sessions_list_on_redis_after_the_demos_points_at_their_tenant(cli: Cli):
    needs_server("redis", 6379)
    url = f"{REDIS_URL}?key_prefix=test-{uuid.uuid4().hex[:8]}"
    try:
        assert cli("multi-user", "--store", url).code == 0
        listed = cli("sessions", "list", "--store", url)
        assert listed.code == 0
        assert listed.out.splitlines()[-1].endswith("(the demos keep theirs in tenant demo: --tenant demo)")
        empty = cli("sessions", "list", "--store", url, "--user", "nobody")
        assert empty.out.splitlines()[-1].startswith("0 session(s)")  # nothing of theirs either
    finally:
        cli("sessions", "delete", "--user", "alice", "--tenant", "demo", "--store", url)
        cli("sessions", "delete", "--user", "bob", "--tenant", "demo", "--store", url)


POSTGRES_REFUSALS = [
    (
        "postgresql://nobody@127.0.0.1:5432/test",
        ["refused the user", 'role "nobody" does not exist', "createuser nobody"],
    ),
    (
        "postgresql://postgres@127.0.0.1:5432/no_such_database",
        ["has no such database", 'database "no_such_database" does not exist', "createdb no_such_database"],
    ),
]


@pytest.mark.parametrize(("url", "says"), POSTGRES_REFUSALS, ids=["unknown user", "missing database"])
def test_a_postgresql_refusal_says_what_is_wrong_and_its_own_fix(cli: Cli, url: str, says: list[str]):
    needs_server("postgres", 5432)
    ran = cli("sessions", "list", "--store", url)
    line = one_line(ran.err)
    assert ran.code == 1
    for words in says:
        assert words in line
    assert "unreachable" not in line and "start the server" not in line


def test_a_redis_database_index_past_the_last_says_so_and_the_range(cli: Cli):
    needs_server("redis", 6379)
    ran = cli("sessions", "list", "--store", "redis://127.0.0.1:6379/99")
    line = one_line(ran.err)
    assert ran.code == 1
    assert "has no database 99" in line and "DB index is out of range" in line and "/0 to /15" in line
    assert "unreachable" not in line and "start Redis" not in line


def test_a_redis_refusing_the_user_or_password_says_so_without_the_password(cli: Cli):
    needs_server("redis", 6379)
    ran = cli("sessions", "list", "--store", "redis://bob:hunter2-pw@127.0.0.1:6379/15")
    line = one_line(ran.err)
    assert ran.code == 1
    assert "refused the user name or password" in line and "redis://USER:PASSWORD@" in line
    assert "hunter2" not in line and "unreachable" not in line


def test_a_wrong_postgresql_password_and_a_redis_wanting_one_each_have_their_fix():
    # The local PostgreSQL trusts every local user and the local Redis has no password: these two
    # refusals are the drivers' own exceptions, as their servers raise them.
    import asyncpg
    import redis.exceptions

    from multisessions.stores.diagnose import describe_store_failure

    url = "postgresql://ada:s3cret-pw@db.example/app"
    refused = asyncpg.exceptions.InvalidPasswordError('password authentication failed for user "ada"')
    line = describe_store_failure(refused, name="postgresql db", url=url, server="the server")
    assert "refused the password" in line and "password authentication failed" in line
    assert "s3cret" not in line and "unreachable" not in line
    wants = redis.exceptions.AuthenticationError("Authentication required.")  # NOAUTH, as redis-py words it
    line = describe_store_failure(wants, name="Redis r", url="redis://r:6379/0", server="Redis")
    assert "Redis wants a password" in line and "redis://:PASSWORD@" in line
    gone = ConnectionRefusedError(111, "Connect call failed")
    assert "is unreachable" in describe_store_failure(gone, name="Redis r", url="redis://r/0", server="Redis")
