"""The systems under test, each started as its own process: scheduler_app and the baseline.

The limit (bench.limit) has no server and is driven by the scenarios directly.
"""

from __future__ import annotations

import shutil
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from bench.common import ADMIN_TOKEN, PYTHON, ROOT, Child, free_port, peak_rss_bytes, scalar

READY_TIMEOUT_S = 900.0


class TargetError(RuntimeError):
    pass


def http_status(url: str, headers: dict[str, str] | None = None, timeout_s: float = 2.0) -> int:
    request = urllib.request.Request(url, headers=headers or {})  # noqa: S310 (loopback only)
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:  # noqa: S310
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except (OSError, urllib.error.URLError):
        return 0


class Server:
    """A target service: started, made ready, stopped; several starts share one database."""

    name = "server"
    ready_path = "/healthz"
    pending_sql = ""

    def __init__(self, run_dir: Path, database_url: str, sink_port: int) -> None:
        self.run_dir = run_dir
        self.database_url = database_url
        self.sink_port = sink_port
        self.child: Child | None = None
        self.port = 0
        self.starts = 0
        self.peak_rss: list[int] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def urls(self) -> list[str]:
        """Where load may go: this one process (a cluster has several)."""
        return [self.url]

    @property
    def pids(self) -> list[int]:
        return [self.pid]

    @property
    def pid(self) -> int:
        if self.child is None:
            raise TargetError(f"{self.name} is not running")
        return self.child.pid

    def argv(self) -> list[str]:
        raise NotImplementedError

    def env(self) -> dict[str, str]:
        raise NotImplementedError

    def start(self) -> float:
        """Start and wait until ready; the seconds from spawn to the first ready answer."""
        self.port = free_port()
        self.starts += 1
        began = time.perf_counter()
        self.child = Child(
            f"{self.name} start #{self.starts}",
            self.argv(),
            self.run_dir / f"{self.name}.log",
            env=self.env(),
            cwd=self.workdir(),
        )
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if not self.child.alive():
                raise TargetError(f"{self.name} exited before it was ready:\n{self.child.tail()}")
            if http_status(self.url + self.ready_path, timeout_s=5) == 200:
                return time.perf_counter() - began
            time.sleep(0.02)
        self.child.kill()
        raise TargetError(f"{self.name} not ready within {READY_TIMEOUT_S} s")

    def workdir(self) -> Path:
        return ROOT

    def record_rss(self) -> None:
        if self.child is not None and self.child.alive():
            rss = peak_rss_bytes(self.child.pid)
            if rss is not None:
                self.peak_rss.append(rss)

    def kill(self) -> None:
        """SIGKILL, like a crash or an OOM kill."""
        self.record_rss()
        if self.child is not None:
            self.child.kill()
        self.child = None

    def stop(self) -> int | None:
        self.record_rss()
        if self.child is None:
            return None
        code = self.child.stop()
        self.child = None
        return code

    def pending(self, due_before: float | None = None) -> int | None:
        """Reminders not yet run (those due before `due_before` only, when given)."""
        try:
            value = self._count_pending(due_before)
        except Exception:
            return None
        return int(value or 0)

    def _count_pending(self, due_before: float | None) -> Any:
        if due_before is None:
            return scalar(self.database_url, self.pending_sql)
        return scalar(self.database_url, f"{self.pending_sql} AND next_run_time <= {due_before!r}")

    def status_counts(self) -> dict[str, Any]:
        return {}


