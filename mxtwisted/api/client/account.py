"""Account management (Client-Server API, "Account registration and management" and
"Adding Account Administrative Contact Information").

- ``POST /account/password`` (UIA ``m.login.password``). The spec also allows
  it without an access token for a password reset proven by email; matrixhs
  sends no email, so an access token is required (``401 M_MISSING_TOKEN``).
  The new password is never stored in the UIA session: when the client sends
  it before the authentication is complete, only its bcrypt hash is kept in
  the session's server-side data (as Synapse does).
- ``POST /account/deactivate`` (UIA ``m.login.password``), same token rule.
- Third-party identifiers (3PIDs): matrixhs keeps none and validates none
  (``m.3pid_changes`` is ``false``). ``GET /account/3pid`` lists nothing;
  every endpoint that would start or complete a validation refuses with the
  error the spec lists for that endpoint; unbind/delete answer
  ``id_server_unbind_result: no-support`` (there is no association to remove
  and no identity server we know of).
"""

from __future__ import annotations

from typing import Any, Optional

from mxtwisted.api.client import CLIENT_PREFIXES
from mxtwisted.handlers.account import AccountHandler
from mxtwisted.handlers.auth import Authenticator
from mxtwisted.handlers.uia import PASSWORD, UIAResult, UserInteractiveAuth
from mxtwisted.http.errors import Codes, MatrixError
from mxtwisted.http.resource import parse_json_object
from mxtwisted.http.router import Router

#: UIA flows for changing the password and for deactivation.
ACCOUNT_FLOWS = [[PASSWORD]]

#: Where the hash of a ``new_password`` sent before UIA completed is kept in the UIA session.
_PASSWORD_HASH_KEY = "new_password_hash"

_MEDIA = ("email", "msisdn")


def _require_string(body: dict, name: str) -> str:
    value = body.get(name)
    if value is None:
        raise MatrixError(400, Codes.MISSING_PARAM, f"Missing parameter: {name}")
    if not isinstance(value, str):
        raise MatrixError(400, Codes.BAD_JSON, f"'{name}' must be a string")
    return value


def _optional_string(body: dict, name: str) -> Optional[str]:
    value = body.get(name)
    if value is not None and not isinstance(value, str):
        raise MatrixError(400, Codes.BAD_JSON, f"'{name}' must be a string")
    return value


def _optional_bool(body: dict, name: str, default: bool) -> bool:
    value = body.get(name, default)
    if not isinstance(value, bool):
        raise MatrixError(400, Codes.BAD_JSON, f"'{name}' must be a boolean")
    return value


class AccountResource:
    def __init__(self, auth: Authenticator, uia: UserInteractiveAuth, accounts: AccountHandler) -> None:
        self._auth = auth
        self._uia = uia
        self._accounts = accounts

    def register(self, router: Router) -> None:
        for prefix in CLIENT_PREFIXES:
            router.add("POST", f"{prefix}/account/password", self.change_password)
            router.add("POST", f"{prefix}/account/deactivate", self.deactivate)

    # -- POST /account/password ---------------------------------------------
    async def change_password(self, request: Any) -> dict[str, Any]:
        """Spec: ``POST /account/password``. ``logout_devices`` (default true) logs out every other device."""
        requester = await self._auth.get_requester(request)
        if not self._accounts.password_change_enabled:
            raise MatrixError(403, Codes.FORBIDDEN, "Password change is disabled on this server")
        body = parse_json_object(request)
        new_password = self._accounts.check_new_password(body.get("new_password"))
        _optional_bool(body, "logout_devices", True)
        uia_body = {k: v for k, v in body.items() if k != "new_password"}
        try:
            result = await self._uia.check(
                request, uia_body, ACCOUNT_FLOWS, "modify your account password", requester=requester
            )
        except MatrixError as e:
            session_id = e.extra.get("session") if e.status == 401 else None
            if new_password and isinstance(session_id, str):
                await self._remember_password_hash(session_id, new_password)
            raise
        password_hash = await self._new_password_hash(new_password, result)
        logout_devices = _optional_bool(result.clientdict, "logout_devices", True)
        await self._accounts.change_password(requester, password_hash, logout_devices)
        await self._uia.store.delete_session(result.session_id)
        return {}

    async def _remember_password_hash(self, session_id: str, new_password: str) -> None:
        session = await self._uia.store.get_session(session_id)
        if session is None or session.serverdict.get(_PASSWORD_HASH_KEY):
            return
        password_hash = await self._accounts.hash_password(new_password)
        await self._uia.store.set_server_value(session_id, _PASSWORD_HASH_KEY, password_hash)

    async def _new_password_hash(self, new_password: Optional[str], result: UIAResult) -> str:
        if new_password:
            return await self._accounts.hash_password(new_password)
        remembered = result.serverdict.get(_PASSWORD_HASH_KEY)
        if isinstance(remembered, str) and remembered:
            return remembered
        raise MatrixError(400, Codes.MISSING_PARAM, "Missing parameter: new_password")

    # -- POST /account/deactivate ---------------------------------------------
    async def deactivate(self, request: Any) -> dict[str, Any]:
        """Spec: ``POST /account/deactivate``. ``erase`` also deletes the profile and account data."""
        requester = await self._auth.get_requester(request)
        body = parse_json_object(request)
        _optional_bool(body, "erase", False)
        _optional_string(body, "id_server")
        result = await self._uia.check(request, body, ACCOUNT_FLOWS, "deactivate your account", requester=requester)
        erase = _optional_bool(result.clientdict, "erase", False)
        unbind_result = await self._accounts.deactivate(requester.user_id, erase)
        await self._uia.store.delete_session(result.session_id)
        return {"id_server_unbind_result": unbind_result}


