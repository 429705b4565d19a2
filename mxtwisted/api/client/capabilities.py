"""``GET /capabilities`` (Client-Server API, "Capabilities negotiation").

Every capability the spec defines that matrixhs decides is listed explicitly,
so that clients need not guess defaults:

- ``m.change_password``: password login is enabled (``password_config.enabled``
  and ``password_config.localdb_enabled``), as Synapse decides it.
- ``m.room_versions``: the configured ``default_room_version`` and every known
  room version, all ``stable``.
- ``m.set_displayname`` / ``m.set_avatar_url`` (deprecated) and
  ``m.profile_fields`` (v1.16): profile changes are allowed; the
  Synapse keys ``enable_set_displayname`` / ``enable_set_avatar_url`` turn
  them off once the configuration schema knows them, and the fields turned off
  are then listed as ``disallowed``, as the spec requires for the deprecated pair.
- ``m.3pid_changes``: false, matrixhs keeps no third-party identifiers.
- ``m.get_login_token``: ``login_via_existing_session.enabled`` (false when the
  configuration has no such section).
"""

from __future__ import annotations

import copy
from typing import Any, Mapping

from mxtwisted.api.client import CLIENT_PREFIXES
from mxtwisted.events.room_versions import KNOWN_ROOM_VERSIONS
from mxtwisted.handlers.auth import Authenticator
from mxtwisted.http.router import Router


def _enabled(raw: Mapping[str, Any], *path: str, default: bool) -> bool:
    """A boolean from the validated configuration, or ``default`` when the key is not (yet) part of it."""
    value: Any = raw
    for part in path:
        if not isinstance(value, Mapping) or part not in value:
            return default
        value = value[part]
    return bool(value)


def build_capabilities(raw_config: Mapping[str, Any], default_room_version: str) -> dict[str, Any]:
    """The ``capabilities`` object for a configuration (its validated ``raw`` mapping)."""
    password = raw_config.get("password_config") or {}
    change_password = bool(password.get("enabled", True)) and bool(password.get("localdb_enabled", True))
    set_displayname = _enabled(raw_config, "enable_set_displayname", default=True)
    set_avatar_url = _enabled(raw_config, "enable_set_avatar_url", default=True)
    profile_fields: dict[str, Any] = {"enabled": True}
    disallowed = [
        name for name, allowed in (("displayname", set_displayname), ("avatar_url", set_avatar_url)) if not allowed
    ]
    if disallowed:
        profile_fields["disallowed"] = disallowed
    return {
        "m.change_password": {"enabled": change_password},
        "m.room_versions": {
            "default": default_room_version,
            "available": {identifier: "stable" for identifier in KNOWN_ROOM_VERSIONS},
        },
        "m.set_displayname": {"enabled": set_displayname},
        "m.set_avatar_url": {"enabled": set_avatar_url},
        "m.profile_fields": profile_fields,
        "m.3pid_changes": {"enabled": False},
        "m.get_login_token": {"enabled": _enabled(raw_config, "login_via_existing_session", "enabled", default=False)},
    }


class CapabilitiesResource:
    def __init__(self, auth: Authenticator, raw_config: Mapping[str, Any], default_room_version: str) -> None:
        self._auth = auth
        self._capabilities = build_capabilities(raw_config, default_room_version)

    def register(self, router: Router) -> None:
        for prefix in CLIENT_PREFIXES:
            router.add("GET", f"{prefix}/capabilities", self.get_capabilities)

    async def get_capabilities(self, request: Any) -> dict[str, Any]:
        """Spec: ``GET /capabilities`` (guests too, as Synapse)."""
        await self._auth.get_requester(request, allow_guest=True)
        return {"capabilities": copy.deepcopy(self._capabilities)}
