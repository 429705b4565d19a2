"""Typing, receipts and presence between two real matrixhs servers (EDUs in ``PUT /send`` transactions,
HTTPS with a test CA, X-Matrix, real keyrings), spoofed EDUs, and a server ACL that shuts one server out.

Each server's real EDU handler is wrapped only to record what it finished handling, so a test can wait
until an EDU it expects to be dropped has really arrived."""

from __future__ import annotations

from typing import Any, Callable, Optional
from urllib.parse import quote

from twisted.trial import unittest

from mxtwisted.ephemeral.presence import REMOTE_PRESENCE_TIMEOUT_MS
from mxtwisted.federation.client import FederationError
from tests.federation import test_two_servers as two_servers
from tests.support.homeserver import RunningHomeserver

F1 = "/_matrix/federation/v1"


class EduTests(unittest.TestCase):
    # The two servers and helpers of the two-server tests (imported through the module so that trial does not
    # run those tests a second time from this one).
    base_setup = two_servers.TwoServersTests.setUp
    watch_receiver = two_servers.TwoServersTests.watch_receiver
    eventually = two_servers.TwoServersTests.eventually
    send_text = two_servers.TwoServersTests.send_text
    wait_for_message = two_servers.TwoServersTests.wait_for_message
    join_b = two_servers.TwoServersTests.join_b
    since = two_servers.TwoServersTests.since
    call = two_servers.TwoServersTests.call
    public_room = two_servers.TwoServersTests.public_room

    async def setUp(self) -> None:
        await self.base_setup()
        #: server name → [(origin, edu)] its EDU handler finished with.
        self.edus: dict[str, list[tuple[str, dict]]] = {}
        for hs in (self.a, self.b):
            self.watch_edus(hs)
        self.room_id = await self.public_room(name="Lobby")
        await self.join_b(self.room_id)

    def watch_edus(self, hs: RunningHomeserver) -> None:
        receiver = hs.components.federation_receiver
        handler = receiver.edu_handler
        self.assertIsNotNone(handler)
        seen = self.edus.setdefault(hs.config.server_name, [])

        async def recording(origin: str, edu: dict) -> None:
            await handler(origin, edu)
            seen.append((origin, edu))

        self.patch(receiver, "edu_handler", recording)

    async def edu_handled(self, hs: RunningHomeserver, match: Callable[[str, dict], bool], what: str) -> None:
        async def check() -> Optional[bool]:
            return True if any(match(o, e) for o, e in self.edus[hs.config.server_name]) else None

        await self.eventually(check, f"{what} handled by {hs.config.server_name}")

    async def wait_sync(self, hs: RunningHomeserver, user: dict, since: str, check: Callable[[dict], Any],
                        what: str) -> Any:
        """Incremental /sync from ``since`` (long-polling) until ``check(response)`` is not None; returns it."""
        state = {"since": since}

        async def poll() -> Any:
            sync = await self.call(hs, user, "GET", f"/sync?timeout=500&since={quote(state['since'])}")
            state["since"] = sync["next_batch"]
            return check(sync)

        return await self.eventually(poll, what)

    def ephemeral(self, sync: dict, event_type: str) -> list[dict]:
        room = sync.get("rooms", {}).get("join", {}).get(self.room_id, {})
        return [e for e in room.get("ephemeral", {}).get("events", []) if e["type"] == event_type]

    def typing_users(self, sync: dict) -> Optional[list[str]]:
        """The room's typing list in this sync response, None when it did not change."""
        events = self.ephemeral(sync, "m.typing")
        return events[-1]["content"]["user_ids"] if events else None

    async def set_typing(self, hs: RunningHomeserver, user: dict, typing: bool) -> None:
        await self.call(hs, user, "PUT", f"/rooms/{quote(self.room_id)}/typing/{quote(user['user_id'])}",
                        {"typing": typing, "timeout": 30000} if typing else {"typing": False})

    async def receipt(self, hs: RunningHomeserver, user: dict, event_id: str, receipt_type: str = "m.read",
                      body: Optional[dict] = None) -> None:
        await self.call(hs, user, "POST", f"/rooms/{quote(self.room_id)}/receipt/{receipt_type}/{quote(event_id)}",
                        body or {})

    # -- typing --------------------------------------------------------------------------------
    async def test_typing_both_ways(self) -> None:
        alice_id, bob_id = self.alice["user_id"], self.bob["user_id"]

        async def typing_seen(hs: RunningHomeserver, user: dict, who: list[str], act: Any) -> None:
            since = await self.since(hs, user)
            await act
            await self.wait_sync(hs, user, since, lambda sync: True if self.typing_users(sync) == who else None,
                                 f"typing {who} on {hs.config.server_name}")

        await typing_seen(self.b, self.bob, [alice_id], self.set_typing(self.a, self.alice, True))
        self.assertEqual(self.b.components.typing.get_typing(self.room_id), [alice_id])
        await typing_seen(self.b, self.bob, [], self.set_typing(self.a, self.alice, False))
        await typing_seen(self.a, self.alice, [bob_id], self.set_typing(self.b, self.bob, True))
        await typing_seen(self.a, self.alice, [], self.set_typing(self.b, self.bob, False))
        # Each side only sent its own user's typing: no echo back.
        for _origin, edu in self.edus[self.a_name]:
            if edu["edu_type"] == "m.typing":
                self.assertEqual(edu["content"]["user_id"], bob_id)
        for _origin, edu in self.edus[self.b_name]:
            if edu["edu_type"] == "m.typing":
                self.assertEqual(edu["content"]["user_id"], alice_id)

    # -- receipts --------------------------------------------------------------------------------
    async def test_receipts_both_ways(self) -> None:
        alice_id, bob_id = self.alice["user_id"], self.bob["user_id"]
        hello = await self.send_text(self.a, self.alice, self.room_id, "hello", "a1")
        await self.wait_for_message(self.b, self.bob, self.room_id, hello)
        reply = await self.send_text(self.b, self.bob, self.room_id, "hi", "b1")
        await self.wait_for_message(self.a, self.alice, self.room_id, reply)

        def receipt_of(user_id: str, event_id: str) -> Callable[[dict], Optional[dict]]:
            def check(sync: dict) -> Optional[dict]:
                for event in self.ephemeral(sync, "m.receipt"):
                    found = event["content"].get(event_id, {}).get("m.read", {}).get(user_id)
                    if found is not None:
                        return found
                return None

            return check

        # B → A: a private receipt first (it must stay on B), then a public threaded one.
        await self.receipt(self.b, self.bob, hello, "m.read.private")
        since = await self.since(self.a, self.alice)
        await self.receipt(self.b, self.bob, hello, body={"thread_id": "main"})
        data = await self.wait_sync(self.a, self.alice, since, receipt_of(bob_id, hello), "bob's receipt on A")
        self.assertEqual(data["thread_id"], "main")
        self.assertIsInstance(data["ts"], int)
        # A → B: unthreaded.
        since = await self.since(self.b, self.bob)
        await self.receipt(self.a, self.alice, reply)
        data = await self.wait_sync(self.b, self.bob, since, receipt_of(alice_id, reply), "alice's receipt on B")
        self.assertNotIn("thread_id", data)
        self.assertIsInstance(data["ts"], int)
        # Stored like local receipts on each side.
        stored = await self.a.components.receipts.store.get_receipt(self.room_id, "m.read", bob_id, "main")
        self.assertEqual(stored.event_id, hello)
        self.assertIsNone(await self.a.components.receipts.store.get_receipt(self.room_id, "m.read.private", bob_id))
        # The private receipt never left B.
        for _, edu in self.edus[self.a_name]:
            if edu["edu_type"] == "m.receipt":
                for by_type in edu["content"].values():
                    self.assertEqual(set(by_type), {"m.read"})

    # -- presence --------------------------------------------------------------------------------
    async def test_presence_both_ways(self) -> None:
        alice_id, bob_id = self.alice["user_id"], self.bob["user_id"]

        def presence_of(user_id: str, status_msg: str) -> Callable[[dict], Optional[dict]]:
            def check(sync: dict) -> Optional[dict]:
                for event in sync.get("presence", {}).get("events", []):
                    if event["sender"] == user_id and event["content"].get("status_msg") == status_msg:
                        return event["content"]
                return None

            return check

        since = await self.since(self.b, self.bob)
        await self.call(self.a, self.alice, "PUT", f"/presence/{quote(alice_id)}/status",
                        {"presence": "online", "status_msg": "on A"})
        content = await self.wait_sync(self.b, self.bob, since, presence_of(alice_id, "on A"), "alice's presence on B")
        self.assertEqual(content["presence"], "online")
        self.assertIsInstance(content["last_active_ago"], int)
        # GET of a remote user's presence answers what their server said.
        status = await self.call(self.b, self.bob, "GET", f"/presence/{quote(alice_id)}/status")
        self.assertEqual((status["presence"], status["status_msg"]), ("online", "on A"))

        since = await self.since(self.a, self.alice)
        await self.call(self.b, self.bob, "PUT", f"/presence/{quote(bob_id)}/status",
                        {"presence": "unavailable", "status_msg": "away from B"})
        content = await self.wait_sync(self.a, self.alice, since, presence_of(bob_id, "away from B"),
                                       "bob's presence on A")
        self.assertEqual(content["presence"], "unavailable")
        # An initial sync on A has bob's presence too.
        initial = await self.call(self.a, self.alice, "GET", "/sync")
        self.assertIsNotNone(presence_of(bob_id, "away from B")(initial))
        # Should B fall silent for longer than the remote timeout, A takes bob to be offline.
        presence = self.a.components.presence
        presence._expire_remote(presence.now_ms() + REMOTE_PRESENCE_TIMEOUT_MS - 1000)
        await presence.wait_for_writes()
        self.assertEqual((await presence.current_state(bob_id)).state, "unavailable")
        presence._expire_remote(presence.now_ms() + REMOTE_PRESENCE_TIMEOUT_MS + 1000)
        await presence.wait_for_writes()
        self.assertEqual((await presence.current_state(bob_id)).state, "offline")

    # -- spoofing ----------------------------------------------------------------------------------
    async def test_spoofed_edus_are_ignored(self) -> None:
        alice_id, bob_id = self.alice["user_id"], self.bob["user_id"]
        hello = await self.send_text(self.a, self.alice, self.room_id, "hello", "a1")
        await self.wait_for_message(self.b, self.bob, self.room_id, hello)
        await self.call(self.a, self.alice, "PUT", f"/presence/{quote(alice_id)}/status",
                        {"presence": "online", "status_msg": "real"})
        sender = self.b.components.federation_sender
        stranger = f"@nobody:{self.b_name}"  # B's user, but not in the room
        # B claims things about A's user (not B's to claim) and about a user of B who is not in the room.
        sender.send_edu(self.a_name, "m.typing", {"room_id": self.room_id, "user_id": alice_id, "typing": True})
        sender.send_edu(self.a_name, "m.typing", {"room_id": self.room_id, "user_id": stranger, "typing": True})
        sender.send_edu(self.a_name, "m.receipt", {self.room_id: {"m.read": {
            alice_id: {"event_ids": [hello], "data": {"ts": 1}},
            stranger: {"event_ids": [hello], "data": {"ts": 1}},
        }}})
        sender.send_edu(self.a_name, "m.presence", {"push": [
            {"user_id": alice_id, "presence": "offline", "status_msg": "spoofed", "last_active_ago": 0},
        ]})
        # Types this server does not handle yet are ignored without harm.
        sender.send_edu(self.a_name, "m.device_list_update", {"user_id": bob_id, "device_id": "X", "stream_id": 1})
        sender.send_edu(self.a_name, "m.typing", {"room_id": "!unknown:" + self.a_name, "user_id": bob_id,
                                                  "typing": True})
        # Then a genuine one: once it is handled, every EDU before it was too (one queue, in order).
        sender.send_edu(self.a_name, "m.typing", {"room_id": self.room_id, "user_id": bob_id, "typing": True})
        await self.edu_handled(self.a, lambda o, e: e["edu_type"] == "m.typing" and e["content"]["user_id"] == bob_id
                               and e["content"]["room_id"] == self.room_id, "bob's typing")
        self.assertEqual(self.a.components.typing.get_typing(self.room_id), [bob_id])
        receipts = self.a.components.receipts.store
        self.assertIsNone(await receipts.get_receipt(self.room_id, "m.read", alice_id))
        self.assertIsNone(await receipts.get_receipt(self.room_id, "m.read", stranger))
        status = await self.call(self.a, self.alice, "GET", f"/presence/{quote(alice_id)}/status")
        self.assertEqual((status["presence"], status["status_msg"]), ("online", "real"))

    # -- server ACLs ---------------------------------------------------------------------------------
    async def test_server_acl_shuts_out_a_denied_server(self) -> None:
        bob_id = self.bob["user_id"]
        hello = await self.send_text(self.a, self.alice, self.room_id, "hello", "a1")
        await self.wait_for_message(self.b, self.bob, self.room_id, hello)
        # Both test servers are 127.0.0.1 (ports are not considered): A denies itself too, which only
        # matters to requests from other servers.
        acl = {"allow": ["*"], "deny": ["127.0.0.1"]}
        await self.call(self.a, self.alice, "PUT", f"/rooms/{quote(self.room_id)}/state/m.room.server_acl/", acl)

        # EDUs of the room from B are dropped...
        await self.set_typing(self.b, self.bob, True)
        await self.receipt(self.b, self.bob, hello)
        await self.edu_handled(self.a, lambda o, e: e["edu_type"] == "m.typing", "bob's typing")
        await self.edu_handled(self.a, lambda o, e: e["edu_type"] == "m.receipt", "bob's receipt")
        self.assertEqual(self.a.components.typing.get_typing(self.room_id), [])
        self.assertIsNone(await self.a.components.receipts.store.get_receipt(self.room_id, "m.read", bob_id))

        # ...its PDUs get an error entry in the answer...
        refused = await self.send_text(self.b, self.bob, self.room_id, "let me in", "b1")

        async def answered() -> Optional[dict]:
            for _origin, answer in self.answers[self.a_name]:
                if refused in answer["pdus"]:
                    return answer["pdus"][refused]
            return None

        result = await self.eventually(answered, "A's answer for B's PDU")
        self.assertIn("server ACL", result["error"])
        self.assertIsNone(await self.a.storage.events.get_event(refused))

        # ...and the room endpoints answer 403 M_FORBIDDEN.
        client = self.b.components.federation.client
        room = quote(self.room_id)
        for path in (f"{F1}/make_join/{room}/{quote(bob_id)}", f"{F1}/make_leave/{room}/{quote(bob_id)}",
                     f"{F1}/state_ids/{room}", f"{F1}/event_auth/{room}/{quote(hello)}"):
            with self.assertRaises(FederationError) as caught:
                await client.get_json(self.a_name, path, {"event_id": [hello]})
            self.assertEqual((caught.exception.status, caught.exception.errcode), (403, "M_FORBIDDEN"), path)
        # Presence is not about a room: it still arrives.
        await self.call(self.b, self.bob, "PUT", f"/presence/{quote(bob_id)}/status",
                        {"presence": "online", "status_msg": "still here"})

        async def presence_on_a() -> Optional[bool]:
            status = await self.call(self.a, self.alice, "GET", f"/presence/{quote(bob_id)}/status")
            return True if status.get("status_msg") == "still here" else None

        await self.eventually(presence_on_a, "bob's presence on A")
