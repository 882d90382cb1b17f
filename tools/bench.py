"""Benchmark: many simulated users on the offline model, per store and session pattern.

    python -m tools.bench --users 1000 --turns 10                     # recommended pattern vs naive
    python -m tools.bench --users 1000 --turns 10 --store redis://127.0.0.1:6379/15 --repeat 2
    python -m tools.bench --users 200 --turns 5 --pattern naive pooled --history-turns 0
    python -m tools.bench --plot docs --plot-users 100 300 1000 --pattern memory pooled

Patterns (each runs in a fresh, forked child process, so file descriptors and memory are its own;
``floor`` always, then by default ``memory``, ``naive`` and ``pooled``, plus ``store`` per ``--store``):

- ``floor``: the SDK alone, ``Runner.run`` with the history passed by hand, no session: what a
  turn costs before any store or ``run_turn``. Every other row is also given as a ratio to it.
- ``memory``: ``run_turn`` on a session kept in a Python list: ``run_turn``'s own cost.
- ``naive``: one ``SQLiteSession`` per user on one file, open for the whole conversation, each
  turn a plain ``Runner.run(agent, message, session=session)``: what the SDK's examples suggest.
  Each session keeps a connection per executor thread that touched it.
- ``pooled`` (recommended on one machine): ``run_turn`` on sessions from a ``SQLitePool``
  (multisessions/stores): a handle holds no connection; every turn starts and commits through the
  file's one connection in this process (``SQLiteTurns``, two calls per turn).
- ``sqlalchemy``: the SDK's ``SQLAlchemySession`` on one shared ``sqlite+aiosqlite`` engine
  (one bounded connection pool).
- ``store``: whatever each ``--store URL`` names (Redis, PostgreSQL), one shared client or pool.
  A store keeps the bench's sessions between rounds: they are deleted before the clock starts.

All but ``naive`` let at most ``--gate`` turns run at once. Every user states a unique fact,
chats, and asks for it back; a model input holding another user's fact is a leak, a wrong answer
is an error. ``--repeat N`` runs every pattern N times, interleaved so that a change in the
machine's load hits them alike, and keeps each one's best round (errors and leaks add up over
all rounds). Then a history benchmark measures turn latency at turn 10 and turn N with and
without a history cap. ``--plot DIR`` runs at each of ``--plot-users`` instead of ``--users`` and
writes two PNG charts there (tools/charts.py; needs requirements-bench.txt). ``--startup N``
also times the default ``python agent.py`` against ``python -c "import agents"``. The last line is
machine-readable, for the last pattern run (the recommended one, or the last ``--store``):
``RESULT users=N turns=T store=... turns_per_s=... floor_ratio=... p50_ms=... p99_ms=...
peak_fds=... errors=E leaks=L`` (one line).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from agents import Agent, RunConfig, SessionSettings, SQLiteSession, set_tracing_disabled
from agents.memory import Session

from multisessions import (
    OfflineModel,
    SessionStore,
    SQLitePool,
    close_session,
    open_store,
    run_turn,
    user_session_id,
)
from multisessions.summaries import Summaries
from tools import charts
from tools.workload import LeakWatch, ListSession, Turn, converse, plain_turn, turn_by_hand

PATTERNS = ["floor", "memory", "naive", "pooled", "sqlalchemy", "store"]


def open_fds() -> int:
    """File descriptors this process holds right now."""
    return len(os.listdir("/proc/self/fd"))


class FdSampler(threading.Thread):
    """Samples open file descriptors every few milliseconds; ``peak`` is the highest seen."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.peak = open_fds()
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.wait(0.005):
            self.peak = max(self.peak, open_fds())

    def stop(self) -> int:
        self._halt.set()
        self.join()
        return max(self.peak, open_fds())


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0-100) of ``values``, by nearest rank."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))] if ordered else 0.0


