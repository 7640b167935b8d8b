"""Several scheduler_app processes on one database, driven as one target: started and stopped
together, posted to on every port, asked who leads (GET /admin/cluster)."""

from __future__ import annotations

import json
import os
import signal
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.common import ADMIN_HEADERS
from bench.targets import SchedulerApp, TargetError

# How often the harness looks at GET /admin/cluster while it waits for a new leader.
LOOK_EVERY_S = 0.01


def cluster_view(url: str, timeout_s: float = 2.0) -> dict[str, Any] | None:
    """GET /admin/cluster of one process; None when it does not answer 200."""
    request = urllib.request.Request(url + "/admin/cluster", headers=ADMIN_HEADERS)  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:  # noqa: S310
            body: dict[str, Any] = json.loads(response.read())
            return body
    except (OSError, urllib.error.URLError, ValueError):
        return None


@dataclass(frozen=True)
class Leader:
    id: str
    term: int
    member: SchedulerApp


class SchedulerAppCluster:
    """`size` scheduler_app processes on one database, each in a folder of its own under
    run_dir; `extra_env` is added to each one's environment. It offers what the delivery and
    enqueue scenarios ask of a target (url, urls, pids, start, stop, pending ...)."""

    name = "scheduler_app"

    def __init__(
        self,
        run_dir: Path,
        database_url: str,
        sink_port: int,
        size: int,
        extra_env: dict[str, str] | None = None,
    ) -> None:
        self.members = [
            SchedulerApp(run_dir / f"process-{n}", database_url, sink_port) for n in range(size)
        ]
        for member in self.members:
            member.extra_env = dict(extra_env or {})
        self.database_url = database_url
        # Killed but not reaped (kill_lingering): never polled, which would reap them.
        self.lingering: set[SchedulerApp] = set()

    @property
    def running(self) -> list[SchedulerApp]:
        return [
            m
            for m in self.members
            if m not in self.lingering and m.child is not None and m.child.alive()
        ]

    @property
    def url(self) -> str:
        return self.running[0].url

    @property
    def urls(self) -> list[str]:
        return [member.url for member in self.running]

    @property
    def pid(self) -> int:
        return self.running[0].pid

    @property
    def pids(self) -> list[int]:
        return [member.pid for member in self.running]

    @property
    def peak_rss(self) -> list[int]:
        return [rss for member in self.members for rss in member.peak_rss]

    def start(self) -> float:
        """Start every process, one after the other (the first migrates the database); the
        first one's start-up time."""
        first, *others = self.members
        startup = first.start()
        for member in others:
            member.start()
        return startup

    def use_job_module(self, source: Path) -> None:
        for member in self.members:
            member.use_job_module(source)

    def record_rss(self) -> None:
        for member in self.members:
            member.record_rss()

    def stop(self) -> int | None:
        """Stop every process; the first non-zero exit code, else 0 (None if none ran)."""
        codes = [member.stop() for member in self.members]
        ran = [code for code in codes if code is not None]
        return next((code for code in ran if code != 0), 0) if ran else None

    def pending(self, due_before: float | None = None) -> int | None:
        return self.members[0].pending(due_before)

    def status_counts(self) -> dict[str, Any]:
        return self.members[0].status_counts()

    def by_pid(self, pid: int) -> SchedulerApp | None:
        for member in self.members:
            if member.child is not None and member.child.pid == pid:
                return member
        return None

    def leader(self, via: SchedulerApp) -> Leader | None:
        """Who leads, as one process answers; None when nobody does or it does not answer."""
        view = cluster_view(via.url)
        if view is None or view.get("leader") is None:
            return None
        leader_id = view["leader"]["id"]
        for process in view["processes"]:
            if process["id"] == leader_id:
                member = self.by_pid(process["pid"])
                if member is not None:
                    return Leader(leader_id, int(view["leader"]["term"]), member)
        return None

    def wait_for_leader(
        self, via: SchedulerApp, other_than: Leader | None, timeout_s: float
    ) -> tuple[Leader, float]:
        """The leader once one leads (another one than other_than, under a later term, when
        given), and the time.time() at which `via` first showed it."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            leader = self.leader(via)
            if leader is not None and (
                other_than is None
                or (leader.member is not other_than.member and leader.term > other_than.term)
            ):
                return leader, time.time()
            time.sleep(LOOK_EVERY_S)
        raise TargetError(f"no new leader within {timeout_s:g} s")

    def kill_lingering(self, member: SchedulerApp) -> None:
        """SIGKILL without reaping the process: its pid lingers (a zombie) until reap(), so
        the other processes of this host cannot tell that it died and wait for its lease to
        run out, as processes on other hosts would."""
        member.record_rss()
        if member.child is None:
            raise TargetError("not running")
        os.kill(member.child.pid, signal.SIGKILL)
        self.lingering.add(member)

    def reap(self, member: SchedulerApp) -> None:
        if member.child is not None:
            member.child.process.wait(timeout=30)
        member.child = None
        self.lingering.discard(member)
