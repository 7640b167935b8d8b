"""`scheduler-app serve` as a user starts it: its port, its start-up, its clients."""

from __future__ import annotations

import http.client
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from scheduler_app.cli.serve import WORKER_HEALTHCHECK_TIMEOUT_S
from tests.acceptance.conftest import ServiceFactory
from tests.acceptance.service import service_command
from tests.support import free_port


def test_a_taken_port_is_one_line_and_exit_1_with_nothing_started(
    make_service: ServiceFactory,
) -> None:
    first = make_service()
    first.start()
    second = subprocess.run(
        service_command(first.config_path, first.port),
        cwd=first.workdir,
        env=first.env,
        capture_output=True,
        text=True,
        timeout=20,
        check=False,
    )
    assert second.returncode == 1
    assert second.stdout == ""
    assert second.stderr == (
        f"scheduler-app: cannot listen on 127.0.0.1:{first.port}: address already in use\n"
    )
    with first.client() as client:
        assert client.get("/readyz").status_code == 200


def test_the_schema_is_migrated_once_at_start(make_service: ServiceFactory) -> None:
    service = make_service()
    service.start()
    log = service.log_text()
    assert log.count("Running upgrade  -> 0001") == 1
    assert log.count("Context impl") == 1
    service.terminate()
    service.start()
    assert service.log_text().count("Context impl") == 1  # nothing to migrate: Alembic not run


def _closed_within(sock: socket.socket, timeout_s: float) -> float:
    """Seconds until the server closes sock (it sends nothing first); fails after timeout_s."""
    started = time.monotonic()
    sock.settimeout(timeout_s)
    assert sock.recv(1024) == b""
    return time.monotonic() - started


# The server's handling of connections does not depend on the database.
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_client_that_sends_no_request_head_in_time_is_disconnected(
    make_service: ServiceFactory,
) -> None:
    service = make_service({"SCHEDULER_SERVER__REQUEST_HEAD_TIMEOUT_S": "1"})
    service.start()
    address = ("127.0.0.1", service.port)
    with socket.create_connection(address) as silent, socket.create_connection(address) as slow:
        slow.sendall(b"GET /healthz HTTP/1.1\r\n")
        for _ in range(3):  # a header line now and then: every one is before the deadline
            time.sleep(0.4)
            try:
                slow.sendall(b"X-Slow: 1\r\n")
            except OSError:
                break
        assert _closed_within(silent, 5) < 3
        slow.settimeout(5)
        assert slow.recv(1024) == b""

    # A client that sends its requests in time keeps its connection between them ...
    polite = http.client.HTTPConnection(*address, timeout=5)
    try:
        for _ in range(3):
            polite.request("GET", "/healthz")
            response = polite.getresponse()
            assert (response.status, response.read()) == (200, b'{"status":"ok","checks":{}}')
            time.sleep(0.5)
        # ... and after its last answer, it too has the deadline to send the next head.
        assert polite.sock is not None
        assert _closed_within(polite.sock, 5) < 3
    finally:
        polite.close()


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_requests_beyond_the_concurrency_limit_are_answered_503(
    make_service: ServiceFactory,
) -> None:
    service = make_service({"SCHEDULER_SERVER__LIMIT_CONCURRENCY": "3"})
    service.start()
    address = ("127.0.0.1", service.port)
    idle = [socket.create_connection(address) for _ in range(3)]
    try:
        time.sleep(0.2)  # the server has taken them all
        with service.client() as client:
            assert client.get("/healthz").status_code == 503
    finally:
        for sock in idle:
            sock.close()
    with service.client() as client:
        service.wait_until(
            "an answer once the idle connections are gone",
            lambda: client.get("/healthz").status_code == 200,
        )


def _posts_from(client: httpx.Client, forwarded_for: str, count: int) -> list[int]:
    headers = {"X-Forwarded-For": forwarded_for}
    body = {"email": "ada@example.com", "delay_seconds": 3600}
    return [client.post("/subscribe", json=body, headers=headers).status_code for _ in range(count)]


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_the_rate_limit_counts_the_client_a_trusted_proxy_names(
    make_service: ServiceFactory,
) -> None:
    # By default the proxy may be on this host (127.0.0.1, as the test client is).
    service = make_service({"SCHEDULER_REMINDERS__PER_CLIENT_PER_MINUTE": "2"})
    service.start()
    with service.client() as client:
        assert _posts_from(client, "203.0.113.5", 3) == [201, 201, 429]
        assert _posts_from(client, "203.0.113.6", 1) == [201]
    service.terminate()

    # A peer that is not a trusted proxy cannot choose its address.
    service = make_service(
        {
            "SCHEDULER_REMINDERS__PER_CLIENT_PER_MINUTE": "2",
            "SCHEDULER_SERVER__FORWARDED_ALLOW_IPS": '["192.0.2.1"]',
        }
    )
    service.start()
    with service.client() as client:
        assert _posts_from(client, "203.0.113.5", 2) == [201, 201]
        assert _posts_from(client, "203.0.113.6", 1) == [429]


