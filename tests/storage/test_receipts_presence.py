"""ReceiptStore and PresenceStore (stream positions, forward-only receipts), on SQLite and PostgreSQL."""

from __future__ import annotations

from twisted.internet.defer import Deferred

from mxtwisted.storage.presence import OFFLINE, ONLINE, UNAVAILABLE, PresenceStore, UserPresence
from mxtwisted.storage.streams import StreamIdGenerator
from tests.storage.engines import EngineTestMixin, inlined, on_both_engines

ALICE = "@alice:test.local"
BOB = "@bob:test.local"
ROOM = "!room:test.local"
OTHER_ROOM = "!other:test.local"


@on_both_engines
class ReceiptStoreTests(EngineTestMixin):
    @inlined
    async def test_insert_and_read_back(self) -> None:
        receipts = (await self.storage()).receipts
        assert receipts is not None
        self.assertEqual(receipts.stream.current, 0)
        pos = await receipts.insert_receipt(ROOM, "m.read", ALICE, None, "$e1", 10, {"ts": 1000})
        self.assertEqual(pos, 1)
        self.assertEqual(receipts.stream.current, 1)
        r = await receipts.get_receipt(ROOM, "m.read", ALICE)
        assert r is not None
        self.assertEqual((r.event_id, r.thread_id, r.data, r.stream_id), ("$e1", None, {"ts": 1000}, 1))
        self.assertIsNone(await receipts.get_receipt(ROOM, "m.read", ALICE, "main"))

    @inlined
    async def test_receipts_only_move_forward(self) -> None:
        receipts = (await self.storage()).receipts
        assert receipts is not None
        self.assertIsNotNone(await receipts.insert_receipt(ROOM, "m.read", ALICE, None, "$e5", 5, {"ts": 1}))
        # The same event again, or an earlier one: nothing changes.
        self.assertIsNone(await receipts.insert_receipt(ROOM, "m.read", ALICE, None, "$e5", 5, {"ts": 2}))
        self.assertIsNone(await receipts.insert_receipt(ROOM, "m.read", ALICE, None, "$e3", 3, {"ts": 3}))
        r = await receipts.get_receipt(ROOM, "m.read", ALICE)
        assert r is not None
        self.assertEqual((r.event_id, r.data), ("$e5", {"ts": 1}))
        pos = await receipts.insert_receipt(ROOM, "m.read", ALICE, None, "$e7", 7, {"ts": 4})
        self.assertIsNotNone(pos)
        r = await receipts.get_receipt(ROOM, "m.read", ALICE)
        assert r is not None
        self.assertEqual((r.event_id, r.stream_id), ("$e7", pos))

    @inlined
    async def test_threads_and_types_are_separate(self) -> None:
        receipts = (await self.storage()).receipts
        assert receipts is not None
        await receipts.insert_receipt(ROOM, "m.read", ALICE, None, "$e9", 9, {"ts": 1})
        # Behind the unthreaded receipt, but another thread / type: stored.
        self.assertIsNotNone(await receipts.insert_receipt(ROOM, "m.read", ALICE, "main", "$e2", 2, {"ts": 1}))
        self.assertIsNotNone(await receipts.insert_receipt(ROOM, "m.read", ALICE, "$root", "$e3", 3, {"ts": 1}))
        self.assertIsNotNone(await receipts.insert_receipt(ROOM, "m.read.private", ALICE, None, "$e1", 1, {"ts": 1}))
        mine = await receipts.get_receipts_for_user(ALICE, ROOM)
        self.assertEqual(
            sorted((r.receipt_type, r.thread_id or "", r.event_id) for r in mine),
            [("m.read", "", "$e9"), ("m.read", "$root", "$e3"), ("m.read", "main", "$e2"), ("m.read.private", "", "$e1")],
        )

    @inlined
    async def test_receipts_for_rooms_by_stream_range(self) -> None:
        receipts = (await self.storage()).receipts
        assert receipts is not None
        p1 = await receipts.insert_receipt(ROOM, "m.read", ALICE, None, "$a", 1, {"ts": 1})
        p2 = await receipts.insert_receipt(OTHER_ROOM, "m.read", ALICE, None, "$b", 2, {"ts": 2})
        p3 = await receipts.insert_receipt(ROOM, "m.read", BOB, None, "$c", 3, {"ts": 3})
        assert p1 and p2 and p3
        got = await receipts.get_receipts_for_rooms({ROOM}, 0, p3)
        self.assertEqual([(r.user_id, r.event_id) for r in got], [(ALICE, "$a"), (BOB, "$c")])
        got = await receipts.get_receipts_for_rooms({ROOM, OTHER_ROOM}, p1, p2)
        self.assertEqual([(r.room_id, r.event_id) for r in got], [(OTHER_ROOM, "$b")])
        self.assertEqual(await receipts.get_receipts_for_rooms({ROOM}, p3, p3), [])
        self.assertEqual(await receipts.get_receipts_for_rooms(set(), 0, p3), [])
        # Many rooms at once (chunked IN lists).
        many = {f"!r{i}:test.local" for i in range(1200)} | {ROOM}
        self.assertEqual(len(await receipts.get_receipts_for_rooms(many, 0, p3)), 2)
        # The in-memory change cache knows which rooms moved since a position.
        self.assertEqual(receipts.rooms_changed_since({ROOM, OTHER_ROOM, "!x:test.local"}, p2), {ROOM})
        self.assertEqual(receipts.rooms_changed_since({ROOM, OTHER_ROOM}, 0), {ROOM, OTHER_ROOM})

    @inlined
    async def test_stream_position_survives_restart(self) -> None:
        storage = await self.storage()
        assert storage.receipts is not None
        await storage.receipts.insert_receipt(ROOM, "m.read", ALICE, None, "$a", 1, {"ts": 1})
        await storage.receipts.insert_receipt(ROOM, "m.read", BOB, None, "$a", 1, {"ts": 1})
        await storage.close()
        storage = await self.storage()
        assert storage.receipts is not None
        self.assertEqual(storage.receipts.stream.current, 2)
        # After a restart the change cache knows nothing: every room is a candidate.
        self.assertEqual(storage.receipts.rooms_changed_since({ROOM}, 1), {ROOM})
        self.assertEqual(storage.receipts.rooms_changed_since({ROOM}, 2), set())


