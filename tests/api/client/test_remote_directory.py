"""``/publicRooms?server=`` for another server, with the outgoing federation client stubbed: what is asked,
and how the other server's answers and failures reach the client."""

from __future__ import annotations

from typing import Any

from mxtwisted.federation.client import FederationError, RequestSendFailed
from tests.api.client.test_room_moderation import RoomsTestCase

F1 = "/_matrix/federation/v1"
ENTRY = {"room_id": "!a:elsewhere.example", "num_joined_members": 3, "world_readable": False, "guest_can_join": False}
OTHER = dict(ENTRY, room_id="!b:elsewhere.example", name="Chess club")


class RemoteDirectoryTests(RoomsTestCase):
    def stub(self, get: Any = None, post: Any = None) -> list:
        """Answer GET and POST with ``get``/``post`` (a value, or an exception to raise); returns what was asked."""
        asked: list = []

        def answer(result: Any) -> Any:
            if isinstance(result, Exception):
                raise result
            return result

        async def get_json(destination: str, path: str, args: Any = None) -> Any:
            asked.append(("GET", destination, path, args))
            return answer(get)

        async def post_json(destination: str, path: str, body: Any, args: Any = None) -> Any:
            asked.append(("POST", destination, path, body))
            return answer(post)

        client = self.hs.components.federation.client
        self.patch(client, "get_json", get_json)
        self.patch(client, "post_json", post_json)
        return asked

    async def test_get_is_forwarded(self) -> None:
        asked = self.stub(get={"chunk": [ENTRY], "next_batch": "n1", "total_room_count_estimate": 9})
        resp = await self.ok("GET", "/publicRooms?server=elsewhere.example&limit=5&since=s0")
        self.assertEqual(resp, {"chunk": [ENTRY], "next_batch": "n1", "total_room_count_estimate": 9})
        self.assertEqual(asked, [("GET", "elsewhere.example", F1 + "/publicRooms", {"limit": 5, "since": "s0"})])

    async def test_post_is_forwarded_with_the_filter(self) -> None:
        asked = self.stub(post={"chunk": [OTHER]})
        body = {"limit": 2, "filter": {"generic_search_term": "chess"}, "include_all_networks": True}
        resp = await self.ok("POST", "/publicRooms?server=elsewhere.example", body)
        self.assertEqual(resp["chunk"], [OTHER])
        self.assertEqual(asked, [("POST", "elsewhere.example", F1 + "/publicRooms",
                                  {"filter": {"generic_search_term": "chess"}, "include_all_networks": True,
                                   "limit": 2})])

    async def test_filter_falls_back_to_get(self) -> None:
        # A server without the POST form: everything with GET, filtered here.
        asked = self.stub(get={"chunk": [ENTRY, OTHER]}, post=FederationError(404, None, b"Not found"))
        resp = await self.ok("POST", "/publicRooms?server=elsewhere.example",
                             {"limit": 1, "filter": {"generic_search_term": "CHESS"}})
        self.assertEqual(resp["chunk"], [OTHER])
        self.assertEqual([a[0] for a in asked], ["POST", "GET"])
        self.assertEqual(asked[1][3], {})

    async def test_failures(self) -> None:
        self.stub(get=RequestSendFailed("elsewhere.example", ConnectionRefusedError()))
        await self.refused(502, "M_UNKNOWN", "GET", "/publicRooms?server=elsewhere.example")
        # Our request refused (401, 403, 500...): 502, never the remote's status.
        self.stub(get=FederationError(401, "M_UNAUTHORIZED", {"errcode": "M_UNAUTHORIZED", "error": "sig"}))
        await self.refused(502, "M_UNKNOWN", "GET", "/publicRooms?server=elsewhere.example")
        self.stub(post=FederationError(403, "M_FORBIDDEN", {"errcode": "M_FORBIDDEN", "error": "no"}))
        await self.refused(502, "M_UNKNOWN", "POST", "/publicRooms?server=elsewhere.example",
                           {"filter": {"generic_search_term": "x"}})
        # The client's parameters refused: passed on.
        self.stub(get=FederationError(400, "M_INVALID_PARAM", {"errcode": "M_INVALID_PARAM", "error": "bad since"}))
        resp = await self.refused(400, "M_INVALID_PARAM", "GET", "/publicRooms?server=elsewhere.example&since=x")
        self.assertEqual(resp["error"], "bad since")
        # Nonsense: 502.
        self.stub(get={"rooms": []})
        await self.refused(502, "M_UNKNOWN", "GET", "/publicRooms?server=elsewhere.example")
        # No token, no federation request.
        asked = self.stub(get={"chunk": []})
        await self.refused(401, "M_MISSING_TOKEN", "GET", "/publicRooms?server=elsewhere.example", token=None)
        self.assertEqual(asked, [])
