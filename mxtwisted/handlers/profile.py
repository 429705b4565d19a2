"""User profiles: ``displayname``, ``avatar_url``, ``m.tz`` and custom fields.

Spec: Client-Server API, "Profiles" (``GET /profile/{userId}``,
``GET``/``PUT``/``DELETE /profile/{userId}/{keyName}``, custom fields since
v1.16) and its "Events on Change of Profile Information"; appendix "Common
Namespaced Identifier Grammar" for field names.

What is checked, and how it is refused:

* field names: at most 255 bytes (``400 M_KEY_TOO_LARGE``) and the Common
  Namespaced Identifier Grammar (``400 M_INVALID_PARAM``);
* ``displayname`` a string of at most 256 characters, ``avatar_url`` an MXC URI
  string, ``m.tz`` a string (``400 M_INVALID_PARAM``); an empty string clears
  ``displayname`` or ``avatar_url``, as Synapse does; ``null`` is refused for
  every field (the spec lets servers refuse it; ``DELETE`` removes a field);
* the whole profile, as canonical JSON, at most 64 KiB (``400 M_PROFILE_TOO_LARGE``);
* only the user may change their own profile (``403 M_FORBIDDEN``).

Changes of ``displayname`` and ``avatar_url`` are announced to the
*profile change listeners* (:meth:`ProfileHandler.add_profile_change_listener`):
the room engine hooks one to send the new ``m.room.member`` events into every
room the user is joined to, and presence one for the ``m.presence`` update.
Remote profiles are fetched over federation through the hook
:meth:`ProfileHandler.set_remote_profile_query` (the service sets it to
:meth:`mxtwisted.federation.queries.FederationQueries.profile`); without one
they are ``404 M_NOT_FOUND``.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager
from typing import Any, Callable, Optional, Union

from twisted.internet import defer
from twisted.logger import Logger

from mxtwisted.events.canonical_json import CanonicalJsonError, encode_canonical_json
from mxtwisted.events.validation import is_valid_server_name, is_valid_user_id
from mxtwisted.handlers.auth import Requester
from mxtwisted.http.errors import Codes, MatrixError
from mxtwisted.storage.accounts import UserStore
from mxtwisted.storage.profiles import ProfileStore

log = Logger()

DISPLAYNAME = "displayname"
AVATAR_URL = "avatar_url"
TIME_ZONE = "m.tz"

#: Fields whose change is propagated into rooms (spec: "Events on Change of Profile Information").
PROPAGATED_FIELDS = frozenset({DISPLAYNAME, AVATAR_URL})

#: Spec: "the total profile MUST be under 64 KiB" (measured as canonical JSON).
MAX_PROFILE_SIZE = 64 * 1024
#: Spec: M_KEY_TOO_LARGE, "maximum allowed key length of 255 bytes".
MAX_KEY_LENGTH = 255
#: Synapse's limit on display names, in characters.
MAX_DISPLAYNAME_LENGTH = 256

#: Appendix "Common Namespaced Identifier Grammar": starts with [a-z], then [a-z0-9._-].
_NAMESPACED_GRAMMAR = re.compile(r"[a-z][a-z0-9._\-]*")
#: Appendix "Matrix Content (MXC) URIs": mxc://<server-name>/<media-id>, media-id of [A-Za-z0-9_-].
_MXC_URI = re.compile(r"mxc://([^/]+)/([A-Za-z0-9_\-]+)")

#: ``listener(user_id, new_profile)``; may return an awaitable.
ProfileChangeListener = Callable[[str, dict[str, Any]], Union[None, Awaitable[None]]]
#: ``query(user_id, field_or_None)`` → the remote server's answer (a dict), raising MatrixError on refusal.
RemoteProfileQuery = Callable[[str, Optional[str]], Awaitable[dict[str, Any]]]


def check_profile_key(key_name: str) -> None:
    """Refuse a field name the spec does not allow (``PUT``/``GET``/``DELETE /profile/{userId}/{keyName}``).

    ``400 M_KEY_TOO_LARGE`` over 255 bytes, ``400 M_INVALID_PARAM`` outside the
    Common Namespaced Identifier Grammar (``displayname``, ``avatar_url`` and
    ``m.tz`` are in it).
    """
    if len(key_name.encode("utf-8", "surrogatepass")) > MAX_KEY_LENGTH:
        raise MatrixError(400, Codes.KEY_TOO_LARGE, f"Profile field names are limited to {MAX_KEY_LENGTH} bytes")
    if not _NAMESPACED_GRAMMAR.fullmatch(key_name):
        raise MatrixError(
            400, Codes.INVALID_PARAM, "Invalid profile key: it must follow the Common Namespaced Identifier Grammar"
        )


def is_valid_mxc_uri(value: Any) -> bool:
    """Whether ``value`` is ``mxc://<server-name>/<media-id>`` (appendix "Matrix Content (MXC) URIs")."""
    if not isinstance(value, str):
        return False
    m = _MXC_URI.fullmatch(value)
    return m is not None and is_valid_server_name(m.group(1))


