"""Reading what the actors recorded and turning it into figures."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.common import percentile, read_jsonl


@dataclass
class SinkLog:
    """The sink's record file, read incrementally while a run is under way."""

    path: Path
    offset: int = 0
    first: dict[str, float] = field(default_factory=dict)
    copies: dict[str, int] = field(default_factory=dict)
    total: int = 0
    last_arrival: float = 0.0

    def poll(self) -> int:
        """Read new records; return how many arrived since the last poll."""
        if not self.path.exists():
            return 0
        with self.path.open("rb") as handle:
            handle.seek(self.offset)
            chunk = handle.read()
        end = chunk.rfind(b"\n")
        if end < 0:
            return 0
        self.offset += end + 1
        new = 0
        for line in chunk[: end + 1].splitlines():
            if not line.strip():
                continue
            record = json.loads(line)
            reminder_id = record.get("id") or f"?{record.get('message_id')}"
            self.total += 1
            new += 1
            self.copies[reminder_id] = self.copies.get(reminder_id, 0) + 1
            if reminder_id not in self.first:
                self.first[reminder_id] = record["t"]
            self.last_arrival = max(self.last_arrival, record["t"])
        return new

    def delivered(self, ids: set[str] | dict[str, float]) -> int:
        return sum(1 for reminder_id in ids if reminder_id in self.first)


def accepted_reminders(post_log: Path) -> tuple[dict[str, float], dict[str, Any]]:
    """The reminders the target accepted (id to due time) and the enqueue figures."""
    rows = read_jsonl(post_log)
    accepted = {row["id"]: row["due"] for row in rows if row.get("status") == 201 and "id" in row}
    latencies = [row["latency"] for row in rows if "latency" in row]
    ends = [row["sent"] + row["latency"] for row in rows if "sent" in row and "latency" in row]
    starts = [row["sent"] for row in rows if "sent" in row]
    elapsed = max(ends) - min(starts) if ends and starts else None
    refused: dict[str, int] = {}
    for row in rows:
        if row.get("status") != 201:
            key = str(row.get("status"))
            refused[key] = refused.get(key, 0) + 1
    figures = {
        "posted": len(rows),
        "accepted": len(accepted),
        "refused_by_status": refused,
        "enqueue_requests_per_s": len(rows) / elapsed if elapsed else None,
        "enqueue_latency_p50_s": percentile(latencies, 50),
        "enqueue_latency_p99_s": percentile(latencies, 99),
        "posting_finished_at": max(ends) if ends else None,
    }
    return accepted, figures


def delivery_figures(accepted: dict[str, float], sink: SinkLog, first_due: float) -> dict[str, Any]:
    sink.poll()
    delivered_ids = [reminder_id for reminder_id in accepted if reminder_id in sink.first]
    lags = [sink.first[reminder_id] - accepted[reminder_id] for reminder_id in delivered_ids]
    duplicated = sum(sink.copies[reminder_id] - 1 for reminder_id in delivered_ids)
    unexpected = sum(n for reminder_id, n in sink.copies.items() if reminder_id not in accepted)
    last = max((sink.first[reminder_id] for reminder_id in delivered_ids), default=None)
    last_due = max(accepted.values(), default=first_due)
    return {
        "delivered": len(delivered_ids),
        "lost": len(accepted) - len(delivered_ids),
        "duplicated": duplicated,
        "unexpected_messages": unexpected,
        "fire_lag_p50_s": percentile(lags, 50),
        "fire_lag_p99_s": percentile(lags, 99),
        "fire_lag_max_s": max(lags) if lags else None,
        "fire_lag_min_s": min(lags) if lags else None,
        # From the first due instant until the last reminder that arrived; when some were
        # lost this is the time until the last one that did arrive (see "lost").
        "drain_s": (last - first_due) if last is not None else None,
        "drain_after_last_due_s": (last - last_due) if last is not None else None,
        "messages_per_s_while_draining": (
            len(delivered_ids) / (last - first_due) if last and last > first_due else None
        ),
    }


def api_figures(probe_log: Path, start: float, end: float) -> dict[str, Any]:
    """Latency per route for the requests that started in [start, end]."""
    rows = [row for row in read_jsonl(probe_log) if start <= row["t"] <= end]
    figures: dict[str, Any] = {}
    for route in sorted({row["route"] for row in rows}):
        mine = [row for row in rows if row["route"] == route]
        latencies = [row["latency"] for row in mine]
        failed = sum(1 for row in mine if not 200 <= row["status"] < 300)
        figures[f"api_{route}_requests"] = len(mine)
        figures[f"api_{route}_failed"] = failed
        figures[f"api_{route}_p50_s"] = percentile(latencies, 50)
        figures[f"api_{route}_p99_s"] = percentile(latencies, 99)
        figures[f"api_{route}_max_s"] = max(latencies) if latencies else None
    return figures
