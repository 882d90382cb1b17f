"""Every command in README.md runs, and every output excerpt in it is real: the README cannot drift."""

from __future__ import annotations

import re
import shutil
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
    """The project's files in a fresh folder, as a reader would have them after cloning."""
    dest = tmp_path / "project"
    dest.mkdir()
    for path in ROOT.iterdir():
        if path.suffix in (".py", ".md", ".txt", ".example"):
            shutil.copy(path, dest / path.name)
    return dest


def run_shell(line: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    command = re.sub(r"^python\b", sys.executable, line)
    return subprocess.run(
        command, shell=True, cwd=cwd, env=subprocess_env(), capture_output=True, text=True, timeout=120
    )


def test_the_readme_has_commands_and_excerpts():
    assert any(line.startswith("python -c") for line in SHELL_LINES)
    assert len(EXCERPT_LINES) > 10


@pytest.mark.parametrize("line", [line for line in SHELL_LINES if line.startswith(SETUP)])
def test_setup_commands_are_run_verbatim_by_ci(line):
    assert line in CI_SCRIPT


@pytest.mark.parametrize("line", [line for line in SHELL_LINES if not line.startswith(SETUP)])
def test_readme_command_runs_offline(line, tmp_path):
    assert line.startswith(("python ", "cp ")), f"README command the tests do not know how to run: {line}"
    result = run_shell(line, project_copy(tmp_path))
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stdout + result.stderr


@pytest.fixture(scope="module")
def all_demos_output(tmp_path_factory) -> str:
    cwd = project_copy(tmp_path_factory.mktemp("readme"))
    result = run_shell("python agent.py", cwd)
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.mark.parametrize("line", EXCERPT_LINES)
def test_output_excerpt_is_what_the_demos_print(line, all_demos_output):
    assert line in all_demos_output.splitlines()
