"""Shared pieces of the benchmarks: statistics, tables, peer-harness paths,
and memory of a whole process tree (decode workers included)."""

from __future__ import annotations

import os
import statistics
import subprocess
import threading
import time
from pathlib import Path
from typing import Sequence


def peers_dir() -> Path:
    return Path(os.environ.get("PEERS_DIR") or Path(os.environ.get("TMPDIR", "/tmp")) / "sightline-peers")


def default_photos() -> Path:
    return peers_dir() / "photos"


def default_checkpoint() -> Path:
    return peers_dir() / "models" / "ViT-B-32_random.pt"


def require(path: Path, what: str) -> Path:
    if not path.exists():
        raise SystemExit(
            f"{what} not found at {path}. Build the peer harness first: "
            f"PEERS_DIR={peers_dir()} ../shared/bench-peers/setup.sh (about 7 minutes), or pass the path explicitly."
        )
    return path


def spread(values: Sequence[float]) -> str:
    """'median (min–max, n=N)'."""
    values = list(values)
    if not values:
        return "-"
    return f"{statistics.median(values):.2f} ({min(values):.2f}–{max(values):.2f}, n={len(values)})"


def percentiles(samples_ms: Sequence[float]) -> dict:
    s = sorted(samples_ms)

    def pct(p):
        return s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))]

    return {"p50": pct(50), "p90": pct(90), "p99": pct(99), "mean": statistics.fmean(s), "n": len(s)}


def table(headers: Sequence[str], rows: Sequence[Sequence]) -> str:
    cells = [[str(h) for h in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    line = lambda r: "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |"  # noqa: E731
    return "\n".join([line(cells[0]), "|" + "|".join("-" * (w + 2) for w in widths) + "|"] + [line(r) for r in cells[1:]])


def process_tree(root: int) -> list[int]:
    """``root`` and all its descendants (from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
                children.setdefault(ppid, []).append(int(entry))
            except (OSError, ValueError, IndexError):
                pass
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, []))
    return out


def _tree_memory(root: int) -> tuple[int, int]:
    """(summed RSS, summed PSS) in bytes over the process tree of ``root``."""
    rss = pss = 0
    for pid in process_tree(root):
        try:
            with open(f"/proc/{pid}/smaps_rollup") as f:
                for line in f:
                    if line.startswith("Rss:"):
                        rss += int(line.split()[1]) * 1024
                    elif line.startswith("Pss:"):
                        pss += int(line.split()[1]) * 1024
        except OSError:
            pass
    return rss, pss


def run_measured(cmd: Sequence[str], env=None) -> dict:
    """Run ``cmd``; wall time and the peak RSS/PSS of its whole process tree (sampled 10/s)."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True)
    peak = [0, 0]
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            rss, pss = _tree_memory(proc.pid)
            peak[0], peak[1] = max(peak[0], rss), max(peak[1], pss)
            stop.wait(0.1)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    out, err = proc.communicate()
    wall = time.perf_counter() - start
    stop.set()
    thread.join()
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(map(str, cmd))} failed ({proc.returncode}):\n{err[-3000:]}")
    return {"wall_s": wall, "peak_rss_mib": peak[0] / 2**20, "peak_pss_mib": peak[1] / 2**20, "stdout": out}
