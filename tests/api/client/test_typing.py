"""Typing notifications over real HTTP: start, stop, expiry, refusals, and what the stream source gives.

Spec: Client-Server API, "Typing Notifications".
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from twisted.internet import reactor
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase

from tests.ephemeral.spec import SpecAssertions
from tests.support.homeserver import start_homeserver

V3 = "/_matrix/client/v3"
TYPING = V3 + "/rooms/{roomId}/typing/{userId}"


class TypingTests(SpecAssertions, TestCase):
    async def setUp(self) -> None:
        self.hs = await start_homeserver(self, bcrypt_rounds=4, rc_message={"per_second": 1000, "burst_count": 1000})
        self.alice = await self.hs.register_user("alice")
        self.bob = await self.hs.register_user("bob")
        self.carol = await self.hs.register_user("carol")
        code, resp = await self.req("POST", "/createRoom", {"preset": "public_chat"})
        self.assertEqual(code, 200, resp)
        self.room_id = resp["room_id"]
        code, resp = await self.req("POST", f"/rooms/{self.room_id}/join", {}, who=self.bob)
        self.assertEqual(code, 200, resp)
        self.source = self.hs.components.typing.source

    async def req(self, method: str, path: str, body: Any = None, who: Any = None, prefix: str = V3) -> tuple[int, Any]:
        token = (who or self.alice)["access_token"]
        return await self.hs.request(method, prefix + path, body, token=token)

    def path(self, who: Any = None, room_id: str | None = None) -> str:
        user_id = (who or self.alice)["user_id"]
        return f"/rooms/{quote(room_id or self.room_id, safe='')}/typing/{quote(user_id, safe='')}"

    async def typing_seen_by(self, who: Any, since: int = 0) -> Any:
        per_room, _ = await self.source.get_updates(
            who["user_id"], {self.room_id}, since, self.source.current_position()
        )
        return per_room.get(self.room_id)

    async def test_start_and_stop(self) -> None:
        code, resp = await self.req("PUT", self.path(), {"typing": True, "timeout": 30000})
        self.assertEqual((code, resp), (200, {}))
        self.assertMatchesSpec("PUT", TYPING, code, resp)
        events = await self.typing_seen_by(self.bob)
        self.assertEqual(events, [{"type": "m.typing", "content": {"user_ids": [self.alice["user_id"]]}}])
        self.assertValidEvent("m.typing", events[0])
        position = self.source.current_position()
        code, resp = await self.req("PUT", self.path(), {"typing": False})
        self.assertEqual((code, resp), (200, {}))
        self.assertEqual(
            await self.typing_seen_by(self.bob, position), [{"type": "m.typing", "content": {"user_ids": []}}]
        )
        # r0 serves the same endpoint.
        code, _ = await self.req("PUT", self.path(), {"typing": True}, prefix="/_matrix/client/r0")
        self.assertEqual(code, 200)
        self.hs.components.typing.stopped_typing(self.room_id, self.alice["user_id"])

    async def test_typing_expires(self) -> None:
        code, _ = await self.req("PUT", self.path(who=self.bob), {"typing": True, "timeout": 150}, who=self.bob)
        self.assertEqual(code, 200)
        self.assertEqual(self.hs.components.typing.get_typing(self.room_id), [self.bob["user_id"]])
        await deferLater(reactor, 0.4, lambda: None)
        self.assertEqual(self.hs.components.typing.get_typing(self.room_id), [])
        self.assertIsNone(await self.typing_seen_by(self.alice))

    async def test_typing_wakes_the_other_members(self) -> None:
        notifier = self.hs.components.notifier
        waiting = notifier.wait_for_user(self.bob["user_id"], 5000)
        code, _ = await self.req("PUT", self.path(), {"typing": True, "timeout": 1000})
        self.assertEqual(code, 200)
        self.assertEqual(await waiting, ("typing", self.source.current_position()))
        await self.req("PUT", self.path(), {"typing": False})

    async def test_refusals(self) -> None:
        # Someone else's typing state.
        code, resp = await self.req("PUT", self.path(who=self.bob), {"typing": True, "timeout": 1000})
        self.assertEqual((code, resp["errcode"]), (403, "M_FORBIDDEN"))
        # Not joined to the room.
        code, resp = await self.req("PUT", self.path(who=self.carol), {"typing": True}, who=self.carol)
        self.assertEqual((code, resp["errcode"]), (403, "M_FORBIDDEN"))
        # Unknown room, invalid IDs.
        code, resp = await self.req("PUT", self.path(room_id="!nowhere:test.local"), {"typing": True})
        self.assertEqual((code, resp["errcode"]), (404, "M_NOT_FOUND"))
        code, resp = await self.req("PUT", self.path(room_id="nowhere"), {"typing": True})
        self.assertEqual((code, resp["errcode"]), (400, "M_INVALID_PARAM"))
        code, resp = await self.req("PUT", f"/rooms/{self.room_id}/typing/alice", {"typing": True})
        self.assertEqual((code, resp["errcode"]), (400, "M_INVALID_PARAM"))
        # Bad bodies.
        for body in ({}, {"typing": "yes"}, {"typing": True, "timeout": "10"}, {"typing": True, "timeout": -1}):
            code, resp = await self.req("PUT", self.path(), body)
            self.assertEqual((code, resp["errcode"]), (400, "M_BAD_JSON"), body)
        code, resp = await self.hs.request("PUT", V3 + self.path(), raw=b"not json", token=self.alice["access_token"])
        self.assertEqual((code, resp["errcode"]), (400, "M_NOT_JSON"))
        # No access token.
        code, resp = await self.hs.request("PUT", V3 + self.path(), {"typing": True})
        self.assertEqual((code, resp["errcode"]), (401, "M_MISSING_TOKEN"))
        self.assertEqual(self.hs.components.typing.get_typing(self.room_id), [])
        self.assertEqual(self.source.current_position(), 0)

    async def test_leaving_stops_typing(self) -> None:
        code, _ = await self.req("PUT", self.path(who=self.bob), {"typing": True, "timeout": 30000}, who=self.bob)
        self.assertEqual(code, 200)
        code, _ = await self.req("POST", f"/rooms/{self.room_id}/leave", {}, who=self.bob)
        self.assertEqual(code, 200)
        self.assertEqual(self.hs.components.typing.get_typing(self.room_id), [])
