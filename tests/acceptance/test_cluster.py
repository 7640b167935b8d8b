"""Several real `scheduler-app serve` processes on one database: one leads, the others take
over when it dies, stops, pauses or steps down, and no work is lost or done twice on the way.

Timings are printed (`pytest -s` shows them): take-over times, duplicates, lateness.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import time
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from tests.acceptance.cluster import (
    LEASE_S,
    Cluster,
    deliveries,
    post_round_robin,
    start_workers,
)
from tests.acceptance.service import Service, smtp_environment
from tests.support import SmtpSink, reminder_ids, wait_until

ClusterFactory = Callable[..., Cluster]
# What a test waits beyond a bound it asserts: the test's own polling of GET /admin/cluster
# on a busy 2-core machine.
LOOK_SLACK_S = 1.0
# A second copy of a message already on its way lands within this.
LATE_COPY_S = 1.0
SHORT_LEASE = {"SCHEDULER_SCHEDULER__LEASE_S": f"{LEASE_S:g}"}
JOB_MODULE = '''\
"""Jobs of the cluster tests: each notes when, and in which process, it ran."""

import json
import os
import time

from scheduler_app import job


@job("cluster_mark")
async def cluster_mark(path: str, label: str) -> None:
    with open(path, "a") as notes:
        notes.write(json.dumps({"label": label, "t": time.time(), "pid": os.getpid()}) + "\\n")


@job("cluster_tick")
async def cluster_tick() -> str:
    return "tick"
'''


@pytest.fixture
def make_cluster(tmp_path: Path, database_url: str) -> Iterator[ClusterFactory]:
    """Build and start a cluster on this test's database; every process dies at teardown.

    Depending on database_url makes this finalizer run before the PostgreSQL database is dropped.
    """
    clusters: list[Cluster] = []

    def make(
        size: int = 3,
        extra: Mapping[str, str] | None = None,
        config: str = "",
        files: Mapping[str, str] | None = None,
        workers: bool = False,
    ) -> Cluster:
        cluster = Cluster(
            tmp_path / f"cluster-{len(clusters)}", database_url, size, extra, config, files
        )
        clusters.append(cluster)
        if workers and database_url.startswith("sqlite"):
            start_workers(cluster)
        else:
            cluster.start()
        return cluster

    yield make
    for cluster in clusters:
        cluster.close()


def subscriptions(count: int, delay_s: float, spread_s: float) -> list[dict[str, Any]]:
    """POST /subscribe bodies, due delay_s after each is posted plus up to spread_s (evenly):
    on a busy machine, posting a thousand takes longer than due times fixed beforehand allow."""
    return [
        {"email": f"user{n}@example.com", "delay_seconds": delay_s + spread_s * n / count}
        for n in range(count)
    ]


def subscribe(cluster: Cluster, bodies: list[dict[str, Any]]) -> set[str]:
    """Post the reminders round-robin to every running process; their ids."""
    created = post_round_robin(cluster.urls, "/subscribe", bodies)
    return {body["id"] for body in created}


def wait_delivered(cluster: Cluster, sink: SmtpSink, ids: set[str], timeout_s: float) -> None:
    def all_in() -> bool:
        return ids <= set(reminder_ids(sink.received()))

    try:
        wait_until(all_in, timeout_s=timeout_s)
    except pytest.fail.Exception:
        missing = ids - set(reminder_ids(sink.received()))
        cluster.fail(f"{len(missing)} of {len(ids)} reminders not delivered in {timeout_s:g} s")


def assert_once(cluster: Cluster, sink: SmtpSink, ids: set[str]) -> None:
    """Every reminder of ids reached the sink once, and nothing else did."""
    received = deliveries(sink.received(), ids)
    if received.missing or received.unexpected or received.duplicated:
        cluster.fail(
            f"not exactly once: {len(received.missing)} missing, {len(received.unexpected)} "
            f"unexpected, duplicated: {dict(received.duplicated)}"
        )


def check_one_leader_and_roles(cluster: Cluster) -> None:
    """GET /admin/cluster on every running process: one leader, among them; every one of them
    listed, the others as followers; all agree. A process killed lately may still be listed
    (until it has not been seen for a while), as a follower."""
    running = {s.process.pid: s for s in cluster.running if s.process is not None}
    answers = []
    for service in running.values():
        view = cluster.view(service)
        if view is None:
            cluster.fail(f"GET /admin/cluster on port {service.port} did not answer 200")
        leader = view["leader"]
        roles = {process["pid"]: process["role"] for process in view["processes"]}
        leaders = [pid for pid, role in roles.items() if role == "leader"]
        if leader is None or len(leaders) != 1 or leaders[0] not in running:
            cluster.fail(f"not one leader among the running processes {sorted(running)}: {view}")
        if not set(running) <= set(roles):
            cluster.fail(f"not every running process {sorted(running)} is listed: {view}")
        [leading] = [p for p in view["processes"] if p["role"] == "leader"]
        if leading["id"] != leader["id"]:
            cluster.fail(f"the leader is not the process in the role of leader: {view}")
        answers.append((leader["id"], leader["term"]))
    if len(set(answers)) != 1:
        cluster.fail(f"the processes disagree on who leads: {answers}")


# --- 1. three processes, one leader, every reminder once -----------------------------------

REMINDERS = 1000


def test_three_processes_deliver_a_thousand_reminders_once_under_one_leader(
    make_cluster: ClusterFactory, smtp_sink: SmtpSink
) -> None:
    cluster = make_cluster(extra=smtp_environment(smtp_sink.host, smtp_sink.port), workers=True)
    check_one_leader_and_roles(cluster)
    for service in cluster.running:
        view = cluster.view(service)
        assert view is not None
        assert len(view["processes"]) == 3, view
    began = time.monotonic()
    ids = subscribe(cluster, subscriptions(REMINDERS, delay_s=2.0, spread_s=1.0))
    posted_s = time.monotonic() - began
    assert len(ids) == REMINDERS

    wait_delivered(cluster, smtp_sink, ids, timeout_s=60)
    drained_s = time.monotonic() - began
    time.sleep(LATE_COPY_S)
    assert_once(cluster, smtp_sink, ids)
    check_one_leader_and_roles(cluster)
    print(
        f"\n{REMINDERS} reminders posted round-robin to 3 processes in {posted_s:.1f} s, "
        f"all delivered once {drained_s:.1f} s after the first was posted"
    )


# --- 2. the leader dies in the middle of a burst ---------------------------------------------

BURST = 600


def test_a_leader_killed_mid_burst_is_replaced_within_the_lease_and_nothing_is_lost(
    make_cluster: ClusterFactory, smtp_sink: SmtpSink
) -> None:
    """The dead leader's pid lingers (unreaped) until a new leader shows: the followers cannot
    tell it died and wait for its lease to run out, as on a cluster of several hosts."""
    cluster = make_cluster(
        extra={**smtp_environment(smtp_sink.host, smtp_sink.port), **SHORT_LEASE}
    )
    leader = cluster.wait_for_leader()
    ids = subscribe(cluster, subscriptions(BURST, delay_s=3.0, spread_s=1.0))

    # Once a fifth of the burst is out: most of it is yet to go, some of it on its way.
    wait_until(lambda: len(smtp_sink.received()) >= BURST // 5, timeout_s=30, interval_s=0.005)
    killed = time.monotonic()
    cluster.kill_lingering(leader.service)
    out_at_kill = len(smtp_sink.received())
    survivor = cluster.followers(leader)[0]
    new = cluster.wait_for_leader(via=survivor, other_than=leader, timeout_s=LEASE_S + 10)
    take_over_s = time.monotonic() - killed
    cluster.reap(leader.service)
    if out_at_kill >= BURST:
        cluster.fail("the whole burst was out before the kill: nothing to prove")

    wait_delivered(cluster, smtp_sink, ids, timeout_s=30)
    time.sleep(LATE_COPY_S)
    received = deliveries(smtp_sink.received(), ids)
    print(
        f"\nSIGKILL of the leader with {out_at_kill}/{BURST} out: term {leader.term} -> "
        f"{new.term} in {take_over_s:.2f} s (lease {LEASE_S:g} s); "
        f"{received.duplicates} duplicate(s), all under the same Message-ID: "
        f"{sorted(received.duplicated)}"
    )
    assert take_over_s <= LEASE_S + 1 + LOOK_SLACK_S, cluster.logs()
    if received.missing or received.unexpected or received.under_two_ids:
        cluster.fail(
            f"{len(received.missing)} missing, {len(received.unexpected)} unexpected, delivered "
            f"under two Message-IDs: {dict(received.under_two_ids)}"
        )
    check_one_leader_and_roles(cluster)


# --- 7. hand-overs: asked to step down, SIGTERM, SIGKILL seen at once -----------------------


def resign_through(cluster: Cluster, follower: Service) -> dict[str, Any]:
    with follower.client() as client:
        response = client.post("/admin/cluster/resign", headers=Service.admin_headers())
    if response.status_code != 200:
        cluster.fail(f"POST /admin/cluster/resign: {response.status_code} {response.text}")
    body: dict[str, Any] = response.json()
    return body


def due_soon(cluster: Cluster, sink: SmtpSink, count: int, in_s: float) -> set[str]:
    """Reminders due in_s from now (over half a second), posted to every process."""
    return subscribe(cluster, subscriptions(count, delay_s=in_s, spread_s=0.5))


def test_the_leader_hands_over_when_asked_stopped_or_killed_and_the_next_one_fires_work(
    make_cluster: ClusterFactory, smtp_sink: SmtpSink
) -> None:
    cluster = make_cluster(
        extra={**smtp_environment(smtp_sink.host, smtp_sink.port), **SHORT_LEASE}
    )
    timings = []

    # Asked through a follower: the leader hears it at its next renewal and steps down.
    leader = cluster.wait_for_leader()
    follower = cluster.followers(leader)[0]
    asked = time.monotonic()
    resigned = resign_through(cluster, follower)
    assert resigned == {"id": leader.id, "term": leader.term}, resigned
    new = cluster.wait_for_leader(via=follower, other_than=leader, timeout_s=10)
    timings.append(("resign through a follower", time.monotonic() - asked, 2.0))
    ids = due_soon(cluster, smtp_sink, 20, in_s=0.5)
    wait_delivered(cluster, smtp_sink, ids, timeout_s=5)

    # SIGTERM: the leader lets its jobs finish, then gives the lease up at once.
    leader = new
    pending = due_soon(cluster, smtp_sink, 20, in_s=1.5)
    follower = cluster.followers(leader)[0]
    process = leader.service.process
    assert process is not None
    terminated = time.monotonic()
    process.terminate()
    new = cluster.wait_for_leader(via=follower, other_than=leader, timeout_s=10)
    timings.append(("SIGTERM", time.monotonic() - terminated, 1.0))
    code = process.wait(timeout=10)
    assert code == 0, f"exit code {code}\n{leader.service.log_tail()}"
    leader.service.process = None
    wait_delivered(cluster, smtp_sink, pending, timeout_s=5)
    ids |= pending

    # SIGKILL, the dead pid reaped at once: a follower of the same host sees it gone and takes
    # the lease without waiting for it to run out.
    leader = new
    pending = due_soon(cluster, smtp_sink, 20, in_s=1.5)
    follower = cluster.followers(leader)[0]
    killed = time.monotonic()
    leader.service.kill()
    new = cluster.wait_for_leader(via=follower, other_than=leader, timeout_s=10)
    timings.append(("SIGKILL, pid gone", time.monotonic() - killed, 1.0))
    wait_delivered(cluster, smtp_sink, pending, timeout_s=5)
    ids |= pending

    time.sleep(LATE_COPY_S)
    assert_once(cluster, smtp_sink, ids)
    print(
        "\n"
        + "\n".join(
            f"{how}: new leader in {took:.2f} s (bound {bound:g} s)" for how, took, bound in timings
        )
    )
    slow = [
        (how, round(took, 2)) for how, took, bound in timings if took > bound + LOOK_SLACK_S / 2
    ]
    if slow:
        cluster.fail(f"hand-overs slower than their bound: {slow}")


# --- 3. the leader paused for longer than its lease -----------------------------------------


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_a_leader_paused_past_its_lease_wakes_as_a_follower_and_delivers_nothing(
    make_cluster: ClusterFactory, smtp_sink: SmtpSink
) -> None:
    cluster = make_cluster(
        extra={**smtp_environment(smtp_sink.host, smtp_sink.port), **SHORT_LEASE}
    )
    leader = cluster.wait_for_leader()
    followers = cluster.followers(leader)
    # Due while the leader stands still (the first before its lease has run out), and due as
    # it wakes up: its scheduler then finds work due at once, which only the new leader may do.
    pause_s = 2 * LEASE_S + 1
    during = subscribe(cluster, subscriptions(50, delay_s=1.5, spread_s=LEASE_S))
    at_wake = subscribe(cluster, subscriptions(50, delay_s=1.0 + pause_s, spread_s=0.5))
    assert smtp_sink.received() == [], "delivered before the pause: posting was too slow"

    paused = time.monotonic()
    cluster.pause(leader.service)
    try:
        new = cluster.wait_for_leader(via=followers[0], other_than=leader, timeout_s=LEASE_S + 10)
        take_over_s = time.monotonic() - paused
        wait_delivered(cluster, smtp_sink, during, timeout_s=pause_s)
        delivered_in_pause = len(smtp_sink.received())
        time.sleep(max(paused + pause_s - time.monotonic(), 0))
    finally:
        cluster.resume(leader.service)
    woken = time.monotonic()

    def follows() -> bool:
        return cluster.role(leader.service) == "follower"

    try:
        wait_until(follows, timeout_s=LEASE_S + 3, interval_s=0.02)
    except pytest.fail.Exception:
        cluster.fail("the woken process does not report the role follower")
    follows_s = time.monotonic() - woken
    wait_delivered(cluster, smtp_sink, at_wake, timeout_s=10)
    time.sleep(LATE_COPY_S)
    print(
        f"\npaused {pause_s:g} s (lease {LEASE_S:g} s): new leader after {take_over_s:.2f} s, "
        f"{delivered_in_pause} delivered during the pause; follower {follows_s:.2f} s after "
        "waking"
    )
    assert_once(cluster, smtp_sink, during | at_wake)
    assert cluster.role(leader.service) == "follower"
    still = cluster.leader(followers[0])
    assert still is not None
    assert (still.id, still.term) == (new.id, new.term), (still, new)


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_a_leader_paused_mid_delivery_changes_nothing_when_its_attempts_fail_late(
    make_cluster: ClusterFactory, smtp_sink: SmtpSink
) -> None:
    """Paused with messages on their way, it wakes to SMTP timeouts that ran out meanwhile;
    the new leader has sent those reminders again. The late failures schedule no retry and
    leave every reminder sent."""
    smtp_sink.delay_s = 0.5
    extra = {
        **smtp_environment(smtp_sink.host, smtp_sink.port),
        **SHORT_LEASE,
        "SCHEDULER_MAIL__SMTP__TIMEOUT_S": "2",
    }
    cluster = make_cluster(extra=extra)
    leader = cluster.wait_for_leader()
    followers = cluster.followers(leader)
    ids = subscribe(cluster, subscriptions(200, delay_s=2.0, spread_s=2.0))
    wait_until(lambda: smtp_sink.sending_started() >= 20, timeout_s=20, interval_s=0.005)
    cluster.pause(leader.service)
    paused = time.monotonic()
    try:
        cluster.wait_for_leader(via=followers[0], other_than=leader, timeout_s=LEASE_S + 10)
        time.sleep(max(paused + 2 * LEASE_S + 1 - time.monotonic(), 0))
    finally:
        cluster.resume(leader.service)
    wait_delivered(cluster, smtp_sink, ids, timeout_s=30)
    wait_until(lambda: cluster.role(leader.service) == "follower", timeout_s=LEASE_S + 3)
    time.sleep(LATE_COPY_S)

    received = deliveries(smtp_sink.received(), ids)
    with followers[0].client() as client:
        headers = Service.admin_headers()
        sent = client.get("/reminders", params={"status": "sent", "limit": 500}, headers=headers)
        jobs = client.get("/jobs", params={"limit": 500}, headers=headers)
        running = client.get("/runs", params={"outcome": "running"}, headers=headers)
    left = {job["id"] for job in jobs.json()["items"]} & {f"reminder:{rid}" for rid in ids}
    print(
        f"\npaused mid-delivery: {received.duplicates} duplicate(s) (same Message-ID), "
        f"{len(left)} job(s) left for sent reminders"
    )
    if received.missing or received.unexpected or received.under_two_ids:
        cluster.fail(f"not delivered once under one Message-ID each: {received}")
    if {item["id"] for item in sent.json()["items"]} != ids:
        cluster.fail(f"not every reminder is recorded sent: {sent.json()}")
    if left or running.json()["items"]:
        cluster.fail(f"jobs left for reminders already sent: {sorted(left)}; {running.json()}")


# --- 4. PostgreSQL stops under the cluster ---------------------------------------------------

OUTAGE_S = 15.0


def test_while_postgresql_is_down_nobody_leads_and_what_fell_due_goes_out_once_it_is_back(
    tmp_path: Path, smtp_sink: SmtpSink
) -> None:
    from tests.private_postgres import private_postgres

    extra = {**smtp_environment(smtp_sink.host, smtp_sink.port), **SHORT_LEASE}
    with private_postgres() as postgres:
        cluster = Cluster(tmp_path, postgres.url, 3, extra)
        try:
            cluster.start()
            cluster.wait_for_leader()
            ids = subscribe(cluster, subscriptions(100, delay_s=4.0, spread_s=2.0))
            postgres.stop("fast")
            stopped = time.monotonic()
            # The leader steps down once it could not renew for 2/3 of the lease.
            settled = stopped + LEASE_S
            seen: list[tuple[float, list[str | None]]] = []
            while (now := time.monotonic()) < stopped + OUTAGE_S:
                roles = [cluster.role(service) for service in cluster.running]
                if now > settled:
                    seen.append((now - stopped, roles))
                time.sleep(0.1)
            out_while_down = len(smtp_sink.received())
            postgres.start()
            back = time.monotonic()
            leader = cluster.wait_for_leader(timeout_s=30)
            leads_s = time.monotonic() - back
            wait_delivered(cluster, smtp_sink, ids, timeout_s=30)
            time.sleep(LATE_COPY_S)

            leading = [(at, roles) for at, roles in seen if "leader" in roles]
            if leading:
                cluster.fail(f"a process led while PostgreSQL was down: {leading[:5]}")
            if not seen or len(cluster.running) != 3:
                cluster.fail("a process exited while PostgreSQL was down")
            assert out_while_down == 0, "delivered while PostgreSQL was down"
            now_roles = sorted(str(cluster.role(service)) for service in cluster.running)
            assert now_roles == ["follower", "follower", "leader"], now_roles
            assert cluster.role(leader.service) == "leader"
            check_one_leader_and_roles(cluster)
            assert_once(cluster, smtp_sink, ids)
            print(
                f"\nPostgreSQL down {OUTAGE_S:g} s: {len(seen)} looks at every process after "
                f"{LEASE_S:g} s, none leading; a leader {leads_s:.2f} s after it was back, "
                f"{len(ids)} reminders delivered once"
            )
        finally:
            cluster.close()


# --- 5. a recurring job every 2 seconds, its leader killed ----------------------------------

TICK_S = 2
KILL_BEFORE_TICK_S = 0.3


def runs_of(cluster: Cluster, job_id: str) -> list[dict[str, Any]]:
    with cluster.running[0].client() as client:
        response = client.get(
            f"/jobs/{job_id}/runs", params={"limit": 500}, headers=Service.admin_headers()
        )
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


def moment(text: str) -> datetime:
    return datetime.fromisoformat(text)


def test_a_recurring_job_runs_once_per_tick_across_a_failover(
    make_cluster: ClusterFactory,
) -> None:
    config = (
        "timezone: UTC\njob_modules: [cluster_jobs]\njobs:\n"
        "  - {id: tick, job: cluster_tick, cron: '*/2 * * * * *'}\n"
    )
    cluster = make_cluster(extra=SHORT_LEASE, config=config, files={"cluster_jobs.py": JOB_MODULE})
    leader = cluster.wait_for_leader()

    def done(count: int) -> Callable[[], bool]:
        return lambda: sum(r["outcome"] == "success" for r in runs_of(cluster, "tick")) >= count

    wait_until(done(2), timeout_s=10)
    # Just before a tick: it falls due while nobody leads.
    time.sleep((TICK_S - time.time() % TICK_S - KILL_BEFORE_TICK_S) % TICK_S)
    killed_at = datetime.now(UTC)
    cluster.kill_lingering(leader.service)
    new = cluster.wait_for_leader(other_than=leader, timeout_s=LEASE_S + 10)
    taken_at = datetime.now(UTC)
    cluster.reap(leader.service)
    before = sum(r["outcome"] == "success" for r in runs_of(cluster, "tick"))
    wait_until(done(before + 1), timeout_s=10)

    runs = sorted(runs_of(cluster, "tick"), key=lambda run: str(run["scheduled_for"]))
    ticks = [moment(run["scheduled_for"]) for run in runs]
    gaps = {(later - earlier).total_seconds() for earlier, later in itertools.pairwise(ticks)}
    in_failover = [run for run in runs if killed_at < moment(run["scheduled_for"]) < taken_at]
    print(
        f"\n{len(runs)} ticks; leader killed at {killed_at:%H:%M:%S.%f}, new leader (term "
        f"{new.term}) seen at {taken_at:%H:%M:%S.%f}; the ticks due in between: "
        + ", ".join(
            f"{run['scheduled_for']} {run['outcome']}, late by {late_by(run)} s"
            for run in in_failover
        )
    )
    if len(set(ticks)) != len(ticks):
        cluster.fail(f"a tick ran twice: {runs}")
    if gaps != {float(TICK_S)}:
        cluster.fail(f"ticks not {TICK_S} s apart (one skipped silently?): {sorted(gaps)} {runs}")
    if not in_failover:
        cluster.fail("no tick fell due between the kill and the new leader: nothing to prove")
    for run in in_failover:
        late = late_by(run)
        if run["outcome"] != "missed" and (late is None or late <= 1.0):
            cluster.fail(f"a tick due during the failover ran neither late nor missed: {run}")


def late_by(run: dict[str, Any]) -> float | None:
    """Seconds from a run's tick to its start; None for a run that never started (missed)."""
    if run["started_at"] is None:
        return None
    return round((moment(run["started_at"]) - moment(run["scheduled_for"])).total_seconds(), 2)


