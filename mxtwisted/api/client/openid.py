"""``POST /user/{userId}/openid/request_token`` (Client-Server API "OpenID"); the rules are in
:mod:`mxtwisted.handlers.openid`."""

from __future__ import annotations

from typing import Any

from mxtwisted.api.client import CLIENT_PREFIXES
from mxtwisted.handlers.auth import Authenticator
from mxtwisted.handlers.openid import OpenIdHandler
from mxtwisted.http.resource import parse_json_object
from mxtwisted.http.router import Router


class OpenIdResource:
    def __init__(self, auth: Authenticator, openid: OpenIdHandler) -> None:
        self._auth = auth
        self._openid = openid

    def register(self, router: Router) -> None:
        for prefix in CLIENT_PREFIXES:
            router.add("POST", f"{prefix}/user/{{userId}}/openid/request_token", self.request_token)

    async def request_token(self, request: Any, userId: str) -> dict[str, Any]:
        requester = await self._auth.get_requester(request)
        # The body is "an empty object, reserved for future expansion": it must be an object if sent at all.
        parse_json_object(request, allow_empty=True)
        return await self._openid.request_token(requester, userId)
