"""The failover scenario: three scheduler_app processes on one database, reminders falling due
all the time, and the leader taken away again and again (the process it was is started again
each time, so that three stay up).

Three kinds of round, `--kills` of each (10 by default):

- `sigkill_pid_gone`: SIGKILL, the process reaped at once. A follower on the same host sees
  that the holder's pid is gone and takes the lease without waiting for it to run out.
- `sigkill_pid_lingering`: SIGKILL, the dead process left unreaped (a zombie) until a new
  leader shows: its pid still exists, so the followers cannot tell that it died and wait for
  its lease to run out, as followers on other hosts would.
- `sigterm`: a clean stop; the leader lets its jobs finish and gives the lease up at once.

Each round measures, from the signal: until GET /admin/cluster on a follower shows another
process leading under a later term (`take_over`), and until the first arrival at the sink of a
reminder due after the signal (`first_delivery`: a dead leader cannot have sent it); every
reminder of the round arriving (delivered, lost, duplicated; duplicates of a message resent
by the new leader carry the same Message-ID, which the figures check).
"""

from __future__ import annotations

import signal
import time
from collections import defaultdict
from dataclasses import asdict, dataclass
from typing import Any

from bench.cluster import Leader, SchedulerAppCluster
from bench.common import PYTHON, Child, database, percentile, quick, read_jsonl
from bench.measure import SinkLog, accepted_reminders
from bench.scenarios import Run, drain, log, sink, sleep_until
from bench.targets import SchedulerApp, TargetError

PROCESSES = 3
KINDS = ("sigkill_pid_gone", "sigkill_pid_lingering", "sigterm")
# scheduler.lease_s when --lease-s is not given: the service's default.
DEFAULT_LEASE_S = 10.0
# Each round's reminders: this many a second, due from before the signal until well after a
# new leader has taken over: a few seconds, and a lease more where the followers wait for it
# to run out.
RATE_PER_S = 20.0
DUE_BEFORE_SIGNAL_S = 1.0
DUE_AFTER_TAKE_OVER_S = 3.0
POST_CONCURRENCY = 8
# Posting is done before the first reminder of the round is due (assumed slowest rate).
POST_RATE_FLOOR = 100.0
# Every reminder of a round arrives within this after its last is due, or is counted lost.
ROUND_DRAIN_S = 30.0


@dataclass
class Round:
    kind: str
    number: int
    term_before: int
    term_after: int
    take_over_s: float
    first_delivery_s: float | None
    # The latest arrival behind its due time, over the round's reminders.
    late_max_s: float | None
    accepted: int
    delivered: int
    duplicated: int
    exit_code: int | None


def failover_run(run: Run) -> tuple[dict[str, Any], dict[str, Any]]:
    kills = min(run.kills, 2) if quick() else run.kills
    lease_s = run.lease_s or DEFAULT_LEASE_S
    extra = {} if run.lease_s is None else {"SCHEDULER_SCHEDULER__LEASE_S": f"{lease_s:g}"}
    params = {
        "processes": PROCESSES,
        "kinds": list(KINDS),
        "rounds_per_kind": kills,
        "lease_s": lease_s,
        "work": f"{RATE_PER_S:g} reminders/s posted to the followers before each round, due "
        f"from {DUE_BEFORE_SIGNAL_S:g} s before the signal until {DUE_AFTER_TAKE_OVER_S:g} s "
        "after it (and a lease more for sigkill_pid_lingering)",
        "take_over": "signal -> GET /admin/cluster on a follower shows another leader",
        "first_delivery": "signal -> first arrival of a reminder due after the signal",
    }
    figures: dict[str, Any] = {}
    with (
        sink(run.directory) as (sink_port, sink_log, _),
        database(run.db, run.directory, run.target) as url,
    ):
        cluster = SchedulerAppCluster(run.directory, url, sink_port, PROCESSES, extra)
        try:
            figures["startup_s"] = cluster.start()
            leader, _ = cluster.wait_for_leader(cluster.running[0], None, lease_s + 30)
            rounds: list[Round] = []
            for kind in KINDS:
                for number in range(1, kills + 1):
                    result, leader = _round(run, cluster, sink_log, kind, number, leader, lease_s)
                    rounds.append(result)
                    log(
                        f"{kind} #{number}: term {result.term_before} -> {result.term_after} "
                        f"in {result.take_over_s:.2f} s, first delivery after "
                        f"{_seconds(result.first_delivery_s)} s, {result.delivered}/"
                        f"{result.accepted} delivered, {result.duplicated} duplicated"
                    )
            figures.update(_summary(rounds))
            figures.update(_message_ids(run))
            figures["rounds"] = [asdict(result) for result in rounds]
            cluster.record_rss()
            figures["peak_rss_mb"] = max(cluster.peak_rss, default=0) / 2**20 or None
            figures["exit_code"] = cluster.stop()
        finally:
            cluster.stop()
    return params, figures


