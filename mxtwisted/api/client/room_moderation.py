"""Kicking, banning, unbanning, forgetting and knocking (Client-Server API "Room membership").

``POST /rooms/{roomId}/kick``, ``/ban``, ``/unban`` (``user_id``, ``reason``),
``POST /rooms/{roomId}/forget`` and ``POST /knock/{roomIdOrAlias}`` (a room
no user of ours is in: over federation, ``make_knock``/``send_knock``). Each
change is one ``m.room.member`` event through the membership handler, so the
room version's auth rules decide the power needed (``403 M_FORBIDDEN``
otherwise). The transitions the auth rules would allow but that make no sense
as these operations are refused as Synapse does: kicking someone who is not
in the room (``403``), unbanning someone who is not banned (``403
M_BAD_STATE``), forgetting a room one is still in (``400 M_UNKNOWN``).
"""

from __future__ import annotations

from typing import Any, Optional

from mxtwisted.api.client import CLIENT_PREFIXES as PREFIXES
from mxtwisted.events.validation import is_valid_room_alias, is_valid_user_id
from mxtwisted.handlers.auth import Authenticator
from mxtwisted.http.errors import Codes, MatrixError
from mxtwisted.http.resource import parse_json_object
from mxtwisted.http.router import Router
from mxtwisted.rooms.membership import BAN, JOIN, KNOCK, LEAVE, MembershipHandler
from mxtwisted.rooms.reader import RoomReader


def _check_room_id(room_id: str) -> None:
    if not room_id.startswith("!"):
        raise MatrixError(400, Codes.INVALID_PARAM, f"Invalid room ID {room_id!r}")


def _target_and_reason(body: dict[str, Any]) -> tuple[str, Optional[str]]:
    """``user_id`` (required) and ``reason`` (optional) of a kick/ban/unban body."""
    if "user_id" not in body:
        raise MatrixError(400, Codes.MISSING_PARAM, "Missing 'user_id'")
    target = body["user_id"]
    if not isinstance(target, str):
        raise MatrixError(400, Codes.BAD_JSON, "'user_id' must be a string")
    if not is_valid_user_id(target, historical=True):
        raise MatrixError(400, Codes.INVALID_PARAM, f"Invalid user ID {target!r}")
    return target, _reason(body)


def _reason(body: dict[str, Any]) -> Optional[str]:
    reason = body.get("reason")
    if reason is not None and not isinstance(reason, str):
        raise MatrixError(400, Codes.BAD_JSON, "'reason' must be a string")
    return reason


class RoomModerationResource:
    def __init__(
        self, auth: Authenticator, membership: MembershipHandler, reader: RoomReader, remote_membership: Any = None,
        remote_join: Any = None,
    ) -> None:
        """``remote_membership``: knocks on rooms of other servers (RemoteMemberships); ``remote_join``: resolves
        their aliases (RemoteJoiner). Without them only rooms this server is in can be knocked on."""
        self.auth = auth
        self.membership = membership
        self.reader = reader
        self.store = reader.store
        self.remote_membership = remote_membership
        self.remote_join = remote_join

    def register(self, router: Router) -> None:
        for p in PREFIXES:
            router.add("POST", f"{p}/rooms/{{roomId}}/kick", self.kick)
            router.add("POST", f"{p}/rooms/{{roomId}}/ban", self.ban)
            router.add("POST", f"{p}/rooms/{{roomId}}/unban", self.unban)
            router.add("POST", f"{p}/rooms/{{roomId}}/forget", self.forget)
            router.add("POST", f"{p}/knock/{{roomIdOrAlias}}", self.knock)

    async def kick(self, request: Any, roomId: str) -> dict[str, Any]:
        requester = await self.auth.get_requester(request)
        _check_room_id(roomId)
        target, reason = _target_and_reason(parse_json_object(request))
        if await self.reader.membership(roomId, target) not in (JOIN, "invite", KNOCK):
            raise MatrixError(403, Codes.FORBIDDEN, "The target user is not in the room")
        await self.membership.update(requester.user_id, roomId, target, LEAVE, reason)
        return {}

    async def ban(self, request: Any, roomId: str) -> dict[str, Any]:
        requester = await self.auth.get_requester(request)
        _check_room_id(roomId)
        target, reason = _target_and_reason(parse_json_object(request))
        await self.membership.update(requester.user_id, roomId, target, BAN, reason)
        return {}

    async def unban(self, request: Any, roomId: str) -> dict[str, Any]:
        requester = await self.auth.get_requester(request)
        _check_room_id(roomId)
        target, reason = _target_and_reason(parse_json_object(request))
        current = await self.reader.membership(roomId, target)
        if current != BAN:
            raise MatrixError(403, Codes.BAD_STATE, f"Cannot unban a user who is not banned (membership: {current})")
        await self.membership.update(requester.user_id, roomId, target, LEAVE, reason)
        return {}

    async def forget(self, request: Any, roomId: str) -> dict[str, Any]:
        """Only once the user has left (or was kicked or banned, or never was a member): as Synapse."""
        requester = await self.auth.get_requester(request, allow_guest=True)
        _check_room_id(roomId)
        membership = await self.reader.membership(roomId, requester.user_id)
        if membership not in (None, LEAVE, BAN):
            raise MatrixError(400, Codes.UNKNOWN, f"User {requester.user_id} is in room {roomId}")
        await self.store.forget_room(requester.user_id, roomId)
        return {}

    async def knock(self, request: Any, roomIdOrAlias: str) -> dict[str, Any]:
        """A room a user of ours is in gets the knock directly; any other goes through ``make_knock`` /
        ``send_knock`` via the servers of ``via`` (``server_name`` before v1.12), the alias's, the room ID's."""
        requester = await self.auth.get_requester(request)
        reason = _reason(parse_json_object(request, allow_empty=True))
        room_id, servers = await self._resolve(roomIdOrAlias)
        if self.remote_membership is not None and not await self.remote_membership.is_resident(room_id):
            servers = _query_list(request, "via") + _query_list(request, "server_name") + servers
            await self.remote_membership.knock(requester.user_id, room_id, servers, reason)
            return {"room_id": room_id}
        await self.membership.update(requester.user_id, room_id, requester.user_id, KNOCK, reason)
        return {"room_id": room_id}

    async def _resolve(self, room_id_or_alias: str) -> tuple[str, list[str]]:
        """(room ID, servers the alias's server named); a remote alias is asked of its server."""
        if room_id_or_alias.startswith("!"):
            return room_id_or_alias, []
        if room_id_or_alias.startswith("#") and is_valid_room_alias(room_id_or_alias):
            server = room_id_or_alias.split(":", 1)[1]
            if self.remote_join is not None and server != self.membership.engine.server_name:
                return await self.remote_join.resolve_alias(room_id_or_alias)
            found = await self.store.get_alias(room_id_or_alias)
            if found is None:
                raise MatrixError(404, Codes.NOT_FOUND, f"Room alias {room_id_or_alias} not found")
            return found[0], []
        raise MatrixError(400, Codes.INVALID_PARAM, f"Invalid room ID or alias {room_id_or_alias!r}")


def _query_list(request: Any, name: str) -> list[str]:
    """Every value of a repeated query parameter, decoded as UTF-8."""
    try:
        return [v.decode("utf-8") for v in request.args.get(name.encode("ascii"), [])]
    except UnicodeDecodeError:
        raise MatrixError(400, Codes.INVALID_PARAM, f"Query parameter {name!r} must be UTF-8") from None
