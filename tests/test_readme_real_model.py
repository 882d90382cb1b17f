"""The real-model commands of the README and the docs run, against the stand-in server, as a reader would.

Every bash line containing ``OPENAI_BASE_URL=`` runs in a shell, in a copy of the project
without ``.env``, while a stand-in server listens where the pages' own
``python -m tools.standin_server --port PORT`` line says (the port is rewritten to a free one, so
tests can run side by side). And every ``python -c`` line runs with a key and a base URL
set, on both APIs, all in one process: one ``asyncio.run`` after another. The plain SDK example
has its own test (tests/test_plain_sdk.py): it prints no model line.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from conftest import ROOT, subprocess_env
from docs_pages import SHELL_LINES
from standin_fixture import (  # noqa: F401  (the fixtures)
    APIS,
    KEY,
    model_requests,
    module_standin_fixture,
    standin_fixture,
)
from tools.standin_server import StandinServer

pytestmark = pytest.mark.slow  # starts processes or servers: python -m pytest -m slow

BASH_LINES = [line.strip() for line in SHELL_LINES]
SETUP = "python -m tools.standin_server"
PLAIN_SDK = "examples/plain_sdk.py"
REAL_MODEL_LINES = [
    line
    for line in BASH_LINES
    if "OPENAI_BASE_URL=" in line and not line.startswith(SETUP) and PLAIN_SDK not in line
]
PYTHON_C_LINES = [line for line in BASH_LINES if line.startswith("python -c")]
OFFLINE_LINE = "Model: built-in offline model"


def readme_port() -> int:
    """The port the pages' setup lines start the stand-in on (one port, everywhere)."""
    setups = [line for line in BASH_LINES if line.startswith(SETUP)]
    [port] = {int(port) for line in setups for port in re.findall(r"--port (\d+)", line)}
    return port


def test_the_readme_shows_the_stand_in_and_real_model_commands_on_both_apis():
    assert len(REAL_MODEL_LINES) >= 2
    assert any("OPENAI_API=chat_completions" in line for line in REAL_MODEL_LINES)
    for line in REAL_MODEL_LINES:
        assert f"OPENAI_BASE_URL=http://127.0.0.1:{readme_port()}/v1" in line
        assert "OPENAI_API_KEY=" in line


def project_copy(folder: Path) -> Path:
    """The project as a reader has it after cloning: no .env, no databases, no caches."""
    ignore = shutil.ignore_patterns(".git", ".venv", ".env", "*.db", "*.db-*", "__pycache__", ".*_cache")
    shutil.copytree(ROOT, folder, ignore=ignore)
    return folder


def run_line(line: str, cwd: Path, port: int) -> subprocess.CompletedProcess[str]:
    """One README line in a shell, with this test's Python first on PATH and the stand-in's real port."""
    command = line.replace(f"127.0.0.1:{readme_port()}", f"127.0.0.1:{port}")
    env = subprocess_env()
    env.pop("OPENAI_API", None)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return subprocess.run(command, shell=True, cwd=cwd, env=env, capture_output=True, text=True, timeout=90)


@pytest.fixture(scope="module")
def readme_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, subprocess.CompletedProcess[str]]:
    """Every real-model README line, each in its own project copy, all at once, on one stand-in."""
    with StandinServer() as server, ThreadPoolExecutor(max_workers=len(REAL_MODEL_LINES)) as pool:
        folders = [project_copy(tmp_path_factory.mktemp("reader") / "project") for _ in REAL_MODEL_LINES]
        runs = pool.map(
            lambda args: run_line(args[0], args[1], server.port), zip(REAL_MODEL_LINES, folders, strict=True)
        )
        return dict(zip(REAL_MODEL_LINES, runs, strict=True))


@pytest.mark.parametrize("line", REAL_MODEL_LINES)
def test_readme_real_model_command_runs_against_the_stand_in(line, readme_runs):
    result = readme_runs[line]
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    assert OFFLINE_LINE not in result.stdout
    api = "chat_completions" if "OPENAI_API=chat_completions" in line else "responses"
    assert re.search(rf"^Model: gpt-4\.1-mini at http://127\.0\.0\.1:\d+/v1, {api} API$", result.stdout, re.M)
    assert "Read back from the store" in result.stdout


@pytest.mark.parametrize("api", APIS)
def test_every_readme_python_c_line_works_with_a_key_each_in_its_own_event_loop(
    api, standin: StandinServer, monkeypatch, capsys
):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    monkeypatch.setenv("OPENAI_BASE_URL", standin.base_url)
    monkeypatch.setenv("OPENAI_API", api)
    assert len(PYTHON_C_LINES) >= 4
    for line in PYTHON_C_LINES:  # one process, one asyncio.run after another, as a notebook would
        code = shlex.split(line)[2]
        exec(compile(code, "<README python -c>", "exec"), {})  # noqa: S102 (the README's own line)
        out = capsys.readouterr().out
        assert f"Model: gpt-4.1-mini at {standin.base_url}, {api} API" in out, line
        assert OFFLINE_LINE not in out and "Read back from the store" in out
    assert {request.api for request in model_requests(standin)} == {api}