async def run_users(
    pattern: str, users: int, turns: int, db: Path, store_url: str | None, gate: int
) -> dict[str, Any]:
    """Run ``users`` concurrent conversations of ``turns`` turns; returns the figures."""
    set_tracing_disabled(True)
    model = LeakWatch()
    config = RunConfig(model=model)
    agent = Agent(name="Support Agent", instructions="Remember what the customer says.")
    store = pool = None
    # The naive pattern runs every turn at once, as it is usually written; the others let at
    # most ``gate`` turns run at once, as a server's worker pool (and the model's rate limit) would.
    turns_at_once = asyncio.Semaphore(users if pattern == "naive" else gate)
    turn: Turn = {"floor": turn_by_hand, "naive": plain_turn}.get(pattern, run_turn)
    if pattern == "pooled":
        pool = SQLitePool(db, max_open=8)
    elif pattern == "sqlalchemy":
        store = open_store(f"sqlite+aiosqlite:///{db}")
    elif pattern == "store":
        store = open_store(store_url)
        await store.check()
    session_ids = [user_session_id(f"bench{i}") for i in range(users)]
    errors = 0
    if store is not None:
        # An earlier round's conversations are removed before the clock starts: clearing is not a
        # turn, and the floor has nothing to clear (it cost PostgreSQL ~2% of the round's CPU).
        errors += await clear_sessions(store, session_ids, turns_at_once)
    latencies: list[float] = []
    sampler = FdSampler()
    sampler.start()

    async def serve(i: int) -> None:
        nonlocal errors
        session_id = session_ids[i]
        session: Session | None = None
        try:
            if pattern in ("floor", "memory"):
                session = ListSession(session_id)
            elif pool is not None:
                session = pool.session(session_id)
            elif store is not None:
                session = store.open(session_id)
            else:
                session = SQLiteSession(session_id, db)
            outcome = await converse(i, turns, agent, session, config, turn=turn, gate=turns_at_once)
            latencies.extend(outcome.latencies)
            errors += outcome.errors + (not outcome.recalled)
        except Exception:
            errors += 1
        finally:
            try:
                if session is not None:
                    await close_session(session)
            except Exception:
                errors += 1

    started = time.perf_counter()
    await asyncio.gather(*(serve(i) for i in range(users)))
    elapsed = time.perf_counter() - started
    peak_fds = sampler.stop()
    if store is not None:
        await store.close()
    return {
        "pattern": pattern,
        "store": store_label(pattern, store.name if store else None, db),
        "users": users,
        "turns": users * turns,
        "seconds": round(elapsed, 2),
        "turns_per_s": round(users * turns / elapsed, 1),
        "p50_ms": round(percentile(latencies, 50) * 1000, 1),
        "p99_ms": round(percentile(latencies, 99) * 1000, 1),
        "peak_fds": peak_fds,
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "errors": errors,
        "leaks": model.leaks,
    }


async def clear_sessions(store: SessionStore, session_ids: list[str], gate: asyncio.Semaphore) -> int:
    """Delete ``session_ids`` from ``store`` (at most ``gate`` at once); returns how many failed."""

    async def clear(session_id: str) -> int:
        try:
            async with gate:
                await store.delete(session_id)
            return 0
        except Exception:
            return 1

    return sum(await asyncio.gather(*(clear(session_id) for session_id in session_ids)))


def store_label(pattern: str, store_name: str | None, db: Path) -> str:
    """Where the pattern's sessions live, in a few words."""
    if pattern == "floor":
        return "none"
    if pattern == "memory":
        return "memory"
    if store_name is None:
        return f"sqlite {db.name}"
    return store_name.split(" (")[0].replace(str(db.parent) + "/", "")


