"""tools/bench.py: the comparison runs end to end, and the recommended pattern holds under a small
descriptor limit where the naive one fails."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys

import pytest
from agents.extensions.memory import SQLAlchemySession

from conftest import subprocess_env
from multisessions import open_store, user_session_id
from tools import bench

pytestmark = pytest.mark.slow  # starts processes or servers: python -m pytest -m slow

RESULT = re.compile(
    r"^RESULT users=(\d+) turns=(\d+) store=\S+ turns_per_s=[\d.]+ floor_ratio=[\d.]+ "
    r"p50_ms=[\d.]+ p99_ms=[\d.]+ "
    r"peak_fds=(\d+) errors=(\d+) leaks=(\d+)$"
)


def table_row(stdout: str, pattern: str) -> dict[str, str]:
    """One pattern's row of the printed table, by column name."""
    lines = stdout.splitlines()
    header = next(line for line in lines if line.startswith("| pattern |"))
    row = next(line for line in lines if line.startswith(f"| {pattern} |"))
    names = [cell.strip() for cell in header.strip("|").split("|")]
    return dict(zip(names, (cell.strip() for cell in row.strip("|").split("|")), strict=True))


def test_bench_compares_patterns_and_ends_with_a_result_line(capsys):
    args = ["--users", "8", "--turns", "3", "--history-turns", "12", "--history-users", "2", "--cap", "4"]
    code = bench.main(args)
    out = capsys.readouterr().out
    assert code == 0, out
    match = RESULT.match(out.strip().splitlines()[-1])
    assert match, out
    assert match.groups()[:2] == ("8", "3") and match.groups()[3:] == ("0", "0")
    for pattern in ("naive", "pooled"):
        assert table_row(out, pattern) | {"errors": "0", "leaks": "0"} == table_row(out, pattern)
    assert '"p99_turn12_over_turn10"' in out


def test_pooled_pattern_holds_30_users_under_ulimit_64_where_naive_fails(tmp_path):
    # A real process, so the limit is the process's own: 30 naive sessions need at least 90
    # descriptors (3 per connection); the pool needs 8 connections' worth, whatever the users.
    command = [sys.executable, "-m", "tools.bench", "--users", "30", "--turns", "2"]
    command += ["--pattern", "naive", "pooled", "--history-turns", "0"]
    result = subprocess.run(
        ["bash", "-c", 'ulimit -n 64 && exec "$@"', "bench", *command],
        cwd=tmp_path,
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ulimit -n 64" in result.stdout
    assert int(table_row(result.stdout, "naive")["errors"]) > 0
    pooled = table_row(result.stdout, "pooled")
    assert pooled["errors"] == "0" and pooled["leaks"] == "0"
    assert int(pooled["peak_fds"]) <= 40
    assert RESULT.match(result.stdout.strip().splitlines()[-1])


def test_startup_times_both_commands_and_a_failing_one_ends_it_with_its_last_error_line(monkeypatch):
    quick = [sys.executable, "-c", "pass"]
    slower = [sys.executable, "-c", "import time; time.sleep(0.3)"]
    monkeypatch.setattr(bench, "STARTUP_COMMANDS", {"import_agents": quick, "agent_py": slower})
    figures = bench.startup_cost(2)
    assert figures["errors"] == 0
    assert figures["agent_py_best_s"] >= 0.3 > figures["import_agents_best_s"]
    ratio = figures["agent_py_median_s"] / figures["import_agents_median_s"]
    assert figures["ratio"] == pytest.approx(ratio, rel=0.1) and figures["ratio"] > 1

    failing = [sys.executable, "-c", "import sys; print('x', file=sys.stderr); sys.exit('no demo ran')"]
    monkeypatch.setattr(bench, "STARTUP_COMMANDS", {"import_agents": quick, "agent_py": failing})
    assert bench.startup_cost(3) == {"errors": 1, "failed": "agent_py exited 1: no demo ran"}


async def test_a_store_round_starts_from_empty_sessions_cleared_before_the_clock(tmp_path, monkeypatch):
    # A store keeps its sessions between rounds: a leftover conversation holding another user's
    # fact would be counted as a leak (and its history would slow the round). It is deleted first,
    # every session before any turn, so that clearing is not timed as turns (the floor has none).
    db = tmp_path / "sqlalchemy.db"
    store = open_store(f"sqlite+aiosqlite:///{db}")
    await store.check()
    leftover = store.open(user_session_id("bench0"))
    await leftover.add_items([{"role": "user", "content": "My email is u777@example.com."}])
    await store.close()
    events: list[str] = []
    converse, clear = bench.converse, SQLAlchemySession.clear_session

    async def clearing(self, *args, **kwargs):
        await clear(self, *args, **kwargs)
        if self.session_id == user_session_id("bench2"):
            await asyncio.sleep(0.2)  # one slow deletion: no turn may start before it ends
        events.append("cleared")

    async def conversing(*args, **kwargs):
        events.append("turns")
        return await converse(*args, **kwargs)

    monkeypatch.setattr(SQLAlchemySession, "clear_session", clearing)
    monkeypatch.setattr(bench, "converse", conversing)
    figures = await bench.run_users("sqlalchemy", 3, 3, db, None, gate=4)
    assert (figures["errors"], figures["leaks"]) == (0, 0)
    assert events == ["cleared"] * 3 + ["turns"] * 3
    store = open_store(f"sqlite+aiosqlite:///{db}")
    try:
        held = await store.open(user_session_id("bench0")).get_items()
    finally:
        await store.close()
    assert len(held) == 6 and "u777" not in str(held)
