"""Load over HTTP: N users x T turns against ``uvicorn serve:app --workers W`` on one store.

    python -m tools.loadtest --users 1000 --turns 5 --workers 4 --store redis://127.0.0.1:6379/15
    python -m tools.loadtest --users 1000 --turns 5 --workers 4 --store postgresql://postgres@127.0.0.1:5432/test
    python -m tools.loadtest --users 200 --turns 5 --workers 1      # the SQLite file, in a temporary folder

It starts the server itself (offline model: the child gets no OPENAI_API_KEY; one token per
simulated user in SERVE_TOKENS; no rate limit), then every user talks at once, each over HTTP
as a person would: one turn after another in their own conversation. Each states a unique fact
(``My email is u17@example.com.``), chats, and asks for it back. Counted:

- errors: a turn that did not answer 200;
- leaks: a reply carrying another user's fact, or a session in the store holding one (what a
  session holds is what the model is sent at the next turn);
- interleaved: a session whose history is not each user message followed by its own answer;
- lost: a session holding more or fewer turns than were answered.

``--compare`` measures, in one run and with these same simulated users, the in-process SDK floor
(``Runner.run`` on a history in memory), the HTTP floor (``tools/httpfloor.py``: serve.py's app
shape on a history in memory) and serve.py on each ``--stores`` entry and ``--compare-workers``
count, then prints a Markdown table with the ratios between them (and a chart with ``--plot``):

    python -m tools.loadtest --compare --repeat 2 --users 200 --turns 5 --plot docs \
        --stores sqlite redis://127.0.0.1:6379/15 postgresql://postgres@127.0.0.1:5432/test

The last line is machine-readable: ``RESULT users=N turns=T workers=W store=... turns_per_s=...
p50_ms=... p99_ms=... errors=E leaks=L interleaved=I lost=M recalled=R`` (with ``--compare``:
``COMPARE rows=R bad=B``).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import secrets
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import httpx
from agents import RunConfig, set_tracing_disabled

from multisessions import (
    OfflineModel,
    close_session,
    feature_session_id,
    load_settings,
    message_text,
    read_all,
    store_for,
)
from multisessions.desk import FIRST_AGENT, support_agents
from multisessions.stores.urls import redact_url
from tools import charts
from tools.workload import FACT, ListSession, turn_by_hand, user_script
from tools.workload import converse as converse_in_process

ROOT = Path(__file__).resolve().parent.parent
NO_TLS = ssl.create_default_context()
"""One TLS context for every simulated user's client (the URLs are http://; httpx builds one per
client otherwise, which costs milliseconds each)."""
SERVE_APP = "serve:app"
FLOOR_APP = "tools.httpfloor:create_app"
"""The HTTP floor: serve.py's app shape, ``Runner.run`` on a history in memory (no store)."""
KEEP_ALIVE = 30
"""Seconds the server keeps an idle connection (uvicorn's default is 5). A thousand simulated users
in one busy process sometimes take longer than 5 s to send their next turn; a request sent just as
the server closes the idle connection fails with ReadError (5 of 5,000 did in the first runs)."""


