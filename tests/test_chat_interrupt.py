"""Ctrl-C in the chat: it leaves at once with exit 130, and says what was typed and not sent.

Real processes (``python agent.py chat``), since only a real signal meets the real input: from a
pipe (SIGINT sent to the process) and from a terminal (a pseudo-terminal, Ctrl-C typed into it).
"""

from __future__ import annotations

import os
import pty
import select
import signal
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest

from conftest import ROOT, subprocess_env

pytestmark = pytest.mark.slow  # starts processes or servers: python -m pytest -m slow

CHAT = [sys.executable, str(ROOT / "agent.py"), "chat", "--user", "alice", "--db", "chat.db"]


def wait_for(read: object, text: bytes, seconds: float = 30) -> bytes:
    """Read from ``read`` (a callable returning bytes) until ``text`` shows up."""
    seen = b""
    deadline = time.monotonic() + seconds
    while text not in seen:
        assert time.monotonic() < deadline, f"never printed {text!r}; printed {seen!r}"
        seen += read()  # type: ignore[operator]
    return seen


@pytest.mark.parametrize(
    ("typed", "notice"),
    [
        (b"", ""),
        (b"\n", ""),  # after an empty Enter, Ctrl-C still stops it
        (b"Hi, I'm Ad", '[user_alice] not sent: "Hi, I\'m Ad" (nothing saved)'),
    ],
    ids=["at the prompt", "after an empty line", "half a line typed"],
)
def test_ctrl_c_from_a_pipe_leaves_at_once_with_130_and_names_what_was_not_sent(
    tmp_path: Path, typed: bytes, notice: str
):
    chat = subprocess.Popen(
        CHAT,
        cwd=tmp_path,
        env=subprocess_env(),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert chat.stdin is not None and chat.stdout is not None
        wait_for(lambda: chat.stdout.readline(), b"chatting as alice")  # type: ignore[union-attr]
        chat.stdin.write(typed)
        chat.stdin.flush()
        time.sleep(0.5)  # the chat is waiting for the rest of the line
        chat.send_signal(signal.SIGINT)
        started = time.monotonic()
        code = chat.wait(timeout=10)  # the input stays open: only the signal can end it
        took = time.monotonic() - started
        err = chat.stderr.read().decode()  # type: ignore[union-attr]
    finally:
        chat.kill()
        chat.wait()
    assert code == 130 and took < 5
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line]
    assert lines == ([notice] if notice else []) + ["interrupted"]


def test_ctrl_c_typed_at_the_terminal_prompt_leaves_at_once_with_130(tmp_path: Path):
    main, child = pty.openpty()

    def own_terminal() -> None:  # the pseudo-terminal becomes the chat's, so Ctrl-C signals it
        os.setsid()
        import fcntl

        fcntl.ioctl(0, termios.TIOCSCTTY, 0)

    chat = subprocess.Popen(
        CHAT,
        cwd=tmp_path,
        env=subprocess_env(),
        stdin=child,
        stdout=child,
        stderr=child,
        preexec_fn=own_terminal,
    )
    os.close(child)

    def read() -> bytes:
        ready, _, _ = select.select([main], [], [], 1)
        try:
            return os.read(main, 4096) if ready else b""
        except OSError:  # the chat closed the terminal
            return b""

    try:
        wait_for(read, b"alice> ")
        os.write(main, b"\x03")  # Ctrl-C, as typed
        started = time.monotonic()
        code = chat.wait(timeout=10)
        took = time.monotonic() - started
        rest = b""
        while chunk := read():
            rest += chunk
    finally:
        chat.kill()
        chat.wait()
        os.close(main)
    assert code == 130 and took < 5
    assert b"interrupted" in rest and b"Traceback" not in rest
