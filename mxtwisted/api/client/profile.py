"""Profile endpoints (Client-Server API, "Profiles").

* ``GET /profile/{userId}``: the whole profile;
* ``GET``/``PUT``/``DELETE /profile/{userId}/{keyName}``: one field, where
  ``keyName`` is ``displayname``, ``avatar_url``, ``m.tz`` or a custom field
  (custom fields and ``DELETE`` since spec v1.16).

Reading needs no access token unless ``require_auth_for_profile_requests`` is
set; changing needs the user's own token (guests may only change their display
name, spec "Guest Access"). The rules live in :mod:`mxtwisted.handlers.profile`.
"""

from __future__ import annotations

from typing import Any

from mxtwisted.api.client import CLIENT_PREFIXES
from mxtwisted.handlers.auth import Authenticator
from mxtwisted.handlers.profile import ProfileHandler, check_profile_key
from mxtwisted.http.errors import Codes, MatrixError
from mxtwisted.http.resource import parse_json_object
from mxtwisted.http.router import Router


class ProfileResource:
    def __init__(
        self, auth: Authenticator, profiles: ProfileHandler, require_auth_for_profile_requests: bool = False
    ) -> None:
        self._auth = auth
        self._profiles = profiles
        self._require_auth = require_auth_for_profile_requests

    def register(self, router: Router) -> None:
        for prefix in CLIENT_PREFIXES:
            router.add("GET", f"{prefix}/profile/{{userId}}", self.get_profile)
            router.add("GET", f"{prefix}/profile/{{userId}}/{{keyName}}", self.get_profile_field)
            router.add("PUT", f"{prefix}/profile/{{userId}}/{{keyName}}", self.set_profile_field)
            router.add("DELETE", f"{prefix}/profile/{{userId}}/{{keyName}}", self.delete_profile_field)

    async def _check_may_read(self, request: Any) -> None:
        if self._require_auth:
            await self._auth.get_requester(request)

    async def get_profile(self, request: Any, userId: str) -> dict[str, Any]:
        """``GET /profile/{userId}`` (spec: getUserProfile)."""
        await self._check_may_read(request)
        return await self._profiles.get_profile(userId)

    async def get_profile_field(self, request: Any, userId: str, keyName: str) -> dict[str, Any]:
        """``GET /profile/{userId}/{keyName}`` (spec: getProfileField): ``{keyName: value}``."""
        await self._check_may_read(request)
        return {keyName: await self._profiles.get_profile_field(userId, keyName)}

    async def set_profile_field(self, request: Any, userId: str, keyName: str) -> dict[str, Any]:
        """``PUT /profile/{userId}/{keyName}`` (spec: setProfileField).

        The body is an object holding ``keyName`` (``400 M_MISSING_PARAM``
        without it); other properties are ignored.
        """
        requester = await self._auth.get_requester(request, allow_guest=True)
        self._profiles.check_can_change(requester, userId, keyName)
        body = parse_json_object(request)
        if keyName not in body:
            raise MatrixError(400, Codes.MISSING_PARAM, f"Missing key '{keyName}' in the request body")
        await self._profiles.set_profile_field(requester, userId, keyName, body[keyName])
        return {}

    async def delete_profile_field(self, request: Any, userId: str, keyName: str) -> dict[str, Any]:
        """``DELETE /profile/{userId}/{keyName}`` (spec: deleteProfileField); 200 also when the field was not set."""
        requester = await self._auth.get_requester(request, allow_guest=True)
        check_profile_key(keyName)
        await self._profiles.delete_profile_field(requester, userId, keyName)
        return {}
