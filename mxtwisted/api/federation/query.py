"""Queries from other servers: room aliases and profiles of this server.

Spec: Server-Server API, "Querying for information": ``GET
/_matrix/federation/v1/query/directory?room_alias=`` (the room ID of one of
this server's aliases and the servers in the room, this server first) and
``GET /_matrix/federation/v1/query/profile?user_id=&field=`` (a local user's
public profile, or just the one field). Both answer 404 M_NOT_FOUND for what
this server does not hold, including aliases and users of other servers.
"""

from __future__ import annotations

from typing import Any

from mxtwisted.api.federation.rooms import federation_route
from mxtwisted.events.validation import is_valid_room_alias, is_valid_user_id
from mxtwisted.federation.server_visibility import server_of
from mxtwisted.handlers.profile import ProfileHandler
from mxtwisted.http.errors import Codes, MatrixError
from mxtwisted.http.resource import query_arg
from mxtwisted.http.router import Router
from mxtwisted.storage.events import EventStore

V1 = "/_matrix/federation/v1"


class FederationQueryResource:
    def __init__(self, server_name: str, store: EventStore, profile: ProfileHandler, allow_profile_lookup: bool = True) -> None:
        self.server_name = server_name
        self.store = store
        self.profile = profile
        self.allow_profile_lookup = allow_profile_lookup

    def register(self, router: Router, authenticator: Any) -> None:
        router.add("GET", V1 + "/query/directory", federation_route(authenticator, self.query_directory))
        router.add("GET", V1 + "/query/profile", federation_route(authenticator, self.query_profile))

    async def query_directory(self, request: Any, origin: str) -> dict[str, Any]:
        alias = query_arg(request, "room_alias")
        if alias is None:
            raise MatrixError(400, Codes.MISSING_PARAM, "Missing parameter 'room_alias'")
        if not is_valid_room_alias(alias):
            raise MatrixError(400, Codes.INVALID_PARAM, "Invalid room alias")
        found = await self.store.get_alias(alias) if server_of(alias) == self.server_name else None
        if found is None:
            raise MatrixError(404, Codes.NOT_FOUND, "Room alias not found")
        room_id = found[0]
        members = await self.store.get_members(room_id, ("join",))
        servers = {server_of(user) for user in members}
        # Ourselves first when a user of ours is in the room (else we could not help anybody join it).
        ours = [self.server_name] if self.server_name in servers else []
        return {"room_id": room_id, "servers": ours + sorted(servers - {self.server_name})}

    async def query_profile(self, request: Any, origin: str) -> dict[str, Any]:
        if not self.allow_profile_lookup:
            raise MatrixError(403, Codes.FORBIDDEN, "Profile lookup over federation is disabled on this homeserver")
        user_id = query_arg(request, "user_id")
        if user_id is None:
            raise MatrixError(400, Codes.MISSING_PARAM, "Missing parameter 'user_id'")
        if not is_valid_user_id(user_id, historical=True):
            raise MatrixError(400, Codes.INVALID_PARAM, "Invalid user ID")
        if server_of(user_id) != self.server_name:
            raise MatrixError(404, Codes.NOT_FOUND, "The user does not belong to this server")
        field = query_arg(request, "field")
        if field is None:
            return await self.profile.get_profile(user_id)
        return {field: await self.profile.get_profile_field(user_id, field)}