def check_profile_value(key_name: str, value: Any) -> Any:
    """The value to store for ``key_name`` (``None``: clear the field), or ``400 M_INVALID_PARAM``."""
    if value is None:
        raise MatrixError(400, Codes.INVALID_PARAM, f"'{key_name}' may not be null; DELETE the field to remove it")
    if key_name == DISPLAYNAME:
        if not isinstance(value, str):
            raise MatrixError(400, Codes.INVALID_PARAM, "'displayname' must be a string")
        if len(value) > MAX_DISPLAYNAME_LENGTH:
            raise MatrixError(
                400, Codes.INVALID_PARAM, f"'displayname' is too long (at most {MAX_DISPLAYNAME_LENGTH} characters)"
            )
        value = value.strip()
        return value or None
    if key_name == AVATAR_URL:
        if not isinstance(value, str):
            raise MatrixError(400, Codes.INVALID_PARAM, "'avatar_url' must be a string")
        if value == "":
            return None
        if not is_valid_mxc_uri(value):
            raise MatrixError(400, Codes.INVALID_PARAM, "'avatar_url' must be an MXC URI (mxc://server/media_id)")
        return value
    if key_name == TIME_ZONE and not isinstance(value, str):
        raise MatrixError(400, Codes.INVALID_PARAM, "'m.tz' must be a string")
    return value


