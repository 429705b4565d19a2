"""The outgoing federation queue at the unit level: a Clock, a fake client and in-memory stores."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, Optional

from twisted.internet import defer, task
from twisted.trial import unittest

from mxtwisted.federation.client import FederationDeniedError, RequestSendFailed
from mxtwisted.federation.sender import MAX_PDUS, FederationSender
from mxtwisted.storage.federation_queue import DestinationRow

US = "us.test"
THEM = "them.test"
ROOM = "!room:us.test"


class FakeEvents:
    """The EventStore bits the sender uses, and the events a catch-up reads."""

    def __init__(self) -> None:
        self.members = {ROOM: {f"@alice:{US}": "$m1", f"@bob:{THEM}": "$m2"}}
        self.stream = SimpleNamespace(current=0)
        #: stream ordering → (room, sender, pdu)
        self.log: dict[int, tuple[str, str, dict]] = {}

    async def get_members(self, room_id: str, memberships: Any = None) -> dict[str, str]:
        return dict(self.members.get(room_id, {}))


class FakeQueueStore:
    def __init__(self, events: FakeEvents) -> None:
        self.events = events
        self.rows: dict[str, DestinationRow] = {}

    async def get_destinations(self) -> dict[str, DestinationRow]:
        return dict(self.rows)

    async def get_destination(self, destination: str) -> Optional[DestinationRow]:
        return self.rows.get(destination)

    async def add_destination(self, destination: str, position: int) -> None:
        self.rows.setdefault(destination, DestinationRow(destination, position, 0, 0))

    async def set_position(self, destination: str, position: int) -> None:
        row = self.rows.get(destination) or DestinationRow(destination, position, 0, 0)
        self.rows[destination] = DestinationRow(destination, position, row.retry_last_ts, row.retry_interval_ms)

    async def set_retry(self, destination: str, ts: int, interval: int) -> None:
        row = self.rows[destination]
        self.rows[destination] = DestinationRow(destination, row.last_sent_stream_ordering, ts, interval)

    async def get_catch_up_events(self, destination: str, local: str, after: int, upto: int, limit: int) -> Any:
        found = []
        for so in sorted(self.events.log):
            room_id, sender, pdu = self.events.log[so]
            shared = any(u.endswith(":" + destination) for u in self.events.members.get(room_id, {}))
            if after < so <= upto and sender.endswith(":" + local) and shared:
                found.append(SimpleNamespace(stream_ordering=so, json=pdu))
        page = found[:limit]
        return page, (upto if len(found) <= limit else page[-1].stream_ordering)


class FakeClient:
    """``put_json``: each call waits on a Deferred the test fires (or fails)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, dict, defer.Deferred]] = []

    def put_json(self, destination: str, path: str, body: Any) -> defer.Deferred:
        d: defer.Deferred = defer.Deferred()
        self.calls.append((destination, path, body, d))
        return d

    def answer(self, index: int = -1, ok: bool = True) -> None:
        d = self.calls[index][3]
        if ok:
            d.callback({"pdus": {}})
        else:
            d.errback(RequestSendFailed(THEM, ConnectionRefusedError()))


def fake_event(so: int, sender: str = f"@alice:{US}") -> Any:
    pdu = {"type": "m.room.message", "room_id": ROOM, "sender": sender, "content": {"body": str(so)}, "depth": so}
    return SimpleNamespace(
        room_id=ROOM, sender=sender, type="m.room.message", state_key=None, rejected_reason=None,
        get_pdu_json=lambda: dict(pdu), pdu=pdu,
    )


