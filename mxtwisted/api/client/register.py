"""Account registration: ``POST /register``, ``GET /register/available`` and the registration-token validity check.

Spec: Client-Server API, "Account registration" (legacy API: ``POST /register``,
``GET /register/available``), "User-Interactive Authentication API" →
"Authentication types" → "Dummy Auth" and "Token-authenticated registration"
(``GET /register/m.login.registration_token/validity``, v1.2), and the "Guest
Access" module (``kind=guest``).

Which flows ``/register`` offers follows the configuration:

* without ``enable_registration``, registration is closed: ``403 M_FORBIDDEN``;
* with it, ``registration_requires_token`` → ``[["m.login.registration_token"]]``;
* else ``enable_registration_without_verification`` → ``[["m.login.dummy"]]``;
* else closed (Synapse refuses to start then; matrixhs warns).

The requested username is checked (``M_INVALID_USERNAME``, ``M_USER_IN_USE``)
on every request, before User-Interactive Authentication, as the spec requires.
The plaintext password never goes into the UIA session: it is taken out of the
body, and when the client still has stages to complete its bcrypt hash is kept
in the session's server-side data instead, so that a client which sends the
password only on its first request still gets it set. A session that already
created an account answers a retried final request with the same account
instead of failing with ``M_USER_IN_USE``.
"""

from __future__ import annotations

import secrets
import string
from typing import Any, Optional

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from mxtwisted.api.client import CLIENT_PREFIXES as REGISTER_PREFIXES
from mxtwisted.handlers.auth import get_access_token
from mxtwisted.handlers.registration import RegistrationHandler
from mxtwisted.handlers.sessions import SessionIssuer
from mxtwisted.handlers.uia import DUMMY, REGISTRATION_TOKEN, UIAResult, UserInteractiveAuth
from mxtwisted.http.errors import Codes, MatrixError, invalid_param, missing_param
from mxtwisted.http.resource import parse_json_object, query_arg
from mxtwisted.http.router import Router
from mxtwisted.ratelimit import Ratelimiter
from mxtwisted.storage.uia import RegistrationTokenStore

log = Logger()


#: The validity check exists only under v1 (spec v1.2).
VALIDITY_PATH = f"/_matrix/client/v1/register/{REGISTRATION_TOKEN}/validity"

#: Longest accepted username and password (as Synapse): longer ones are refused before anything is hashed.
MAX_USERNAME_LENGTH = 512
MAX_PASSWORD_LENGTH = 512

#: Keys this endpoint keeps in a UIA session's server-side data.
SESSION_PASSWORD_HASH = "password_hash"
SESSION_REGISTERED_USER_ID = "registered_user_id"
SESSION_REGISTRATION_TOKEN = "registration_token"  # written by the m.login.registration_token stage

_GENERATED_ALPHABET = string.ascii_lowercase + string.digits


def generate_localpart() -> str:
    """A localpart for a client that sent no ``username``: a letter then 11 letters or digits (never all-numeric,
    which is reserved for guests)."""
    return secrets.choice(string.ascii_lowercase) + "".join(secrets.choice(_GENERATED_ALPHABET) for _ in range(11))


def registration_flows(config: Any) -> list[list[str]]:
    """The UIA flows ``POST /register`` offers for ``config``; empty when registration is closed.

    As in Synapse, ``enable_registration`` must be on: ``registration_requires_token`` then asks for a token
    (it counts as the verification), otherwise ``enable_registration_without_verification`` allows the dummy flow.
    """
    if not config["enable_registration"]:
        return []
    if config["registration_requires_token"]:
        return [[REGISTRATION_TOKEN]]
    if config["enable_registration_without_verification"]:
        return [[DUMMY]]
    return []


def _optional_str(body: dict, name: str) -> Optional[str]:
    value = body.get(name)
    if value is not None and not isinstance(value, str):
        raise invalid_param(f"'{name}' must be a string")
    return value


def _optional_bool(body: dict, name: str) -> Optional[bool]:
    value = body.get(name)
    if value is not None and not isinstance(value, bool):
        raise invalid_param(f"'{name}' must be true or false")
    return value


