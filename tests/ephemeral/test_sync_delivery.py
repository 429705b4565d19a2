"""Typing, receipts and presence as clients get them: through /sync, over real HTTP."""

from __future__ import annotations

from typing import Any

from twisted.trial.unittest import SkipTest, TestCase

from tests.ephemeral.spec import SpecAssertions
from tests.support.homeserver import start_homeserver

V3 = "/_matrix/client/v3"


class SyncDeliveryTests(SpecAssertions, TestCase):
    async def setUp(self) -> None:
        self.hs = await start_homeserver(
            self, bcrypt_rounds=4, rc_message={"per_second": 1000, "burst_count": 1000},
            rc_presence={"per_user": {"per_second": 1000, "burst_count": 1000}},
        )
        self.alice = await self.hs.register_user("alice")
        self.bob = await self.hs.register_user("bob")
        self.carol = await self.hs.register_user("carol")
        _, resp = await self.req("POST", "/createRoom", {"preset": "public_chat"})
        self.room_id = resp["room_id"]
        await self.req("POST", f"/rooms/{self.room_id}/join", {}, who=self.bob)
        _, resp = await self.req("PUT", f"/rooms/{self.room_id}/send/m.room.message/t1", {"msgtype": "m.text", "body": "hi"})
        self.event_id = resp["event_id"]

    async def req(self, method: str, path: str, body: Any = None, who: Any = None) -> tuple[int, Any]:
        return await self.hs.request(method, V3 + path, body, token=(who or self.alice)["access_token"])

    async def sync(self, who: Any, since: str | None = None) -> dict:
        code, resp = await self.req("GET", "/sync?timeout=0" + (f"&since={since}" if since else ""), who=who)
        if code == 404:
            raise SkipTest("/sync is not served")
        self.assertEqual(code, 200, resp)
        return resp

    def ephemeral(self, response: dict) -> dict[str, list]:
        events = response.get("rooms", {}).get("join", {}).get(self.room_id, {}).get("ephemeral", {}).get("events", [])
        by_type: dict[str, list] = {}
        for event in events:
            by_type.setdefault(event["type"], []).append(event)
        return by_type

    def presence(self, response: dict) -> dict[str, dict]:
        return {e["sender"]: e["content"] for e in response.get("presence", {}).get("events", [])}

    async def test_incremental_sync_carries_ephemeral_data(self) -> None:
        bob_batch = (await self.sync(self.bob))["next_batch"]
        alice_batch = (await self.sync(self.alice))["next_batch"]
        carol_batch = (await self.sync(self.carol))["next_batch"]
        alice_id = self.alice["user_id"]
        await self.req("PUT", f"/rooms/{self.room_id}/typing/{alice_id}", {"typing": True, "timeout": 30000})
        await self.req("POST", f"/rooms/{self.room_id}/receipt/m.read/{self.event_id}", {})
        await self.req("POST", f"/rooms/{self.room_id}/receipt/m.read.private/{self.event_id}", {}, who=self.bob)
        await self.req("PUT", f"/presence/{alice_id}/status", {"presence": "online", "status_msg": "here"})

        bob = await self.sync(self.bob, bob_batch)
        ephemeral = self.ephemeral(bob)
        self.assertEqual(ephemeral["m.typing"], [{"type": "m.typing", "content": {"user_ids": [alice_id]}}])
        [receipt] = ephemeral["m.receipt"]
        self.assertEqual(set(receipt["content"][self.event_id]), {"m.read", "m.read.private"})
        self.assertEqual(list(receipt["content"][self.event_id]["m.read.private"]), [self.bob["user_id"]])
        self.assertEqual(self.presence(bob)[alice_id]["status_msg"], "here")
        for event in bob["presence"]["events"]:
            self.assertValidEvent("m.presence", event)

        # Alice does not see Bob's private receipt.
        [receipt] = self.ephemeral(await self.sync(self.alice, alice_batch))["m.receipt"]
        self.assertEqual(receipt["content"][self.event_id], {"m.read": receipt["content"][self.event_id]["m.read"]})
        # Carol shares no room with Alice: no presence of hers.
        self.assertNotIn(alice_id, self.presence(await self.sync(self.carol, carol_batch)))
        await self.req("PUT", f"/rooms/{self.room_id}/typing/{alice_id}", {"typing": False})