async def history_cost(
    db: Path, users: int, turns: int, cap: int | None, *, summarized: bool = False
) -> dict[str, Any]:
    """Turn latency against history length: no cap, a history cap, or a summary before a window
    of ``cap`` items (``summarized``; the turns that fold the summary are timed too).

    Sessions run one after another (so a turn's latency is its own cost, not a queue), and the
    p99 "at turn N" is taken over turns N-9..N of every session, 10 samples per session. Turn 1
    gives a name; after the last turn each session is asked for it (not timed): ``recalled``.
    """
    set_tracing_disabled(True)
    settings = SessionSettings(limit=cap) if cap and not summarized else None
    config = RunConfig(model=OfflineModel(), session_settings=settings)
    summaries = Summaries(window=cap, threshold=cap) if summarized and cap else None
    agent = Agent(name="Assistant")
    by_turn: dict[int, list[float]] = {}
    recalled = 0
    for u in range(users):
        session = SQLiteSession(f"thread_history{u}_{cap}_{summarized}", db)
        for t in range(1, turns + 1):
            message = "Hi, my name is Kai." if t == 1 else f"Note {t}: my order number is {t}."
            started = time.perf_counter()
            await run_turn(agent, session, message, run_config=config, summaries=summaries)
            by_turn.setdefault(t, []).append(time.perf_counter() - started)
        answer = await run_turn(agent, session, "What's my name?", run_config=config, summaries=summaries)
        recalled += "Kai" in str(answer.final_output)
        session.close()

    def p99_at(turn: int) -> float:
        window = [x for t in range(max(1, turn - 9), turn + 1) for x in by_turn[t]]
        return percentile(window, 99) * 1000

    marks = sorted({t for t in (10, 50, 100, turns) if 10 <= t <= turns})
    p99 = {t: p99_at(t) for t in marks}
    series = sorted({*range(10, turns + 1, 10), turns}) if turns >= 10 else [turns]
    return {
        "cap": f"summary, window {cap}" if summaries else cap or "none",
        "recalled_turn1": f"{recalled}/{users}",
        "p99_ms_by_turn": {t: round(p99_at(t), 2) for t in series},  # for the chart
        **{f"p99_ms_turn{t}": round(p99[t], 1) for t in marks},
        f"p99_turn{turns}_over_turn10": round(p99[turns] / p99[10], 2) if 10 in p99 else None,
    }


def _child(kind: str, args: argparse.Namespace, job: dict[str, Any], write_fd: int) -> None:
    """One measurement in a fresh (forked) process; sends its figures as one JSON line."""
    try:
        if kind == "history":
            figures = asyncio.run(
                history_cost(
                    job["db"],
                    args.history_users,
                    args.history_turns,
                    job["cap"],
                    summarized=job["summarized"],
                )
            )
        else:
            figures = asyncio.run(
                run_users(kind, job["users"], args.turns, job["db"], job["store"], args.gate)
            )
    except BaseException as exc:  # report, do not die silently: the parent prints it in the table
        figures = {"pattern": kind, "errors": 1, "failed": f"{type(exc).__name__}: {exc}"}
    os.write(write_fd, json.dumps(figures).encode())
    os.close(write_fd)
    os._exit(0)


def measure(
    kind: str,
    args: argparse.Namespace,
    folder: Path,
    *,
    users: int | None = None,
    store: str | None = None,
    cap: int | None = None,
    summarized: bool = False,
) -> dict[str, Any]:
    """Run one measurement in a fresh child process: its own descriptors, memory and limits.

    The child is forked, not started anew: it inherits the imported SDK instead of paying ~2 s
    to import it again, and it starts with the few descriptors this process holds. Each
    measurement gets a new SQLite file, so a repeated round does not start on the last one's rows.
    """
    db = Path(tempfile.mkdtemp(dir=folder)) / (f"{kind}-cap{cap}.db" if cap else f"{kind}.db")
    job = {"db": db, "users": users or args.users, "store": store, "cap": cap, "summarized": summarized}
    read_fd, write_fd = os.pipe()
    process = multiprocessing.get_context("fork").Process(
        target=_child, args=(kind, args, job, write_fd), daemon=True
    )
    process.start()
    os.close(write_fd)
    data = b""
    while chunk := os.read(read_fd, 65536):
        data += chunk
    os.close(read_fd)
    process.join()
    if not data:
        return {"pattern": kind, "errors": 1, "failed": f"the child process died (exit {process.exitcode})"}
    figures: dict[str, Any] = json.loads(data)
    return figures


def load() -> str:
    """The machine's 1-minute load average, to print beside every figure."""
    return f"{os.getloadavg()[0]:.1f}"


