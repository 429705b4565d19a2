"""``GET /_matrix/federation/v1/openid/userinfo?access_token=`` (Server-Server API "OpenID").

Called by whoever a user gave an OpenID token to (an integration manager, a
widget's server), which is usually not a homeserver: so, unlike the other
federation endpoints, it takes no X-Matrix authentication.
"""

from __future__ import annotations

from typing import Any

from mxtwisted.handlers.openid import OpenIdHandler
from mxtwisted.http.errors import Codes, MatrixError
from mxtwisted.http.resource import query_arg
from mxtwisted.http.router import Router

V1 = "/_matrix/federation/v1"


class OpenIdUserInfoResource:
    def __init__(self, openid: OpenIdHandler) -> None:
        self._openid = openid

    def register(self, router: Router) -> None:
        router.add("GET", V1 + "/openid/userinfo", self.user_info)

    async def user_info(self, request: Any) -> dict[str, Any]:
        token = query_arg(request, "access_token")
        if not token:
            raise MatrixError(401, Codes.MISSING_TOKEN, "Access token required")
        return await self._openid.user_info(token)