class RegisterResource:
    """``POST /register`` (user and guest accounts), ``GET /register/available`` and the token validity check."""

    def __init__(
        self,
        config: Any,
        clock: IReactorTime,
        registration: RegistrationHandler,
        sessions: SessionIssuer,
        uia: UserInteractiveAuth,
        registration_tokens: RegistrationTokenStore,
        ratelimiter: Ratelimiter,
        availability_ratelimiter: Ratelimiter,
        token_validity_ratelimiter: Ratelimiter,
    ) -> None:
        self._clock = clock
        self._registration = registration
        self._sessions = sessions
        self._uia = uia
        self._tokens = registration_tokens
        self._ratelimiter = ratelimiter
        self._availability_ratelimiter = availability_ratelimiter
        self._token_validity_ratelimiter = token_validity_ratelimiter
        self._flows = registration_flows(config)
        self._tokens_required = bool(config["registration_requires_token"]) and bool(config["enable_registration"])
        self._allow_guests = bool(config["allow_guest_access"])
        self._server_name = config.server_name
        if config["enable_registration"] and not self._flows:
            log.warn(
                "enable_registration is set but registration stays closed: matrixhs has no email or captcha"
                " verification; also set enable_registration_without_verification or registration_requires_token"
            )

    def register(self, router: Router) -> None:
        for prefix in REGISTER_PREFIXES:
            router.add("POST", prefix + "/register", self.post_register)
            router.add("GET", prefix + "/register/available", self.get_available)
        router.add("GET", VALIDITY_PATH, self.get_token_validity)

    # -- POST /register ---------------------------------------------------
    async def post_register(self, request: Any) -> dict[str, Any]:
        """Spec: ``POST /register``. ``kind=guest`` registers a guest; anything but ``user``/``guest`` is 400."""
        address = request.getClientAddressString()
        self._ratelimiter.ratelimit(address, update=False)
        kind = query_arg(request, "kind", "user")
        body = parse_json_object(request, allow_empty=True)
        if kind == "guest":
            return await self._register_guest(body, address)
        if kind != "user":
            raise invalid_param(f"Unknown account kind {kind!r}: expected 'user' or 'guest'")
        if get_access_token(request) is not None:
            # Only application services may register while authenticated (not supported yet), as in Synapse.
            raise invalid_param("An access token must not be provided on requests to /register")
        if not self._flows:
            raise MatrixError(403, Codes.FORBIDDEN, "Registration has been disabled")

        refresh = _optional_bool(body, "refresh_token")
        _optional_bool(body, "inhibit_login")
        device_id = _optional_str(body, "device_id")
        if device_id is not None and not 0 < len(device_id) <= 255:
            raise invalid_param("'device_id' must be a non-empty string of at most 255 characters")
        _optional_str(body, "initial_device_display_name")
        username = body.get("username")
        if username is not None:
            if not isinstance(username, str) or len(username) > MAX_USERNAME_LENGTH:
                raise MatrixError(400, Codes.INVALID_USERNAME, "Invalid username")
            username = username.lower()
        # The plaintext password never enters the UIA session (whose request body is stored).
        password = body.pop("password", None)
        if password is not None:
            if not isinstance(password, str):
                raise invalid_param("'password' must be a string")
            if len(password) > MAX_PASSWORD_LENGTH:
                raise invalid_param(f"'password' may not be longer than {MAX_PASSWORD_LENGTH} characters")
        if not password and "initial_device_display_name" in body:
            # Some clients send the display name alone on a later request; keep the stored parameters (as Synapse).
            del body["initial_device_display_name"]

        if username is not None:
            await self._check_username(username, body)

        try:
            result = await self._uia.check(request, body, self._flows, "register a new account")
        except MatrixError as e:
            if e.status == 401 and password and isinstance(e.extra.get("session"), str):
                await self._keep_password_hash(e.extra["session"], password)
            raise
        return await self._complete(result, password, refresh, address)

    async def _check_username(self, username: str, body: dict) -> None:
        """The spec's early check: M_INVALID_USERNAME / M_USER_IN_USE before UIA (unless this session registered it)."""
        try:
            await self._registration.check_available(username)
        except MatrixError as e:
            if e.errcode != Codes.USER_IN_USE:
                raise
            session = await self._session_of(body)
            if session is None or session.serverdict.get(SESSION_REGISTERED_USER_ID) != self._registration.user_id(username):
                raise

    async def _session_of(self, body: dict) -> Any:
        auth = body.get("auth")
        session_id = auth.get("session") if isinstance(auth, dict) else None
        return await self._uia.store.get_session(session_id) if isinstance(session_id, str) else None

    async def _keep_password_hash(self, session_id: str, password: str) -> None:
        session = await self._uia.store.get_session(session_id)
        if session is not None and not session.serverdict.get(SESSION_PASSWORD_HASH):
            password_hash = await self._registration.hasher.hash(password)
            await self._uia.store.set_server_value(session_id, SESSION_PASSWORD_HASH, password_hash)

    async def _complete(
        self, result: UIAResult, password: Optional[str], refresh: Optional[bool], address: str
    ) -> dict[str, Any]:
        """UIA is complete: create the account (once per session), use up the registration token, log in."""
        params = result.clientdict
        user_id = result.serverdict.get(SESSION_REGISTERED_USER_ID)
        if user_id is None:
            password_hash = None if password else result.serverdict.get(SESSION_PASSWORD_HASH)
            if not password and not password_hash:
                raise missing_param("password")
            username = params.get("username")
            self._ratelimiter.ratelimit(address)
            if isinstance(username, str):
                user_id = await self._registration.register(
                    username.lower(), password or None, password_hash=password_hash
                )
            else:
                user_id = await self._register_generated(password or None, password_hash)
            await self._uia.store.set_server_value(result.session_id, SESSION_REGISTERED_USER_ID, user_id)
            token = result.serverdict.get(SESSION_REGISTRATION_TOKEN)
            if isinstance(token, str):
                await self._tokens.complete(token)
            log.info("Registered {user_id}", user_id=user_id)
        if refresh is None:
            refresh = params.get("refresh_token") is True
        response: dict[str, Any] = {"user_id": user_id, "home_server": self._server_name}
        if params.get("inhibit_login") is True:
            return response
        device_id = params.get("device_id") if isinstance(params.get("device_id"), str) else None
        display_name = params.get("initial_device_display_name")
        login = await self._sessions.create_session(
            user_id, device_id, display_name if isinstance(display_name, str) else None, refreshable=refresh
        )
        response.update(login)
        return response

    async def _register_generated(self, password: Optional[str], password_hash: Optional[str]) -> str:
        for _ in range(10):
            try:
                return await self._registration.register(generate_localpart(), password, password_hash=password_hash)
            except MatrixError as e:
                if e.errcode != Codes.USER_IN_USE:
                    raise
        raise MatrixError(500, Codes.UNKNOWN, "Could not allocate a user ID")

    async def _register_guest(self, body: dict, address: str) -> dict[str, Any]:
        """Spec: "Guest Access". Everything but ``initial_device_display_name`` is ignored; the server picks the
        numeric user ID and the device ID."""
        if not self._allow_guests:
            raise MatrixError(403, Codes.GUEST_ACCESS_FORBIDDEN, "Guest access is disabled")
        self._ratelimiter.ratelimit(address)
        user_id = await self._registration.register_guest()
        display_name = body.get("initial_device_display_name")
        login = await self._sessions.create_session(
            user_id, None, display_name if isinstance(display_name, str) else None
        )
        log.info("Registered guest {user_id}", user_id=user_id)
        return {**login, "home_server": self._server_name}

    # -- GET /register/available -----------------------------------------
    async def get_available(self, request: Any) -> dict[str, Any]:
        """Spec: ``GET /register/available``: 200 ``{"available": true}`` or 400 M_INVALID_USERNAME / M_USER_IN_USE."""
        self._availability_ratelimiter.ratelimit(request.getClientAddressString())
        if not self._flows:
            raise MatrixError(403, Codes.FORBIDDEN, "Registration has been disabled")
        username = query_arg(request, "username")
        if username is None:
            raise missing_param("username")
        if len(username) > MAX_USERNAME_LENGTH:
            raise MatrixError(400, Codes.INVALID_USERNAME, "Invalid username")
        await self._registration.check_available(username.lower())
        return {"available": True}

    # -- GET /register/m.login.registration_token/validity -----------------
    async def get_token_validity(self, request: Any) -> dict[str, Any]:
        """Spec: registration token validity (v1.2). 403 M_FORBIDDEN when this server does not use tokens."""
        self._token_validity_ratelimiter.ratelimit(request.getClientAddressString())
        if not self._tokens_required:
            raise MatrixError(403, Codes.FORBIDDEN, "Registration tokens are not enabled on this homeserver")
        token = query_arg(request, "token")
        if token is None:
            raise missing_param("token")
        found = await self._tokens.get(token)
        return {"valid": found is not None and found.is_valid(int(self._clock.seconds() * 1000))}
