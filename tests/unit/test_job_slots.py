"""Job slots: at most max_running jobs hold one, a job whose work is done gives its slot to the
next, and at most max_running jobs end without a slot."""

from __future__ import annotations

from scheduler_app.engine.slots import JobSlots


def start(work: str) -> str:
    """Work is started as itself: the running job's handle is its name."""
    return work


def slots_with(max_running: int, *waiting: str) -> JobSlots[str, str]:
    slots: JobSlots[str, str] = JobSlots(max_running)
    for work in waiting:
        slots.wait(work)
    return slots


def test_only_max_running_jobs_start_the_rest_wait_in_order() -> None:
    slots = slots_with(2, "a", "b", "c", "d")
    assert slots.start_waiting(start) == 2
    assert slots.running() == {"a", "b"}
    assert (slots.holding, slots.waiting) == (2, 2)
    assert slots.start_waiting(start) == 0


def test_a_job_that_ends_frees_its_slot_for_the_oldest_waiting() -> None:
    slots = slots_with(1, "a", "b", "c")
    slots.start_waiting(start)
    slots.ended("a")
    assert slots.start_waiting(start) == 1
    assert slots.running() == {"b"}


def test_a_job_that_gives_up_its_slot_keeps_running_without_one() -> None:
    slots = slots_with(1, "a", "b", "c")
    slots.start_waiting(start)
    assert slots.give_up("a")
    assert slots.holding == 0
    slots.start_waiting(start)
    # a runs on without a slot, b holds the slot; c waits.
    assert slots.running() == {"a", "b"}
    assert (slots.holding, slots.waiting) == (1, 1)


def test_at_most_max_running_jobs_end_without_a_slot() -> None:
    slots = slots_with(1, "a", "b", "c")
    slots.start_waiting(start)
    assert slots.give_up("a")
    slots.start_waiting(start)
    assert not slots.give_up("b")  # a is ending without a slot already
    assert slots.start_waiting(start) == 0
    slots.ended("a")
    assert slots.give_up("b")
    assert slots.start_waiting(start) == 1
    assert slots.running() == {"b", "c"}


def test_only_a_running_job_can_give_up_a_slot_and_only_once() -> None:
    slots = slots_with(2, "a")
    assert not slots.give_up("a")  # still waiting
    slots.start_waiting(start)
    assert not slots.give_up("elsewhere")
    assert slots.give_up("a")
    assert not slots.give_up("a")
    slots.ended("a")
    assert not slots.give_up("a")
    assert (slots.holding, slots.running()) == (0, set())


def test_a_job_that_ends_after_giving_up_its_slot_frees_nothing_more() -> None:
    slots = slots_with(1, "a", "b", "c")
    slots.start_waiting(start)
    slots.give_up("a")
    slots.start_waiting(start)
    slots.ended("a")
    assert slots.start_waiting(start) == 0  # b still holds the only slot
    assert slots.holding == 1


def test_stopping_starts_every_waiting_job() -> None:
    slots = slots_with(1, "a", "b", "c")
    assert slots.start_waiting(start, stopping=True) == 3
    assert slots.waiting == 0


def test_the_few_waiting_callback_runs_once_when_the_waiting_are_few_enough() -> None:
    calls: list[str] = []
    slots = slots_with(1, "a", "b", "c", "d")
    slots.call_when_waiting_at_most(1, lambda: calls.append("first"))
    slots.call_when_waiting_at_most(2, lambda: calls.append("second"))  # replaces the first
    slots.start_waiting(start)
    assert calls == []  # three wait
    slots.ended("a")
    slots.start_waiting(start)
    assert calls == ["second"]
    slots.ended("b")
    slots.start_waiting(start)
    assert calls == ["second"]
