"""Invites and knocks over federation.

Two real matrixhs servers (HTTPS with a test CA, X-Matrix, real keyrings): alice@A invites bob@B, who sees
the invite in /sync with the room's stripped state, joins through the inviter's server and talks; rejects an
invite (also with the inviter unreachable); knocks on A's room and is let in. Then the served ``/v2/invite``,
``make_knock`` and ``send_knock`` with a hand-made peer sending real X-Matrix signed requests: what is
signed and kept, and what is refused.
"""

from __future__ import annotations

from typing import Any, Optional
from urllib.parse import quote

from twisted.internet import reactor
from twisted.internet.task import deferLater
from twisted.trial import unittest

from mxtwisted.events.event import Event
from mxtwisted.events.room_versions import get_room_version
from mxtwisted.events.signing import get_verify_key, sign_event, verify_event_signature
from mxtwisted.federation.client import RequestSendFailed
from mxtwisted.http.errors import MatrixError
from tests.federation import test_remote_join as remote_join
from tests.federation import test_served_rooms as served
from tests.federation import test_two_servers as two
from tests.support.homeserver import RunningHomeserver

F1 = "/_matrix/federation/v1"
F2 = "/_matrix/federation/v2"


class InviteTests(unittest.TestCase):
    # The helpers of the two-server tests (imported through their modules so trial does not run those twice).
    call = remote_join.RemoteJoinTests.call
    eventually = two.TwoServersTests.eventually
    send_text = two.TwoServersTests.send_text
    wait_for_message = two.TwoServersTests.wait_for_message
    since = two.TwoServersTests.since

    async def setUp(self) -> None:
        await remote_join.start_two_servers(self)
        self.alice_id, self.bob_id = self.alice["user_id"], self.bob["user_id"]

    async def tearDown(self) -> None:
        # Let the transactions on their way finish (idle twice in a row, 0.2s apart), then stop both senders
        # before the rest of the servers: a transaction started by another service stopping (a presence EDU
        # may take a queued event along) and interrupted by the shutdown would leave a retry scheduled.
        senders = [hs.components.federation_sender for hs in (self.a, self.b)]
        quiet: dict[str, int] = {"rounds": 0}

        async def idle() -> Optional[bool]:
            busy = any(q.loop is not None or q.request is not None for s in senders for q in s._queues.values())
            quiet["rounds"] = 0 if busy else quiet["rounds"] + 1
            if quiet["rounds"] >= 2:
                return True
            await deferLater(reactor, 0.2, lambda: None)
            return None

        await self.eventually(idle, "the federation senders to be idle")
        for sender in senders:
            await sender.stopService()

    # -- helpers ------------------------------------------------------------------------------------
    async def private_room(self, **body: Any) -> str:
        body.setdefault("preset", "private_chat")
        return (await self.call(self.a, self.alice, "POST", "/createRoom", body))["room_id"]

    async def invite_bob(self, room_id: str, **expect: Any) -> Any:
        return await self.call(self.a, self.alice, "POST", f"/rooms/{quote(room_id)}/invite", {"user_id": self.bob_id},
                               **expect)

    async def bob_sync_until(self, section: str, room_id: str, since: Optional[str]) -> dict:
        """Bob's /sync (long-polling from ``since``) until ``room_id`` is in ``rooms.<section>``; returns it."""

        async def check() -> Optional[dict]:
            path = "/sync?timeout=500" + (f"&since={quote(since)}" if since else "")
            sync = await self.call(self.b, self.bob, "GET", path)
            return sync["rooms"][section].get(room_id)

        return await self.eventually(check, f"{room_id} in rooms.{section} of bob's /sync")

    async def membership_on_a(self, room_id: str, user_id: str) -> Optional[str]:
        code, resp = await self.a.request("GET", f"{remote_join.V3}/rooms/{quote(room_id)}/state/m.room.member/{quote(user_id)}",
                                          token=self.alice["access_token"])
        return resp.get("membership") if code == 200 else None

    async def wait_membership_on_a(self, room_id: str, user_id: str, membership: str) -> None:
        async def check() -> Optional[bool]:
            return True if await self.membership_on_a(room_id, user_id) == membership else None

        await self.eventually(check, f"{user_id} {membership} in {room_id} on A")

    async def talk(self, room_id: str) -> None:
        """A message each way, seen on the other server."""
        hello = await self.send_text(self.a, self.alice, room_id, "hi bob", "a1")
        self.assertEqual((await self.wait_for_message(self.b, self.bob, room_id, hello))["content"]["body"], "hi bob")
        reply = await self.send_text(self.b, self.bob, room_id, "hi alice", "b1")
        self.assertEqual((await self.wait_for_message(self.a, self.alice, room_id, reply))["sender"], self.bob_id)

    # -- inviting -----------------------------------------------------------------------------------------
    async def test_invite_join_and_talk(self) -> None:
        room_id = await self.private_room(name="Secret garden")
        since = await self.since(self.b, self.bob)
        await self.invite_bob(room_id)
        # A keeps the invite with both signatures, and it is bob's membership there.
        self.assertEqual(await self.membership_on_a(room_id, self.bob_id), "invite")
        event_id = (await self.a.storage.events.get_members(room_id))[self.bob_id]
        stored = await self.a.storage.events.get_event(event_id)
        self.assertEqual(set(stored.json["signatures"]), {self.a_name, self.b_name})

        invite = await self.bob_sync_until("invite", room_id, since)
        events = invite["invite_state"]["events"]
        by_type = {e["type"]: e for e in events}
        self.assertEqual(by_type["m.room.name"]["content"], {"name": "Secret garden"})
        self.assertIn("m.room.create", by_type)
        member = [e for e in events if e["type"] == "m.room.member" and e["state_key"] == self.bob_id]
        self.assertEqual((member[0]["content"]["membership"], member[0]["sender"]), ("invite", self.alice_id))
        for e in events:
            self.assertLessEqual(set(e), {"type", "state_key", "sender", "content"})
        # The room itself is still unknown on B.
        self.assertIsNone(await self.b.storage.events.get_room(room_id))
        await self.call(self.b, self.bob, "GET", f"/rooms/{quote(room_id)}/state", expect=404)

        # A v12 room ID names no server: the invite's sender's server is where to join.
        since = await self.since(self.b, self.bob)
        await self.call(self.b, self.bob, "POST", f"/rooms/{quote(room_id)}/join", {})
        joined = await self.bob_sync_until("join", room_id, since)
        self.assertTrue(joined["state"]["events"] or joined["timeline"]["events"])
        await self.wait_membership_on_a(room_id, self.bob_id, "join")
        await self.talk(room_id)

    async def test_reject_invite(self) -> None:
        room_id = await self.private_room(name="Unwanted")
        await self.invite_bob(room_id)
        since = await self.since(self.b, self.bob)
        self.assertIn(room_id, (await self.call(self.b, self.bob, "GET", "/sync"))["rooms"]["invite"])
        await self.call(self.b, self.bob, "POST", f"/rooms/{quote(room_id)}/leave", {"reason": "no thanks"})
        await self.bob_sync_until("leave", room_id, since)
        sync = await self.call(self.b, self.bob, "GET", "/sync")
        self.assertNotIn(room_id, sync["rooms"]["invite"])
        # A has the rejection (send_leave), with its reason.
        await self.wait_membership_on_a(room_id, self.bob_id, "leave")
        # Invited again, bob can accept this time.
        await self.invite_bob(room_id)
        await self.bob_sync_until("invite", room_id, None)
        await self.call(self.b, self.bob, "POST", f"/rooms/{quote(room_id)}/join", {})
        await self.wait_membership_on_a(room_id, self.bob_id, "join")

    async def test_reject_invite_when_inviter_unreachable(self) -> None:
        room_id = await self.private_room()
        await self.invite_bob(room_id)
        since = await self.since(self.b, self.bob)

        async def unreachable(destination: str, path: str, args: Any = None) -> Any:
            raise RequestSendFailed(destination, ConnectionRefusedError())

        self.patch(self.b.components.remote_membership._client, "get_json", unreachable)
        await self.call(self.b, self.bob, "POST", f"/rooms/{quote(room_id)}/leave", {})
        await self.bob_sync_until("leave", room_id, since)
        # Only B knows: A still has the invite.
        self.assertEqual(await self.membership_on_a(room_id, self.bob_id), "invite")

    async def test_invite_refused_or_unreachable(self) -> None:
        room_id = await self.private_room()

        async def no_invites(sender: str, room: str, target: str, membership: str, current: Optional[str]) -> None:
            if membership == "invite":
                raise MatrixError(403, "M_FORBIDDEN", "Bob takes no invites")

        self.b.components.membership.add_check(no_invites)
        resp = await self.invite_bob(room_id, expect=403, errcode="M_FORBIDDEN")
        self.assertEqual(resp["error"], "Bob takes no invites")
        self.assertIsNone(await self.membership_on_a(room_id, self.bob_id))
        nowhere = f"127.0.0.1:{remote_join.free_port()}"
        await self.call(self.a, self.alice, "POST", f"/rooms/{quote(room_id)}/invite", {"user_id": f"@carol:{nowhere}"},
                        expect=502, errcode="M_UNKNOWN")
        self.assertIsNone(await self.membership_on_a(room_id, f"@carol:{nowhere}"))

    # -- knocking -----------------------------------------------------------------------------------------
    async def test_knock_then_invited_and_joined(self) -> None:
        room_id = await self.private_room(
            name="Knock knock", initial_state=[{"type": "m.room.join_rules", "state_key": "", "content": {"join_rule": "knock"}}]
        )
        since = await self.since(self.b, self.bob)
        # Not in the room and no server to ask: nowhere to knock.
        await self.call(self.b, self.bob, "POST", f"/knock/{quote(room_id)}", {}, expect=404, errcode="M_NOT_FOUND")
        resp = await self.call(self.b, self.bob, "POST", f"/knock/{quote(room_id)}?via={quote(self.a_name)}",
                               {"reason": "let me in"})
        self.assertEqual(resp, {"room_id": room_id})
        knock = await self.bob_sync_until("knock", room_id, since)
        by_type = {e["type"]: e for e in knock["knock_state"]["events"]}
        self.assertEqual(by_type["m.room.name"]["content"], {"name": "Knock knock"})
        self.assertEqual(by_type["m.room.join_rules"]["content"], {"join_rule": "knock"})
        self.assertEqual(by_type["m.room.member"]["content"]["membership"], "knock")
        self.assertEqual(await self.membership_on_a(room_id, self.bob_id), "knock")

        # Alice lets bob in: the invite goes to B, bob joins through A.
        await self.invite_bob(room_id)
        await self.bob_sync_until("invite", room_id, None)
        await self.call(self.b, self.bob, "POST", f"/join/{quote(room_id)}", {})
        await self.wait_membership_on_a(room_id, self.bob_id, "join")
        await self.talk(room_id)

    async def test_rescind_knock(self) -> None:
        room_id = await self.private_room(
            initial_state=[{"type": "m.room.join_rules", "state_key": "", "content": {"join_rule": "knock"}}]
        )
        await self.call(self.b, self.bob, "POST", f"/knock/{quote(room_id)}?server_name={quote(self.a_name)}", {})
        since = await self.since(self.b, self.bob)
        await self.call(self.b, self.bob, "POST", f"/rooms/{quote(room_id)}/leave", {})
        await self.wait_membership_on_a(room_id, self.bob_id, "leave")
        await self.bob_sync_until("leave", room_id, since)

    async def test_knock_refused(self) -> None:
        # An invite-only room: A refuses the knock, and B passes the 403 on.
        room_id = await self.private_room()
        await self.call(self.b, self.bob, "POST", f"/knock/{quote(room_id)}?via={quote(self.a_name)}", {}, expect=403,
                        errcode="M_FORBIDDEN")
        sync = await self.call(self.b, self.bob, "GET", "/sync")
        self.assertNotIn(room_id, sync["rooms"]["knock"])


