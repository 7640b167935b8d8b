"""Load: 2,000 reminders falling due within seconds, each delivered once, /healthz answering."""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import TracebackType

import httpx
import pytest

from scheduler_app.app import create_app
from tests.support import (
    ADMIN,
    live_server,
    make_settings,
    outbox_messages,
    reminder_ids,
    wait_until,
)

REMINDERS = 2_000
POST_CONCURRENCY = 8
# Posting speed varies with the machine and its load (50 to 250 a second were seen on two
# shared cores), so a first batch, due much later, times it; the due window then opens a
# little after the rest is expected to be posted.
CALIBRATION = 100
SAFETY_FACTOR = 1.1
LEAD_S = 2.5
SPREAD_S = 3.0
# Never closer to "now" than this when posted, should posting be slower than expected: the
# window then stretches rather than the API refusing a due time in the past.
MIN_AHEAD_S = 2.5
# Generous: only an event loop stalled for seconds misses it (job store I/O on the loop
# against a locked or distant database, say); answers here take well under half a second.
HEALTH_TIMEOUT_S = 2.0
HEALTH_INTERVAL_S = 0.05
DRAIN_TIMEOUT_S = 90.0
PAGE = 500


@dataclass
class HealthProbe:
    """Polls GET /healthz from a thread and records every answer (or failure) with its latency."""

    base_url: str
    # (monotonic time sent, latency in s, status code or error text)
    answers: list[tuple[float, float, int | str]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> HealthProbe:
        self._thread = threading.Thread(target=self._poll, name="healthz-probe", daemon=True)
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=HEALTH_TIMEOUT_S + 5)

    def _poll(self) -> None:
        with httpx.Client(base_url=self.base_url, timeout=HEALTH_TIMEOUT_S) as client:
            while not self._stop.is_set():
                sent = time.monotonic()
                outcome: int | str
                try:
                    outcome = client.get("/healthz").status_code
                except httpx.HTTPError as exc:
                    outcome = f"{type(exc).__name__}: {exc}"
                self.answers.append((sent, time.monotonic() - sent, outcome))
                self._stop.wait(HEALTH_INTERVAL_S)

    def failures(self) -> list[tuple[float, float, int | str]]:
        return [
            answer for answer in self.answers if answer[2] != 200 or answer[1] > HEALTH_TIMEOUT_S
        ]

    def summary(self) -> str:
        return (
            f"/healthz: {len(self.answers)} answers, {len(self.failures())} not 200 within "
            f"{HEALTH_TIMEOUT_S} s, max latency {self.max_latency():.3f} s"
        )

    def max_latency(self, since: float = 0.0) -> float:
        return max((latency for sent, latency, _ in self.answers if sent >= since), default=0.0)


def due_times(start: datetime) -> list[datetime]:
    return [start + timedelta(seconds=SPREAD_S * i / REMINDERS) for i in range(REMINDERS)]


async def post_all(base_url: str, planned: list[datetime]) -> list[tuple[str, datetime]]:
    """POST one reminder per planned due time, a few at a time; return (id, remind_at) pairs."""
    slots = asyncio.Semaphore(POST_CONCURRENCY)
    limits = httpx.Limits(max_connections=POST_CONCURRENCY)

    async with httpx.AsyncClient(base_url=base_url, timeout=30.0, limits=limits) as client:

        async def post(index: int, due: datetime) -> tuple[str, datetime]:
            async with slots:
                soonest = datetime.now(UTC) + timedelta(seconds=MIN_AHEAD_S)
                remind_at = max(due, soonest)
                sent = time.monotonic()
                response = await client.post(
                    "/subscribe",
                    json={
                        "email": f"load{index}@example.com",
                        "remind_at": remind_at.isoformat(),
                        "subject": f"Load {index}",
                    },
                )
            took = time.monotonic() - sent
            assert response.status_code == 201, f"after {took:.2f} s: {response.text}"
            return str(response.json()["id"]), remind_at

        return await asyncio.gather(*(post(i, due) for i, due in enumerate(planned)))


def eml_count(outbox: Path) -> int:
    return sum(1 for _ in outbox.glob("*.eml")) if outbox.is_dir() else 0


