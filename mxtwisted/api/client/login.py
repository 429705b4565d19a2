"""Logging in: ``/login``, ``/refresh`` and ``/login/get_token``.

Spec: Client-Server API, "Legacy API" → "Login" (``GET``/``POST /login``),
"Refreshing access tokens" (``POST /refresh``, v1.3) and
``POST /login/get_token`` (v1.7, behind ``login_via_existing_session``).
"""

from __future__ import annotations

from typing import Any

from mxtwisted.api.client import CLIENT_PREFIXES
from mxtwisted.handlers.auth import Authenticator
from mxtwisted.handlers.auth_providers import AuthProviderChain
from mxtwisted.handlers.login import PASSWORD, LoginHandler
from mxtwisted.handlers.sessions import SessionIssuer
from mxtwisted.handlers.uia import UserInteractiveAuth
from mxtwisted.http.errors import Codes, MatrixError, invalid_param, missing_param
from mxtwisted.http.resource import parse_json_object
from mxtwisted.http.router import Router
from mxtwisted.ratelimit import Ratelimiter


class LoginResource:
    """Spec: ``GET /login`` (the login types) and ``POST /login``."""

    def __init__(self, handler: LoginHandler) -> None:
        self._handler = handler

    def register(self, router: Router) -> None:
        for prefix in CLIENT_PREFIXES:
            router.add("GET", prefix + "/login", self.get_login_flows)
            router.add("POST", prefix + "/login", self.post_login)

    async def get_login_flows(self, request: Any) -> dict[str, Any]:
        return {"flows": self._handler.login_flows()}

    async def post_login(self, request: Any) -> dict[str, Any]:
        body = parse_json_object(request)
        return await self._handler.login(body, request.getClientAddressString())


class RefreshResource:
    """Spec: ``POST /refresh``: a refresh token buys a new access token and a new refresh token."""

    def __init__(self, sessions: SessionIssuer) -> None:
        self._sessions = sessions

    def register(self, router: Router) -> None:
        for prefix in CLIENT_PREFIXES:
            router.add("POST", prefix + "/refresh", self.post_refresh)

    async def post_refresh(self, request: Any) -> dict[str, Any]:
        body = parse_json_object(request)
        refresh_token = body.get("refresh_token")
        if refresh_token is None:
            raise missing_param("refresh_token")
        if not isinstance(refresh_token, str):
            raise invalid_param("'refresh_token' must be a string")
        return await self._sessions.refresh(refresh_token)


class LoginTokenResource:
    """Spec: ``POST /login/get_token``: a logged-in user mints a single-use ``m.login.token``.

    Registered only when ``login_via_existing_session.enabled``; otherwise the
    path is unknown (404 ``M_UNRECOGNIZED``), as for any unsupported endpoint.
    The spec requires UIA on every call (no skipping for a recent one), so a
    completed UIA session is deleted once it has bought a token; and, as it
    recommends, at most one token per minute per user (checked after UIA).
    """

    DESCRIPTION = "issue a new access token for your account"

    def __init__(
        self,
        auth: Authenticator,
        uia: UserInteractiveAuth,
        providers: AuthProviderChain,
        handler: LoginHandler,
        ratelimiter: Ratelimiter,
        require_ui_auth: bool = True,
    ) -> None:
        self._auth = auth
        self._uia = uia
        self._providers = providers
        self._handler = handler
        self._ratelimiter = ratelimiter
        self._require_ui_auth = require_ui_auth

    def register(self, router: Router) -> None:
        router.add("POST", "/_matrix/client/v1/login/get_token", self.post_get_token)

    async def post_get_token(self, request: Any) -> dict[str, Any]:
        requester = await self._auth.get_requester(request)
        body = parse_json_object(request)
        if self._require_ui_auth:
            if PASSWORD not in self._providers.login_types():
                raise MatrixError(400, Codes.FORBIDDEN, "No way to confirm your identity is available on this server")
            result = await self._uia.check(request, body, [[PASSWORD]], self.DESCRIPTION, requester=requester)
            await self._uia.store.delete_session(result.session_id)
        self._ratelimiter.ratelimit(requester.user_id.lower())
        return await self._handler.create_login_token(requester.user_id)
