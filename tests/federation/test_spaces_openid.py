"""Space hierarchies (client and federation) and OpenID tokens on one server, over real HTTP: who sees which
room, pagination, parameters, and the error cases (expired and unknown tokens, unknown and forbidden rooms)."""

from __future__ import annotations

from typing import Any, Optional
from urllib.parse import quote

from twisted.trial import unittest

from tests.federation.test_served_rooms import (
    REMOTE,
    RemoteServer,
    StaticKeyring,
    spec_problems,
    start_federating_homeserver,
)
from tests.support.spec import spec_problems as client_spec_problems

V1 = "/_matrix/client/v1"
V3 = "/_matrix/client/v3"
F1 = "/_matrix/federation/v1"


def q(value: str) -> str:
    return quote(value, safe="")


class SpacesAndOpenIdTests(unittest.TestCase):
    async def setUp(self) -> None:
        keyring = StaticKeyring()
        self.hs = await start_federating_homeserver(self, keyring)
        self.remote = RemoteServer(REMOTE, self.hs)
        keyring.add(REMOTE, self.remote.key)
        self.alice = await self.hs.register_user("alice")
        self.bob = await self.hs.register_user("bob")

    async def call(self, user: Optional[dict], method: str, path: str, body: Any = None, expect: int = 200,
                   errcode: Optional[str] = None) -> Any:
        code, resp = await self.hs.request(method, path, body, token=user["access_token"] if user else None)
        self.assertEqual(code, expect, resp)
        if errcode is not None:
            self.assertEqual(resp["errcode"], errcode, resp)
        # Error statuses an operation does not document (it lists only some) are not counted.
        problems = [p for p in client_spec_problems(method, path, code, resp) if code < 400 or "is not documented" not in p]
        self.assertEqual(problems, [])
        return resp

    async def federation(self, method: str, path: str, expect: int = 200, errcode: Optional[str] = None,
                         sign: bool = True) -> Any:
        code, resp = await self.remote.request(method, path, sign=sign)
        self.assertEqual(code, expect, resp)
        if errcode is not None:
            self.assertEqual(resp["errcode"], errcode, resp)
        if code == 200:
            self.assertEqual(spec_problems(method, path, code, resp), [])
        return resp

    async def room(self, user: dict, **body: Any) -> str:
        return (await self.call(user, "POST", f"{V3}/createRoom", body))["room_id"]

    async def space(self, user: dict, **body: Any) -> str:
        body.setdefault("preset", "public_chat")
        return await self.room(user, creation_content={"type": "m.space"}, **body)

    async def add_child(self, user: dict, space: str, child: str, **content: Any) -> None:
        content.setdefault("via", [self.hs.config.server_name])
        await self.call(user, "PUT", f"{V3}/rooms/{q(space)}/state/m.space.child/{q(child)}", content)

    async def hierarchy(self, user: dict, room_id: str, query: str = "", **kw: Any) -> Any:
        return await self.call(user, "GET", f"{V1}/rooms/{q(room_id)}/hierarchy{query}", **kw)

    def ids(self, resp: dict) -> list[str]:
        return [r["room_id"] for r in resp["rooms"]]

    # -- hierarchy: who sees what ------------------------------------------------------------------------
    async def test_visibility_of_children(self) -> None:
        space = await self.space(self.alice, name="Space")
        public = await self.room(self.alice, preset="public_chat", name="Public")
        private = await self.room(self.alice, preset="private_chat", name="Private")
        readable = await self.room(self.alice, preset="private_chat", initial_state=[
            {"type": "m.room.history_visibility", "state_key": "", "content": {"history_visibility": "world_readable"}}
        ])
        restricted = await self.room(self.alice, preset="private_chat", initial_state=[
            {"type": "m.room.join_rules", "state_key": "",
             "content": {"join_rule": "restricted", "allow": [{"type": "m.room_membership", "room_id": space}]}}
        ])
        invited = await self.room(self.alice, preset="private_chat")
        for order, child in enumerate((public, private, readable, restricted, invited)):
            await self.add_child(self.alice, space, child, order=str(order))
        # A removed child (no via) does not count.
        await self.add_child(self.alice, space, "!gone:test.local", via=[])
        # Alice is in every room: she sees them all, in order.
        resp = await self.hierarchy(self.alice, space)
        self.assertEqual(self.ids(resp), [space, public, private, readable, restricted, invited])
        self.assertEqual(len(resp["rooms"][0]["children_state"]), 5)
        self.assertEqual(resp["rooms"][4]["allowed_room_ids"], [space])
        self.assertEqual(resp["rooms"][1]["room_version"], self.hs.config.default_room_version)
        # Bob, in nothing: the public space, the public and the world-readable rooms.
        self.assertEqual(self.ids(await self.hierarchy(self.bob, space)), [space, public, readable])
        # Invited to one; joined to the space, which lets him into the restricted room.
        await self.call(self.alice, "POST", f"{V3}/rooms/{q(invited)}/invite", {"user_id": self.bob["user_id"]})
        await self.call(self.bob, "POST", f"{V3}/rooms/{q(space)}/join", {})
        self.assertEqual(self.ids(await self.hierarchy(self.bob, space)), [space, public, readable, restricted, invited])

    async def test_nesting_depth_and_pagination(self) -> None:
        top = await self.space(self.alice, name="Top")
        sub = await self.space(self.alice, name="Sub")
        deep = await self.room(self.alice, preset="public_chat", name="Deep")
        side = await self.room(self.alice, preset="public_chat", name="Side")
        await self.add_child(self.alice, top, sub, order="1", suggested=True)
        await self.add_child(self.alice, top, side, order="2")
        await self.add_child(self.alice, sub, deep, suggested=True)
        await self.add_child(self.alice, sub, top)  # a loop: each room comes once
        self.assertEqual(self.ids(await self.hierarchy(self.alice, top)), [top, sub, deep, side])
        self.assertEqual(self.ids(await self.hierarchy(self.alice, top, "?max_depth=0")), [top])
        self.assertEqual(self.ids(await self.hierarchy(self.alice, top, "?max_depth=1")), [top, sub, side])
        self.assertEqual(self.ids(await self.hierarchy(self.alice, top, "?suggested_only=true")), [top, sub, deep])
        first = await self.hierarchy(self.alice, top, "?limit=2")
        self.assertEqual(self.ids(first), [top, sub])
        token = first["next_batch"]
        # The token is for the same parameters only, and for this user.
        await self.hierarchy(self.alice, top, f"?limit=2&max_depth=3&from={q(token)}", expect=400,
                             errcode="M_INVALID_PARAM")
        await self.hierarchy(self.bob, top, f"?limit=2&from={q(token)}", expect=400, errcode="M_INVALID_PARAM")
        second = await self.hierarchy(self.alice, top, f"?limit=2&from={q(token)}")
        self.assertEqual(self.ids(second), [deep, side])
        self.assertNotIn("next_batch", second)
        # A used token is gone.
        await self.hierarchy(self.alice, top, f"?limit=2&from={q(token)}", expect=400, errcode="M_INVALID_PARAM")

    async def test_hierarchy_errors(self) -> None:
        private = await self.room(self.alice, preset="private_chat")
        # A room the user may not see, and an unknown one: 403 M_FORBIDDEN (the spec's "room does not exist" too).
        await self.hierarchy(self.bob, private, expect=403, errcode="M_FORBIDDEN")
        await self.hierarchy(self.bob, "!nothing:test.local", expect=403, errcode="M_FORBIDDEN")
        space = await self.space(self.alice)
        for query in ("?limit=0", "?limit=x", "?max_depth=-1", "?suggested_only=maybe", "?from=garbage"):
            await self.hierarchy(self.alice, space, query, expect=400, errcode="M_INVALID_PARAM")
        await self.hierarchy(self.alice, "not-a-room", expect=400, errcode="M_INVALID_PARAM")
        await self.call(None, "GET", f"{V1}/rooms/{q(space)}/hierarchy", expect=401, errcode="M_MISSING_TOKEN")

    # -- hierarchy over federation ---------------------------------------------------------------------------
    async def test_federation_hierarchy(self) -> None:
        space = await self.space(self.alice, name="Space")
        public = await self.room(self.alice, preset="public_chat")
        private = await self.room(self.alice, preset="private_chat")
        await self.add_child(self.alice, space, public)
        await self.add_child(self.alice, space, private)
        resp = await self.federation("GET", f"{F1}/hierarchy/{q(space)}")
        self.assertEqual(resp["room"]["room_type"], "m.space")
        self.assertEqual([c["room_id"] for c in resp["children"]], [public])
        self.assertEqual(resp["inaccessible_children"], [private])
        # Unknown, or not visible to the remote server: 404 M_NOT_FOUND.
        await self.federation("GET", f"{F1}/hierarchy/{q('!nothing:test.local')}", 404, "M_NOT_FOUND")
        await self.federation("GET", f"{F1}/hierarchy/{q(private)}", 404, "M_NOT_FOUND")
        await self.federation("GET", f"{F1}/hierarchy/{q(space)}?suggested_only=x", 400, "M_INVALID_PARAM")
        await self.federation("GET", f"{F1}/hierarchy/{q(space)}", 401, "M_UNAUTHORIZED", sign=False)
        await self.federation("GET", f"{F1}/publicRooms", 401, "M_UNAUTHORIZED", sign=False)

    # -- OpenID -------------------------------------------------------------------------------------------
    async def request_token(self, user: dict, body: Any = None, **kw: Any) -> Any:
        path = f"{V3}/user/{q(user['user_id'])}/openid/request_token"
        return await self.call(user, "POST", path, {} if body is None else body, **kw)

    async def test_openid_tokens(self) -> None:
        token = await self.request_token(self.alice)
        self.assertEqual(token["matrix_server_name"], "test.local")
        # userinfo takes no X-Matrix authentication: whoever holds the token may ask.
        info = await self.federation("GET", f"{F1}/openid/userinfo?access_token={q(token['access_token'])}", sign=False)
        self.assertEqual(info, {"sub": self.alice["user_id"]})
        await self.federation("GET", f"{F1}/openid/userinfo?access_token=nope", 401, "M_UNKNOWN_TOKEN", sign=False)
        await self.federation("GET", f"{F1}/openid/userinfo", 401, "M_MISSING_TOKEN", sign=False)
        # Only for oneself; an access token is needed; the body, if any, is an object.
        path = f"{V3}/user/{q(self.alice['user_id'])}/openid/request_token"
        await self.call(self.bob, "POST", path, {}, expect=403, errcode="M_FORBIDDEN")
        await self.call(None, "POST", path, {}, expect=401, errcode="M_MISSING_TOKEN")
        await self.request_token(self.alice, [], expect=400, errcode="M_BAD_JSON")

    async def test_expired_openid_token(self) -> None:
        token = (await self.request_token(self.alice))["access_token"]
        handler = self.hs.components.openid
        clock = handler._clock

        class Later:
            def seconds(self) -> float:
                return clock.seconds() + 3601

        self.patch(handler, "_clock", Later())
        await self.federation("GET", f"{F1}/openid/userinfo?access_token={q(token)}", 401, "M_UNKNOWN_TOKEN", sign=False)

    async def test_deactivation_forgets_openid_tokens(self) -> None:
        token = (await self.request_token(self.bob))["access_token"]
        await self.hs.components.account.deactivate(self.bob["user_id"], False)
        await self.federation("GET", f"{F1}/openid/userinfo?access_token={q(token)}", 401, "M_UNKNOWN_TOKEN", sign=False)
