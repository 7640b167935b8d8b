"""PostgreSQL stopped under the running service while reminders go out, and started again:
however long the database was away, every reminder is delivered exactly once and ends `sent`.

Each outage runs on a PostgreSQL server of its own (the shared one must never be stopped), with
an SMTP server of its own that takes a second to answer DATA, so that messages are on their way
when the database goes. Both outages run at once: the test takes about as long as the longer.
"""

from __future__ import annotations

import contextlib
import time
from collections import Counter
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any, NoReturn

import pytest

from tests.acceptance.service import Service, service_environment, smtp_environment
from tests.private_postgres import PrivatePostgres, private_postgres
from tests.support import SmtpSink, reminder_ids, running_smtp_sink, wait_until

# A short outage, and one longer than any fixed number of tries with doubling waits outlasts.
OUTAGES_S = (15.0, 180.0)
REMINDERS = 200
# The reminders fall due within SPREAD_S, from LEAD_S after the first is posted.
LEAD_S = 6.0
SPREAD_S = 2.0
DATA_DELAY_S = 1.0
SETTINGS = {
    "SCHEDULER_SCHEDULER__RECOVERY_INTERVAL_S": "10",
    "SCHEDULER_REMINDERS__RETRY_BASE_S": "2",
    "SCHEDULER_REMINDERS__RETRY_MAX_S": "10",
}
# After the restart: the writes that waited for the database, a pass over the job store, and a
# recovery pass for the reminders whose delivery could not start while it was away.
SETTLE_TIMEOUT_S = 90.0
# The run records of the last deliveries follow their outcome by a turn of the writer.
RUNS_TIMEOUT_S = 10.0


@dataclass
class Outage:
    seconds: float
    postgres: PrivatePostgres
    sink: SmtpSink
    service: Service
    ids: frozenset[str] = frozenset()
    stopped_at: float = 0.0
    delivered_before: int = 0
    stopping: Future[None] | None = None

    def fail(self, message: str) -> NoReturn:
        self.service.fail(
            f"{self.seconds:g} s outage: {message}\n--- PostgreSQL log (tail) ---\n"
            f"{self.postgres.log_tail(10)}"
        )


def subscribe(outage: Outage, due: list[datetime]) -> None:
    with outage.service.client() as client:
        created = []
        for n, at in enumerate(due):
            response = client.post(
                "/subscribe", json={"email": f"user{n}@example.com", "remind_at": at.isoformat()}
            )
            assert response.status_code == 201, response.text
            created.append(response.json()["id"])
    outage.ids = frozenset(created)


def sent_ids(outage: Outage) -> set[str]:
    with outage.service.client() as client:
        response = client.get(
            "/reminders",
            params={"status": "sent", "limit": 500},
            headers=Service.admin_headers(),
        )
    if response.status_code != 200:
        return set()
    return {item["id"] for item in response.json()["items"]}


def all_sent(outage: Outage) -> bool:
    return sent_ids(outage) == outage.ids


def runs(outage: Outage, outcome: str) -> list[dict[str, Any]]:
    with outage.service.client() as client:
        response = client.get(
            "/runs", params={"outcome": outcome, "limit": 500}, headers=Service.admin_headers()
        )
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


def sleep_until(deadline: float, outages: list[Outage]) -> None:
    """Wait until the monotonic deadline, failing as soon as a service is no longer running:
    a crash would make a second delivery legitimate."""
    while (left := deadline - time.monotonic()) > 0:
        for outage in outages:
            if not outage.service.running:
                outage.fail("the service exited while the database was away")
        time.sleep(min(left, 1.0))


