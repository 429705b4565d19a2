"""The registration tokens admin API, compatible with Synapse's (``/_synapse/admin/v1/registration_tokens``).

Not part of the Matrix spec: the spec defines how clients *use* registration
tokens ("Token-authenticated registration"); creating them is left to the
server. matrixhs serves Synapse's admin API for it, for server admins only
(``users.admin``):

* ``GET /registration_tokens[?valid=true|false]`` → ``{"registration_tokens": [token, ...]}``
* ``POST /registration_tokens/new`` with optional ``token`` (1-64 characters of ``[A-Za-z0-9._~-]``) or ``length``
  (1-64, default 16) for a random one, ``uses_allowed`` (a non-negative integer or null: unlimited) and
  ``expiry_time`` (milliseconds since the epoch, not in the past, or null: never)
* ``GET``/``PUT``/``DELETE /registration_tokens/{token}``; ``PUT`` changes ``uses_allowed`` and/or ``expiry_time``.

A token is ``{"token", "uses_allowed", "pending", "completed", "expiry_time"}``; ``pending`` counts registrations
that passed the token stage but have not finished yet.
"""

from __future__ import annotations

import secrets
import string
from typing import Any, Optional

from twisted.internet.interfaces import IReactorTime

from mxtwisted.handlers.auth import Authenticator
from mxtwisted.http.errors import Codes, MatrixError, invalid_param, not_found
from mxtwisted.http.resource import parse_json_object, query_arg
from mxtwisted.http.router import Router
from mxtwisted.storage.accounts import UserStore
from mxtwisted.storage.uia import RegistrationTokenExists, RegistrationTokenStore

TOKENS_PATH = "/_synapse/admin/v1/registration_tokens"

#: Characters of a registration token (the spec's opaque identifier grammar).
TOKEN_CHARACTERS = string.ascii_letters + string.digits + "._~-"
_TOKEN_CHARACTER_SET = frozenset(TOKEN_CHARACTERS)
MAX_TOKEN_LENGTH = 64
DEFAULT_TOKEN_LENGTH = 16


async def require_admin(auth: Authenticator, users: UserStore, request: Any) -> str:
    """The requesting user's ID if they are a server admin; 401 without a valid token, else 403 M_FORBIDDEN."""
    requester = await auth.get_requester(request)
    user = await users.get_user(requester.user_id)
    if user is None or not user.admin:
        raise MatrixError(403, Codes.FORBIDDEN, "You are not a server admin")
    return requester.user_id


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


class RegistrationTokensAdminResource:
    """List, create, read, update and delete registration tokens."""

    def __init__(self, auth: Authenticator, users: UserStore, tokens: RegistrationTokenStore, clock: IReactorTime) -> None:
        self._auth = auth
        self._users = users
        self._tokens = tokens
        self._clock = clock

    def register(self, router: Router) -> None:
        router.add("GET", TOKENS_PATH, self.list_tokens)
        router.add("POST", TOKENS_PATH + "/new", self.new_token)
        router.add("GET", TOKENS_PATH + "/{token}", self.get_token)
        router.add("PUT", TOKENS_PATH + "/{token}", self.update_token)
        router.add("DELETE", TOKENS_PATH + "/{token}", self.delete_token)
        # "new" is also a valid token name: the literal route would otherwise hide it from these methods.
        router.add("GET", TOKENS_PATH + "/new", lambda request: self.get_token(request, "new"))
        router.add("PUT", TOKENS_PATH + "/new", lambda request: self.update_token(request, "new"))
        router.add("DELETE", TOKENS_PATH + "/new", lambda request: self.delete_token(request, "new"))

    def _now(self) -> int:
        return int(self._clock.seconds() * 1000)

    async def list_tokens(self, request: Any) -> dict[str, Any]:
        await require_admin(self._auth, self._users, request)
        valid = query_arg(request, "valid")
        if valid not in (None, "true", "false"):
            raise invalid_param("'valid' must be 'true' or 'false'")
        tokens = await self._tokens.list()
        if valid is not None:
            now = self._now()
            tokens = [t for t in tokens if t.is_valid(now) == (valid == "true")]
        return {"registration_tokens": [t.to_json() for t in tokens]}

    def _check_uses_allowed(self, value: Any) -> Optional[int]:
        if value is not None and not (_is_int(value) and value >= 0):
            raise invalid_param("uses_allowed must be a non-negative integer or null")
        return value

    def _check_expiry_time(self, value: Any) -> Optional[int]:
        if value is not None and not _is_int(value):
            raise invalid_param("expiry_time must be an integer or null")
        if value is not None and value < self._now():
            raise invalid_param("expiry_time must not be in the past")
        return value

    async def new_token(self, request: Any) -> dict[str, Any]:
        await require_admin(self._auth, self._users, request)
        body = parse_json_object(request, allow_empty=True)
        uses_allowed = self._check_uses_allowed(body.get("uses_allowed"))
        expiry_time = self._check_expiry_time(body.get("expiry_time"))
        if "token" in body:
            token = body["token"]
            if not isinstance(token, str):
                raise invalid_param("token must be a string")
            if not 0 < len(token) <= MAX_TOKEN_LENGTH:
                raise invalid_param(f"token must not be empty and must not be longer than {MAX_TOKEN_LENGTH} characters")
            if not set(token) <= _TOKEN_CHARACTER_SET:
                raise invalid_param("token must consist only of the characters A-Z, a-z, 0-9, '.', '_', '~' and '-'")
            try:
                created = await self._tokens.create(token, uses_allowed, expiry_time)
            except RegistrationTokenExists:
                raise invalid_param(f"Token already exists: {token}") from None
            return created.to_json()
        length = body.get("length", DEFAULT_TOKEN_LENGTH)
        if not _is_int(length) or not 0 < length <= MAX_TOKEN_LENGTH:
            raise invalid_param(f"length must be an integer greater than zero and not greater than {MAX_TOKEN_LENGTH}")
        for _ in range(20):
            token = "".join(secrets.choice(TOKEN_CHARACTERS) for _ in range(length))
            try:
                return (await self._tokens.create(token, uses_allowed, expiry_time)).to_json()
            except RegistrationTokenExists:
                continue  # a short length may run out of fresh tokens; try another
        raise invalid_param("Could not generate an unused token of that length; choose a longer one")

    async def get_token(self, request: Any, token: str) -> dict[str, Any]:
        await require_admin(self._auth, self._users, request)
        found = await self._tokens.get(token)
        if found is None:
            raise not_found(f"No such registration token: {token}")
        return found.to_json()

    async def update_token(self, request: Any, token: str) -> dict[str, Any]:
        await require_admin(self._auth, self._users, request)
        body = parse_json_object(request, allow_empty=True)
        changes: dict[str, Optional[int]] = {}
        if "uses_allowed" in body:
            changes["uses_allowed"] = self._check_uses_allowed(body["uses_allowed"])
        if "expiry_time" in body:
            changes["expiry_time"] = self._check_expiry_time(body["expiry_time"])
        updated = await self._tokens.update(token, changes)
        if updated is None:
            raise not_found(f"No such registration token: {token}")
        return updated.to_json()

    async def delete_token(self, request: Any, token: str) -> dict[str, Any]:
        await require_admin(self._auth, self._users, request)
        if not await self._tokens.delete(token):
            raise not_found(f"No such registration token: {token}")
        return {}
