"""Interop with a real Synapse over federation on loopback (HTTPS with the test CA on both sides).

Needs ``MATRIXHS_SYNAPSE_PYTHON`` (see ``tests.interop.synapse_peer``); skipped otherwise. Both servers are
named ``127.0.0.1:<port>``; everything goes through the client APIs of both servers."""

from __future__ import annotations

import os
from typing import Any, Awaitable, Callable, Optional
from urllib.parse import quote

from twisted.internet import reactor
from twisted.internet.task import deferLater
from twisted.trial import unittest

from tests.federation.support import make_pki
from tests.federation.test_remote_join import start_named_homeserver
from tests.interop import synapse_peer
from tests.interop.synapse_peer import SynapsePeer

V3 = "/_matrix/client/v3"

#: How long an event may take to reach the other server (seconds).
WAIT = 20.0


class SynapseInteropTests(unittest.TestCase):
    timeout = 180

    async def setUp(self) -> None:
        reason = synapse_peer.skip_reason()
        if reason is not None:
            raise unittest.SkipTest(reason)
        self.pki = make_pki(os.path.abspath(self.mktemp()))
        self.synapse = SynapsePeer(os.path.abspath(self.mktemp()), self.pki)
        self.addCleanup(self.synapse.stop)
        await self.synapse.start()
        self.ours = await start_named_homeserver(self, self.pki)
        self.ours_name = self.ours.config.server_name
        self.syn_name = self.synapse.server_name
        self.sally = await self.synapse.register_user("sally")
        self.mia = await self.ours.register_user("mia")

    # -- helpers ------------------------------------------------------------------------------------
    async def on_ours(self, method: str, path: str, body: Any = None, expect: int = 200) -> Any:
        code, resp = await self.ours.request(method, V3 + path, body, token=self.mia["access_token"])
        self.assertEqual(code, expect, f"matrixhs {method} {path}: {resp}")
        return resp

    async def on_synapse(self, method: str, path: str, body: Any = None, expect: int = 200) -> Any:
        code, resp = await self.synapse.request(method, V3 + path, body, token=self.sally["access_token"])
        self.assertEqual(code, expect, f"Synapse {method} {path}: {resp}\n{self.synapse.tail()}")
        return resp

    async def eventually(self, check: Callable[[], Awaitable[Optional[Any]]], what: str) -> Any:
        deadline = reactor.seconds() + WAIT
        while True:
            result = await check()
            if result is not None:
                return result
            if reactor.seconds() > deadline:
                self.fail(f"timed out after {WAIT}s waiting for {what}\n{self.synapse.tail()}")
            await deferLater(reactor, 0.25, lambda: None)

    async def wait_for_message(self, call: Callable[..., Awaitable[Any]], room_id: str, body: str) -> dict:
        async def seen() -> Optional[dict]:
            messages = await call("GET", f"/rooms/{quote(room_id)}/messages?dir=b&limit=50")
            for event in messages["chunk"]:
                if event["type"] == "m.room.message" and event["content"].get("body") == body:
                    return event
            return None

        return await self.eventually(seen, f"message {body!r} in {room_id}")

    async def send(self, call: Callable[..., Awaitable[Any]], room_id: str, body: str, txn: str) -> str:
        resp = await call("PUT", f"/rooms/{quote(room_id)}/send/m.room.message/{txn}",
                          {"msgtype": "m.text", "body": body})
        return resp["event_id"]

    def joined_members(self, call: Callable[..., Awaitable[Any]], room_id: str, expected: set[str]):
        async def check() -> Optional[bool]:
            resp = await call("GET", f"/rooms/{quote(room_id)}/joined_members")
            return True if set(resp["joined"]) == expected else None

        return self.eventually(check, f"joined members of {room_id} to be {expected}")

    async def sync_timeline_has(self, room_id: str, event_id: str) -> None:
        """Our /sync (from the start) shows ``event_id`` in the room's timeline."""

        async def check() -> Optional[bool]:
            sync = await self.on_ours("GET", "/sync")
            room = sync.get("rooms", {}).get("join", {}).get(room_id)
            if room is None:
                return None
            return True if event_id in {e["event_id"] for e in room["timeline"]["events"]} else None

        await self.eventually(check, f"{event_id} in our /sync timeline of {room_id}")

    # -- scenarios ----------------------------------------------------------------------------------
    async def join_synapse_room(self, room_version: Optional[str] = None) -> None:
        # (1) A Synapse user creates a public room; ours joins it by room ID with server_name.
        body: dict[str, Any] = {"preset": "public_chat", "name": "Synapse lobby"}
        if room_version is not None:
            body["room_version"] = room_version
        room_id = (await self.on_synapse("POST", "/createRoom", body))["room_id"]
        resp = await self.on_ours("POST", f"/join/{quote(room_id)}?server_name={quote(self.syn_name)}", {})
        self.assertEqual(resp["room_id"], room_id)
        state = await self.on_ours("GET", f"/rooms/{quote(room_id)}/state")
        by_key = {(e["type"], e["state_key"]): e for e in state}
        if room_version is not None:
            self.assertEqual(by_key[("m.room.create", "")]["content"]["room_version"], room_version)
        self.assertEqual(by_key[("m.room.name", "")]["content"]["name"], "Synapse lobby")
        self.assertEqual(by_key[("m.room.join_rules", "")]["content"]["join_rule"], "public")
        self.assertEqual(by_key[("m.room.member", self.mia["user_id"])]["content"]["membership"], "join")
        self.assertEqual(by_key[("m.room.member", self.sally["user_id"])]["content"]["membership"], "join")
        both = {self.mia["user_id"], self.sally["user_id"]}
        await self.joined_members(self.on_synapse, room_id, both)
        await self.joined_members(self.on_ours, room_id, both)

        # (2) Synapse -> matrixhs: in /messages and /sync.
        event_id = await self.send(self.on_synapse, room_id, "hello from Synapse", "s1")
        seen = await self.wait_for_message(self.on_ours, room_id, "hello from Synapse")
        self.assertEqual(seen["event_id"], event_id)
        self.assertEqual(seen["sender"], self.sally["user_id"])
        await self.sync_timeline_has(room_id, event_id)

        # (3) matrixhs -> Synapse.
        event_id = await self.send(self.on_ours, room_id, "hello from matrixhs", "m1")
        seen = await self.wait_for_message(self.on_synapse, room_id, "hello from matrixhs")
        self.assertEqual(seen["event_id"], event_id)
        self.assertEqual(seen["sender"], self.mia["user_id"])

    async def synapse_joins_our_room(self, room_version: Optional[str] = None) -> None:
        # (4) Ours creates a public room; the Synapse user joins it by room ID with server_name.
        body: dict[str, Any] = {"preset": "public_chat", "name": "matrixhs lobby"}
        if room_version is not None:
            body["room_version"] = room_version
        room_id = (await self.on_ours("POST", "/createRoom", body))["room_id"]
        resp = await self.on_synapse("POST", f"/join/{quote(room_id)}?server_name={quote(self.ours_name)}", {})
        self.assertEqual(resp["room_id"], room_id)
        state = await self.on_synapse("GET", f"/rooms/{quote(room_id)}/state")
        by_key = {(e["type"], e["state_key"]): e for e in state}
        if room_version is not None:
            self.assertEqual(by_key[("m.room.create", "")]["content"]["room_version"], room_version)
        self.assertEqual(by_key[("m.room.name", "")]["content"]["name"], "matrixhs lobby")
        self.assertEqual(by_key[("m.room.member", self.sally["user_id"])]["content"]["membership"], "join")
        both = {self.mia["user_id"], self.sally["user_id"]}
        await self.joined_members(self.on_ours, room_id, both)
        await self.joined_members(self.on_synapse, room_id, both)

        event_id = await self.send(self.on_synapse, room_id, "hi from Synapse", "s2")
        seen = await self.wait_for_message(self.on_ours, room_id, "hi from Synapse")
        self.assertEqual(seen["event_id"], event_id)
        self.assertEqual(seen["sender"], self.sally["user_id"])

        event_id = await self.send(self.on_ours, room_id, "hi from matrixhs", "m2")
        seen = await self.wait_for_message(self.on_synapse, room_id, "hi from matrixhs")
        self.assertEqual(seen["event_id"], event_id)
        self.assertEqual(seen["sender"], self.mia["user_id"])

    # -- tests (default room version of each server: 12 for both) ----------------------------------
    async def test_join_synapse_room(self) -> None:
        await self.join_synapse_room()

    async def test_synapse_joins_our_room(self) -> None:
        await self.synapse_joins_our_room()

    async def test_room_version_10(self) -> None:
        # Room IDs with a server name, the older auth rules: both directions with one Synapse.
        await self.join_synapse_room("10")
        await self.synapse_joins_our_room("10")

    async def test_joins_by_alias_both_ways(self) -> None:
        # A public room of ours with an alias: the Synapse user joins by the alias (Synapse asks our
        # /query/directory); and the other way round with an alias on Synapse.
        ours = (await self.on_ours("POST", "/createRoom", {"preset": "public_chat", "room_alias_name": "lobby"}))["room_id"]
        alias = f"#lobby:{self.ours_name}"
        resp = await self.on_synapse("POST", f"/join/{quote(alias)}", {})
        self.assertEqual(resp["room_id"], ours)
        await self.joined_members(self.on_ours, ours, {self.mia["user_id"], self.sally["user_id"]})
        resolved = await self.on_synapse("GET", f"/directory/room/{quote(alias)}")
        self.assertEqual(resolved["room_id"], ours)
        self.assertIn(self.ours_name, resolved["servers"])

        theirs = (await self.on_synapse("POST", "/createRoom", {"preset": "public_chat", "room_alias_name": "plaza"}))["room_id"]
        their_alias = f"#plaza:{self.syn_name}"
        resolved = await self.on_ours("GET", f"/directory/room/{quote(their_alias)}")
        self.assertEqual(resolved["room_id"], theirs)
        resp = await self.on_ours("POST", f"/join/{quote(their_alias)}", {})
        self.assertEqual(resp["room_id"], theirs)
        await self.joined_members(self.on_synapse, theirs, {self.mia["user_id"], self.sally["user_id"]})
        event_id = await self.send(self.on_ours, theirs, "joined by alias", "alias1")
        seen = await self.wait_for_message(self.on_synapse, theirs, "joined by alias")
        self.assertEqual(seen["event_id"], event_id)
