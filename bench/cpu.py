"""CPU time per actor while a storm drains: whose work the drain is made of, and the shortest
drain that the machine's cores allow for that much work.

On a shared 2-core machine the service, the SMTP sink and the database server all run at once,
so a drain can be no shorter than their CPU seconds divided by the cores, however the work is
scheduled. Set beside the limit's drain, that bound says how close to the limit a target can
come at all, and which actor's CPU would have to shrink to come closer.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

import psutil

# Process names of the database server (its backends and helpers); SQLite runs in the service.
DATABASE_PROCESS_NAMES = frozenset({"postgres"})


class CpuMeter:
    """CPU seconds (user + system) of each actor's processes between start() and stop(), and
    how many cores the whole machine kept busy meanwhile. A database backend that starts in
    between (the service opens connections as a storm begins) counts from its start; a
    process that ends in between is left out."""

    def __init__(self, actors: dict[str, Iterable[int]], *, database: bool) -> None:
        self._actors = {name: list(pids) for name, pids in actors.items()}
        self._database = database
        self._processes: dict[str, list[psutil.Process]] = {}
        self._before: dict[int, float] = {}
        self._machine_before: float = 0.0
        self._began = 0.0

    def start(self) -> None:
        self._processes = {
            name: [process for pid in pids if (process := _process(pid)) is not None]
            for name, pids in self._actors.items()
        }
        if self._database:
            self._processes["database"] = _database_processes()
        self._before = {
            process.pid: seconds
            for processes in self._processes.values()
            for process in processes
            if (seconds := _cpu_seconds(process)) is not None
        }
        self._machine_before = _machine_busy_seconds()
        self._began = time.monotonic()

    def stop(self) -> dict[str, Any]:
        """The figures: the window, CPU seconds per actor, the machine's busy cores."""
        window = time.monotonic() - self._began
        if self._database:
            known = {process.pid for process in self._processes["database"]}
            started = [process for process in _database_processes() if process.pid not in known]
            self._before.update((process.pid, 0.0) for process in started)
            self._processes["database"] += started
        used: dict[str, float] = {}
        for name, processes in self._processes.items():
            total = 0.0
            for process in processes:
                before = self._before.get(process.pid)
                after = _cpu_seconds(process)
                if before is not None and after is not None:
                    total += after - before
            used[name] = total
        busy = _machine_busy_seconds() - self._machine_before
        return {
            "cpu_window_s": window,
            "cpu_s_by_actor": used,
            "machine_busy_cores": busy / window if window > 0 else None,
        }


def _database_processes() -> list[psutil.Process]:
    return [
        process
        for process in psutil.process_iter(["name"])
        if process.info["name"] in DATABASE_PROCESS_NAMES
    ]


def cores() -> int:
    return psutil.cpu_count() or 1


def _process(pid: int) -> psutil.Process | None:
    try:
        return psutil.Process(pid)
    except psutil.Error:
        return None


def _cpu_seconds(process: psutil.Process) -> float | None:
    try:
        times = process.cpu_times()
    except psutil.Error:
        return None
    return float(times.user + times.system)


def _machine_busy_seconds() -> float:
    times = psutil.cpu_times()
    # Linux counts guest time inside user time already; idle and iowait are not busy.
    busy = ("user", "nice", "system", "irq", "softirq", "steal")
    return float(sum(getattr(times, name, 0.0) for name in busy))