@dataclass
class LoadResult:
    """What one load run measured."""

    users: int
    turns: int
    workers: int
    store: str
    seconds: float = 0.0
    answered: int = 0
    errors: int = 0
    leaks: int = 0
    interleaved: int = 0
    lost: int = 0
    recalled: int = 0
    restarts: int = 0
    """Workers the uvicorn supervisor replaced during the run (it kills one that misses its health check)."""
    client_cpu: float = 0.0
    """CPU seconds the simulated users (this process) used; on a small machine they compete with workers."""
    latencies: list[float] = field(default_factory=list)
    last_reply: dict[int, str] = field(default_factory=dict)
    first_errors: list[str] = field(default_factory=list)

    @property
    def turns_per_s(self) -> float:
        return self.answered / self.seconds if self.seconds else 0.0

    def percentile_ms(self, q: float) -> float:
        if not self.latencies:
            return 0.0
        ordered = sorted(self.latencies)
        return 1000 * ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    def summary(self) -> str:
        return (
            f"RESULT users={self.users} turns={self.turns} workers={self.workers} store={self.store} "
            f"turns_per_s={self.turns_per_s:.1f} p50_ms={self.percentile_ms(0.50):.0f} "
            f"p99_ms={self.percentile_ms(0.99):.0f} errors={self.errors} leaks={self.leaks} "
            f"interleaved={self.interleaved} lost={self.lost} recalled={self.recalled} "
            f"restarts={self.restarts} client_cpu_s={self.client_cpu:.0f}"
        )


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def start_server(
    folder: Path,
    port: int,
    workers: int,
    store_url: str | None,
    tokens: dict[str, str],
    healthcheck: int | None = None,
    app: str = SERVE_APP,
    rate: int = 0,
) -> Any:
    """``uvicorn serve:app --workers W`` in ``folder`` (where the SQLite file lives), logging to a file.

    ``app`` may name the HTTP floor instead (``FLOOR_APP``, an app factory); ``rate``: ``SERVE_RATE``
    (0, no limit, for measuring)."""
    env = {k: v for k, v in os.environ.items() if k not in ("OPENAI_API_KEY", "SESSION_STORE_URL")}
    env["SERVE_TOKENS"] = ",".join(f"{user}={token}" for user, token in tokens.items())
    env["SERVE_RATE"] = str(rate)
    if store_url:
        env["SESSION_STORE_URL"] = store_url
    command = [
        sys.executable, "-m", "uvicorn", app, "--app-dir", str(ROOT), "--host", "127.0.0.1",
        "--port", str(port), "--workers", str(workers), "--log-level", "info", "--no-access-log",
        "--timeout-keep-alive", str(KEEP_ALIVE),
    ]  # fmt: skip
    if healthcheck:
        command += ["--timeout-worker-healthcheck", str(healthcheck)]
    if app == FLOOR_APP:
        command.append("--factory")
    log = open(folder / "server.log", "w")  # noqa: SIM115 (closed with the process, in stop_server)
    # Its own process group: if it will not stop, the workers are stopped with it (stop_server).
    return subprocess.Popen(
        command, cwd=folder, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )


