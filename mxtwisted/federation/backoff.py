"""Which other servers did not answer lately, shared by every outgoing federation request.

Much of the Matrix network is servers that are gone or down. Without a memory of that, every profile look-up,
key fetch, backfill or join attempt through such a server waits for its connect timeout again (20 s), and a
room with members on dead servers makes clients slow. After a request to a destination gets no answer at all
(DNS, connection, TLS, timeout), the destination is *down* for an interval: 30 s after the first failure,
doubling up to an hour. Requests to it then fail at once with :class:`NotRetryingDestination` (a
:class:`~mxtwisted.federation.client.RequestSendFailed`, which every caller already treats as "unreachable",
so they try the next server). Any answer from it, even an error status, and any request it makes to us,
clear it at once.

Transactions (``PUT /send``) are never refused here: the federation sender has its own retry schedule per
destination; their outcome still updates this one. In memory only: a restart tries everybody again.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

MIN_INTERVAL = 30.0
MAX_INTERVAL = 3600.0


@dataclass
class _Down:
    interval: float
    retry_at: float


class DestinationBackoff:
    def __init__(self, clock: Any, min_interval: float = MIN_INTERVAL, max_interval: float = MAX_INTERVAL) -> None:
        self._clock = clock
        self._min = min_interval
        self._max = max_interval
        self._down: dict[str, _Down] = {}

    def retry_at(self, destination: str) -> float:
        """When requests to ``destination`` may go out again (0: now)."""
        down = self._down.get(destination)
        if down is None or down.retry_at <= self._clock.seconds():
            return 0.0
        return down.retry_at

    def failed(self, destination: str) -> None:
        """A request got no answer: the destination is down for the next, longer interval."""
        down = self._down.get(destination)
        interval = self._min if down is None else min(self._max, down.interval * 2)
        if down is not None and down.retry_at > self._clock.seconds():
            # Several requests were in flight when it went down: one failure, one step.
            return
        self._down[destination] = _Down(interval, self._clock.seconds() + interval)

    def succeeded(self, destination: str) -> None:
        """It answered (or it talked to us): it is up."""
        self._down.pop(destination, None)


__all__ = ["DestinationBackoff", "MAX_INTERVAL", "MIN_INTERVAL"]
