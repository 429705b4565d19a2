"""Room aliases and the published room directory (Client-Server API "Room aliases", "Published room directory").

``PUT``/``GET``/``DELETE /directory/room/{roomAlias}``, ``GET /rooms/{roomId}/aliases``,
``GET``/``PUT /directory/list/room/{roomId}``, ``GET``/``POST /publicRooms``.
Thin: parse and validate, call :class:`mxtwisted.rooms.directory.RoomDirectory`.
Resolving an alias, reading a room's directory visibility and listing the
directory need no access token, as in the spec. Listing another server's
directory (``server=``) goes over federation
(:meth:`mxtwisted.federation.queries.FederationQueries.public_rooms`) and, as
Synapse, needs an access token: this server is no open proxy.
"""

from __future__ import annotations

from typing import Any, Optional

from mxtwisted.api.client import CLIENT_PREFIXES as PREFIXES
from mxtwisted.events.validation import is_valid_server_name
from mxtwisted.handlers.auth import Authenticator
from mxtwisted.http.errors import Codes, MatrixError
from mxtwisted.http.resource import parse_json_object, query_arg
from mxtwisted.http.router import Router
from mxtwisted.rooms.directory import RoomDirectory, parse_directory_search


def _check_room_id(room_id: str) -> None:
    if not room_id.startswith("!"):
        raise MatrixError(400, Codes.INVALID_PARAM, f"Invalid room ID {room_id!r}")


class DirectoryResource:
    def __init__(self, auth: Authenticator, directory: RoomDirectory, remote: Any = None) -> None:
        """``remote``: the FederationQueries for other servers' directories (None: they are 404)."""
        self.auth = auth
        self.directory = directory
        self.remote = remote

    def register(self, router: Router) -> None:
        for p in PREFIXES:
            router.add("PUT", f"{p}/directory/room/{{roomAlias}}", self.put_alias)
            router.add("GET", f"{p}/directory/room/{{roomAlias}}", self.get_alias)
            router.add("DELETE", f"{p}/directory/room/{{roomAlias}}", self.delete_alias)
            router.add("GET", f"{p}/rooms/{{roomId}}/aliases", self.room_aliases)
            router.add("GET", f"{p}/directory/list/room/{{roomId}}", self.get_visibility)
            router.add("PUT", f"{p}/directory/list/room/{{roomId}}", self.put_visibility)
            router.add("GET", f"{p}/publicRooms", self.get_public_rooms)
            router.add("POST", f"{p}/publicRooms", self.post_public_rooms)

    # -- aliases ------------------------------------------------------------------------------------
    async def put_alias(self, request: Any, roomAlias: str) -> dict[str, Any]:
        requester = await self.auth.get_requester(request)
        body = parse_json_object(request)
        await self.directory.create_alias(requester.user_id, roomAlias, body.get("room_id"))
        return {}

    async def get_alias(self, request: Any, roomAlias: str) -> dict[str, Any]:
        return await self.directory.resolve_alias(roomAlias)

    async def delete_alias(self, request: Any, roomAlias: str) -> dict[str, Any]:
        requester = await self.auth.get_requester(request)
        await self.directory.delete_alias(requester.user_id, roomAlias)
        return {}

    async def room_aliases(self, request: Any, roomId: str) -> dict[str, Any]:
        requester = await self.auth.get_requester(request, allow_guest=True)
        _check_room_id(roomId)
        return {"aliases": await self.directory.local_aliases(requester.user_id, roomId)}

    # -- published room directory -------------------------------------------------------------------------
    async def get_visibility(self, request: Any, roomId: str) -> dict[str, Any]:
        _check_room_id(roomId)
        return {"visibility": await self.directory.get_visibility(roomId)}

    async def put_visibility(self, request: Any, roomId: str) -> dict[str, Any]:
        requester = await self.auth.get_requester(request, allow_guest=True)
        _check_room_id(roomId)
        body = parse_json_object(request, allow_empty=True)
        visibility = body.get("visibility", "public")
        if visibility not in ("public", "private"):
            raise MatrixError(400, Codes.BAD_JSON, "'visibility' must be 'public' or 'private'")
        await self.directory.set_visibility(requester.user_id, roomId, visibility, requester.is_guest)
        return {}

    async def get_public_rooms(self, request: Any) -> dict[str, Any]:
        # The spec lists no authentication for GET; a token, if given, must still be valid.
        requester = await self.auth.get_optional_requester(request)
        server = query_arg(request, "server")
        remote = self._check_server(server)
        limit_text = query_arg(request, "limit")
        limit: Optional[int] = None
        if limit_text is not None:
            try:
                limit = int(limit_text)
            except ValueError:
                raise MatrixError(400, Codes.INVALID_PARAM, "'limit' must be an integer") from None
            if limit < 0:
                raise MatrixError(400, Codes.INVALID_PARAM, "'limit' must not be negative")
        if remote:
            assert server is not None
            if requester is None:
                raise MatrixError(401, Codes.MISSING_TOKEN, "Listing another server's directory needs an access token")
            return await self.remote.public_rooms(server, limit, query_arg(request, "since"))
        return await self.directory.public_rooms(limit, query_arg(request, "since"))

    async def post_public_rooms(self, request: Any) -> dict[str, Any]:
        await self.auth.get_requester(request, allow_guest=True)
        server = query_arg(request, "server")
        remote = self._check_server(server)
        body = parse_json_object(request, allow_empty=True)
        limit = body.get("limit")
        if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool) or limit < 0):
            raise MatrixError(400, Codes.BAD_JSON, "'limit' must be a non-negative integer")
        search = parse_directory_search(body)
        if remote:
            assert server is not None
            tpid = body.get("third_party_instance_id")
            return await self.remote.public_rooms(
                server, limit, search.since, search.filter or None, bool(body.get("include_all_networks")),
                tpid if isinstance(tpid, str) else None,
            )
        if body.get("third_party_instance_id") is not None and not body.get("include_all_networks"):
            # No application-service networks exist here: a named network has no rooms.
            return {"chunk": [], "total_room_count_estimate": 0}
        return await self.directory.public_rooms(limit, search.since, search.term, search.room_types)

    def _check_server(self, server: Optional[str]) -> bool:
        """Whether ``server`` names another server (400 for an invalid name, 404 without federation)."""
        if server is None or server == self.directory.server_name:
            return False
        if not is_valid_server_name(server):
            raise MatrixError(400, Codes.INVALID_PARAM, f"Invalid server name: {server}")
        if self.remote is None:
            raise MatrixError(404, Codes.NOT_FOUND, "Listing other servers' room directories is not available")
        return True
