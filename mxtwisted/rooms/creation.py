"""``POST /createRoom``: the initial events of a new room, in the spec's order.

Spec: Client-Server API, "Creation" (``POST /createRoom``): m.room.create, the
creator's join, m.room.power_levels (with ``power_level_content_override``),
m.room.canonical_alias, the preset's join_rules / history_visibility /
guest_access, ``initial_state``, m.room.name, m.room.topic, then invites.
"""

from __future__ import annotations

import secrets
from typing import Any, Awaitable, Callable, Optional

from mxtwisted.events.room_versions import KNOWN_ROOM_VERSIONS, RoomVersion
from mxtwisted.events.validation import is_valid_user_id
from mxtwisted.http.errors import Codes, MatrixError
from mxtwisted.rooms.engine import RoomEngine
from mxtwisted.rooms.membership import INVITE, JOIN, MembershipHandler

PRESETS = {
    "private_chat": {"join_rule": "invite", "history_visibility": "shared", "guest_access": "can_join"},
    "trusted_private_chat": {"join_rule": "invite", "history_visibility": "shared", "guest_access": "can_join"},
    "public_chat": {"join_rule": "public", "history_visibility": "shared", "guest_access": "forbidden"},
}


def default_power_levels(creator: str, version: RoomVersion, trusted_invitees: list[str]) -> dict[str, Any]:
    """Power levels of a new room, as Synapse sets them (and creators implicit in room v12)."""
    users: dict[str, int] = {}
    if not version.privileged_creators:
        users[creator] = 100
        for invitee in trusted_invitees:
            users[invitee] = 100
    return {
        "users": users,
        "users_default": 0,
        "events": {
            "m.room.name": 50,
            "m.room.power_levels": 100,
            "m.room.history_visibility": 100,
            "m.room.canonical_alias": 50,
            "m.room.avatar": 50,
            "m.room.tombstone": 100,
            "m.room.server_acl": 100,
            "m.room.encryption": 100,
        },
        "events_default": 0,
        "state_default": 50,
        "ban": 50,
        "kick": 50,
        "redact": 50,
        "invite": 0,
        "historical": 100,
    }


#: Checks before a room is created: (creator, request body) -> the body to create the room from; raise MatrixError
#: to refuse (spam checkers and room policies: mxtwisted.rooms.policy).
CreationCheck = Callable[[str, dict[str, Any]], Awaitable[dict[str, Any]]]


