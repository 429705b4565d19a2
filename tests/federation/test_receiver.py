"""Incoming transactions (``PUT /v1/send/{txnId}``) over real HTTP with X-Matrix signed requests: a remote
server whose user joined a local room sends its events; replays, bad PDUs, limits, missing prev_events."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from twisted.internet import reactor
from twisted.internet.task import deferLater
from twisted.trial import unittest

from mxtwisted.events.hashing import compute_event_id
from mxtwisted.events.room_versions import get_room_version
from tests.federation.test_served_rooms import (
    F1,
    F2,
    REMOTE,
    V3,
    RemoteServer,
    StaticKeyring,
    start_federating_homeserver,
)

BOB = f"@bob:{REMOTE}"


class FakeMissingEventsClient:
    """Answers ``/get_missing_events`` with the events the test gives."""

    def __init__(self, events: list[dict]) -> None:
        self.events = events
        self.calls: list[tuple[str, str, Any]] = []

    async def post_json(self, destination: str, path: str, body: Any) -> Any:
        self.calls.append((destination, path, body))
        return {"events": self.events}


class ReceiverTests(unittest.TestCase):
    async def setUp(self) -> None:
        self.keyring = StaticKeyring()
        self.hs = await start_federating_homeserver(self, self.keyring)
        self.remote = RemoteServer(REMOTE, self.hs)
        self.keyring.add(REMOTE, self.remote.key)
        self.alice = await self.hs.register_user("alice")
        self.room_id = (await self.client("POST", "/createRoom", {"preset": "public_chat"}))["room_id"]
        made = await self.fed("GET", f"{F1}/make_join/{self.room_id}/{BOB}?ver={self.hs.config.default_room_version}")
        self.version = get_room_version(made["room_version"])
        join, self.join_id = self.remote.sign(made["event"], made["room_version"])
        await self.fed("PUT", f"{F2}/send_join/{self.room_id}/{self.join_id}", join)
        self.last = (self.join_id, join["depth"])
        self.count = 0

    async def client(self, method: str, path: str, body: Any = None) -> Any:
        code, resp = await self.hs.request(method, V3 + path, body, token=self.alice["access_token"])
        self.assertEqual(code, 200, resp)
        return resp

    async def fed(self, method: str, path: str, body: Any = None, expect: int = 200) -> Any:
        code, resp = await self.remote.request(method, path, body)
        self.assertEqual(code, expect, resp)
        return resp

    async def message(self, text: str, advance: bool = True) -> tuple[dict, str]:
        """A message of bob, signed by the remote server, on top of the previous one."""
        state = await self.client("GET", f"/rooms/{self.room_id}/state")
        ids = {(e["type"], e["state_key"]): e["event_id"] for e in state}
        auth = [ids[("m.room.power_levels", "")], ids[("m.room.member", BOB)]]
        if not self.version.room_id_from_create_event:
            auth.append(ids[("m.room.create", "")])
        prev_id, depth = self.last
        self.count += 1
        template = {
            "type": "m.room.message", "room_id": self.room_id, "sender": BOB,
            "content": {"msgtype": "m.text", "body": text}, "origin_server_ts": 1_700_000_000_000 + self.count,
            "depth": depth + 1, "prev_events": [prev_id], "auth_events": auth,
        }
        event, event_id = self.remote.sign(template, self.version.identifier)
        if advance:
            self.last = (event_id, depth + 1)
        return event, event_id

    async def send_txn(self, txn_id: str, pdus: list[dict], expect: int = 200, **extra: Any) -> Any:
        body = {"origin": REMOTE, "origin_server_ts": 1, "pdus": pdus, **extra}
        return await self.fed("PUT", f"{F1}/send/{txn_id}", body, expect=expect)

    async def timeline(self) -> list[str]:
        resp = await self.client("GET", f"/rooms/{self.room_id}/messages?dir=b&limit=50")
        return [e["content"].get("body") for e in resp["chunk"] if e["type"] == "m.room.message"]

    # -- tests ------------------------------------------------------------------------------------
    async def test_good_and_bad_pdus_in_one_transaction(self) -> None:
        good, good_id = await self.message("hello")
        bad, bad_id = await self.message("forged", advance=False)
        bad["signatures"] = {REMOTE: {k: "A" * 86 for k in bad["signatures"][REMOTE]}}
        resp = await self.send_txn("t1", [good, bad])
        self.assertEqual(resp["pdus"][good_id], {})
        self.assertIn("signature", resp["pdus"][bad_id]["error"])
        self.assertEqual(await self.timeline(), ["hello"])

    async def test_replay_is_answered_from_the_cache(self) -> None:
        first, first_id = await self.message("one")
        receiver = self.hs.service.components.federation_receiver
        seen: list[str] = []
        original = receiver.handle_pdu

        async def counting(origin: str, room: Any, pdu: dict, event_id: str) -> None:
            seen.append(event_id)
            await original(origin, room, pdu, event_id)

        self.patch(receiver, "handle_pdu", counting)
        resp1 = await self.send_txn("same", [first])
        resp2 = await self.send_txn("same", [first])
        self.assertEqual(resp1, resp2)
        self.assertEqual(resp1["pdus"], {first_id: {}})
        self.assertEqual(seen, [first_id])
        # A new transaction with a known event: accepted again, stored once.
        self.assertEqual((await self.send_txn("other", [first]))["pdus"], {first_id: {}})
        self.assertEqual(await self.timeline(), ["one"])

    async def test_limits_and_bad_bodies(self) -> None:
        event, _ = await self.message("x")
        await self.send_txn("big", [event] * 51, expect=400)
        await self.send_txn("edus", [], expect=400, edus=[{"edu_type": "m.typing", "content": {}}] * 101)
        await self.fed("PUT", f"{F1}/send/notalist", {"origin": REMOTE, "pdus": {}}, expect=400)
        # EDUs are acknowledged (and ignored).
        resp = await self.send_txn("ok", [], edus=[{"edu_type": "m.typing", "content": {}}])
        self.assertEqual(resp, {"pdus": {}})
        # Unsigned request: refused.
        code, _ = await self.remote.request("PUT", f"{F1}/send/unsigned", {"pdus": []}, sign=False)
        self.assertEqual(code, 401)

    async def test_unknown_room_and_server_without_members(self) -> None:
        other_room = (await self.client("POST", "/createRoom", {"preset": "public_chat"}))["room_id"]
        event, event_id = await self.message("elsewhere", advance=False)
        event["room_id"] = other_room
        event, event_id = self.remote.sign({k: v for k, v in event.items() if k not in ("signatures", "hashes")}, self.version.identifier)
        resp = await self.send_txn("t", [event])
        # Not refused up front (its server may have joined through another one), but it cannot pass: its
        # prev_events are not of this room and its sender is not in it.
        self.assertIn("error", resp["pdus"][event_id])
        timeline = await self.client("GET", f"/rooms/{other_room}/messages?dir=b&limit=50")
        self.assertNotIn(event_id, [e["event_id"] for e in timeline["chunk"]])

    async def test_tampered_content_is_redacted(self) -> None:
        event, event_id = await self.message("secret")
        event["content"] = {"msgtype": "m.text", "body": "changed"}
        resp = await self.send_txn("t", [event])
        self.assertEqual(resp["pdus"], {event_id: {}})
        stored = await self.hs.service.storage.events.get_event(event_id)
        self.assertEqual(stored.json["content"], {})

    async def test_missing_prev_events_are_fetched(self) -> None:
        first, first_id = await self.message("first")
        second, second_id = await self.message("second")
        receiver = self.hs.service.components.federation_receiver
        fake = FakeMissingEventsClient([first])
        self.patch(receiver, "client", fake)
        resp = await self.send_txn("gap", [second])
        self.assertEqual(resp["pdus"], {second_id: {}})
        self.assertEqual(await self.timeline(), ["second", "first"])
        destination, path, body = fake.calls[0]
        self.assertEqual((destination, path), (REMOTE, f"{F1}/get_missing_events/{quote(self.room_id, safe='')}"))
        self.assertEqual(body["latest_events"], [second_id])
        # Nothing to fill the gap with: the PDU fails, alone.
        self.patch(receiver, "client", FakeMissingEventsClient([]))
        await self.message("lost")
        third, third_id = await self.message("third")
        resp = await self.send_txn("gap2", [third])
        self.assertIn("Missing prev_events", resp["pdus"][third_id]["error"])

    async def test_local_events_are_sent_to_the_remote_server(self) -> None:
        # The sender of this homeserver (its client records instead of connecting): alice's message goes to
        # the server of bob, the only other server in the room, as a transaction.
        resp = await self.client("PUT", f"/rooms/{self.room_id}/send/m.room.message/t1", {"msgtype": "m.text", "body": "hi"})
        sender = self.hs.service.components.federation_sender
        for _ in range(50):
            if any(resp["event_id"] in [compute_event_id(p, self.version) for p in body["pdus"]] for _, _, body in sender.client.sent):
                break
            await deferLater(reactor, 0.01)
        destination, path, body = sender.client.sent[-1]
        self.assertEqual((destination, body["origin"]), (REMOTE, self.hs.config.server_name))
        self.assertTrue(path.startswith(f"{F1}/send/"))
        self.assertIn(resp["event_id"], [compute_event_id(p, self.version) for p in body["pdus"]])

    def test_event_ids_are_computed(self) -> None:
        # Sanity check of the helper the tests rely on.
        version = get_room_version("10")
        event = {"type": "m.room.message", "room_id": "!r:x", "sender": "@a:x", "content": {}, "depth": 1,
                 "prev_events": [], "auth_events": [], "origin_server_ts": 0, "hashes": {"sha256": ""}}
        self.assertTrue(compute_event_id(event, version).startswith("$"))
