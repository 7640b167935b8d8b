"""Background services start in order, stop in reverse, and a failure is named and contained."""

from __future__ import annotations

import logging

import pytest

from scheduler_app.services import BackgroundService, Services

pytestmark = pytest.mark.anyio


class Fake:
    """A service that records its starts and stops in a shared journal, failing when told."""

    def __init__(
        self,
        name: str,
        journal: list[str],
        *,
        leader_only: bool = False,
        fail_start: bool = False,
        fail_stop: bool = False,
    ) -> None:
        self.name = name
        self.leader_only = leader_only
        self._journal = journal
        self._fail_start = fail_start
        self._fail_stop = fail_stop

    async def start(self) -> None:
        if self._fail_start:
            raise RuntimeError(f"{self.name} cannot start")
        self._journal.append(f"start {self.name}")

    async def stop(self) -> None:
        if self._fail_stop:
            raise RuntimeError(f"{self.name} cannot stop")
        self._journal.append(f"stop {self.name}")


def fakes(journal: list[str], *specs: str, **failing: bool) -> list[BackgroundService]:
    """Fakes named by specs; a name ending in '*' is leader-only."""
    return [
        Fake(
            spec.rstrip("*"),
            journal,
            leader_only=spec.endswith("*"),
            fail_start=failing.get(f"start_{spec.rstrip('*')}", False),
            fail_stop=failing.get(f"stop_{spec.rstrip('*')}", False),
        )
        for spec in specs
    ]


async def test_start_in_order_and_stop_in_reverse() -> None:
    journal: list[str] = []
    services = Services(fakes(journal, "a", "b", "c"))
    await services.start()
    assert await services.stop() == []
    assert journal == ["start a", "start b", "start c", "stop c", "stop b", "stop a"]


async def test_leader_only_services_start_only_when_asked() -> None:
    journal: list[str] = []
    services = Services(fakes(journal, "store", "dispatch*", "writer", "sweep*"))
    await services.start()
    assert journal == ["start store", "start writer"]
    assert not services.leading
    await services.start_leader()
    assert services.leading
    await services.stop()
    assert journal == [
        "start store",
        "start writer",
        "start dispatch",
        "start sweep",
        "stop sweep",
        "stop dispatch",
        "stop writer",
        "stop store",
    ]


async def test_leadership_can_be_given_up_and_taken_again() -> None:
    journal: list[str] = []
    services = Services(fakes(journal, "store", "dispatch*", "sweep*"))
    await services.start()
    await services.start_leader()
    await services.stop_leader()
    assert not services.leading
    await services.start_leader()
    await services.stop()
    assert journal == [
        "start store",
        "start dispatch",
        "start sweep",
        "stop sweep",
        "stop dispatch",
        "start dispatch",
        "start sweep",
        "stop sweep",
        "stop dispatch",
        "stop store",
    ]


async def test_a_failed_start_stops_those_started_and_names_the_culprit(
    caplog: pytest.LogCaptureFixture,
) -> None:
    journal: list[str] = []
    services = Services(fakes(journal, "a", "b", "c", start_b=True))
    with pytest.raises(RuntimeError, match="b cannot start"):
        await services.start()
    assert journal == ["start a", "stop a"]
    assert "background service 'b' failed to start" in caplog.text
    assert await services.stop() == []  # nothing left to stop
    assert journal == ["start a", "stop a"]


async def test_a_failed_leader_start_leaves_the_other_services_running() -> None:
    journal: list[str] = []
    services = Services(fakes(journal, "store", "dispatch*", "sweep*", start_sweep=True))
    await services.start()
    with pytest.raises(RuntimeError, match="sweep cannot start"):
        await services.start_leader()
    assert not services.leading
    assert journal == ["start store", "start dispatch", "stop dispatch"]
    await services.stop()
    assert journal[-1] == "stop store"


async def test_a_failed_stop_is_logged_and_the_others_still_stop(
    caplog: pytest.LogCaptureFixture,
) -> None:
    journal: list[str] = []
    services = Services(fakes(journal, "a", "b*", "c", "d*", stop_c=True, stop_d=True))
    await services.start()
    await services.start_leader()
    with caplog.at_level(logging.ERROR, logger="scheduler_app.services"):
        assert await services.stop() == ["d", "c"]
    assert journal == ["start a", "start c", "start b", "start d", "stop b", "stop a"]
    assert "background service 'c' failed to stop" in caplog.text
    assert "background service 'd' failed to stop" in caplog.text
    assert await services.stop() == []  # each is stopped once, failed or not


async def test_starting_twice_starts_each_once() -> None:
    journal: list[str] = []
    services = Services(fakes(journal, "a", "b*"))
    await services.start()
    await services.start()
    await services.start_leader()
    await services.start_leader()
    assert journal == ["start a", "start b"]
