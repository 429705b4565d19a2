"""The chain of :class:`~mxtwisted.interfaces.IAuthProvider`: module providers, then the local database.

The first provider with an answer decides a login; one that fails with an
exception refuses that login (logged), it never crashes the request.
"""

from __future__ import annotations

from typing import Any, Mapping, Optional, Sequence

from twisted.internet import defer
from twisted.logger import Logger
from zope.interface import implementer

from mxtwisted.handlers.passwords import PasswordHasher
from mxtwisted.interfaces import AuthResult, IAuthProvider
from mxtwisted.storage.accounts import UserStore

log = Logger()


@implementer(IAuthProvider)
class LocalPasswordProvider:
    """Passwords checked against the bcrypt hashes in our own database."""

    def __init__(self, users: UserStore, hasher: PasswordHasher) -> None:
        self._users = users
        self._hasher = hasher

    def login_types(self) -> Mapping[str, Sequence[str]]:
        return {"m.login.password": ("password",)}

    async def check_login(self, user_id: Optional[str], login_type: str, login_dict: dict) -> Any:
        if login_type != "m.login.password" or user_id is None:
            return None
        password = login_dict.get("password")
        if not isinstance(password, str):
            return False
        user = await self._users.get_user(user_id)
        if user is None or user.password_hash is None:
            return None
        if await self._hasher.check(password, user.password_hash):
            return AuthResult(user_id)
        return False

    def on_logged_out(self, user_id: str, device_id: Optional[str]) -> None:
        return None


PASSWORD_LOGIN = "m.login.password"


class AuthProviderChain:
    """``password_enabled=False`` (``password_config.enabled: false``) turns password logins off for every
    provider, modules included, as in Synapse; other login types stay available."""

    def __init__(self, providers: Sequence[Any], password_enabled: bool = True) -> None:
        self.providers = list(providers)
        self.password_enabled = password_enabled

    def login_types(self) -> dict[str, tuple[str, ...]]:
        """Every login type some provider supports, with its required fields."""
        types: dict[str, tuple[str, ...]] = {}
        for provider in self.providers:
            for login_type, fields in provider.login_types().items():
                if login_type == PASSWORD_LOGIN and not self.password_enabled:
                    continue
                types.setdefault(login_type, tuple(fields))
        return types

    async def check_login(self, user_id: Optional[str], login_type: str, login_dict: dict) -> Optional[AuthResult]:
        """The authenticated user, or None if no provider accepted the login."""
        if login_type == PASSWORD_LOGIN and not self.password_enabled:
            return None
        for provider in self.providers:
            if login_type not in provider.login_types():
                continue
            try:
                result = await defer.maybeDeferred(provider.check_login, user_id, login_type, login_dict)
            except Exception:
                log.failure("Auth provider {provider!r} failed; refusing the login", provider=provider)
                return None
            if result is None:
                continue
            if result is False or not isinstance(result, AuthResult):
                return None
            return result
        return None

    async def on_logged_out(self, user_id: str, device_id: Optional[str]) -> None:
        for provider in self.providers:
            try:
                await defer.maybeDeferred(provider.on_logged_out, user_id, device_id)
            except Exception:
                log.failure("Auth provider {provider!r} failed in on_logged_out", provider=provider)
