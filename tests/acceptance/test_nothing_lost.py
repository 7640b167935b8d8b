"""Stopping the real service in the middle of deliveries loses nothing: SIGKILL and SIGTERM."""

from __future__ import annotations

import email
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, select

from scheduler_app.db.models import Task
from scheduler_app.reminders.service import PUBLIC_STATUS
from tests.acceptance.conftest import ServiceFactory
from tests.acceptance.service import Service, smtp_environment
from tests.support import SmtpSink, reminder_ids, running_smtp_sink

# The From address of tests.acceptance.service, whose domain ends every Message-ID.
FROM_DOMAIN = "example.com"
# Far enough ahead that subscribing a batch finishes before it is due.
DUE_IN_S = 2.0


@dataclass
class TrackingSink(SmtpSink):
    """An SmtpSink that also notes, with the time, each message whose DATA it began reading.

    A message begun but not (yet) received is one the service is sending right now.
    """

    begun: list[tuple[str, float]] = field(default_factory=list)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        message = email.message_from_bytes(envelope.content)
        with self._lock:
            self.begun.append((str(message["X-Reminder-Id"]), time.monotonic()))
        return await super().handle_DATA(server, session, envelope)

    def begun_ids(self) -> list[str]:
        return [reminder_id for reminder_id, _ in self.begun_since(0.0)]

    def begun_since(self, moment: float) -> list[tuple[str, float]]:
        """(reminder id, time.monotonic()) of each message begun at or after moment."""
        with self._lock:
            return [(rid, at) for rid, at in self.begun if at >= moment]

    def received_ids(self) -> list[str]:
        return reminder_ids(self.received())


@pytest.fixture
def sink() -> Iterator[TrackingSink]:
    with running_smtp_sink(TrackingSink) as tracking:
        yield tracking


def smtp_service(make_service: ServiceFactory, sink: SmtpSink, **scheduler: float | int) -> Service:
    """A service delivering to sink, with SCHEDULER_SCHEDULER__<KEY> set from scheduler."""
    extra = smtp_environment(sink.host, sink.port)
    extra.update({f"SCHEDULER_SCHEDULER__{key.upper()}": str(v) for key, v in scheduler.items()})
    return make_service(extra)


def subscribe_burst(service: Service, count: int, prefix: str) -> list[str]:
    """Subscribe count reminders all due at the same instant, DUE_IN_S from now; return ids."""
    remind_at = (datetime.now(UTC) + timedelta(seconds=DUE_IN_S)).isoformat()
    ids: list[str] = []
    with service.client() as client:
        for index in range(count):
            response = client.post(
                "/subscribe", json={"email": f"{prefix}{index}@example.com", "remind_at": remind_at}
            )
            assert response.status_code == 201, response.text
            ids.append(str(response.json()["id"]))
    assert datetime.now(UTC) < datetime.fromisoformat(remind_at), "subscribing was too slow"
    return ids


def stored_reminders(database_url: str) -> dict[str, tuple[str, int]]:
    """(status, attempts) of every reminder as its API names the status, read from the database
    while no service runs."""
    engine = create_engine(database_url)
    try:
        with engine.connect() as connection:
            rows = connection.execute(select(Task.id, Task.status, Task.attempts))
            return {row.id: (str(PUBLIC_STATUS[row.status]), row.attempts) for row in rows}
    finally:
        engine.dispose()


def statuses(client: httpx.Client, ids: set[str]) -> dict[str, str]:
    found: dict[str, str] = {}
    for reminder_id in sorted(ids):
        response = client.get(f"/reminders/{reminder_id}", headers=Service.admin_headers())
        assert response.status_code == 200, response.text
        found[reminder_id] = str(response.json()["status"])
    return found


def wait_until_all_sent(service: Service, ids: set[str], timeout_s: float) -> None:
    """Poll GET /reminders/{id} until every reminder is 'sent' ('sent' is final: asked once)."""
    pending = set(ids)
    with service.client() as client:

        def all_sent() -> bool:
            now = statuses(client, pending)
            pending.difference_update(rid for rid, status in now.items() if status == "sent")
            return not pending

        service.wait_until(f"all {len(ids)} reminders 'sent'", all_sent, timeout_s=timeout_s)


