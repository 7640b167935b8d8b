"""The service's Prometheus metrics: one registry per Runtime, served by GET /metrics.

Counters and histograms count what this process saw (each process of a cluster serves its
own; Prometheus sums them); gauges read from the database are the same in every process (see
metrics.database). The engine reports through a RunObserver (engine.observer),
which Metrics implements: nothing in the engine imports prometheus_client.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Mapping

from prometheus_client import (
    CONTENT_TYPE_PLAIN_0_0_4,
    CollectorRegistry,
    Counter,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import Engine

from scheduler_app.db.models import RunOutcome
from scheduler_app.engine.executor import RegisteredJob
from scheduler_app.engine.observer import RunObserver
from scheduler_app.metrics.database import (
    DEFAULT_REFRESH_S,
    DatabaseGauges,
    count_database_errors,
    read_snapshot,
)
from scheduler_app.tasks.runner import AttemptOutcome, TaskJob

# The Prometheus text format that every Prometheus 2.x and 3.x reads.
CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4
# How late runs start: from on time to an hour late (a leader that took over after an outage).
LAG_BUCKETS_S = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)
# How long a job function runs: a delivery takes milliseconds, a report minutes.
DURATION_BUCKETS_S = (0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)
RUN_OUTCOMES = (RunOutcome.SUCCESS, RunOutcome.ERROR, RunOutcome.MISSED)
# The attempt outcomes that alerts watch, started at 0; the rarer ones appear when they happen.
DECLARED_ATTEMPT_OUTCOMES = (
    AttemptOutcome.SUCCESS,
    AttemptOutcome.ERROR,
    AttemptOutcome.FAILED,
    AttemptOutcome.MISSED,
)


class Metrics(RunObserver):
    """The metrics of one running service, on a registry of its own (never the library's
    global one: two services in one process, as tests run them, count apart)."""

    def __init__(self, engine: Engine, refresh_s: float = DEFAULT_REFRESH_S) -> None:
        """Args:
        engine: the service's database: its gauges are read there and its errors counted.
        refresh_s: the database gauges are read at most this often (see metrics.database).
        """
        self.registry = CollectorRegistry()
        for standard in (ProcessCollector, PlatformCollector, GCCollector):
            standard(registry=self.registry)
        # Collected in the order registered: the database is read before the error count is
        # written out, so that a scrape's own failed read shows in that scrape.
        self.registry.register(DatabaseGauges(lambda: read_snapshot(engine), refresh_s))
        self._attempts = Counter(
            "scheduler_app_task_attempts",
            "Attempts of tasks (reminders included) by job and how they ended, in this process.",
            ["job", "outcome"],
            registry=self.registry,
        )
        self._runs = Counter(
            "scheduler_app_runs",
            "Runs of recurring jobs by job id and outcome (success, error, missed), in this "
            "process.",
            ["job", "outcome"],
            registry=self.registry,
        )
        self._duration = Histogram(
            "scheduler_app_run_duration_seconds",
            "How long job functions ran: recurring jobs by id, task attempts by job.",
            ["job"],
            buckets=DURATION_BUCKETS_S,
            registry=self.registry,
        )
        self._lag = Histogram(
            "scheduler_app_fire_lag_seconds",
            "How long after its scheduled time a run started (start minus scheduled time): "
            "recurring jobs by id, task attempts by job.",
            ["job"],
            buckets=LAG_BUCKETS_S,
            registry=self.registry,
        )
        self.database_errors = Counter(
            "scheduler_app_database_errors",
            "Statements and connections the database refused for being unavailable (down, "
            "restarting, locked, connection lost), in this process.",
            registry=self.registry,
        )
        self._leader = _Leader()
        self.registry.register(self._leader)
        count_database_errors(engine, self.database_errors)

    def follow_leadership(self, leading: Callable[[], bool]) -> None:
        """scheduler_app_leader reads leading() at each scrape (the cluster's elector)."""
        self._leader.leading = leading

    def declare(self, registry: Mapping[str, RegisteredJob], recurring: Iterable[str]) -> None:
        """Start the counters of the jobs known now at 0, so that their first increase shows
        (a series that first appears at 1 is no increase to Prometheus); again after a reload.
        """
        for job in task_jobs(registry):
            for attempt in DECLARED_ATTEMPT_OUTCOMES:
                self._attempts.labels(job, attempt.value)
        for job_id in recurring:
            for outcome in RUN_OUTCOMES:
                self._runs.labels(job_id, outcome.value)

    # RunObserver (engine.observer), called on the event loop.

    def run(
        self,
        job: str,
        outcome: str,
        *,
        task: bool,
        lag_s: float | None = None,
        duration_s: float | None = None,
    ) -> None:
        if not task:
            self._runs.labels(job, outcome).inc()
        if lag_s is not None:
            # A run started early (a clock step, a retry due now) counts as on time.
            self._lag.labels(job).observe(max(0.0, lag_s))
        if duration_s is not None:
            self._duration.labels(job).observe(duration_s)

    def attempt(self, job: str, outcome: str) -> None:
        self._attempts.labels(job, outcome).inc()

    def render(self) -> bytes:
        """The metrics in the Prometheus text format (blocking: may read the database)."""
        return generate_latest(self.registry)

    async def scrape(self) -> bytes:
        """render() in a worker thread: a read of the database never holds up the loop."""
        return await asyncio.to_thread(self.render)


def task_jobs(registry: Mapping[str, RegisteredJob]) -> list[str]:
    """The names of the jobs that run tasks (reminder delivery, your @job functions)."""
    return sorted(
        name
        for name, entry in registry.items()
        if entry.task is not None or isinstance(entry.func, TaskJob)
    )


class _Leader(Collector):
    """scheduler_app_leader: 1 while this process leads (runs the scheduler), else 0."""

    def __init__(self) -> None:
        self.leading: Callable[[], bool] = lambda: False

    def describe(self) -> Iterable[Metric]:
        return [self._family()]

    def collect(self) -> Iterable[Metric]:
        family = self._family()
        family.add_metric([], 1.0 if self.leading() else 0.0)
        return [family]

    @staticmethod
    def _family() -> GaugeMetricFamily:
        return GaugeMetricFamily(
            "scheduler_app_leader", "1 while this process leads the cluster (runs the jobs)."
        )
