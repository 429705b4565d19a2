"""``GET /_matrix/client/v1/rooms/{roomId}/hierarchy`` (Client-Server API "Spaces").

Thin: parse and check the query parameters, call
:meth:`mxtwisted.rooms.hierarchy.RoomHierarchy.get_hierarchy`.
"""

from __future__ import annotations

from typing import Any, Optional

from mxtwisted.handlers.auth import Authenticator
from mxtwisted.http.errors import Codes, MatrixError
from mxtwisted.http.resource import query_arg
from mxtwisted.http.router import Router
from mxtwisted.rooms.hierarchy import RoomHierarchy

V1 = "/_matrix/client/v1"


def parse_bool_arg(request: Any, name: str) -> bool:
    """A ``true``/``false`` query parameter (absent: false); anything else is ``400 M_INVALID_PARAM``."""
    value = query_arg(request, name)
    if value is None or value == "false":
        return False
    if value == "true":
        return True
    raise MatrixError(400, Codes.INVALID_PARAM, f"{name!r} must be 'true' or 'false'")


def _int_arg(request: Any, name: str, minimum: int) -> Optional[int]:
    value = query_arg(request, name)
    if value is None:
        return None
    try:
        number = int(value)
    except ValueError:
        raise MatrixError(400, Codes.INVALID_PARAM, f"{name!r} must be an integer") from None
    if number < minimum:
        raise MatrixError(400, Codes.INVALID_PARAM, f"{name!r} must be at least {minimum}")
    return number


class HierarchyResource:
    def __init__(self, auth: Authenticator, hierarchy: RoomHierarchy) -> None:
        self._auth = auth
        self._hierarchy = hierarchy

    def register(self, router: Router) -> None:
        router.add("GET", f"{V1}/rooms/{{roomId}}/hierarchy", self.get_hierarchy)

    async def get_hierarchy(self, request: Any, roomId: str) -> dict[str, Any]:
        requester = await self._auth.get_requester(request, allow_guest=True)
        if not roomId.startswith("!"):
            raise MatrixError(400, Codes.INVALID_PARAM, f"Invalid room ID {roomId!r}")
        return await self._hierarchy.get_hierarchy(
            requester.user_id,
            roomId,
            suggested_only=parse_bool_arg(request, "suggested_only"),
            max_depth=_int_arg(request, "max_depth", 0),
            limit=_int_arg(request, "limit", 1),
            from_token=query_arg(request, "from"),
        )
