"""Every command in README.md runs, and every output excerpt in it is real: the README cannot drift."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT, subprocess_env

README = (ROOT / "README.md").read_text()
BLOCKS = re.findall(r"```(\w+)\n(.*?)```", README, flags=re.S)
SHELL_LINES = [line for lang, body in BLOCKS if lang == "bash" for line in body.splitlines() if line.strip()]
EXCERPT_LINES = [
    line.rstrip() for lang, body in BLOCKS if lang == "text" for line in body.splitlines() if line.strip()
]
CI_SCRIPT = (ROOT / ".ci" / "run").read_text()

# Set-up lines create virtualenvs and download packages: .ci/run runs them, verbatim, on a clean clone.
SETUP = ("python3 -m venv", "pip install")


def project_copy(tmp_path: Path) -> Path:
    """The project's files in a fresh folder, as a reader would have them after cloning (no .env)."""
    dest = tmp_path / "project"
    shutil.copytree(ROOT, dest, ignore=shutil.ignore_patterns(*NOT_IN_A_CLONE))
    return dest


NOT_IN_A_CLONE = (".git", ".venv", ".env", "*.db", "*.db-*", "__pycache__", ".*_cache", ".hypothesis")


def run_shell(line: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    command = re.sub(r"(^|\| )python\b", lambda m: m.group(1) + sys.executable, line)
    return subprocess.run(
        command, shell=True, cwd=cwd, env=subprocess_env(), capture_output=True, text=True, timeout=120
    )


def test_the_readme_has_commands_and_excerpts():
    assert any(line.startswith("python -c") for line in SHELL_LINES)
    assert len(EXCERPT_LINES) > 10


@pytest.mark.parametrize("line", [line for line in SHELL_LINES if line.startswith(SETUP)])
def test_setup_commands_are_run_verbatim_by_ci(line):
    assert line in CI_SCRIPT


RUNNABLE = [line for line in SHELL_LINES if not line.startswith(SETUP)]


SERVERS = {"redis://": 6379, "postgresql://": 5432}


def missing_server(line: str) -> str | None:
    """The server a README command needs and this machine does not run, if any."""
    for scheme, port in SERVERS.items():
        if scheme in line:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=2).close()
            except OSError:
                return f"{scheme} server on port {port}"
    return None


@pytest.fixture(scope="module")
def readme_run(tmp_path_factory) -> dict[str, subprocess.CompletedProcess[str] | str]:
    """Every runnable README command, in README order, in one copy of the project: as a reader would.

    A command needing a server this machine lacks is recorded as the reason instead.
    """
    folder = project_copy(tmp_path_factory.mktemp("reader"))
    return {line: missing_server(line) or run_shell(line, folder) for line in RUNNABLE}


@pytest.mark.parametrize("line", RUNNABLE)
def test_readme_command_runs_offline(line, readme_run):
    assert line.startswith(("python ", "cp ", "printf ")), f"README command the tests cannot run: {line}"
    result = readme_run[line]
    if isinstance(result, str):
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI needs the {result} for: {line}")
        pytest.skip(f"needs a {result}, which this machine does not run")
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stdout + result.stderr


@pytest.mark.parametrize("line", EXCERPT_LINES)
def test_output_excerpt_is_what_the_commands_print(line, readme_run):
    printed = {
        out
        for result in readme_run.values()
        if not isinstance(result, str)
        for out in result.stdout.splitlines()
    }
    assert line in printed


PYTHON_BLOCKS = [body for lang, body in BLOCKS if lang == "python"]
EXAMPLES = "\n".join(path.read_text() for path in sorted((ROOT / "examples").glob("*.py")))


@pytest.mark.parametrize("block", PYTHON_BLOCKS)
def test_python_snippets_are_lines_of_an_example_that_a_test_runs(block):
    assert block.strip() in EXAMPLES
