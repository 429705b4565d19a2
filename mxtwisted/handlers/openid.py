"""OpenID tokens: proving to a third party who a user is.

Spec: Client-Server API "OpenID" (``POST /user/{userId}/openid/request_token``)
and Server-Server API "OpenID" (``GET /openid/userinfo``). A user asks for a
token and hands it, with ``matrix_server_name``, to a third party (an
integration manager, a widget); the third party asks this server's
``/openid/userinfo`` who the token belongs to. The token is good for nothing
else: it is not an access token. As Synapse, tokens last an hour, only the
user themself may request one (``403 M_FORBIDDEN``) and guests may not.
"""

from __future__ import annotations

import secrets
from typing import Any

from mxtwisted.handlers.auth import Requester
from mxtwisted.http.errors import Codes, MatrixError
from mxtwisted.storage.openid import OpenIdTokenStore

#: How long an OpenID token is valid (the spec's example and Synapse: one hour).
OPENID_TOKEN_LIFETIME_MS = 3600 * 1000


class OpenIdHandler:
    def __init__(self, clock: Any, server_name: str, store: OpenIdTokenStore) -> None:
        self._clock = clock
        self.server_name = server_name
        self.store = store

    def _now_ms(self) -> int:
        return int(self._clock.seconds() * 1000)

    async def request_token(self, requester: Requester, user_id: str) -> dict[str, Any]:
        """A new token for ``user_id``, who must be the requester (the answer of ``request_token``)."""
        if requester.user_id != user_id:
            raise MatrixError(403, Codes.FORBIDDEN, "Cannot request tokens for other users")
        token = secrets.token_urlsafe(32)
        now = self._now_ms()
        await self.store.add_token(token, user_id, now + OPENID_TOKEN_LIFETIME_MS, now)
        return {
            "access_token": token,
            "token_type": "Bearer",
            "matrix_server_name": self.server_name,
            "expires_in": OPENID_TOKEN_LIFETIME_MS // 1000,
        }

    async def user_info(self, token: str) -> dict[str, Any]:
        """``{"sub": user_id}`` for a valid token; ``401 M_UNKNOWN_TOKEN`` for an unknown or expired one."""
        user_id = await self.store.get_user_for_token(token, self._now_ms())
        if user_id is None:
            raise MatrixError(401, Codes.UNKNOWN_TOKEN, "Access token unknown or expired")
        return {"sub": user_id}
