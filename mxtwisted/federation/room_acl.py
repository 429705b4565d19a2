"""Applying a room's current server ACL to a requesting server.

The rules live in :mod:`mxtwisted.federation.server_acl` (pure); this reads the
room's current ``m.room.server_acl`` through the room engine so that the
transaction receiver, the EDU handler and the room endpoints ask the same
question the same way (Server-Server API, "Server Access Control Lists").
"""

from __future__ import annotations

from typing import Any

from mxtwisted.federation.server_acl import SERVER_ACL_KEY, server_allowed
from mxtwisted.http.errors import Codes, MatrixError
from mxtwisted.rooms.engine import RoomCache

#: The message of refusals (the spec only fixes the status and errcode).
DENIED = "Server is denied by the room's server ACL"


async def origin_allowed(engine: Any, room: RoomCache, origin: str) -> bool:
    """Whether the room's current ACL lets ``origin`` in (always, when the room has none)."""
    if SERVER_ACL_KEY not in room.state:
        return True
    acl = (await engine.get_state_events(room, [SERVER_ACL_KEY])).get(SERVER_ACL_KEY)
    return server_allowed(acl.content if acl is not None else None, origin)


async def check_origin_allowed(engine: Any, room: RoomCache, origin: str) -> None:
    """403 M_FORBIDDEN unless the room's ACL lets ``origin`` in."""
    if not await origin_allowed(engine, room, origin):
        raise MatrixError(403, Codes.FORBIDDEN, DENIED)
