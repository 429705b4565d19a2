"""Creating accounts: username rules, the user row, the default profile.

Spec: Client-Server API, "Account registration and management" and appendix
"User Identifiers". New localparts must use the lower-case grammar
``[a-z0-9._=\\-/+]``; all-numeric localparts are reserved for guests (as in
Synapse), and names starting with ``_`` for application services and the
server itself.
"""

from __future__ import annotations

import re
from typing import Any, Optional

from twisted.internet.interfaces import IReactorTime

from mxtwisted.handlers.passwords import PasswordHasher
from mxtwisted.http.errors import Codes, MatrixError
from mxtwisted.storage.accounts import UserExistsError, UserStore
from mxtwisted.storage.profiles import ProfileStore

_LOCALPART = re.compile(r"^[a-z0-9._=\-/+]+$")

#: The spec's limit on a whole user ID, in bytes.
MAX_USER_ID_LENGTH = 255


class RegistrationHandler:
    def __init__(
        self,
        server_name: str,
        clock: IReactorTime,
        users: UserStore,
        profiles: ProfileStore,
        hasher: PasswordHasher,
    ) -> None:
        self.server_name = server_name
        self._clock = clock
        self.users = users
        self.profiles = profiles
        self.hasher = hasher

    def user_id(self, localpart: str) -> str:
        return f"@{localpart}:{self.server_name}"

    def check_localpart(self, localpart: Any, allow_numeric: bool = False) -> str:
        """Validate a requested localpart, raising 400 M_INVALID_USERNAME with the reason."""
        if not isinstance(localpart, str) or not localpart:
            raise MatrixError(400, Codes.INVALID_USERNAME, "User ID cannot be empty")
        if not _LOCALPART.match(localpart):
            raise MatrixError(
                400, Codes.INVALID_USERNAME, "User ID can only contain characters a-z, 0-9, or '=_-./+'"
            )
        if localpart.startswith("_"):
            raise MatrixError(400, Codes.INVALID_USERNAME, "User ID may not begin with '_'")
        if not allow_numeric and localpart.isdigit():
            raise MatrixError(400, Codes.INVALID_USERNAME, "Numeric user IDs are reserved for guest users.")
        if len(self.user_id(localpart).encode("utf-8")) > MAX_USER_ID_LENGTH:
            raise MatrixError(400, Codes.INVALID_USERNAME, f"User ID may not be longer than {MAX_USER_ID_LENGTH} characters")
        return localpart

    async def check_available(self, localpart: str) -> str:
        """The user ID for ``localpart`` if it is valid and free, else 400 M_INVALID_USERNAME / M_USER_IN_USE."""
        self.check_localpart(localpart)
        user_id = self.user_id(localpart)
        if await self.users.find_user_case_insensitive(user_id):
            raise MatrixError(400, Codes.USER_IN_USE, "User ID already taken.")
        return user_id

    async def register(
        self,
        localpart: str,
        password: Optional[str],
        is_guest: bool = False,
        admin: bool = False,
        display_name: Optional[str] = None,
        user_type: Optional[str] = None,
        password_hash: Optional[str] = None,
    ) -> str:
        """Create the account (password hashed with bcrypt); returns the user ID.

        ``password_hash`` is an already-hashed password (registration keeps it in the UIA session instead of the
        plaintext); it is used when ``password`` is None.
        """
        self.check_localpart(localpart, allow_numeric=is_guest)
        user_id = self.user_id(localpart)
        if password is not None:
            password_hash = await self.hasher.hash(password)
        now = int(self._clock.seconds() * 1000)
        try:
            await self.users.create_user(user_id, password_hash, now, is_guest=is_guest, admin=admin, user_type=user_type)
        except UserExistsError:
            raise MatrixError(400, Codes.USER_IN_USE, "User ID already taken.") from None
        if not is_guest:
            await self.profiles.set_field(user_id, "displayname", display_name or localpart)
        return user_id

    async def register_guest(self) -> str:
        """A guest account with the next free numeric localpart."""
        count = await self.users.count_users()
        for attempt in range(count + 1, count + 1000):
            try:
                return await self.register(str(attempt), None, is_guest=True)
            except MatrixError as e:
                if e.errcode != Codes.USER_IN_USE:
                    raise
        raise MatrixError(500, Codes.UNKNOWN, "Could not allocate a guest user ID")
