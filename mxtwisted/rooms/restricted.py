"""Joining restricted rooms (room versions 8+) held by this server.

Spec: Client-Server API "Restricted rooms" and Server-Server API "Restricted
rooms"; rooms/v8 and v10 (``knock_restricted``). A user who is neither
invited nor joined may join a room whose join rule is ``restricted`` (or
``knock_restricted``) when they are a joined member of one of the rooms
listed in its ``allow`` conditions (``m.room_membership``). The server checks
that, and names in the join event's ``join_authorised_via_users_server`` one
of its own joined users with the power to invite: the auth rules accept the
join on that user's authority (and the event is signed by this server, as
they require).
"""

from __future__ import annotations

from typing import Any, Optional

from mxtwisted.events.auth import AuthError, get_named_level, get_power_level
from mxtwisted.http.errors import Codes, MatrixError

JOIN_RULES_KEY = ("m.room.join_rules", "")
ROOM_MEMBERSHIP_CONDITION = "m.room_membership"
#: Spec error code (Server-Server API, make_join) for "no user here can authorise the join".
UNABLE_TO_GRANT_JOIN = "M_UNABLE_TO_GRANT_JOIN"


def is_restricted(join_rule: Any, room_version: Any) -> bool:
    """Whether ``join_rule`` makes joins without an invite depend on the ``allow`` conditions."""
    if join_rule == "restricted":
        return bool(room_version.restricted_join_rule)
    if join_rule == "knock_restricted":
        return bool(room_version.knock_restricted_join_rule)
    return False


def allowed_room_ids(join_rules_content: dict[str, Any]) -> list[str]:
    """The rooms whose joined members may join: the ``m.room_membership`` conditions of ``allow``.

    Malformed conditions (and a malformed ``allow``) are ignored, so that they only ever narrow who may join.
    """
    allow = join_rules_content.get("allow")
    if not isinstance(allow, list):
        return []
    rooms = []
    for condition in allow:
        if isinstance(condition, dict) and condition.get("type") == ROOM_MEMBERSHIP_CONDITION:
            room_id = condition.get("room_id")
            if isinstance(room_id, str):
                rooms.append(room_id)
    return rooms


async def restricted_join_authoriser(engine: Any, room: Any, user_id: str) -> Optional[str]:
    """For a join of ``user_id`` (not invited, not joined) to ``room`` (a :class:`RoomCache`):
    the local user to name in ``join_authorised_via_users_server``, or None if the room is not restricted.

    Raises ``403 M_FORBIDDEN`` when the user meets none of the allow conditions, and
    ``400 M_UNABLE_TO_GRANT_JOIN`` when no joined local user may invite (as Synapse).
    """
    version = room.version
    if not version.restricted_join_rule:
        return None
    state = await engine.get_state_events(room, [JOIN_RULES_KEY, ("m.room.create", ""), ("m.room.power_levels", "")])
    join_rules = state.get(JOIN_RULES_KEY)
    if join_rules is None or not is_restricted(join_rules.content.get("join_rule"), version):
        return None
    allowed = allowed_room_ids(join_rules.content)
    if allowed:
        joined_rooms = await engine.store.get_rooms_for_user(user_id, ("join",))
        allowed = [room_id for room_id in allowed if room_id in joined_rooms]
    if not allowed:
        raise MatrixError(
            403, Codes.FORBIDDEN, "You do not belong to any of the rooms this room's join rules allow"
        )
    authoriser = _local_user_who_can_invite(room.members_joined_local, state)
    if authoriser is None:
        raise MatrixError(400, UNABLE_TO_GRANT_JOIN, "No user of this server in the room can authorise the join")
    return authoriser


def _local_user_who_can_invite(local_members: Any, auth_state: dict) -> Optional[str]:
    """The most powerful local joined member whose power level reaches the invite level (ties: by user ID)."""
    invite_level = get_named_level("invite", auth_state)
    best: Optional[tuple[Any, str]] = None
    for user in local_members:
        try:
            level = get_power_level(user, auth_state)
        except AuthError:
            continue
        if level < invite_level:
            continue
        if best is None or (-level, user) < (-best[0], best[1]):
            best = (level, user)
    return best[1] if best else None
