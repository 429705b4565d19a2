"""Wakes long-polling requests (``/sync``) when something relevant to a user happens.

Writers call :meth:`Notifier.notify_users` after a change commits, with the
stream it advanced and its new position; waiters call
:meth:`Notifier.wait_for_user` with a timeout. Only the waiters of the named
users wake, so traffic in rooms a user is not in costs that user nothing.
Positions per stream (events, typing, receipts, account data, to-device...)
are what sync tokens are made of; the same interface can later be fed from a
replication stream when there are several processes.
"""

from __future__ import annotations

from typing import Iterable

from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime


class Notifier:
    def __init__(self, clock: IReactorTime) -> None:
        self._clock = clock
        self._waiters: dict[str, list[defer.Deferred]] = {}
        #: stream name → latest position notified.
        self.positions: dict[str, int] = {}

    def notify_users(self, stream: str, position: int, user_ids: Iterable[str]) -> None:
        """``stream`` advanced to ``position``; wake every waiter of ``user_ids``."""
        if position > self.positions.get(stream, 0):
            self.positions[stream] = position
        if not self._waiters:
            return
        users = user_ids if isinstance(user_ids, (set, frozenset, dict)) else set(user_ids)
        # Cost is O(min(waiting users, notified users)): a message into a room of 10,000 members
        # with a handful of syncing clients touches only those clients.
        if len(self._waiters) < len(users):
            woken = [u for u in self._waiters if u in users]
        else:
            woken = [u for u in users if u in self._waiters]
        for user_id in woken:
            waiters = self._waiters.pop(user_id, None)
            for d in waiters or ():
                if not d.called:
                    d.callback((stream, position))

    def wait_for_user(self, user_id: str, timeout_ms: int) -> defer.Deferred:
        """A Deferred firing with (stream, position) on the next notification for ``user_id``,
        or with None after ``timeout_ms``."""

        def forget(d: defer.Deferred) -> None:
            waiters = self._waiters.get(user_id)
            if waiters and d in waiters:
                waiters.remove(d)
                if not waiters:
                    del self._waiters[user_id]

        # Cancelling (a /sync whose client went away) unregisters the waiter.
        d: defer.Deferred = defer.Deferred(canceller=forget)
        self._waiters.setdefault(user_id, []).append(d)

        def timed_out() -> None:
            if not d.called:
                forget(d)
                d.callback(None)

        call = self._clock.callLater(max(0, timeout_ms) / 1000.0, timed_out)

        def cancel_timer(result: object) -> object:
            if call.active():
                call.cancel()
            return result

        d.addBoth(cancel_timer)
        return d

    def waiting_users(self) -> int:
        return len(self._waiters)
