"""Clients asking about another server, through two real matrixhs servers over HTTPS (test CA, real keyrings
and X-Matrix): the other server's published room directory, profiles, aliases, OpenID tokens checked by the
other server, and space hierarchies with a child room on the other server."""

from __future__ import annotations

from typing import Any, Optional
from urllib.parse import quote

from twisted.trial import unittest

from mxtwisted.federation.client import FederationError
from tests.federation import test_remote_join as remote_join
from tests.federation.test_remote_join import free_port
from tests.support.homeserver import RunningHomeserver
from tests.support.spec import spec_problems

V1 = "/_matrix/client/v1"
V3 = "/_matrix/client/v3"
F1 = "/_matrix/federation/v1"


class RemoteQueryTests(unittest.TestCase):
    # The client helpers of the remote join tests (through the module: trial must not run RemoteJoinTests here).
    call = remote_join.RemoteJoinTests.call
    public_room = remote_join.RemoteJoinTests.public_room

    async def setUp(self) -> None:
        # A shares its room directory over federation (off by default, as in Synapse); B does not.
        await remote_join.start_two_servers(self, a_config={"allow_public_rooms_over_federation": True})

    async def checked(self, hs: RunningHomeserver, user: Optional[dict], method: str, path: str, body: Any = None,
                      expect: int = 200, errcode: Optional[str] = None, spec: bool = True) -> Any:
        """One client request (``path`` with its version prefix), its status, errcode and spec conformance."""
        code, resp = await hs.request(method, path, body, token=user["access_token"] if user else None)
        self.assertEqual(code, expect, resp)
        if errcode is not None:
            self.assertEqual(resp["errcode"], errcode, resp)
        if spec:
            # Error statuses an operation does not document (it lists only some) are not counted.
            problems = [p for p in spec_problems(method, path, code, resp) if code < 400 or "is not documented" not in p]
            self.assertEqual(problems, [])
        return resp

    # -- published room directory ---------------------------------------------------------------------
    async def test_remote_public_rooms(self) -> None:
        lobby = await self.public_room(name="Lobby", topic="Say hi", visibility="public")
        games = await self.public_room(name="Games", visibility="public")
        await self.call(self.a, self.alice, "POST", "/createRoom", {"preset": "private_chat", "name": "Secret"})
        server = quote(self.a_name)
        resp = await self.checked(self.b, self.bob, "GET", f"{V3}/publicRooms?server={server}")
        self.assertEqual({e["room_id"] for e in resp["chunk"]}, {lobby, games})
        self.assertEqual(resp["total_room_count_estimate"], 2)
        # Pagination tokens are the remote's, passed back to it.
        page = await self.checked(self.b, self.bob, "GET", f"{V3}/publicRooms?server={server}&limit=1")
        self.assertEqual(len(page["chunk"]), 1)
        rest = await self.checked(self.b, self.bob, "GET",
                                  f"{V3}/publicRooms?server={server}&limit=1&since={quote(page['next_batch'])}")
        self.assertEqual({page["chunk"][0]["room_id"], rest["chunk"][0]["room_id"]}, {lobby, games})
        # POST: the remote filters.
        resp = await self.checked(self.b, self.bob, "POST", f"{V3}/publicRooms?server={server}",
                                  {"filter": {"generic_search_term": "hi"}})
        self.assertEqual([e["room_id"] for e in resp["chunk"]], [lobby])
        self.assertEqual(resp["chunk"][0]["name"], "Lobby")
        # A bad token is the client's mistake: the remote's 400 is passed on.
        await self.checked(self.b, self.bob, "GET", f"{V3}/publicRooms?server={server}&since=garbage", expect=400,
                           errcode="M_INVALID_PARAM")
        # Asking another server needs an access token here (no open proxy); our own name is local.
        await self.checked(self.b, None, "GET", f"{V3}/publicRooms?server={server}", expect=401,
                           errcode="M_MISSING_TOKEN")
        resp = await self.checked(self.b, None, "GET", f"{V3}/publicRooms?server={quote(self.b_name)}")
        self.assertEqual(resp["chunk"], [])
        # An unreachable server: 502.
        nowhere = quote(f"127.0.0.1:{free_port()}")
        await self.checked(self.b, self.bob, "GET", f"{V3}/publicRooms?server={nowhere}", expect=502,
                           errcode="M_UNKNOWN")

    async def test_served_public_rooms(self) -> None:
        # The federation endpoints themselves, as B's federation client sees them (X-Matrix signed).
        lobby = await self.public_room(name="Lobby", creation_content={"type": "m.space"}, visibility="public")
        other = await self.public_room(name="Other", visibility="public")
        client = self.b.components.federation.client
        resp = await client.get_json(self.a_name, F1 + "/publicRooms", {"limit": 0})
        self.assertEqual(spec_problems("GET", F1 + "/publicRooms", 200, resp, "server-server.json"), [])
        self.assertEqual({e["room_id"] for e in resp["chunk"]}, {lobby, other})
        resp = await client.post_json(self.a_name, F1 + "/publicRooms", {"filter": {"room_types": ["m.space"]}})
        self.assertEqual(spec_problems("POST", F1 + "/publicRooms", 200, resp, "server-server.json"), [])
        self.assertEqual([(e["room_id"], e["room_type"]) for e in resp["chunk"]], [(lobby, "m.space")])
        resp = await client.post_json(self.a_name, F1 + "/publicRooms", {"third_party_instance_id": "irc"})
        self.assertEqual(resp, {"chunk": [], "total_room_count_estimate": 0})
        with self.assertRaises(FederationError) as caught:
            await client.get_json(self.a_name, F1 + "/publicRooms", {"limit": "x"})
        self.assertEqual((caught.exception.status, caught.exception.errcode), (400, "M_INVALID_PARAM"))

    async def test_directory_and_profiles_can_be_kept_from_other_servers(self) -> None:
        # B keeps its directory (the default) and, here, its profiles to itself: 403 M_FORBIDDEN for A.
        client = self.a.components.federation.client
        with self.assertRaises(FederationError) as caught:
            await client.get_json(self.b_name, F1 + "/publicRooms")
        self.assertEqual((caught.exception.status, caught.exception.errcode), (403, "M_FORBIDDEN"))
        with self.assertRaises(FederationError) as caught:
            await client.post_json(self.b_name, F1 + "/publicRooms", {})
        self.assertEqual(caught.exception.status, 403)
        c = await remote_join.start_named_homeserver(self, self.pki, allow_profile_lookup_over_federation=False)
        carol = await c.register_user("carol")
        with self.assertRaises(FederationError) as caught:
            await client.get_json(c.config.server_name, F1 + "/query/profile", {"user_id": carol["user_id"]})
        self.assertEqual((caught.exception.status, caught.exception.errcode), (403, "M_FORBIDDEN"))

    # -- profiles and aliases -------------------------------------------------------------------------
    async def test_remote_profile(self) -> None:
        alice = self.alice["user_id"]
        await self.call(self.a, self.alice, "PUT", f"/profile/{quote(alice)}/displayname", {"displayname": "Alice A"})
        resp = await self.checked(self.b, self.bob, "GET", f"{V3}/profile/{quote(alice)}")
        self.assertEqual(resp, {"displayname": "Alice A"})
        resp = await self.checked(self.b, None, "GET", f"{V3}/profile/{quote(alice)}/displayname")
        self.assertEqual(resp, {"displayname": "Alice A"})
        await self.checked(self.b, self.bob, "GET", f"{V3}/profile/{quote(alice)}/avatar_url", expect=404,
                           errcode="M_NOT_FOUND")
        await self.checked(self.b, self.bob, "GET", f"{V3}/profile/{quote('@nobody:' + self.a_name)}", expect=404,
                           errcode="M_NOT_FOUND")
        nowhere = f"@x:127.0.0.1:{free_port()}"
        await self.checked(self.b, self.bob, "GET", f"{V3}/profile/{quote(nowhere)}", expect=502, errcode="M_UNKNOWN")

    async def test_remote_alias(self) -> None:
        room_id = await self.public_room(room_alias_name="lobby")
        alias = f"#lobby:{self.a_name}"
        resp = await self.checked(self.b, None, "GET", f"{V3}/directory/room/{quote(alias)}")
        self.assertEqual(resp, {"room_id": room_id, "servers": [self.a_name]})
        await self.checked(self.b, self.bob, "GET", f"{V3}/directory/room/{quote('#nothing:' + self.a_name)}",
                           expect=404, errcode="M_NOT_FOUND")
        await self.checked(self.b, self.bob, "PUT", f"{V3}/directory/room/{quote('#mine:' + self.a_name)}",
                           {"room_id": room_id}, expect=400, errcode="M_INVALID_PARAM")
        await self.checked(self.b, self.bob, "DELETE", f"{V3}/directory/room/{quote(alias)}", expect=404,
                           errcode="M_NOT_FOUND")
        # Still there on A.
        await self.checked(self.a, None, "GET", f"{V3}/directory/room/{quote(alias)}")

    # -- OpenID -----------------------------------------------------------------------------------------
    async def test_openid_token_checked_by_the_other_server(self) -> None:
        alice = self.alice["user_id"]
        token = await self.checked(self.a, self.alice, "POST", f"{V3}/user/{quote(alice)}/openid/request_token", {})
        self.assertEqual(token["token_type"], "Bearer")
        self.assertEqual(token["matrix_server_name"], self.a_name)
        self.assertEqual(token["expires_in"], 3600)
        # B (as a third party would) asks A who the token belongs to, at the server name Alice named.
        client = self.b.components.federation.client
        info = await client.get_json(token["matrix_server_name"], F1 + "/openid/userinfo",
                                     {"access_token": token["access_token"]})
        self.assertEqual(info, {"sub": alice})
        self.assertEqual(spec_problems("GET", F1 + "/openid/userinfo", 200, info, "server-server.json"), [])
        # It is no access token, and B cannot vouch for it.
        await self.checked(self.a, {"access_token": token["access_token"]}, "GET", f"{V3}/account/whoami",
                           expect=401, errcode="M_UNKNOWN_TOKEN")
        with self.assertRaises(FederationError) as caught:
            await self.a.components.federation.client.get_json(
                self.b_name, F1 + "/openid/userinfo", {"access_token": token["access_token"]}
            )
        self.assertEqual((caught.exception.status, caught.exception.errcode), (401, "M_UNKNOWN_TOKEN"))

    # -- spaces -----------------------------------------------------------------------------------------
    async def add_child(self, hs: RunningHomeserver, user: dict, space: str, child: str, via: list[str],
                        **content: Any) -> None:
        await self.call(hs, user, "PUT", f"/rooms/{quote(space)}/state/m.space.child/{quote(child)}",
                        dict(content, via=via))

    async def test_hierarchy_with_a_remote_child(self) -> None:
        space = await self.public_room(name="Space", creation_content={"type": "m.space"})
        local_child = await self.public_room(name="Local child")
        remote_child = (await self.call(self.b, self.bob, "POST", "/createRoom",
                                        {"preset": "public_chat", "name": "On B"}))["room_id"]
        await self.add_child(self.a, self.alice, space, local_child, [self.a_name], order="b")
        await self.add_child(self.a, self.alice, space, remote_child, [self.b_name], order="a", suggested=True)
        resp = await self.checked(self.a, self.alice, "GET", f"{V1}/rooms/{quote(space)}/hierarchy")
        rooms = resp["rooms"]
        self.assertEqual([r["room_id"] for r in rooms], [space, remote_child, local_child])
        self.assertEqual(rooms[0]["room_type"], "m.space")
        self.assertEqual([c["state_key"] for c in rooms[0]["children_state"]], [remote_child, local_child])
        # The remote child's summary came from B.
        self.assertEqual(rooms[1]["name"], "On B")
        self.assertEqual(rooms[1]["num_joined_members"], 1)
        self.assertEqual(rooms[1]["children_state"], [])
        self.assertNotIn("next_batch", resp)
        # Pages of one room, continued with next_batch.
        seen = []
        path = f"{V1}/rooms/{quote(space)}/hierarchy?limit=1"
        token: Optional[str] = None
        while True:
            page = await self.checked(self.a, self.alice, "GET", path + (f"&from={quote(token)}" if token else ""))
            seen += [r["room_id"] for r in page["rooms"]]
            token = page.get("next_batch")
            if token is None:
                break
        self.assertEqual(seen, [space, remote_child, local_child])
        resp = await self.checked(self.a, self.alice, "GET",
                                  f"{V1}/rooms/{quote(space)}/hierarchy?suggested_only=true")
        self.assertEqual([r["room_id"] for r in resp["rooms"]], [space, remote_child])

    async def test_served_hierarchy(self) -> None:
        space = await self.public_room(name="Space", creation_content={"type": "m.space"})
        public = await self.public_room(name="Public")
        private = (await self.call(self.a, self.alice, "POST", "/createRoom", {"preset": "private_chat"}))["room_id"]
        await self.add_child(self.a, self.alice, space, public, [self.a_name], suggested=True)
        await self.add_child(self.a, self.alice, space, private, [self.a_name])
        await self.add_child(self.a, self.alice, space, "!unknown:elsewhere.example", ["elsewhere.example"])
        client = self.b.components.federation.client
        path = f"{F1}/hierarchy/{quote(space, safe='')}"
        resp = await client.get_json(self.a_name, path)
        self.assertEqual(spec_problems("GET", path, 200, resp, "server-server.json"), [])
        self.assertEqual(resp["room"]["room_id"], space)
        self.assertEqual(len(resp["room"]["children_state"]), 3)
        self.assertEqual([c["room_id"] for c in resp["children"]], [public])
        self.assertEqual(resp["inaccessible_children"], [private])
        resp = await client.get_json(self.a_name, path, {"suggested_only": True})
        self.assertEqual([c["state_key"] for c in resp["room"]["children_state"]], [public])
        self.assertEqual(resp["inaccessible_children"], [])
        # A room B may not see, and an unknown one: 404.
        for room_id in (private, "!nothing:" + self.a_name):
            with self.assertRaises(FederationError) as caught:
                await client.get_json(self.a_name, f"{F1}/hierarchy/{quote(room_id, safe='')}")
            self.assertEqual((caught.exception.status, caught.exception.errcode), (404, "M_NOT_FOUND"))