def _round(
    run: Run,
    cluster: SchedulerAppCluster,
    sink_log: SinkLog,
    kind: str,
    number: int,
    leader: Leader,
    lease_s: float,
) -> tuple[Round, Leader]:
    """Post the round's reminders, take the leader away, wait for the next one and for every
    reminder; start the process again."""
    followers = [member for member in cluster.running if member is not leader.member]
    directory = run.directory / f"{kind}-{number}"
    directory.mkdir()
    waits_for_lease = kind == "sigkill_pid_lingering"
    window = DUE_BEFORE_SIGNAL_S + (lease_s if waits_for_lease else 0.0) + DUE_AFTER_TAKE_OVER_S
    count = int(RATE_PER_S * window)
    lead = 1.0 + count / POST_RATE_FLOOR
    due_start = time.time() + lead
    _post(followers, directory, count, due_start, window)
    accepted, _ = accepted_reminders(directory / "posts.jsonl")
    if time.time() > due_start:
        run.notes.append(f"{kind} #{number}: posting ended after the first reminder was due")

    sleep_until(due_start + DUE_BEFORE_SIGNAL_S)
    member = leader.member
    if member.child is None:
        raise TargetError("the leader is not running")
    exit_code = None
    signalled = time.time()
    if kind == "sigkill_pid_gone":
        member.kill()
    elif kind == "sigkill_pid_lingering":
        cluster.kill_lingering(member)
    else:
        member.record_rss()
        member.child.process.send_signal(signal.SIGTERM)
    new, seen_at = cluster.wait_for_leader(followers[0], leader, lease_s + 30)
    if kind == "sigkill_pid_lingering":
        cluster.reap(member)
    elif kind == "sigterm":
        exit_code = member.child.wait(30) if member.child is not None else None
        member.child = None

    drain(sink_log, accepted, max(accepted.values(), default=due_start) + ROUND_DRAIN_S, None, 0)
    arrived = {rid: sink_log.first[rid] for rid in accepted if rid in sink_log.first}
    after = [at for rid, at in arrived.items() if accepted[rid] > signalled]
    late = [at - accepted[rid] for rid, at in arrived.items()]
    result = Round(
        kind=kind,
        number=number,
        term_before=leader.term,
        term_after=new.term,
        take_over_s=seen_at - signalled,
        first_delivery_s=min(after) - signalled if after else None,
        late_max_s=max(late, default=None),
        accepted=len(accepted),
        delivered=len(arrived),
        duplicated=sum(sink_log.copies[rid] - 1 for rid in arrived),
        exit_code=exit_code,
    )
    member.start()
    return result, new


def _post(
    to: list[SchedulerApp], directory: Any, count: int, due_start: float, spread: float
) -> None:
    urls = [flag for member in to for flag in ("--url", member.url)]
    poster = Child(
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
            str(directory / "posts.jsonl"),
        ],
        directory / "poster.log",
    )
    if poster.wait(120) is None:
        poster.kill()
        raise TargetError(f"posting did not end within 120 s:\n{poster.tail()}")


def _summary(rounds: list[Round]) -> dict[str, Any]:
    """p50 and max of each kind's times; delivered, lost and duplicated over every round."""
    figures: dict[str, Any] = {}
    for kind in KINDS:
        mine = [r for r in rounds if r.kind == kind]
        if not mine:
            continue
        take_over = [r.take_over_s for r in mine]
        first = [r.first_delivery_s for r in mine if r.first_delivery_s is not None]
        late = [r.late_max_s for r in mine if r.late_max_s is not None]
        figures[f"{kind}_take_over_p50_s"] = percentile(take_over, 50)
        figures[f"{kind}_take_over_max_s"] = max(take_over)
        figures[f"{kind}_first_delivery_p50_s"] = percentile(first, 50)
        figures[f"{kind}_first_delivery_max_s"] = max(first, default=None)
        figures[f"{kind}_late_max_s"] = max(late, default=None)
    figures["accepted"] = sum(r.accepted for r in rounds)
    figures["delivered"] = sum(r.delivered for r in rounds)
    figures["lost"] = figures["accepted"] - figures["delivered"]
    figures["duplicated"] = sum(r.duplicated for r in rounds)
    figures["sigterm_exit_codes"] = sorted({r.exit_code for r in rounds if r.kind == "sigterm"})
    return figures


def _message_ids(run: Run) -> dict[str, Any]:
    """Reminders that arrived under more than one Message-ID (a resend must reuse its own)."""
    seen: dict[str, set[str]] = defaultdict(set)
    for record in read_jsonl(run.directory / "sink.jsonl"):
        if record.get("id"):
            seen[record["id"]].add(str(record.get("message_id")))
    return {"delivered_under_two_message_ids": sum(len(ids) > 1 for ids in seen.values())}


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"