# --- 6. a task created through a follower fires on time --------------------------------------


@pytest.mark.parametrize(
    ("database_url", "notifications"),
    [("postgresql", True), ("postgresql", False), ("sqlite", False)],
    indirect=["database_url"],
    ids=["postgresql-notify", "postgresql-poll-only", "sqlite"],
)
def test_a_task_created_through_a_follower_fires_on_time(
    make_cluster: ClusterFactory, database_url: str, notifications: bool, tmp_path: Path
) -> None:
    extra = (
        {}
        if notifications or database_url.startswith("sqlite")
        else {"SCHEDULER_SCHEDULER__POLL_ONLY": "true"}
    )
    cluster = make_cluster(
        size=2,
        extra=extra,
        config="timezone: UTC\njob_modules: [cluster_jobs]\n",
        files={"cluster_jobs.py": JOB_MODULE},
    )
    leader = cluster.wait_for_leader()
    [follower] = cluster.followers(leader)
    notes = tmp_path / "notes.jsonl"
    lags = []
    with follower.client() as client:
        for n in range(3):
            label = f"task{n}"
            response = client.post(
                "/tasks",
                json={
                    "job": "cluster_mark",
                    "args": {"path": str(notes), "label": label},
                    "delay_seconds": 1,
                },
                headers=Service.admin_headers(),
            )
            assert response.status_code == 201, response.text
            run_at = moment(response.json()["run_at"]).timestamp()
            note = wait_until(partial(noted, notes, label), timeout_s=10)
            if leader.service.process is None or note["pid"] != leader.service.process.pid:
                cluster.fail(f"{label} ran in another process than the leader: {note}")
            lags.append(round(note["t"] - run_at, 3))
    print(f"\ntasks created through the follower ran late by {lags} s")
    assert all(-0.05 <= lag <= 1.5 for lag in lags), lags


