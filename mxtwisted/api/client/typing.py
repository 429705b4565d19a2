"""Typing notifications (Client-Server API, "Typing Notifications").

* ``PUT /rooms/{roomId}/typing/{userId}`` with ``{"typing": true, "timeout": ms}``
  or ``{"typing": false}``.

Only for yourself (``403 M_FORBIDDEN``) and only in a room you are joined to
(``403``; an unknown room is ``404 M_NOT_FOUND``). ``timeout`` defaults to 30 s
and is capped at 120 s (as Synapse). The rules live in
:mod:`mxtwisted.ephemeral.typing`.
"""

from __future__ import annotations

from typing import Any, Optional

from mxtwisted.api.client import CLIENT_PREFIXES
from mxtwisted.api.client.account_data import check_room_id
from mxtwisted.ephemeral.presence import PresenceHandler
from mxtwisted.ephemeral.typing import TypingHandler
from mxtwisted.events.validation import is_valid_user_id
from mxtwisted.handlers.auth import Authenticator
from mxtwisted.http.errors import Codes, MatrixError
from mxtwisted.http.resource import parse_json_object
from mxtwisted.http.router import Router


class TypingResource:
    def __init__(self, auth: Authenticator, typing: TypingHandler, presence: Optional[PresenceHandler] = None) -> None:
        self._auth = auth
        self._typing = typing
        self._presence = presence

    def register(self, router: Router) -> None:
        for prefix in CLIENT_PREFIXES:
            router.add("PUT", f"{prefix}/rooms/{{roomId}}/typing/{{userId}}", self.set_typing)

    async def set_typing(self, request: Any, roomId: str, userId: str) -> dict[str, Any]:
        """``PUT /rooms/{roomId}/typing/{userId}`` (spec: setTyping)."""
        requester = await self._auth.get_requester(request)
        check_room_id(roomId)
        if not is_valid_user_id(userId, historical=True):
            raise MatrixError(400, Codes.INVALID_PARAM, f"{userId!r} is not a valid user ID")
        body = parse_json_object(request)
        typing = body.get("typing")
        if not isinstance(typing, bool):
            raise MatrixError(400, Codes.BAD_JSON, "'typing' must be a boolean")
        timeout = body.get("timeout")
        if typing and timeout is not None and (not isinstance(timeout, int) or isinstance(timeout, bool) or timeout < 0):
            raise MatrixError(400, Codes.BAD_JSON, "'timeout' must be a non-negative integer (milliseconds)")
        await self._typing.set_typing(requester.user_id, userId, roomId, typing, timeout)
        if self._presence is not None:
            self._presence.bump_active(requester.user_id)
        return {}
