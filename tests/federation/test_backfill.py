"""Backfill between two real matrixhs servers: B's user joins a room of A late and pages back through the
history from before the join, which B fetches from A (``GET /backfill``) while ``/messages`` runs. HTTPS
with a test CA, X-Matrix, real keyrings; nothing faked (failures are injected by wrapping the real client)."""

from __future__ import annotations

from typing import Any, Optional
from urllib.parse import quote

from twisted.trial import unittest

from mxtwisted.events.event import Event
from mxtwisted.events.hashing import add_content_hash
from mxtwisted.events.room_versions import get_room_version
from mxtwisted.events.signing import generate_signing_key, sign_event
from mxtwisted.federation.client import RequestSendFailed
from tests.federation import test_remote_join as remote_join
from tests.support.homeserver import RunningHomeserver

HISTORY_JOINED = {"type": "m.room.history_visibility", "state_key": "", "content": {"history_visibility": "joined"}}


class BackfillTests(unittest.TestCase):
    # The client helpers of the remote join tests (same attributes: a, b, alice, bob), through the module so
    # that trial does not run RemoteJoinTests from this one.
    call = remote_join.RemoteJoinTests.call
    public_room = remote_join.RemoteJoinTests.public_room

    async def setUp(self) -> None:
        await remote_join.start_two_servers(self)
        # Every federation GET B makes (path), recorded by wrapping B's real client.
        self.b_requests: list[str] = []
        client = self.b.components.federation.client
        original = client.get_json

        async def recording_get(destination: str, path: str, args: Any = None) -> Any:
            self.b_requests.append(path)
            return await original(destination, path, args)

        self.patch(client, "get_json", recording_get)

    # -- helpers ------------------------------------------------------------------------------------
    async def send_texts(self, room_id: str, count: int, prefix: str = "m") -> list[str]:
        ids = []
        for i in range(count):
            resp = await self.call(self.a, self.alice, "PUT", f"/rooms/{quote(room_id)}/send/m.room.message/{prefix}{i}",
                                   {"msgtype": "m.text", "body": f"{prefix}{i}"})
            ids.append(resp["event_id"])
        return ids

    async def join_b(self, room_id: str) -> None:
        await self.call(self.b, self.bob, "POST", f"/join/{quote(room_id)}?server_name={quote(self.a_name)}", {})
        # The join is one with partial state: these tests start once the full state is here.
        await self.b.components.rooms.wait_full_state(room_id)

    async def page(self, hs: RunningHomeserver, user: dict, room_id: str, direction: str = "b",
                   limit: int = 10, start: Optional[str] = None) -> tuple[list[dict], int]:
        """Every event ``/messages`` gives, page after page until a page has no ``end``; and the page count."""
        events: list[dict] = []
        token = start
        for pages in range(1, 100):
            path = f"/rooms/{quote(room_id)}/messages?dir={direction}&limit={limit}"
            if token is not None:
                path += f"&from={quote(token)}"
            resp = await self.call(hs, user, "GET", path)
            self.assertLessEqual(len(resp["chunk"]), limit)
            events.extend(resp["chunk"])
            if "end" not in resp:
                return events, pages
            token = resp["end"]
        self.fail("paging never ended")

    def backfill_requests(self) -> list[str]:
        return [p for p in self.b_requests if p.startswith("/_matrix/federation/v1/backfill/")]

    # -- tests -------------------------------------------------------------------------------------
    async def test_late_joiner_pages_back_through_history(self) -> None:
        room_id = await self.public_room(name="History")
        sent = await self.send_texts(room_id, 30)
        await self.join_b(room_id)
        since = (await self.call(self.b, self.bob, "GET", "/sync"))["next_batch"]
        self.assertEqual(self.backfill_requests(), [])

        on_b, pages = await self.page(self.b, self.bob, room_id)
        self.assertGreater(pages, 3)
        self.assertEqual(on_b[0]["type"], "m.room.member")
        self.assertEqual(on_b[0]["state_key"], self.bob["user_id"])
        messages = [e for e in on_b if e["type"] == "m.room.message"]
        self.assertEqual([e["event_id"] for e in messages], sent[::-1])
        self.assertEqual([e["content"]["body"] for e in messages], [f"m{i}" for i in range(29, -1, -1)])
        self.assertEqual(on_b[-1]["type"], "m.room.create")
        # Exactly the history A shows its own user, in the same order.
        on_a, _ = await self.page(self.a, self.alice, room_id, limit=50)
        self.assertEqual([e["event_id"] for e in on_b], [e["event_id"] for e in on_a])
        await self.assert_same_states([e["event_id"] for e in on_a])
        # Backfilled state events carry their prev_content like any other.
        name = next(e for e in on_b if e["type"] == "m.room.name")
        self.assertEqual(name["content"], {"name": "History"})
        self.assertTrue(self.backfill_requests())

        # History is not news: incremental /sync shows nothing, and B's sender sent nothing to A.
        sync = await self.call(self.b, self.bob, "GET", f"/sync?since={quote(since)}&timeout=0")
        timeline = sync.get("rooms", {}).get("join", {}).get(room_id, {}).get("timeline", {}).get("events", [])
        self.assertEqual(timeline, [])
        # The room's current state and forward extremities are as the join left them.
        room = await self.b.components.rooms.get_room_cache(room_id)
        self.assertEqual(await self.b.storage.events.get_forward_extremities(room_id), room.extremities)
        self.assertEqual(room.extremities, [on_b[0]["event_id"]])

        # Paging again is read from B's store: no more requests.
        asked = len(self.backfill_requests())
        again, _ = await self.page(self.b, self.bob, room_id, limit=25)
        self.assertEqual([e["event_id"] for e in again], [e["event_id"] for e in on_b])
        self.assertEqual(len(self.backfill_requests()), asked)
        # Forwards from the start of the room: the same events, oldest first.
        forwards, _ = await self.page(self.b, self.bob, room_id, direction="f", limit=20)
        self.assertEqual([e["event_id"] for e in forwards], [e["event_id"] for e in reversed(on_b)])

        # Events sent after the join still arrive and come first.
        late = (await self.send_texts(room_id, 1, prefix="late"))[0]

        async def newest() -> Optional[str]:
            resp = await self.call(self.b, self.bob, "GET", f"/rooms/{quote(room_id)}/messages?dir=b&limit=1")
            return resp["chunk"][0]["event_id"] if resp["chunk"] and resp["chunk"][0]["event_id"] == late else None

        from tests.federation.test_two_servers import TwoServersTests

        await TwoServersTests.eventually(self, newest, "the message sent after the backfill")

    async def assert_same_states(self, event_ids: list[str]) -> None:
        """B knows the same state after each event as A (the room's own server)."""
        for event_id in event_ids:
            on_a = await self.a.storage.events.get_state_ids_at_event(event_id)
            on_b = await self.b.storage.events.get_state_ids_at_event(event_id)
            self.assertIsNotNone(on_a)
            self.assertEqual(on_b, on_a, event_id)

    async def test_small_batches_fetch_the_state_they_need(self) -> None:
        # Batches of 7 events: each batch's oldest event has unknown prev_events, so B asks A for the state
        # before it (/state_ids), and for the state events it has never seen (/state: the first topic, which
        # the second replaced before B joined).
        self.b.components.room_reader.backfill.__self__.limit = 7
        room_id = await self.public_room()
        first = await self.call(self.a, self.alice, "PUT", f"/rooms/{quote(room_id)}/state/m.room.topic/",
                                {"topic": "first"})
        early = await self.send_texts(room_id, 10, prefix="early")
        second = await self.call(self.a, self.alice, "PUT", f"/rooms/{quote(room_id)}/state/m.room.topic/",
                                 {"topic": "second"})
        late = await self.send_texts(room_id, 10, prefix="late")
        await self.join_b(room_id)
        on_b, _ = await self.page(self.b, self.bob, room_id, limit=5)
        on_a, _ = await self.page(self.a, self.alice, room_id, limit=50)
        self.assertEqual([e["event_id"] for e in on_b], [e["event_id"] for e in on_a])
        self.assertEqual([e["event_id"] for e in on_b if e["type"] == "m.room.message"], (early + late)[::-1])
        self.assertGreater(len(self.backfill_requests()), 3)
        self.assertTrue(any("/state_ids/" in p for p in self.b_requests))
        self.assertTrue(any(p.startswith("/_matrix/federation/v1/state/") for p in self.b_requests))
        topic = next(e for e in on_b if e["event_id"] == second["event_id"])
        self.assertEqual(topic["unsigned"]["prev_content"], {"topic": "first"})
        self.assertIn(first["event_id"], [e["event_id"] for e in on_b])
        await self.assert_same_states([e["event_id"] for e in on_a])

    async def test_older_room_versions(self) -> None:
        # v1: event IDs in the events, (id, hashes) references; v10: server-named room IDs, no v12 create rules.
        for version in ("1", "10"):
            room_id = await self.public_room(room_version=version)
            sent = await self.send_texts(room_id, 4, prefix=f"v{version}_")
            await self.join_b(room_id)
            on_b, _ = await self.page(self.b, self.bob, room_id, limit=3)
            on_a, _ = await self.page(self.a, self.alice, room_id, limit=50)
            self.assertEqual([e["event_id"] for e in on_b], [e["event_id"] for e in on_a], version)
            self.assertEqual([e["event_id"] for e in on_b if e["type"] == "m.room.message"], sent[::-1])
            self.assertEqual(on_b[-1]["type"], "m.room.create")

    async def test_context_of_a_backfilled_event(self) -> None:
        room_id = await self.public_room()
        sent = await self.send_texts(room_id, 12)
        await self.join_b(room_id)
        await self.page(self.b, self.bob, room_id, limit=50)
        resp = await self.call(self.b, self.bob, "GET", f"/rooms/{quote(room_id)}/context/{quote(sent[5])}?limit=4")
        self.assertEqual(resp["event"]["content"]["body"], "m5")
        self.assertEqual([e["content"]["body"] for e in resp["events_before"]], ["m4", "m3"])
        self.assertEqual([e["content"]["body"] for e in resp["events_after"]], ["m6", "m7"])
        event = await self.call(self.b, self.bob, "GET", f"/rooms/{quote(room_id)}/event/{quote(sent[0])}")
        self.assertEqual(event["content"]["body"], "m0")

    async def test_joined_history_visibility_hides_history(self) -> None:
        room_id = await self.public_room(initial_state=[HISTORY_JOINED])
        sent = await self.send_texts(room_id, 8)
        await self.join_b(room_id)
        on_b, _ = await self.page(self.b, self.bob, room_id)
        self.assertEqual(on_b[0]["state_key"], self.bob["user_id"])
        self.assertNotIn("m.room.message", [e["type"] for e in on_b])
        self.assertTrue(set(e["event_id"] for e in on_b).isdisjoint(sent))
        # B fetched them anyway, but A gave them redacted (B had no user in the room then) and B kept them so.
        self.assertTrue(self.backfill_requests())
        stored = await self.b.storage.events.get_events(sent)
        self.assertEqual(set(stored), set(sent))
        for event in stored.values():
            self.assertEqual(event.json["content"], {})
            self.assertFalse(event.outlier)
        # Alice on A still sees all of it. Bob sees what came before the visibility was set ("shared" until
        # then, as the spec and Synapse have it).
        on_a, _ = await self.page(self.a, self.alice, room_id, limit=50)
        self.assertEqual([e["event_id"] for e in on_a if e["type"] == "m.room.message"], sent[::-1])
        setting = next(i for i, e in enumerate(on_a) if e["type"] == "m.room.history_visibility")
        self.assertEqual([e["event_id"] for e in on_b[1:]], [e["event_id"] for e in on_a[setting + 1 :]])

    async def test_tampered_events(self) -> None:
        # In A's answer, one message has other content (its hash no longer matches: kept redacted) and one is
        # signed with a key that is not A's (left out; the history behind it is still reached).
        room_id = await self.public_room()
        sent = await self.send_texts(room_id, 8)
        await self.join_b(room_id)
        client = self.b.components.federation.client
        recording = client.get_json
        forger = generate_signing_key("t1")
        version = get_room_version(self.a.config.default_room_version)

        async def tampering_get(destination: str, path: str, args: Any = None) -> Any:
            resp = await recording(destination, path, args)
            if "/backfill/" in path:
                for i, pdu in enumerate(resp["pdus"]):
                    body = pdu.get("content", {}).get("body")
                    if body == "m3":
                        resp["pdus"][i] = dict(pdu, content={"msgtype": "m.text", "body": "evil"})
                    elif body == "m5":
                        resp["pdus"][i] = sign_event(dict(pdu, signatures={}), self.a_name, forger, version)
            return resp

        self.patch(client, "get_json", tampering_get)
        on_b, _ = await self.page(self.b, self.bob, room_id)
        messages = {e["event_id"]: e for e in on_b if e["type"] == "m.room.message"}
        self.assertEqual(list(messages), [eid for eid in sent[::-1] if eid != sent[5]])
        self.assertEqual(messages[sent[3]]["content"], {})
        self.assertEqual(messages[sent[4]]["content"]["body"], "m4")
        self.assertEqual(on_b[-1]["type"], "m.room.create")
        self.assertIsNone(await self.b.storage.events.get_event(sent[5]))

    async def test_event_failing_the_auth_rules_is_stored_rejected(self) -> None:
        # A (with its real key) slips a message of a user who never joined into its answer: well signed, but
        # the auth rules refuse it, so B stores it rejected and never shows it.
        room_id = await self.public_room()
        sent = await self.send_texts(room_id, 3)
        await self.join_b(room_id)
        client = self.b.components.federation.client
        recording = client.get_json
        version = get_room_version(self.a.config.default_room_version)
        forged: dict[str, Any] = {}

        async def injecting_get(destination: str, path: str, args: Any = None) -> Any:
            resp = await recording(destination, path, args)
            if "/backfill/" in path:
                template = next(p for p in resp["pdus"] if p.get("content", {}).get("body") == "m1")
                event = {k: v for k, v in template.items() if k not in ("hashes", "signatures", "unsigned")}
                event.update(sender=f"@mallory:{self.a_name}", content={"msgtype": "m.text", "body": "mallory"},
                             prev_events=[sent[1]], depth=template["depth"] + 1)
                event = sign_event(add_content_hash(event), self.a_name, self.a.service.signing_keys[0], version)
                forged["id"] = Event(event, version).event_id
                resp["pdus"].append(event)
            return resp

        self.patch(client, "get_json", injecting_get)
        on_b, _ = await self.page(self.b, self.bob, room_id)
        self.assertEqual([e["event_id"] for e in on_b if e["type"] == "m.room.message"], sent[::-1])
        stored = await self.b.storage.events.get_event(forged["id"])
        assert stored is not None
        self.assertIsNotNone(stored.rejected_reason)

    async def test_unreachable_history_ends_paging_and_is_not_asked_again_at_once(self) -> None:
        room_id = await self.public_room()
        await self.send_texts(room_id, 3)
        await self.join_b(room_id)
        client = self.b.components.federation.client
        recording = client.get_json

        async def failing_get(destination: str, path: str, args: Any = None) -> Any:
            if "/backfill/" in path:
                self.b_requests.append(path)
                raise RequestSendFailed(destination, ConnectionRefusedError())
            return await recording(destination, path, args)

        self.patch(client, "get_json", failing_get)
        on_b, pages = await self.page(self.b, self.bob, room_id)
        self.assertEqual(pages, 1)
        self.assertEqual([e["state_key"] for e in on_b], [self.bob["user_id"]])
        self.assertEqual(len(self.backfill_requests()), 1)
        await self.page(self.b, self.bob, room_id)
        self.assertEqual(len(self.backfill_requests()), 1)
