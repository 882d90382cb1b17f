"""Each program checks only the settings it reads: a bad serving setting never stops the lesson."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import lesson
from multisessions import ConfigError
from multisessions.cli import main
from multisessions.settings import load_settings

BAD_SERVING = {"SERVE_RATE": "fast", "SERVE_TOKENS": "not a token list"}


def test_a_bad_serving_setting_is_not_read_by_the_lesson(tmp_path: Path):
    settings = load_settings(BAD_SERVING, dotenv=tmp_path / "none")
    assert settings.serve_tokens == () and settings.model  # the rest is read as usual


@pytest.mark.parametrize(
    ("name", "says"), [("SERVE_RATE", "SERVE_RATE='fast'"), ("SERVE_TOKENS", "SERVE_TOKENS")]
)
def test_the_server_still_refuses_a_bad_serving_setting_in_one_line(tmp_path: Path, name: str, says: str):
    with pytest.raises(ConfigError, match=says):
        load_settings({name: BAD_SERVING[name]}, dotenv=tmp_path / "none", serving=True)


def test_python_agent_py_runs_with_a_bad_serving_setting_in_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
):
    for name, value in BAD_SERVING.items():
        monkeypatch.setenv(name, value)
    (tmp_path / ".env").write_text("SERVE_RATE=faster\n")
    assert main(["multi-user", "--db", str(tmp_path / "s.db"), "--offline"], lesson()) == 0
    assert "SERVE_" not in capsys.readouterr().err
