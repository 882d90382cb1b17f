"""The package as people install it: a wheel holding ``multisessions`` only, importable from any
folder, with the ``multisessions`` command; the examples run as files from a clone.

The wheel is built once, from a copy of the project (a build writes ``build/`` beside the sources),
without build isolation: nothing is fetched. In CI it is also installed without its dependencies
into a new virtualenv that borrows this interpreter's packages (local, but 15-30 s, so CI only);
.ci/run installs it the long way too (from its git URL, with every dependency).
"""

from __future__ import annotations

import importlib.metadata
import os
import re
import subprocess
import sys
import sysconfig
import tomllib
import zipfile
from pathlib import Path

import pytest

from conftest import ROOT, project_copy, subprocess_env

pytestmark = pytest.mark.slow  # starts processes or servers: python -m pytest -m slow

PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def can_build_wheels() -> bool:
    """setuptools builds wheels by itself from 70.1 on; before that it needs the ``wheel`` package."""
    try:
        major, minor = (int(part) for part in importlib.metadata.version("setuptools").split(".")[:2])
        if (major, minor) >= (70, 1):
            return True
        importlib.metadata.version("wheel")
        return True
    except (importlib.metadata.PackageNotFoundError, ValueError):
        return False


def clean_env() -> dict[str, str]:
    """A child's environment with no path to the project: only an installed package is importable."""
    env = subprocess_env()
    env.pop("PYTHONPATH", None)
    return env


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not can_build_wheels():
        reason = "setuptools>=70.1 (requirements-dev.txt) is needed to build the wheel without fetching"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    folder = tmp_path_factory.mktemp("wheel")
    source = project_copy(folder)
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", "dist", "."],
        cwd=source,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert built.returncode == 0, built.stderr
    (found,) = (source / "dist").glob("multisessions-*.whl")
    return found


def test_the_wheel_holds_the_package_typed_with_its_command_and_nothing_else(wheel: Path):
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        entry_points = next(archive.read(n).decode() for n in names if n.endswith("entry_points.txt"))
        metadata = next(archive.read(n).decode() for n in names if n.endswith("/METADATA"))
    top = {name.split("/")[0] for name in names}
    assert top == {"multisessions", wheel.name.split("-")[0] + "-" + wheel.name.split("-")[1] + ".dist-info"}
    assert "multisessions/py.typed" in names
    assert "multisessions/stores/__init__.py" in names and "multisessions/__main__.py" in names
    assert "multisessions = multisessions.__main__:main" in entry_points
    for extra in ("stores", "serve", "bench"):
        assert f"Provides-Extra: {extra}" in metadata


@pytest.mark.skipif(
    os.environ.get("CI") != "true", reason="CI only: a new virtualenv and four processes take 15-30 s here"
)
def test_the_installed_package_imports_from_another_folder_and_its_command_chats_and_lists(
    wheel: Path, tmp_path: Path
):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=60)
    python = venv / "bin" / "python"
    installed = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "-q", str(wheel)],
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert installed.returncode == 0, installed.stderr
    # The dependencies (the SDK...) come from this interpreter's packages, after the venv's own.
    (site,) = (venv / "lib").glob("python3*/site-packages")
    (site / "borrowed.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()

    def start(*command: str | Path, stdin: str = "") -> subprocess.Popen[str]:
        read_from = elsewhere / f"stdin-{len(list(elsewhere.glob('stdin-*')))}"
        read_from.write_text(stdin)
        with read_from.open() as given:
            return subprocess.Popen(
                [str(part) for part in command],
                cwd=elsewhere,
                env=clean_env(),
                stdin=given,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )

    def finish(process: subprocess.Popen[str]) -> tuple[int, str, str]:
        out, err = process.communicate(timeout=120)
        return process.returncode, out, err

    # Each pays the SDK's import (seconds): the independent ones run at once.
    command = venv / "bin" / "multisessions"
    where = start(python, "-c", "import multisessions, sys; print(multisessions.__file__)")
    chat = start(command, "chat", "--user", "alice", "--db", "chat.db", stdin="Hi, my name is Ada.\n")
    bare = start(command)
    code, out, err = finish(where)
    assert code == 0, err
    assert Path(out.strip()).is_relative_to(site)  # not the clone's copy
    code, out, err = finish(chat)
    assert code == 0, err
    assert "Triage Agent" in out
    code, out, err = finish(start(command, "sessions", "list", "--db", "chat.db"))
    assert code == 0, err
    assert "user_alice" in out and "1 session(s)" in out
    code, out, err = finish(bare)
    assert code == 2
    assert err.strip().splitlines() == [
        "error: choose a command: multisessions sessions | approvals | chat | users (see --help)"
    ]


def requirement_lines(name: str) -> list[str]:
    lines = (ROOT / name).read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith(("#", "-r"))]