class RoomCreator:
    def __init__(self, engine: RoomEngine, membership: MembershipHandler, default_room_version: str) -> None:
        self.engine = engine
        self.membership = membership
        self.default_room_version = default_room_version
        self._checks: list[CreationCheck] = []

    def add_check(self, check: CreationCheck) -> None:
        """Called before each room is created; may refuse it (MatrixError) or return an amended request body."""
        self._checks.append(check)

    def _new_room_id(self) -> str:
        return f"!{secrets.token_urlsafe(18)}:{self.engine.server_name}"

    async def create_room(self, creator: str, body: dict[str, Any]) -> tuple[str, Optional[str]]:
        """Create a room from a createRoom request body. Returns (room_id, room_alias)."""
        for check in self._checks:
            body = await check(creator, body)
        version_id = body.get("room_version", self.default_room_version)
        if not isinstance(version_id, str) or version_id not in KNOWN_ROOM_VERSIONS:
            raise MatrixError(400, Codes.UNSUPPORTED_ROOM_VERSION, f"Unsupported room version {version_id!r}")
        version = KNOWN_ROOM_VERSIONS[version_id]
        visibility = body.get("visibility", "private")
        if not isinstance(visibility, str) or visibility not in ("public", "private"):
            raise MatrixError(400, Codes.INVALID_PARAM, "'visibility' must be 'public' or 'private'")
        preset = body.get("preset", "public_chat" if visibility == "public" else "private_chat")
        if not isinstance(preset, str) or preset not in PRESETS:
            raise MatrixError(400, Codes.BAD_JSON, f"Unknown preset {preset!r}")
        invites = body.get("invite", [])
        if not isinstance(invites, list) or not all(isinstance(u, str) and is_valid_user_id(u, historical=True) for u in invites):
            raise MatrixError(400, Codes.INVALID_PARAM, "'invite' must be a list of user IDs")
        if body.get("invite_3pid"):
            raise MatrixError(400, Codes.THREEPID_MEDIUM_NOT_SUPPORTED, "Third-party invites are not supported")
        creation_content = body.get("creation_content", {})
        if not isinstance(creation_content, dict):
            raise MatrixError(400, Codes.BAD_JSON, "'creation_content' must be an object")
        creation_content = {k: v for k, v in creation_content.items() if k not in ("room_version", "creator")}
        trusted = list(invites) if preset == "trusted_private_chat" else []
        if version.privileged_creators and trusted:
            extra = list(creation_content.get("additional_creators") or [])
            creation_content["additional_creators"] = extra + [u for u in trusted if u not in extra and u != creator]
        initial_state = body.get("initial_state", [])
        if not isinstance(initial_state, list) or not all(
            isinstance(e, dict) and isinstance(e.get("type"), str) and isinstance(e.get("content"), dict)
            and isinstance(e.get("state_key", ""), str)
            for e in initial_state
        ):
            raise MatrixError(400, Codes.BAD_JSON, "'initial_state' must be a list of state events (type, state_key, content)")
        override = body.get("power_level_content_override")
        if override is not None and not isinstance(override, dict):
            raise MatrixError(400, Codes.BAD_JSON, "'power_level_content_override' must be an object")
        for key in ("name", "topic"):
            if key in body and not isinstance(body[key], str):
                raise MatrixError(400, Codes.BAD_JSON, f"'{key}' must be a string")
        is_direct = body.get("is_direct", False)
        if not isinstance(is_direct, bool):
            raise MatrixError(400, Codes.BAD_JSON, "'is_direct' must be a boolean")

        alias = None
        alias_name = body.get("room_alias_name")
        if alias_name is not None:
            if not isinstance(alias_name, str) or not alias_name or ":" in alias_name or any(c.isspace() for c in alias_name):
                raise MatrixError(400, Codes.INVALID_PARAM, "Invalid 'room_alias_name'")
            alias = f"#{alias_name}:{self.engine.server_name}"
            if len(alias.encode("utf-8")) > 255:
                raise MatrixError(400, Codes.INVALID_PARAM, "Room alias too long")
            if await self.engine.store.get_alias(alias) is not None:
                raise MatrixError(400, Codes.ROOM_IN_USE, "Room alias already taken")

        room_id = None if version.room_id_from_create_event else self._new_room_id()
        room_id, _ = await self.engine.create_room(room_id, version, creator, creation_content, visibility == "public")
        send = self.engine.send_event
        await self.membership.update(creator, room_id, creator, JOIN)

        power_levels = default_power_levels(creator, version, trusted)
        if override:
            for key, value in override.items():
                power_levels[key] = value
        await send(creator, room_id, "m.room.power_levels", power_levels, state_key="")

        if alias is not None:
            if not await self.engine.store.create_alias(alias, room_id, creator):
                raise MatrixError(400, Codes.ROOM_IN_USE, "Room alias already taken")
            await send(creator, room_id, "m.room.canonical_alias", {"alias": alias}, state_key="")

        preset_values = PRESETS[preset]
        given = {(e["type"], e.get("state_key", "")) for e in initial_state}
        if ("m.room.join_rules", "") not in given:
            await send(creator, room_id, "m.room.join_rules", {"join_rule": preset_values["join_rule"]}, state_key="")
        if ("m.room.history_visibility", "") not in given:
            await send(
                creator, room_id, "m.room.history_visibility",
                {"history_visibility": preset_values["history_visibility"]}, state_key="",
            )
        if ("m.room.guest_access", "") not in given:
            await send(creator, room_id, "m.room.guest_access", {"guest_access": preset_values["guest_access"]}, state_key="")
        for event in initial_state:
            await send(creator, room_id, event["type"], event["content"], state_key=event.get("state_key", ""))
        if "name" in body:
            await send(creator, room_id, "m.room.name", {"name": body["name"]}, state_key="")
        if "topic" in body:
            await send(creator, room_id, "m.room.topic", {"topic": body["topic"]}, state_key="")
        for invitee in invites:
            extra = {"is_direct": True} if is_direct else None
            await self.membership.update(creator, room_id, invitee, INVITE, extra_content=extra)
        return room_id, alias
