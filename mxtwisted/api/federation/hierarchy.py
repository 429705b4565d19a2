"""``GET /_matrix/federation/v1/hierarchy/{roomId}`` (Server-Server API "Spaces"); the rules are in
:mod:`mxtwisted.rooms.hierarchy`."""

from __future__ import annotations

from typing import Any

from mxtwisted.api.client.hierarchy import parse_bool_arg
from mxtwisted.api.federation.rooms import federation_route
from mxtwisted.http.router import Router
from mxtwisted.rooms.hierarchy import RoomHierarchy

V1 = "/_matrix/federation/v1"


class FederationHierarchyResource:
    def __init__(self, hierarchy: RoomHierarchy) -> None:
        self._hierarchy = hierarchy

    def register(self, router: Router, authenticator: Any) -> None:
        router.add("GET", V1 + "/hierarchy/{roomId}", federation_route(authenticator, self.get_hierarchy))

    async def get_hierarchy(self, request: Any, origin: str, roomId: str) -> dict[str, Any]:
        return await self._hierarchy.get_federation_hierarchy(origin, roomId, parse_bool_arg(request, "suggested_only"))
