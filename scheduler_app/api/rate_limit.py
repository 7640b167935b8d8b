"""How often one client may ask for something: a token bucket per client address.

Pure bookkeeping on a monotonic clock that is passed in; no I/O, no threads (it is called on the
event loop only). The buckets live in the process: with several processes each counts its own.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

# Clients remembered at most; a flood of new addresses cannot grow memory without bound.
MAX_CLIENTS = 100_000


@dataclass
class _Bucket:
    tokens: float
    updated: float


class RateLimiter:
    """Allow each client `per_minute` requests a minute, in bursts of up to `per_minute`.

    Args:
        per_minute: requests a minute per client; 0 allows everything.
        clock: seconds on a monotonic clock.
        max_clients: clients remembered at most; the least recently seen are forgotten first.
    """

    def __init__(
        self,
        per_minute: int,
        clock: Callable[[], float] = time.monotonic,
        max_clients: int = MAX_CLIENTS,
    ) -> None:
        self.per_minute = per_minute
        self._rate = per_minute / 60.0
        self._clock = clock
        self._max_clients = max_clients
        # Ordered from least to most recently seen (a bucket is moved to the end when used).
        self._buckets: dict[str, _Bucket] = {}

    def acquire(self, client: str) -> float | None:
        """Take one request for client: None if allowed, else seconds until one would be."""
        if self.per_minute == 0:
            return None
        now = self._clock()
        bucket = self._buckets.pop(client, None)
        if bucket is None:
            bucket = _Bucket(float(self.per_minute), now)
            self._forget_oldest()
        else:
            refilled = bucket.tokens + (now - bucket.updated) * self._rate
            bucket.tokens, bucket.updated = min(float(self.per_minute), refilled), now
        self._buckets[client] = bucket
        if bucket.tokens >= 1:
            bucket.tokens -= 1
            return None
        return (1 - bucket.tokens) / self._rate

    def refund(self, client: str) -> None:
        """Give back the request acquire took for client: for requests that count only when
        they fail (a login with the right token, say). Never above a full bucket."""
        bucket = self._buckets.get(client)
        if bucket is not None:
            bucket.tokens = min(float(self.per_minute), bucket.tokens + 1)

    def _forget_oldest(self) -> None:
        # A forgotten client starts again with a full bucket: only the least recently seen are
        # forgotten, and those have mostly refilled anyway.
        while len(self._buckets) >= self._max_clients:
            del self._buckets[next(iter(self._buckets))]