def run_patterns(
    jobs: list[tuple[str, str | None]], args: argparse.Namespace, folder: Path, users: int
) -> list[dict[str, Any]]:
    """Every job ``--repeat`` times, interleaved; each job's best round, with ``floor_ratio``.

    Errors and leaks add up over the rounds. ``floor_ratio`` is a row's turns/s over the floor's
    (``jobs[0]``), both the best of the same interleaved rounds.
    """
    best: list[dict[str, Any]] = [{} for _ in jobs]
    for round_ in range(1, args.repeat + 1):
        for index, (kind, store) in enumerate(jobs):
            print(
                f"running {kind} at {users} users (round {round_}/{args.repeat}, load {load()}) ...",
                flush=True,
            )
            row = measure(kind, args, folder, users=users, store=store)
            print("  " + json.dumps(row), flush=True)
            kept = best[index]
            faults = {k: kept.get(k, 0) + row.get(k, 0) for k in ("errors", "leaks")}
            if not kept or row.get("turns_per_s", 0) > kept.get("turns_per_s", 0):
                kept = row
            best[index] = {**kept, **faults}
    floor = best[0].get("turns_per_s", 0)
    for row in best:
        row["floor_ratio"] = round(row.get("turns_per_s", 0) / floor, 2) if floor else 0
    return best


PROJECT = Path(__file__).resolve().parent.parent
STARTUP_COMMANDS = {  # name in the figures: the command
    "import_agents": [sys.executable, "-c", "import agents"],
    "agent_py": [sys.executable, str(PROJECT / "agent.py")],
}


def startup_cost(runs: int) -> dict[str, Any]:
    """Wall time of ``python -c "import agents"`` and of the default ``python agent.py`` (every demo,
    offline), alternated ``runs`` times, each in a new empty folder with no model settings.

    Returns each command's best and median seconds and ``ratio``: agent.py's median over the
    import's. A command that fails ends the measurement with its last line of errors."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "SESSION_"))}
    times: dict[str, list[float]] = {name: [] for name in STARTUP_COMMANDS}
    for _ in range(runs):
        for name, command in STARTUP_COMMANDS.items():
            with tempfile.TemporaryDirectory() as folder:
                started = time.perf_counter()
                done = subprocess.run(command, cwd=folder, env=env, capture_output=True, text=True)
                times[name].append(time.perf_counter() - started)
            if done.returncode != 0:
                last = (done.stderr.strip().splitlines() or ["no output"])[-1]
                return {"errors": 1, "failed": f"{name} exited {done.returncode}: {last}"}
    figures: dict[str, Any] = {}
    for name, values in times.items():
        figures[f"{name}_best_s"] = round(min(values), 3)
        figures[f"{name}_median_s"] = round(statistics.median(values), 3)
    figures["ratio"] = round(
        statistics.median(times["agent_py"]) / statistics.median(times["import_agents"]), 2
    )
    figures["errors"] = 0
    return figures


COLUMNS = ["pattern", "store", "turns_per_s", "floor_ratio", "p50_ms", "p99_ms", "peak_fds"]
COLUMNS += ["peak_rss_mb", "errors", "leaks"]


def print_table(rows: list[dict[str, Any]]) -> None:
    """The figures as a Markdown table, and any pattern's failure under it."""
    print("| " + " | ".join(COLUMNS) + " |")
    print("|" + "---|" * len(COLUMNS))
    for row in rows:
        print("| " + " | ".join(str(row.get(c, "-")) for c in COLUMNS) + " |")
    for row in rows:
        if "failed" in row:
            print(f"  {row['pattern']} failed: {row['failed']}")


