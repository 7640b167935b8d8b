"""A harness that runs the real `scheduler-app serve` as a subprocess, configured by environment."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import NoReturn, TypeVar

import httpx
import pytest

from tests.support import free_port, wait_until

ADMIN_TOKEN = "acceptance-admin-token-0123456789"
READY_TIMEOUT_S = 20.0
EXIT_TIMEOUT_S = 10.0
LOG_TAIL_LINES = 60
T = TypeVar("T")


def service_environment(
    tmp_path: Path, database_url: str, extra: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The SCHEDULER_* variables for a service whose state all lives under tmp_path."""
    variables = {
        "SCHEDULER_DATABASE_URL": database_url,
        "SCHEDULER_ADMIN_TOKEN": ADMIN_TOKEN,
        "SCHEDULER_STATE_DIR": str(tmp_path / "var"),
        "SCHEDULER_MAIL__BACKEND": "outbox",
        "SCHEDULER_MAIL__OUTBOX_DIR": str(tmp_path / "outbox"),
        "SCHEDULER_MAIL__FROM_ADDRESS": "Acceptance <acceptance@example.com>",
        # Off, as in tests.support.UNLIMITED: these tests post many reminders from one client.
        "SCHEDULER_REMINDERS__PER_CLIENT_PER_MINUTE": "0",
        "SCHEDULER_REMINDERS__MAX_PENDING_PER_ADDRESS": "0",
    }
    variables.update(extra or {})
    return variables


def smtp_environment(host: str, port: int) -> dict[str, str]:
    return {
        "SCHEDULER_MAIL__BACKEND": "smtp",
        "SCHEDULER_MAIL__SMTP__HOST": host,
        "SCHEDULER_MAIL__SMTP__PORT": str(port),
        "SCHEDULER_MAIL__SMTP__STARTTLS": "false",
        "SCHEDULER_MAIL__SMTP__TIMEOUT_S": "5",
    }


def _executable() -> Path:
    # The console script installed next to this interpreter, so the test runs the same install.
    path = Path(sys.executable).parent / "scheduler-app"
    if not path.is_file():
        pytest.fail(
            f"{path} not found: install the project into this environment (pip install -e .)"
        )
    return path


def service_command(config_path: Path, port: int) -> list[str]:
    """The command line that serves on 127.0.0.1:port with the given configuration file."""
    return [
        str(_executable()),
        "serve",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--config",
        str(config_path),
    ]


class Service:
    """One service installation (work folder, database, outbox) that can be started many times.

    Every start appends to the same log file, so a failure shows what each run did.
    """

    # Answers 200 once the service is up.
    ready_path = "/readyz"

    def __init__(self, workdir: Path, variables: Mapping[str, str], config: str = "") -> None:
        """config: the YAML of the service's configuration file (none: an empty one)."""
        self.workdir = workdir
        self.log_path = workdir / "service.log"
        # An explicit file, empty by default: a config.yaml lying in some cwd must never leak
        # into a test.
        self.config_path = workdir / ("config.yaml" if config else "empty-config.yaml")
        self.config_path.write_text(config)
        inherited = {k: v for k, v in os.environ.items() if not k.startswith("SCHEDULER_")}
        self.env = {**inherited, **variables, "PYTHONUNBUFFERED": "1"}
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0
        # Options added to the command line (e.g. ["--workers", "3"]).
        self.options: list[str] = []

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self) -> None:
        """Start the service and return once GET /readyz answers 200."""
        if self.running:
            pytest.fail("service already running")
        self.port = free_port()
        self.starts += 1
        with self.log_path.open("ab") as log:
            log.write(f"\n===== start #{self.starts} on port {self.port} =====\n".encode())
            log.flush()
            self.process = subprocess.Popen(
                self.command(),
                cwd=self.workdir,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self._wait_ready()

    def command(self) -> list[str]:
        return [*service_command(self.config_path, self.port), *self.options]

    def _wait_ready(self) -> None:
        assert self.process is not None
        deadline = time.monotonic() + READY_TIMEOUT_S
        last = "no answer yet"
        with httpx.Client(base_url=self.base_url, timeout=2.0) as client:
            while True:
                code = self.process.poll()
                if code is not None:
                    self.process = None
                    self.fail(f"service exited with code {code} before it was ready")
                try:
                    response = client.get(self.ready_path)
                except httpx.TransportError as exc:
                    last = f"{type(exc).__name__}: {exc}"
                else:
                    if response.status_code == 200:
                        return
                    last = f"{response.status_code} {response.text}"
                if time.monotonic() > deadline:
                    self.fail(f"service not ready within {READY_TIMEOUT_S} s (last: {last})")
                time.sleep(0.05)

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs, exactly like a crash or an OOM kill."""
        process = self._require_running()
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=EXIT_TIMEOUT_S)
        self.process = None

    def terminate(self, timeout_s: float = EXIT_TIMEOUT_S) -> int:
        """SIGTERM and wait for the exit; return the exit code (fails the test on a hang)."""
        process = self._require_running()
        process.send_signal(signal.SIGTERM)
        try:
            code = process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.close()
            self.fail(f"service still running {timeout_s} s after SIGTERM")
        self.process = None
        return code

    def close(self) -> None:
        """Make sure no process outlives the test, whatever state it is in."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(timeout=EXIT_TIMEOUT_S)
        self.process = None

    def _require_running(self) -> subprocess.Popen[bytes]:
        if self.process is None or self.process.poll() is not None:
            self.fail("service is not running")
        return self.process

    @contextlib.contextmanager
    def client(self) -> Iterator[httpx.Client]:
        with httpx.Client(base_url=self.base_url, timeout=10.0) as client:
            yield client

    @staticmethod
    def admin_headers() -> dict[str, str]:
        return {"Authorization": f"Bearer {ADMIN_TOKEN}"}

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def fail(self, message: str) -> NoReturn:
        pytest.fail(f"{message}\n--- service log (tail) ---\n{self.log_tail()}")

    def wait_until(self, what: str, probe: Callable[[], T | None], timeout_s: float = 10.0) -> T:
        """tests.support.wait_until, failing with what was awaited and the service's log."""
        try:
            return wait_until(probe, timeout_s=timeout_s)
        except pytest.fail.Exception as exc:
            self.fail(f"{what}: {exc.msg}")