class ThreepidResource:
    """Third-party identifiers: none are kept, none can be added (``m.3pid_changes`` is false)."""

    def __init__(self, auth: Authenticator) -> None:
        self._auth = auth

    def register(self, router: Router) -> None:
        for prefix in CLIENT_PREFIXES:
            router.add("GET", f"{prefix}/account/3pid", self.get_threepids)
            router.add("POST", f"{prefix}/account/3pid", self.post_threepid)
            router.add("POST", f"{prefix}/account/3pid/add", self.add_threepid)
            router.add("POST", f"{prefix}/account/3pid/bind", self.bind_threepid)
            router.add("POST", f"{prefix}/account/3pid/delete", self.delete_threepid)
            router.add("POST", f"{prefix}/account/3pid/unbind", self.unbind_threepid)
            router.add("POST", f"{prefix}/account/3pid/email/requestToken", self.account_request_token)
            router.add("POST", f"{prefix}/account/3pid/msisdn/requestToken", self.account_request_token)
            router.add("POST", f"{prefix}/account/password/email/requestToken", self.password_request_token)
            router.add("POST", f"{prefix}/account/password/msisdn/requestToken", self.password_request_token)
            router.add("POST", f"{prefix}/register/email/requestToken", self.register_request_token)
            router.add("POST", f"{prefix}/register/msisdn/requestToken", self.register_request_token)

    async def get_threepids(self, request: Any) -> dict[str, Any]:
        """Spec: ``GET /account/3pid``."""
        await self._auth.get_requester(request)
        return {"threepids": []}

    async def post_threepid(self, request: Any) -> dict[str, Any]:
        """Spec: ``POST /account/3pid`` (deprecated): the credentials cannot be verified (403 M_THREEPID_AUTH_FAILED)."""
        await self._auth.get_requester(request)
        body = parse_json_object(request)
        creds = body.get("three_pid_creds", body.get("threePidCreds"))
        if creds is None:
            raise MatrixError(400, Codes.MISSING_PARAM, "Missing parameter: three_pid_creds")
        if not isinstance(creds, dict):
            raise MatrixError(400, Codes.BAD_JSON, "'three_pid_creds' must be an object")
        raise MatrixError(403, Codes.THREEPID_AUTH_FAILED, "This server does not validate third-party identifiers")

    async def add_threepid(self, request: Any) -> dict[str, Any]:
        """Spec: ``POST /account/3pid/add``: no validation session can exist here (403 M_THREEPID_AUTH_FAILED)."""
        await self._auth.get_requester(request)
        body = parse_json_object(request)
        _require_string(body, "client_secret")
        _require_string(body, "sid")
        raise MatrixError(
            403, Codes.THREEPID_AUTH_FAILED, "No validated third-party identifier session: this server validates none"
        )

    async def bind_threepid(self, request: Any) -> dict[str, Any]:
        """Spec: ``POST /account/3pid/bind``: matrixhs talks to no identity server (400 M_SERVER_NOT_TRUSTED)."""
        await self._auth.get_requester(request)
        body = parse_json_object(request)
        for name in ("client_secret", "id_server", "id_access_token", "sid"):
            _require_string(body, name)
        raise MatrixError(400, Codes.SERVER_NOT_TRUSTED, "This server does not use identity servers")

    async def _unbind_body(self, request: Any) -> None:
        await self._auth.get_requester(request)
        body = parse_json_object(request)
        medium = _require_string(body, "medium")
        if medium not in _MEDIA:
            raise MatrixError(400, Codes.INVALID_PARAM, "'medium' must be 'email' or 'msisdn'")
        _require_string(body, "address")
        _optional_string(body, "id_server")

    async def delete_threepid(self, request: Any) -> dict[str, Any]:
        """Spec: ``POST /account/3pid/delete``: nothing is associated, so nothing to remove or unbind."""
        await self._unbind_body(request)
        return {"id_server_unbind_result": "no-support"}

    async def unbind_threepid(self, request: Any) -> dict[str, Any]:
        """Spec: ``POST /account/3pid/unbind``: no identity server is known for any identifier (``no-support``)."""
        await self._unbind_body(request)
        return {"id_server_unbind_result": "no-support"}

    async def account_request_token(self, request: Any) -> dict[str, Any]:
        """Spec: ``POST /account/3pid/{email,msisdn}/requestToken``: 400 M_THREEPID_MEDIUM_NOT_SUPPORTED."""
        parse_json_object(request)
        raise MatrixError(
            400,
            Codes.THREEPID_MEDIUM_NOT_SUPPORTED,
            "This server does not support adding email addresses or phone numbers to accounts",
        )

    async def password_request_token(self, request: Any) -> dict[str, Any]:
        """Spec: ``POST /account/password/{email,msisdn}/requestToken``: no account has a 3PID (400 M_THREEPID_NOT_FOUND)."""
        parse_json_object(request)
        raise MatrixError(
            400,
            Codes.THREEPID_NOT_FOUND,
            "No account has this third-party identifier: this server does not reset passwords by email or phone",
        )

    async def register_request_token(self, request: Any) -> dict[str, Any]:
        """Spec: ``POST /register/{email,msisdn}/requestToken``: the address may not be bound (403 M_THREEPID_DENIED)."""
        parse_json_object(request)
        raise MatrixError(
            403,
            Codes.THREEPID_DENIED,
            "This server does not support registering with an email address or phone number",
        )
