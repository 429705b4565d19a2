"""ReceiptsHandler and the receipts stream source: exactly the right receipts for (user, rooms, from, to)."""

from __future__ import annotations

from typing import Any

from twisted.trial.unittest import TestCase

from mxtwisted.ephemeral.receipts import ReceiptsHandler
from mxtwisted.http.errors import MatrixError
from tests.ephemeral.fakes import RecordingNotifier
from tests.support.homeserver import start_homeserver


class ReceiptSourceTests(TestCase):
    async def setUp(self) -> None:
        self.hs = await start_homeserver(self, bcrypt_rounds=4, rc_message={"per_second": 1000, "burst_count": 1000})
        c = self.hs.components
        self.alice = (await self.hs.register_user("alice"))["user_id"]
        self.bob = (await self.hs.register_user("bob"))["user_id"]
        self.carol = (await self.hs.register_user("carol"))["user_id"]
        self.room, _ = await c.room_creator.create_room(self.alice, {"preset": "public_chat"})
        self.other, _ = await c.room_creator.create_room(self.carol, {"preset": "public_chat"})
        await c.membership.update(self.bob, self.room, self.bob, "join")
        await c.membership.update(self.alice, self.other, self.alice, "join")
        self.r1, _ = await c.rooms.send_event(self.alice, self.room, "m.room.message", {"body": "1"})
        self.r2, _ = await c.rooms.send_event(self.bob, self.room, "m.room.message", {"body": "2"})
        self.o1, _ = await c.rooms.send_event(self.carol, self.other, "m.room.message", {"body": "o"})
        # A handler of our own over the server's stores, with a notifier that records.
        self.notifier = RecordingNotifier(self.hs.service.reactor)
        self.receipts = ReceiptsHandler(
            self.hs.service.reactor, self.notifier, c.rooms, self.hs.storage.receipts, self.hs.storage.account_data
        )
        self.source = self.receipts.source

    async def updates(self, user: str, rooms: set[str], since: int, upto: int | None = None) -> dict[str, Any]:
        upto = self.source.current_position() if upto is None else upto
        per_room, global_events = await self.source.get_updates(user, rooms, since, upto)
        self.assertEqual(global_events, [])
        for events in per_room.values():
            self.assertEqual(len(events), 1)
            self.assertEqual(events[0]["type"], "m.receipt")
        return {room: events[0]["content"] for room, events in per_room.items()}

    def strip_ts(self, per_room: dict) -> dict:
        """The receipts without their timestamps."""
        return {
            room: {
                event_id: {
                    rtype: {user: {k: v for k, v in data.items() if k != "ts"} for user, data in users.items()}
                    for rtype, users in by_type.items()
                }
                for event_id, by_type in content.items()
            }
            for room, content in per_room.items()
        }

    async def test_updates_by_user_rooms_and_range(self) -> None:
        self.assertEqual(self.source.name, "receipts")
        start = self.source.current_position()
        await self.receipts.send_receipt(self.alice, self.room, "m.read", self.r1)  # p1
        p1 = self.source.current_position()
        await self.receipts.send_receipt(self.bob, self.room, "m.read.private", self.r2)  # p2
        p2 = self.source.current_position()
        await self.receipts.send_receipt(self.alice, self.other, "m.read", self.o1, "main")  # p3
        p3 = self.source.current_position()
        self.assertEqual((p1, p2, p3), (start + 1, start + 2, start + 3))

        # Alice: her receipt in both rooms; Bob's private receipt is not hers to see.
        got = await self.updates(self.alice, {self.room, self.other}, 0)
        self.assertEqual(self.strip_ts(got), {
            self.room: {self.r1: {"m.read": {self.alice: {}}}},
            self.other: {self.o1: {"m.read": {self.alice: {"thread_id": "main"}}}},
        })
        self.assertIsInstance(got[self.room][self.r1]["m.read"][self.alice]["ts"], int)
        # Bob sees his private receipt, and only the rooms he asks for.
        got = await self.updates(self.bob, {self.room}, 0)
        self.assertEqual(self.strip_ts(got), {
            self.room: {self.r1: {"m.read": {self.alice: {}}}, self.r2: {"m.read.private": {self.bob: {}}}},
        })
        # Ranges: (p1, p2] holds only Bob's private receipt, so Alice gets nothing there.
        self.assertEqual(await self.updates(self.alice, {self.room, self.other}, p1, p2), {})
        self.assertEqual(self.strip_ts(await self.updates(self.bob, {self.room}, p1, p2)), {
            self.room: {self.r2: {"m.read.private": {self.bob: {}}}}})
        self.assertEqual(set(await self.updates(self.alice, {self.room, self.other}, p2, p3)), {self.other})
        self.assertEqual(await self.updates(self.alice, {self.room, self.other}, p3, p3), {})
        self.assertEqual(await self.updates(self.alice, set(), 0), {})

    async def test_a_newer_receipt_replaces_the_older(self) -> None:
        await self.receipts.send_receipt(self.alice, self.room, "m.read", self.r1)
        p1 = self.source.current_position()
        await self.receipts.send_receipt(self.alice, self.room, "m.read", self.r2)
        got = await self.updates(self.bob, {self.room}, 0)
        self.assertEqual(self.strip_ts(got), {self.room: {self.r2: {"m.read": {self.alice: {}}}}})
        got = await self.updates(self.bob, {self.room}, p1)
        self.assertEqual(self.strip_ts(got), {self.room: {self.r2: {"m.read": {self.alice: {}}}}})
        # An older one changes nothing and wakes nobody.
        calls = len(self.notifier.calls)
        position = self.source.current_position()
        await self.receipts.send_receipt(self.alice, self.room, "m.read", self.r1)
        self.assertEqual(await self.updates(self.bob, {self.room}, position), {})
        self.assertEqual(len(self.notifier.calls), calls)

    async def test_who_is_woken(self) -> None:
        await self.receipts.send_receipt(self.alice, self.room, "m.read", self.r1)
        self.assertEqual(self.notifier.calls[-1], ("receipts", self.source.current_position(), [self.alice, self.bob]))
        await self.receipts.send_receipt(self.bob, self.room, "m.read.private", self.r2)
        self.assertEqual(self.notifier.calls[-1], ("receipts", self.source.current_position(), [self.bob]))

    async def test_unknown_type_and_thread_checks(self) -> None:
        for args, status in (
            ((self.alice, self.room, "m.nope", self.r1), 400),
            ((self.alice, self.room, "m.fully_read", self.r1, "main"), 400),
            ((self.carol, self.room, "m.read", self.r1), 403),
            ((self.alice, self.room, "m.read", self.o1), 404),
        ):
            with self.assertRaises(MatrixError) as cm:
                await self.receipts.send_receipt(*args)
            self.assertEqual(cm.exception.status, status, args)
        self.assertEqual(self.notifier.calls, [])

    async def test_fully_read_is_account_data(self) -> None:
        await self.receipts.set_read_markers(self.bob, self.room, {"m.fully_read": self.r1})
        self.assertEqual(await self.hs.storage.account_data.get(self.bob, "m.fully_read", self.room), {"event_id": self.r1})
        self.assertEqual(self.notifier.calls[-1][0::2], ("account_data", [self.bob]))
        changed = await self.hs.storage.account_data.get_changed(self.bob, 0, self.hs.storage.account_data.stream.current)
        self.assertIn((self.room, "m.fully_read", {"event_id": self.r1}), changed)
        # Not a receipt.
        self.assertEqual(await self.updates(self.bob, {self.room}, 0), {})