@on_both_engines
class PresenceStoreTests(EngineTestMixin):
    @inlined
    async def test_put_get(self) -> None:
        presence = (await self.storage()).presence
        assert presence is not None
        self.assertIsNone(await presence.get(ALICE))
        stored = await presence.put(UserPresence(ALICE, ONLINE, "hi ü", 1000, 2000, True))
        self.assertEqual(stored.stream_id, 1)
        self.assertEqual(await presence.get(ALICE), UserPresence(ALICE, ONLINE, "hi ü", 1000, 2000, True, 1))
        await presence.put(UserPresence(ALICE, UNAVAILABLE, None, 1000, 2000, False))
        got = await presence.get(ALICE)
        assert got is not None
        self.assertEqual((got.state, got.status_msg, got.currently_active, got.stream_id), (UNAVAILABLE, None, False, 2))

    @inlined
    async def test_changed_and_many(self) -> None:
        presence = (await self.storage()).presence
        assert presence is not None
        a = await presence.put(UserPresence(ALICE, ONLINE))
        b = await presence.put(UserPresence(BOB, OFFLINE))
        a2 = await presence.put(UserPresence(ALICE, UNAVAILABLE))
        self.assertEqual([p.user_id for p in await presence.get_changed(0, b.stream_id)], [BOB])
        self.assertEqual([p.user_id for p in await presence.get_changed(0, a2.stream_id)], [BOB, ALICE])
        self.assertEqual([p.user_id for p in await presence.get_changed(b.stream_id, a2.stream_id)], [ALICE])
        self.assertEqual(await presence.get_changed(a2.stream_id, a2.stream_id), [])
        self.assertEqual(a.stream_id, 1)
        many = await presence.get_many([ALICE, BOB, "@nobody:test.local"])
        self.assertEqual({u: p.state for u, p in many.items()}, {ALICE: UNAVAILABLE, BOB: OFFLINE})
        self.assertEqual([p.user_id for p in await presence.get_not_offline()], [ALICE])

    @inlined
    async def test_older_write_never_replaces_newer(self) -> None:
        presence = (await self.storage()).presence
        assert presence is not None
        # Two writes of one user in flight at once (positions 1 and 2), awaited out of order.
        first = Deferred.fromCoroutine(presence.put(UserPresence(ALICE, ONLINE)))
        second = Deferred.fromCoroutine(presence.put(UserPresence(ALICE, OFFLINE)))
        await second
        await first
        got = await presence.get(ALICE)
        assert got is not None
        self.assertEqual((got.state, got.stream_id), (OFFLINE, 2))
        self.assertEqual(presence.stream.current, 2)
        # A write carrying an older position (as a late commit would) leaves the row alone.
        late = PresenceStore(presence.db, StreamIdGenerator(0))
        await late.put(UserPresence(ALICE, UNAVAILABLE))
        got = await presence.get(ALICE)
        assert got is not None
        self.assertEqual((got.state, got.stream_id), (OFFLINE, 2))
