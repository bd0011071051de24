"""CPU accounting for ``bench/load.py``: the server's processes, PostgreSQL's backends, the load
generator and the whole machine, from ``/proc``, and latency grouped by what else the machine ran."""

from __future__ import annotations

import itertools
import os
import resource
import threading
import time
from pathlib import Path
from typing import Any

from bench.traffic import Stats, percentile

TICKS = os.sysconf("SC_CLK_TCK")


def children(pid: int) -> list[int]:
    """Every descendant of ``pid`` (from /proc)."""
    found: list[int] = []
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            for child in (task / "children").read_text().split():
                found += [int(child), *children(int(child))]
    except OSError:
        pass
    return found


def cpu_seconds(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime + stime
    return total / TICKS


def machine_busy() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine so far."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + values[4]
    return (sum(values) - idle) / TICKS, sum(values) / TICKS


def generator_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class CpuSampler:
    """Once a second: CPU seconds used so far by the server, PostgreSQL, this process and the machine.

    The machine is shared: whatever else runs takes CPU from the server. Latency is then reported
    per band of "everything else" CPU over the one-second windows (see :func:`by_contention`).
    """

    def __init__(self, server: list[int], backends: list[int]) -> None:
        self.server, self.backends = server, backends
        self.samples: list[tuple[float, float, float, float, float]] = []
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def sample(self) -> None:
        busy, _ = machine_busy()
        self.samples.append(
            (time.perf_counter(), cpu_seconds(self.server), cpu_seconds(self.backends), generator_cpu(), busy)
        )

    def _run(self) -> None:
        self.sample()
        while not self.done.wait(1.0):
            self.sample()
        self.sample()

    def __enter__(self) -> CpuSampler:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.done.set()
        self.thread.join()


BANDS = ((0.0, 0.25), (0.25, 0.5), (0.5, 1.0), (1.0, 99.0))


def by_contention(sampler: CpuSampler, stats: Stats) -> list[dict[str, Any]]:
    """Latency of the calls that ended in one-second windows, grouped by how many cores everything
    other than the server, PostgreSQL and the load generator used in the window."""
    windows: list[tuple[float, float, float]] = []  # start, end, other cores
    for before, after in itertools.pairwise(sampler.samples):
        seconds = after[0] - before[0]
        if seconds < 0.5:  # the last sample, taken as the run ends
            continue
        ours = sum(after[i] - before[i] for i in (1, 2, 3))
        windows.append((before[0], after[0], max(0.0, (after[4] - before[4] - ours) / seconds)))
    rows = []
    for low, high in BANDS:
        chosen = [(start, end) for start, end, other in windows if low <= other < high]
        if not chosen:
            continue
        latencies = [
            latency
            for latency, ended in zip(stats.latencies, stats.finished, strict=True)
            if any(start <= ended < end for start, end in chosen)
        ]
        rows.append(
            {
                "other_cores": f"{low:g}–{high:g}" if high < 99 else f"≥{low:g}",
                "seconds": round(sum(end - start for start, end in chosen)),
                "calls": len(latencies),
                "p50_ms": round(percentile(latencies, 0.50) * 1000, 1),
                "p99_ms": round(percentile(latencies, 0.99) * 1000, 1),
            }
        )
    return rows
