"""``GET /rooms/{roomId}/context/{eventId}`` and ``GET /v1/rooms/{roomId}/timestamp_to_event`` over real HTTP."""

from __future__ import annotations

import json
from urllib.parse import quote

from tests.api.client.test_room_moderation import V1, RoomsTestCase


def q(value: str) -> str:
    return quote(value, safe="")


class ContextTests(RoomsTestCase):
    async def room_with_messages(self, n: int = 9, **extra) -> tuple[str, list[str]]:
        room_id = await self.create({"preset": "public_chat", **extra})
        await self.ok("POST", f"/rooms/{room_id}/join", {}, self.bob)
        ids = [await self.send(room_id, str(i), self.alice if i % 2 else self.bob) for i in range(n)]
        return room_id, ids

    def bodies(self, events: list[dict]) -> list[str]:
        return [e["content"].get("body") for e in events if e["type"] == "m.room.message"]

    async def test_events_around(self):
        room_id, ids = await self.room_with_messages()
        resp = await self.ok("GET", f"/rooms/{room_id}/context/{q(ids[4])}?limit=4")
        self.assertEqual(resp["event"]["event_id"], ids[4])
        self.assertEqual(self.bodies(resp["events_before"]), ["3", "2"])  # reverse-chronological
        self.assertEqual(self.bodies(resp["events_after"]), ["5", "6"])  # chronological
        types = {(e["type"], e.get("state_key")) for e in resp["state"]}
        self.assertIn(("m.room.create", ""), types)
        self.assertIn(("m.room.member", self.bob["user_id"]), types)
        # The tokens continue with /messages from either side.
        back = await self.ok("GET", f"/rooms/{room_id}/messages?dir=b&limit=2&from={q(resp['start'])}")
        self.assertEqual(self.bodies(back["chunk"]), ["1", "0"])
        forward = await self.ok("GET", f"/rooms/{room_id}/messages?dir=f&limit=10&from={q(resp['end'])}")
        self.assertEqual(self.bodies(forward["chunk"]), ["7", "8"])

    async def test_default_limit_and_zero(self):
        room_id, ids = await self.room_with_messages(14)
        resp = await self.ok("GET", f"/rooms/{room_id}/context/{q(ids[7])}")
        self.assertEqual(len(resp["events_before"]) + len(resp["events_after"]), 10)
        resp = await self.ok("GET", f"/rooms/{room_id}/context/{q(ids[7])}?limit=0")
        self.assertEqual((resp["events_before"], resp["events_after"]), ([], []))
        self.assertEqual(resp["event"]["event_id"], ids[7])
        back = await self.ok("GET", f"/rooms/{room_id}/messages?dir=b&limit=1&from={q(resp['start'])}")
        self.assertEqual(self.bodies(back["chunk"]), ["6"])

    async def test_at_the_edges(self):
        room_id, ids = await self.room_with_messages(3)
        resp = await self.ok("GET", f"/rooms/{room_id}/context/{q(ids[-1])}?limit=10")
        self.assertEqual(resp["events_after"], [])
        self.assertEqual(self.bodies(resp["events_before"]), ["1", "0"])
        # The state is at the last event returned: here the event itself.
        self.assertTrue(resp["start"] and resp["end"])
        later = await self.send(room_id, "later")
        forward = await self.ok("GET", f"/rooms/{room_id}/messages?dir=f&limit=10&from={q(resp['end'])}")
        self.assertEqual([e["event_id"] for e in forward["chunk"]], [later])

    async def test_state_is_at_the_last_event(self):
        room_id = await self.create({"preset": "public_chat", "name": "before"})
        first = await self.send(room_id, "first")
        await self.ok("PUT", f"/rooms/{room_id}/state/m.room.name/", {"name": "after"})
        resp = await self.ok("GET", f"/rooms/{room_id}/context/{q(first)}?limit=0")
        names = [e["content"]["name"] for e in resp["state"] if e["type"] == "m.room.name"]
        self.assertEqual(names, ["before"])
        resp = await self.ok("GET", f"/rooms/{room_id}/context/{q(first)}?limit=2")
        names = [e["content"]["name"] for e in resp["state"] if e["type"] == "m.room.name"]
        self.assertEqual(names, ["after"])

    async def test_filter_and_lazy_loading(self):
        room_id, ids = await self.room_with_messages(9)
        await self.ok("POST", f"/rooms/{room_id}/join", {}, self.carol)
        only_bob = q(json.dumps({"senders": [self.bob["user_id"]], "lazy_load_members": True}))
        resp = await self.ok("GET", f"/rooms/{room_id}/context/{q(ids[4])}?limit=4&filter={only_bob}")
        self.assertEqual(self.bodies(resp["events_before"]), ["2", "0"])
        self.assertEqual(self.bodies(resp["events_after"]), ["6", "8"])
        # The filter applies to the state too (only Bob's events), lazy loading to members.
        self.assertEqual({e["sender"] for e in resp["state"]}, {self.bob["user_id"]})
        members = {e["state_key"] for e in resp["state"] if e["type"] == "m.room.member"}
        self.assertEqual(members, {self.bob["user_id"]})
        lazy = q(json.dumps({"lazy_load_members": True, "types": ["m.room.message", "m.room.member"]}))
        resp = await self.ok("GET", f"/rooms/{room_id}/context/{q(ids[4])}?limit=2&filter={lazy}")
        members = {e["state_key"] for e in resp["state"] if e["type"] == "m.room.member"}
        self.assertEqual(members, {self.alice["user_id"], self.bob["user_id"]})  # not Carol: she sent nothing here

    async def test_history_visibility(self):
        room_id = await self.create({"preset": "public_chat", "initial_state": [
            {"type": "m.room.history_visibility", "state_key": "", "content": {"history_visibility": "joined"}}]})
        hidden = await self.send(room_id, "before bob")
        await self.ok("POST", f"/rooms/{room_id}/join", {}, self.bob)
        seen = await self.send(room_id, "after bob")
        await self.refused(404, "M_NOT_FOUND", "GET", f"/rooms/{room_id}/context/{q(hidden)}", who=self.bob)
        resp = await self.ok("GET", f"/rooms/{room_id}/context/{q(seen)}", who=self.bob)
        self.assertNotIn("before bob", self.bodies(resp["events_before"]))
        # Someone who never joined a non-world-readable room cannot read it at all.
        await self.refused(403, "M_FORBIDDEN", "GET", f"/rooms/{room_id}/context/{q(seen)}", who=self.carol)

    async def test_world_readable_room(self):
        room_id = await self.create({"preset": "public_chat", "initial_state": [
            {"type": "m.room.history_visibility", "state_key": "", "content": {"history_visibility": "world_readable"}}]})
        event_id = await self.send(room_id, "for everyone")
        resp = await self.ok("GET", f"/rooms/{room_id}/context/{q(event_id)}", who=self.carol)
        self.assertEqual(resp["event"]["content"]["body"], "for everyone")

    async def test_bad_requests(self):
        room_id, ids = await self.room_with_messages(2)
        await self.refused(404, "M_NOT_FOUND", "GET", f"/rooms/{room_id}/context/{q('$nope')}")
        await self.refused(404, "M_NOT_FOUND", "GET", f"/rooms/!nope:test.local/context/{q(ids[0])}")
        other = await self.create()
        await self.refused(404, "M_NOT_FOUND", "GET", f"/rooms/{other}/context/{q(ids[0])}")
        await self.refused(400, "M_INVALID_PARAM", "GET", f"/rooms/{room_id}/context/{q(ids[0])}?limit=x")
        await self.refused(400, "M_INVALID_PARAM", "GET", f"/rooms/{room_id}/context/{q(ids[0])}?limit=-1")
        await self.refused(400, "M_NOT_JSON", "GET", f"/rooms/{room_id}/context/{q(ids[0])}?filter=%7B")
        await self.refused(401, "M_MISSING_TOKEN", "GET", f"/rooms/{room_id}/context/{q(ids[0])}", token=None)


