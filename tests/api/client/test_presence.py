"""Presence over real HTTP: GET/PUT /presence/{userId}/status, refusals, rate limit, presence.enabled.

Spec: Client-Server API, "Presence".
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from twisted.trial.unittest import TestCase

from tests.ephemeral.spec import SpecAssertions
from tests.support.homeserver import start_homeserver

V3 = "/_matrix/client/v3"
STATUS = V3 + "/presence/{userId}/status"
LOOSE_LIMITS = {"rc_message": {"per_second": 1000, "burst_count": 1000},
                "rc_presence": {"per_user": {"per_second": 1000, "burst_count": 1000}}}


class PresenceTests(SpecAssertions, TestCase):
    async def start(self, **config: Any) -> None:
        self.hs = await start_homeserver(self, bcrypt_rounds=4, **config)
        self.alice = await self.hs.register_user("alice")
        self.bob = await self.hs.register_user("bob")
        self.carol = await self.hs.register_user("carol")
        code, resp = await self.req("POST", "/createRoom", {"preset": "public_chat"})
        self.assertEqual(code, 200, resp)
        self.room_id = resp["room_id"]
        code, resp = await self.req("POST", f"/rooms/{self.room_id}/join", {}, who=self.bob)
        self.assertEqual(code, 200, resp)

    async def req(self, method: str, path: str, body: Any = None, who: Any = None, prefix: str = V3) -> tuple[int, Any]:
        token = (who or self.alice)["access_token"]
        return await self.hs.request(method, prefix + path, body, token=token)

    def status(self, user: Any) -> str:
        user_id = user if isinstance(user, str) else user["user_id"]
        return f"/presence/{quote(user_id, safe='')}/status"

    async def test_set_and_get(self) -> None:
        await self.start(**LOOSE_LIMITS)
        code, resp = await self.req("GET", self.status(self.alice))
        self.assertEqual((code, resp), (200, {"presence": "offline"}))
        self.assertMatchesSpec("GET", STATUS, code, resp)
        code, resp = await self.req("PUT", self.status(self.alice), {"presence": "online", "status_msg": "I am here."})
        self.assertEqual((code, resp), (200, {}))
        self.assertMatchesSpec("PUT", STATUS, code, resp)
        for who in (self.alice, self.bob):
            code, resp = await self.req("GET", self.status(self.alice), who=who)
            self.assertEqual(code, 200)
            self.assertMatchesSpec("GET", STATUS, code, resp)
            self.assertEqual(resp["presence"], "online")
            self.assertEqual(resp["status_msg"], "I am here.")
            self.assertIs(resp["currently_active"], True)
            self.assertLess(resp["last_active_ago"], 5000)
        code, resp = await self.req("PUT", self.status(self.alice), {"presence": "unavailable"}, prefix="/_matrix/client/r0")
        self.assertEqual(code, 200)
        code, resp = await self.req("GET", self.status(self.alice), who=self.bob)
        self.assertEqual(resp["presence"], "unavailable")
        self.assertNotIn("status_msg", resp)
        self.assertNotIn("currently_active", resp)
        # Bob's sync would carry it.
        source = self.hs.components.presence.source
        _, events = await source.get_updates(self.bob["user_id"], {self.room_id}, 0, source.current_position())
        self.assertEqual([e["sender"] for e in events], [self.alice["user_id"]])
        self.assertValidEvent("m.presence", events[0])

    async def test_refusals(self) -> None:
        await self.start(**LOOSE_LIMITS)
        # Somebody else's presence cannot be set.
        code, resp = await self.req("PUT", self.status(self.bob), {"presence": "online"})
        self.assertEqual((code, resp["errcode"]), (403, "M_FORBIDDEN"))
        # Carol shares no room with Alice.
        code, resp = await self.req("GET", self.status(self.alice), who=self.carol)
        self.assertEqual((code, resp["errcode"]), (403, "M_FORBIDDEN"))
        self.assertMatchesSpec("GET", STATUS, code, resp)
        # A local user that does not exist.
        code, resp = await self.req("GET", self.status("@nobody:test.local"))
        self.assertEqual((code, resp["errcode"]), (404, "M_NOT_FOUND"))
        self.assertMatchesSpec("GET", STATUS, code, resp)
        code, resp = await self.req("GET", self.status("nobody"))
        self.assertEqual((code, resp["errcode"]), (400, "M_INVALID_PARAM"))
        # Bad bodies.
        for body, errcode in (
            ({}, "M_BAD_JSON"),
            ({"presence": 1}, "M_BAD_JSON"),
            ({"presence": "busy"}, "M_INVALID_PARAM"),
            ({"presence": "online", "status_msg": 5}, "M_BAD_JSON"),
        ):
            code, resp = await self.req("PUT", self.status(self.alice), body)
            self.assertEqual((code, resp["errcode"]), (400, errcode), body)
        code, resp = await self.hs.request("PUT", V3 + self.status(self.alice), raw=b"{", token=self.alice["access_token"])
        self.assertEqual((code, resp["errcode"]), (400, "M_NOT_JSON"))
        # No token.
        for method in ("GET", "PUT"):
            code, resp = await self.hs.request(method, V3 + self.status(self.alice), {"presence": "online"})
            self.assertEqual((code, resp["errcode"]), (401, "M_MISSING_TOKEN"), method)

    async def test_rate_limited(self) -> None:
        await self.start(rc_message={"per_second": 1000, "burst_count": 1000})  # rc_presence as Synapse: 1, then 0.1/s
        code, _ = await self.req("PUT", self.status(self.alice), {"presence": "online"})
        self.assertEqual(code, 200)
        code, resp = await self.req("PUT", self.status(self.alice), {"presence": "unavailable"})
        self.assertEqual((code, resp["errcode"]), (429, "M_LIMIT_EXCEEDED"))
        self.assertGreater(resp["retry_after_ms"], 0)
        self.assertMatchesSpec("PUT", STATUS, code, resp)
        code, resp = await self.req("GET", self.status(self.alice))
        self.assertEqual(resp["presence"], "online")

    async def test_activity_brings_an_idle_user_back(self) -> None:
        await self.start(**LOOSE_LIMITS)
        code, _ = await self.req("PUT", self.status(self.alice), {"presence": "unavailable"})
        self.assertEqual(code, 200)
        code, _ = await self.req("PUT", f"/rooms/{self.room_id}/send/m.room.message/t1", {"body": "hi", "msgtype": "m.text"})
        self.assertEqual(code, 200)
        await self.hs.components.presence.wait_for_writes()
        code, resp = await self.req("GET", self.status(self.alice), who=self.bob)
        self.assertEqual((resp["presence"], resp["currently_active"]), ("online", True))

    async def test_disabled(self) -> None:
        await self.start(presence={"enabled": False}, **LOOSE_LIMITS)
        code, resp = await self.req("PUT", self.status(self.alice), {"presence": "online", "status_msg": "x"})
        self.assertEqual((code, resp), (200, {}))
        # As Synapse: everybody is offline, and nobody is refused.
        for who, user in ((self.alice, self.alice), (self.carol, self.alice), (self.alice, "@nobody:test.local")):
            code, resp = await self.req("GET", self.status(user), who=who)
            self.assertEqual((code, resp), (200, {"presence": "offline"}))
        code, resp = await self.req("PUT", self.status(self.bob), {"presence": "online"})
        self.assertEqual((code, resp["errcode"]), (403, "M_FORBIDDEN"))
        source = self.hs.components.presence.source
        self.assertEqual(await source.get_updates(self.alice["user_id"], {self.room_id}, 0, 100), ({}, []))
        self.assertIsNone(await self.hs.storage.presence.get(self.alice["user_id"]))