def message_ids_by_reminder(sink: SmtpSink) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for message in sink.received():
        found.setdefault(str(message["X-Reminder-Id"]), set()).add(str(message["Message-ID"]))
    return found


BURST = 40
BURST_CONCURRENCY = 4


def test_sigkill_during_a_delivery_burst_loses_nothing_and_repeats_only_what_was_in_flight(
    make_service: ServiceFactory, sink: TrackingSink, database_url: str
) -> None:
    # 0.4 s a message, 4 at a time: the burst takes about 4 s, long enough to kill it midway.
    sink.delay_s = 0.4
    service = smtp_service(make_service, sink, max_concurrent_jobs=BURST_CONCURRENCY)
    service.start()
    ids = subscribe_burst(service, BURST, "burst")

    service.wait_until(
        "a quarter of the burst delivered",
        lambda: len(sink.received()) >= BURST // 4,
        timeout_s=DUE_IN_S + 15,
    )
    service.kill()
    delivered_before = set(sink.received_ids())
    assert len(delivered_before) < BURST, "the whole burst was out before the kill: too fast"

    # In flight at the kill: the attempt was counted but the reminder not yet marked sent. Only
    # these may be sent twice: a duplicate needs the server to have accepted the message and
    # the process to have died before the row said 'sent'. A delivery holds one of the
    # max_concurrent_jobs slots from counting the attempt until the message is out; then at
    # most max_concurrent_jobs more mark theirs sent without a slot. So there are at most
    # twice BURST_CONCURRENCY of them; everything else is either marked sent (never sent
    # again) or was never handed to the server (sent once, after the restart).
    most_in_flight = 2 * BURST_CONCURRENCY
    rows = stored_reminders(database_url)
    in_flight = {
        rid for rid, (status, attempts) in rows.items() if status == "scheduled" and attempts
    }
    assert len(in_flight) <= most_in_flight, (in_flight, service.log_tail())

    service.start()
    wait_until_all_sent(service, set(ids), timeout_s=30.0)
    # A late duplicate (a second job for the same reminder) would land shortly after the rest.
    time.sleep(1.0)

    counts = Counter(sink.received_ids())
    duplicates = {rid for rid, n in counts.items() if n > 1}
    print(
        f"\nSIGKILL burst: {len(delivered_before)}/{BURST} received before the kill, "
        f"{len(in_flight)} in flight, {len(duplicates)} duplicate(s)"
    )
    assert set(counts) == set(ids), f"never received: {set(ids) - set(counts)}"
    assert max(counts.values()) <= 2, f"received three times or more: {counts.most_common(3)}"
    assert duplicates <= in_flight, f"duplicates that were not in flight: {duplicates - in_flight}"
    assert len(duplicates) <= most_in_flight
    # Every copy carries the reminder's stable Message-ID, so a recipient can drop the repeat.
    message_ids = message_ids_by_reminder(sink)
    assert message_ids == {rid: {f"<reminder-{rid}@{FROM_DOMAIN}>"} for rid in ids}


DRAIN_BATCH = 6
DRAIN_CONCURRENCY = 2
DRAIN_TIMEOUT_S = 5.0
# Process start-up aside, how much longer than the shutdown timeout an exit may take.
EXIT_MARGIN_S = 3.0


