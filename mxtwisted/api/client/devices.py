"""Device management (Client-Server API, "Device Management").

``GET /devices``, ``GET|PUT|DELETE /devices/{deviceId}`` and ``POST
/delete_devices``. Deleting devices uses User-Interactive Authentication with
the ``m.login.password`` stage (the spec's "Security considerations": a
stolen access token alone must not be enough to log the real user out).
A deleted device's access tokens stop working at once.
"""

from __future__ import annotations

from typing import Any

from mxtwisted.api.client import CLIENT_PREFIXES
from mxtwisted.handlers.account import AccountHandler, device_to_json
from mxtwisted.handlers.auth import Authenticator
from mxtwisted.handlers.uia import PASSWORD, UserInteractiveAuth
from mxtwisted.http.errors import Codes, MatrixError
from mxtwisted.http.resource import parse_json_object
from mxtwisted.http.router import Router

#: UIA flows for deleting devices.
DELETE_DEVICE_FLOWS = [[PASSWORD]]


class DevicesResource:
    def __init__(self, auth: Authenticator, uia: UserInteractiveAuth, accounts: AccountHandler) -> None:
        self._auth = auth
        self._uia = uia
        self._accounts = accounts

    def register(self, router: Router) -> None:
        for prefix in CLIENT_PREFIXES:
            router.add("GET", f"{prefix}/devices", self.get_devices)
            router.add("GET", f"{prefix}/devices/{{deviceId}}", self.get_device)
            router.add("PUT", f"{prefix}/devices/{{deviceId}}", self.put_device)
            router.add("DELETE", f"{prefix}/devices/{{deviceId}}", self.delete_device)
            router.add("POST", f"{prefix}/delete_devices", self.delete_devices)

    async def get_devices(self, request: Any) -> dict[str, Any]:
        """Spec: ``GET /devices`` — every device of the requesting user."""
        requester = await self._auth.get_requester(request, allow_guest=True)
        devices = await self._accounts.get_devices(requester.user_id)
        return {"devices": [device_to_json(d) for d in devices]}

    async def get_device(self, request: Any, deviceId: str) -> dict[str, Any]:
        """Spec: ``GET /devices/{deviceId}`` — 404 M_NOT_FOUND unless the requesting user has that device."""
        requester = await self._auth.get_requester(request, allow_guest=True)
        return device_to_json(await self._accounts.get_device(requester.user_id, deviceId))

    async def put_device(self, request: Any, deviceId: str) -> dict[str, Any]:
        """Spec: ``PUT /devices/{deviceId}`` — update ``display_name`` of an existing device (no creation)."""
        requester = await self._auth.get_requester(request, allow_guest=True)
        body = parse_json_object(request)
        display_name = body.get("display_name")
        if display_name is not None and not isinstance(display_name, str):
            raise MatrixError(400, Codes.BAD_JSON, "'display_name' must be a string")
        await self._accounts.update_device(requester.user_id, deviceId, display_name)
        return {}

    async def delete_device(self, request: Any, deviceId: str) -> dict[str, Any]:
        """Spec: ``DELETE /devices/{deviceId}`` (UIA). Succeeds also for a device that is already gone."""
        requester = await self._auth.get_requester(request)
        body = parse_json_object(request, allow_empty=True)
        await self._uia.check(
            request, body, DELETE_DEVICE_FLOWS, "remove a device from your account", requester=requester
        )
        await self._accounts.delete_devices(requester.user_id, [deviceId])
        return {}

    async def delete_devices(self, request: Any) -> dict[str, Any]:
        """Spec: ``POST /delete_devices`` (UIA). Device IDs the user has no device for are ignored."""
        requester = await self._auth.get_requester(request)
        body = parse_json_object(request, allow_empty=True)
        devices = body.get("devices")
        if devices is None:
            raise MatrixError(400, Codes.MISSING_PARAM, "Missing parameter: devices")
        if not isinstance(devices, list) or not all(isinstance(d, str) for d in devices):
            raise MatrixError(400, Codes.BAD_JSON, "'devices' must be a list of device IDs")
        await self._uia.check(
            request, body, DELETE_DEVICE_FLOWS, "remove device(s) from your account", requester=requester
        )
        await self._accounts.delete_devices(requester.user_id, devices)
        return {}
