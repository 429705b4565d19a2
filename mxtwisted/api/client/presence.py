"""Presence (Client-Server API, "Presence").

* ``GET /presence/{userId}/status``: ``presence``, ``last_active_ago``,
  ``status_msg``, ``currently_active``. Allowed for yourself and for users
  you share a joined room with (``403 M_FORBIDDEN`` otherwise; ``404
  M_NOT_FOUND`` for a local user who does not exist).
* ``PUT /presence/{userId}/status`` with ``{"presence": "online" |
  "unavailable" | "offline", "status_msg": "..."}``: only for yourself
  (``403``), rate limited by ``rc_presence.per_user`` (``429``, as Synapse).

The rules live in :mod:`mxtwisted.ephemeral.presence`.
"""

from __future__ import annotations

from typing import Any, Optional

from mxtwisted.api.client import CLIENT_PREFIXES
from mxtwisted.ephemeral.presence import PresenceHandler
from mxtwisted.events.validation import is_valid_user_id
from mxtwisted.handlers.auth import Authenticator
from mxtwisted.http.errors import Codes, MatrixError
from mxtwisted.http.resource import parse_json_object
from mxtwisted.http.router import Router
from mxtwisted.ratelimit import Ratelimiter
from mxtwisted.storage.presence import PRESENCE_STATES


def _check_user_id(user_id: str) -> None:
    if not is_valid_user_id(user_id, historical=True):
        raise MatrixError(400, Codes.INVALID_PARAM, f"{user_id!r} is not a valid user ID")


class PresenceResource:
    def __init__(
        self, auth: Authenticator, presence: PresenceHandler, ratelimiter: Optional[Ratelimiter] = None
    ) -> None:
        self._auth = auth
        self._presence = presence
        self._ratelimiter = ratelimiter

    def register(self, router: Router) -> None:
        for prefix in CLIENT_PREFIXES:
            router.add("GET", f"{prefix}/presence/{{userId}}/status", self.get_status)
            router.add("PUT", f"{prefix}/presence/{{userId}}/status", self.set_status)

    async def get_status(self, request: Any, userId: str) -> dict[str, Any]:
        """``GET /presence/{userId}/status`` (spec: getPresence)."""
        requester = await self._auth.get_requester(request)
        _check_user_id(userId)
        return await self._presence.get_presence(requester.user_id, userId)

    async def set_status(self, request: Any, userId: str) -> dict[str, Any]:
        """``PUT /presence/{userId}/status`` (spec: setPresence)."""
        requester = await self._auth.get_requester(request)
        _check_user_id(userId)
        if requester.user_id != userId:
            raise MatrixError(403, Codes.FORBIDDEN, "You can only set your own presence state")
        body = parse_json_object(request)
        presence = body.get("presence")
        if not isinstance(presence, str):
            raise MatrixError(400, Codes.BAD_JSON, "'presence' must be a string")
        if presence not in PRESENCE_STATES:
            raise MatrixError(400, Codes.INVALID_PARAM, f"'presence' must be one of {', '.join(PRESENCE_STATES)}")
        status_msg = body.get("status_msg")
        if status_msg is not None and not isinstance(status_msg, str):
            raise MatrixError(400, Codes.BAD_JSON, "'status_msg' must be a string")
        if self._ratelimiter is not None:
            self._ratelimiter.ratelimit(requester.user_id)
        await self._presence.set_state(userId, presence, status_msg)
        return {}
