"""Issuing and revoking sessions: devices, access tokens and refresh tokens.

Spec: Client-Server API, "Login", "Refreshing access tokens", "Logout".
Tokens carry 256 bits of randomness and are stored only as hashes. A device
ID is 10 upper-case letters (as Synapse's) unless the client chose one.
"""

from __future__ import annotations

import secrets
import string
from typing import Any, Optional

from twisted.internet.interfaces import IReactorTime

from mxtwisted.handlers.auth_providers import AuthProviderChain
from mxtwisted.http.errors import Codes, MatrixError
from mxtwisted.storage.accounts import DeviceStore, TokenStore

_DEVICE_ALPHABET = string.ascii_uppercase


def new_token(prefix: str) -> str:
    return f"{prefix}_{secrets.token_urlsafe(32)}"


def new_device_id() -> str:
    return "".join(secrets.choice(_DEVICE_ALPHABET) for _ in range(10))


class SessionIssuer:
    def __init__(
        self,
        clock: IReactorTime,
        devices: DeviceStore,
        tokens: TokenStore,
        providers: AuthProviderChain,
        refreshable_lifetime_ms: int = 300_000,
        refresh_token_lifetime_ms: Optional[int] = None,
        nonrefreshable_lifetime_ms: Optional[int] = None,
    ) -> None:
        self._clock = clock
        self.devices = devices
        self.tokens = tokens
        self._providers = providers
        self._refreshable_lifetime_ms = refreshable_lifetime_ms
        self._refresh_token_lifetime_ms = refresh_token_lifetime_ms
        self._nonrefreshable_lifetime_ms = nonrefreshable_lifetime_ms

    def now_ms(self) -> int:
        return int(self._clock.seconds() * 1000)

    async def create_session(
        self,
        user_id: str,
        device_id: Optional[str] = None,
        display_name: Optional[str] = None,
        refreshable: bool = False,
    ) -> dict[str, Any]:
        """Create (or reuse) a device and issue its tokens; returns the spec's login response fields."""
        if device_id is not None and (not isinstance(device_id, str) or not device_id or len(device_id) > 255):
            raise MatrixError(400, Codes.INVALID_PARAM, "device_id must be a non-empty string of at most 255 characters")
        device_id = device_id or new_device_id()
        now = self.now_ms()
        created = await self.devices.ensure_device(user_id, device_id, display_name, now)
        if not created:
            # Logging in again with an existing device ID replaces that device's old tokens (spec: "Login").
            await self.tokens.delete_devices_tokens(user_id, [device_id])
        return await self.issue_tokens(user_id, device_id, refreshable)

    async def issue_tokens(self, user_id: str, device_id: str, refreshable: bool) -> dict[str, Any]:
        now = self.now_ms()
        access_token = new_token("mxt")
        result: dict[str, Any] = {"user_id": user_id, "access_token": access_token, "device_id": device_id}
        if refreshable:
            refresh_token = new_token("mxr")
            expiry = now + self._refresh_token_lifetime_ms if self._refresh_token_lifetime_ms else None
            await self.tokens.add_refresh_token(refresh_token, user_id, device_id, now, expiry)
            valid_until = now + self._refreshable_lifetime_ms
            await self.tokens.add_access_token(access_token, user_id, device_id, now, valid_until, refresh_token)
            result["refresh_token"] = refresh_token
            result["expires_in_ms"] = self._refreshable_lifetime_ms
        else:
            valid_until = now + self._nonrefreshable_lifetime_ms if self._nonrefreshable_lifetime_ms else None
            await self.tokens.add_access_token(access_token, user_id, device_id, now, valid_until)
            if valid_until is not None:
                result["expires_in_ms"] = self._nonrefreshable_lifetime_ms
        return result

    async def refresh(self, refresh_token: str) -> dict[str, Any]:
        """Spec: POST /refresh. An unknown, replaced or expired refresh token is 401 M_UNKNOWN_TOKEN.

        The old refresh token keeps working until the new pair is first used (the spec's grace period for a
        client that lost the response).
        """
        now = self.now_ms()
        new_refresh = new_token("mxr")
        new_access = new_token("mxt")
        refresh_expiry = now + self._refresh_token_lifetime_ms if self._refresh_token_lifetime_ms else None
        found = await self.tokens.rotate_refresh_token(
            refresh_token, new_refresh, new_access, now, refresh_expiry, now + self._refreshable_lifetime_ms
        )
        if found is None:
            raise MatrixError(401, Codes.UNKNOWN_TOKEN, "Unknown refresh token", extra={"soft_logout": False})
        _, _, expiry = found
        if expiry is not None and expiry <= now:
            raise MatrixError(401, Codes.UNKNOWN_TOKEN, "Refresh token has expired", extra={"soft_logout": False})
        return {"access_token": new_access, "refresh_token": new_refresh, "expires_in_ms": self._refreshable_lifetime_ms}

    async def delete_devices(self, user_id: str, device_ids: list[str]) -> None:
        """Delete devices with their tokens (logout of those devices)."""
        await self.tokens.delete_devices(user_id, device_ids)
        for device_id in device_ids:
            await self._providers.on_logged_out(user_id, device_id)
