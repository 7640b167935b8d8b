from __future__ import annotations

import pytest

from scheduler_app.api.rate_limit import RateLimiter


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_client_gets_its_burst_then_waits_for_the_next_token() -> None:
    clock = Clock()
    limiter = RateLimiter(60, clock)
    assert [limiter.acquire("10.0.0.1") for _ in range(60)] == [None] * 60
    assert limiter.acquire("10.0.0.1") == pytest.approx(1.0)
    clock.now += 0.5
    assert limiter.acquire("10.0.0.1") == pytest.approx(0.5)
    clock.now += 0.5
    assert limiter.acquire("10.0.0.1") is None
    assert limiter.acquire("10.0.0.1") == pytest.approx(1.0)


def test_clients_are_counted_apart() -> None:
    limiter = RateLimiter(2, Clock())
    assert limiter.acquire("a") is None
    assert limiter.acquire("a") is None
    assert limiter.acquire("a") == pytest.approx(30.0)
    assert limiter.acquire("b") is None


def test_a_quiet_client_refills_no_further_than_its_burst() -> None:
    clock = Clock()
    limiter = RateLimiter(3, clock)
    for _ in range(3):
        limiter.acquire("a")
    clock.now += 3600
    assert [limiter.acquire("a") for _ in range(4)][:3] == [None] * 3
    assert limiter.acquire("a") is not None


def test_zero_allows_everything() -> None:
    limiter = RateLimiter(0, Clock())
    assert all(limiter.acquire("a") is None for _ in range(10_000))


def test_memory_is_bounded_by_forgetting_the_least_recently_seen() -> None:
    limiter = RateLimiter(1, Clock(), max_clients=3)
    for client in ("a", "b", "c"):
        assert limiter.acquire(client) is None
    assert limiter.acquire("a") is not None  # "a" is now the most recently seen
    assert limiter.acquire("d") is None  # "b" is forgotten to make room
    assert limiter.acquire("a") is not None  # "a" was kept, its bucket still empty
    assert limiter.acquire("b") is None  # "b" starts again


def test_a_refunded_request_does_not_count_and_never_overfills_the_bucket() -> None:
    limiter = RateLimiter(2, Clock())
    for _ in range(5):
        assert limiter.acquire("a") is None
        limiter.refund("a")
    limiter.refund("a")  # above a full bucket: ignored
    limiter.refund("unknown")  # never seen: nothing to give back
    assert limiter.acquire("a") is None
    assert limiter.acquire("a") is None
    assert limiter.acquire("a") == pytest.approx(30.0)