class ProfileHandler:
    """Reading and changing profiles, and telling listeners about changes."""

    def __init__(
        self,
        server_name: str,
        users: UserStore,
        profiles: ProfileStore,
        remote_profile_query: Optional[RemoteProfileQuery] = None,
    ) -> None:
        self.server_name = server_name
        self._users = users
        self._profiles = profiles
        self._remote_profile_query = remote_profile_query
        self._listeners: list[ProfileChangeListener] = []
        # Per-user write locks: the size check and the write must not interleave.
        self._locks: dict[str, defer.DeferredLock] = {}

    # -- hooks ------------------------------------------------------------------
    def add_profile_change_listener(self, listener: ProfileChangeListener) -> None:
        """Call ``listener(user_id, new_profile)`` after every change of ``displayname`` or ``avatar_url``.

        Spec: "Events on Change of Profile Information": the room engine sends a
        new ``m.room.member`` join event into each of the user's rooms, presence
        an ``m.presence`` update. ``new_profile`` is the whole profile after the
        change. Listeners run in the order they were added and are awaited
        before the next change of the same user's profile (so they see changes
        in order) and before the response; a failing listener is logged and
        does not undo the change or stop the others.
        """
        self._listeners.append(listener)

    def set_remote_profile_query(self, query: Optional[RemoteProfileQuery]) -> None:
        """Where remote profiles come from: the federation profile query
        (``GET /_matrix/federation/v1/query/profile``)."""
        self._remote_profile_query = query

    def is_mine(self, user_id: str) -> bool:
        """Whether ``user_id`` is on this server (the server name follows the first ``:``)."""
        return user_id.partition(":")[2] == self.server_name

    # -- reading ------------------------------------------------------------------
    async def get_profile(self, user_id: str) -> dict[str, Any]:
        """The whole profile (``GET /profile/{userId}``); ``404 M_NOT_FOUND`` for unknown users or an empty profile."""
        self._check_user_id(user_id)
        if not self.is_mine(user_id):
            return await self._query_remote(user_id, None)
        await self._check_local_user_exists(user_id)
        profile = await self._profiles.get_profile(user_id)
        if not profile:
            raise MatrixError(404, Codes.NOT_FOUND, "Profile not found")
        return profile

    async def get_profile_field(self, user_id: str, key_name: str) -> Any:
        """One field (``GET /profile/{userId}/{keyName}``); ``404 M_NOT_FOUND`` if unset or the user is unknown."""
        self._check_user_id(user_id)
        check_profile_key(key_name)
        if not self.is_mine(user_id):
            answer = await self._query_remote(user_id, key_name)
            if key_name not in answer:
                raise MatrixError(404, Codes.NOT_FOUND, "Profile field not found")
            return answer[key_name]
        await self._check_local_user_exists(user_id)
        profile = await self._profiles.get_profile(user_id)
        if key_name not in profile:
            raise MatrixError(404, Codes.NOT_FOUND, "Profile field not found")
        return profile[key_name]

    # -- changing -------------------------------------------------------------------
    async def set_profile_field(self, requester: Requester, user_id: str, key_name: str, value: Any) -> None:
        """``PUT /profile/{userId}/{keyName}``: validate and store ``value``.

        An empty ``displayname`` or ``avatar_url`` clears the field.
        """
        self.check_can_change(requester, user_id, key_name)
        to_store = check_profile_value(key_name, value)
        await self._change(user_id, key_name, to_store)

    async def delete_profile_field(self, requester: Requester, user_id: str, key_name: str) -> None:
        """``DELETE /profile/{userId}/{keyName}``: remove the field (fine if it was not set)."""
        self.check_can_change(requester, user_id, key_name)
        await self._change(user_id, key_name, None)

    async def _change(self, user_id: str, key_name: str, value: Any) -> None:
        async with self._user_lock(user_id):
            profile = await self._profiles.get_profile(user_id)
            if value is None:
                profile.pop(key_name, None)
            else:
                profile[key_name] = value
                try:
                    size = len(encode_canonical_json(profile))
                except CanonicalJsonError:
                    raise MatrixError(400, Codes.BAD_JSON, "The profile value is not valid JSON") from None
                if size > MAX_PROFILE_SIZE:
                    raise MatrixError(
                        400,
                        Codes.PROFILE_TOO_LARGE,
                        f"The profile would exceed its maximum size of {MAX_PROFILE_SIZE} bytes",
                    )
            await self._profiles.set_field(user_id, key_name, value)
            if key_name in PROPAGATED_FIELDS:
                # Still under the lock: listeners see a user's changes in the order they were made.
                await self._notify(user_id, profile)

    async def _notify(self, user_id: str, profile: dict[str, Any]) -> None:
        for listener in list(self._listeners):
            try:
                await defer.maybeDeferred(listener, user_id, dict(profile))
            except Exception:
                log.failure(
                    "Profile change listener {listener!r} failed for {user_id}", listener=listener, user_id=user_id
                )

    # -- checks ---------------------------------------------------------------------
    def _check_user_id(self, user_id: str) -> None:
        if not is_valid_user_id(user_id, historical=True):
            raise MatrixError(400, Codes.INVALID_PARAM, "Invalid user ID")

    def check_can_change(self, requester: Requester, user_id: str, key_name: str) -> None:
        """Refuse a change of ``key_name`` in ``user_id``'s profile by ``requester`` (400, 403).

        Called before the body is read, so that refusals do not depend on it.
        """
        self._check_user_id(user_id)
        check_profile_key(key_name)
        if requester.user_id != user_id:
            raise MatrixError(403, Codes.FORBIDDEN, "You may only change your own profile")
        if requester.is_guest and key_name != DISPLAYNAME:
            # Spec: "Guest Access": guests may only set or delete their display name.
            raise MatrixError(403, Codes.GUEST_ACCESS_FORBIDDEN, "Guests may only change their display name")

    async def _check_local_user_exists(self, user_id: str) -> None:
        if await self._users.get_user(user_id) is None:
            raise MatrixError(404, Codes.NOT_FOUND, "Profile not found")

    async def _query_remote(self, user_id: str, key_name: Optional[str]) -> dict[str, Any]:
        if self._remote_profile_query is None:
            # Hook for the federation profile query (set_remote_profile_query).
            raise MatrixError(404, Codes.NOT_FOUND, "Profile not found: remote profiles are not available yet")
        answer = await self._remote_profile_query(user_id, key_name)
        if not isinstance(answer, dict):
            raise MatrixError(502, Codes.UNKNOWN, "Invalid profile from the remote server")
        return answer

    @asynccontextmanager
    async def _user_lock(self, user_id: str) -> AsyncIterator[None]:
        """Serialise the profile changes of one user (in this process)."""
        lock = self._locks.setdefault(user_id, defer.DeferredLock())
        await lock.acquire()
        try:
            yield
        finally:
            lock.release()  # hands the lock to the next waiter, if any
            if not lock.locked:
                self._locks.pop(user_id, None)
