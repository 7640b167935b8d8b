"""The same Idempotency-Key sent at the same instant to two service processes on one database:
one creates the reminder, the other answers it replayed, never a 5xx."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from sqlalchemy import create_engine, func, select

from scheduler_app.db.models import Task
from tests.acceptance.service import Service, service_environment

# Before the fix about one round in three ended in a 500 on either database; 40 rounds take
# about 2 s per database.
ROUNDS = 40
BODY = {"email": "ada@example.com", "delay_seconds": 3600, "subject": "Race"}


@pytest.fixture
def two_services(tmp_path: Path, database_url: str) -> Iterator[tuple[Service, Service]]:
    """Two running services on one database, each with its own work folder and log; the second
    without a scheduler (two schedulers on one database are not supported)."""
    services = []
    try:
        for name, extra in (("a", {}), ("b", {"SCHEDULER_SCHEDULER__ENABLED": "false"})):
            workdir = tmp_path / name
            workdir.mkdir()
            service = Service(workdir, service_environment(workdir, database_url, extra))
            services.append(service)
            service.start()  # one after the other: the first applies the migrations
        yield services[0], services[1]
    finally:
        for service in services:
            service.close()


def describe(outcome: httpx.Response | str) -> str:
    if isinstance(outcome, str):
        return outcome
    return f"{outcome.status_code} {outcome.text[:200]}"


def test_the_same_key_at_once_on_two_processes_creates_one_reminder(
    two_services: tuple[Service, Service], database_url: str
) -> None:
    barrier = threading.Barrier(2)
    clients = [httpx.Client(base_url=service.base_url, timeout=15.0) for service in two_services]

    def post(client: httpx.Client, key: str) -> httpx.Response | str:
        barrier.wait(timeout=15.0)
        try:
            return client.post("/subscribe", json=BODY, headers={"Idempotency-Key": key})
        except httpx.TransportError as exc:  # the server closes the connection after a 500
            return f"{type(exc).__name__}: {exc}"

    failures = []
    with ThreadPoolExecutor(2) as pool:
        try:
            for round_ in range(ROUNDS):
                key = f"race-{round_}"
                outcomes = list(pool.map(post, clients, [key, key]))
                answers = [a for a in outcomes if isinstance(a, httpx.Response)]
                if len(answers) < 2 or any(a.status_code != 201 for a in answers):
                    failures.append([describe(outcome) for outcome in outcomes])
                    continue
                replayed = sorted(a.headers.get("Idempotent-Replayed", "") for a in answers)
                assert replayed == ["", "true"], (round_, replayed)
                first, second = (answer.json() for answer in answers)
                assert (first["id"], first["cancel_token"]) == (
                    second["id"],
                    second["cancel_token"],
                ), round_
        finally:
            for client in clients:
                client.close()
    if failures:
        logs = "\n".join(service.log_tail(80) for service in two_services)
        pytest.fail(f"{len(failures)} of {ROUNDS} rounds failed: {failures[:3]}\n{logs}")

    engine = create_engine(database_url)
    try:
        with engine.connect() as connection:
            stored = connection.scalar(select(func.count()).select_from(Task))
    finally:
        engine.dispose()
    assert stored == ROUNDS
