"""``POST /user/{userId}/filter`` and ``GET /user/{userId}/filter/{filterId}`` over real HTTP."""

from __future__ import annotations

import urllib.parse

from twisted.trial.unittest import TestCase

from tests.api.client.test_sync import spec_problems
from tests.support.homeserver import start_homeserver

V3 = "/_matrix/client/v3"

EXAMPLE = {
    "room": {
        "state": {"types": ["m.room.*"], "not_rooms": ["!726s6s6q:example.com"]},
        "timeline": {"limit": 10, "types": ["m.room.message"], "not_rooms": ["!726s6s6q:example.com"],
                     "not_senders": ["@spam:example.com"]},
        "ephemeral": {"types": ["m.receipt", "m.typing"], "not_rooms": ["!726s6s6q:example.com"],
                      "not_senders": ["@spam:example.com"]},
    },
    "presence": {"types": ["m.presence"], "not_senders": ["@alice:example.com"]},
    "event_format": "client",
    "event_fields": ["type", "content", "sender"],
}


class FilterEndpointTests(TestCase):
    async def setUp(self):
        self.hs = await start_homeserver(self, bcrypt_rounds=4)
        self.alice = await self.hs.register_user("alice")
        self.bob = await self.hs.register_user("bob")
        self.path = V3 + f"/user/{urllib.parse.quote(self.alice['user_id'])}/filter"

    async def post(self, body, who=None, path=None, raw=None):
        return await self.hs.request("POST", path or self.path, body, token=(who or self.alice)["access_token"], raw=raw)

    async def test_define_and_get(self):
        code, resp = await self.post(EXAMPLE)
        self.assertEqual(code, 200, resp)
        self.assertEqual(spec_problems("POST", self.path, code, resp), [])
        filter_id = resp["filter_id"]
        self.assertFalse(filter_id.startswith("{"))
        code, got = await self.hs.request("GET", f"{self.path}/{filter_id}", token=self.alice["access_token"])
        self.assertEqual((code, got), (200, EXAMPLE))
        self.assertEqual(spec_problems("GET", f"{self.path}/{filter_id}", code, got), [])
        # The same filter again: the same ID; another one: another ID.
        self.assertEqual((await self.post(EXAMPLE))[1]["filter_id"], filter_id)
        code, other = await self.post({"room": {"timeline": {"limit": 1}}})
        self.assertNotEqual(other["filter_id"], filter_id)
        # An empty filter is a filter.
        code, resp = await self.post({})
        self.assertEqual(code, 200, resp)

    async def test_ids_are_per_user(self):
        _, resp = await self.post(EXAMPLE)
        bob_path = V3 + f"/user/{urllib.parse.quote(self.bob['user_id'])}/filter"
        code, got = await self.hs.request("GET", f"{bob_path}/{resp['filter_id']}", token=self.bob["access_token"])
        self.assertEqual((code, got["errcode"]), (404, "M_NOT_FOUND"))

    async def test_only_for_yourself(self):
        code, resp = await self.post(EXAMPLE, who=self.bob)
        self.assertEqual((code, resp["errcode"]), (403, "M_FORBIDDEN"))
        _, created = await self.post(EXAMPLE)
        code, resp = await self.hs.request("GET", f"{self.path}/{created['filter_id']}", token=self.bob["access_token"])
        self.assertEqual((code, resp["errcode"]), (403, "M_FORBIDDEN"))

    async def test_unknown_filter(self):
        for filter_id in ("999", "abc", "%7B%7D", "1" * 40):
            code, resp = await self.hs.request("GET", f"{self.path}/{filter_id}", token=self.alice["access_token"])
            self.assertEqual((code, resp["errcode"]), (404, "M_NOT_FOUND"), filter_id)

    async def test_validation(self):
        for body, errcode in (
            ({"room": {"timeline": {"limit": "10"}}}, "M_BAD_JSON"),
            ({"room": {"timeline": {"types": "m.room.message"}}}, "M_BAD_JSON"),
            ({"room": {"include_leave": "true"}}, "M_BAD_JSON"),
            ({"presence": {"not_senders": [42]}}, "M_BAD_JSON"),
            ({"event_fields": "type"}, "M_BAD_JSON"),
            ({"room": {"state": {"lazy_load_members": "yes"}}}, "M_BAD_JSON"),
            ({"event_format": "xml"}, "M_INVALID_PARAM"),
            ({"room": {"rooms": ["not-a-room"]}}, "M_INVALID_PARAM"),
            ({"presence": {"senders": ["alice"]}}, "M_INVALID_PARAM"),
            ({"room": {"timeline": {"limit": -3}}}, "M_INVALID_PARAM"),
        ):
            code, resp = await self.post(body)
            self.assertEqual((code, resp["errcode"]), (400, errcode), body)
        code, resp = await self.post(None, raw=b"[]")
        self.assertEqual((code, resp["errcode"]), (400, "M_BAD_JSON"))
        code, resp = await self.post(None, raw=b"{nope")
        self.assertEqual((code, resp["errcode"]), (400, "M_NOT_JSON"))

    async def test_needs_auth_and_no_guests(self):
        code, resp = await self.hs.request("POST", self.path, EXAMPLE)
        self.assertEqual((code, resp["errcode"]), (401, "M_MISSING_TOKEN"))

    async def test_deactivation_removes_filters(self):
        _, created = await self.post(EXAMPLE)
        await self.hs.components.account.deactivate(self.alice["user_id"], erase=False)
        self.assertIsNone(await self.hs.components.filters.get_filter(self.alice["user_id"], created["filter_id"]))

    async def test_messages_uses_the_filter_module(self):
        code, room = await self.hs.request("POST", V3 + "/createRoom", {}, token=self.alice["access_token"])
        room_id = room["room_id"]
        await self.hs.request("PUT", V3 + f"/rooms/{room_id}/send/m.room.message/t1", {"body": "a"},
                              token=self.alice["access_token"])
        await self.hs.request("PUT", V3 + f"/rooms/{room_id}/send/org.example.x/t2", {"body": "b"},
                              token=self.alice["access_token"])
        flt = urllib.parse.quote('{"types": ["*.message", "org.*"], "not_types": ["org.example.x"]}')
        code, resp = await self.hs.request("GET", V3 + f"/rooms/{room_id}/messages?dir=b&filter={flt}",
                                           token=self.alice["access_token"])
        self.assertEqual(code, 200, resp)
        self.assertEqual([e["type"] for e in resp["chunk"]], ["m.room.message"])
        flt = urllib.parse.quote('{"senders": "x"}')
        code, resp = await self.hs.request("GET", V3 + f"/rooms/{room_id}/messages?dir=b&filter={flt}",
                                           token=self.alice["access_token"])
        self.assertEqual((code, resp["errcode"]), (400, "M_BAD_JSON"))
