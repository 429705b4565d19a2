"""What the room engine's federation paths ask of the event store, on SQLite and PostgreSQL: an event known
only as an outlier is persisted properly later (new stream position, state group replaced); a batch of
outliers tolerates events stored meanwhile; a resolved state dropping a key leaves the current state."""

from __future__ import annotations

from typing import Any

from mxtwisted.storage.events import EventStore, PersistContext
from tests.storage.engines import EngineTestMixin, inlined, on_both_engines

ROOM = "!room:test.local"
BOB = "@bob:remote.test"


def event(event_id: str, prevs: list[str], depth: int, **extra: Any) -> dict[str, Any]:
    return {
        "event_id": event_id, "room_id": ROOM, "type": "m.room.message", "sender": BOB, "depth": depth,
        "origin_server_ts": depth, "content": {"body": event_id}, "prev_events": prevs, "auth_events": [], **extra,
    }


@on_both_engines
class EventPersistenceTests(EngineTestMixin):
    async def persist(self, store: EventStore, event_id: str, ev: dict, **ctx_fields: Any) -> int:
        ordering = store.stream.allocate()
        ctx = PersistContext(stream_ordering=ordering, received_ts=0, prev_event_ids=ev["prev_events"], **ctx_fields)
        try:
            await store.persist_event(event_id, ROOM, ev, ctx)
        finally:
            store.stream.finish(ordering)
        return ordering

    @inlined
    async def test_an_outlier_becomes_a_timeline_event(self) -> None:
        store = (await self.storage()).events
        assert store is not None
        await store.store_room(ROOM, "10", BOB, False, 0)
        first = await self.persist(store, "$a", event("$a", [], 1), outlier=True)
        # Known with the state after it (as a gap's prev event is), then arriving properly.
        group = store.allocate_state_group()
        await store.set_event_state("$a", ROOM, group, {("m.room.create", ""): "$create"})
        new_group = store.allocate_state_group()
        second = await self.persist(
            store, "$a", event("$a", [], 1), state_group=new_group, new_group_delta={("m.room.create", ""): "$c2"}
        )
        stored = await store.get_event("$a")
        assert stored is not None
        self.assertFalse(stored.outlier)
        self.assertEqual(stored.stream_ordering, second)
        self.assertGreater(second, first)
        self.assertEqual(await store.get_state_group_of_event("$a"), new_group)
        self.assertEqual(await store.get_forward_extremities(ROOM), ["$a"])
        timeline = await store.get_room_events(ROOM, 0, second, False, 10)
        self.assertEqual([e.event_id for e in timeline], ["$a"])
        # A proper event is never replaced by a later outlier copy (a batch of fetched auth events).
        ordering = store.stream.allocate()
        await store.persist_outliers(ROOM, [("$a", event("$a", [], 1), PersistContext(ordering, 0, outlier=True))])
        store.stream.finish(ordering)
        stored = await store.get_event("$a")
        assert stored is not None
        self.assertEqual((stored.outlier, stored.stream_ordering), (False, second))

    @inlined
    async def test_a_resolution_may_drop_a_key_from_the_current_state(self) -> None:
        store = (await self.storage()).events
        assert store is not None
        await store.store_room(ROOM, "10", BOB, False, 0)
        topic = event("$t", [], 1, type="m.room.topic", state_key="", content={"topic": "x"})
        await self.persist(store, "$t", topic, current_state_delta={("m.room.topic", ""): "$t"})
        self.assertEqual(await store.get_current_state_ids(ROOM), {("m.room.topic", ""): "$t"})
        await self.persist(store, "$m", event("$m", ["$t"], 2), current_state_removed=[("m.room.topic", "")])
        self.assertEqual(await store.get_current_state_ids(ROOM), {})

    @inlined
    async def test_partial_state_rooms_are_recorded_and_completed(self) -> None:
        from mxtwisted.storage.partial_state import (
            PartialRoom,
            add_partial_room,
            complete_partial_room,
            get_partial_room,
            groups_since,
            list_partial_rooms,
        )

        store = (await self.storage()).events
        assert store is not None
        await store.store_room(ROOM, "10", BOB, False, 0)
        await add_partial_room(store, PartialRoom(ROOM, "$join", ["a.test", "b.test"]), 5)
        self.assertEqual(await get_partial_room(store, ROOM), PartialRoom(ROOM, "$join", ["a.test", "b.test"]))
        partial = store.allocate_state_group()
        join = event("$join", [], 1, type="m.room.member", state_key=BOB, content={"membership": "join"})
        await self.persist(store, "$join", join, state_group=partial, new_group_delta={("m.room.member", BOB): "$join"})
        await self.persist(store, "$msg", event("$msg", ["$join"], 2), state_group=partial)
        self.assertEqual(await groups_since(store, ROOM, "$join"), {"$join": partial, "$msg": partial})
        full = store.allocate_state_group()
        state = {("m.room.member", BOB): "$join", ("m.room.member", "@carol:a.test"): "$carol"}
        await complete_partial_room(
            store, ROOM, {full: state}, {"$join": full, "$msg": full}, {("m.room.topic", ""): "$t"}, 7
        )
        self.assertEqual(await store.get_state_ids_at_event("$msg"), state)
        self.assertEqual(await store.get_current_state_ids(ROOM), {("m.room.topic", ""): "$t"})
        self.assertIsNone(await get_partial_room(store, ROOM))
        self.assertEqual(await list_partial_rooms(store), [])
