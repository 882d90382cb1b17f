"""tools/bench.py --plot: both charts are written from a run (a tiny one, in this process), and a
missing matplotlib is one line naming the requirements file."""

from __future__ import annotations

import os

import pytest

from tools import bench, charts

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(autouse=True)
def matplotlib_installed():
    if not charts.available():
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI needs matplotlib: {charts.INSTALL_HINT}", pytrace=False)
        pytest.skip(f"matplotlib is not installed ({charts.INSTALL_HINT})")


def test_plot_writes_both_charts_from_a_small_run(tmp_path, capsys):
    args = ["--plot", str(tmp_path / "charts"), "--plot-users", "2", "4", "--turns", "2"]
    args += ["--pattern", "memory", "pooled", "--history-turns", "12", "--history-users", "1", "--cap", "4"]
    assert bench.main(args) == 0, capsys.readouterr().out
    out = capsys.readouterr().out
    assert "\n2 users x 2 turns" in out and "\n4 users x 2 turns" in out
    for name in (charts.THROUGHPUT_PNG, charts.HISTORY_PNG):
        path = tmp_path / "charts" / name
        assert f"chart: {path}" in out
        assert path.read_bytes()[:8] == PNG and path.stat().st_size > 10_000


def test_plot_without_matplotlib_is_one_line_and_runs_nothing(monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(charts, "plt", None)
    assert bench.main(["--plot", str(tmp_path), "--users", "2", "--turns", "2"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and list(tmp_path.iterdir()) == []
    assert err.splitlines() == [f"error: --plot needs matplotlib; {charts.INSTALL_HINT}"]
