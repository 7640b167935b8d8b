"""One Markdown file with a table per scenario and database: rows are figures, columns are
scheduler_app, baseline, limit and the ratios of scheduler_app to each."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

COLUMNS = ("scheduler_app", "baseline", "limit")
# (figure key, label, multiplier, decimals)
ROWS: list[tuple[str, str, float, int]] = [
    ("startup_s", "start-up time, empty or seeded (s)", 1, 2),
    ("startup_with_pending_s", "restart time with N pending (s)", 1, 2),
    ("pending_at_kill", "pending when killed", 1, 0),
    ("wrk_requests_per_s", "enqueue requests/s (wrk)", 1, 0),
    ("wrk_latency_p50_s", "enqueue latency p50, wrk (ms)", 1000, 1),
    ("wrk_latency_p99_s", "enqueue latency p99, wrk (ms)", 1000, 1),
    ("wrk_non_2xx", "enqueue non-2xx answers (wrk)", 1, 0),
    ("python_client_requests_per_s", "requests/s, bench Python client", 1, 0),
    ("paced_requests_per_s", "paced at 1,000/s offered: answered/s", 1, 0),
    ("paced_latency_p50_s", "paced at 1,000/s: latency p50 (ms)", 1000, 1),
    ("paced_latency_p99_s", "paced at 1,000/s: latency p99 (ms)", 1000, 1),
    ("paced_latency_max_s", "paced at 1,000/s: latency max (ms)", 1000, 1),
    ("paced_errors", "paced at 1,000/s: non-201 answers", 1, 0),
    ("enqueue_requests_per_s", "enqueue requests/s (bench client, 16 conns)", 1, 0),
    ("enqueue_latency_p50_s", "enqueue latency p50 (ms)", 1000, 1),
    ("enqueue_latency_p99_s", "enqueue latency p99 (ms)", 1000, 1),
    ("accepted", "accepted (201) / sent", 1, 0),
    ("delivered", "delivered", 1, 0),
    ("lost", "lost", 1, 0),
    ("duplicated", "duplicated", 1, 0),
    ("exactly_once", "every task delivered once and recorded succeeded", 1, 0),
    ("fire_lag_p50_s", "fire lag p50 (s)", 1, 3),
    ("fire_lag_p99_s", "fire lag p99 (s)", 1, 3),
    ("fire_lag_max_s", "fire lag max (s)", 1, 3),
    ("drain_s", "drain time from first due (s)", 1, 2),
    ("drain_ratio_to_paired_limit", "drain / the limit's drain right after it (median)", 1, 2),
    ("cpu_bound_drain_s", "CPU-bound drain: the actors' CPU seconds / cores (s)", 1, 2),
    (
        "cpu_bound_ratio_to_paired_limit",
        "CPU-bound drain / the limit's drain right after it (median)",
        1,
        2,
    ),
    ("machine_busy_cores", "cores busy while draining, all processes", 1, 2),
    ("drain_after_last_due_s", "last arrival after last due (s)", 1, 2),
    ("messages_per_s_while_draining", "messages/s while draining", 1, 0),
    ("api_healthz_p99_s", "API p99 GET /healthz during the run (ms)", 1000, 1),
    ("api_healthz_max_s", "API max GET /healthz during the run (ms)", 1000, 1),
    ("api_jobs_p99_s", "API p99 GET /jobs?limit=50 during the run (ms)", 1000, 1),
    ("api_jobs_failed", "GET /jobs failures during the run", 1, 0),
    ("api_subscribe_p99_s", "API p99 POST /subscribe during the run (ms)", 1000, 1),
    ("api_subscribe_failed", "POST /subscribe failures during the run", 1, 0),
    ("seed_s", "seeding time, bulk SQL (s)", 1, 1),
    ("jobs_first_page_p50_s", "GET /jobs first page p50 (ms)", 1000, 1),
    ("jobs_first_page_max_s", "GET /jobs first page max (ms)", 1000, 1),
    ("jobs_deep_page_p50_s", "GET /jobs deep page (90%) p50 (ms)", 1000, 1),
    ("jobs_deep_page_max_s", "GET /jobs deep page (90%) max (ms)", 1000, 1),
    ("subscribe_with_pending_p50_s", "POST /subscribe with N pending p50 (ms)", 1000, 1),
    ("with_pending_wrk_requests_per_s", "enqueue with N pending (wrk): requests/s", 1, 0),
    ("with_pending_wrk_latency_p99_s", "enqueue with N pending (wrk): p99 (ms)", 1000, 1),
    (
        "enqueue_with_pending_over_empty_median",
        "enqueue with N pending / an empty database, alternating wrk runs (median)",
        1,
        2,
    ),
    ("idle_cpu_percent", "CPU while idle with N pending, 65 s (% of one core)", 1, 1),
    ("burst_on_backlog_delivered", "burst of 1,000 due at once on the backlog: delivered", 1, 0),
    ("burst_on_backlog_duplicated", "burst on the backlog: duplicated", 1, 0),
    ("burst_on_backlog_drain_s", "burst on the backlog: drain from its due time (s)", 1, 2),
    ("burst_on_backlog_fire_lag_p99_s", "burst on the backlog: fire lag p99 (s)", 1, 3),
    *[
        (f"{kind}_{figure}", f"failover, {label}: {what}", 1, 2)
        for kind, label in (
            ("sigkill_pid_gone", "SIGKILL, pid seen gone"),
            ("sigkill_pid_lingering", "SIGKILL, pid lingering (as on another host)"),
            ("sigterm", "SIGTERM"),
        )
        for figure, what in (
            ("take_over_p50_s", "signal -> new leader p50 (s)"),
            ("take_over_max_s", "signal -> new leader max (s)"),
            ("first_delivery_p50_s", "signal -> first delivery of work due after it p50 (s)"),
            ("first_delivery_max_s", "signal -> first delivery of work due after it max (s)"),
            ("late_max_s", "latest delivery behind its due time (s)"),
        )
    ],
    ("delivered_under_two_message_ids", "reminders delivered under two Message-IDs", 1, 0),
    ("sigterm_exit_codes", "exit codes after SIGTERM", 1, 0),
    ("peak_rss_mb", "peak RSS of the service (MiB)", 1, 0),
]


def _cpu_against_paired_limit(figures: dict[str, Any]) -> str | None:
    """The shown attempt's CPU seconds (every actor) over those of the limit right after it,
    beside its drain over that limit's drain: on a machine whose cores are all busy, the two
    ratios move together."""
    cpu, limit_cpu = figures.get("cpu_s_by_actor"), figures.get("paired_limit_cpu_s_by_actor")
    attempts = figures.get("drain_s_per_attempt") or []
    paired = figures.get("paired_limit_drain_s_per_attempt") or []
    drain = figures.get("drain_s")
    if not (cpu and limit_cpu and drain in attempts and len(paired) == len(attempts)):
        return None
    limit_drain = paired[attempts.index(drain)]
    if not limit_drain:
        return None
    return (
        f"the shown attempt against the limit right after it: CPU seconds "
        f"{sum(cpu.values()) / sum(limit_cpu.values()):.2f}x, drain {drain / limit_drain:.2f}x"
    )


def _load(directory: Path) -> list[dict[str, Any]]:
    results = []
    for path in sorted(directory.glob("*.json")):
        try:
            results.append(json.loads(path.read_text()))
        except (OSError, json.JSONDecodeError):
            continue
    return results


def _format(value: Any, multiplier: float, decimals: int) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if not isinstance(value, int | float):
        return str(value)
    return f"{value * multiplier:,.{decimals}f}"


def _ratio(mine: Any, other: Any) -> str:
    if not isinstance(mine, int | float) or not isinstance(other, int | float) or not other:
        return "-"
    ratio = mine / other
    if ratio >= 10:
        return f"{ratio:,.0f}x"
    if ratio >= 0.1 or ratio == 0:
        return f"{ratio:.2f}x"
    return f"{ratio:.1g}x"


def _order(scenario: str) -> tuple[int, str]:
    order = [
        "storm",
        "storm-3p",
        "tasks",
        "spread",
        "crash",
        "enqueue",
        "enqueue-3p",
        "mixed",
        "failover",
        "scale-100k",
        "scale-1m",
    ]
    return (order.index(scenario) if scenario in order else len(order), scenario)


def render(results: list[dict[str, Any]]) -> str:
    groups: dict[tuple[str, str], dict[str, dict[str, Any]]] = {}
    for result in results:
        key = (result["scenario"], result["db"])
        groups.setdefault(key, {})[result["target"]] = result
    lines = [
        "# Benchmark results",
        "",
        "Generated by `python -m bench report` from the JSON files beside this one (each has "
        "every figure, the parameters, the date and the machine). Ratios are scheduler_app "
        "divided by the other column. Times are wall-clock; every actor (service, load client, "
        "SMTP sink, harness) is its own process on the same machine.",
        "",
    ]
    for scenario, db in sorted(groups, key=lambda key: (key[1], *_order(key[0]))):
        by_target = groups[(scenario, db)]
        first = by_target.get("scheduler_app") or next(iter(by_target.values()))
        machine = first.get("machine", {})
        runs = ", ".join(
            f"{target} {result.get('date')} (code {_commit(result)})"
            for target in COLUMNS
            if (result := by_target.get(target)) is not None
        )
        lines += [
            f"## {scenario} on {db}",
            "",
            f"Parameters: `{json.dumps(first.get('parameters', {}))}`. "
            f"Run: {runs}; on {machine.get('cores')} cores, Python "
            f"{machine.get('python')}, SQLite {machine.get('sqlite')}, PostgreSQL "
            f"{machine.get('postgresql')}.",
            "",
            "| figure | scheduler_app | baseline | limit | app / baseline | app / limit |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for key, label, multiplier, decimals in ROWS:
            values = [by_target.get(t, {}).get("figures", {}).get(key) for t in COLUMNS]
            if all(value is None for value in values):
                continue
            cells = [_format(value, multiplier, decimals) for value in values]
            lines.append(
                f"| {label} | {' | '.join(cells)} | {_ratio(values[0], values[1])} | "
                f"{_ratio(values[0], values[2])} |"
            )
        for target in COLUMNS:
            result = by_target.get(target)
            if result is None:
                continue
            extra = []
            figures = result.get("figures", {})
            if figures.get("error"):
                extra.append(f"error: {figures['error']}")
            attempts = figures.get("drain_s_per_attempt")
            if attempts:
                rule = "fastest" if target == "limit" else "median"
                extra.append(f"drain per attempt: {_seconds(attempts)} s (the {rule} is shown)")
            paired = figures.get("paired_limit_drain_s_per_attempt")
            if paired:
                extra.append(f"the limit right after each attempt: {_seconds(paired)} s")
            if figures.get("cpu_s_by_actor"):
                extra.append(f"CPU seconds while draining: {_by_actor(figures['cpu_s_by_actor'])}")
            if figures.get("paired_limit_cpu_s_by_actor"):
                extra.append(
                    "the limit's right after it: "
                    f"{_by_actor(figures['paired_limit_cpu_s_by_actor'])}"
                )
            against = _cpu_against_paired_limit(figures)
            if against:
                extra.append(against)
            if figures.get("drain_stopped_because"):
                extra.append(f"drain wait stopped: {figures['drain_stopped_because']}")
            counts = figures.get("target_status_counts")
            if counts:
                extra.append(f"final statuses: {json.dumps(counts)}")
            extra += result.get("notes", [])
            if extra:
                lines.append("")
                lines.append(f"- {target}: " + "; ".join(str(item) for item in extra))
        lines.append("")
    return "\n".join(lines)


def write(directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "results.md"
    path.write_text(render(_load(directory)))
    return path


def _commit(result: dict[str, Any]) -> str:
    code = result.get("service_code_at_start")
    if isinstance(code, dict):
        return str(code.get("commit", "?"))
    return str(code or "?")


def _seconds(values: list[float | None]) -> str:
    return ", ".join("-" if value is None else f"{value:.2f}" for value in values)


def _by_actor(seconds: dict[str, float]) -> str:
    return ", ".join(f"{actor} {value:.2f}" for actor, value in seconds.items())
