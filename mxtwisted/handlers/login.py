"""The login use case: who may log in, and the session they get.

Spec: Client-Server API, "Legacy API" → "Login" (``GET``/``POST /login``),
"Identifier types", "Relationship between access tokens and devices",
"Logout" (``POST /logout``, ``POST /logout/all``) and ``POST /login/get_token``
(login tokens for ``m.login.token``).

A password login (or any login type a module provides) goes through the
:class:`~mxtwisted.handlers.auth_providers.AuthProviderChain`; a provider may
name a user that does not exist yet, who is then created (first login from a
directory). ``m.login.token`` is handled here: a single-use token from
``/login/get_token`` (or, later, SSO).

Rate limits follow Synapse's ``rc_login``: ``address`` counts every attempt
per client IP, ``failed_attempts`` counts failed attempts per named account
(and is checked, without counting, before the credentials are looked at), and
``account`` counts successful authentications per account before a device is
created.
"""

from __future__ import annotations

import secrets
from typing import Any, Hashable, Optional

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from mxtwisted.events.validation import is_valid_user_id, parse_user_id
from mxtwisted.handlers.auth import Requester
from mxtwisted.handlers.auth_providers import AuthProviderChain
from mxtwisted.handlers.registration import RegistrationHandler
from mxtwisted.handlers.sessions import SessionIssuer
from mxtwisted.handlers.uia_stages import resolve_user_id, user_id_from_identifier
from mxtwisted.http.errors import Codes, MatrixError, forbidden, invalid_param, missing_param
from mxtwisted.interfaces import AuthResult
from mxtwisted.ratelimit import Ratelimiter
from mxtwisted.storage.accounts import DeviceStore, TokenStore, UserStore

log = Logger()

PASSWORD = "m.login.password"
TOKEN = "m.login.token"

#: One message for an unknown user and a wrong password, so that login does not reveal which accounts exist.
INVALID_CREDENTIALS = "Invalid username or password"

_THIRD_PARTY_TYPES = ("m.id.thirdparty", "m.id.phone")


def client_well_known(public_baseurl: Optional[str], extra_content: dict[str, Any]) -> Optional[dict[str, Any]]:
    """The ``well_known`` object of a login response: what ``/.well-known/matrix/client`` serves, or None."""
    if not public_baseurl:
        return None
    well_known = dict(extra_content)
    well_known["m.homeserver"] = {"base_url": public_baseurl.rstrip("/") + "/"}
    return well_known


