"""``GET /sync`` over real HTTP: every section, gaps, lazy-loading, filters, long-polling, membership
sections, account data; every 200 response is checked against the spec's OpenAPI schema."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.parse
from typing import Any

from twisted.internet import reactor, threads
from twisted.internet.defer import ensureDeferred
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase

from tests.support.homeserver import postgres_database, start_homeserver
from tests.support.spec import spec_problems

try:
    import nio
except ImportError:  # pragma: no cover - the test extra installs it
    nio = None

V3 = "/_matrix/client/v3"
FAST = {"bcrypt_rounds": 4, "rc_message": {"per_second": 1000, "burst_count": 1000}}

def sleep(seconds: float) -> Any:
    return deferLater(reactor, seconds, lambda: None)


def bodies(events: list[dict]) -> list[str]:
    return [e["content"].get("body") for e in events if e["type"] == "m.room.message"]


class SyncTestCase(TestCase):
    """A server with alice, bob and carol, and helpers."""

    database: Any = None

    async def setUp(self):
        extra = {"database": postgres_database(self)} if self.database == "postgres" else {}
        self.hs = await start_homeserver(self, **FAST, **extra)
        self.alice = await self.hs.register_user("alice")
        self.bob = await self.hs.register_user("bob")
        self.carol = await self.hs.register_user("carol")

    async def req(self, method, path, body=None, who=None):
        return await self.hs.request(method, V3 + path, body, token=(who or self.alice)["access_token"])

    async def ok(self, method, path, body=None, who=None):
        code, resp = await self.req(method, path, body, who)
        self.assertEqual(code, 200, (method, path, resp))
        return resp

    async def create(self, body=None, who=None) -> str:
        return (await self.ok("POST", "/createRoom", body or {}, who))["room_id"]

    async def send(self, room_id, body, who=None, event_type="m.room.message") -> str:
        txn = f"t{time.monotonic_ns()}"
        resp = await self.ok("PUT", f"/rooms/{room_id}/send/{event_type}/{txn}", {"msgtype": "m.text", "body": body}, who)
        return resp["event_id"]

    async def sync(self, who=None, expect=200, validate=True, **params) -> dict:
        query = {k: (json.dumps(v) if isinstance(v, dict) else str(v).lower() if isinstance(v, bool) else str(v))
                 for k, v in params.items() if v is not None}
        path = V3 + "/sync" + ("?" + urllib.parse.urlencode(query) if query else "")
        code, resp = await self.hs.request("GET", path, token=(who or self.alice)["access_token"])
        self.assertEqual(code, expect, resp)
        if code == 200 and validate:
            self.assertEqual(spec_problems("GET", path, code, resp), [])
        return resp


class InitialSyncTests(SyncTestCase):
    async def test_sections_of_an_initial_sync(self):
        room_id = await self.create({"name": "Room", "topic": "t"})
        for i in range(3):
            await self.send(room_id, f"m{i}")
        resp = await self.sync()
        for key in ("next_batch", "rooms", "presence", "account_data", "to_device", "device_lists",
                    "device_one_time_keys_count", "device_unused_fallback_key_types"):
            self.assertIn(key, resp)
        self.assertEqual(resp["to_device"], {"events": []})
        self.assertEqual(resp["device_lists"], {"changed": [], "left": []})
        room = resp["rooms"]["join"][room_id]
        self.assertEqual(room["summary"], {"m.joined_member_count": 1, "m.invited_member_count": 0})
        timeline = room["timeline"]
        self.assertEqual(len(timeline["events"]), 10)
        self.assertTrue(timeline["limited"])
        self.assertEqual(bodies(timeline["events"])[-3:], ["m0", "m1", "m2"])
        for event in timeline["events"] + room["state"]["events"]:
            self.assertNotIn("room_id", event)
            for key in ("hashes", "signatures", "auth_events", "prev_events", "depth"):
                self.assertNotIn(key, event)
        self.assertIn("transaction_id", timeline["events"][-1]["unsigned"])
        # state + timeline is the whole room, and state is the state at the start of the timeline.
        state_types = {(e["type"], e["state_key"]) for e in room["state"]["events"]}
        timeline_state = {(e["type"], e["state_key"]) for e in timeline["events"] if "state_key" in e}
        self.assertIn(("m.room.create", ""), state_types)
        self.assertFalse(state_types & timeline_state)
        self.assertEqual(state_types | timeline_state, {
            ("m.room.create", ""), ("m.room.member", self.alice["user_id"]), ("m.room.power_levels", ""),
            ("m.room.join_rules", ""), ("m.room.history_visibility", ""), ("m.room.guest_access", ""),
            ("m.room.name", ""), ("m.room.topic", ""),
        })
        self.assertEqual(room["ephemeral"], {"events": []})
        self.assertEqual(room["account_data"], {"events": []})
        self.assertEqual(room["unread_notifications"], {"highlight_count": 0, "notification_count": 0})

    async def test_prev_batch_pages_back_with_messages(self):
        room_id = await self.create()
        for i in range(15):
            await self.send(room_id, f"m{i}")
        timeline = (await self.sync())["rooms"]["join"][room_id]["timeline"]
        self.assertEqual(bodies(timeline["events"]), [f"m{i}" for i in range(5, 15)])
        resp = await self.ok("GET", f"/rooms/{room_id}/messages?dir=b&limit=5&from={timeline['prev_batch']}")
        self.assertEqual(bodies(resp["chunk"]), ["m4", "m3", "m2", "m1", "m0"])

    async def test_small_room_is_not_limited(self):
        room_id = await self.create({"preset": "private_chat"})
        resp = await self.sync(filter={"room": {"timeline": {"limit": 50}}})
        room = resp["rooms"]["join"][room_id]
        self.assertFalse(room["timeline"]["limited"])
        # Everything is in the timeline, so the state at its start is empty (spec "Syncing" note).
        self.assertEqual(room["state"]["events"], [])
        self.assertEqual(room["timeline"]["events"][0]["type"], "m.room.create")

    async def test_summary_heroes_for_an_unnamed_room(self):
        room_id = await self.create({"preset": "private_chat", "invite": [self.bob["user_id"], self.carol["user_id"]]})
        await self.ok("POST", f"/rooms/{room_id}/join", {}, who=self.bob)
        summary = (await self.sync())["rooms"]["join"][room_id]["summary"]
        self.assertEqual(summary["m.joined_member_count"], 2)
        self.assertEqual(summary["m.invited_member_count"], 1)
        # By the stream ordering of their membership: carol's invite is older than bob's join.
        self.assertEqual(summary["m.heroes"], [self.carol["user_id"], self.bob["user_id"]])

    async def test_history_visibility_applies(self):
        room_id = await self.create({"preset": "public_chat", "initial_state": [
            {"type": "m.room.history_visibility", "state_key": "", "content": {"history_visibility": "joined"}}]})
        await self.send(room_id, "before")
        await self.ok("POST", f"/rooms/{room_id}/join", {}, who=self.bob)
        await self.send(room_id, "after")
        room = (await self.sync(who=self.bob))["rooms"]["join"][room_id]
        self.assertEqual(bodies(room["timeline"]["events"]), ["after"])
        self.assertIn(self.bob["user_id"], [e.get("state_key") for e in room["timeline"]["events"]])

    async def test_use_state_after(self):
        room_id = await self.create({"name": "n"})
        await self.send(room_id, "x")
        room = (await self.sync(use_state_after=True))["rooms"]["join"][room_id]
        self.assertNotIn("state", room)
        # The state at the end of the timeline: all of it, timeline state events included.
        types = {e["type"] for e in room["state_after"]["events"]}
        self.assertTrue({"m.room.create", "m.room.name", "m.room.member", "m.room.power_levels"} <= types)

    async def test_event_fields_and_federation_format(self):
        room_id = await self.create()
        await self.send(room_id, "x")
        # (Not a valid ClientEvent any more, which is what the client asked for.)
        room = (await self.sync(filter={"event_fields": ["type", "content.body"]}, validate=False))["rooms"]["join"][room_id]
        self.assertEqual(room["timeline"]["events"][-1], {"type": "m.room.message", "content": {"body": "x"}})
        room = (await self.hs.request("GET", V3 + "/sync?filter=" + urllib.parse.quote(
            json.dumps({"event_format": "federation"})), token=self.alice["access_token"]))[1]["rooms"]["join"][room_id]
        last = room["timeline"]["events"][-1]
        self.assertIn("hashes", last)
        self.assertIn("signatures", last)

    async def test_bad_parameters(self):
        for params, errcode in (
            ({"since": "garbage"}, "M_INVALID_PARAM"),
            ({"timeout": "soon"}, "M_INVALID_PARAM"),
            ({"timeout": "-5"}, "M_INVALID_PARAM"),
            ({"full_state": "yes"}, "M_INVALID_PARAM"),
            ({"set_presence": "busy"}, "M_INVALID_PARAM"),
            ({"filter": "12345"}, "M_INVALID_PARAM"),
            ({"filter": "{not json"}, "M_NOT_JSON"),
            ({"filter": json.dumps({"room": {"timeline": {"limit": "ten"}}})}, "M_BAD_JSON"),
        ):
            code, resp = await self.hs.request(
                "GET", V3 + "/sync?" + urllib.parse.urlencode(params), token=self.alice["access_token"]
            )
            self.assertEqual((code, resp["errcode"]), (400, errcode), params)
        code, resp = await self.hs.request("GET", V3 + "/sync")
        self.assertEqual((code, resp["errcode"]), (401, "M_MISSING_TOKEN"))

    async def test_set_presence_values(self):
        for value in ("online", "unavailable", "offline"):
            await self.sync(set_presence=value)


class IncrementalSyncTests(SyncTestCase):
    async def test_only_new_events(self):
        room_id = await self.create()
        other = await self.create()
        first = await self.sync()
        empty = await self.sync(since=first["next_batch"])
        self.assertEqual(empty["rooms"], {"join": {}, "invite": {}, "leave": {}, "knock": {}})
        event_id = await self.send(room_id, "new")
        resp = await self.sync(since=first["next_batch"])
        self.assertEqual(list(resp["rooms"]["join"]), [room_id])
        room = resp["rooms"]["join"][room_id]
        self.assertEqual([e["event_id"] for e in room["timeline"]["events"]], [event_id])
        self.assertFalse(room["timeline"]["limited"])
        self.assertEqual(room["state"]["events"], [])
        self.assertNotIn(other, resp["rooms"]["join"])
        # And the next one is empty again.
        again = await self.sync(since=resp["next_batch"])
        self.assertEqual(again["rooms"]["join"], {})
        # next_batch works as a /messages token.
        page = await self.ok("GET", f"/rooms/{room_id}/messages?dir=b&limit=1&from={resp['next_batch']}")
        self.assertEqual(page["chunk"][0]["event_id"], event_id)

    async def test_gap_is_limited_with_state_delta_and_prev_batch(self):
        room_id = await self.create({"name": "old name"})
        since = (await self.sync())["next_batch"]
        for i in range(5):
            await self.send(room_id, f"gap{i}")
        await self.ok("PUT", f"/rooms/{room_id}/state/m.room.name", {"name": "new name"})
        for i in range(15):
            await self.send(room_id, f"m{i}")
        room = (await self.sync(since=since))["rooms"]["join"][room_id]
        timeline = room["timeline"]
        self.assertTrue(timeline["limited"])
        self.assertEqual(bodies(timeline["events"]), [f"m{i}" for i in range(5, 15)])
        # The state delta of the gap: the name changed in it.
        names = [e for e in room["state"]["events"] if e["type"] == "m.room.name"]
        self.assertEqual([e["content"] for e in names], [{"name": "new name"}])
        # Filling the gap with /messages from prev_batch back to since.
        resp = await self.ok("GET", f"/rooms/{room_id}/messages?dir=b&limit=100&from={timeline['prev_batch']}&to={since}")
        self.assertEqual(bodies(resp["chunk"]), [f"m{i}" for i in reversed(range(5))] + [f"gap{i}" for i in reversed(range(5))])
        self.assertIn("m.room.name", [e["type"] for e in resp["chunk"]])

    async def test_not_limited_gap_free_state_changes_are_in_the_timeline(self):
        room_id = await self.create()
        since = (await self.sync())["next_batch"]
        await self.ok("PUT", f"/rooms/{room_id}/state/m.room.topic", {"topic": "new"})
        room = (await self.sync(since=since))["rooms"]["join"][room_id]
        self.assertEqual([e["type"] for e in room["timeline"]["events"]], ["m.room.topic"])
        self.assertEqual(room["state"]["events"], [])
        room = (await self.sync(since=since, use_state_after=True))["rooms"]["join"][room_id]
        self.assertEqual([e["type"] for e in room["state_after"]["events"]], ["m.room.topic"])

    async def test_full_state(self):
        room_id = await self.create({"name": "n"})
        since = (await self.sync())["next_batch"]
        resp = await self.sync(since=since, full_state=True, timeout=10000)
        room = resp["rooms"]["join"][room_id]
        self.assertEqual(room["timeline"]["events"], [])
        self.assertTrue({"m.room.create", "m.room.name", "m.room.member"} <= {e["type"] for e in room["state"]["events"]})

    async def test_filtered_out_traffic_is_not_a_room_update(self):
        room_id = await self.create()
        since = (await self.sync())["next_batch"]
        await self.send(room_id, "x")
        resp = await self.sync(since=since, filter={"room": {"timeline": {"types": ["m.room.topic"]}}})
        self.assertEqual(resp["rooms"]["join"], {})

    async def test_ignored_users(self):
        room_id = await self.create({"preset": "public_chat"})
        await self.ok("POST", f"/rooms/{room_id}/join", {}, who=self.bob)
        await self.ok("PUT", f"/user/{urllib.parse.quote(self.alice['user_id'])}/account_data/m.ignored_user_list",
                      {"ignored_users": {self.bob["user_id"]: {}}})
        since = (await self.sync())["next_batch"]
        await self.send(room_id, "from bob", who=self.bob)
        await self.send(room_id, "from alice")
        room = (await self.sync(since=since))["rooms"]["join"][room_id]
        self.assertEqual(bodies(room["timeline"]["events"]), ["from alice"])
        private = await self.create({"preset": "private_chat"}, who=self.bob)
        await self.ok("POST", f"/rooms/{private}/invite", {"user_id": self.alice["user_id"]}, who=self.bob)
        self.assertNotIn(private, (await self.sync())["rooms"]["invite"])


class MembershipSectionTests(SyncTestCase):
    async def test_invite_join_leave(self):
        room_id = await self.create({"preset": "private_chat", "name": "Secret", "topic": "hush"})
        await self.send(room_id, "before the invite")
        since = (await self.sync(who=self.bob))["next_batch"]
        await self.ok("POST", f"/rooms/{room_id}/invite", {"user_id": self.bob["user_id"]})

        # Invite: stripped state incl. m.room.create and the invite itself, in initial and incremental syncs.
        for resp in (await self.sync(who=self.bob), await self.sync(who=self.bob, since=since)):
            self.assertEqual(list(resp["rooms"]["invite"]), [room_id])
            events = resp["rooms"]["invite"][room_id]["invite_state"]["events"]
            for event in events:
                self.assertLessEqual(set(event), {"type", "state_key", "sender", "content"})
            by_type = {e["type"]: e for e in events}
            self.assertTrue({"m.room.create", "m.room.name", "m.room.topic", "m.room.join_rules", "m.room.member"} <= set(by_type))
            self.assertEqual(by_type["m.room.member"]["state_key"], self.bob["user_id"])
            self.assertEqual(by_type["m.room.member"]["content"]["membership"], "invite")
            self.assertEqual(resp["rooms"]["join"], {})
        since = (await self.sync(who=self.bob))["next_batch"]

        # Join: the room appears with its full state in the incremental sync.
        await self.ok("POST", f"/rooms/{room_id}/join", {}, who=self.bob)
        resp = await self.sync(who=self.bob, since=since)
        self.assertEqual(resp["rooms"]["invite"], {})
        room = resp["rooms"]["join"][room_id]
        state_types = {e["type"] for e in room["state"]["events"]} | {
            e["type"] for e in room["timeline"]["events"] if "state_key" in e}
        self.assertTrue({"m.room.create", "m.room.name", "m.room.topic", "m.room.power_levels"} <= state_types)
        self.assertIn("before the invite", bodies(room["timeline"]["events"]))  # shared history
        since = resp["next_batch"]

        # Leave: the timeline up to the leave, in the leave section.
        await self.send(room_id, "while bob is here")
        await self.ok("POST", f"/rooms/{room_id}/leave", {}, who=self.bob)
        await self.send(room_id, "after bob left")
        resp = await self.sync(who=self.bob, since=since)
        self.assertEqual(resp["rooms"]["join"], {})
        left = resp["rooms"]["leave"][room_id]
        self.assertEqual(bodies(left["timeline"]["events"]), ["while bob is here"])
        self.assertEqual(left["timeline"]["events"][-1]["type"], "m.room.member")
        self.assertEqual(left["timeline"]["events"][-1]["content"]["membership"], "leave")

        # Initial syncs show the left room only with include_leave.
        self.assertEqual((await self.sync(who=self.bob))["rooms"]["leave"], {})
        resp = await self.sync(who=self.bob, filter={"room": {"include_leave": True}})
        left = resp["rooms"]["leave"][room_id]
        self.assertEqual(left["timeline"]["events"][-1]["content"]["membership"], "leave")
        self.assertNotIn("after bob left", bodies(left["timeline"]["events"]))
        self.assertIn(("m.room.name", ""), {(e["type"], e["state_key"]) for e in left["state"]["events"]})

    async def test_rejected_invite_shows_no_state(self):
        room_id = await self.create({"preset": "private_chat", "name": "Secret"})
        await self.ok("POST", f"/rooms/{room_id}/invite", {"user_id": self.bob["user_id"]})
        since = (await self.sync(who=self.bob))["next_batch"]
        await self.ok("POST", f"/rooms/{room_id}/leave", {}, who=self.bob)
        left = (await self.sync(who=self.bob, since=since))["rooms"]["leave"][room_id]
        self.assertEqual(left["state"]["events"], [])
        self.assertEqual([e["content"]["membership"] for e in left["timeline"]["events"]], ["leave"])
        left = (await self.sync(who=self.bob, filter={"room": {"include_leave": True}}))["rooms"]["leave"][room_id]
        self.assertEqual(left["state"]["events"], [])

    async def test_knock(self):
        room_id = await self.create({"room_version": "10", "initial_state": [
            {"type": "m.room.join_rules", "state_key": "", "content": {"join_rule": "knock"}}], "name": "Knock"})
        since = (await self.sync(who=self.bob))["next_batch"]
        code, resp = await self.req("POST", f"/knock/{room_id}", {"reason": "let me in"}, who=self.bob)
        self.assertEqual(code, 200, resp)
        for resp in (await self.sync(who=self.bob), await self.sync(who=self.bob, since=since)):
            events = resp["rooms"]["knock"][room_id]["knock_state"]["events"]
            by_type = {e["type"]: e for e in events}
            self.assertTrue({"m.room.create", "m.room.name", "m.room.join_rules"} <= set(by_type))
            self.assertEqual(by_type["m.room.member"]["content"]["membership"], "knock")


class LazyLoadingTests(SyncTestCase):
    LAZY = {"room": {"state": {"lazy_load_members": True}, "timeline": {"limit": 2}}}

    async def setUp(self):
        await super().setUp()
        self.room_id = await self.create({"preset": "public_chat", "name": "Lazy"})
        for who in (self.bob, self.carol):
            await self.ok("POST", f"/rooms/{self.room_id}/join", {}, who=who)
        await self.send(self.room_id, "one", who=self.bob)
        await self.send(self.room_id, "two", who=self.bob)

    def members(self, room) -> set[str]:
        return {e["state_key"] for e in room["state"]["events"] if e["type"] == "m.room.member"}

    async def test_state_has_the_senders_and_the_user(self):
        room = (await self.sync(filter=self.LAZY))["rooms"]["join"][self.room_id]
        self.assertEqual(self.members(room), {self.bob["user_id"], self.alice["user_id"]})
        self.assertIn("m.room.name", {e["type"] for e in room["state"]["events"]})
        # Without lazy-loading: every member (in the state, or in the timeline for recent joins).
        room = (await self.sync())["rooms"]["join"][self.room_id]
        joins = {e["state_key"] for e in room["timeline"]["events"] if e["type"] == "m.room.member"}
        self.assertEqual(self.members(room) | joins, {self.alice["user_id"], self.bob["user_id"], self.carol["user_id"]})

    async def test_redundant_members(self):
        resp = await self.sync(filter=self.LAZY)
        await self.send(self.room_id, "three", who=self.bob)
        await self.send(self.room_id, "four", who=self.bob)
        await self.send(self.room_id, "five", who=self.carol)
        room = (await self.sync(filter=self.LAZY, since=resp["next_batch"]))["rooms"]["join"][self.room_id]
        self.assertEqual(bodies(room["timeline"]["events"]), ["four", "five"])
        # Bob's member event was sent already; carol's was not.
        self.assertEqual(self.members(room), {self.carol["user_id"]})
        with_redundant = {"room": {"state": {"lazy_load_members": True, "include_redundant_members": True},
                                   "timeline": {"limit": 2}}}
        room = (await self.sync(filter=with_redundant, since=resp["next_batch"]))["rooms"]["join"][self.room_id]
        self.assertEqual(self.members(room), {self.bob["user_id"], self.carol["user_id"]})

    async def test_retried_request_gets_members_again(self):
        first = await self.sync(filter=self.LAZY)
        await self.send(self.room_id, "three", who=self.bob)
        lost = await self.sync(filter=self.LAZY, since=first["next_batch"])
        self.assertEqual(self.members(lost["rooms"]["join"][self.room_id]), set())
        # The client never got `lost` and asks again with the same token. Redundant or not, the
        # member was in the first response: nothing more is owed, but nothing may be missing either.
        again = await self.sync(filter=self.LAZY, since=first["next_batch"])
        self.assertLessEqual(self.members(again["rooms"]["join"][self.room_id]), {self.bob["user_id"]})
        # A sync from a token older than the memory (a fresh device state) gets them all.
        cold = await self.sync(filter=self.LAZY, since="s1")
        self.assertIn(self.bob["user_id"], self.members(cold["rooms"]["join"][self.room_id]))

    async def test_member_changes_in_a_gap_are_always_sent(self):
        resp = await self.sync(filter=self.LAZY)
        dave = await self.hs.register_user("dave")
        await self.ok("POST", f"/rooms/{self.room_id}/join", {}, who=dave)
        for i in range(4):
            await self.send(self.room_id, f"m{i}", who=self.bob)
        room = (await self.sync(filter=self.LAZY, since=resp["next_batch"]))["rooms"]["join"][self.room_id]
        self.assertTrue(room["timeline"]["limited"])
        self.assertEqual(self.members(room), {dave["user_id"]})


class FilterTests(SyncTestCase):
    async def test_stored_filter_and_wildcards(self):
        room_id = await self.create({"name": "x"})
        await self.send(room_id, "hello")
        await self.send(room_id, "ping", event_type="org.example.ping")
        user = urllib.parse.quote(self.alice["user_id"])
        filter_id = (await self.ok("POST", f"/user/{user}/filter", {
            "room": {"timeline": {"types": ["m.room.mess*"], "limit": 5}, "state": {"types": ["m.room.n*"]}},
        }))["filter_id"]
        room = (await self.sync(filter=filter_id))["rooms"]["join"][room_id]
        self.assertEqual([e["type"] for e in room["timeline"]["events"]], ["m.room.message"])
        self.assertEqual({e["type"] for e in room["state"]["events"]}, {"m.room.name"})
        # not_types and senders, inline.
        room = (await self.sync(filter={"room": {"timeline": {"not_types": ["m.room.*", "*.ping"]}}}))
        self.assertEqual(room["rooms"]["join"][room_id]["timeline"]["events"], [])
        room = (await self.sync(filter={"room": {"timeline": {"not_types": ["m.room.*"]}}}))
        self.assertEqual([e["type"] for e in room["rooms"]["join"][room_id]["timeline"]["events"]], ["org.example.ping"])
        room = (await self.sync(filter={"room": {"timeline": {"senders": [self.bob["user_id"]]}}}))
        self.assertEqual(room["rooms"]["join"][room_id]["timeline"]["events"], [])

    async def test_rooms_and_not_rooms(self):
        a = await self.create()
        b = await self.create()
        self.assertEqual(set((await self.sync(filter={"room": {"rooms": [a]}}))["rooms"]["join"]), {a})
        self.assertEqual(set((await self.sync(filter={"room": {"not_rooms": [a]}}))["rooms"]["join"]), {b})
        self.assertEqual(set((await self.sync(filter={"room": {"rooms": [a, b], "not_rooms": [b]}}))["rooms"]["join"]), {a})

    async def test_account_data_and_presence_filters(self):
        user = urllib.parse.quote(self.alice["user_id"])
        await self.ok("PUT", f"/user/{user}/account_data/org.example.a", {"a": 1})
        await self.ok("PUT", f"/user/{user}/account_data/org.example.b", {"b": 1})
        resp = await self.sync(filter={"account_data": {"types": ["org.example.a"]}, "presence": {"types": []}})
        self.assertEqual([e["type"] for e in resp["account_data"]["events"]], ["org.example.a"])
        self.assertEqual(resp["presence"]["events"], [])


class AccountDataTests(SyncTestCase):
    async def test_global_room_account_data_and_tags(self):
        room_id = await self.create()
        user = urllib.parse.quote(self.alice["user_id"])
        since = (await self.sync())["next_batch"]
        await self.ok("PUT", f"/user/{user}/account_data/org.example.settings", {"theme": "dark"})
        await self.ok("PUT", f"/user/{user}/rooms/{room_id}/account_data/org.example.room", {"x": 1})
        await self.ok("PUT", f"/user/{user}/rooms/{room_id}/tags/m.favourite", {"order": 0.5})
        resp = await self.sync(since=since)
        self.assertIn({"type": "org.example.settings", "content": {"theme": "dark"}}, resp["account_data"]["events"])
        room = resp["rooms"]["join"][room_id]
        self.assertEqual(room["timeline"]["events"], [])
        by_type = {e["type"]: e["content"] for e in room["account_data"]["events"]}
        self.assertEqual(by_type["org.example.room"], {"x": 1})
        self.assertEqual(by_type["m.tag"], {"tags": {"m.favourite": {"order": 0.5}}})
        # In an initial sync too.
        resp = await self.sync()
        by_type = {e["type"]: e["content"] for e in resp["rooms"]["join"][room_id]["account_data"]["events"]}
        self.assertEqual(by_type["m.tag"], {"tags": {"m.favourite": {"order": 0.5}}})

    async def test_account_data_wakes_a_waiting_sync(self):
        since = (await self.sync())["next_batch"]
        user = urllib.parse.quote(self.alice["user_id"])
        started = time.monotonic()
        waiting = ensureDeferred(self.sync(since=since, timeout=10000))
        await sleep(0.2)
        await self.ok("PUT", f"/user/{user}/account_data/org.example.x", {"v": 1})
        resp = await waiting
        self.assertLess(time.monotonic() - started, 5)
        self.assertEqual([e["type"] for e in resp["account_data"]["events"]], ["org.example.x"])


class LongPollTests(SyncTestCase):
    async def test_a_send_wakes_a_waiting_sync(self):
        room_id = await self.create({"preset": "public_chat"})
        await self.ok("POST", f"/rooms/{room_id}/join", {}, who=self.bob)
        since = (await self.sync())["next_batch"]
        started = time.monotonic()
        waiting = ensureDeferred(self.sync(since=since, timeout=20000))
        await sleep(0.3)
        self.assertFalse(waiting.called)
        await self.send(room_id, "wake up", who=self.bob)
        resp = await waiting
        elapsed = time.monotonic() - started
        self.assertLess(elapsed, 5)
        self.assertEqual(bodies(resp["rooms"]["join"][room_id]["timeline"]["events"]), ["wake up"])

    async def test_timeout_returns_empty(self):
        await self.create()
        since = (await self.sync())["next_batch"]
        started = time.monotonic()
        resp = await self.sync(since=since, timeout=600)
        elapsed = time.monotonic() - started
        self.assertGreaterEqual(elapsed, 0.55)
        self.assertLess(elapsed, 3)
        self.assertEqual(resp["rooms"], {"join": {}, "invite": {}, "leave": {}, "knock": {}})
        self.assertEqual(resp["account_data"]["events"], [])

    async def test_irrelevant_traffic_does_not_end_the_wait(self):
        mine = await self.create()
        theirs = await self.create(who=self.bob)
        since = (await self.sync(filter={"room": {"timeline": {"types": ["m.room.topic"]}}, "presence": {"types": []}}))[
            "next_batch"]
        started = time.monotonic()
        waiting = ensureDeferred(self.sync(
            since=since, timeout=1500, filter={"room": {"timeline": {"types": ["m.room.topic"]}}, "presence": {"types": []}}
        ))
        await sleep(0.2)
        await self.send(theirs, "not alice's room", who=self.bob)  # does not even wake alice
        await self.send(mine, "filtered out")  # wakes alice, but there is nothing for her filter
        await sleep(0.2)
        self.assertFalse(waiting.called)
        resp = await waiting
        elapsed = time.monotonic() - started
        self.assertGreaterEqual(elapsed, 1.4)
        self.assertEqual(resp["rooms"]["join"], {})
        # The token moved past the filtered-out traffic.
        self.assertNotEqual(resp["next_batch"], since)

    async def test_invite_wakes_the_invitee(self):
        room_id = await self.create({"preset": "private_chat"})
        since = (await self.sync(who=self.bob))["next_batch"]
        waiting = ensureDeferred(self.sync(who=self.bob, since=since, timeout=20000))
        await sleep(0.2)
        await self.ok("POST", f"/rooms/{room_id}/invite", {"user_id": self.bob["user_id"]})
        resp = await waiting
        self.assertIn(room_id, resp["rooms"]["invite"])

    async def test_disconnect_ends_the_wait(self):
        import treq

        since = (await self.sync())["next_batch"]
        d = treq.get(self.hs.base_url + V3 + f"/sync?since={since}&timeout=30000",
                     headers={b"Authorization": [b"Bearer " + self.alice["access_token"].encode()]}, persistent=False)
        await sleep(0.3)
        d.cancel()
        try:
            await d
        except Exception:
            pass
        await sleep(0.2)
        # The server is not holding the request any more (shutdown would otherwise wait for it).
        self.assertEqual(self.hs.components.notifier.waiting_users(), 0)


class PostgresSyncTests(IncrementalSyncTests):
    """The incremental tests again on PostgreSQL (skipped without it)."""

    database = "postgres"


class NioEndToEndTests(SyncTestCase):
    async def test_nio_clients_see_each_other_through_sync(self):
        if nio is None:
            self.skipTest("matrix-nio is not installed")
        room_id = await self.create({"preset": "public_chat", "name": "nio"})
        await self.ok("POST", f"/rooms/{room_id}/join", {}, who=self.bob)
        base_url = self.hs.base_url

        async def scenario() -> dict:
            alice = nio.AsyncClient(base_url, self.alice["user_id"], device_id=self.alice["device_id"])
            alice.access_token = self.alice["access_token"]
            bob = nio.AsyncClient(base_url, self.bob["user_id"], device_id=self.bob["device_id"])
            bob.access_token = self.bob["access_token"]
            try:
                first = await bob.sync(timeout=0, full_state=True)
                assert isinstance(first, nio.SyncResponse), first
                assert room_id in bob.rooms, list(bob.rooms)
                seen: list[str] = []

                async def on_message(room: Any, event: Any) -> None:
                    seen.append(event.body)

                bob.add_event_callback(on_message, nio.RoomMessageText)
                waiting = asyncio.ensure_future(bob.sync(timeout=15000, since=first.next_batch))
                await asyncio.sleep(0.3)
                sent = await alice.room_send(room_id, "m.room.message", {"msgtype": "m.text", "body": "hi from nio"})
                assert isinstance(sent, nio.RoomSendResponse), sent
                second = await asyncio.wait_for(waiting, 10)
                assert isinstance(second, nio.SyncResponse), second
                return {
                    "seen": seen,
                    "room_name": bob.rooms[room_id].display_name,
                    "members": sorted(bob.rooms[room_id].users),
                }
            finally:
                await alice.close()
                await bob.close()

        result = await threads.deferToThread(asyncio.run, scenario())
        self.assertEqual(result["seen"], ["hi from nio"])
        self.assertEqual(result["room_name"], "nio")
        self.assertEqual(result["members"], sorted([self.alice["user_id"], self.bob["user_id"]]))


class EphemeralTests(SyncTestCase):
    async def test_typing_and_receipts_reach_the_ephemeral_section(self):
        room_id = await self.create({"preset": "public_chat"})
        await self.ok("POST", f"/rooms/{room_id}/join", {}, who=self.bob)
        event_id = await self.send(room_id, "read me")
        since = (await self.sync())["next_batch"]
        waiting = ensureDeferred(self.sync(since=since, timeout=20000))
        await sleep(0.2)
        bob = urllib.parse.quote(self.bob["user_id"])
        await self.ok("PUT", f"/rooms/{room_id}/typing/{bob}", {"typing": True, "timeout": 30000}, who=self.bob)
        resp = await waiting
        room = resp["rooms"]["join"][room_id]
        self.assertEqual(room["timeline"]["events"], [])
        typing = [e for e in room["ephemeral"]["events"] if e["type"] == "m.typing"]
        self.assertEqual(typing[0]["content"]["user_ids"], [self.bob["user_id"]])
        await self.ok("POST", f"/rooms/{room_id}/receipt/m.read/{event_id}", {}, who=self.bob)
        room = (await self.sync(since=resp["next_batch"]))["rooms"]["join"][room_id]
        receipts = [e for e in room["ephemeral"]["events"] if e["type"] == "m.receipt"]
        self.assertIn(self.bob["user_id"], receipts[0]["content"][event_id]["m.read"])
        # The ephemeral filter applies.
        room = (await self.sync(filter={"room": {"ephemeral": {"not_types": ["m.typing"]}}}))["rooms"]["join"][room_id]
        self.assertEqual({e["type"] for e in room["ephemeral"]["events"]}, {"m.receipt"})


class DatabaseWorkTests(SyncTestCase):
    """What /sync costs in database transactions: nothing when nothing is new, and not one per room."""

    async def setUp(self):
        await super().setUp()
        self.calls: list[str] = []
        db = self.hs.storage.db
        original = db.run_interaction

        def counting(desc, *args, **kwargs):
            self.calls.append(desc)
            return original(desc, *args, **kwargs)

        db.run_interaction = counting

    async def counted(self, **params) -> tuple[dict, list[str]]:
        del self.calls[:]
        resp = await self.sync(**params)
        # What /sync itself reads (not authentication, nor the presence update of set_presence).
        mine = ("sync_", "get_events", "get_state_groups", "get_txn_ids", "get_account_data", "get_changed_account_data")
        return resp, [c for c in self.calls if c.startswith(mine)]

    async def test_nothing_new_costs_nothing_and_other_rooms_one_query(self):
        rooms = [await self.create() for _ in range(5)]
        elsewhere = await self.create(who=self.bob)
        since = (await self.sync())["next_batch"]
        resp, calls = await self.counted(since=since)
        self.assertEqual(calls, [])
        await self.send(elsewhere, "not for alice", who=self.bob)
        resp, calls = await self.counted(since=since)
        self.assertEqual(resp["rooms"]["join"], {})
        self.assertEqual(calls, ["sync_changes"])
        await self.send(rooms[0], "for alice")
        resp, _ = await self.counted(since=resp["next_batch"])
        self.assertEqual(list(resp["rooms"]["join"]), [rooms[0]])

    async def test_initial_sync_work_does_not_grow_with_rooms(self):
        for _ in range(2):
            room_id = await self.create()
            await self.send(room_id, "x")
        _, few = await self.counted()
        for _ in range(8):
            room_id = await self.create()
            await self.send(room_id, "x")
        resp, many = await self.counted()
        self.assertEqual(len(resp["rooms"]["join"]), 10)
        self.assertEqual(sorted(few), sorted(many))


class LongRangeIncrementalTests(IncrementalSyncTests):
    """The incremental tests with every token taken as "long ago" (per-room probes instead of a range scan)."""

    async def setUp(self):
        from mxtwisted.storage import sync as sync_storage

        self.patch(sync_storage, "LONG_RANGE", 0)
        await super().setUp()


class PostgresInitialSyncTests(InitialSyncTests):
    database = "postgres"


class PostgresMembershipSectionTests(MembershipSectionTests):
    database = "postgres"


class PostgresLazyLoadingTests(LazyLoadingTests):
    database = "postgres"
