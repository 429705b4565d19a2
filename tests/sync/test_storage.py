"""The batched state reads /sync relies on agree with the one-at-a-time ones (long delta chains included)."""

from __future__ import annotations

from twisted.trial.unittest import TestCase

from mxtwisted.storage.events import SNAPSHOT_INTERVAL
from tests.support.homeserver import postgres_database, start_homeserver


class BatchedStateTests(TestCase):
    database = None

    async def test_groups_in_one_go_equal_groups_one_by_one(self):
        extra = {"database": postgres_database(self)} if self.database == "postgres" else {}
        hs = await start_homeserver(self, bcrypt_rounds=4, rc_message={"per_second": 1000, "burst_count": 1000}, **extra)
        alice = await hs.components.registration.register("alice", "pw")
        engine = hs.components.rooms
        room_id, _ = await hs.components.room_creator.create_room(alice, {"preset": "public_chat"})
        event_ids = []
        for i in range(SNAPSHOT_INTERVAL + 20):
            event_id, _ = await engine.send_event(alice, room_id, "org.example.state", {"i": i}, state_key=str(i % 30))
            event_ids.append(event_id)
            event_id, _ = await engine.send_event(alice, room_id, "m.room.message", {"body": str(i)})
            event_ids.append(event_id)
        store = hs.storage.events

        store._group_cache.clear()
        groups = await store.get_state_groups_of_events(event_ids + ["$unknown"])
        self.assertEqual(set(groups), set(event_ids))
        store._group_cache.clear()
        one_by_one = {g: dict(await store.get_state_ids_for_group(g)) for g in set(groups.values())}
        for warm in (False, True):
            store._group_cache.clear()
            if warm:
                # Some groups already cached: the rest is built on top of them.
                some = sorted(one_by_one)[::7]
                for g in some:
                    await store.get_state_ids_for_group(g)
            batched = await store.get_state_ids_for_groups(list(one_by_one) + list(one_by_one)[:3])
            self.assertEqual({g: dict(s) for g, s in batched.items()}, one_by_one)
        # The last state has every key.
        last = one_by_one[groups[event_ids[-1]]]
        self.assertEqual(len([k for k in last if k[0] == "org.example.state"]), 30)
        self.assertEqual(await store.get_state_ids_for_groups([]), {})

        sync_store = hs.components.sync._store
        positions = [(room_id, 0), (room_id, 10**9), ("!nowhere:test.local", 5)]
        at = await sync_store.get_state_groups_at(positions)
        self.assertIsNone(at[(room_id, 0)])
        self.assertEqual(at[(room_id, 10**9)], groups[event_ids[-1]])
        self.assertIsNone(at[("!nowhere:test.local", 5)])


class PostgresBatchedStateTests(BatchedStateTests):
    database = "postgres"