def stop_server(process: Any) -> None:
    """SIGTERM (uvicorn finishes what is in flight), then, after 30 s, SIGKILL to the whole group."""
    process.terminate()
    try:
        process.wait(30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


async def wait_until_ready(process: Any, folder: Path, workers: int) -> None:
    """Until every worker has started (uvicorn logs each one's startup).

    Starting before they all listen would pin the users' kept-alive connections to the first
    worker up, and measure one worker instead of ``workers``.
    """
    log = folder / "server.log"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        text = log.read_text()
        if process.poll() is not None:
            lines = text.strip().splitlines()
            raise RuntimeError(f"the server exited: {lines[-1] if lines else process.returncode}")
        if text.count("Application startup complete.") >= workers:
            return
        await asyncio.sleep(0.1)
    raise RuntimeError("the server did not start within 180 s")


async def converse(url: str, i: int, token: str, name: str, turns: int, result: LoadResult) -> int:
    """User ``i``'s conversation, one turn after another; returns how many turns were answered.

    Each user has their own client and connection, as a browser would: one client with a pool of
    a thousand connections spent most of the run's CPU looking through its pool.
    """
    answered = 0
    limits = httpx.Limits(max_connections=1, max_keepalive_connections=1, keepalive_expiry=KEEP_ALIVE / 2)
    async with httpx.AsyncClient(limits=limits, timeout=300, verify=NO_TLS) as client:
        for turn, message in enumerate(user_script(i, turns), start=1):
            answered += await one_turn(client, url, i, turn, token, name, message, result)
            await asyncio.sleep(0)
    if answered:
        result.recalled += result.last_reply.pop(i, "") == f"Your email is u{i}@example.com."
    return answered


async def one_turn(
    client: httpx.AsyncClient,
    url: str,
    i: int,
    turn: int,
    token: str,
    name: str,
    message: str,
    result: LoadResult,
) -> int:
    """One turn over HTTP: 1 if answered, 0 if not (counted as an error)."""
    started = time.perf_counter()
    try:
        response = await client.post(
            f"{url}/api/conversations/{name}/messages",
            json={"message": message},
            headers={"Authorization": f"Bearer {token}"},
        )
    except httpx.HTTPError as exc:
        result.errors += 1
        if len(result.first_errors) < 5:
            cause = exc.__cause__ or exc.__context__
            why = f" ({type(cause).__name__}: {cause})" if cause else ""
            result.first_errors.append(f"u{i} turn {turn}: {type(exc).__name__}: {exc}{why}")
        return 0
    result.latencies.append(time.perf_counter() - started)
    if response.status_code != 200:
        result.errors += 1
        if len(result.first_errors) < 5:
            result.first_errors.append(f"u{i} turn {turn}: {response.status_code} {response.text[:200]}")
        return 0
    result.answered += 1
    reply = str(response.json()["reply"])
    result.last_reply[i] = reply
    if {int(n) for n in FACT.findall(reply)} - {i}:
        result.leaks += 1
    return 1


async def check_store(
    store_url: str | None,
    folder: Path,
    name: str,
    answered: dict[int, int],
    result: LoadResult,
    *,
    keep: bool,
) -> None:
    """Read every user's session back from the store: foreign facts, interleaving, lost turns."""
    # The server's settings: this environment in ``folder`` (no .env there), so the same encryption.
    settings = replace(load_settings(dotenv=folder / ".env"), store_url=store_url)
    store = store_for(settings, db_path=folder / "multi_sessions.db")
    try:
        for i, count in answered.items():
            session_id = feature_session_id(name, f"u{i}")
            session = store.open(session_id)
            try:
                items = await read_all(session)
            finally:
                await close_session(session)
            texts = [message_text(item) for item in items]
            if any({int(n) for n in FACT.findall(text)} - {i} for text in texts):
                result.leaks += 1
            roles = [item.get("role") for item in items if isinstance(item, dict) and item.get("role")]
            if roles != ["user", "assistant"] * (len(roles) // 2) or len(roles) % 2:
                result.interleaved += 1
            if roles.count("user") != count:
                result.lost += 1
            if not keep:
                await store.delete(session_id)
    finally:
        await store.close()


async def run_load(
    users: int,
    turns: int,
    workers: int,
    store_url: str | None = None,
    *,
    progress: bool = True,
    keep: bool = False,
    healthcheck: int | None = None,
    app: str = SERVE_APP,
) -> LoadResult:
    """Start the server, run every user at once, check the store, stop the server.

    With ``app=FLOOR_APP`` there is no store: the replies alone are checked."""
    tokens = {f"u{i}": secrets.token_urlsafe(18) for i in range(users)}
    name = f"load-{secrets.token_hex(3)}"  # this run's conversations, apart from any other run's
    store_name = redact_url(store_url) if store_url else "sqlite"
    result = LoadResult(users, turns, workers, "memory" if app == FLOOR_APP else store_name)
    with tempfile.TemporaryDirectory(prefix="loadtest-") as tmp:
        folder = Path(tmp)
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        process = start_server(folder, port, workers, store_url, tokens, healthcheck, app)
        try:
            await wait_until_ready(process, folder, workers)
            if progress:
                print(f"server up: {workers} worker(s) on {result.store}; {users} users x {turns} turns")
            started = time.perf_counter()
            cpu_before = time.process_time()
            reporter = asyncio.create_task(report_progress(result, users * turns, started, progress))
            counts = await asyncio.gather(
                *(converse(url, i, tokens[f"u{i}"], name, turns, result) for i in range(users))
            )
            result.seconds = time.perf_counter() - started
            result.client_cpu = time.process_time() - cpu_before
            reporter.cancel()
        finally:
            stop_server(process)
        server_log = (folder / "server.log").read_text()
        result.restarts = server_log.count("] died")
        for line in server_log.splitlines():
            if ("ERROR" in line or "died" in line) and len(result.first_errors) < 10:
                result.first_errors.append(f"server: {line.strip()}")
        if app != FLOOR_APP:
            await check_store(store_url, folder, name, dict(enumerate(counts)), result, keep=keep)
    return result


async def report_progress(result: LoadResult, total: int, started: float, enabled: bool) -> None:
    while enabled:
        await asyncio.sleep(2)
        elapsed = time.perf_counter() - started
        print(
            f"  {result.answered}/{total} turns answered, {result.errors} errors, {elapsed:.0f} s", flush=True
        )


async def sdk_floor(users: int, turns: int) -> LoadResult:
    """The in-process SDK floor: the same users and scripts, each turn ``Runner.run`` on a history
    in memory (``turn_by_hand``), no HTTP and no store, every user at once in this process."""
    set_tracing_disabled(True)  # as serve.py's model does: nothing is exported
    agent = support_agents(refunds=False)[FIRST_AGENT]
    run_config = RunConfig(model=OfflineModel())
    result = LoadResult(users, turns, 0, "memory")
    started = time.perf_counter()
    cpu_before = time.process_time()
    outcomes = await asyncio.gather(
        *(
            converse_in_process(i, turns, agent, ListSession(f"u{i}"), run_config, turn=turn_by_hand)
            for i in range(users)
        )
    )
    result.seconds = time.perf_counter() - started
    result.client_cpu = time.process_time() - cpu_before
    for outcome in outcomes:
        result.errors += outcome.errors
        result.answered += len(outcome.latencies) - outcome.errors
        result.latencies += outcome.latencies
        result.recalled += outcome.recalled
    return result


@dataclass
class Row:
    """One line of the comparison: what ran, and how it went."""

    what: str
    workers: int
    result: LoadResult
    vs_http_floor: float | None = None
    vs_sdk_floor: float | None = None
    vs_one_worker: float | None = None
    bad: int = 0
    """Errors, leaks, interleaved and lost turns, and worker restarts, over every round."""


def bad_turns(result: LoadResult) -> int:
    """Errors, leaks, interleaved and lost turns, and worker restarts, of one run."""
    return result.errors + result.leaks + result.interleaved + result.lost + result.restarts


COMPARE_TARGETS = {"vs_http_floor": 0.8, "vs_sdk_floor": 0.7, "vs_one_worker": 1.6}
"""serve.py / the HTTP floor, serve.py on 1 worker / the in-process SDK floor, 2 workers / 1 worker."""


def ratio(a: LoadResult, b: LoadResult | None) -> float | None:
    return round(a.turns_per_s / b.turns_per_s, 2) if b is not None and b.turns_per_s else None


async def compare(
    users: int,
    turns: int,
    stores: list[str | None],
    workers: list[int],
    *,
    repeat: int = 1,
    progress: bool = True,
) -> list[Row]:
    """The in-process SDK floor, the HTTP floor and serve.py on each store, on each worker count,
    one after another with the same users, scripts and load generator; with the ratios.

    With ``repeat``, every row runs that many times, the runs interleaved (so a busy moment of
    the machine falls on every row alike), and each row keeps its fastest run; errors, leaks,
    lost turns and restarts add up over the runs."""
    jobs: list[tuple[str, int, str | None]] = [("SDK floor (in process)", 0, None)]
    for count in workers:
        jobs.append(("HTTP floor", count, None))
        jobs += [("serve.py", count, url) for url in stores]
    rows: dict[int, Row] = {}
    for round_ in range(1, repeat + 1):
        for index, (what, count, store_url) in enumerate(jobs):
            if what == "HTTP floor":
                result = await run_load(users, turns, count, None, progress=False, app=FLOOR_APP)
            elif what == "serve.py":
                result = await run_load(users, turns, count, store_url, progress=False)
            else:
                result = await sdk_floor(users, turns)
            row = rows.setdefault(index, Row(what, count, result))
            row.bad += bad_turns(result)
            if result.turns_per_s > row.result.turns_per_s:
                row.result = result
            if progress:
                print(
                    f"run {round_}: {what} on {result.store}, {count or 'no'} worker(s): "
                    f"{result.turns_per_s:.1f} turns/s",
                    flush=True,
                )
    ordered = [rows[index] for index in range(len(jobs))]
    sdk = ordered[0].result
    http_floor = {row.workers: row.result for row in ordered if row.what == "HTTP floor"}
    one_worker = {row.result.store: row.result for row in ordered[1:] if row.workers == 1}
    for row in ordered[1:]:
        row.vs_sdk_floor = ratio(row.result, sdk)
        if row.what == "serve.py":
            row.vs_http_floor = ratio(row.result, http_floor.get(row.workers))
        if row.workers != 1:
            row.vs_one_worker = ratio(row.result, one_worker.get(row.result.store))
    return ordered


COMPARE_COLUMNS = (
    "what | store | workers | turns/s | p50 ms | p99 ms | errors | ÷ HTTP floor | ÷ SDK floor "
    "| ÷ 1 worker | client CPU s"
)


def compare_table(rows: list[Row]) -> str:
    """The comparison as a Markdown table (what docs/benchmarks.md shows)."""

    def shown(value: float | None) -> str:
        return "" if value is None else f"{value:.2f}"

    lines = [f"| {COMPARE_COLUMNS} |", "|" + " --- |" * len(COMPARE_COLUMNS.split("|"))]
    for row in rows:
        r = row.result
        lines.append(
            f"| {row.what} | {r.store} | {row.workers or '-'} | {r.turns_per_s:.1f} | "
            f"{r.percentile_ms(0.5):.0f} | {r.percentile_ms(0.99):.0f} | {row.bad} | "
            f"{shown(row.vs_http_floor)} | {shown(row.vs_sdk_floor)} | {shown(row.vs_one_worker)} | "
            f"{r.client_cpu:.1f} |"
        )
    return "\n".join(lines)


def compare_main(args: argparse.Namespace) -> int:
    """``--compare``: every row, the table, the targets met or not, and the chart if asked."""
    stores: list[str | None] = [None if s == "sqlite" else s for s in args.stores]
    rows = asyncio.run(compare(args.users, args.turns, stores, args.compare_workers, repeat=args.repeat))
    print(compare_table(rows))
    for key, target in COMPARE_TARGETS.items():
        values = [getattr(row, key) for row in rows if row.what == "serve.py" and getattr(row, key)]
        if key == "vs_sdk_floor":
            values = [row.vs_sdk_floor for row in rows if row.what == "serve.py" and row.workers == 1]
        met = bool(values) and all(v is not None and v >= target for v in values)
        shown = ", ".join(f"{v:.2f}" for v in values if v is not None)
        verdict = ("met" if met else "not met") if values else "not measured"
        print(f"target {key} >= {target}: {verdict} ({shown})")
    for row in rows:
        for line in row.result.first_errors[:3]:
            print(f"  {row.what} {row.result.store} {row.workers}: {line}")
    print(
        f"Load average (1 min) at the end: {os.getloadavg()[0]:.1f}, other processes on the machine included"
    )
    if args.plot:
        path = charts.http_compare(
            [
                (
                    f"{r.what}\n{r.result.store.split(':')[0]}" if r.what == "serve.py" else r.what,
                    r.workers,
                    r.result.turns_per_s,
                )
                for r in rows
            ],
            Path(args.plot),
        )
        print(f"chart: {path}")
    bad = sum(row.bad for row in rows)
    print(f"COMPARE rows={len(rows)} bad={bad}")
    return 0 if bad == 0 else 1


def machine() -> str:
    """The machine, in one line, for the figures."""
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    system = f"{platform.system()} {platform.machine()}, Python {platform.python_version()}"
    return f"{os.cpu_count()} cores, {memory:.0f} GiB, {system}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="N users x T turns over HTTP against uvicorn serve:app.")
    parser.add_argument("--users", type=int, default=100)
    parser.add_argument("--turns", type=int, default=5)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--store", help="redis://... or postgresql://... (default: a SQLite file)")
    parser.add_argument("--keep", action="store_true", help="keep the sessions in the store afterwards")
    parser.add_argument(
        "--worker-healthcheck", type=int, help="uvicorn's --timeout-worker-healthcheck, seconds (default 5)"
    )
    parser.add_argument(
        "--compare",
        action="store_true",
        help="measure the in-process SDK floor, the HTTP floor and serve.py on each --stores entry, "
        "on each --compare-workers count, and print the table with the ratios",
    )
    parser.add_argument(
        "--stores",
        nargs="+",
        default=["sqlite"],
        help="with --compare: sqlite, redis://..., postgresql://...",
    )
    parser.add_argument("--compare-workers", nargs="+", type=int, default=[1, 2], help="with --compare")
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="with --compare: runs of every row, interleaved; each row's fastest is kept",
    )
    parser.add_argument("--plot", metavar="DIR", help="with --compare: write the chart into DIR")
    args = parser.parse_args(argv)
    if args.users < 1 or args.turns < 2 or args.workers < 1:
        parser.error("--users and --workers must be at least 1, --turns at least 2")
    print(f"Machine: {machine()}")
    # Stopped with SIGTERM, unwind like Ctrl-C does, so the server started here is stopped too.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    if args.compare:
        return compare_main(args)
    result = asyncio.run(run_load(args.users, args.turns, args.workers, args.store, keep=args.keep))
    print(
        f"{result.answered} turns in {result.seconds:.1f} s: {result.turns_per_s:.1f} turns/s, "
        f"p50 {result.percentile_ms(0.5):.0f} ms, p99 {result.percentile_ms(0.99):.0f} ms; "
        f"{result.errors} errors, {result.leaks} leaks, {result.interleaved} interleaved, "
        f"{result.lost} lost, "
        f"{result.recalled}/{result.users} recalled their fact; {result.restarts} worker restarts; "
        f"the clients used {result.client_cpu:.0f} CPU s"
    )
    print(
        f"Load average (5 min) at the end: {os.getloadavg()[1]:.1f}, other processes on the machine included"
    )
    for line in result.first_errors:
        print(f"  error: {line}")
    print(result.summary())
    clean = result.errors == result.leaks == result.interleaved == result.lost == result.restarts == 0
    return 0 if clean else 1


if __name__ == "__main__":
    sys.exit(main())
