"""Typing notifications and read receipts between matrixhs and a real Synapse, both ways (EDUs).

Needs ``MATRIXHS_SYNAPSE_PYTHON`` (see ``tests.interop.synapse_peer``); skipped otherwise. The Synapse peer runs
with presence disabled, so presence is not checked here (tests.federation.test_edus covers it between two
matrixhs servers)."""

from __future__ import annotations

from typing import Any, Awaitable, Callable, Optional
from urllib.parse import quote

from twisted.trial import unittest

from tests.interop import test_synapse


class SynapseEduTests(unittest.TestCase):
    timeout = 180
    # The Synapse and matrixhs set-up and helpers of the interop tests (borrowed through the module so that
    # trial does not run those tests a second time from here).
    setUp = test_synapse.SynapseInteropTests.setUp
    on_ours = test_synapse.SynapseInteropTests.on_ours
    on_synapse = test_synapse.SynapseInteropTests.on_synapse
    eventually = test_synapse.SynapseInteropTests.eventually
    wait_for_message = test_synapse.SynapseInteropTests.wait_for_message
    send = test_synapse.SynapseInteropTests.send
    joined_members = test_synapse.SynapseInteropTests.joined_members

    async def shared_room(self) -> str:
        """A room of ours that the Synapse user joined."""
        room_id = (await self.on_ours("POST", "/createRoom", {"preset": "public_chat"}))["room_id"]
        await self.on_synapse("POST", f"/join/{quote(room_id)}?server_name={quote(self.ours_name)}", {})
        await self.joined_members(self.on_ours, room_id, {self.mia["user_id"], self.sally["user_id"]})
        return room_id

    async def sync_poller(
        self, call: Callable[..., Awaitable[Any]], check: Callable[[dict], Any]
    ) -> Callable[[], Awaitable[Any]]:
        """A poll for ``eventually``: one incremental /sync on one side (from now on, then from the last
        answer), giving ``check(response)``."""
        state = {"since": (await call("GET", "/sync"))["next_batch"]}

        async def poll() -> Any:
            sync = await call("GET", f"/sync?timeout=500&since={quote(state['since'])}")
            state["since"] = sync["next_batch"]
            return check(sync)

        return poll

    @staticmethod
    def ephemeral(sync: dict, room_id: str, event_type: str) -> list[dict]:
        room = sync.get("rooms", {}).get("join", {}).get(room_id, {})
        return [e for e in room.get("ephemeral", {}).get("events", []) if e["type"] == event_type]

    def typing_is(self, room_id: str, users: list[str]) -> Callable[[dict], Optional[bool]]:
        def check(sync: dict) -> Optional[bool]:
            events = self.ephemeral(sync, room_id, "m.typing")
            return True if events and events[-1]["content"]["user_ids"] == users else None

        return check

    def receipt_of(self, room_id: str, user_id: str, event_id: str) -> Callable[[dict], Optional[dict]]:
        def check(sync: dict) -> Optional[dict]:
            for event in self.ephemeral(sync, room_id, "m.receipt"):
                found = event["content"].get(event_id, {}).get("m.read", {}).get(user_id)
                if found is not None:
                    return found
            return None

        return check

    async def test_typing_both_ways(self) -> None:
        room_id = await self.shared_room()
        mia, sally = self.mia["user_id"], self.sally["user_id"]
        room = quote(room_id)

        poll = await self.sync_poller(self.on_synapse, self.typing_is(room_id, [mia]))
        await self.on_ours("PUT", f"/rooms/{room}/typing/{quote(mia)}", {"typing": True, "timeout": 30000})
        await self.eventually(poll, "matrixhs typing on Synapse")
        poll = await self.sync_poller(self.on_synapse, self.typing_is(room_id, []))
        await self.on_ours("PUT", f"/rooms/{room}/typing/{quote(mia)}", {"typing": False})
        await self.eventually(poll, "matrixhs typing stopped on Synapse")

        poll = await self.sync_poller(self.on_ours, self.typing_is(room_id, [sally]))
        await self.on_synapse("PUT", f"/rooms/{room}/typing/{quote(sally)}", {"typing": True, "timeout": 30000})
        await self.eventually(poll, "Synapse typing on matrixhs")
        poll = await self.sync_poller(self.on_ours, self.typing_is(room_id, []))
        await self.on_synapse("PUT", f"/rooms/{room}/typing/{quote(sally)}", {"typing": False})
        await self.eventually(poll, "Synapse typing stopped on matrixhs")

    async def test_receipts_both_ways(self) -> None:
        room_id = await self.shared_room()
        mia, sally = self.mia["user_id"], self.sally["user_id"]
        room = quote(room_id)
        ours = await self.send(self.on_ours, room_id, "from matrixhs", "m1")
        await self.wait_for_message(self.on_synapse, room_id, "from matrixhs")
        theirs = await self.send(self.on_synapse, room_id, "from Synapse", "s1")
        await self.wait_for_message(self.on_ours, room_id, "from Synapse")

        poll = await self.sync_poller(self.on_ours, self.receipt_of(room_id, sally, ours))
        await self.on_synapse("POST", f"/rooms/{room}/receipt/m.read/{quote(ours)}", {})
        data = await self.eventually(poll, "Synapse's receipt on matrixhs")
        self.assertIsInstance(data["ts"], int)

        poll = await self.sync_poller(self.on_synapse, self.receipt_of(room_id, mia, theirs))
        await self.on_ours("POST", f"/rooms/{room}/receipt/m.read/{quote(theirs)}", {"thread_id": "main"})
        data = await self.eventually(poll, "matrixhs's receipt on Synapse")
        self.assertEqual(data.get("thread_id"), "main")
