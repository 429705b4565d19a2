"""Account management use cases: devices, password change, deactivation.

Spec: Client-Server API, "Device Management" (``/devices``,
``/delete_devices``), "Account registration and management" (``POST
/account/password``, ``POST /account/deactivate``).

Deactivation hooks
------------------
Other parts of the server clean up after a deactivated account by adding a
hook with :meth:`AccountHandler.add_deactivation_hook` when the server is
composed (in :mod:`mxtwisted.service`), e.g. the room engine makes the user
leave every room and reject pending invites. A hook is called as
``hook(user_id, erase)`` and may return an awaitable (a coroutine or a
Deferred). Hooks run in the order they were added, after the deactivation is
committed: the user row is marked deactivated, the password, devices and
every token are gone (so requests of the user already fail with
``401 M_UNKNOWN_TOKEN`` and login with ``M_USER_DEACTIVATED``) and, when
``erase`` is true, the profile and account data are already deleted. A hook
that fails is logged and the next hook still runs; the deactivation itself
is not undone. A hook with a lot of work (thousands of rooms) should queue
it and return, because the client waits for the hooks.
"""

from __future__ import annotations

from typing import Any, Awaitable, Callable, Optional, Union

from twisted.internet import defer
from twisted.logger import Logger

from mxtwisted.handlers.auth import Requester
from mxtwisted.handlers.auth_providers import AuthProviderChain
from mxtwisted.handlers.passwords import PasswordHasher
from mxtwisted.handlers.sessions import SessionIssuer
from mxtwisted.http.errors import Codes, MatrixError
from mxtwisted.storage.accounts import Device, DeviceStore, TokenStore, UserStore
from mxtwisted.storage.profiles import ProfileStore

log = Logger()

#: As Synapse: a device display name longer than this is refused with 400 M_TOO_LARGE.
MAX_DEVICE_DISPLAY_NAME_LENGTH = 100

#: As Synapse: the longest new password accepted (characters).
MAX_PASSWORD_LENGTH = 512

#: ``hook(user_id, erase)``; see the module docstring.
DeactivationHook = Callable[[str, bool], Union[Awaitable[Any], None]]


def device_to_json(device: Device) -> dict[str, Any]:
    """The spec's ``Device`` object.

    Unknown values are sent as ``null`` rather than left out, as Synapse does: the spec's schema marks them
    optional strings, but deployed clients (matrix-nio among them) require the keys to be present.
    """
    return {
        "device_id": device.device_id,
        "display_name": device.display_name,
        "last_seen_ip": device.last_seen_ip,
        "last_seen_ts": device.last_seen_ts,
    }


