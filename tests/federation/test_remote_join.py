"""A local user joins a room of another server: two real homeservers on loopback (HTTPS, test CA, real
keyrings and X-Matrix authentication), joined by room ID with ``server_name``/``via`` and by remote alias."""

from __future__ import annotations

import os
import socket
from typing import Any, Optional
from urllib.parse import quote

from twisted.trial import unittest

from mxtwisted.events.room_versions import get_room_version
from mxtwisted.events.signing import generate_signing_key, sign_event
from mxtwisted.federation.remote_join import InvalidResponse
from tests.federation.support import make_pki, tls_listener_config
from tests.support.homeserver import RunningHomeserver, start_homeserver

V3 = "/_matrix/client/v3"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def start_named_homeserver(testcase: unittest.TestCase, pki: Any, **overrides: Any) -> RunningHomeserver:
    """A homeserver named ``127.0.0.1:<port>``: federation over HTTPS on that port (test CA), and the client
    API over plain HTTP on another (the first listener, used by the test's client requests). ``overrides``:
    more configuration keys."""
    port = free_port()
    config = tls_listener_config(pki)
    config["listeners"] = [
        {"port": 0, "bind_addresses": ["127.0.0.1"], "tls": False, "resources": [{"names": ["client"]}]},
        {"port": port, "bind_addresses": ["127.0.0.1"], "tls": True, "resources": [{"names": ["federation"]}]},
    ]
    return await start_homeserver(
        testcase, server_name=f"127.0.0.1:{port}", bcrypt_rounds=4,
        rc_message={"per_second": 1000, "burst_count": 1000}, **config, **overrides,
    )


async def start_two_servers(testcase: Any, a_config: Optional[dict] = None) -> None:
    """Two named homeservers federating over HTTPS with one test CA: ``testcase.a`` (``a_name``, with the user
    ``alice``; ``a_config``: more configuration keys for it) and ``testcase.b`` (``b_name``, with ``bob``)."""
    testcase.pki = make_pki(os.path.abspath(testcase.mktemp()))
    testcase.a = await start_named_homeserver(testcase, testcase.pki, **(a_config or {}))
    testcase.b = await start_named_homeserver(testcase, testcase.pki)
    testcase.a_name = testcase.a.config.server_name
    testcase.b_name = testcase.b.config.server_name
    testcase.alice = await testcase.a.register_user("alice")
    testcase.bob = await testcase.b.register_user("bob")