class LoginHandler:
    """``/login``, ``/logout``, ``/logout/all`` and login tokens."""

    def __init__(
        self,
        server_name: str,
        clock: IReactorTime,
        users: UserStore,
        devices: DeviceStore,
        tokens: TokenStore,
        providers: AuthProviderChain,
        sessions: SessionIssuer,
        registration: RegistrationHandler,
        address_limiter: Ratelimiter,
        account_limiter: Ratelimiter,
        failed_limiter: Ratelimiter,
        well_known: Optional[dict[str, Any]] = None,
        login_token_lifetime_ms: int = 300_000,
        get_login_token_enabled: bool = False,
    ) -> None:
        self._server_name = server_name
        self._clock = clock
        self._users = users
        self._devices = devices
        self._tokens = tokens
        self._providers = providers
        self._sessions = sessions
        self._registration = registration
        self._address_limiter = address_limiter
        self._account_limiter = account_limiter
        self._failed_limiter = failed_limiter
        self._well_known = well_known
        self.login_token_lifetime_ms = login_token_lifetime_ms
        self._get_login_token_enabled = get_login_token_enabled

    def _now_ms(self) -> int:
        return int(self._clock.seconds() * 1000)

    # -- GET /login ---------------------------------------------------------
    def login_flows(self) -> list[dict[str, Any]]:
        """Spec: ``GET /login``. Every type some auth provider accepts, then ``m.login.token``."""
        flows: list[dict[str, Any]] = [{"type": t} for t in self._providers.login_types() if t != TOKEN]
        token_flow: dict[str, Any] = {"type": TOKEN}
        if self._get_login_token_enabled:
            token_flow["get_login_token"] = True
        flows.append(token_flow)
        return flows

    # -- POST /login --------------------------------------------------------
    async def login(self, body: dict[str, Any], client_ip: str) -> dict[str, Any]:
        """Spec: ``POST /login``. Returns the response body, or raises the spec's 400/403/429."""
        login_type = body.get("type")
        if login_type is None:
            raise missing_param("type")
        if not isinstance(login_type, str):
            raise invalid_param("'type' must be a string")
        refreshable = body.get("refresh_token", False)
        if not isinstance(refreshable, bool):
            raise invalid_param("'refresh_token' must be true or false")
        device_id = body.get("device_id")
        if device_id is not None and (not isinstance(device_id, str) or not device_id):
            raise invalid_param("'device_id' must be a non-empty string")
        display_name = body.get("initial_device_display_name")
        if display_name is not None and not isinstance(display_name, str):
            raise invalid_param("'initial_device_display_name' must be a string")

        self._address_limiter.ratelimit(client_ip)
        if login_type == TOKEN:
            user_id = await self._check_token_login(body)
        else:
            user_id = await self._check_provider_login(login_type, body)
        return await self._complete_login(user_id, device_id, display_name, refreshable)

    async def _check_token_login(self, body: dict[str, Any]) -> str:
        """``m.login.token``: a single-use token names the user (spec: invalid → 403 M_FORBIDDEN)."""
        token = body.get("token")
        if token is None:
            raise missing_param("token")
        if not isinstance(token, str):
            raise invalid_param("'token' must be a string")
        user_id = await self._tokens.consume_login_token(token, self._now_ms())
        if user_id is None:
            raise forbidden("Invalid login token")
        return user_id

    async def _check_provider_login(self, login_type: str, body: dict[str, Any]) -> str:
        """A login type of the provider chain (``m.login.password`` or one a module adds)."""
        supported = self._providers.login_types()
        if login_type not in supported:
            raise MatrixError(400, Codes.UNKNOWN, f"Unknown login type {login_type!r}")
        missing = [name for name in supported[login_type] if name not in body]
        if missing:
            raise MatrixError(400, Codes.MISSING_PARAM, f"Missing parameters for {login_type}: {', '.join(missing)}")
        if login_type == PASSWORD and not isinstance(body.get("password"), str):
            raise invalid_param("'password' must be a string")

        user_id = await self._user_id_for_login(body)
        if user_id is None and login_type == PASSWORD:
            raise missing_param("identifier")
        failed_key: Optional[str] = user_id.lower() if user_id is not None else None
        if failed_key is not None:
            # Too many failures for this account: refuse before looking at the credentials.
            self._failed_limiter.ratelimit(failed_key, update=False)
            user_id = await resolve_user_id(self._users, user_id)
        result = await self._providers.check_login(user_id, login_type, dict(body))
        if result is None:
            if failed_key is not None:
                self._failed_limiter.record(failed_key)
            log.info("Failed {login_type} login for {user_id}", login_type=login_type, user_id=user_id)
            raise forbidden(INVALID_CREDENTIALS)
        return await self._ensure_user(result)

    async def _user_id_for_login(self, body: dict[str, Any]) -> Optional[str]:
        """The user a login names (``identifier``, or the legacy ``user`` / ``medium`` + ``address``), or None.

        Spec: "Identifier types". matrixhs keeps no third-party identifiers for
        login, so a 3PID is always unknown: 403 as the spec requires.
        """
        identifier = body.get("identifier")
        if identifier is None and body.get("user") is None and "medium" in body and "address" in body:
            identifier = {"type": "m.id.thirdparty", "medium": body["medium"], "address": body["address"]}
        if isinstance(identifier, dict):
            id_type = identifier.get("type")
            if id_type is None and "medium" in identifier and "address" in identifier:
                id_type = "m.id.thirdparty"  # the spec's own 3PID login example has no type
            if id_type is None:
                raise MatrixError(400, Codes.MISSING_PARAM, "'identifier' has no 'type'")
            if id_type in _THIRD_PARTY_TYPES:
                self._refuse_third_party(id_type, identifier)
        return user_id_from_identifier(body, self._server_name)

    def _refuse_third_party(self, id_type: str, identifier: dict[str, Any]) -> None:
        """Check a 3PID identifier's shape, count the failure and refuse with 403 (unknown 3PID)."""
        if id_type == "m.id.thirdparty":
            medium, address = identifier.get("medium"), identifier.get("address")
            if not isinstance(medium, str) or not isinstance(address, str):
                raise invalid_param("A third-party identifier needs 'medium' and 'address' strings")
            key: Hashable = (medium, address.lower() if medium == "email" else address)
        else:
            country, phone = identifier.get("country"), identifier.get("phone")
            if not isinstance(country, str) or not isinstance(phone, str):
                raise invalid_param("A phone identifier needs 'country' and 'phone' strings")
            key = ("msisdn", country.upper(), "".join(c for c in phone if c.isdigit()))
        # As for user IDs: a 3PID that failed too often is refused before anything else.
        self._failed_limiter.ratelimit(key, update=False)
        self._failed_limiter.record(key)
        raise forbidden(INVALID_CREDENTIALS)

    async def _ensure_user(self, result: AuthResult) -> str:
        """The registered user an auth provider vouched for, created on first login if local and valid."""
        user_id = result.user_id
        if not isinstance(user_id, str) or not is_valid_user_id(user_id, historical=True):
            log.warn("An auth provider returned an invalid user ID {user_id!r}; refusing the login", user_id=user_id)
            raise forbidden(INVALID_CREDENTIALS)
        user_id = await resolve_user_id(self._users, user_id)
        if await self._users.get_user(user_id) is not None:
            return user_id
        localpart, server_name = parse_user_id(user_id)
        if server_name != self._server_name:
            log.warn("An auth provider returned the remote user {user_id}; refusing the login", user_id=user_id)
            raise forbidden(INVALID_CREDENTIALS)
        try:
            return await self._registration.register(localpart, None, display_name=result.display_name)
        except MatrixError as e:
            if e.errcode == Codes.USER_IN_USE:  # created concurrently (possibly with other case)
                return await resolve_user_id(self._users, user_id)
            log.warn("Cannot create {user_id} on first login: {error}", user_id=user_id, error=e.message)
            raise forbidden(INVALID_CREDENTIALS) from None

    async def _complete_login(
        self, user_id: str, device_id: Optional[str], display_name: Optional[str], refreshable: bool
    ) -> dict[str, Any]:
        """The user is authenticated: check the account, then create the device and its tokens."""
        self._account_limiter.ratelimit(user_id.lower())
        user = await self._users.get_user(user_id)
        if user is None:
            raise forbidden(INVALID_CREDENTIALS)
        if user.deactivated:
            raise MatrixError(403, Codes.USER_DEACTIVATED, "This account has been deactivated")
        session = await self._sessions.create_session(user_id, device_id, display_name, refreshable=refreshable)
        response = dict(session)
        response["home_server"] = self._server_name
        if self._well_known is not None:
            response["well_known"] = self._well_known
        return response

    # -- POST /login/get_token ---------------------------------------------------
    async def create_login_token(self, user_id: str) -> dict[str, Any]:
        """Spec: ``POST /login/get_token``: a single-use ``m.login.token`` for ``user_id``."""
        token = "mxl_" + secrets.token_urlsafe(32)
        await self._tokens.add_login_token(token, user_id, self._now_ms() + self.login_token_lifetime_ms)
        return {"login_token": token, "expires_in_ms": self.login_token_lifetime_ms}

    # -- POST /logout, /logout/all -------------------------------------------------
    async def logout(self, requester: Requester) -> None:
        """Spec: ``POST /logout``: delete the requester's device with its tokens (or the lone token)."""
        if requester.device_id is not None:
            await self._sessions.delete_devices(requester.user_id, [requester.device_id])
        else:
            await self._tokens.delete_access_token(requester.token_hash)
            await self._providers.on_logged_out(requester.user_id, None)

    async def logout_all(self, requester: Requester) -> None:
        """Spec: ``POST /logout/all``: delete every device of the user and every token."""
        devices = await self._devices.get_devices(requester.user_id)
        await self._sessions.delete_devices(requester.user_id, [d.device_id for d in devices])
        # Tokens without a device (none are issued today, but a database may hold some).
        await self._tokens.delete_user_tokens(requester.user_id)