def ids_with_status(client: httpx.Client, status: str) -> list[str]:
    """Every reminder id with this status, through the admin listing's pages."""
    found: list[str] = []
    cursor: str | None = None
    while True:
        params: dict[str, str | int] = {"status": status, "limit": PAGE}
        if cursor:
            params["cursor"] = cursor
        response = client.get("/reminders", params=params, headers=ADMIN)
        assert response.status_code == 200, response.text
        page = response.json()
        found += [item["id"] for item in page["items"]]
        cursor = page["next_cursor"]
        if not cursor:
            return found


def describe_progress(base_url: str, outbox: Path) -> str:
    with httpx.Client(base_url=base_url, timeout=30.0) as client:
        statuses = {
            status: len(ids_with_status(client, status))
            for status in ("scheduled", "sent", "failed", "missed")
        }
    return f"{eml_count(outbox)} messages in the outbox, reminders by status: {statuses}"


def test_two_thousand_reminders_due_together_are_each_sent_once_while_healthz_answers(
    tmp_path: Path, database_url: str
) -> None:
    settings = make_settings(tmp_path, database_url)
    outbox = tmp_path / "outbox"
    with live_server(create_app(settings)) as base_url:
        later = datetime.now(UTC) + timedelta(days=1)
        began = time.monotonic()
        calibration = asyncio.run(post_all(base_url, [later] * CALIBRATION))
        expected_s = (time.monotonic() - began) * REMINDERS / CALIBRATION * SAFETY_FACTOR
        start = datetime.now(UTC) + timedelta(seconds=expected_s + LEAD_S)
        with HealthProbe(base_url) as probe:
            posting_began = time.monotonic()
            try:
                created = asyncio.run(post_all(base_url, due_times(start)))
            except AssertionError as exc:
                pytest.fail(f"POST /subscribe failed: {exc}; {probe.summary()}")
            posting_s = time.monotonic() - posting_began
            first_due = min(due for _, due in created)
            last_due = max(due for _, due in created)
            # Latency while reminders fall due, apart from the posting burst before.
            due_phase = time.monotonic() + (first_due - datetime.now(UTC)).total_seconds()
            try:
                wait_until(
                    lambda: eml_count(outbox) >= REMINDERS,
                    timeout_s=(last_due - datetime.now(UTC)).total_seconds() + DRAIN_TIMEOUT_S,
                    interval_s=0.1,
                )
            except pytest.fail.Exception as exc:
                pytest.fail(f"not drained: {exc.msg}; {describe_progress(base_url, outbox)}")
            drained = datetime.now(UTC)
            # A late duplicate (a second job for one reminder) would land soon after the rest.
            time.sleep(0.5)

        with httpx.Client(base_url=base_url, timeout=30.0) as client:
            sent = ids_with_status(client, "sent")
            scheduled = ids_with_status(client, "scheduled")

    ids = {reminder_id for reminder_id, _ in created}
    assert len(ids) == REMINDERS
    print(
        f"\n[{settings.database_url.split(':')[0]}] {REMINDERS} reminders: posted in "
        f"{posting_s:.1f} s (expected {expected_s:.1f} s); due from {first_due:%H:%M:%S.%f} "
        f"to {last_due:%H:%M:%S.%f} "
        f"({(last_due - first_due).total_seconds():.1f} s); drained "
        f"{(drained - first_due).total_seconds():.1f} s after the first was due, "
        f"{(drained - last_due).total_seconds():.1f} s after the last; "
        f"/healthz: {len(probe.answers)} answers, max latency {probe.max_latency():.3f} s "
        f"overall, {probe.max_latency(since=due_phase):.3f} s while due"
    )
    assert probe.answers, "the /healthz probe never ran"
    failures = probe.failures()
    assert failures == [], (
        f"{len(failures)} of {len(probe.answers)} /healthz requests did not answer 200 within "
        f"{HEALTH_TIMEOUT_S} s; first ones (latency s, answer): "
        f"{[(round(latency, 3), answer) for _, latency, answer in failures[:5]]}"
    )

    counts = Counter(reminder_ids(outbox_messages(outbox)))
    duplicates = {rid: n for rid, n in counts.items() if n > 1}
    assert duplicates == {}, f"{len(duplicates)} reminder(s) delivered more than once"
    assert set(counts) == ids, (
        f"missing: {len(ids - set(counts))}, unknown: {len(set(counts) - ids)}"
    )
    # Only the calibration batch, due tomorrow, is left waiting.
    assert set(scheduled) == {reminder_id for reminder_id, _ in calibration}
    assert set(sent) == ids
    assert len(sent) == REMINDERS
