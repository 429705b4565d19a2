"""Two real matrixhs servers talk: A's user creates a public room, B's user joins it over federation, and
messages and state travel both ways through the real FederationSender (``PUT /send``) and the real
TransactionReceiver, with no fakes in between (HTTPS with a test CA, X-Matrix, real keyrings)."""

from __future__ import annotations

from typing import Any, Awaitable, Callable, Optional
from urllib.parse import quote

from twisted.internet import reactor
from twisted.internet.task import deferLater
from twisted.trial import unittest

from tests.federation import test_remote_join as remote_join
from tests.support.homeserver import RunningHomeserver

#: How long an event may take to reach the other server (seconds).
WAIT = 10.0


class TwoServersTests(unittest.TestCase):
    # The client helpers of the remote join tests (same attributes: a, b, alice, bob). Imported through the
    # module so that trial does not run RemoteJoinTests a second time from this one.
    call = remote_join.RemoteJoinTests.call
    public_room = remote_join.RemoteJoinTests.public_room

    async def setUp(self) -> None:
        await remote_join.start_two_servers(self)
        # Record what each server's real receiver answered (origin, answer): nothing is faked, only watched.
        self.answers: dict[str, list[tuple[str, dict]]] = {}
        for hs in (self.a, self.b):
            self.watch_receiver(hs)

    def watch_receiver(self, hs: RunningHomeserver) -> None:
        receiver = hs.components.federation_receiver
        original = receiver.on_transaction
        answers = self.answers.setdefault(hs.config.server_name, [])

        async def on_transaction(origin: str, txn_id: str, body: dict) -> dict:
            answer = await original(origin, txn_id, body)
            answers.append((origin, answer))
            return answer

        self.patch(receiver, "on_transaction", on_transaction)

    def assert_received(self, hs: RunningHomeserver, origin: str, event_ids: list[str]) -> None:
        """``hs`` accepted ``event_ids`` in transactions from ``origin``, and refused no PDU at all."""
        results: dict[str, dict] = {}
        for sender, answer in self.answers[hs.config.server_name]:
            self.assertEqual(sender, origin)
            results.update(answer["pdus"])
        self.assertEqual({eid: r for eid, r in results.items() if r}, {}, "refused PDUs")
        for event_id in event_ids:
            self.assertIn(event_id, results)

    async def assert_delivered(self, hs: RunningHomeserver, destination: str) -> None:
        """The sender of ``hs`` ends with nothing left for ``destination`` (its acknowledgement may still be
        on its way back), and never backed off."""
        queue = hs.components.federation_sender.queue_state(destination)
        self.assertIsNotNone(queue)

        async def drained() -> Optional[bool]:
            return True if not queue.pending and queue.loop is None else None

        await self.eventually(drained, f"the queue of {hs.config.server_name} for {destination} to drain")
        self.assertEqual(queue.retry_interval, 0.0)
        self.assertIsNone(queue.retry_call)

    # -- helpers ------------------------------------------------------------------------------------
    async def eventually(self, check: Callable[[], Awaitable[Optional[Any]]], what: str) -> Any:
        """Poll ``check`` until it returns something other than None, for at most WAIT seconds."""
        deadline = reactor.seconds() + WAIT
        while True:
            result = await check()
            if result is not None:
                return result
            if reactor.seconds() > deadline:
                self.fail(f"Timed out after {WAIT}s waiting for {what}")
            await deferLater(reactor, 0.1, lambda: None)

    async def send_text(self, hs: RunningHomeserver, user: dict, room_id: str, body: str, txn: str) -> str:
        resp = await self.call(hs, user, "PUT", f"/rooms/{quote(room_id)}/send/m.room.message/{txn}",
                               {"msgtype": "m.text", "body": body})
        return resp["event_id"]

    async def wait_for_message(self, hs: RunningHomeserver, user: dict, room_id: str, event_id: str) -> dict:
        """Wait until ``event_id`` is in ``/messages`` of ``user`` on ``hs``; returns it."""

        async def check() -> Optional[dict]:
            messages = await self.call(hs, user, "GET", f"/rooms/{quote(room_id)}/messages?dir=b&limit=50")
            return next((e for e in messages["chunk"] if e["event_id"] == event_id), None)

        return await self.eventually(check, f"{event_id} in /messages on {hs.config.server_name}")

    async def sync_until(self, hs: RunningHomeserver, user: dict, room_id: str, event_id: str,
                         since: Optional[str]) -> dict:
        """Incremental /sync (long-polling) until the room's timeline has ``event_id``; returns it."""
        found: dict[str, Any] = {}

        async def check() -> Optional[dict]:
            path = "/sync?timeout=1000" + (f"&since={quote(since)}" if since else "")
            sync = await self.call(hs, user, "GET", path)
            room = sync.get("rooms", {}).get("join", {}).get(room_id)
            for e in room["timeline"]["events"] if room else []:
                if e["event_id"] == event_id:
                    found["event"] = e
            return found.get("event")

        return await self.eventually(check, f"{event_id} in /sync on {hs.config.server_name}")

    async def join_b(self, room_id: str) -> None:
        await self.call(self.b, self.bob, "POST", f"/join/{quote(room_id)}?server_name={quote(self.a_name)}", {})

    async def since(self, hs: RunningHomeserver, user: dict) -> str:
        return (await self.call(hs, user, "GET", "/sync"))["next_batch"]

    # -- the conversation ---------------------------------------------------------------------------
    async def test_conversation(self) -> None:
        alice_id, bob_id = self.alice["user_id"], self.bob["user_id"]
        room_id = await self.public_room(name="Lobby")
        await self.join_b(room_id)
        # A has the join (send_join), so A's sender now sends to B.
        members_a = await self.call(self.a, self.alice, "GET", f"/rooms/{quote(room_id)}/joined_members")
        self.assertEqual(set(members_a["joined"]), {alice_id, bob_id})
        b_since = await self.since(self.b, self.bob)
        a_since = await self.since(self.a, self.alice)

        # A → B
        hello = await self.send_text(self.a, self.alice, room_id, "hello from A", "a1")
        event = await self.wait_for_message(self.b, self.bob, room_id, hello)
        self.assertEqual(event["sender"], alice_id)
        self.assertEqual(event["content"], {"msgtype": "m.text", "body": "hello from A"})
        synced = await self.sync_until(self.b, self.bob, room_id, hello, b_since)
        self.assertEqual(synced["content"]["body"], "hello from A")

        # B → A
        reply = await self.send_text(self.b, self.bob, room_id, "hello from B", "b1")
        event = await self.wait_for_message(self.a, self.alice, room_id, reply)
        self.assertEqual(event["sender"], bob_id)
        self.assertEqual(event["content"], {"msgtype": "m.text", "body": "hello from B"})
        synced = await self.sync_until(self.a, self.alice, room_id, reply, a_since)
        self.assertEqual(synced["content"]["body"], "hello from B")

        # Both servers now have the same timeline, in the same order.
        async def bodies(hs: RunningHomeserver, user: dict) -> list[str]:
            messages = await self.call(hs, user, "GET", f"/rooms/{quote(room_id)}/messages?dir=f&limit=50")
            return [e["content"]["body"] for e in messages["chunk"] if e["type"] == "m.room.message"]

        self.assertEqual(await bodies(self.a, self.alice), ["hello from A", "hello from B"])
        self.assertEqual(await bodies(self.b, self.bob), ["hello from A", "hello from B"])
        # Through the real transaction path both ways, every PDU accepted.
        self.assert_received(self.b, self.a_name, [hello])
        self.assert_received(self.a, self.b_name, [reply])
        await self.assert_delivered(self.a, self.b_name)
        await self.assert_delivered(self.b, self.a_name)

    async def test_state_change_reaches_other_server(self) -> None:
        room_id = await self.public_room(name="Lobby")
        await self.join_b(room_id)
        resp = await self.call(self.a, self.alice, "PUT", f"/rooms/{quote(room_id)}/state/m.room.name/",
                               {"name": "Renamed on A"})

        async def name_on_b() -> Optional[dict]:
            state = await self.call(self.b, self.bob, "GET", f"/rooms/{quote(room_id)}/state")
            names = [e for e in state if e["type"] == "m.room.name" and e["event_id"] == resp["event_id"]]
            return names[0] if names else None

        name = await self.eventually(name_on_b, "the new room name on B")
        self.assertEqual(name["content"], {"name": "Renamed on A"})
        self.assertEqual(name["sender"], self.alice["user_id"])
        direct = await self.call(self.b, self.bob, "GET", f"/rooms/{quote(room_id)}/state/m.room.name/")
        self.assertEqual(direct, {"name": "Renamed on A"})
        self.assert_received(self.b, self.a_name, [resp["event_id"]])

    async def test_several_messages_keep_order(self) -> None:
        # A burst from both sides: every message arrives, in each sender's order, on both servers.
        room_id = await self.public_room()
        await self.join_b(room_id)
        a_ids = [await self.send_text(self.a, self.alice, room_id, f"A{i}", f"a{i}") for i in range(5)]
        for event_id in a_ids:
            await self.wait_for_message(self.b, self.bob, room_id, event_id)
        b_ids = [await self.send_text(self.b, self.bob, room_id, f"B{i}", f"b{i}") for i in range(5)]
        for event_id in b_ids:
            await self.wait_for_message(self.a, self.alice, room_id, event_id)
        expected = [f"A{i}" for i in range(5)] + [f"B{i}" for i in range(5)]
        for hs, user in ((self.a, self.alice), (self.b, self.bob)):
            messages = await self.call(hs, user, "GET", f"/rooms/{quote(room_id)}/messages?dir=f&limit=50")
            got = [e["content"]["body"] for e in messages["chunk"] if e["type"] == "m.room.message"]
            self.assertEqual(got, expected, hs.config.server_name)

    async def test_rejoin_after_leaving_follows_the_room_again(self) -> None:
        # bob leaves: B stops following the room. While B is out, A's room moves on. bob's rejoin must go
        # through A (B's state is stale), and B then has A's current state and receives new events.
        room_id = await self.public_room(name="Lobby")
        await self.join_b(room_id)
        await self.call(self.b, self.bob, "POST", f"/rooms/{quote(room_id)}/leave", {})

        async def bob_left_on_a() -> Optional[bool]:
            members = await self.call(self.a, self.alice, "GET", f"/rooms/{quote(room_id)}/joined_members")
            return True if self.bob["user_id"] not in members["joined"] else None

        await self.eventually(bob_left_on_a, "bob's leave on A")
        await self.call(self.a, self.alice, "PUT", f"/rooms/{quote(room_id)}/state/m.room.topic/", {"topic": "while away"})
        await self.send_text(self.a, self.alice, room_id, "missed", "away")
        await self.call(self.b, self.bob, "POST", f"/rooms/{quote(room_id)}/join", {})
        topic = await self.call(self.b, self.bob, "GET", f"/rooms/{quote(room_id)}/state/m.room.topic/")
        self.assertEqual(topic, {"topic": "while away"})
        members_a = await self.call(self.a, self.alice, "GET", f"/rooms/{quote(room_id)}/joined_members")
        self.assertIn(self.bob["user_id"], members_a["joined"])
        # B's forward extremity is the new join only: bob's next message builds on A's DAG and A accepts it.
        reply = await self.send_text(self.b, self.bob, room_id, "back", "b-back")
        await self.wait_for_message(self.a, self.alice, room_id, reply)
        hello = await self.send_text(self.a, self.alice, room_id, "welcome back", "a-back")
        await self.wait_for_message(self.b, self.bob, room_id, hello)
        self.assert_received(self.a, self.b_name, [reply])
