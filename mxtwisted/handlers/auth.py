"""Authenticating client requests: access token → :class:`Requester`.

Spec: Client-Server API, "Client Authentication" / "Using access tokens". The
token comes from ``Authorization: Bearer`` (or the deprecated
``access_token`` query parameter). Unknown, expired, deleted-device and
deactivated-account tokens are all ``401 M_UNKNOWN_TOKEN``; expired ones say
``soft_logout: true`` so the client refreshes instead of logging out.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from twisted.internet.interfaces import IReactorTime

from mxtwisted.http.errors import Codes, MatrixError
from mxtwisted.storage.accounts import DeviceStore, TokenStore


@dataclass(frozen=True)
class Requester:
    """The authenticated user of a request."""

    user_id: str
    device_id: Optional[str]
    is_guest: bool
    token_hash: str


def get_access_token(request: Any) -> Optional[str]:
    """The access token of a request, or None. Both header and query parameter: 400 M_MISSING_PARAM is not used;
    the header wins as Synapse does."""
    raw = request.getHeader(b"authorization")
    if raw:
        try:
            header = raw.decode("ascii") if isinstance(raw, bytes) else raw
        except UnicodeDecodeError:
            raise MatrixError(401, Codes.UNKNOWN_TOKEN, "Unrecognised access token") from None
        scheme, _, token = header.partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
        raise MatrixError(401, Codes.MISSING_TOKEN, "Invalid Authorization header: expected 'Bearer <token>'")
    values = request.args.get(b"access_token")
    if values:
        try:
            return values[-1].decode("ascii")
        except UnicodeDecodeError:
            raise MatrixError(401, Codes.UNKNOWN_TOKEN, "Unrecognised access token") from None
    return None


#: How often a device's last-seen IP/time is written at most (ms).
LAST_SEEN_INTERVAL_MS = 60_000


class Authenticator:
    def __init__(self, tokens: TokenStore, clock: IReactorTime, devices: Optional[DeviceStore] = None) -> None:
        self._tokens = tokens
        self._clock = clock
        self._devices = devices
        self._last_seen: dict[tuple[str, str], tuple[int, str]] = {}

    async def get_requester(self, request: Any, allow_guest: bool = False, allow_expired: bool = False) -> Requester:
        """Authenticate ``request`` or raise the spec's 401/403 error."""
        token = get_access_token(request)
        if token is None:
            raise MatrixError(401, Codes.MISSING_TOKEN, "Missing access token")
        requester = await self.requester_for_token(token, allow_expired=allow_expired)
        if requester.is_guest and not allow_guest:
            raise MatrixError(403, Codes.GUEST_ACCESS_FORBIDDEN, "Guest access not allowed")
        request.authenticated_entity = requester.user_id
        request.requester = requester
        await self._record_seen(request, requester)
        return requester

    async def _record_seen(self, request: Any, requester: Requester) -> None:
        """Keep devices' last_seen_ip / last_seen_ts current, writing at most once a minute per device."""
        if self._devices is None or requester.device_id is None:
            return
        now = int(self._clock.seconds() * 1000)
        ip = request.getClientAddressString() if hasattr(request, "getClientAddressString") else "-"
        key = (requester.user_id, requester.device_id)
        previous = self._last_seen.get(key)
        if previous is not None and previous[1] == ip and now - previous[0] < LAST_SEEN_INTERVAL_MS:
            return
        self._last_seen[key] = (now, ip)
        if len(self._last_seen) > 100_000:
            self._last_seen.clear()
        agent = request.getHeader(b"user-agent")
        user_agent = agent.decode("utf-8", "replace")[:512] if isinstance(agent, bytes) else agent
        try:
            await self._devices.record_seen(requester.user_id, requester.device_id, ip, user_agent, now)
        except Exception:
            # Bookkeeping must never fail the request.
            self._last_seen.pop(key, None)

    async def get_optional_requester(self, request: Any) -> Optional[Requester]:
        """The requester if the request carries a token (which must then be valid), else None."""
        if get_access_token(request) is None:
            return None
        return await self.get_requester(request, allow_guest=True)

    async def requester_for_token(self, token: str, allow_expired: bool = False) -> Requester:
        info = await self._tokens.get_access_token(token)
        if info is None or info.deactivated:
            raise MatrixError(401, Codes.UNKNOWN_TOKEN, "Unrecognised access token", extra={"soft_logout": False})
        if not allow_expired and info.valid_until_ts is not None and info.valid_until_ts <= self._clock.seconds() * 1000:
            raise MatrixError(401, Codes.UNKNOWN_TOKEN, "Access token has expired", extra={"soft_logout": True})
        if not info.used and info.refresh_token_hash is not None:
            await self._tokens.mark_access_token_used(info)
        return Requester(info.user_id, info.device_id, info.is_guest, info.token_hash)
