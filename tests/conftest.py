"""Shared test setup: no key, no tracing, no network beyond this machine, a fresh folder each test.

Hermetic: no variable below and no ``.env`` in the project folder can change a test's result.
In-process tests run with these variables removed and a temp folder as the working directory;
child processes get ``subprocess_env()`` and a working directory without a ``.env``.

The SDK and the project are imported where a test needs them, not here: pytest-xdist's
controller process loads this file too, runs no test, and would wait ~2 s for them before it
starts the workers.
"""

from __future__ import annotations

import functools
import io
import ipaddress
import os
import shutil
import socket
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from multisessions import Settings
    from multisessions.cli import Lesson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SETTINGS_VARIABLES = (
    "OPENAI_API_KEY",
    "OPENAI_BASE_URL",
    "OPENAI_API",
    "OPENAI_MODEL",
    "OPENAI_TIMEOUT",
    "OPENAI_MAX_RETRIES",
    "OPENAI_MAX_TOKENS",
    "OPENAI_TURN_TIMEOUT",
    "MAX_ANSWER_CHARS",
    "SERVE_API_DOCS",
    "SESSION_STORE_URL",
    "SESSION_ENCRYPTION_KEY",
    "SERVE_TOKENS",
    "SERVE_RATE",
    "SERVE_METRICS_TOKEN",
    "SERVE_TRACES",
    "SERVE_TRACE_TEXT",
    "PROMETHEUS_MULTIPROC_DIR",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_SERVICE_NAME",
    "SERVE_ON_DISCONNECT",
    "SERVE_TITLES",
)
"""Everything the project (or a developer's shell) may set that would change what a test sees."""

NOWHERE = "http://127.0.0.1:9"
"""A model server that is not there: a stray real model call fails at once, locally."""


@functools.cache
def lesson() -> Lesson:
    """What ``python agent.py`` hands the command line (see the end of agent.py)."""
    import agent
    from multisessions.cli import Lesson

    return Lesson(agent.DEMOS, agent.EXTRA_DEMOS, agents=agent.support_agents, first_agent="Triage Agent")


def __getattr__(name: str) -> Any:
    """``from conftest import LESSON``: the lesson, built on first use."""
    if name == "LESSON":
        return lesson()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


_real_connect = socket.socket.connect


def _loopback_only(self: socket.socket, address: object) -> object:
    """Let tests reach Redis and PostgreSQL on this machine, and nothing else."""
    if self.family in (socket.AF_INET, socket.AF_INET6):
        host = address[0]  # type: ignore[index]
        try:
            loopback = ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = host == "localhost"
        if not loopback:
            raise OSError(f"tests may not touch the network (tried {host})")
    return _real_connect(self, address)


def scrub(monkeypatch: pytest.MonkeyPatch) -> None:
    """Remove every settings variable from this process's environment; point the model nowhere."""
    for name in SETTINGS_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("OPENAI_BASE_URL", NOWHERE)


@contextmanager
def hermetic(folder: Path) -> Iterator[None]:
    """For module-scoped fixtures (which run before the autouse one): scrubbed, in ``folder``."""
    with pytest.MonkeyPatch.context() as monkeypatch:
        scrub(monkeypatch)
        monkeypatch.chdir(folder)
        yield


SLOWEST_FILES_FIRST = (
    "test_real_model.py",
    "test_readme.py",
    "test_docs.py",
    "test_scripts.py",
    "test_serve_workers.py",
    "test_standin_server.py",
    "test_packaging.py",
    "test_reliability.py",
    "test_bench.py",
    "test_cross_process.py",
    "test_serve_browser.py",
    "test_readme_real_model.py",
    "test_plain_sdk.py",
    "test_security.py",
    "test_approvals.py",
    "test_one_write.py",
    "test_stores.py",
)
"""The test files that start processes, servers or a browser, about the slowest first.

pytest-xdist gives each worker whole files in the order they were collected (``--dist loadfile``
in pyproject.toml): the long files start first and the short ones fill in after, so both workers
finish together. Only the order changes; a file not named here runs after these, as collected.
"""