def noted(notes: Path, label: str) -> dict[str, Any] | None:
    """What cluster_mark noted for label, once it ran."""
    lines = notes.read_text().splitlines() if notes.exists() else []
    found: list[dict[str, Any]] = [n for n in map(json.loads, lines) if n["label"] == label]
    return found[0] if found else None


# --- `serve --workers 3` on SQLite: one port, three processes, one leader ----------------------


def _view(service: Service) -> dict[str, Any] | None:
    with service.client() as client:
        response = client.get("/admin/cluster", headers=Service.admin_headers())
    if response.status_code != 200:
        return None
    body: dict[str, Any] = response.json()
    return body


def _leader_pid(service: Service, other_than: int | None = None) -> int | None:
    """The leader's pid once three processes are listed and one of them leads (another than
    other_than, when given)."""
    view = _view(service)
    if view is None or view["leader"] is None:
        return None
    by_id = {p["id"]: p for p in view["processes"]}
    leader = by_id.get(view["leader"]["id"])
    if leader is None or leader["pid"] == other_than:
        return None
    return int(leader["pid"])


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_serve_workers_deliver_a_burst_once_and_replace_a_killed_leader(
    tmp_path: Path, database_url: str, smtp_sink: SmtpSink
) -> None:
    """`serve --workers 3` on SQLite: the burst and kill tests through one port."""
    from tests.acceptance.service import service_environment

    extra = {**smtp_environment(smtp_sink.host, smtp_sink.port), **SHORT_LEASE}
    service = Service(tmp_path, service_environment(tmp_path, database_url, extra))
    service.options = ["--workers", "3"]
    try:
        service.start()
        wait_until(
            lambda: (v := _view(service)) is not None and len(v["processes"]) == 3,
            timeout_s=20,
        )
        first = wait_until(lambda: _leader_pid(service), timeout_s=10)

        # Every reminder once, through the one port of three processes.
        ids = subscribe_to([service.base_url], subscriptions(REMINDERS // 2, 2.0, 1.0))
        wait_until(lambda: ids <= set(reminder_ids(smtp_sink.received())), timeout_s=60)
        received = deliveries(smtp_sink.received(), ids)
        assert not received.missing
        assert not received.unexpected
        assert not received.duplicated

        # The leader killed mid-burst: another worker leads, nothing is lost.
        burst = subscribe_to([service.base_url], subscriptions(BURST, 2.0, 1.0))
        wait_until(
            lambda: len(set(reminder_ids(smtp_sink.received())) & burst) >= BURST // 5,
            timeout_s=30,
            interval_s=0.005,
        )
        killed = time.monotonic()
        os.kill(first, signal.SIGKILL)
        second = wait_until(lambda: _leader_pid(service, other_than=first), timeout_s=LEASE_S + 10)
        take_over_s = time.monotonic() - killed
        wait_until(lambda: burst <= set(reminder_ids(smtp_sink.received())), timeout_s=60)
        time.sleep(LATE_COPY_S)
        received = deliveries(smtp_sink.received(), burst | ids)
        print(
            f"\nserve --workers 3: leader pid {first} killed, pid {second} leads after "
            f"{take_over_s:.2f} s; {received.duplicates} duplicate(s) under the same Message-ID"
        )
        assert take_over_s <= LEASE_S + 1 + LOOK_SLACK_S, service.log_text()
        assert not received.missing
        assert not received.unexpected
        assert not received.under_two_ids
    finally:
        service.close()


def subscribe_to(urls: list[str], bodies: list[dict[str, Any]]) -> set[str]:
    return {body["id"] for body in post_round_robin(urls, "/subscribe", bodies)}