class SchedulerApp(Server):
    name = "scheduler_app"
    ready_path = "/readyz"
    pending_sql = "SELECT count(*) FROM tasks WHERE status IN ('scheduled', 'running')"

    def _count_pending(self, due_before: float | None) -> Any:
        if due_before is None:
            return scalar(self.database_url, self.pending_sql)
        from datetime import UTC, datetime

        from sqlalchemy import create_engine, func, select

        from scheduler_app.db.models import OPEN_STATUSES, Task

        engine = create_engine(self.database_url)
        try:
            with engine.connect() as connection:
                return connection.execute(
                    select(func.count())
                    .select_from(Task)
                    .where(
                        Task.status.in_(OPEN_STATUSES),
                        Task.run_at <= datetime.fromtimestamp(due_before, UTC),
                    )
                ).scalar()
        finally:
            engine.dispose()

    def __init__(self, run_dir: Path, database_url: str, sink_port: int) -> None:
        super().__init__(run_dir, database_url, sink_port)
        self.home = run_dir / "scheduler_app"
        self.home.mkdir(parents=True, exist_ok=True)
        # Added to service_env (a cluster's lease, say).
        self.extra_env: dict[str, str] = {}
        # No cron jobs and nothing from ./config.yaml or .env: the reminders are all it runs.
        self.config = self.home / "bench-config.yaml"
        self.config.write_text("timezone: UTC\n")

    def use_job_module(self, source: Path) -> None:
        """Copy a module of @job functions beside the config file and name it in job_modules,
        as a deployment names its own (resolved from the config file's folder)."""
        shutil.copyfile(source, self.home / source.name)
        self.config.write_text(f"timezone: UTC\njob_modules: [{source.stem}]\n")

    def workdir(self) -> Path:
        return self.home

    def argv(self) -> list[str]:
        executable = Path(PYTHON).parent / "scheduler-app"
        return [
            str(executable),
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--config",
            str(self.config),
        ]

    def env(self) -> dict[str, str]:
        return {**service_env(self.database_url, self.sink_port, self.home), **self.extra_env}

    def status_counts(self) -> dict[str, Any]:
        from sqlalchemy import create_engine, text

        engine = create_engine(self.database_url)
        try:
            with engine.connect() as connection:
                rows = connection.execute(
                    text("SELECT status, count(*) FROM tasks GROUP BY status")
                )
                counts: dict[str, Any] = {str(status): int(n) for status, n in rows}
                errors = connection.execute(
                    text(
                        "SELECT last_error FROM tasks WHERE last_error IS NOT NULL "
                        "GROUP BY last_error LIMIT 3"
                    )
                ).scalars()
                sample = [str(error)[:300] for error in errors]
                if sample:
                    counts["sample_errors"] = sample
                return counts
        except Exception as exc:
            return {"error": f"{type(exc).__name__}: {exc}"}
        finally:
            engine.dispose()


def service_env(database_url: str, sink_port: int, home: Path) -> dict[str, str]:
    return {
        "SCHEDULER_DATABASE_URL": database_url,
        "SCHEDULER_ADMIN_TOKEN": ADMIN_TOKEN,
        "SCHEDULER_STATE_DIR": str(home / "var"),
        "SCHEDULER_LOG_LEVEL": "warning",
        "SCHEDULER_MAIL__BACKEND": "smtp",
        "SCHEDULER_MAIL__FROM_ADDRESS": "Bench <bench@example.com>",
        "SCHEDULER_MAIL__SMTP__HOST": "127.0.0.1",
        "SCHEDULER_MAIL__SMTP__PORT": str(sink_port),
        "SCHEDULER_MAIL__SMTP__STARTTLS": "false",
        "SCHEDULER_MAIL__SMTP__TIMEOUT_S": "30",
        "SCHEDULER_REPORTS__DIR": str(home / "reports"),
        # One load client sends everything: the limit per client address would refuse it.
        "SCHEDULER_REMINDERS__PER_CLIENT_PER_MINUTE": "0",
    }


class Baseline(Server):
    name = "baseline"
    ready_path = "/healthz"
    pending_sql = "SELECT count(*) FROM apscheduler_jobs WHERE 1 = 1"

    def argv(self) -> list[str]:
        return [
            PYTHON,
            "-m",
            "uvicorn",
            "bench.baseline.app:app",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--log-level",
            "warning",
        ]

    def env(self) -> dict[str, str]:
        return {
            "BASELINE_DATABASE_URL": self.database_url,
            "BASELINE_SMTP_HOST": "127.0.0.1",
            "BASELINE_SMTP_PORT": str(self.sink_port),
        }


TARGETS: dict[str, type[Server]] = {"scheduler_app": SchedulerApp, "baseline": Baseline}