class AccountHandler:
    """Devices, password and deactivation of local accounts."""

    def __init__(
        self,
        users: UserStore,
        devices: DeviceStore,
        tokens: TokenStore,
        profiles: ProfileStore,
        account_data: Any,
        sessions: SessionIssuer,
        providers: AuthProviderChain,
        hasher: PasswordHasher,
        password_change_enabled: bool,
    ) -> None:
        self._users = users
        self._devices = devices
        self._tokens = tokens
        self._profiles = profiles
        self._account_data = account_data
        self._sessions = sessions
        self._providers = providers
        self._hasher = hasher
        self.password_change_enabled = password_change_enabled
        self._deactivation_hooks: list[DeactivationHook] = []

    # -- devices -----------------------------------------------------------
    async def get_devices(self, user_id: str) -> list[Device]:
        return await self._devices.get_devices(user_id)

    async def get_device(self, user_id: str, device_id: str) -> Device:
        """The user's device, or ``404 M_NOT_FOUND`` (also for another user's device ID)."""
        device = await self._devices.get_device(user_id, device_id)
        if device is None:
            raise MatrixError(404, Codes.NOT_FOUND, "No device found")
        return device

    async def update_device(self, user_id: str, device_id: str, display_name: Optional[str]) -> None:
        """Spec: ``PUT /devices/{deviceId}``. ``display_name`` None leaves it unchanged; unknown device: 404."""
        if display_name is not None and len(display_name) > MAX_DEVICE_DISPLAY_NAME_LENGTH:
            raise MatrixError(
                400,
                Codes.TOO_LARGE,
                f"Device display name is too long (max {MAX_DEVICE_DISPLAY_NAME_LENGTH})",
            )
        if display_name is None:
            await self.get_device(user_id, device_id)
            return
        if not await self._devices.set_display_name(user_id, device_id, display_name):
            raise MatrixError(404, Codes.NOT_FOUND, "No device found")

    async def delete_devices(self, user_id: str, device_ids: list[str]) -> None:
        """Delete the user's devices with their tokens at once; IDs the user has no device for are ignored."""
        existing = {device.device_id for device in await self._devices.get_devices(user_id)}
        to_delete = [device_id for device_id in dict.fromkeys(device_ids) if device_id in existing]
        if to_delete:
            await self._sessions.delete_devices(user_id, to_delete)

    # -- password ----------------------------------------------------------
    def check_new_password(self, new_password: Any) -> Optional[str]:
        """Validate the ``new_password`` field of a request (None if absent)."""
        if new_password is None:
            return None
        if not isinstance(new_password, str):
            raise MatrixError(400, Codes.BAD_JSON, "'new_password' must be a string")
        if len(new_password) > MAX_PASSWORD_LENGTH:
            raise MatrixError(400, Codes.TOO_LARGE, f"'new_password' is too long (max {MAX_PASSWORD_LENGTH})")
        return new_password

    def hash_password(self, password: str) -> defer.Deferred:
        return self._hasher.hash(password)

    async def change_password(self, requester: Requester, password_hash: str, logout_devices: bool) -> None:
        """Spec: ``POST /account/password``, after UIA.

        Stores the new hash. With ``logout_devices`` every other device of the
        user is deleted with its tokens, and every other token (also of the
        requesting device) is revoked; the requesting access token is kept.
        """
        if not self.password_change_enabled:
            raise MatrixError(403, Codes.FORBIDDEN, "Password change is disabled on this server")
        user_id = requester.user_id
        await self._users.set_password_hash(user_id, password_hash)
        if logout_devices:
            others = [
                d.device_id for d in await self._devices.get_devices(user_id) if d.device_id != requester.device_id
            ]
            if others:
                await self._sessions.delete_devices(user_id, others)
            await self._tokens.delete_user_tokens(user_id, except_token_hash=requester.token_hash)

    # -- deactivation ------------------------------------------------------
    def add_deactivation_hook(self, hook: DeactivationHook) -> None:
        """Call ``hook(user_id, erase)`` after every account deactivation (see the module docstring)."""
        self._deactivation_hooks.append(hook)

    async def deactivate(self, user_id: str, erase: bool) -> str:
        """Spec: ``POST /account/deactivate``, after UIA. Returns ``id_server_unbind_result``.

        The account is marked deactivated and loses its password, devices and
        tokens in one transaction; auth providers hear of each device's logout;
        with ``erase`` the profile and the account data are deleted; then the
        deactivation hooks run.
        """
        devices = await self._devices.get_devices(user_id)
        await self._tokens.deactivate_user(user_id)
        for device in devices:
            await self._providers.on_logged_out(user_id, device.device_id)
        if erase:
            await self._profiles.delete_profile(user_id)
            if self._account_data is not None:
                await self._account_data.delete_all(user_id)
        for hook in list(self._deactivation_hooks):
            try:
                await defer.maybeDeferred(hook, user_id, erase)
            except Exception:
                log.failure("Deactivation hook {hook!r} failed for {user_id}", hook=hook, user_id=user_id)
        # This server keeps no third-party identifiers, so there is nothing to unbind from an identity
        # server; the spec says the result "must be `success` if the homeserver has no identifiers to unbind".
        return "success"
