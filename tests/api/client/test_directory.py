"""Room aliases and the published room directory over real HTTP."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from mxtwisted.federation.client import FederationError, RequestSendFailed
from tests.api.client.test_room_moderation import RoomsTestCase


def q(value: str) -> str:
    return quote(value, safe="")


class AliasTests(RoomsTestCase):
    async def test_create_resolve_delete(self):
        room_id = await self.create({"preset": "public_chat"})
        alias = "#monkeys:test.local"
        self.assertEqual(await self.ok("PUT", f"/directory/room/{q(alias)}", {"room_id": room_id}), {})
        # Resolving needs no access token.
        resp = await self.ok("GET", f"/directory/room/{q(alias)}", token=None)
        self.assertEqual(resp, {"room_id": room_id, "servers": ["test.local"]})
        self.assertEqual(await self.ok("GET", f"/rooms/{room_id}/aliases"), {"aliases": [alias]})
        # Joining through it works.
        await self.ok("POST", f"/join/{q(alias)}", {}, self.bob)
        self.assertEqual(await self.ok("DELETE", f"/directory/room/{q(alias)}"), {})
        await self.refused(404, "M_NOT_FOUND", "GET", f"/directory/room/{q(alias)}")
        await self.refused(404, "M_NOT_FOUND", "DELETE", f"/directory/room/{q(alias)}")
        self.assertEqual(await self.ok("GET", f"/rooms/{room_id}/aliases"), {"aliases": []})

    async def test_taken_alias_is_409(self):
        room_id = await self.create({"room_alias_name": "taken"})
        other = await self.create()
        resp = await self.refused(409, "M_UNKNOWN", "PUT", f"/directory/room/{q('#taken:test.local')}", {"room_id": other})
        self.assertIn("#taken:test.local", resp["error"])
        self.assertEqual((await self.ok("GET", f"/directory/room/{q('#taken:test.local')}"))["room_id"], room_id)

    async def test_create_needs_membership_and_a_known_room(self):
        room_id = await self.create({"preset": "private_chat"})
        await self.refused(403, "M_FORBIDDEN", "PUT", f"/directory/room/{q('#mine:test.local')}", {"room_id": room_id}, self.bob)
        await self.refused(404, "M_NOT_FOUND", "PUT", f"/directory/room/{q('#x:test.local')}", {"room_id": "!nope:test.local"})

    async def test_bad_aliases_and_bodies(self):
        room_id = await self.create()
        for bad in ("nohash:test.local", "#nocolon", "#a:bad host"):
            await self.refused(400, "M_INVALID_PARAM", "PUT", f"/directory/room/{q(bad)}", {"room_id": room_id})
            await self.refused(400, "M_INVALID_PARAM", "GET", f"/directory/room/{q(bad)}")
            await self.refused(400, "M_INVALID_PARAM", "DELETE", f"/directory/room/{q(bad)}")
        await self.refused(400, "M_INVALID_PARAM", "PUT", f"/directory/room/{q('#a:elsewhere.example')}", {"room_id": room_id})
        await self.refused(400, "M_BAD_JSON", "PUT", f"/directory/room/{q('#a:test.local')}", {})
        await self.refused(400, "M_BAD_JSON", "PUT", f"/directory/room/{q('#a:test.local')}", {"room_id": 5})
        await self.refused(400, "M_BAD_JSON", "PUT", f"/directory/room/{q('#a:test.local')}", raw=b"[]")
        await self.refused(401, "M_MISSING_TOKEN", "PUT", f"/directory/room/{q('#a:test.local')}", {"room_id": room_id},
                           token=None)

    def stub_federation(self, answers: dict[str, Any]) -> list:
        """The outgoing federation client answers from ``answers`` (by destination): a value, or an exception
        to raise. Returns the list of (destination, path, args) asked."""
        asked: list = []

        async def get_json(destination: str, path: str, args: Any = None) -> Any:
            asked.append((destination, path, args))
            answer = answers[destination]
            if isinstance(answer, Exception):
                raise answer
            return answer

        self.patch(self.hs.components.federation.client, "get_json", get_json)
        return asked

    async def test_remote_alias_asks_its_server(self):
        asked = self.stub_federation({
            "elsewhere.example": {"room_id": "!r:elsewhere.example", "servers": ["elsewhere.example", "x.example"]},
            "gone.example": FederationError(404, "M_NOT_FOUND", {"errcode": "M_NOT_FOUND", "error": "nope"}),
            "down.example": RequestSendFailed("down.example", ConnectionRefusedError()),
        })
        resp = await self.ok("GET", f"/directory/room/{q('#a:elsewhere.example')}", token=None)
        self.assertEqual(resp, {"room_id": "!r:elsewhere.example", "servers": ["elsewhere.example", "x.example"]})
        self.assertEqual(asked, [("elsewhere.example", "/_matrix/federation/v1/query/directory",
                                  {"room_alias": "#a:elsewhere.example"})])
        await self.refused(404, "M_NOT_FOUND", "GET", f"/directory/room/{q('#a:gone.example')}")
        await self.refused(502, "M_UNKNOWN", "GET", f"/directory/room/{q('#a:down.example')}", spec=False)
        # Other servers' aliases are theirs to create and delete.
        room_id = await self.create({"preset": "public_chat"})
        await self.refused(400, "M_INVALID_PARAM", "PUT", f"/directory/room/{q('#a:elsewhere.example')}",
                           {"room_id": room_id})
        await self.refused(404, "M_NOT_FOUND", "DELETE", f"/directory/room/{q('#a:elsewhere.example')}")

    async def test_delete_permissions(self):
        room_id = await self.create({"preset": "public_chat"})
        await self.ok("POST", f"/rooms/{room_id}/join", {}, self.bob)
        await self.ok("POST", f"/rooms/{room_id}/join", {}, self.carol)
        # Bob made it: Bob may delete it; Carol (no power, not the creator) may not; Alice (admin) may.
        await self.ok("PUT", f"/directory/room/{q('#bobs:test.local')}", {"room_id": room_id}, self.bob)
        await self.refused(403, "M_FORBIDDEN", "DELETE", f"/directory/room/{q('#bobs:test.local')}", who=self.carol)
        await self.ok("DELETE", f"/directory/room/{q('#bobs:test.local')}", who=self.bob)
        await self.ok("PUT", f"/directory/room/{q('#bobs:test.local')}", {"room_id": room_id}, self.bob)
        await self.ok("DELETE", f"/directory/room/{q('#bobs:test.local')}")

    async def test_delete_updates_canonical_alias(self):
        room_id = await self.create({"room_alias_name": "main"})
        await self.ok("PUT", f"/directory/room/{q('#alt:test.local')}", {"room_id": room_id})
        await self.ok("PUT", f"/rooms/{room_id}/state/m.room.canonical_alias/",
                      {"alias": "#main:test.local", "alt_aliases": ["#alt:test.local"]})
        await self.ok("DELETE", f"/directory/room/{q('#alt:test.local')}")
        content = await self.ok("GET", f"/rooms/{room_id}/state/m.room.canonical_alias/")
        self.assertEqual(content, {"alias": "#main:test.local"})
        await self.ok("DELETE", f"/directory/room/{q('#main:test.local')}")
        self.assertEqual(await self.ok("GET", f"/rooms/{room_id}/state/m.room.canonical_alias/"), {})

    async def test_room_aliases_access(self):
        room_id = await self.create({"preset": "public_chat", "room_alias_name": "seen"})
        await self.refused(403, "M_FORBIDDEN", "GET", f"/rooms/{room_id}/aliases", who=self.bob)
        await self.ok("POST", f"/rooms/{room_id}/join", {}, self.bob)
        self.assertEqual(await self.ok("GET", f"/rooms/{room_id}/aliases", who=self.bob), {"aliases": ["#seen:test.local"]})
        # Former members may not; anyone may in a world-readable room.
        await self.ok("POST", f"/rooms/{room_id}/leave", {}, self.bob)
        await self.refused(403, "M_FORBIDDEN", "GET", f"/rooms/{room_id}/aliases", who=self.bob)
        await self.ok("PUT", f"/rooms/{room_id}/state/m.room.history_visibility/", {"history_visibility": "world_readable"})
        await self.ok("GET", f"/rooms/{room_id}/aliases", who=self.carol)
        await self.refused(404, "M_NOT_FOUND", "GET", "/rooms/!nope:test.local/aliases")


class PublishedDirectoryTests(RoomsTestCase):
    async def test_visibility_round_trip(self):
        room_id = await self.create({"visibility": "public", "preset": "public_chat"})
        self.assertEqual(await self.ok("GET", f"/directory/list/room/{room_id}", token=None), {"visibility": "public"})
        self.assertEqual(await self.ok("PUT", f"/directory/list/room/{room_id}", {"visibility": "private"}), {})
        self.assertEqual(await self.ok("GET", f"/directory/list/room/{room_id}"), {"visibility": "private"})
        # visibility defaults to public.
        await self.ok("PUT", f"/directory/list/room/{room_id}", {})
        self.assertEqual(await self.ok("GET", f"/directory/list/room/{room_id}"), {"visibility": "public"})

    async def test_visibility_needs_moderator_or_creator(self):
        room_id = await self.create({"preset": "public_chat"})
        await self.refused(403, "M_FORBIDDEN", "PUT", f"/directory/list/room/{room_id}", {"visibility": "public"}, self.bob)
        await self.ok("POST", f"/rooms/{room_id}/join", {}, self.bob)
        await self.refused(403, "M_FORBIDDEN", "PUT", f"/directory/list/room/{room_id}", {"visibility": "public"}, self.bob)
        await self.ok("PUT", f"/rooms/{room_id}/state/m.room.power_levels/", {
            **(await self.ok("GET", f"/rooms/{room_id}/state/m.room.power_levels/")),
            "users": {self.bob["user_id"]: 50}})
        await self.ok("PUT", f"/directory/list/room/{room_id}", {"visibility": "public"}, self.bob)

    async def test_visibility_refusals(self):
        room_id = await self.create()
        await self.refused(404, "M_NOT_FOUND", "GET", "/directory/list/room/!nope:test.local")
        await self.refused(404, "M_NOT_FOUND", "PUT", "/directory/list/room/!nope:test.local", {"visibility": "public"})
        await self.refused(400, "M_BAD_JSON", "PUT", f"/directory/list/room/{room_id}", {"visibility": "secret"})
        await self.refused(400, "M_BAD_JSON", "PUT", f"/directory/list/room/{room_id}", raw=b"[]")
        await self.refused(401, "M_MISSING_TOKEN", "PUT", f"/directory/list/room/{room_id}", {"visibility": "public"},
                           token=None)

    async def test_public_rooms_entries(self):
        room_id = await self.create({
            "visibility": "public", "preset": "public_chat", "name": "CHEESE", "topic": "Tasty tasty cheese",
            "room_alias_name": "cheese", "creation_content": {"type": "m.space"},
            "initial_state": [
                {"type": "m.room.history_visibility", "state_key": "", "content": {"history_visibility": "world_readable"}},
                {"type": "m.room.guest_access", "state_key": "", "content": {"guest_access": "can_join"}},
                {"type": "m.room.avatar", "state_key": "", "content": {"url": "mxc://test.local/cheddar"}},
            ]})
        await self.create({"preset": "public_chat", "name": "unlisted"})
        await self.ok("POST", f"/rooms/{room_id}/join", {}, self.bob)
        resp = await self.ok("GET", "/publicRooms", token=None)
        self.assertEqual(resp["chunk"], [{
            "room_id": room_id, "name": "CHEESE", "topic": "Tasty tasty cheese", "canonical_alias": "#cheese:test.local",
            "num_joined_members": 2, "avatar_url": "mxc://test.local/cheddar", "world_readable": True,
            "guest_can_join": True, "join_rule": "public", "room_type": "m.space",
        }])
        self.assertEqual(resp["total_room_count_estimate"], 1)
        self.assertNotIn("next_batch", resp)
        self.assertNotIn("prev_batch", resp)
        resp = await self.ok("POST", "/publicRooms", {})
        self.assertEqual([e["room_id"] for e in resp["chunk"]], [room_id])

    async def test_search_and_room_types(self):
        space = await self.create({"visibility": "public", "name": "Gardening space", "creation_content": {"type": "m.space"}})
        chat = await self.create({"visibility": "public", "name": "Chat", "topic": "all about GARDENS"})
        other = await self.create({"visibility": "public", "name": "Cooking"})

        async def search(**filter_) -> set:
            resp = await self.ok("POST", "/publicRooms", {"filter": filter_})
            return {e["room_id"] for e in resp["chunk"]}

        self.assertEqual(await search(generic_search_term="garden"), {space, chat})
        self.assertEqual(await search(generic_search_term="cooking"), {other})
        self.assertEqual(await search(room_types=["m.space"]), {space})
        self.assertEqual(await search(room_types=[None]), {chat, other})
        self.assertEqual(await search(room_types=[None], generic_search_term="garden"), {chat})
        self.assertEqual(await search(generic_search_term=other), {other})
        self.assertEqual(await search(), {space, chat, other})

    async def test_pagination(self):
        rooms = []
        for i in range(7):
            rooms.append(await self.create({"visibility": "public", "preset": "public_chat", "name": f"r{i}"}))
        # Give some rooms more members: the biggest come first.
        for user in (self.bob, self.carol):
            await self.ok("POST", f"/rooms/{rooms[3]}/join", {}, user)
        await self.ok("POST", f"/rooms/{rooms[5]}/join", {}, self.bob)
        full = [e["room_id"] for e in (await self.ok("GET", "/publicRooms"))["chunk"]]
        self.assertEqual(full[:2], [rooms[3], rooms[5]])
        self.assertEqual(sorted(full), sorted(rooms))

        seen, token, pages = [], None, []
        while True:
            path = "/publicRooms?limit=3" + (f"&since={q(token)}" if token else "")
            resp = await self.ok("GET", path)
            pages.append(resp)
            seen += [e["room_id"] for e in resp["chunk"]]
            self.assertEqual(resp["total_room_count_estimate"], 7)
            token = resp.get("next_batch")
            if token is None:
                break
        self.assertEqual(seen, full)
        self.assertEqual([len(p["chunk"]) for p in pages], [3, 3, 1])
        self.assertNotIn("prev_batch", pages[0])
        # Going back from the last page gives the page before it again.
        back = await self.ok("POST", "/publicRooms", {"limit": 3, "since": pages[-1]["prev_batch"]})
        self.assertEqual(back["chunk"], pages[1]["chunk"])
        self.assertEqual(back["next_batch"], pages[1]["next_batch"])
        back = await self.ok("POST", "/publicRooms", {"limit": 3, "since": back["prev_batch"]})
        self.assertEqual(back["chunk"], pages[0]["chunk"])
        self.assertNotIn("prev_batch", back)

    async def test_bad_requests(self):
        await self.refused(400, "M_INVALID_PARAM", "GET", "/publicRooms?limit=x")
        await self.refused(400, "M_INVALID_PARAM", "GET", "/publicRooms?since=garbage")
        await self.refused(400, "M_BAD_JSON", "POST", "/publicRooms", {"limit": "3"})
        await self.refused(400, "M_BAD_JSON", "POST", "/publicRooms", {"filter": []})
        await self.refused(400, "M_BAD_JSON", "POST", "/publicRooms", {"filter": {"generic_search_term": 1}})
        await self.refused(400, "M_BAD_JSON", "POST", "/publicRooms", {"filter": {"room_types": "m.space"}})
        await self.refused(400, "M_BAD_JSON", "POST", "/publicRooms", raw=b"[]")
        await self.refused(401, "M_MISSING_TOKEN", "POST", "/publicRooms", {}, token=None)
        await self.refused(400, "M_INVALID_PARAM", "GET", "/publicRooms?server=not%20a%20server")
        resp = await self.ok("GET", "/publicRooms?server=test.local")
        self.assertEqual(resp["chunk"], [])
