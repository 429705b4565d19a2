"""Backfilled history in the event store (mxtwisted.storage.backfill), on SQLite and PostgreSQL: stream orderings
below every other one, the oldest lowest; backward extremities; outliers turned into timeline events; nothing
of the room's present touched."""

from __future__ import annotations

from typing import Any

from mxtwisted.storage.backfill import (
    BackfilledEvent,
    backward_extremities,
    lowest_stream_ordering,
    persist_backfilled,
    redactions_of,
)
from mxtwisted.storage.events import MIN_STREAM_ORDERING, EventStore, PersistContext
from tests.storage.engines import EngineTestMixin, inlined, on_both_engines

ROOM = "!room:test.local"
ALICE = "@alice:remote.test"


def event(event_id: str, prevs: list[str], depth: int, **extra: Any) -> dict[str, Any]:
    return {
        "event_id": event_id, "room_id": ROOM, "type": "m.room.message", "sender": ALICE, "depth": depth,
        "origin_server_ts": depth, "content": {"body": event_id}, "prev_events": prevs, "auth_events": [], **extra,
    }


def backfilled(event_id: str, prevs: list[str], depth: int, group: int, **fields: Any) -> BackfilledEvent:
    return BackfilledEvent(event_id, event(event_id, prevs, depth), prev_event_ids=prevs, state_group=group, **fields)


@on_both_engines
class BackfillStoreTests(EngineTestMixin):
    async def live(self, store: EventStore, event_id: str, prevs: list[str], depth: int, outlier: bool = False) -> int:
        """An event persisted the ordinary way (the join, and what came after it)."""
        ordering = store.stream.allocate()
        ctx = PersistContext(stream_ordering=ordering, received_ts=0, prev_event_ids=prevs, outlier=outlier)
        try:
            await store.persist_event(event_id, ROOM, event(event_id, prevs, depth), ctx)
        finally:
            store.stream.finish(ordering)
        return ordering

    async def ids(self, store: EventStore, start: int, backwards: bool) -> list[tuple[str, int]]:
        events = await store.get_room_events(ROOM, start, None, backwards, 50)
        return [(e.event_id, e.stream_ordering) for e in events]

    @inlined
    async def test_history_goes_below_everything(self) -> None:
        store = (await self.storage()).events
        assert store is not None
        await store.store_room(ROOM, "10", ALICE, False, 0)
        # $old1 came with the join's auth chain (an outlier); $join names $old3, which we do not have.
        await self.live(store, "$old1", ["$older"], 1, outlier=True)
        await self.live(store, "$join", ["$old3"], 4)
        await self.live(store, "$live", ["$join"], 5)
        self.assertEqual(await lowest_stream_ordering(store), 0)
        self.assertEqual(await backward_extremities(store, ROOM), {"$old3": ["$join"]})
        extremities_before = await store.get_forward_extremities(ROOM)
        current_before = await store.get_current_state_ids(ROOM)

        group = store.allocate_state_group()
        batch = [
            backfilled("$old1", ["$older"], 1, group, new_group=(None, {("m.room.create", ""): "$create"}, 0)),
            backfilled("$old2", ["$old1"], 2, group),
            backfilled("$old3", ["$old2"], 3, group),
        ]
        added = await persist_backfilled(store, ROOM, batch, received_ts=123)
        self.assertEqual(added, ["$old1", "$old2", "$old3"])
        # Below every other event, the oldest lowest: backwards they follow the join, forwards they lead.
        self.assertEqual(
            await self.ids(store, store.stream.current, True),
            [("$live", 3), ("$join", 2), ("$old3", -1), ("$old2", -2), ("$old1", -3)],
        )
        self.assertEqual(
            [eid for eid, _ in await self.ids(store, MIN_STREAM_ORDERING, False)],
            ["$old1", "$old2", "$old3", "$join", "$live"],
        )
        # A sync position (never negative) has none of them after it.
        self.assertEqual([eid for eid, _ in await self.ids(store, 0, False)], ["$join", "$live"])
        stored = await store.get_event("$old1")
        assert stored is not None
        self.assertFalse(stored.outlier)
        self.assertEqual(await store.get_state_ids_at_event("$old2"), {("m.room.create", ""): "$create"})
        # The room's present is untouched.
        self.assertEqual(await store.get_forward_extremities(ROOM), extremities_before)
        self.assertEqual(await store.get_current_state_ids(ROOM), current_before)
        self.assertEqual(await lowest_stream_ordering(store), -3)
        self.assertEqual(await backward_extremities(store, ROOM), {"$older": ["$old1"]})

        # The next batch goes lower still; events already in the timeline are left as they are.
        again = [backfilled("$older", [], 0, group), backfilled("$old2", ["$old1"], 2, group)]
        self.assertEqual(await persist_backfilled(store, ROOM, again, received_ts=123), ["$older"])
        self.assertEqual((await self.ids(store, -1, True))[-2:], [("$old1", -3), ("$older", -5)])
        self.assertEqual(await backward_extremities(store, ROOM), {})

    @inlined
    async def test_redactions_and_outliers(self) -> None:
        store = (await self.storage()).events
        assert store is not None
        await store.store_room(ROOM, "10", ALICE, False, 0)
        await self.live(store, "$join", ["$redaction"], 5)
        group = store.allocate_state_group()
        batch = [
            # A state event of the state before the history: stored, not in the timeline.
            BackfilledEvent("$state", event("$state", [], 1), outlier=True),
            backfilled("$target", [], 2, group, new_group=(None, {}, 0)),
            backfilled("$redaction", ["$target"], 3, group, redacts="$target",
                       redacted_target_json=dict(event("$target", [], 2), content={})),
        ]
        self.assertEqual(await persist_backfilled(store, ROOM, batch, received_ts=1), ["$target", "$redaction"])
        state = await store.get_event("$state")
        assert state is not None
        self.assertTrue(state.outlier)
        target = await store.get_event("$target")
        assert target is not None
        self.assertEqual((target.json["content"], target.redacted_by), ({}, "$redaction"))
        self.assertEqual(await redactions_of(store, ["$target", "$nothing"]), {"$target": ["$redaction"]})
        self.assertEqual([e.event_id for e in await store.get_room_events(ROOM, 10, None, True, 10)],
                         ["$join", "$redaction", "$target"])