class TimestampToEventTests(RoomsTestCase):
    async def ts_of(self, room_id: str, event_id: str) -> int:
        return (await self.ok("GET", f"/rooms/{room_id}/event/{q(event_id)}"))["origin_server_ts"]

    async def lookup(self, room_id: str, ts: int, direction: str, who=None) -> tuple[int, dict]:
        return await self.req("GET", f"/rooms/{room_id}/timestamp_to_event?ts={ts}&dir={direction}", who=who, prefix=V1)

    async def test_closest_event_in_each_direction(self):
        room_id = await self.create({"preset": "public_chat"})
        first = await self.send(room_id, "first")
        first_ts = await self.ts_of(room_id, first)
        code, resp = await self.lookup(room_id, first_ts, "f")
        self.assertEqual(code, 200, resp)
        self.assertEqual(resp["origin_server_ts"], first_ts)
        self.assertGreaterEqual(resp["origin_server_ts"], first_ts)
        code, resp = await self.lookup(room_id, first_ts + 10_000_000, "b")
        self.assertEqual(code, 200, resp)
        last = (await self.ok("GET", f"/rooms/{room_id}/messages?dir=b&limit=1"))["chunk"][0]
        self.assertEqual(resp["event_id"], last["event_id"])
        code, resp = await self.lookup(room_id, 0, "f")
        self.assertEqual(code, 200)
        create = await self.ok("GET", f"/rooms/{room_id}/state/m.room.create/?format=event", spec=False)
        self.assertEqual(resp["event_id"], create["event_id"])

    async def test_nothing_found(self):
        room_id = await self.create()
        first = await self.send(room_id, "first")
        ts = await self.ts_of(room_id, first)
        code, resp = await self.lookup(room_id, ts + 10_000_000, "f")
        self.assertEqual((code, resp["errcode"]), (404, "M_NOT_FOUND"))
        code, resp = await self.lookup(room_id, 0, "b")
        self.assertEqual((code, resp["errcode"]), (404, "M_NOT_FOUND"))

    async def test_refusals(self):
        room_id = await self.create({"preset": "private_chat"})
        code, resp = await self.lookup(room_id, 0, "f", who=self.bob)
        self.assertEqual((code, resp["errcode"]), (403, "M_FORBIDDEN"))
        code, resp = await self.lookup("!nope:test.local", 0, "f")
        self.assertEqual((code, resp["errcode"]), (404, "M_NOT_FOUND"))
        for query, errcode in (("dir=f", "M_MISSING_PARAM"), ("ts=1", "M_MISSING_PARAM"), ("ts=x&dir=f", "M_INVALID_PARAM"),
                               ("ts=1&dir=up", "M_INVALID_PARAM")):
            code, resp = await self.req("GET", f"/rooms/{room_id}/timestamp_to_event?{query}", prefix=V1)
            self.assertEqual((code, resp["errcode"]), (400, errcode), query)
        # Not a v3 endpoint.
        code, resp = await self.req("GET", f"/rooms/{room_id}/timestamp_to_event?ts=0&dir=f", spec=False)
        self.assertEqual((code, resp["errcode"]), (404, "M_UNRECOGNIZED"))
