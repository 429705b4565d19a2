"""Invites across servers with a real Synapse (``PUT /v2/invite`` both ways, then joins through the inviter).

Needs ``MATRIXHS_SYNAPSE_PYTHON`` (see ``tests.interop.synapse_peer``); skipped otherwise. A Synapse user
invites a matrixhs user, who sees the invite in /sync, joins and talks; a matrixhs user invites a Synapse user,
who joins and talks. Both in the default room version (12: room IDs name no server, so the join must go
through the inviter's server) and in room version 10.
"""

from __future__ import annotations

from typing import Any, Optional
from urllib.parse import quote

from twisted.trial import unittest

from tests.interop import test_synapse as base


class SynapseInviteTests(unittest.TestCase):
    # The set-up and helpers of the join interop tests (through their module, so trial does not run those
    # tests a second time from here).
    timeout = base.SynapseInteropTests.timeout
    setUp = base.SynapseInteropTests.setUp
    on_ours = base.SynapseInteropTests.on_ours
    on_synapse = base.SynapseInteropTests.on_synapse
    eventually = base.SynapseInteropTests.eventually
    wait_for_message = base.SynapseInteropTests.wait_for_message
    send = base.SynapseInteropTests.send
    joined_members = base.SynapseInteropTests.joined_members

    async def invite_state_on_ours(self, room_id: str) -> list[dict]:
        async def check() -> Optional[list[dict]]:
            sync = await self.on_ours("GET", "/sync")
            room = sync["rooms"]["invite"].get(room_id)
            return room["invite_state"]["events"] if room else None

        return await self.eventually(check, f"the invite to {room_id} in our /sync")

    async def invite_on_synapse(self, room_id: str) -> None:
        async def check() -> Optional[bool]:
            sync = await self.on_synapse("GET", "/sync")
            return True if room_id in sync["rooms"]["invite"] else None

        await self.eventually(check, f"the invite to {room_id} in Synapse's /sync")

    async def talk(self, room_id: str, tag: str) -> None:
        event_id = await self.send(self.on_synapse, room_id, f"hi mia {tag}", f"s-{tag}")
        self.assertEqual((await self.wait_for_message(self.on_ours, room_id, f"hi mia {tag}"))["event_id"], event_id)
        event_id = await self.send(self.on_ours, room_id, f"hi sally {tag}", f"m-{tag}")
        self.assertEqual((await self.wait_for_message(self.on_synapse, room_id, f"hi sally {tag}"))["event_id"], event_id)

    async def synapse_invites_us(self, room_version: Optional[str]) -> None:
        body: dict[str, Any] = {"preset": "private_chat", "name": "Sally's den"}
        if room_version is not None:
            body["room_version"] = room_version
        room_id = (await self.on_synapse("POST", "/createRoom", body))["room_id"]
        await self.on_synapse("POST", f"/rooms/{quote(room_id)}/invite", {"user_id": self.mia["user_id"]})
        events = await self.invite_state_on_ours(room_id)
        by_type = {e["type"]: e for e in events}
        self.assertEqual(by_type["m.room.name"]["content"]["name"], "Sally's den")
        self.assertEqual(by_type["m.room.member"]["content"]["membership"], "invite")
        await self.on_ours("POST", f"/rooms/{quote(room_id)}/join", {})
        both = {self.mia["user_id"], self.sally["user_id"]}
        await self.joined_members(self.on_synapse, room_id, both)
        await self.joined_members(self.on_ours, room_id, both)
        await self.talk(room_id, f"in {room_id}")

    async def we_invite_synapse(self, room_version: Optional[str]) -> None:
        body: dict[str, Any] = {"preset": "private_chat", "name": "Mia's den"}
        if room_version is not None:
            body["room_version"] = room_version
        room_id = (await self.on_ours("POST", "/createRoom", body))["room_id"]
        await self.on_ours("POST", f"/rooms/{quote(room_id)}/invite", {"user_id": self.sally["user_id"]})
        invite = await self.on_ours("GET", f"/rooms/{quote(room_id)}/state/m.room.member/{quote(self.sally['user_id'])}")
        self.assertEqual(invite["membership"], "invite")
        await self.invite_on_synapse(room_id)
        await self.on_synapse("POST", f"/rooms/{quote(room_id)}/join", {})
        both = {self.mia["user_id"], self.sally["user_id"]}
        await self.joined_members(self.on_ours, room_id, both)
        await self.joined_members(self.on_synapse, room_id, both)
        await self.talk(room_id, f"in {room_id}")

    async def test_synapse_user_invites_ours(self) -> None:
        await self.synapse_invites_us(None)

    async def test_our_user_invites_synapse_user(self) -> None:
        await self.we_invite_synapse(None)

    async def test_invites_room_version_10(self) -> None:
        await self.synapse_invites_us("10")
        await self.we_invite_synapse("10")

    async def test_synapse_user_rejects_our_invite(self) -> None:
        room_id = (await self.on_ours("POST", "/createRoom", {"preset": "private_chat"}))["room_id"]
        await self.on_ours("POST", f"/rooms/{quote(room_id)}/invite", {"user_id": self.sally["user_id"]})
        await self.invite_on_synapse(room_id)
        await self.on_synapse("POST", f"/rooms/{quote(room_id)}/leave", {})

        async def left() -> Optional[bool]:
            resp = await self.on_ours("GET", f"/rooms/{quote(room_id)}/state/m.room.member/{quote(self.sally['user_id'])}")
            return True if resp["membership"] == "leave" else None

        await self.eventually(left, "Sally's rejection on matrixhs")

    async def test_we_reject_synapse_invite(self) -> None:
        room_id = (await self.on_synapse("POST", "/createRoom", {"preset": "private_chat"}))["room_id"]
        await self.on_synapse("POST", f"/rooms/{quote(room_id)}/invite", {"user_id": self.mia["user_id"]})
        await self.invite_state_on_ours(room_id)
        await self.on_ours("POST", f"/rooms/{quote(room_id)}/leave", {})

        async def left() -> Optional[bool]:
            resp = await self.on_synapse("GET", f"/rooms/{quote(room_id)}/state/m.room.member/{quote(self.mia['user_id'])}")
            return True if resp["membership"] == "leave" else None

        await self.eventually(left, "Mia's rejection on Synapse")
        sync = await self.on_ours("GET", "/sync")
        self.assertNotIn(room_id, sync["rooms"]["invite"])
