"""Logging out: ``POST /logout`` and ``POST /logout/all``.

Spec: Client-Server API, "Legacy API" → "Login" (the logout operations).
Both delete devices with their tokens at once: the next request with the
token gets ``401 M_UNKNOWN_TOKEN``. An expired token may still log out (as
Synapse allows), so a client that was soft-logged-out can clean up.
"""

from __future__ import annotations

from typing import Any

from mxtwisted.api.client.login import CLIENT_PREFIXES
from mxtwisted.handlers.auth import Authenticator
from mxtwisted.handlers.login import LoginHandler
from mxtwisted.http.router import Router


class LogoutResource:
    def __init__(self, auth: Authenticator, handler: LoginHandler) -> None:
        self._auth = auth
        self._handler = handler

    def register(self, router: Router) -> None:
        for prefix in CLIENT_PREFIXES:
            router.add("POST", prefix + "/logout", self.post_logout)
            router.add("POST", prefix + "/logout/all", self.post_logout_all)

    async def post_logout(self, request: Any) -> dict[str, Any]:
        """Spec: ``POST /logout``: the access token and its device are deleted."""
        requester = await self._auth.get_requester(request, allow_expired=True)
        await self._handler.logout(requester)
        return {}

    async def post_logout_all(self, request: Any) -> dict[str, Any]:
        """Spec: ``POST /logout/all``: every access token and device of the user are deleted."""
        requester = await self._auth.get_requester(request, allow_expired=True)
        await self._handler.logout_all(requester)
        return {}