HIDE_SDK_PRIVATE = "MULTISESSIONS_HIDE_SDK_PRIVATE"
"""Set to 1, the package behaves as on an SDK without the private names it uses (sdk_private.py)."""


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--hide-sdk-private",
        action="store_true",
        help="run as on an SDK without the private names the package uses (turns take the session path)",
    )


def pytest_configure(config: pytest.Config) -> None:
    # Before the package is first imported (sdk_private.py reads it once), and inherited by the
    # xdist workers and every child process the tests start.
    if config.getoption("--hide-sdk-private"):
        os.environ[HIDE_SDK_PRIVATE] = "1"


def needs_sdk_private() -> pytest.MarkDecorator:
    """Mark for tests of what the SDK's private names make possible: skipped when they are hidden."""
    hidden = os.environ.get(HIDE_SDK_PRIVATE) == "1"
    return pytest.mark.skipif(hidden, reason="needs the SDK's private names, hidden in this run")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    renamed = [name for name in SLOWEST_FILES_FIRST if not (ROOT / "tests" / name).is_file()]
    if renamed:
        raise pytest.UsageError(f"SLOWEST_FILES_FIRST in tests/conftest.py names no such file: {renamed}")
    rank = {name: i for i, name in enumerate(SLOWEST_FILES_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: each file's own order


@pytest.fixture(autouse=True, scope="session")
def no_tracing() -> None:
    """No trace is exported from any test (session-scoped: set up before any module's fixtures)."""
    from agents import set_tracing_disabled

    set_tracing_disabled(True)


@pytest.fixture(autouse=True)
def offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Every test: no settings variables, offline model, working directory a fresh temp folder."""
    scrub(monkeypatch)
    monkeypatch.setattr(socket.socket, "connect", _loopback_only)
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def db(tmp_path: Path) -> Path:
    """A SQLite file for this test's sessions."""
    return tmp_path / "sessions.db"


NOT_IN_A_CLONE = (".git", ".venv", ".env", "*.db", "*.db-*", "__pycache__", ".*_cache", ".hypothesis")


def project_copy(folder: Path) -> Path:
    """The project's files in ``folder``/project, as a reader has them after cloning (no .env)."""
    dest = folder / "project"
    shutil.copytree(ROOT, dest, ignore=shutil.ignore_patterns(*NOT_IN_A_CLONE))
    return dest


def subprocess_env() -> dict[str, str]:
    """Environment for child processes: no settings variables, no reachable model server.

    Run children in a folder without a ``.env`` too (``tmp_path`` or a project copy).
    """
    env = {k: v for k, v in os.environ.items() if k not in SETTINGS_VARIABLES}
    env["OPENAI_BASE_URL"] = NOWHERE
    env["PYTHONPATH"] = str(ROOT)
    return env


@dataclass
class Ran:
    """What one command line did: its exit code and what it printed."""

    code: int
    out: str
    err: str

    @property
    def err_lines(self) -> list[str]:
        return self.err.strip().splitlines()


Cli = Callable[..., Ran]


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Cli:
    """``python agent.py ARGS`` in this process: ``main()`` with the lesson, offline settings
    (or ``settings=``) and ``stdin=`` as standard input. Use it from sync tests (main runs its loop).
    """

    from multisessions import Settings
    from multisessions.cli import main

    def run(*args: str, stdin: str = "", settings: Settings | None = None) -> Ran:
        capsys.readouterr()  # only this command's output
        monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
        try:
            code = main(list(args), lesson(), settings=Settings() if settings is None else settings)
        except SystemExit as exc:  # argparse's --help exits, as the interpreter would end
            code = exc.code if isinstance(exc.code, int) else 1
        out, err = capsys.readouterr()
        return Ran(code, out, err)

    return run


from stores_fixture import store  # noqa: E402,F401  (the per-store fixture, for every test module)
