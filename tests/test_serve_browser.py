"""The page in a real browser: `python serve.py` as a newcomer starts it, headless Chromium as Alice and Bob.

Two browser contexts chat at once; each sees only their own history, before and after a reload,
and the handoff appears. Needs Debian's chromium and Playwright's Python package (never its
browser download); skipped without them, failed in CI (CI=true).
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from test_serve_rejoin import start

from conftest import ROOT, subprocess_env
from serve_fixture import TOKENS, stored

pytestmark = pytest.mark.slow  # starts processes or servers: python -m pytest -m slow

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
REFUND = "I was charged twice for order 5512, can I get a refund?"


def needs(what: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"{what} is required in CI")
    pytest.skip(f"{what} is not installed on this machine")


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Callable[[], tuple[str, dict[str, str], Path]]]:
    """`python serve.py --port P`, as the README says. Yields a function that waits for its banner
    and returns the URL and tokens it printed, and its db (the browser starts meanwhile)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {k: v for k, v in subprocess_env().items() if k != "SERVE_TOKENS"}
    db = tmp_path / "served.db"
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "serve.py"), "--port", str(port), "--db", str(db)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )

    def banner() -> tuple[str, dict[str, str], Path]:
        tokens, url = {}, ""
        assert process.stdout is not None
        for line in process.stdout:
            if line.startswith("  ") and ": " in line:
                user, token = line.strip().split(": ", 1)
                tokens[user] = token
            if line.startswith("Open http://"):
                url = line.split()[1]
                break
        assert url == f"http://127.0.0.1:{port}/" and set(tokens) == {"alice", "bob"}
        for _ in range(200):  # the banner comes just before uvicorn listens
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.05)
        return url, tokens, db

    try:
        yield banner
    finally:
        process.terminate()
        process.wait(10)


async def test_alice_and_bob_chat_at_once_in_two_browsers_and_each_sees_only_their_own(served):
    if not CHROMIUM.exists():
        needs(str(CHROMIUM))
    try:
        from playwright.async_api import async_playwright, expect
    except ImportError:
        needs("playwright (pip install -r requirements-serve.txt)")
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            url, tokens, db = await asyncio.to_thread(served)
            pages = {}
            blocked: list[str] = []  # what the Content-Security-Policy stopped: nothing, on our page
            for user in ("alice", "bob"):
                context = await browser.new_context(viewport={"width": 1100, "height": 560})
                pages[user] = await context.new_page()
                pages[user].on(
                    "console",
                    lambda m: blocked.append(m.text) if "Content Security Policy" in m.text else None,
                )

            async def sign_in_and_chat(user: str, messages: list[str]) -> None:
                page = pages[user]
                response = await page.goto(url)
                assert response is not None
                policy = response.headers["content-security-policy"]
                assert "frame-ancestors 'none'" in policy and "script-src 'sha256-" in policy
                await page.fill("#token", tokens[user])
                await page.click("#use-token")
                await expect(page.locator("#who")).to_have_text(f"signed in as {user}")
                await page.fill("#name", "support")
                await page.click("#open")
                await expect(page.locator("#session-id")).to_have_text(f"support_feature_user_{user}")
                for number, message in enumerate(messages, start=1):
                    await page.fill("#message", message)
                    await page.click("#send")
                    await expect(page.locator(".msg.assistant")).to_have_count(number)
                    await expect(page.locator("#status")).to_contain_text("answered by")

            alice_says = ["Hi, my name is Alice and my email is alice@example.com.", REFUND]
            bob_says = ["Hello, my name is Bob. My email is bob@example.org.", "What's my name?"]
            await asyncio.gather(sign_in_and_chat("alice", alice_says), sign_in_and_chat("bob", bob_says))

            alice, bob = pages["alice"], pages["bob"]
            await expect(alice.locator(".msg.handoff")).to_have_text("handoff: Triage Agent -> Billing Agent")
            await expect(alice.locator(".msg.assistant .by").last).to_have_text("Billing Agent")
            await expect(bob.locator(".msg.assistant .text").last).to_have_text("Your name is Bob.")

            for reloaded in (False, True):
                if reloaded:  # the history comes back from the store, not from the page
                    await asyncio.gather(alice.reload(), bob.reload())
                    await expect(alice.locator("#status")).to_contain_text("read back from the store")
                    await expect(bob.locator("#status")).to_contain_text("read back from the store")
                alice_text = await alice.locator("#messages").inner_text()
                bob_text = await bob.locator("#messages").inner_text()
                assert "alice@example.com" in alice_text and "5512" in alice_text
                assert "bob@example.org" in bob_text and "Your name is Bob." in bob_text
                assert "bob" not in alice_text.lower() and "alice" not in bob_text.lower()
                assert "handoff: Triage Agent -> Billing Agent" in alice_text
            await expect(alice.locator("#conversations button")).to_have_count(1)
            # Listed by its title (the first message), with its name and items (a handoff adds two); one page.
            await expect(alice.locator("#conversations button")).to_contain_text(alice_says[0])
            await expect(alice.locator("#conversations button small")).to_have_text("support, 6 items")
            await expect(alice.locator("#more")).to_be_hidden()
            await expect(alice.locator("#session-id")).to_have_text("support_feature_user_alice")

            assert blocked == []  # the page's own script and style run under the policy
            screenshot = os.environ.get("SERVE_SCREENSHOT")  # docs/serve.png is made this way
            if screenshot:
                await alice.screenshot(path=screenshot)
        finally:
            await browser.close()

    sessions = await stored(db)
    assert sorted(sessions) == ["support_feature_user_alice", "support_feature_user_bob"]
    assert "bob" not in str(sessions["support_feature_user_alice"]).lower()
    assert "alice" not in str(sessions["support_feature_user_bob"]).lower()


async def test_a_reload_mid_answer_rejoins_the_running_turn_and_shows_the_answer_once(tmp_path):
    """The page reloaded while the answer streams: the turn runs on in the server, the page
    reads its events again and ends with the whole answer, which the store holds once."""
    if not CHROMIUM.exists():
        needs(str(CHROMIUM))
    try:
        from playwright.async_api import async_playwright, expect
    except ImportError:
        needs("playwright (pip install -r requirements-serve.txt)")
    process, base = await asyncio.to_thread(start, tmp_path, "", 0.1)  # a slow offline model
    try:
        async with async_playwright() as p:
            browser = await p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
            try:
                page = await browser.new_page()
                await page.goto(base + "/")
                await page.fill("#token", TOKENS["alice"])
                await page.click("#use-token")
                await page.fill("#name", "support")
                await page.click("#open")
                await page.fill("#message", REFUND)
                await page.click("#send")
                answer = page.locator(".msg.assistant .text").last
                await expect(answer).not_to_have_text("", timeout=20_000)  # the first words are in
                assert await page.locator("#status").inner_text() == "streaming…"
                await page.reload()
                await expect(page.locator("#status")).to_contain_text("answered by", timeout=60_000)
                shown = await page.locator(".msg.assistant .text").all_inner_texts()
            finally:
                await browser.close()
    finally:
        process.terminate()
        process.wait(10)

    sessions = await stored(tmp_path / "multi_sessions.db")
    items = sessions["support_feature_user_alice"]
    replies = [i for i in items if i.get("role") == "assistant"]
    assert [i for i in items if i.get("role") == "user"] == [{"role": "user", "content": REFUND}]
    assert len(replies) == 1  # the turn was kept once
    stored_reply = "".join(part["text"] for part in replies[0]["content"])
    assert shown == [stored_reply]  # the whole answer on the page once, as the store holds it