def normalised(requirement: str) -> str:
    return re.sub(r"\s+", "", requirement)


def test_the_dependencies_and_extras_are_the_requirement_files():
    project = PYPROJECT["project"]
    extras = project["optional-dependencies"]
    assert list(map(normalised, project["dependencies"])) == requirement_lines("requirements.txt")
    assert list(map(normalised, extras["stores"])) == requirement_lines("requirements-stores.txt")
    assert list(map(normalised, extras["bench"])) == requirement_lines("requirements-bench.txt")
    # The browser test's driver is for the tests only; serving needs the rest.
    serving = [line for line in requirement_lines("requirements-serve.txt") if "playwright" not in line]
    assert list(map(normalised, extras["serve"])) == serving


def test_the_command_s_support_desk_is_the_lesson_s(monkeypatch: pytest.MonkeyPatch):
    """A turn paused by the demos can be approved with the installed command: same agents, same tools."""
    import agent
    from multisessions.desk import FIRST_AGENT, support_agents

    def shape(agents: dict[str, object]) -> list[tuple[object, ...]]:
        return [
            (
                name,
                a.instructions,  # type: ignore[attr-defined]
                a.handoff_description,  # type: ignore[attr-defined]
                [(t.name, t.description, t.needs_approval is True) for t in a.tools],  # type: ignore[attr-defined]
                [h.name for h in a.handoffs],  # type: ignore[attr-defined]
            )
            for name, a in agents.items()
        ]

    assert shape(support_agents()) == shape(agent.support_agents(refunds=True))
    assert FIRST_AGENT == next(iter(agent.support_agents()))


@pytest.mark.parametrize(
    ("example", "says"),
    [("many_users_sqlite.py", "Your email is u42@example.com."), ("streamed_turn.py", "Your name is Ada.")],
)
def test_every_example_runs_as_a_file_from_the_project_folder(example: str, says: str, tmp_path: Path):
    project = project_copy(tmp_path)
    ran = subprocess.run(
        [sys.executable, f"examples/{example}"],
        cwd=project,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.strip() == says


def test_the_command_approves_a_turn_the_lesson_s_chat_paused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
):
    import io
    from functools import partial

    import agent
    from multisessions.__main__ import main as command
    from multisessions.cli import Lesson, main

    lesson = Lesson(
        agent.DEMOS, agents=partial(agent.support_agents, refunds=True), first_agent="Triage Agent"
    )
    db = str(tmp_path / "s.db")
    monkeypatch.setattr(sys, "stdin", io.StringIO("I was charged twice, please refund order 5512.\n"))
    assert main(["chat", "--user", "bob", "--db", db], lesson) == 0  # python agent.py chat ...
    assert "paused: refund_order" in capsys.readouterr().out
    assert command(["approvals", "approve", "user_bob", "--db", db]) == 0  # multisessions approvals ...
    assert "approved. Billing Agent: refund_order: refund issued for order 5512" in capsys.readouterr().out
