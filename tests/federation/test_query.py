"""Federation queries over real HTTP with X-Matrix signed requests: room aliases and profiles."""

from __future__ import annotations

from urllib.parse import quote

from twisted.trial import unittest

from tests.federation.test_served_rooms import (
    REMOTE,
    RemoteServer,
    StaticKeyring,
    spec_problems,
    start_federating_homeserver,
)

F1 = "/_matrix/federation/v1"
V3 = "/_matrix/client/v3"


class FederationQueryTests(unittest.TestCase):
    async def setUp(self) -> None:
        keyring = StaticKeyring()
        self.hs = await start_federating_homeserver(self, keyring)
        self.remote = RemoteServer(REMOTE, self.hs)
        keyring.add(REMOTE, self.remote.key)
        self.alice = await self.hs.register_user("alice")

    async def client(self, method: str, path: str, body=None):
        code, resp = await self.hs.request(method, V3 + path, body, token=self.alice["access_token"])
        self.assertEqual(code, 200, resp)
        return resp

    async def query(self, path: str, expect: int = 200, errcode: str | None = None):
        code, resp = await self.remote.request("GET", F1 + path)
        self.assertEqual(code, expect, resp)
        if errcode is not None:
            self.assertEqual(resp["errcode"], errcode)
        if expect == 200:
            self.assertEqual(spec_problems("GET", F1 + path, code, resp), [])
        return resp

    async def test_directory(self) -> None:
        room_id = (await self.client("POST", "/createRoom", {"preset": "public_chat"}))["room_id"]
        await self.client("PUT", f"/directory/room/{quote('#lobby:test.local')}", {"room_id": room_id})
        resp = await self.query(f"/query/directory?room_alias={quote('#lobby:test.local')}")
        self.assertEqual(resp, {"room_id": room_id, "servers": ["test.local"]})
        await self.query(f"/query/directory?room_alias={quote('#nothing:test.local')}", 404, "M_NOT_FOUND")
        await self.query(f"/query/directory?room_alias={quote('#lobby:elsewhere.test')}", 404, "M_NOT_FOUND")
        await self.query("/query/directory", 400, "M_MISSING_PARAM")
        await self.query("/query/directory?room_alias=lobby", 400, "M_INVALID_PARAM")
        code, resp = await self.remote.request("GET", F1 + "/query/directory?room_alias=%23lobby%3Atest.local", sign=False)
        self.assertEqual((code, resp["errcode"]), (401, "M_UNAUTHORIZED"))

    async def test_profile(self) -> None:
        alice = self.alice["user_id"]
        await self.client("PUT", f"/profile/{alice}/displayname", {"displayname": "Alice"})
        resp = await self.query(f"/query/profile?user_id={quote(alice)}")
        self.assertEqual(resp, {"displayname": "Alice"})
        resp = await self.query(f"/query/profile?user_id={quote(alice)}&field=displayname")
        self.assertEqual(resp, {"displayname": "Alice"})
        await self.query(f"/query/profile?user_id={quote(alice)}&field=avatar_url", 404, "M_NOT_FOUND")
        await self.query(f"/query/profile?user_id={quote('@nobody:test.local')}", 404, "M_NOT_FOUND")
        await self.query(f"/query/profile?user_id={quote('@bob:' + REMOTE)}", 404, "M_NOT_FOUND")
        await self.query("/query/profile", 400, "M_MISSING_PARAM")
