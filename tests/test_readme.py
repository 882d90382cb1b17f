"""Every command in README.md runs, and every output excerpt in it is real: the README cannot drift.

The commands run in README order in one copy of the project, as a reader would run them, but in
this process (each new interpreter would pay ~2 s to import the SDK): ``python agent.py ARGS``
calls the command line's ``main()``, ``python -c CODE`` executes CODE, ``python -m tools.X ARGS``
calls that tool's ``main()``, and ``printf ... | python agent.py chat`` feeds the text as standard
input. tests/test_scripts.py runs a few of these lines as real processes.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import os
import re
import shlex
import socket
import subprocess
import sys
import traceback
from pathlib import Path

import pytest

from conftest import LESSON, ROOT, Ran, hermetic, project_copy
from multisessions.cli import main

README = (ROOT / "README.md").read_text()
BLOCKS = re.findall(r"```(\w+)\n(.*?)```", README, flags=re.S)
SHELL_LINES = [line for lang, body in BLOCKS if lang == "bash" for line in body.splitlines() if line.strip()]
EXCERPT_LINES = [
    line.rstrip() for lang, body in BLOCKS if lang == "text" for line in body.splitlines() if line.strip()
]
CI_SCRIPT = (ROOT / ".ci" / "run").read_text()

# Set-up lines create virtualenvs and download packages: .ci/run runs them, verbatim, on a clean clone.
SETUP = ("python3 -m venv", "pip install")


def printf_text(command: str) -> str:
    """What ``printf "TEXT"`` writes, for the plain text README lines use (``\\n`` escapes only)."""
    (text,) = shlex.split(command)[1:]
    assert "%" not in text and "\\" not in text.replace("\\n", ""), f"printf format not handled: {text}"
    return text.replace("\\n", "\n")


def run_in_process(line: str, folder: Path) -> Ran:
    """One README line, run in this process in ``folder`` with a scrubbed environment."""
    stdin = ""
    if " | " in line:
        producer, line = line.split(" | ")
        stdin = printf_text(producer)
    words = shlex.split(line)
    out, err = io.StringIO(), io.StringIO()
    code = 0
    with hermetic(folder), pytest.MonkeyPatch.context() as patch:
        patch.setattr(sys, "stdin", io.StringIO(stdin))
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                if words[:2] == ["python", "agent.py"]:
                    code = main(words[2:], LESSON)  # settings from the environment and ./.env
                elif words[:2] == ["python", "-c"]:
                    exec(words[2], {"__name__": "__main__"})
                elif words[:2] == ["python", "serve.py"]:
                    code = importlib.import_module("serve").main(words[2:])
                elif words[:2] == ["python", "-m"] and words[2].startswith("tools."):
                    code = importlib.import_module(words[2]).main(words[3:])
                else:
                    raise AssertionError(f"README command the tests cannot run: {line}")
            except SystemExit as exc:  # --help
                code = exc.code if isinstance(exc.code, int) else 1
            except Exception:
                code = 1
                traceback.print_exc()
    return Ran(code, out.getvalue(), err.getvalue())


def run(line: str, folder: Path) -> Ran:
    if line.startswith("cp "):  # cheap: a real shell
        done = subprocess.run(line, shell=True, cwd=folder, capture_output=True, text=True, timeout=30)
        return Ran(done.returncode, done.stdout, done.stderr)
    return run_in_process(line, folder)


def test_the_readme_has_commands_and_excerpts():
    assert any(line.startswith("python -c") for line in SHELL_LINES)
    assert len(EXCERPT_LINES) > 10


@pytest.mark.parametrize("line", [line for line in SHELL_LINES if line.startswith(SETUP)])
def test_setup_commands_are_run_verbatim_by_ci(line):
    assert line in CI_SCRIPT


RUNNABLE = [line for line in SHELL_LINES if not line.startswith(SETUP)]


def needs_a_model_server(line: str) -> bool:
    """Lines that talk to a model server: tests/test_readme_real_model.py runs them against a stand-in."""
    return "OPENAI_BASE_URL=" in line or line.startswith("python -m tools.standin_server")


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
def readme_run(tmp_path_factory) -> dict[str, Ran | str]:
    """Every runnable README command, in README order, in one copy of the project: as a reader would.

    A command needing a server this machine lacks is recorded as the reason instead.
    """
    folder = project_copy(tmp_path_factory.mktemp("reader"))
    return {
        line: missing_server(line) or run(line, folder) for line in RUNNABLE if not needs_a_model_server(line)
    }


@pytest.mark.parametrize("line", RUNNABLE)
def test_readme_command_runs_offline(line, readme_run):
    if needs_a_model_server(line):
        pytest.skip("talks to a model server: tests/test_readme_real_model.py runs it against a stand-in")
    assert line.startswith(("python ", "cp ", "printf ")), f"README command the tests cannot run: {line}"
    result = readme_run[line]
    if isinstance(result, str):
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI needs the {result} for: {line}")
        pytest.skip(f"needs a {result}, which this machine does not run")
    assert result.code == 0, result.err
    assert "Traceback" not in result.out + result.err


@pytest.mark.parametrize("line", EXCERPT_LINES)
def test_output_excerpt_is_what_the_commands_print(line, readme_run):
    printed = {
        out
        for result in readme_run.values()
        if not isinstance(result, str)
        for out in result.out.splitlines()
    }
    assert line in printed


PYTHON_BLOCKS = [body for lang, body in BLOCKS if lang == "python"]
EXAMPLES = "\n".join(path.read_text() for path in sorted((ROOT / "examples").glob("*.py")))


def test_python_snippets_are_lines_of_an_example_that_a_test_runs():
    for block in PYTHON_BLOCKS:
        assert block.strip() in EXAMPLES


def test_the_readme_is_short_enough_to_finish():
    assert len(README.splitlines()) <= 200
