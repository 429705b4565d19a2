"""Shared-secret registration: ``GET``/``POST /_synapse/admin/v1/register``, compatible with Synapse's.

Not part of the Matrix spec: this is Synapse's admin API, implemented with the
same request and MAC format so that Synapse's ``register_new_matrix_user``
script, and matrixhs's own ``python -m mxtwisted register-user``, create
accounts on a server whose public registration is closed.

1. ``GET`` returns ``{"nonce": ...}``: a random, single-use nonce valid for 60
   seconds, kept in memory (a restart forgets outstanding nonces).
2. ``POST`` sends ``nonce``, ``username``, ``password``, ``admin``,
   ``user_type`` (optional), ``displayname`` (optional) and ``mac``: the hex
   HMAC-SHA1, keyed with ``registration_shared_secret``, of
   ``nonce NUL username NUL password NUL ("admin" | "notadmin")``, followed by
   ``NUL user_type`` when a user type is given. The nonce is used up by the
   attempt, whether the MAC is right or not.

The answer is the ``/register`` response: ``user_id``, ``home_server``,
``access_token`` and ``device_id`` (only ``user_id`` and ``home_server`` with
``inhibit_login``).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from collections import OrderedDict
from typing import Any, Optional

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from mxtwisted.config.schema import ConfigError
from mxtwisted.handlers.registration import RegistrationHandler
from mxtwisted.handlers.sessions import SessionIssuer
from mxtwisted.http.errors import Codes, MatrixError
from mxtwisted.http.resource import parse_json_object
from mxtwisted.http.router import Router

log = Logger()

REGISTER_PATH = "/_synapse/admin/v1/register"

#: Seconds a nonce stays usable (as Synapse).
NONCE_TIMEOUT = 60

#: Outstanding nonces kept at most; the oldest are forgotten first (bounds memory under a flood of GETs).
MAX_NONCES = 10_000

#: The user types Synapse knows (``synapse.api.constants.UserTypes``).
USER_TYPES = frozenset({"support", "bot"})

#: As Synapse: longer usernames and passwords are refused before anything is hashed.
MAX_FIELD_LENGTH = 512


def shared_secret_from_config(config: Any) -> Optional[str]:
    """``registration_shared_secret``, or the stripped content of ``registration_shared_secret_path``.

    Raises :class:`ConfigError` if both are set, or if the file cannot be read or is empty.
    """
    secret = config["registration_shared_secret"]
    path = config["registration_shared_secret_path"]
    if path is None:
        return secret or None
    if secret:
        raise ConfigError(
            "registration_shared_secret_path", "registration_shared_secret and registration_shared_secret_path are both set"
        )
    if not os.path.isabs(path) and config.config_path:
        path = os.path.join(os.path.dirname(config.config_path), path)
    try:
        with open(path, encoding="utf-8") as f:
            secret = f.read().strip()
    except OSError as e:
        raise ConfigError("registration_shared_secret_path", f"cannot read {path!r}: {e.strerror}") from None
    if not secret:
        raise ConfigError("registration_shared_secret_path", f"{path!r} is empty")
    return secret


def registration_mac(
    shared_secret: str, nonce: str, username: str, password: str, admin: bool, user_type: Optional[str] = None
) -> str:
    """The hex HMAC-SHA1 a shared-secret registration request carries (Synapse's format)."""
    mac = hmac.new(shared_secret.encode("utf-8"), digestmod=hashlib.sha1)
    mac.update(nonce.encode("utf-8"))
    mac.update(b"\x00")
    mac.update(username.encode("utf-8"))
    mac.update(b"\x00")
    mac.update(password.encode("utf-8"))
    mac.update(b"\x00")
    mac.update(b"admin" if admin else b"notadmin")
    if user_type:
        mac.update(b"\x00")
        mac.update(user_type.encode("utf-8"))
    return mac.hexdigest()


def _bad(message: str, errcode: str = Codes.INVALID_PARAM) -> MatrixError:
    return MatrixError(400, errcode, message)


class SharedSecretRegistrationResource:
    """``/_synapse/admin/v1/register``: nonces, then accounts created by whoever knows the shared secret."""

    def __init__(
        self,
        shared_secret: Optional[str],
        clock: IReactorTime,
        registration: RegistrationHandler,
        sessions: SessionIssuer,
        server_name: str,
    ) -> None:
        self._secret = shared_secret
        self._clock = clock
        self._registration = registration
        self._sessions = sessions
        self._server_name = server_name
        # nonce -> time it was issued (seconds), oldest first.
        self._nonces: OrderedDict[str, float] = OrderedDict()

    def register(self, router: Router) -> None:
        router.add("GET", REGISTER_PATH, self.get_nonce)
        router.add("POST", REGISTER_PATH, self.post_register)

    def _require_secret(self) -> str:
        if not self._secret:
            raise _bad("Shared secret registration is not enabled", Codes.UNKNOWN)
        return self._secret

    def _expire_nonces(self) -> None:
        cutoff = self._clock.seconds() - NONCE_TIMEOUT
        while self._nonces:
            nonce, issued = next(iter(self._nonces.items()))
            if issued >= cutoff:
                break
            del self._nonces[nonce]

    async def get_nonce(self, request: Any) -> dict[str, Any]:
        self._require_secret()
        self._expire_nonces()
        nonce = secrets.token_hex(64)
        self._nonces[nonce] = self._clock.seconds()
        while len(self._nonces) > MAX_NONCES:
            self._nonces.popitem(last=False)
        return {"nonce": nonce}

    async def post_register(self, request: Any) -> dict[str, Any]:
        secret = self._require_secret()
        self._expire_nonces()
        body = parse_json_object(request)

        nonce = body.get("nonce")
        if nonce is None:
            raise _bad("nonce must be specified", Codes.BAD_JSON)
        if not isinstance(nonce, str) or self._nonces.pop(nonce, None) is None:
            raise _bad("unrecognised nonce", Codes.UNKNOWN)
        # From here on the nonce is spent, whatever happens.

        username = body.get("username")
        if username is None:
            raise _bad("username must be specified", Codes.BAD_JSON)
        if not isinstance(username, str) or len(username) > MAX_FIELD_LENGTH or "\x00" in username:
            raise _bad("Invalid username", Codes.INVALID_USERNAME)
        password = body.get("password")
        if password is None:
            raise _bad("password must be specified", Codes.BAD_JSON)
        if not isinstance(password, str) or not password or len(password) > MAX_FIELD_LENGTH or "\x00" in password:
            raise _bad("Invalid password")
        admin = body.get("admin", False)
        user_type = body.get("user_type")
        if user_type is not None and (not isinstance(user_type, str) or user_type not in USER_TYPES):
            raise _bad("Invalid user type")
        displayname = body.get("displayname")
        if displayname is not None and not isinstance(displayname, str):
            raise _bad("displayname must be a string")
        refresh = body.get("refresh_token", False)
        if not isinstance(refresh, bool):
            raise _bad("refresh_token must be true or false")
        got_mac = body.get("mac")
        if got_mac is None:
            raise _bad("mac must be specified", Codes.BAD_JSON)
        if not isinstance(got_mac, str):
            raise _bad("mac must be a string")

        want_mac = registration_mac(secret, nonce, username, password, bool(admin), user_type)
        if not hmac.compare_digest(want_mac.encode("ascii"), got_mac.encode("utf-8")):
            log.warn("Shared-secret registration of {username!r} refused: wrong MAC", username=username)
            raise MatrixError(403, Codes.FORBIDDEN, "HMAC incorrect")

        user_id = await self._registration.register(
            username.lower(), password, admin=bool(admin), display_name=displayname, user_type=user_type
        )
        log.info("Registered {user_id} with the shared secret (admin: {admin})", user_id=user_id, admin=bool(admin))
        response: dict[str, Any] = {"user_id": user_id, "home_server": self._server_name}
        if body.get("inhibit_login") is True:
            return response
        device_id = body.get("device_id")
        display_name = body.get("initial_device_display_name")
        login = await self._sessions.create_session(
            user_id,
            device_id if isinstance(device_id, str) else None,
            display_name if isinstance(display_name, str) else None,
            refreshable=refresh,
        )
        response.update(login)
        return response
