"""Every code block of the documentation site is a file a test runs or a command a test executes.

- ``python`` blocks only include code (``--8<-- "file"`` or ``"file:section"``) from a file a test
  runs, and each section the pages name is marked in that file: the code shown cannot drift.
- ``bash`` lines run here, offline, page by page, in page order, in a fresh copy of the project
  (as tests/test_readme.py runs the README's), and each ``text`` excerpt of the page is a line
  they print. Set-up lines are run verbatim by .ci/run; lines that talk to a model server run
  against the stand-in in tests/test_readme_real_model.py and tests/test_plain_sdk.py.
- ``console`` blocks show long or server commands; each is listed below with the test that runs it.

.ci/run builds the site with ``mkdocs build --strict`` (about 4 s alone, more than this suite
should pay): a broken link, anchor, include or API name fails CI there.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
import yaml

from conftest import ROOT, Ran, project_copy
from docs_pages import DOC_PAGES, PAGES, Page
from test_readme import CI_SCRIPT, SETUP, missing_server, run

INCLUDE = re.compile(r'^--8<-- "([^":]+)(?::([\w-]+))?"$')
DEMO_SECTIONS = {
    "multi_user": "async def multi_user_sessions(",
    "context": "async def context_based_sessions(",
    "shared": "async def shared_session_agents(",
    "naming": "async def session_naming_demo(",
    "refund": "async def approval_demo(",
    "history_cap": "async def history_cap_demo(",
    "one_turn": "async with one_turn(",
    "memory": "async def memory_demo(",
}
"""agent.py's snippet sections, and what each must hold (a demo function, or the turn's block)."""

RUN_ELSEWHERE = {
    "python serve.py": "tests/test_serve_browser.py starts it as shown and drives two browsers",
    "pip install -r requirements-serve.txt": ".ci/run installs requirements-dev.txt, which includes it",
    "curl ": "tests/test_serve_api.py and tests/test_serve_http.py send these requests",
    'SERVE_TOKENS="alice=': "tests/test_serve_workers.py runs uvicorn serve:app --workers 2 on Redis",
    "python -m tools.bench --users 1000": "tests/test_bench.py runs tools.bench at a small size",
    "python -m tools.bench --plot": "tests/test_bench_plot.py draws the charts at a small size",
    "python -m tools.loadtest": "tests/test_serve_workers.py runs the same load at CI size",
    "python -m tools.stress": "tests/test_reliability.py runs the same scenarios at CI size",
    "python -m tools.browse": "tests/test_conversations.py runs tools.browse at a small size on every store",
}
"""Console commands that take minutes or a live server: the test that runs each instead."""

EXCERPTS_ELSEWHERE = {"docs/plain-sdk.md": "tests/test_plain_sdk.py"}
"""Pages whose output excerpts come from a model-server command, and the test that checks them."""


def talks_to_a_model_server(line: str) -> bool:
    return "OPENAI_BASE_URL=" in line or line.startswith("python -m tools.standin_server")


def includes(page: Page) -> list[tuple[str, str | None]]:
    found = []
    for line in page.lines("python"):
        match = INCLUDE.match(line)
        assert match, f"{page.name}: a python block holds code instead of including a tested file: {line}"
        found.append((match.group(1), match.group(2)))
    return found


def test_the_site_has_a_page_per_demo_each_including_its_section_of_agent_py():
    shown = {section for page in DOC_PAGES for path, section in includes(page) if path == "agent.py"}
    assert shown == set(DEMO_SECTIONS)


@pytest.mark.parametrize("page", DOC_PAGES, ids=lambda page: page.name)
def test_python_blocks_include_marked_sections_of_files_a_test_runs(page: Page):
    tests_text = "\n".join(path.read_text() for path in (ROOT / "tests").glob("test_*.py"))
    for path, section in includes(page):
        source = (ROOT / path).read_text()
        assert Path(path).stem in tests_text, f"{path} is shown in {page.name} but no test runs it"
        if section:
            start, end = f"# --8<-- [start:{section}]", f"# --8<-- [end:{section}]"
            assert source.count(start) == 1 and source.count(end) == 1, f"{path}: section {section} unmarked"
            body = source[source.index(start) : source.index(end)]
            if path == "agent.py":
                assert DEMO_SECTIONS[section] in body, f"agent.py section {section} lost its demo"


def test_every_console_command_is_run_by_the_test_it_names():
    commands = [line[2:] for page in PAGES for line in page.lines("console") if line.startswith("$ ")]
    assert commands
    for command in commands:
        reasons = [reason for prefix, reason in RUN_ELSEWHERE.items() if command.startswith(prefix)]
        assert reasons, f"console command no test runs: {command}"
        test_file = reasons[0].split()[0]
        assert (ROOT / test_file).exists(), f"{test_file} (named for {command}) is missing"


def offline_lines(page: Page) -> list[str]:
    return [
        line
        for line in page.lines("bash")
        if not line.startswith(SETUP) and not talks_to_a_model_server(line)
    ]


@pytest.mark.parametrize("page", DOC_PAGES, ids=lambda page: page.name)
def test_set_up_lines_are_run_verbatim_by_ci(page: Page):
    for line in page.lines("bash"):
        if line.startswith(SETUP):
            assert line in CI_SCRIPT, f"{page.name}: .ci/run does not run {line}"


RUN_PAGES = [page for page in DOC_PAGES if offline_lines(page)]


@pytest.mark.slow  # each page's commands in a fresh copy of the project: python -m pytest -m slow
@pytest.mark.parametrize("page", RUN_PAGES, ids=lambda page: page.name)
def test_page_commands_run_offline_and_print_the_page_excerpts(page: Page, tmp_path: Path):
    folder = project_copy(tmp_path / "reader")
    printed: set[str] = set()
    for line in offline_lines(page):
        if server := missing_server(line):
            if os.environ.get("CI") == "true":
                pytest.fail(f"CI needs the {server} for: {line}")
            pytest.skip(f"needs a {server}, which this machine does not run")
        result: Ran = run(line, folder)
        assert result.code == 0, f"{page.name}: {line}\n{result.err}"
        assert "Traceback" not in result.out + result.err, line
        printed |= set(result.out.splitlines())
    if page.name not in EXCERPTS_ELSEWHERE:
        for excerpt in page.lines("text"):
            assert excerpt.rstrip() in printed, f"{page.name}: not printed by its commands: {excerpt}"


def test_pages_whose_excerpts_come_from_a_model_server_name_their_test():
    for name, test_file in EXCERPTS_ELSEWHERE.items():
        assert (ROOT / name).exists() and (ROOT / test_file).exists()
        assert name in (ROOT / test_file).read_text()


HISTORY = re.compile(
    r"\brounds?\b|\bissues?\b|\blast (time|run)\b|\bearlier versions?\b|\bbefore the fix\b", re.I
)


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.name)
def test_pages_describe_the_product_as_it_is_not_how_it_was_built(page: Page):
    found = [line for line in page.path.read_text().splitlines() if HISTORY.search(line)]
    assert found == [], f"{page.name} speaks of the project's history"


def nav_pages(entries: object) -> set[str]:
    """Every page file the ``nav`` of mkdocs.yml names, at any depth."""
    if isinstance(entries, str):
        return {entries}
    if isinstance(entries, list):
        return set().union(*(nav_pages(entry) for entry in entries))
    if isinstance(entries, dict):
        return set().union(*(nav_pages(value) for value in entries.values()))
    return set()


def test_every_page_is_in_the_navigation_and_every_readme_pointer_exists():
    nav = nav_pages(yaml.safe_load((ROOT / "mkdocs.yml").read_text())["nav"])
    on_disk = {page.path.relative_to(ROOT / "docs").as_posix() for page in DOC_PAGES}
    assert on_disk == nav, "add the page to (or remove it from) the nav in mkdocs.yml"
    named = set(re.findall(r"`([\w/-]+\.md)`", (ROOT / "README.md").read_text()))
    assert named and named <= on_disk, f"the README points at pages that do not exist: {named - on_disk}"
