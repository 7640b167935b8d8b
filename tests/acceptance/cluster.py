"""Several real `scheduler-app serve` processes on one database: a cluster the tests can ask who
leads, kill, stop, wake and post work to, each process on a port and in a folder of its own."""

from __future__ import annotations

import asyncio
import os
import signal
from collections import defaultdict
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from email.message import Message
from pathlib import Path
from typing import Any, NoReturn

import httpx
import pytest

from tests.acceptance.service import Service, service_environment
from tests.support import wait_until

# A short lease where a test waits for one to run out or be taken over.
LEASE_S = 2.0
# How often a test looks at the cluster while it waits for a change of leader.
LOOK_EVERY_S = 0.02
LOG_LINES_EACH = 25


@dataclass(frozen=True)
class Leader:
    """The leader as GET /admin/cluster shows it, and the test's process that it is."""

    id: str
    term: int
    service: Service


class Cluster:
    """`size` processes of one service on one database; each keeps its own log and folder.

    files: written into every process's folder, beside its configuration file (a module that
    `job_modules` names is imported from there).
    """

    def __init__(
        self,
        root: Path,
        database_url: str,
        size: int,
        extra: Mapping[str, str] | None = None,
        config: str = "",
        files: Mapping[str, str] | None = None,
    ) -> None:
        self.services: list[Service] = []
        for number in range(size):
            workdir = root / f"process-{number}"
            workdir.mkdir(parents=True)
            for name, text in (files or {}).items():
                (workdir / name).write_text(text)
            variables = service_environment(workdir, database_url, extra)
            self.services.append(Service(workdir, variables, config=config))
        self.lingering: set[Service] = set()

    def start(self) -> None:
        """Start every process: the first alone (it migrates the database), then the others
        together."""
        first, *others = self.services
        first.start()
        with ThreadPoolExecutor(max(len(others), 1)) as starting:
            for started in [starting.submit(service.start) for service in others]:
                started.result()

    def close(self) -> None:
        """Kill and reap every process, whatever state it is in (SIGKILL ends a stopped one)."""
        self.lingering.clear()
        for service in self.services:
            service.close()

    @property
    def running(self) -> list[Service]:
        # A lingering process is dead: not polled, which would reap it.
        return [s for s in self.services if s not in self.lingering and s.running]

    def kill_lingering(self, service: Service) -> None:
        """SIGKILL, leaving the dead process unreaped until reap(): its pid goes on existing (a
        zombie), so the processes of this host cannot tell that it died and wait for its lease
        to run out, as those of other hosts would."""
        assert service.process is not None
        service.process.send_signal(signal.SIGKILL)
        self.lingering.add(service)

    def reap(self, service: Service) -> None:
        assert service.process is not None
        service.process.wait(timeout=10)
        service.process = None
        self.lingering.discard(service)

    def pause(self, service: Service) -> None:
        """SIGSTOP: the process stands still (a long GC pause, a VM frozen), holding what it
        holds."""
        assert service.process is not None
        os.kill(service.process.pid, signal.SIGSTOP)

    def resume(self, service: Service) -> None:
        assert service.process is not None
        os.kill(service.process.pid, signal.SIGCONT)

    @property
    def urls(self) -> list[str]:
        return [service.base_url for service in self.running]

    def by_pid(self, pid: int) -> Service | None:
        for service in self.services:
            if service.process is not None and service.process.pid == pid:
                return service
        return None

    def view(self, via: Service) -> dict[str, Any] | None:
        """GET /admin/cluster through one process; None when it does not answer 200."""
        try:
            with httpx.Client(base_url=via.base_url, timeout=2.0) as client:
                response = client.get("/admin/cluster", headers=Service.admin_headers())
        except httpx.TransportError:
            return None
        if response.status_code != 200:
            return None
        body: dict[str, Any] = response.json()
        return body

    def leader(self, via: Service) -> Leader | None:
        """Who leads, as one process answers; None when nobody does (or it cannot tell)."""
        view = self.view(via)
        if view is None or view["leader"] is None:
            return None
        leader_id = view["leader"]["id"]
        for process in view["processes"]:
            if process["id"] == leader_id:
                service = self.by_pid(process["pid"])
                if service is not None:
                    return Leader(leader_id, view["leader"]["term"], service)
        return None

    def role(self, service: Service) -> str | None:
        """The role GET /readyz reports (also while it answers 503); None without an answer."""
        try:
            with httpx.Client(base_url=service.base_url, timeout=2.0) as client:
                response = client.get("/readyz")
        except httpx.TransportError:
            return None
        role: str | None = response.json().get("role")
        return role

    def wait_for_leader(
        self,
        *,
        via: Service | None = None,
        other_than: Leader | None = None,
        timeout_s: float = 15.0,
    ) -> Leader:
        """The leader once one leads (another process than other_than, under a later term,
        when given), as `via` (any running process otherwise) shows it."""

        def probe() -> Leader | None:
            for service in [via] if via is not None else self.running:
                leader = self.leader(service)
                if leader is None:
                    continue
                if other_than is None or (
                    leader.service is not other_than.service and leader.term > other_than.term
                ):
                    return leader
            return None

        try:
            return wait_until(probe, timeout_s=timeout_s, interval_s=LOOK_EVERY_S)
        except pytest.fail.Exception as exc:
            self.fail(f"no new leader: {exc.msg}")

    def followers(self, leader: Leader) -> list[Service]:
        return [service for service in self.running if service is not leader.service]

    def logs(self, lines: int = LOG_LINES_EACH) -> str:
        return "\n".join(
            f"--- {service.workdir.name} (port {service.port}) log tail ---\n"
            f"{service.log_tail(lines)}"
            for service in self.services
        )

    def fail(self, message: str) -> NoReturn:
        pytest.fail(f"{message}\n{self.logs()}")