class RemoteJoinTests(unittest.TestCase):
    async def setUp(self) -> None:
        await start_two_servers(self)

    async def call(self, hs: RunningHomeserver, user: dict, method: str, path: str, body: Any = None,
                   expect: int = 200, errcode: Optional[str] = None) -> Any:
        code, resp = await hs.request(method, V3 + path, body, token=user["access_token"])
        self.assertEqual(code, expect, resp)
        if errcode is not None:
            self.assertEqual(resp["errcode"], errcode, resp)
        return resp

    async def public_room(self, **body: Any) -> str:
        body.setdefault("preset", "public_chat")
        return (await self.call(self.a, self.alice, "POST", "/createRoom", body))["room_id"]

    async def assert_joined(self, room_id: str) -> None:
        bob_id = self.bob["user_id"]
        joined = await self.call(self.b, self.bob, "GET", "/joined_rooms")
        self.assertIn(room_id, joined["joined_rooms"])
        state = await self.call(self.b, self.bob, "GET", f"/rooms/{room_id}/state")
        by_key = {(e["type"], e["state_key"]): e for e in state}
        self.assertIn(("m.room.create", ""), by_key)
        self.assertEqual(by_key[("m.room.member", bob_id)]["content"]["membership"], "join")
        self.assertEqual(by_key[("m.room.member", self.alice["user_id"])]["content"]["membership"], "join")
        members_b = await self.call(self.b, self.bob, "GET", f"/rooms/{room_id}/joined_members")
        self.assertEqual(set(members_b["joined"]), {self.alice["user_id"], bob_id})
        sync = await self.call(self.b, self.bob, "GET", "/sync")
        room = sync["rooms"]["join"][room_id]
        sync_members = {
            e["state_key"] for e in room["state"]["events"] + room["timeline"]["events"] if e["type"] == "m.room.member"
        }
        self.assertEqual(sync_members, {self.alice["user_id"], bob_id})
        messages = await self.call(self.b, self.bob, "GET", f"/rooms/{room_id}/messages?dir=b")
        # The join, then the history before it, backfilled from A (tests/federation/test_backfill.py).
        self.assertEqual(messages["chunk"][0]["state_key"], bob_id)
        self.assertEqual(messages["chunk"][-1]["type"], "m.room.create")
        # The resident server has the join too.
        members_a = await self.call(self.a, self.alice, "GET", f"/rooms/{room_id}/joined_members")
        self.assertIn(bob_id, members_a["joined"])

    # -- joins ------------------------------------------------------------------------------------
    async def test_join_by_room_id_with_server_name(self) -> None:
        room_id = await self.public_room(name="Lobby")
        # Unknown on B, and a v12 room ID names no server: nowhere to go.
        await self.call(self.b, self.bob, "POST", f"/join/{quote(room_id)}", {}, expect=404, errcode="M_NOT_FOUND")
        resp = await self.call(self.b, self.bob, "POST", f"/join/{quote(room_id)}?server_name={quote(self.a_name)}", {})
        self.assertEqual(resp, {"room_id": room_id})
        await self.assert_joined(room_id)
        # Now the room is known on B: joining again is local and idempotent.
        await self.call(self.b, self.bob, "POST", f"/rooms/{quote(room_id)}/join", {})

    async def test_join_by_remote_alias(self) -> None:
        room_id = await self.public_room(room_alias_name="lobby")
        alias = f"#lobby:{self.a_name}"
        resp = await self.call(self.b, self.bob, "POST", f"/join/{quote(alias)}", {"reason": "hi"})
        self.assertEqual(resp, {"room_id": room_id})
        await self.assert_joined(room_id)
        state = await self.call(self.b, self.bob, "GET", f"/rooms/{room_id}/state/m.room.member/{quote(self.bob['user_id'])}")
        self.assertEqual(state["reason"], "hi")
        await self.call(self.b, self.bob, "POST", f"/join/{quote('#nothing:' + self.a_name)}", {}, expect=404,
                        errcode="M_NOT_FOUND")

    async def test_join_room_v10_by_room_id_server(self) -> None:
        # A v10 room ID names its server: /rooms/{roomId}/join needs nothing else.
        room_id = await self.public_room(room_version="10")
        self.assertTrue(room_id.endswith(":" + self.a_name))
        await self.call(self.b, self.bob, "POST", f"/rooms/{quote(room_id)}/join", {})
        await self.assert_joined(room_id)

    # -- refusals ---------------------------------------------------------------------------------
    async def test_invite_only_room_is_refused(self) -> None:
        room_id = await self.public_room(preset="private_chat")
        await self.call(self.b, self.bob, "POST", f"/join/{quote(room_id)}?via={quote(self.a_name)}", {}, expect=403,
                        errcode="M_FORBIDDEN")
        joined = await self.call(self.b, self.bob, "GET", "/joined_rooms")
        self.assertEqual(joined["joined_rooms"], [])

    async def test_unreachable_server(self) -> None:
        room_id = await self.public_room()
        nowhere = f"127.0.0.1:{free_port()}"
        await self.call(self.b, self.bob, "POST", f"/join/{quote(room_id)}?via={quote(nowhere)}", {}, expect=502,
                        errcode="M_UNKNOWN")
        # An unreachable server is skipped for the next one.
        await self.call(self.b, self.bob, "POST", f"/join/{quote(room_id)}?via={quote(nowhere)}&via={quote(self.a_name)}", {})
        await self.assert_joined(room_id)

    async def test_tampered_send_join_answer_is_refused(self) -> None:
        room_id = await self.public_room()
        joiner = self.b.components.remote_join
        client = joiner._client
        original_put = client.put_json
        forger = generate_signing_key("t1")
        version = get_room_version(self.a.config.default_room_version)

        async def tampering_put(destination: str, path: str, body: Any, args: Any = None) -> Any:
            resp = await original_put(destination, path, body, args)
            # Re-sign one state event with a key that is not A's: its signature no longer verifies.
            event = resp["state"][0]
            resp["state"][0] = sign_event(dict(event, signatures={}), self.a_name, forger, version)
            return resp

        self.patch(client, "put_json", tampering_put)
        await self.call(self.b, self.bob, "POST", f"/join/{quote(room_id)}?via={quote(self.a_name)}", {}, expect=502)
        joined = await self.call(self.b, self.bob, "GET", "/joined_rooms")
        self.assertEqual(joined["joined_rooms"], [])
        self.assertIsNone(await self.b.storage.events.get_room(room_id))

        # Directly: the check itself names the problem.
        self.patch(client, "put_json", original_put)
        made = await client.get_json(self.a_name, f"/_matrix/federation/v1/make_join/{quote(room_id)}/{quote(self.bob['user_id'])}",
                                     {"ver": [version.identifier]})
        event = await joiner._build_join(made["event"], version, self.bob["user_id"], room_id, None)
        from mxtwisted.events.event import Event

        event_id = Event(event, version).event_id
        resp = await original_put(self.a_name, f"/_matrix/federation/v2/send_join/{quote(room_id)}/{quote(event_id)}", event)
        resp["auth_chain"][0] = sign_event(dict(resp["auth_chain"][0], signatures={}), self.a_name, forger, version)
        with self.assertRaises(InvalidResponse):
            await joiner._check_send_join(resp, event, version, room_id)
