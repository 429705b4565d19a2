"""``GET``/``POST /_matrix/federation/v1/publicRooms`` (Server-Server API "Public Room Directory").

Other servers list our published room directory for their users; the answer
is the one :class:`mxtwisted.rooms.directory.RoomDirectory` gives our own
clients (same order, pages, tokens and filter). As Synapse, a ``limit`` of 0
means no limit (the spec's GET default), here: our page maximum. No
application-service networks exist: a ``third_party_instance_id`` without
``include_all_networks`` lists nothing.
"""

from __future__ import annotations

from typing import Any, Optional

from mxtwisted.api.client.hierarchy import parse_bool_arg
from mxtwisted.api.federation.rooms import federation_route
from mxtwisted.http.errors import Codes, MatrixError
from mxtwisted.http.resource import parse_json_object, query_arg
from mxtwisted.http.router import Router
from mxtwisted.rooms.directory import RoomDirectory, parse_directory_search

V1 = "/_matrix/federation/v1"
_NOTHING: dict[str, Any] = {"chunk": [], "total_room_count_estimate": 0}


def _limit(value: Any) -> Optional[int]:
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = int(value)
        except ValueError:
            raise MatrixError(400, Codes.INVALID_PARAM, "'limit' must be an integer") from None
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise MatrixError(400, Codes.INVALID_PARAM, "'limit' must be a non-negative integer")
    return value or None


class FederationDirectoryResource:
    def __init__(self, directory: RoomDirectory, allowed: bool = True) -> None:
        self._directory = directory
        #: ``allow_public_rooms_over_federation``.
        self._allowed = allowed

    def _check_allowed(self) -> None:
        if not self._allowed:
            raise MatrixError(403, Codes.FORBIDDEN, "This server does not share its room directory over federation")

    def register(self, router: Router, authenticator: Any) -> None:
        router.add("GET", V1 + "/publicRooms", federation_route(authenticator, self.get_public_rooms))
        router.add("POST", V1 + "/publicRooms", federation_route(authenticator, self.post_public_rooms))

    async def get_public_rooms(self, request: Any, origin: str) -> dict[str, Any]:
        self._check_allowed()
        limit = _limit(query_arg(request, "limit"))
        if query_arg(request, "third_party_instance_id") and not parse_bool_arg(request, "include_all_networks"):
            return dict(_NOTHING)
        return await self._directory.public_rooms(limit, query_arg(request, "since"))

    async def post_public_rooms(self, request: Any, origin: str) -> dict[str, Any]:
        self._check_allowed()
        body = parse_json_object(request, allow_empty=True)
        limit = _limit(body.get("limit"))
        search = parse_directory_search(body)
        if body.get("third_party_instance_id") is not None and not body.get("include_all_networks"):
            return dict(_NOTHING)
        return await self._directory.public_rooms(limit, search.since, search.term, search.room_types)
