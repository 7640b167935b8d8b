from __future__ import annotations

from datetime import UTC, datetime

from scheduler_app.tasks.recovery import orphaned_reminders

DUE = datetime(2026, 3, 1, tzinfo=UTC)


def test_only_reminders_without_a_stored_or_running_job_are_orphans() -> None:
    scheduled = [("a", DUE), ("b", DUE), ("c", DUE)]
    stored = {"reminder:a"}
    running = {"reminder:b"}
    assert orphaned_reminders(scheduled, stored, running) == [("c", DUE)]


def test_nothing_is_orphaned_when_every_job_is_stored() -> None:
    scheduled = [("a", DUE)]
    assert orphaned_reminders(scheduled, {"reminder:a", "cron:x"}, set()) == []
