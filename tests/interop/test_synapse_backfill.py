"""Backfill from a real Synapse: a matrixhs user joins a Synapse room late and pages back through the history
from before the join, which matrixhs fetches from Synapse (``GET /backfill``, ``/state_ids``, ``/state``).

Needs ``MATRIXHS_SYNAPSE_PYTHON`` (see ``tests.interop.synapse_peer``); skipped otherwise."""

from __future__ import annotations

from typing import Any, Awaitable, Callable, Optional
from urllib.parse import quote

from twisted.trial import unittest

from tests.interop import test_synapse

HISTORY_JOINED = {"type": "m.room.history_visibility", "state_key": "", "content": {"history_visibility": "joined"}}


class SynapseBackfillTests(unittest.TestCase):
    timeout = 240
    # The set-up and helpers of the interop tests (through the module, so trial does not run those here).
    setUp = test_synapse.SynapseInteropTests.setUp
    on_ours = test_synapse.SynapseInteropTests.on_ours
    on_synapse = test_synapse.SynapseInteropTests.on_synapse
    eventually = test_synapse.SynapseInteropTests.eventually
    send = test_synapse.SynapseInteropTests.send

    async def page(self, call: Callable[..., Awaitable[Any]], room_id: str, limit: int) -> list[dict]:
        """Every event of ``/messages`` backwards, page after page until a page has no ``end``."""
        events: list[dict] = []
        token: Optional[str] = None
        for _ in range(100):
            path = f"/rooms/{quote(room_id)}/messages?dir=b&limit={limit}"
            if token is not None:
                path += f"&from={quote(token)}"
            resp = await call("GET", path)
            events.extend(resp["chunk"])
            if "end" not in resp or not resp["chunk"] and resp["end"] == token:
                return events
            token = resp["end"]
        self.fail("paging never ended")

    async def synapse_room_with_history(self, count: int, **body: Any) -> tuple[str, list[str]]:
        body.setdefault("preset", "public_chat")
        room_id = (await self.on_synapse("POST", "/createRoom", body))["room_id"]
        sent = [await self.send(self.on_synapse, room_id, f"s{i}", f"s{i}") for i in range(count)]
        resp = await self.on_ours("POST", f"/join/{quote(room_id)}?server_name={quote(self.syn_name)}", {})
        self.assertEqual(resp["room_id"], room_id)
        return room_id, sent

    async def test_late_joiner_pages_back_through_synapse_history(self) -> None:
        room_id, sent = await self.synapse_room_with_history(25, name="Old news")
        ours = await self.page(self.on_ours, room_id, limit=10)
        self.assertEqual(ours[0]["state_key"], self.mia["user_id"])
        self.assertEqual([e["event_id"] for e in ours if e["type"] == "m.room.message"], sent[::-1])
        self.assertEqual([e["content"]["body"] for e in ours if e["type"] == "m.room.message"],
                         [f"s{i}" for i in range(24, -1, -1)])
        self.assertEqual(ours[-1]["type"], "m.room.create")
        # The same history Synapse shows its own user, in the same order.
        theirs = await self.page(self.on_synapse, room_id, limit=100)
        self.assertEqual([e["event_id"] for e in ours], [e["event_id"] for e in theirs])
        # Read from our store the second time.
        again = await self.page(self.on_ours, room_id, limit=50)
        self.assertEqual([e["event_id"] for e in again], [e["event_id"] for e in ours])

    async def test_joined_history_visibility_is_kept(self) -> None:
        room_id, sent = await self.synapse_room_with_history(5, initial_state=[HISTORY_JOINED])
        ours = await self.page(self.on_ours, room_id, limit=10)
        self.assertEqual(ours[0]["state_key"], self.mia["user_id"])
        self.assertNotIn("m.room.message", [e["type"] for e in ours])
        self.assertTrue({e["event_id"] for e in ours}.isdisjoint(sent))
