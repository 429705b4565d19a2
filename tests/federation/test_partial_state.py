"""Joins with partial state (send_join ``omit_members``) between two real matrixhs servers over HTTPS: the join
returns before the members are known; meanwhile events of unknown members are accepted, ours reach the
resident server, and member lists wait; then the full state is fetched and put in place everywhere."""

from __future__ import annotations

from typing import Any, Optional
from urllib.parse import quote

from twisted.internet import defer, reactor
from twisted.internet.task import deferLater
from twisted.trial import unittest

from mxtwisted.storage.partial_state import get_partial_room
from tests.federation import test_remote_join as remote_join
from tests.federation import test_two_servers as two_servers

MEMBERS = 8


class PartialStateJoinTests(unittest.TestCase):
    call = remote_join.RemoteJoinTests.call
    public_room = remote_join.RemoteJoinTests.public_room
    eventually = two_servers.TwoServersTests.eventually
    send_text = two_servers.TwoServersTests.send_text
    wait_for_message = two_servers.TwoServersTests.wait_for_message

    async def setUp(self) -> None:
        await remote_join.start_two_servers(self)
        self.room_id = await self.public_room(name="Big room")
        self.members = []
        for i in range(MEMBERS):
            user = await self.a.register_user(f"member{i}")
            await self.call(self.a, user, "POST", f"/rooms/{quote(self.room_id)}/join", {})
            self.members.append(user)
        # B's request for the full state waits until the test lets it go.
        self.release: defer.Deferred = defer.Deferred()
        self.state_requests: list[Any] = []
        client = self.b.components.federation.client
        original = client.get_json

        async def held_get(destination: str, path: str, args: Any = None) -> Any:
            if "/state/" in path:
                self.state_requests.append(args)
                await self.release
            return await original(destination, path, args)

        self.patch(client, "get_json", held_get)

    async def joined_on_b(self) -> set[str]:
        resp = await self.call(self.b, self.bob, "GET", f"/rooms/{quote(self.room_id)}/joined_members")
        return set(resp["joined"])

    async def test_join_returns_before_the_members_and_they_follow(self) -> None:
        everyone = {self.alice["user_id"], self.bob["user_id"], *(m["user_id"] for m in self.members)}
        await self.call(self.b, self.bob, "POST", f"/join/{quote(self.room_id)}?server_name={quote(self.a_name)}", {})
        engine = self.b.components.rooms
        partial = await get_partial_room(engine.store, self.room_id)
        self.assertIsNotNone(partial)
        assert partial is not None
        self.assertEqual(partial.servers, [self.a_name])
        self.assertEqual(engine.partial_state_servers(self.room_id), [self.a_name])
        # B knows few members: the state has no member events but bob's.
        state = await engine.store.get_current_state_ids(self.room_id)
        self.assertEqual({k for (t, k) in state if t == "m.room.member"}, {self.bob["user_id"]})

        # A member B does not know yet talks: accepted (checked against its own auth events meanwhile).
        said = await self.send_text(self.a, self.members[0], self.room_id, "hello newcomer", "m0")
        stored = await self.eventually(lambda: engine.store.get_event(said), "the message on B")
        self.assertFalse(stored.outlier)
        self.assertIsNone(stored.rejected_reason)
        # bob talks: A gets it (A is a resident server of the answer, though B knows none of A's members).
        reply = await self.send_text(self.b, self.bob, self.room_id, "hi all", "b0")
        await self.wait_for_message(self.a, self.alice, self.room_id, reply)

        # A client syncing without lazy-loaded members, before the full state is here.
        since = (await self.call(self.b, self.bob, "GET", "/sync"))["next_batch"]
        # Member lists wait for the full state.
        pending = defer.ensureDeferred(self.joined_on_b())
        await deferLater(reactor, 0.2, lambda: None)
        self.assertFalse(pending.called)
        self.assertEqual(self.state_requests, [{"event_id": partial.join_event_id}])
        self.release.callback(None)
        self.assertEqual(await pending, everyone)

        # That client gets the whole state of the room in its next sync (as for a newly joined room).
        synced = await self.call(self.b, self.bob, "GET", f"/sync?since={quote(since)}&timeout=5000")
        room = synced["rooms"]["join"][self.room_id]
        self.assertEqual({e["state_key"] for e in room["state"]["events"] + room["timeline"]["events"]
                          if e["type"] == "m.room.member"}, everyone)
        # Everything now has the full state: the room's, and that of the events since the join.
        self.assertIsNone(await get_partial_room(engine.store, self.room_id))
        self.assertEqual(engine.partial_state_servers(self.room_id), [])
        state = await engine.store.get_current_state_ids(self.room_id)
        self.assertEqual({k for (t, k) in state if t == "m.room.member"}, everyone)
        at_message = await engine.store.get_state_ids_at_event(said)
        assert at_message is not None
        self.assertTrue({m["user_id"] for m in self.members} <= {k for (t, k) in at_message if t == "m.room.member"})
        # And the room goes on: a new member of A is seen on B, bob's messages still reach A.
        late = await self.a.register_user("late")
        await self.call(self.a, late, "POST", f"/rooms/{quote(self.room_id)}/join", {})

        async def late_on_b() -> Optional[bool]:
            return True if late["user_id"] in await self.joined_on_b() else None

        await self.eventually(late_on_b, "the late member on B")
        again = await self.send_text(self.b, self.bob, self.room_id, "welcome late", "b1")
        await self.wait_for_message(self.a, late, self.room_id, again)

    async def test_full_joins_when_switched_off(self) -> None:
        self.b.components.remote_join.partial_joins = False
        self.release.callback(None)
        await self.call(self.b, self.bob, "POST", f"/join/{quote(self.room_id)}?server_name={quote(self.a_name)}", {})
        self.assertIsNone(await get_partial_room(self.b.components.rooms.store, self.room_id))
        self.assertEqual(len(await self.joined_on_b()), MEMBERS + 2)
        self.assertEqual(self.state_requests, [])