def start_workers(cluster: Cluster) -> None:
    """Start the cluster as several processes of one host on one SQLite file: N `serve`
    processes on N ports, so that a test can reach, kill and pause each one. `serve --workers
    N` (N processes on one port) is tested in test_cluster.py's own workers tests."""
    cluster.start()


def post_round_robin(
    urls: Sequence[str],
    path: str,
    bodies: Sequence[Mapping[str, Any]],
    headers: Mapping[str, str] | None = None,
    concurrency: int = 12,
) -> list[dict[str, Any]]:
    """POST each body in turn to the next URL, `concurrency` requests at a time; the answers
    in order (each must be 201)."""

    async def post_all() -> list[dict[str, Any]]:
        clients = [httpx.AsyncClient(base_url=url, timeout=30.0) for url in urls]
        slots = asyncio.Semaphore(concurrency)

        async def post(number: int, body: Mapping[str, Any]) -> dict[str, Any]:
            async with slots:
                response = await clients[number % len(clients)].post(
                    path, json=dict(body), headers=dict(headers or {})
                )
            assert response.status_code == 201, f"{response.status_code} {response.text}"
            created: dict[str, Any] = response.json()
            return created

        try:
            return list(await asyncio.gather(*(post(n, b) for n, b in enumerate(bodies))))
        finally:
            for client in clients:
                await client.aclose()

    return asyncio.run(post_all())


def message_ids_by_reminder(messages: Sequence[Message]) -> dict[str, list[str]]:
    """The Message-ID of every copy received, by the reminder (X-Reminder-Id) it delivers."""
    copies: dict[str, list[str]] = defaultdict(list)
    for message in messages:
        copies[str(message["X-Reminder-Id"])].append(str(message["Message-ID"]))
    return dict(copies)


@dataclass(frozen=True)
class Deliveries:
    """What a sink received for the expected reminders."""

    missing: frozenset[str]
    unexpected: frozenset[str]
    # Reminders received more than once: how many copies.
    duplicated: Mapping[str, int]
    # Reminders received under more than one Message-ID: the ids.
    under_two_ids: Mapping[str, frozenset[str]]

    @property
    def duplicates(self) -> int:
        return sum(copies - 1 for copies in self.duplicated.values())


def deliveries(messages: Sequence[Message], expected: set[str]) -> Deliveries:
    copies = message_ids_by_reminder(messages)
    return Deliveries(
        missing=frozenset(expected - set(copies)),
        unexpected=frozenset(set(copies) - expected),
        duplicated={rid: len(ids) for rid, ids in copies.items() if len(ids) > 1},
        under_two_ids={rid: frozenset(ids) for rid, ids in copies.items() if len(set(ids)) > 1},
    )