def main(argv: list[str] | None = None) -> int:
    """Run the patterns side by side and print a table, then the RESULT line."""
    parser = argparse.ArgumentParser(description="Many simulated users per store and session pattern.")
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--turns", type=int, default=10)
    parser.add_argument(
        "--store",
        action="append",
        default=[],
        metavar="URL",
        help="also run on this store (redis://, postgresql://); repeat it for several stores",
    )
    parser.add_argument("--pattern", nargs="+", choices=PATTERNS, default=None)
    parser.add_argument("--gate", type=int, default=64, help="most turns at once (not for naive)")
    parser.add_argument(
        "--repeat", type=int, default=1, help="rounds, interleaved; each pattern's best is kept"
    )
    parser.add_argument("--history-turns", type=int, default=200, help="0 skips the history benchmark")
    parser.add_argument("--history-users", type=int, default=10)
    parser.add_argument("--cap", type=int, default=20, help="history cap (items) for the history benchmark")
    parser.add_argument(
        "--startup",
        type=int,
        default=0,
        metavar="N",
        help='also time `python agent.py` against `python -c "import agents"`, N runs each',
    )
    parser.add_argument(
        "--plot", metavar="DIR", help="write PNG charts to DIR (pip install -r requirements-bench.txt)"
    )
    parser.add_argument(
        "--plot-users",
        type=int,
        nargs="+",
        default=[100, 300, 1000, 3000],
        metavar="N",
        help="with --plot: the user counts to run and chart (instead of --users)",
    )
    args = parser.parse_args(argv)
    if args.turns < 2 or args.users < 1 or args.repeat < 1 or min(args.plot_users) < 1:
        parser.error("--users, --plot-users and --repeat must be at least 1, and --turns at least 2")
    patterns = args.pattern or ["memory", "naive", "pooled"] + (["store"] if args.store else [])
    if "store" in patterns and not args.store:
        parser.error("--pattern store needs --store URL")
    if args.plot and not charts.available():
        print(f"error: --plot needs matplotlib; {charts.INSTALL_HINT}", file=sys.stderr)
        return 2
    jobs: list[tuple[str, str | None]] = [("floor", None)]  # every run measures its own floor, first
    for kind in dict.fromkeys(patterns):
        if kind == "store":
            jobs += [("store", url) for url in args.store]
        elif kind != "floor":
            jobs.append((kind, None))

    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    print(
        f"{args.users} users x {args.turns} turns, offline model, {os.cpu_count()} cores, "
        f"ulimit -n {soft}, load {load()}"
    )
    by_users: dict[int, list[dict[str, Any]]] = {}
    history: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for users in sorted(set(args.plot_users)) if args.plot else [args.users]:
            by_users[users] = run_patterns(jobs, args, Path(tmp), users)
        if args.history_turns:
            for cap, summarized in ((None, False), (args.cap, False), (args.cap, True)):
                how = f"summary before a window of {cap}" if summarized else f"cap {cap}"
                print(
                    f"history: {args.history_users} sessions x {args.history_turns} turns, {how} "
                    f"(load {load()}) ...",
                    flush=True,
                )
                history.append(measure("history", args, Path(tmp), cap=cap or None, summarized=summarized))
                print("  " + json.dumps(history[-1]), flush=True)

    startup: dict[str, Any] = {}
    if args.startup:
        print(f"startup: {args.startup} runs of each command, alternated (load {load()}) ...", flush=True)
        startup = startup_cost(args.startup)
        print("  " + json.dumps(startup), flush=True)

    for users, rows in by_users.items():
        print(f"\n{users} users x {args.turns} turns, best of {args.repeat}, load {load()} at the end:")
        print_table(rows)
    if args.plot:
        for path in charts.write_charts(Path(args.plot), by_users, history, args.turns, args.gate):
            print(f"chart: {path}")
    users = max(by_users)
    rows = by_users[users]
    last = {"turns_per_s": 0, "p50_ms": 0, "p99_ms": 0, "peak_fds": 0, "leaks": 0, **rows[-1]}
    store = str(last.get("store", last["pattern"])).replace(" ", ":")
    print(
        f"RESULT users={users} turns={args.turns} store={store} turns_per_s={last['turns_per_s']} "
        f"floor_ratio={last['floor_ratio']} p50_ms={last['p50_ms']} p99_ms={last['p99_ms']} "
        f"peak_fds={last['peak_fds']} errors={last['errors']} leaks={last['leaks']}"
    )
    # Every pattern but naive must hold (naive failing under a small ulimit is a finding).
    held = all(
        row.get("errors") == 0 and row.get("leaks") == 0
        for rows_at in by_users.values()
        for row in rows_at
        if row["pattern"] != "naive"
    )
    return 0 if held and not startup.get("errors") else 1


if __name__ == "__main__":
    sys.exit(main())