class SenderTests(unittest.TestCase):
    def setUp(self) -> None:
        self.clock = task.Clock()
        self.clock.advance(1000)
        self.events = FakeEvents()
        self.store = FakeQueueStore(self.events)
        self.client = FakeClient()
        self.sender = self.make_sender()

    def make_sender(self) -> FederationSender:
        sender = FederationSender(self.clock, US, self.client, self.store, self.events)
        sender.startService()
        self.addCleanup(lambda: sender.stopService() if sender.running else None)
        return sender

    def new_event(self, sender: Optional[FederationSender] = None, who: str = f"@alice:{US}") -> int:
        so = self.events.stream.current + 1
        self.events.stream.current = so
        ev = fake_event(so, who)
        self.events.log[so] = (ROOM, who, ev.pdu)
        (sender or self.sender).on_new_event(ev, so)
        return so

    def bodies(self) -> list[list[int]]:
        return [[p["depth"] for p in body["pdus"]] for _, _, body, _ in self.client.calls]

    def test_batches_one_transaction_in_flight(self) -> None:
        for _ in range(120):
            self.new_event()
        # The first event left alone; the rest wait for it.
        self.assertEqual(self.bodies(), [[1]])
        self.client.answer()
        self.assertEqual(len(self.client.calls[-1][2]["pdus"]), MAX_PDUS)
        self.client.answer()
        self.client.answer()
        self.client.answer()
        self.assertEqual(sum(self.bodies(), []), list(range(1, 121)))
        self.assertTrue(all(dest == THEM for dest, _, _, _ in self.client.calls))
        paths = [path for _, path, _, _ in self.client.calls]
        self.assertEqual(len(set(paths)), len(paths))
        self.assertTrue(all(p.startswith("/_matrix/federation/v1/send/") for p in paths))
        self.assertEqual(self.client.calls[0][2]["origin"], US)
        self.assertEqual(self.store.rows[THEM].last_sent_stream_ordering, 120)

    def test_not_to_ourselves_nor_remote_events(self) -> None:
        self.events.members[ROOM] = {f"@alice:{US}": "$m1"}
        self.new_event()
        self.events.members[ROOM][f"@bob:{THEM}"] = "$m2"
        self.new_event(who=f"@bob:{THEM}")
        self.assertEqual(self.client.calls, [])

    def test_backoff_then_catch_up(self) -> None:
        self.new_event()
        self.client.answer(ok=False)
        state = self.sender.queue_state(THEM)
        assert state is not None
        self.assertEqual(state.retry_interval, 5.0)
        self.new_event()
        self.new_event()
        self.assertEqual(len(self.client.calls), 1)  # nothing sent while backing off
        self.clock.advance(5)
        self.assertEqual(self.bodies()[-1], [1, 2, 3])
        self.client.answer(ok=False)
        self.assertEqual(state.retry_interval, 10.0)
        self.clock.advance(9)
        self.assertEqual(len(self.client.calls), 2)
        self.clock.advance(1)
        self.client.answer(ok=False)
        self.assertEqual(state.retry_interval, 20.0)
        for _ in range(20):
            self.clock.advance(state.retry_interval)
            self.client.answer(ok=False)
        self.assertEqual(state.retry_interval, 3600.0)
        self.assertEqual(self.store.rows[THEM].retry_interval_ms, 3600_000)
        # The destination is back: everything queued arrives, in order, and the backoff ends.
        self.clock.advance(3600)
        self.assertEqual(self.bodies()[-1], [1, 2, 3])
        self.client.answer()
        self.assertEqual(state.retry_interval, 0)
        self.assertEqual(self.store.rows[THEM].last_sent_stream_ordering, 3)
        self.assertEqual(self.store.rows[THEM].retry_interval_ms, 0)

    def test_restart_resends_what_was_not_delivered(self) -> None:
        self.new_event()
        self.client.answer()
        self.new_event()
        self.new_event()  # queued behind the one in flight
        self.assertEqual(self.bodies(), [[1], [2]])
        self.sender.stopService()  # in flight: cancelled, not acknowledged
        self.assertEqual(self.store.rows[THEM].last_sent_stream_ordering, 1)
        self.new_event()  # sent while the server was down (e.g. by another process): in the database only
        restarted = self.make_sender()
        self.assertEqual(self.bodies()[-1], [2, 3, 4])
        self.client.answer()
        self.assertEqual(self.store.rows[THEM].last_sent_stream_ordering, 4)
        # Caught up: new events go from memory again.
        self.new_event(restarted)
        self.assertEqual(self.bodies()[-1], [5])

    def test_refused_destination_is_dropped(self) -> None:
        self.client.put_json = lambda dest, path, body: defer.fail(FederationDeniedError(dest))  # type: ignore[method-assign]
        self.new_event()
        state = self.sender.queue_state(THEM)
        assert state is not None
        self.assertEqual((state.pending, state.retry_interval, state.retry_call), ({}, 0.0, None))

    def test_a_failing_database_does_not_leave_events_stuck(self) -> None:
        # Storing the position fails once after a delivered transaction: the loop ends with an error, and
        # what is pending is sent again after the backoff rather than waiting for the next event.
        self.new_event()
        original = self.store.set_position
        failures = [RuntimeError("database unavailable")]

        async def flaky(destination: str, position: int) -> None:
            if failures:
                raise failures.pop()
            await original(destination, position)

        self.patch(self.store, "set_position", flaky)
        self.client.answer()
        self.flushLoggedErrors(RuntimeError)
        state = self.sender.queue_state(THEM)
        assert state is not None
        self.assertIsNone(state.loop)
        self.assertEqual(state.retry_interval, 5.0)
        self.new_event()  # arrives during the backoff: waits for it
        self.assertEqual(len(self.client.calls), 1)
        self.clock.advance(5)
        self.assertEqual(self.bodies()[-1], [2])
        self.client.answer()
        self.assertEqual(self.store.rows[THEM].last_sent_stream_ordering, 2)