def worker_pids(parent: int) -> set[int]:
    """The live worker processes that `parent` started (multiprocessing's spawn), from /proc."""
    pids = set()
    for stat_path in Path("/proc").glob("[0-9]*/stat"):
        try:
            stat = stat_path.read_text()
            command = (stat_path.parent / "cmdline").read_bytes()
        except OSError:  # it ended meanwhile
            continue
        # "pid (name) state ppid ...": the name may hold spaces and parentheses.
        fields = stat.rpartition(")")[2].split()
        if int(fields[1]) == parent and fields[0] != "Z" and b"spawn_main" in command:
            pids.add(int(stat_path.parent.name))
    return pids


def running(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


# Workers share the socket and the database alike on both databases; SQLite is the quicker.
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_workers_share_one_port_one_migration_and_one_admin_token(
    make_service: ServiceFactory,
) -> None:
    service = make_service()
    del service.env["SCHEDULER_ADMIN_TOKEN"]  # generated once, for every worker
    service.options = ["--workers", "3"]
    service.start()
    assert service.process is not None
    parent = service.process.pid
    service.wait_until("3 workers", lambda: len(worker_pids(parent)) == 3, 20)
    workers = worker_pids(parent)
    service.wait_until(
        "every worker started",
        lambda: service.log_text().count("Application startup complete") == 3,
        20,
    )
    log = service.log_text()
    assert log.count("Running upgrade  -> 0001") == 1  # by the parent, before the workers
    assert log.count("generated an admin token") == 1
    token = (service.workdir / "var" / "admin_token").read_text().strip()
    # A connection each, taken by whichever worker accepts it first: were the token one per
    # worker, some of these would be refused.
    for _ in range(12):
        with service.client() as client:
            assert client.get("/healthz").status_code == 200
            answer = client.get("/jobs", headers={"Authorization": f"Bearer {token}"})
            assert answer.status_code == 200

    # A worker that dies is replaced: at once, or after the supervisor's health check times
    # out (WORKER_HEALTHCHECK_TIMEOUT_S) when it dies while that check waits for its answer.
    killed = min(workers)
    os.kill(killed, signal.SIGKILL)
    service.wait_until(
        "a worker in place of the killed one",
        lambda: len(now := worker_pids(parent)) == 3 and killed not in now,
        WORKER_HEALTHCHECK_TIMEOUT_S + 20,
    )
    workers = worker_pids(parent)
    service.wait_until(
        "the new worker started",
        lambda: service.log_text().count("Application startup complete") == 4,
        20,
    )

    assert service.terminate(timeout_s=30) == 0
    assert not any(running(pid) for pid in workers)
    assert service.log_text().count("scheduler-app stopped") == 3


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize("workers", ["0", "-2"])
def test_workers_must_be_at_least_one(make_service: ServiceFactory, workers: str) -> None:
    service = make_service()
    refused = subprocess.run(
        [*service_command(service.config_path, free_port()), "--workers", workers],
        cwd=service.workdir,
        env=service.env,
        capture_output=True,
        text=True,
        timeout=20,
        check=False,
    )
    assert (refused.returncode, refused.stdout) == (2, "")
    assert refused.stderr == f"scheduler-app: --workers must be at least 1, not {workers}\n"
    assert not (service.workdir / "var").exists()  # nothing started


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_workers_that_cannot_start_stop_the_service_with_status_3(
    make_service: ServiceFactory,
) -> None:
    # The workers, not the parent, write the generated admin token: a file as the state
    # folder fails each worker's start.
    service = make_service({"SCHEDULER_STATE_DIR": "not-a-folder"})
    (service.workdir / "not-a-folder").write_text("")
    del service.env["SCHEDULER_ADMIN_TOKEN"]
    failed = subprocess.run(
        [*service_command(service.config_path, free_port()), "--workers", "2"],
        cwd=service.workdir,
        env=service.env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert failed.returncode == 3
    assert "Application startup failed" in failed.stderr


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_workers_stop_cleanly_when_their_supervisor_is_killed(
    make_service: ServiceFactory,
) -> None:
    service = make_service()
    service.options = ["--workers", "2"]
    service.start()
    assert service.process is not None
    parent = service.process.pid
    service.wait_until("2 workers", lambda: len(worker_pids(parent)) == 2)
    workers = worker_pids(parent)
    service.wait_until(
        "every worker started",
        lambda: service.log_text().count("Application startup complete") == 2,
        20,
    )
    service.kill()
    service.wait_until("the workers gone", lambda: not any(running(pid) for pid in workers), 20)
    assert service.log_text().count("scheduler-app stopped") == 2
    # Nothing keeps the port: the next service can take it.
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", service.port))
        sock.listen()
