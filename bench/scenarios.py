"""The scenarios. Each runs one target (scheduler_app, baseline or limit) on one database and
returns every figure it measured; bench.__main__ writes them to bench/results/."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import shutil
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.cluster import SchedulerAppCluster
from bench.common import (
    ADMIN_TOKEN,
    BENCH,
    PYTHON,
    WORK,
    Child,
    database,
    free_port,
    quick,
    read_jsonl,
)
from bench.cpu import CpuMeter, cores
from bench.measure import SinkLog, accepted_reminders, api_figures, delivery_figures
from bench.targets import TARGETS, SchedulerApp, Server

# Every wait is bounded: a target that loses work is reported, never waited for forever.
DRAIN_DEADLINE_S = 120.0
# Stop early when nothing is pending in the target and nothing arrived for this long.
QUIET_S = 10.0
POST_CONCURRENCY = 16
# The limit's storm is run this many times; the fastest is reported.
LIMIT_ATTEMPTS = 3
# The storm is a race against the sink too; scheduler_app runs it this many times and the median
# attempt is its figure. (The baseline runs once: it is far from the sink either way.) Five: on
# this shared machine the paired ratio of the same code ranged from 1.02 to 1.69 between
# attempts, and three left the median to one or two outliers.
STORM_ATTEMPTS = 5
# Assumed slowest posting rate per target (POST /subscribe per second with the bench client:
# 38 to 300 for the baseline on SQLite, 480 to 570 for scheduler_app), to put the due instant
# after the last POST.
POST_RATE_FLOOR = {"scheduler_app": 200.0, "baseline": 35.0}
# The tasks scenario's job function, copied beside the service's config file (job_modules).
TASK_JOB_MODULE = BENCH / "bench_jobs.py"
TASK_JOB = "bench_mail"
# Scenarios a target has no counterpart for: `python -m bench` skips them and says why.
SKIPPED = {
    ("tasks", "baseline"): (
        "the baseline has no job functions of your own to run from an HTTP request (POST "
        "/tasks): its one job is the storm's reminder"
    ),
    ("tasks", "limit"): (
        "the limit for this many messages due at one instant is the storm's limit column (same "
        "count, same sink)"
    ),
    ("failover", "baseline"): (
        "the baseline runs one process: two on one job store would both run every job"
    ),
    ("failover", "limit"): "the limit has no scheduler, hence no leader to lose",
}


def log(message: str) -> None:
    print(f"[{datetime.now(UTC):%H:%M:%S}] {message}", flush=True)


@dataclass
class Run:
    scenario: str
    db: str
    target: str
    directory: Path
    notes: list[str]
    # scheduler_app processes on the one database (storm and enqueue; failover has 3).
    processes: int = 1
    # failover: leader kills (and SIGTERMs) of each kind, and the lease (None: the default).
    kills: int = 10
    lease_s: float | None = None


@contextlib.contextmanager
def run_directory(
    scenario: str,
    db: str,
    target: str,
    processes: int = 1,
    kills: int = 10,
    lease_s: float | None = None,
) -> Iterator[Run]:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    directory = WORK / f"{scenario}-{db}-{target}-{stamp}"
    directory.mkdir(parents=True, exist_ok=True)
    yield Run(scenario, db, target, directory, [], processes, kills, lease_s)


def make_target(run: Run, database_url: str, sink_port: int) -> Server | SchedulerAppCluster:
    """The target of a run: one process, or (run.processes > 1) a cluster of scheduler_app
    processes on the one database."""
    if run.processes == 1:
        return TARGETS[run.target](run.directory, database_url, sink_port)
    if run.target != "scheduler_app":
        raise ValueError(f"{run.target} runs as one process only")
    return SchedulerAppCluster(run.directory, database_url, sink_port, run.processes)


@contextlib.contextmanager
def sink(directory: Path) -> Iterator[tuple[int, SinkLog, int]]:
    """The SMTP sink: its port, its record file and its process id."""
    port = free_port()
    out = directory / "sink.jsonl"
    ready = directory / "sink.ready"
    child = Child(
        "sink",
        [PYTHON, "-m", "bench.sink", "--port", str(port), "--out", str(out), "--ready", str(ready)],
        directory / "sink.log",
    )
    try:
        deadline = time.monotonic() + 20
        while not ready.exists():
            if not child.alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the SMTP sink did not start:\n{child.tail()}")
            time.sleep(0.02)
        yield port, SinkLog(out), child.pid
    finally:
        child.stop()


def sleep_until(moment: float) -> None:
    while (left := moment - time.time()) > 0:
        time.sleep(min(left, 0.5))


def drain(
    sink_log: SinkLog,
    accepted: dict[str, float],
    deadline: float,
    pending: Callable[[], int | None] | None,
    not_before: float,
) -> tuple[str, float]:
    """Wait until every accepted reminder arrived, or nothing is left to come, or the deadline.

    Returns why it stopped ("all delivered", "nothing pending" or "deadline") and when the run
    settled: the last arrival, or the first moment the target had nothing due left.
    """
    quiet_since = time.time()
    settled: float | None = None
    checked = 0.0
    while True:
        if sink_log.poll():
            quiet_since = time.time()
            settled = None
        if sink_log.delivered(accepted) >= len(accepted):
            return "all delivered", sink_log.last_arrival
        now = time.time()
        if now >= deadline:
            return "deadline", settled or now
        if pending is not None and now > not_before and now - quiet_since > 2 and now > checked:
            checked = now + 1.0
            if pending() == 0:
                settled = settled or now
                if now - quiet_since > QUIET_S:
                    return "nothing pending", max(settled, sink_log.last_arrival)
            else:
                settled = None
        time.sleep(0.2)


def post_reminders(
    server: Server | SchedulerAppCluster,
    run: Run,
    count: int,
    spread: float,
    what: str = "reminders",
    job: str | None = None,
) -> tuple[float, dict[str, float], dict[str, Any]]:
    """Post count reminders (tasks of `job` through POST /tasks, when given) due over spread
    seconds from an instant set far enough ahead that posting ends first, and wait until it has:
    the first due instant, the accepted reminders (id to due time) and the enqueue figures."""
    lead = 5.0 + count / POST_RATE_FLOOR[run.target]
    due_start = time.time() + lead
    log(f"{run.target}: posting {count} {what}, first due in {lead:.0f} s")
    poster = _poster(server, run, count, due_start, spread, job)
    if poster.wait(lead + 300) is None:
        poster.kill()
        run.notes.append(f"posting {what} did not finish within its time limit")
    print(poster.tail(1), flush=True)
    accepted, enqueue = accepted_reminders(run.directory / "posts.jsonl")
    return due_start, accepted, enqueue


def _poster(
    server: Server | SchedulerAppCluster,
    run: Run,
    count: int,
    due_start: float,
    spread: float,
    job: str | None,
) -> Child:
    task_flags = ["--job", job, "--token", ADMIN_TOKEN] if job is not None else []
    # Spread over every process of the target, connection by connection.
    urls = [flag for url in server.urls for flag in ("--url", url)]
    return Child(
        "poster",
        [
            PYTHON,
            "-m",
            "bench.client",
            "post",
            *urls,
            "--count",
            str(count),
            "--due-start",
            f"{due_start:.6f}",
            "--spread",
            str(spread),
            "--concurrency",
            str(POST_CONCURRENCY),
            "--out",
            str(run.directory / "posts.jsonl"),
            *task_flags,
        ],
        run.directory / "poster.log",
    )


def _probe(server: Server | SchedulerAppCluster, run: Run, rates: dict[str, float]) -> Child:
    argv = [
        PYTHON,
        "-m",
        "bench.client",
        "probe",
        "--url",
        server.url,
        "--token",
        ADMIN_TOKEN,
        "--duration",
        "900",
        "--out",
        str(run.directory / "probe.jsonl"),
    ]
    for route, rate in rates.items():
        argv += [f"--{route}-rate", str(rate)]
    return Child("probe", argv, run.directory / "probe.log")


def delivery(
    run: Run,
    count: int,
    spread: float,
    crash_downtime: float | None = None,
    steady: dict[str, float] | None = None,
    job: str | None = None,
) -> dict[str, Any]:
    """Post `count` reminders due from one instant over `spread` seconds and measure delivery.

    crash_downtime: SIGKILL the target once posting is done (before anything is due) and start
    it again this many seconds after the first due instant.
    steady: request rates per route kept up while the reminders fire (the mixed scenario).
    job: post tasks of this job of TASK_JOB_MODULE through POST /tasks instead of reminders
    (scheduler_app only).
    """
    if run.target == "limit":
        return _delivery_limit(run, count, spread, crash_downtime)
    figures: dict[str, Any] = {}
    with (
        sink(run.directory) as (sink_port, sink_log, sink_pid),
        database(run.db, run.directory, run.target) as url,
    ):
        server = make_target(run, url, sink_port)
        if job is not None:
            if not isinstance(server, SchedulerApp | SchedulerAppCluster):
                raise ValueError(f"{run.target} has no job functions of your own to run")
            server.use_job_module(TASK_JOB_MODULE)
        try:
            figures["startup_s"] = server.start()
            due_start, accepted, enqueue = post_reminders(
                server, run, count, spread, "tasks" if job else "reminders", job
            )
            figures.update(enqueue)
            finished = enqueue["posting_finished_at"] or 0.0
            figures["posting_finished_before_due_s"] = due_start - finished
            if finished > due_start:
                run.notes.append(
                    f"posting finished {finished - due_start:.1f} s after the first due instant"
                )
            last_due = max(accepted.values(), default=due_start)
            restart_at = None
            if crash_downtime is not None:
                if not isinstance(server, Server):
                    raise ValueError("the crash scenario runs one process")
                figures["pending_at_kill"] = server.pending()
                server.kill()
                log(f"{run.target}: SIGKILLed with {figures['pending_at_kill']} pending")
                restart_at = due_start + crash_downtime
                sleep_until(restart_at)
                figures["startup_with_pending_s"] = server.start()
                log(f"{run.target}: restarted in {figures['startup_with_pending_s']:.2f} s")
            probe_start = max(time.time(), due_start - 2)
            sleep_until(probe_start)
            rates = steady or {"health": 10.0, "jobs": 5.0}
            probe = _probe(server, run, rates)
            log(f"{run.target}: {len(accepted)} accepted, waiting for delivery")
            meter = CpuMeter(
                {"service": server.pids, "sink": [sink_pid]}, database=run.db == "postgres"
            )
            sleep_until(due_start)
            meter.start()
            stop_reason, settled = drain(
                sink_log,
                accepted,
                deadline=last_due + DRAIN_DEADLINE_S + (crash_downtime or 0),
                # Only what the scenario made due: the mixed load adds reminders due in 30 days.
                pending=lambda: server.pending(due_before=last_due + 1),
                not_before=max(last_due, restart_at or 0) + 2,
            )
            figures.update(_cpu_figures(meter.stop()))
            probe.stop()
            figures["drain_stopped_because"] = stop_reason
            figures.update(delivery_figures(accepted, sink_log, due_start))
            # API figures cover the storm itself: from the first due instant until the last
            # arrival, or until the target had nothing due left (checked every second).
            figures["api_window_s"] = settled - due_start
            figures.update(api_figures(run.directory / "probe.jsonl", due_start, settled))
            figures["pending_at_end"] = server.pending(due_before=last_due + 1)
            server.record_rss()
            figures["peak_rss_mb"] = max(server.peak_rss, default=0) / 2**20 or None
            figures["exit_code"] = server.stop()
            figures["peak_rss_mb"] = max(server.peak_rss, default=0) / 2**20 or None
            figures["target_status_counts"] = server.status_counts()
            drained = figures["drain_s"]
            log(
                f"{run.target}: delivered {figures['delivered']}/{len(accepted)}, "
                f"lost {figures['lost']}, dup {figures['duplicated']}, drain "
                f"{'-' if drained is None else f'{drained:.2f}'} s ({stop_reason})"
            )
        finally:
            server.stop()
    return figures


def _delivery_limit(
    run: Run, count: int, spread: float, crash_downtime: float | None
) -> dict[str, Any]:
    """The raw sender; when everything is due at once it is a race against the sink, so it
    runs LIMIT_ATTEMPTS times and the fastest attempt is the limit (all attempts are kept)."""
    return _attempts(
        run,
        LIMIT_ATTEMPTS if spread == 0 else 1,
        lambda attempt, number: _limit_attempt(attempt, count, spread, crash_downtime, number),
        fastest=True,
    )


def _attempts(
    run: Run, times: int, measure: Callable[[Run, int], dict[str, Any]], *, fastest: bool
) -> dict[str, Any]:
    """Measure `times` times, each attempt in a folder of its own; the figures of the fastest
    attempt, or of the one with the median drain time, with every attempt's drain time."""
    results = []
    for number in range(1, times + 1):
        directory = run.directory / f"attempt-{number}"
        directory.mkdir(exist_ok=True)
        attempt = dataclasses.replace(run, directory=directory)
        results.append(measure(attempt, number))
    ranked = sorted(results, key=lambda figures: figures.get("drain_s") or float("inf"))
    chosen = dict(ranked[0] if fastest else ranked[len(ranked) // 2])
    chosen["attempts"] = times
    chosen["drain_s_per_attempt"] = [figures.get("drain_s") for figures in results]
    return chosen


def _paired_storms(run: Run, count: int) -> dict[str, Any]:
    """scheduler_app's storm attempts, each followed at once by a storm of the limit's: the
    machine's speed drifts by tens of percent over the minutes between separate runs, much
    less within one pair. The median attempt's figures, with every pair's drain times."""
    paired: list[float | None] = []
    bounds: list[float | None] = []
    paired_cpu: list[dict[str, float] | None] = []

    def storm_then_limit(attempt: Run, number: int) -> dict[str, Any]:
        figures = delivery(attempt, count, 0.0)
        bounds.append(figures.get("cpu_bound_drain_s"))
        directory = attempt.directory / "paired-limit"
        directory.mkdir(exist_ok=True)
        limit_run = dataclasses.replace(attempt, target="limit", directory=directory, processes=1)
        limit = _limit_attempt(limit_run, count, 0.0, None, number)
        paired.append(limit.get("drain_s"))
        paired_cpu.append(limit.get("cpu_s_by_actor"))
        return figures

    figures = _attempts(run, STORM_ATTEMPTS, storm_then_limit, fastest=False)
    figures["paired_limit_drain_s_per_attempt"] = paired
    figures["drain_ratio_to_paired_limit"] = _median_ratio(figures["drain_s_per_attempt"], paired)
    # The shortest drain the cores allow for the CPU the attempt's actors used, beside the limit.
    figures["cpu_bound_drain_s_per_attempt"] = bounds
    figures["cpu_bound_ratio_to_paired_limit"] = _median_ratio(bounds, paired)
    chosen = figures["drain_s_per_attempt"].index(figures["drain_s"])
    figures["paired_limit_cpu_s_by_actor"] = paired_cpu[chosen]
    return figures


def _median_ratio(values: list[float | None], limits: list[float | None]) -> float | None:
    ratios = [value / limit for value, limit in zip(values, limits, strict=True) if value and limit]
    return statistics.median(ratios) if ratios else None


def _cpu_figures(cpu: dict[str, Any]) -> dict[str, Any]:
    """The meter's figures, and the CPU-bound drain: every actor's CPU seconds over the cores."""
    total = sum(cpu["cpu_s_by_actor"].values())
    return {**cpu, "cores": cores(), "cpu_bound_drain_s": total / cores()}


def _limit_attempt(
    run: Run, count: int, spread: float, crash_downtime: float | None, number: int
) -> dict[str, Any]:
    figures: dict[str, Any] = {}
    directory = run.directory
    with sink(directory) as (sink_port, sink_log, sink_pid):
        sent_log = directory / "posts.jsonl"
        sender = Child(
            "limit",
            [
                PYTHON,
                "-m",
                "bench.limit",
                "--port",
                str(sink_port),
                "--count",
                str(count),
                "--spread",
                str(spread),
                "--downtime",
                str(crash_downtime or 0.0),
                "--out",
                str(sent_log),
            ],
            directory / "limit.log",
        )
        # The sender's own CPU comes from its report: it has exited when the drain ends.
        meter = CpuMeter({"sink": [sink_pid]}, database=False)
        due_start, not_before = _sender_ready(sender)
        sleep_until(not_before)
        meter.start()
        if sender.wait(spread + DRAIN_DEADLINE_S + (crash_downtime or 0) + 10) is None:
            sender.kill()
            run.notes.append(f"attempt {number}: the raw sender did not finish in time")
        accepted = {row["id"]: row["due"] for row in read_jsonl(sent_log)}
        figures["accepted"] = len(accepted)
        drain(sink_log, accepted, time.time() + 10, None, 0)
        cpu = meter.stop()
        with contextlib.suppress(ValueError, KeyError):
            cpu["cpu_s_by_actor"]["limit"] = json.loads(sender.tail(1))["cpu_s_sending"]
        figures.update(_cpu_figures(cpu))
        figures.update(delivery_figures(accepted, sink_log, due_start))
    drained = figures["drain_s"]
    log(
        f"limit attempt {number}: delivered {figures['delivered']}/{count}, drain "
        f"{'-' if drained is None else f'{drained:.2f}'} s"
    )
    return figures


def _sender_ready(sender: Child, timeout_s: float = 300.0) -> tuple[float, float]:
    """The limit's first due instant and when it may start sending, once it has composed every
    message and said so."""
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        for line in sender.tail(5).splitlines():
            with contextlib.suppress(ValueError):
                ready = json.loads(line)
                if isinstance(ready, dict) and "due_start" in ready:
                    return float(ready["due_start"]), float(ready["not_before"])
        if not sender.alive():
            raise RuntimeError(f"the raw sender exited before sending:\n{sender.tail()}")
        time.sleep(0.05)
    sender.kill()
    raise RuntimeError(f"the raw sender composed nothing within {timeout_s:.0f} s")


# --- the scenarios -------------------------------------------------------------------------


def storm(run: Run) -> tuple[dict[str, Any], dict[str, Any]]:
    count = 500 if quick() else 5000
    params = {"count": count, "due": "all at one instant", "drain_deadline_s": DRAIN_DEADLINE_S}
    if run.target != "scheduler_app":
        return params, delivery(run, count, 0.0)
    params["attempts"] = STORM_ATTEMPTS
    params["paired_limit"] = "the limit's storm run right after each attempt"
    params["processes"] = run.processes
    if run.processes > 1:
        params["posted"] = f"round-robin over the {run.processes} processes' ports"
    return params, _paired_storms(run, count)


def spread(run: Run) -> tuple[dict[str, Any], dict[str, Any]]:
    count, seconds = (300, 15.0) if quick() else (3000, 60.0)
    params = {"count": count, "due": f"evenly over {seconds:g} s", "spread_s": seconds}
    return params, delivery(run, count, seconds)


def crash(run: Run) -> tuple[dict[str, Any], dict[str, Any]]:
    count = 200 if quick() else 1000
    downtime = 10.0
    params = {
        "count": count,
        "due": "all at one instant",
        "kill": "SIGKILL once posting is done, before the due instant",
        "restart_s_after_due": downtime,
    }
    return params, delivery(run, count, 0.0, crash_downtime=downtime)


def mixed(run: Run) -> tuple[dict[str, Any], dict[str, Any]]:
    count = 500 if quick() else 5000
    steady = {"post": 20.0, "jobs": 10.0, "health": 10.0}
    params = {
        "count": count,
        "due": "all at one instant",
        "steady_load_per_s": steady,
        "steady_post": "POST /subscribe due in 30 days",
    }
    return params, delivery(run, count, 0.0, steady=steady)


def tasks(run: Run) -> tuple[dict[str, Any], dict[str, Any]]:
    """The storm with tasks of a job function of your own instead of reminders: posted
    through POST /tasks, each sending one e-mail that carries its task's id."""
    count = 500 if quick() else 5000
    params = {
        "count": count,
        "due": "all at one instant",
        "posted": "POST /tasks with run_at, admin token",
        "job": f"{TASK_JOB} of {TASK_JOB_MODULE.name} (job_modules), one e-mail per task",
        "drain_deadline_s": DRAIN_DEADLINE_S,
        "attempts": 1,
        "attempts_why": (
            "one attempt and no paired limit: set beside the storm of reminders, which has five "
            "and the limit right after each"
        ),
        "not_run": {target: why for (name, target), why in SKIPPED.items() if name == "tasks"},
    }
    figures = delivery(run, count, 0.0, job=TASK_JOB)
    succeeded = figures.get("target_status_counts", {}).get("succeeded")
    # Every task the service took reached the sink once, and the service recorded it succeeded.
    figures["exactly_once"] = (
        figures["accepted"] == count
        and figures["lost"] == 0
        and figures["duplicated"] == 0
        and figures["unexpected_messages"] == 0
        and succeeded == count
    )
    return params, figures


def scale(run: Run) -> tuple[dict[str, Any], dict[str, Any]]:
    from bench.scale import scale_run

    return scale_run(run)


def enqueue(run: Run) -> tuple[dict[str, Any], dict[str, Any]]:
    from bench.enqueue import enqueue_run

    return enqueue_run(run)


def failover(run: Run) -> tuple[dict[str, Any], dict[str, Any]]:
    from bench.failover import failover_run

    return failover_run(run)


SCENARIOS: dict[str, Callable[[Run], tuple[dict[str, Any], dict[str, Any]]]] = {
    "storm": storm,
    "spread": spread,
    "crash": crash,
    "enqueue": enqueue,
    "mixed": mixed,
    "scale": scale,
    "tasks": tasks,
    "failover": failover,
}


def cleanup(run: Run, keep: bool) -> None:
    """Remove the run's SQLite files (up to gigabytes at scale); logs and records stay."""
    if keep:
        return
    for path in run.directory.glob("*.sqlite*"):
        path.unlink(missing_ok=True)
    # One process's, or each of a cluster's (process-N/scheduler_app/var).
    for state in [
        run.directory / "scheduler_app" / "var",
        *run.directory.glob("*/scheduler_app/var"),
    ]:
        shutil.rmtree(state, ignore_errors=True)


def dump(figures: dict[str, Any]) -> str:
    return json.dumps(figures, indent=2, default=str)
