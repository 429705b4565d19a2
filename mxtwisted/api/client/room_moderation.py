"""Kicking, banning, unbanning, forgetting and knocking (Client-Server API "Room membership").

``POST /rooms/{roomId}/kick``, ``/ban``, ``/unban`` (``user_id``, ``reason``),
``POST /rooms/{roomId}/forget`` and ``POST /knock/{roomIdOrAlias}``. Each
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
    def __init__(self, auth: Authenticator, membership: MembershipHandler, reader: RoomReader) -> None:
        self.auth = auth
        self.membership = membership
        self.reader = reader
        self.store = reader.store

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
        """Knocks on rooms this server holds; ``via`` is not needed for those (and remote rooms are 404 for now)."""
        requester = await self.auth.get_requester(request)
        reason = _reason(parse_json_object(request, allow_empty=True))
        room_id = await self._resolve(roomIdOrAlias)
        await self.membership.update(requester.user_id, room_id, requester.user_id, KNOCK, reason)
        return {"room_id": room_id}

    async def _resolve(self, room_id_or_alias: str) -> str:
        if room_id_or_alias.startswith("!"):
            return room_id_or_alias
        if room_id_or_alias.startswith("#") and is_valid_room_alias(room_id_or_alias):
            found = await self.store.get_alias(room_id_or_alias)
            if found is None:
                raise MatrixError(404, Codes.NOT_FOUND, f"Room alias {room_id_or_alias} not found")
            return found[0]
        raise MatrixError(400, Codes.INVALID_PARAM, f"Invalid room ID or alias {room_id_or_alias!r}")
