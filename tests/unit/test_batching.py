"""The batch writer's decisions: how long a batch gathers, what is held while the database is
away and in what order it is written, how a batch's steps are grouped."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from scheduler_app.db.batching import (
    GatherRules,
    group_steps,
    next_retry_delay,
    one_by_one,
    split_held,
)

RULES = GatherRules(max_batch=10, busy_within_s=0.005, patient_s=0.025, patient_after=4)


@dataclass(frozen=True)
class Step:
    name: str
    until_written: bool = False


@dataclass(frozen=True)
class Group:
    name: str
    phase: int = 0


def test_a_batch_after_a_quiet_spell_does_not_gather() -> None:
    assert RULES.start(now=1.0, last_commit_ended=1.0 - 0.005, last_batch_size=100) is None


def test_a_busy_batch_after_a_small_one_lingers_once() -> None:
    gathering = RULES.start(now=1.0, last_commit_ended=0.999, last_batch_size=3)
    assert gathering is not None
    assert not gathering.keeps_gathering([True, True], size=3, now=1.002)


def test_a_busy_batch_of_patient_steps_gathers_until_its_patience_ends() -> None:
    gathering = RULES.start(now=1.0, last_commit_ended=0.999, last_batch_size=4)
    assert gathering is not None
    assert gathering.keeps_gathering([True, True], size=2, now=1.002)
    assert gathering.keeps_gathering([], size=2, now=1.004)
    assert not gathering.keeps_gathering([True], size=3, now=1.025)


def test_a_full_batch_stops_gathering() -> None:
    gathering = RULES.start(now=1.0, last_commit_ended=0.999, last_batch_size=4)
    assert gathering is not None
    assert not gathering.keeps_gathering([True] * 10, size=10, now=1.002)


def test_one_impatient_step_ends_the_patience_for_good() -> None:
    gathering = RULES.start(now=1.0, last_commit_ended=0.999, last_batch_size=4)
    assert gathering is not None
    assert not gathering.keeps_gathering([True, False], size=2, now=1.002)
    assert not gathering.keeps_gathering([True], size=3, now=1.004)


def test_steps_to_hold_are_split_from_the_others_in_order() -> None:
    steps = [Step("a", True), Step("b"), Step("c", True), Step("d")]
    assert split_held(steps) == ([steps[0], steps[2]], [steps[1], steps[3]])


def test_one_by_one_holds_later_steps_to_write_behind_a_held_one_untried() -> None:
    steps = [Step("a"), Step("b", True), Step("c"), Step("d", True)]
    tried: list[str] = []

    def commit(step: Step) -> list[Step]:
        tried.append(step.name)
        return [step] if step.name == "b" else []

    assert one_by_one(steps, commit) == [steps[1], steps[3]]
    # c is not to be held: it is tried, and fails or succeeds on its own.
    assert tried == ["a", "b", "c"]


def test_one_by_one_writes_everything_when_nothing_is_held() -> None:
    steps = [Step("a", True), Step("b", True)]
    assert one_by_one(steps, lambda step: []) == []


@pytest.mark.parametrize(("delay", "after"), [(0.5, 1.0), (2.0, 4.0), (4.0, 5.0), (5.0, 5.0)])
def test_the_retry_delay_doubles_up_to_its_cap(delay: float, after: float) -> None:
    assert next_retry_delay(delay, 5.0) == after


def test_steps_of_their_own_come_first_then_groups_by_phase() -> None:
    late, early = Group("finish", phase=1), Group("start", phase=0)
    singles, groups = group_steps([late, None, early, late, None, early])
    assert singles == [1, 4]
    assert groups == [(early, [2, 5]), (late, [0, 3])]