def test_sigterm_lets_running_deliveries_finish_and_starts_no_new_ones(
    make_service: ServiceFactory, sink: TrackingSink, database_url: str
) -> None:
    sink.delay_s = 1.0
    service = smtp_service(
        make_service,
        sink,
        max_concurrent_jobs=DRAIN_CONCURRENCY,
        shutdown_timeout_s=DRAIN_TIMEOUT_S,
    )
    service.start()
    ids = subscribe_burst(service, DRAIN_BATCH, "drain")

    # Both slots busy: the next delivery cannot start before one of these ends, 1 s from now.
    service.wait_until(
        "the first deliveries in flight",
        lambda: len(sink.begun_ids()) >= DRAIN_CONCURRENCY,
        timeout_s=DUE_IN_S + 10,
    )
    in_flight = set(sink.begun_ids())
    signalled = time.monotonic()
    code = service.terminate(timeout_s=DRAIN_TIMEOUT_S + EXIT_MARGIN_S)
    took = time.monotonic() - signalled
    print(f"\nSIGTERM drain: exited with {code} after {took:.2f} s, {len(in_flight)} in flight")
    assert code == 0, service.log_tail()

    # Nothing new was started during the shutdown, and the deliveries under way finished.
    started_late = [
        f"{rid} {at - signalled:.2f} s after SIGTERM" for rid, at in sink.begun_since(signalled)
    ]
    assert started_late == [], (
        "deliveries began during the shutdown:\n"
        + "\n".join(started_late)
        + f"\n{service.log_tail()}"
    )
    received = sink.received_ids()
    assert sorted(received) == sorted(in_flight), (
        f"in flight at SIGTERM: {sorted(in_flight)}; received by the server: {sorted(received)}"
        f"\n{service.log_tail()}"
    )
    rows = stored_reminders(database_url)
    assert {rid: rows[rid][0] for rid in in_flight} == dict.fromkeys(in_flight, "sent")
    not_started = set(ids) - in_flight
    assert {rid: rows[rid] for rid in not_started} == dict.fromkeys(not_started, ("scheduled", 0))

    service.start()
    with service.client() as client:
        assert statuses(client, in_flight) == dict.fromkeys(in_flight, "sent")
    wait_until_all_sent(service, set(ids), timeout_s=20.0)
    time.sleep(0.5)
    counts = Counter(sink.received_ids())
    assert counts == Counter(ids), f"not exactly once: {counts}"


CUT_DELAY_S = 3.0
CUT_TIMEOUT_S = 0.5
# The exit must come before the server would have answered, even on a loaded machine.
PROMPT_MARGIN_S = 2.0


def test_sigterm_cuts_a_delivery_longer_than_the_shutdown_timeout_and_restart_sends_it_once(
    make_service: ServiceFactory, sink: TrackingSink, database_url: str
) -> None:
    sink.delay_s = CUT_DELAY_S
    service = smtp_service(make_service, sink, shutdown_timeout_s=CUT_TIMEOUT_S)
    service.start()
    [reminder_id] = subscribe_burst(service, 1, "cut")

    service.wait_until(
        "the delivery in flight", lambda: sink.begun_ids() == [reminder_id], timeout_s=DUE_IN_S + 10
    )
    signalled = time.monotonic()
    # Waits long enough to see a shutdown that is slow rather than to kill it as hung.
    code = service.terminate(timeout_s=CUT_DELAY_S + EXIT_MARGIN_S)
    took = time.monotonic() - signalled
    print(f"\nSIGTERM cut short: exited with {code} after {took:.2f} s")
    assert code == 0, service.log_tail()
    received_before_restart = sink.received_ids()
    # Cut mid-delivery, the reminder must still be scheduled for the next start to send it.
    assert stored_reminders(database_url)[reminder_id][0] == "scheduled", service.log_tail()

    sink.delay_s = 0.0  # the second attempt need not be slow
    service.start()
    wait_until_all_sent(service, {reminder_id}, timeout_s=15.0)
    # Past the moment the first transaction would have been accepted had the server gone on
    # with it after the client left, so a copy from it would be counted too.
    first_begun = sink.begun_since(0.0)[0][1]
    time.sleep(max(0.0, first_begun + CUT_DELAY_S + 0.5 - time.monotonic()))

    problems = []
    if took > CUT_TIMEOUT_S + PROMPT_MARGIN_S:
        problems.append(
            f"the exit took {took:.2f} s after SIGTERM: the shutdown waited for the delivery "
            f"instead of cutting it after {CUT_TIMEOUT_S} s"
        )
    if received_before_restart:
        problems.append(
            "the server accepted the interrupted message before the process exited, while the "
            "reminder stayed 'scheduled': the next start sends it again"
        )
    copies = sink.received_ids().count(reminder_id)
    # The interrupted SMTP transaction was never completed, so only the retry was accepted.
    if copies != 1:
        problems.append(f"received {copies} times instead of once")
    assert not problems, "\n".join(problems) + f"\n{service.log_tail()}"