def problems_once_back(outage: Outage) -> list[str]:
    """Once the database is back and every reminder is sent: what is wrong with how."""
    outage.service.wait_until(
        f"all {REMINDERS} reminders sent after the {outage.seconds:g} s outage",
        partial(all_sent, outage),
        timeout_s=SETTLE_TIMEOUT_S,
    )
    # A second copy already on its way would have landed by now.
    time.sleep(DATA_DELAY_S + 1.0)
    problems = []
    received = outage.sink.received()
    by_reminder = Counter(reminder_ids(received))
    message_ids = {str(message["Message-ID"]) for message in received}
    twice = {rid: n for rid, n in by_reminder.items() if n > 1}
    if twice or set(by_reminder) != outage.ids or len(message_ids) != len(received):
        problems.append(
            f"{len(twice)} reminder(s) delivered more than once, "
            f"{len(outage.ids - set(by_reminder))} never: {len(received)} messages in all, "
            f"{len(message_ids)} Message-IDs"
        )
    # The run records outlast the outage too: none is left 'running', and each delivery's run
    # says it sent.
    deadline = time.monotonic() + RUNS_TIMEOUT_S
    while (running := len(runs(outage, "running"))) and time.monotonic() < deadline:
        time.sleep(0.2)
    if running:
        problems.append(f"{running} run(s) still 'running' {RUNS_TIMEOUT_S:g} s after")
    sent_runs = sum(run["result"] == "sent" for run in runs(outage, "success"))
    if sent_runs != REMINDERS:
        problems.append(f"{sent_runs} runs recorded as having sent, not {REMINDERS}")
    return [f"{outage.seconds:g} s outage: {problem}" for problem in problems]


def test_a_message_out_during_a_database_outage_is_recorded_sent_once_it_is_back(
    tmp_path: Path,
) -> None:
    with contextlib.ExitStack() as stack, ThreadPoolExecutor(len(OUTAGES_S)) as stopper:
        outages = []
        for seconds in OUTAGES_S:
            postgres = stack.enter_context(private_postgres())
            sink = stack.enter_context(running_smtp_sink(SmtpSink))
            sink.delay_s = DATA_DELAY_S
            workdir = tmp_path / f"outage-{seconds:g}s"
            workdir.mkdir()
            variables = {**smtp_environment(sink.host, sink.port), **SETTINGS}
            service = Service(workdir, service_environment(workdir, postgres.url, variables))
            stack.callback(service.close)
            service.start()
            outages.append(Outage(seconds, postgres, sink, service))

        first_due = datetime.now(UTC) + timedelta(seconds=LEAD_S)
        due = [first_due + timedelta(seconds=SPREAD_S * n / REMINDERS) for n in range(REMINDERS)]
        for outage in outages:
            subscribe(outage, due)
            assert outage.sink.sending_started() == 0, "subscribing took longer than LEAD_S"

        # The database goes just after the first message went out: by then about half the
        # reminders are due and have started, and most of those are still on their way.
        def stop_the_sending() -> bool:
            for outage in outages:
                if outage.stopping is None and outage.sink.received():
                    outage.stopped_at = time.monotonic()
                    outage.delivered_before = len(outage.sink.received())
                    outage.stopping = stopper.submit(outage.postgres.stop, "fast")
            return all(outage.stopping is not None for outage in outages)

        wait_until(stop_the_sending, timeout_s=LEAD_S + SPREAD_S + 20, interval_s=0.005)
        for outage in outages:
            assert outage.stopping is not None
            outage.stopping.result()

        problems: list[str] = []
        for outage in sorted(outages, key=lambda outage: outage.seconds):
            sleep_until(outage.stopped_at + outage.seconds, outages)
            # Otherwise nothing was at stake: no message went out while the database was away.
            out_while_away = len(outage.sink.received()) - outage.delivered_before
            if out_while_away <= 0:
                outage.fail("no message went out while the database was away: nothing to prove")
            outage.postgres.start()
            problems += problems_once_back(outage)

        if problems:
            logs = "\n".join(
                f"{outage.seconds:g} s: {outage.service.log_path}" for outage in outages
            )
            pytest.fail("\n".join([*problems, "service logs:", logs]))
        for outage in outages:
            code = outage.service.terminate()
            assert code == 0, f"exit code {code}\n{outage.service.log_tail()}"