class ServedInviteTests(unittest.TestCase):
    """``/v2/invite``, ``make_knock`` and ``send_knock`` served to a hand-made peer."""

    fed = served.ServedRoomsTests.fed
    client = served.ServedRoomsTests.client
    create_room = served.ServedRoomsTests.create_room

    async def setUp(self) -> None:
        self.keyring = served.StaticKeyring()
        self.hs: RunningHomeserver = await served.start_federating_homeserver(self, self.keyring)
        self.remote = served.RemoteServer(served.REMOTE, self.hs)
        self.stranger = served.RemoteServer(served.STRANGER, self.hs)
        self.keyring.add(served.REMOTE, self.remote.key)
        self.keyring.add(served.STRANGER, self.stranger.key)
        self.alice = await self.hs.register_user("alice")
        self.version = get_room_version("10")
        self.room_id = f"!garden:{served.REMOTE}"

    def remote_event(self, event_type: str, state_key: str, content: dict, sender: Optional[str] = None,
                     server: Optional[served.RemoteServer] = None) -> tuple[dict, str]:
        """A PDU of the remote room, signed by ``server`` (the remote by default)."""
        server = server or self.remote
        event = {
            "type": event_type, "room_id": self.room_id, "sender": sender or f"@carol:{served.REMOTE}",
            "state_key": state_key, "content": content, "origin": server.name, "origin_server_ts": 1_700_000_000_000,
            "depth": 5, "prev_events": ["$prev"], "auth_events": ["$create", "$power"],
        }
        signed = sign_event(event, server.name, server.key, self.version)
        return signed, Event(signed, self.version).event_id

    def invite_body(self, event: dict) -> dict:
        create, _ = self.remote_event("m.room.create", "", {"room_version": "10", "creator": f"@carol:{served.REMOTE}"})
        return {
            "room_version": "10",
            "event": event,
            "invite_room_state": [
                create,
                {"type": "m.room.name", "state_key": "", "sender": f"@carol:{served.REMOTE}", "content": {"name": "Garden"}},
                # A create event with a bad signature is dropped (the create event is the one entry
                # checked: it proves the room's version; the rest is an untrusted preview).
                dict(create, content={"room_version": "10", "creator": f"@mallory:{served.REMOTE}"}),
            ],
        }

    async def test_invite_is_signed_and_shown(self) -> None:
        alice_id = self.alice["user_id"]
        event, event_id = self.remote_event("m.room.member", alice_id, {"membership": "invite"})
        resp = await self.fed("PUT", f"{F2}/invite/{quote(self.room_id)}/{quote(event_id)}", self.invite_body(event))
        signed = resp["event"]
        self.assertEqual({k: v for k, v in signed.items() if k != "signatures"},
                         {k: v for k, v in event.items() if k != "signatures"})
        self.assertEqual(signed["signatures"][served.REMOTE], event["signatures"][served.REMOTE])
        verify_event_signature(signed, "test.local", get_verify_key(self.hs.service.signing_keys[0]), self.version)
        # Kept as alice's invite, the room still unknown.
        sync = await self.client("GET", "/sync")
        state = sync["rooms"]["invite"][self.room_id]["invite_state"]["events"]
        self.assertEqual(
            sorted((e["type"], e.get("content", {}).get("name")) for e in state),
            [("m.room.create", None), ("m.room.member", None), ("m.room.name", "Garden")],
        )
        self.assertIsNone(await self.hs.storage.events.get_room(self.room_id))
        # The same invite again is fine (a retry).
        await self.fed("PUT", f"{F2}/invite/{quote(self.room_id)}/{quote(event_id)}", self.invite_body(event))

    async def test_invite_refusals(self) -> None:
        alice_id = self.alice["user_id"]
        path = f"{F2}/invite/{quote(self.room_id)}"
        # Signed with a key that is not the remote's.
        impostor = served.RemoteServer(served.REMOTE, self.hs)
        forged, forged_id = self.remote_event("m.room.member", alice_id, {"membership": "invite"}, server=impostor)
        await self.fed("PUT", f"{path}/{quote(forged_id)}", self.invite_body(forged), expect=400, errcode="M_INVALID_PARAM")
        # A sender of another server than the one asking.
        other, other_id = self.remote_event("m.room.member", alice_id, {"membership": "invite"},
                                            sender=f"@mallory:{served.STRANGER}", server=self.stranger)
        await self.fed("PUT", f"{path}/{quote(other_id)}", self.invite_body(other), expect=400, errcode="M_INVALID_PARAM")
        # Not an invite, not for a user of ours, not the path's event.
        join, join_id = self.remote_event("m.room.member", alice_id, {"membership": "join"})
        await self.fed("PUT", f"{path}/{quote(join_id)}", self.invite_body(join), expect=400, errcode="M_INVALID_PARAM")
        elsewhere, elsewhere_id = self.remote_event("m.room.member", "@bob:elsewhere.test", {"membership": "invite"})
        await self.fed("PUT", f"{path}/{quote(elsewhere_id)}", self.invite_body(elsewhere), expect=400,
                       errcode="M_INVALID_PARAM")
        good, good_id = self.remote_event("m.room.member", alice_id, {"membership": "invite"})
        await self.fed("PUT", f"{path}/$other", self.invite_body(good), expect=400, errcode="M_INVALID_PARAM")
        # A room version this server does not implement.
        resp = await self.fed("PUT", f"{path}/{quote(good_id)}", dict(self.invite_body(good), room_version="999"),
                              expect=400, errcode="M_INCOMPATIBLE_ROOM_VERSION")
        self.assertEqual(resp["room_version"], "999")
        # A user this server does not have.
        nobody, nobody_id = self.remote_event("m.room.member", "@nobody:test.local", {"membership": "invite"})
        await self.fed("PUT", f"{path}/{quote(nobody_id)}", self.invite_body(nobody), expect=404, errcode="M_NOT_FOUND")
        # None of them became an invite.
        sync = await self.client("GET", "/sync")
        self.assertEqual(sync["rooms"]["invite"], {})

    async def test_invite_to_a_known_room_obeys_its_server_acl(self) -> None:
        # A room of ours whose ACL denies the remote server: its invites are refused (spec: /invite is
        # protected by the room's ACL), while an allowed server's are not.
        room_id = await self.create_room()
        await self.client("PUT", f"/rooms/{room_id}/state/m.room.server_acl", {"allow": ["*"], "deny": [served.REMOTE]})
        self.room_id = room_id
        bob = await self.hs.register_user("bob")
        version = self.hs.config.default_room_version
        self.version = get_room_version(version)
        event, event_id = self.remote_event("m.room.member", bob["user_id"], {"membership": "invite"})
        body = dict(self.invite_body(event), room_version=version)
        await self.fed("PUT", f"{F2}/invite/{quote(room_id)}/{quote(event_id)}", body, expect=403, errcode="M_FORBIDDEN")

    async def test_v12_invite_needs_the_create_event(self) -> None:
        version = get_room_version("12")
        create = sign_event(
            {"type": "m.room.create", "state_key": "", "sender": f"@carol:{served.REMOTE}", "content": {"room_version": "12"},
             "origin_server_ts": 1_700_000_000_000, "depth": 1, "prev_events": [], "auth_events": []},
            served.REMOTE, self.remote.key, version,
        )
        room_id = "!" + Event(create, version).event_id[1:]
        event = sign_event(
            {"type": "m.room.member", "room_id": room_id, "sender": f"@carol:{served.REMOTE}",
             "state_key": self.alice["user_id"], "content": {"membership": "invite"}, "origin_server_ts": 1_700_000_000_001,
             "origin": served.REMOTE, "depth": 5, "prev_events": ["$prev"], "auth_events": ["$power"]},
            served.REMOTE, self.remote.key, version,
        )
        event_id = Event(event, version).event_id
        path = f"{F2}/invite/{quote(room_id)}/{quote(event_id)}"
        body = {"room_version": "12", "event": event, "invite_room_state": []}
        await self.fed("PUT", path, body, expect=400, errcode="M_INVALID_PARAM")
        await self.fed("PUT", path, dict(body, invite_room_state=[create]))
        sync = await self.client("GET", "/sync")
        self.assertIn(room_id, sync["rooms"]["invite"])

    async def test_make_knock_and_send_knock(self) -> None:
        version = self.hs.config.default_room_version
        room_id = await self.create_room(
            preset="private_chat", name="Knockable",
            initial_state=[{"type": "m.room.join_rules", "state_key": "", "content": {"join_rule": "knock"}}],
        )
        user = f"@bob:{served.REMOTE}"
        await self.fed("GET", f"{F1}/make_knock/{room_id}/{user}", expect=400, errcode="M_MISSING_PARAM")
        resp = await self.fed("GET", f"{F1}/make_knock/{room_id}/{user}?ver=1", expect=400,
                              errcode="M_INCOMPATIBLE_ROOM_VERSION")
        self.assertEqual(resp["room_version"], version)
        await self.fed("GET", f"{F1}/make_knock/{room_id}/@bob:elsewhere.test?ver={version}", expect=403,
                       errcode="M_FORBIDDEN")
        made = await self.fed("GET", f"{F1}/make_knock/{room_id}/{user}?ver={version}")
        self.assertEqual(made["event"]["content"], {"membership": "knock"})
        event, event_id = self.remote.sign(made["event"], made["room_version"])
        resp = await self.fed("PUT", f"{F1}/send_knock/{room_id}/{event_id}", event)
        state = {e["type"]: e for e in resp["knock_room_state"]}
        self.assertEqual(state["m.room.name"]["content"], {"name": "Knockable"})
        # Full PDUs (spec v1.16), the create event included.
        self.assertIn("signatures", state["m.room.create"])
        members = await self.client("GET", f"/rooms/{room_id}/members?membership=knock")
        self.assertEqual([e["state_key"] for e in members["chunk"]], [user])

    async def test_knock_refusals(self) -> None:
        version = self.hs.config.default_room_version
        user = f"@bob:{served.REMOTE}"
        # Not knockable (invite only), and not a room version with knocks.
        private = await self.create_room(preset="private_chat")
        await self.fed("GET", f"{F1}/make_knock/{private}/{user}?ver={version}", expect=403, errcode="M_FORBIDDEN")
        old = await self.create_room(
            preset="private_chat", room_version="6",
            initial_state=[{"type": "m.room.join_rules", "state_key": "", "content": {"join_rule": "knock"}}],
        )
        await self.fed("GET", f"{F1}/make_knock/{old}/{user}?ver=6", expect=403, errcode="M_FORBIDDEN")
        await self.fed("GET", f"{F1}/make_knock/!nope:test.local/{user}?ver={version}", expect=404, errcode="M_NOT_FOUND")
