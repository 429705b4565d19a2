"""``GET /account/whoami`` (Client-Server API, "Current account information").

Guests may call it (spec: "Guest Access" lists it since v1.2). ``device_id``
is left out only for a token without a device.
"""

from __future__ import annotations

from typing import Any

from mxtwisted.api.client.login import CLIENT_PREFIXES
from mxtwisted.handlers.auth import Authenticator
from mxtwisted.http.router import Router


class WhoamiResource:
    def __init__(self, auth: Authenticator) -> None:
        self._auth = auth

    def register(self, router: Router) -> None:
        for prefix in CLIENT_PREFIXES:
            router.add("GET", prefix + "/account/whoami", self.get_whoami)

    async def get_whoami(self, request: Any) -> dict[str, Any]:
        requester = await self._auth.get_requester(request, allow_guest=True)
        response: dict[str, Any] = {"user_id": requester.user_id, "is_guest": requester.is_guest}
        if requester.device_id is not None:
            response["device_id"] = requester.device_id
        return response
