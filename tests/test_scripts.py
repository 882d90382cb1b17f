"""The scripts as a user runs them: each a new Python process, offline, in a folder with no .env.

Everything else tests the command line in process; these few prove the real entry points: the
script's own wiring (``if __name__ == "__main__"``), standard input from a pipe, a README
``python -c`` line, and one-line errors from a fresh interpreter. They start together (each pays
the SDK's import, about 2 s) and the tests below read their results.
"""

from __future__ import annotations

import shlex
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT, project_copy, subprocess_env
from docs_pages import SHELL_LINES
from tools import stress

pytestmark = pytest.mark.slow  # starts processes or servers: python -m pytest -m slow

README_PYTHON_C = next(line for line in SHELL_LINES if line.startswith("python -c"))
BAD_INPUT = next(c for c in stress.BAD_INPUTS if c.label == "corrupt database")
README_CHAT = next(line for line in SHELL_LINES if line.startswith("printf ") and "agent.py chat" in line)


def session_ids(db: Path) -> set[str]:
    with sqlite3.connect(db) as conn:
        return {row[0] for row in conn.execute("SELECT session_id FROM agent_sessions")}


def shadow_drivers(folder: Path) -> Path:
    """A folder of packages named like the store drivers that fail to import, as on a machine without them."""
    for module in ("redis", "asyncpg"):
        (folder / module).mkdir(parents=True)
        (folder / module / "__init__.py").write_text(f"raise ImportError('hidden', name={module!r})\n")
    return folder


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, tuple[subprocess.CompletedProcess[str], Path]]:
    """Start every script at once; return each one's result and the folder it ran in.

    The bad input runs meanwhile, through tools/stress.py's own runner (a process too).
    """
    env = subprocess_env()
    python = sys.executable
    started: dict[str, tuple[subprocess.Popen[str], Path]] = {}

    def start(name: str, command: list[str] | str, folder: Path, **extra_env: str) -> None:
        process = subprocess.Popen(
            command,
            shell=isinstance(command, str),  # the README's pipe, through a real shell
            cwd=folder,
            env=env | extra_env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        started[name] = (process, folder)

    start(
        "all demos", [python, "-X", "importtime", "agent.py"], project_copy(tmp_path_factory.mktemp("demos"))
    )
    python_c = [python, *shlex.split(README_PYTHON_C)[1:]]
    start("python -c", python_c, project_copy(tmp_path_factory.mktemp("c")))
    chat = README_CHAT.replace("| python ", f"| {shlex.quote(python)} ")
    start("chat pipe", chat, project_copy(tmp_path_factory.mktemp("chat")))
    # No project files, no .env, no store drivers: agent.py by its path must still start.
    drivers = shadow_drivers(tmp_path_factory.mktemp("nodrivers"))
    help_command = [python, "-X", "importtime", str(ROOT / "agent.py"), "--help"]
    start("help", help_command, tmp_path_factory.mktemp("bare"), PYTHONPATH=f"{drivers}:{env['PYTHONPATH']}")

    folder = tmp_path_factory.mktemp("bad")
    baseline = stress.baseline_db(folder / "baseline.db")
    (folder / "case").mkdir()
    results: dict[str, tuple[subprocess.CompletedProcess[str], Path]] = {}
    ok, detail = stress.try_bad_input(BAD_INPUT, folder / "case", baseline, run=stress.run_script)
    results["bad input"] = (subprocess.CompletedProcess([], 0 if ok else 1, detail, ""), folder)
    for name, (process, folder) in started.items():
        out, err = process.communicate(timeout=120)
        results[name] = (subprocess.CompletedProcess(process.args, process.returncode, out, err), folder)
    return results


def test_python_agent_py_runs_all_four_demos_offline_and_leaves_their_sessions(runs):
    result, folder = runs["all demos"]
    assert result.returncode == 0, result.stderr
    assert [line for line in result.stderr.splitlines() if not line.startswith("import time:")] == []
    assert "Model: built-in offline model (no OPENAI_API_KEY)" in result.stdout
    for n in (1, 2, 3, 4):
        assert f"=== Demo {n}:" in result.stdout
    assert {
        "demo:user_alice",
        "demo:support_feature_user_alice",
        "demo:thread_support-7731",
        "demo:user_123",
    } <= session_ids(folder / "multi_sessions.db")


def test_a_readme_python_c_line_runs_the_demo_function(runs):
    result, folder = runs["python -c"]
    assert result.returncode == 0, result.stderr
    assert "Read back from the store:" in result.stdout
    assert session_ids(folder / "multi_sessions.db") == {
        "demo:user_alice",
        "demo:user_bob",
        "demo:user_carol",
    }


def test_the_readme_chat_pipe_answers_each_user_from_their_own_session(runs):
    result, folder = runs["chat pipe"]
    assert result.returncode == 0, result.stderr
    assert "[user_bob] Triage Agent: I don't know your name: nothing in this conversation says it." in (
        result.stdout.splitlines()
    )
    assert "[user_alice] Triage Agent: Your name is Alice." in result.stdout.splitlines()
    assert session_ids(folder / "multi_sessions.db") == {"user_alice", "user_bob"}


def imported_modules(importtime_log: str) -> set[str]:
    """Module names from ``python -X importtime`` output ("import time: self | cumulative | name")."""
    return {
        line.rsplit("|", 1)[1].strip()
        for line in importtime_log.splitlines()
        if line.startswith("import time:") and "|" in line
    }


def test_the_default_run_loads_no_store_driver(runs):
    # The SQLite default must not pay for what only Redis or PostgreSQL use (SQLAlchemy alone
    # costs ~200 ms of every start-up), even where those drivers are installed.
    result, _ = runs["all demos"]
    loaded = {name.split(".")[0] for name in imported_modules(result.stderr)}
    assert "multisessions" in loaded
    assert not loaded & {"sqlalchemy", "redis", "asyncpg"}


def test_help_runs_without_store_drivers_and_the_script_imports_the_lesson_once(runs):
    result, _ = runs["help"]
    assert result.returncode == 0, result.stderr[-2000:]  # a driver imported at start-up fails here
    assert "multi-user" in result.stdout and "naming" in result.stdout
    modules = imported_modules(result.stderr)
    assert "multisessions.cli" in modules  # the log is read right
    # agent.py runs as __main__; a module named "agent" would be a second copy of the lesson
    # (its demos and agents defined twice, state in one invisible to the other).
    assert "agent" not in modules


def test_a_bad_input_through_a_real_process_is_one_line_and_leaves_sessions_untouched(runs):
    # tools/stress.py's own runner: the one `python -m tools.stress` uses for every bad input.
    result, _ = runs["bad input"]
    assert result.returncode == 0, result.stdout
