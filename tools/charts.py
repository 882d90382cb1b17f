"""The benchmark's two PNG charts (``python -m tools.bench --plot DIR``); matplotlib is optional.

- ``throughput_by_users.png``: turns/s of every pattern and store against concurrent users, the
  floor (the SDK alone) drawn dashed.
- ``p99_by_history.png``: p99 turn latency against the turn number (history length), with and
  without a history cap.
"""

from __future__ import annotations

from pathlib import Path
from types import ModuleType
from typing import Any

plt: ModuleType | None
try:
    import matplotlib

    matplotlib.use("Agg")  # files only: no display needed
    from matplotlib import pyplot

    plt = pyplot
except ImportError:  # bench.py turns this into one line naming the requirements file
    plt = None

INSTALL_HINT = "pip install -r requirements-bench.txt"
THROUGHPUT_PNG = "throughput_by_users.png"
HISTORY_PNG = "p99_by_history.png"


def available() -> bool:
    """Whether matplotlib can be imported."""
    return plt is not None


def label(row: dict[str, Any]) -> str:
    """A legend entry for one pattern's row."""
    store = str(row.get("store", "")).split(" ")[0]
    if row["pattern"] == "floor":
        return "floor: Runner.run, history by hand"
    if row["pattern"] == "memory":
        return "run_turn, in-memory list session"
    if row["pattern"] == "store":
        return f"run_turn, {store}"
    return f"run_turn, {row['pattern']} ({store})"


def write_charts(
    folder: Path,
    by_users: dict[int, list[dict[str, Any]]],
    history: list[dict[str, Any]],
    turns: int,
    gate: int,
) -> list[Path]:
    """Write both charts into ``folder``; the paths written (the history one only with ``history``)."""
    if plt is None:
        raise RuntimeError(f"the charts need matplotlib: {INSTALL_HINT}")
    folder.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []

    users = sorted(by_users)
    fig, ax = plt.subplots(figsize=(10, 5), dpi=110)
    for index, first in enumerate(by_users[users[0]]):
        values = [by_users[u][index].get("turns_per_s", 0) for u in users]
        style: dict[str, Any] = {"color": "black", "linestyle": "--"} if first["pattern"] == "floor" else {}
        ax.plot(users, values, marker="o", label=label(first), **style)
    ax.set_xscale("log")
    ax.set_xticks(users, [f"{u:,}" for u in users])
    ax.minorticks_off()
    ax.set_ylim(bottom=0)
    ax.set_xlabel(f"concurrent users (at most {gate} turns at once; naive: all)")
    ax.set_ylabel("turns per second (higher is better)")
    ax.set_title(f"Throughput per store, {turns} turns per user, offline model")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))  # beside the lines, not on them
    fig.tight_layout()
    written.append(folder / THROUGHPUT_PNG)
    fig.savefig(written[-1])
    plt.close(fig)

    if history:
        fig, ax = plt.subplots(figsize=(8, 5), dpi=110)
        for row in history:
            series = {int(t): float(v) for t, v in row.get("p99_ms_by_turn", {}).items()}
            cap = row.get("cap", "none")
            name = (
                "no history cap"
                if cap == "none"
                else str(cap)
                if str(cap).startswith("summary")
                else f"history cap: {cap} items"
            )
            ax.plot(list(series), list(series.values()), marker=".", label=name)
        ax.set_ylim(bottom=0)
        ax.set_xlabel("turn number (the history grows by 2 items a turn)")
        ax.set_ylabel("p99 turn latency, ms (over turns N-9..N)")
        ax.set_title("Turn latency against history length, one session at a time (SQLite)")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=9, loc="upper left")
        fig.tight_layout()
        written.append(folder / HISTORY_PNG)
        fig.savefig(written[-1])
        plt.close(fig)
    return written


HTTP_PNG = "http_vs_floor.png"


def http_compare(rows: list[tuple[str, int, float]], folder: Path) -> Path:
    """``http_vs_floor.png``: turns/s of each (what, workers) row of ``loadtest --compare``."""
    if plt is None:
        raise RuntimeError(f"matplotlib is needed for charts: {INSTALL_HINT}")
    labels = [
        (what if workers == 0 else f"{what}\n{workers} worker{'s' if workers > 1 else ''}").replace(
            " (", "\n("
        )
        for what, workers, _ in rows
    ]
    values = [value for _, _, value in rows]
    colors = ["#888888" if "floor" in what else "#1f77b4" for what, _, _ in rows]
    figure, axes = plt.subplots(figsize=(max(6.0, 1.1 * len(rows)), 4.0))
    axes.bar(range(len(rows)), values, color=colors)
    axes.set_xticks(range(len(rows)), labels, fontsize=7)
    axes.set_ylabel("turns/s")
    axes.set_title("Turns/s: serve.py per store against the floors (grey)")
    for x, value in enumerate(values):
        axes.text(x, value, f"{value:.0f}", ha="center", va="bottom", fontsize=7)
    figure.tight_layout()
    path = folder / HTTP_PNG
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path
