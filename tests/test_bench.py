"""tools/bench.py runs end to end, and the recommended pattern holds under a small descriptor limit."""

from __future__ import annotations

import re
import subprocess
import sys

from conftest import ROOT, subprocess_env

RESULT = re.compile(
    r"^RESULT users=(\d+) turns=(\d+) store=\S+ turns_per_s=[\d.]+ p50_ms=[\d.]+ p99_ms=[\d.]+ "
    r"peak_fds=(\d+) errors=(\d+) leaks=(\d+)$"
)


def bench(*args: str, ulimit: int | None = None) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "tools.bench", *args]
    if ulimit is not None:
        command = ["bash", "-c", f'ulimit -n {ulimit} && exec "$@"', "bench", *command]
    return subprocess.run(
        command, cwd=ROOT, env=subprocess_env(), capture_output=True, text=True, timeout=300
    )


def test_bench_compares_patterns_and_ends_with_a_result_line():
    result = bench("--users", "30", "--turns", "3", "--history-turns", "12", "--cap", "4")
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.strip().splitlines()
    match = RESULT.match(lines[-1])
    assert match, lines[-1]
    assert match.groups()[:2] == ("30", "3") and match.groups()[3:] == ("0", "0")
    assert any(line.startswith("| naive |") for line in lines)
    assert any(line.startswith("| pooled |") for line in lines)
    assert '"p99_turn12_over_turn10"' in result.stdout


def test_pooled_pattern_holds_300_users_under_ulimit_256_where_naive_fails():
    pooled = bench(
        "--users", "300", "--turns", "3", "--pattern", "pooled", "--history-turns", "0", ulimit=256
    )
    assert pooled.returncode == 0, pooled.stdout + pooled.stderr
    match = RESULT.match(pooled.stdout.strip().splitlines()[-1])
    assert match and match.group(4) == "0" and int(match.group(3)) < 64

    naive = bench("--users", "300", "--turns", "3", "--pattern", "naive", "--history-turns", "0", ulimit=256)
    assert naive.returncode == 1
    assert RESULT.match(naive.stdout.strip().splitlines()[-1]).group(4) != "0"
