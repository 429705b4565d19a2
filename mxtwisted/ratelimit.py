"""Token-bucket rate limiting (the ``rc_*`` configuration sections).

Each key (an IP address, a user ID) has a bucket holding up to ``burst_count``
actions, refilled at ``per_second``. Buckets live in memory; a full bucket is
forgotten, so the map only holds keys that acted recently.
"""

from __future__ import annotations

import math
from typing import Hashable

from twisted.internet.interfaces import IReactorTime

from mxtwisted.config import RateLimit
from mxtwisted.http.errors import limit_exceeded


class Ratelimiter:
    def __init__(self, clock: IReactorTime, limit: RateLimit) -> None:
        self._clock = clock
        self.per_second = limit.per_second
        self.burst_count = limit.burst_count
        # key -> (tokens used, time of last update)
        self._buckets: dict[Hashable, tuple[float, float]] = {}

    def _level(self, key: Hashable, now: float) -> float:
        used, at = self._buckets.get(key, (0.0, now))
        return max(0.0, used - (now - at) * self.per_second)

    def can_do(self, key: Hashable, cost: float = 1.0, update: bool = True) -> tuple[bool, float]:
        """Whether ``key`` may act now, and how many seconds until it may if not."""
        if self.per_second <= 0 and self.burst_count <= 0:
            return True, 0.0
        now = self._clock.seconds()
        level = self._level(key, now)
        if level + cost > self.burst_count:
            if self.per_second <= 0:
                return False, math.inf
            return False, (level + cost - self.burst_count) / self.per_second
        if update:
            self._buckets[key] = (level + cost, now)
            if len(self._buckets) > 10_000:
                self._prune(now)
        return True, 0.0

    def ratelimit(self, key: Hashable, cost: float = 1.0, update: bool = True) -> None:
        """Raise ``429 M_LIMIT_EXCEEDED`` (with retry_after_ms) if ``key`` is over its limit."""
        allowed, wait = self.can_do(key, cost, update)
        if not allowed:
            raise limit_exceeded(int(min(wait, 86400) * 1000) + 1)

    def record(self, key: Hashable, cost: float = 1.0) -> None:
        """Count an action without checking (e.g. a failed login attempt)."""
        now = self._clock.seconds()
        self._buckets[key] = (self._level(key, now) + cost, now)

    def _prune(self, now: float) -> None:
        for key in [k for k in self._buckets if self._level(k, now) == 0]:
            del self._buckets[key]
