"""Account data endpoints (Client-Server API, "Client Config").

* ``GET``/``PUT /user/{userId}/account_data/{type}``: global account data;
* ``GET``/``PUT /user/{userId}/rooms/{roomId}/account_data/{type}``: per room.

Only the user may read or write their own account data (``403 M_FORBIDDEN``;
guests are not allowed, spec "Guest Access"). The types the server manages,
``m.fully_read`` and ``m.push_rules``, can be read but not set here
(``405 M_BAD_JSON``, spec "Server Behaviour"). The spec has no ``DELETE``: a
client clears an entry by setting it to ``{}``, which is stored and delivered
like any other content. Every change is positioned on the ``account_data``
stream for ``/sync``.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any, Callable, Optional

from mxtwisted.api.client import CLIENT_PREFIXES
from mxtwisted.events.canonical_json import CanonicalJsonError, encode_canonical_json
from mxtwisted.events.room_versions import KNOWN_ROOM_VERSIONS
from mxtwisted.events.validation import is_valid_room_id
from mxtwisted.handlers.auth import Authenticator, Requester
from mxtwisted.http.errors import Codes, MatrixError
from mxtwisted.http.resource import parse_json_object
from mxtwisted.http.router import Router
from mxtwisted.storage.account_data import GLOBAL, AccountDataStore

#: Spec "Client Config", "Server Behaviour": account data types the server manages.
SERVER_MANAGED_TYPES = frozenset({"m.fully_read", "m.push_rules"})

#: Longest account data type accepted, in bytes (the limit on event types).
MAX_TYPE_LENGTH = 255

#: ``push_rules(user_id)`` → the user's ``m.push_rules`` content (set by the push rules module).
PushRulesSource = Callable[[str], Awaitable[dict[str, Any]]]


def is_valid_any_room_id(room_id: str) -> bool:
    """Whether ``room_id`` is a room ID of some known room version (``!opaque:server`` or v12's ``!hash``)."""
    return any(is_valid_room_id(room_id, version) for version in KNOWN_ROOM_VERSIONS.values())


def check_room_id(room_id: str) -> None:
    """``400 M_INVALID_PARAM`` unless ``room_id`` is a valid room ID."""
    if not is_valid_any_room_id(room_id):
        raise MatrixError(400, Codes.INVALID_PARAM, f"{room_id!r} is not a valid room ID")


def parse_content(request: Any) -> dict[str, Any]:
    """The body as a JSON object that can be stored: ``400 M_NOT_JSON``/``M_BAD_JSON`` otherwise.

    JSON text may spell lone UTF-16 surrogates (``"\\ud800"``), which no
    UTF-8 database column can hold: those are refused as ``M_BAD_JSON``.
    """
    content = parse_json_object(request)
    try:
        encode_canonical_json(content)
    except CanonicalJsonError:
        raise MatrixError(400, Codes.BAD_JSON, "Content contains strings that are not valid Unicode") from None
    return content


def check_own_user(requester: Requester, user_id: str, what: str) -> None:
    """``403 M_FORBIDDEN`` unless the path's ``userId`` is the requester."""
    if requester.user_id != user_id:
        raise MatrixError(403, Codes.FORBIDDEN, f"Cannot access {what} of other users")


class AccountDataResource:
    def __init__(
        self, auth: Authenticator, account_data: AccountDataStore, push_rules: Optional[PushRulesSource] = None
    ) -> None:
        self._auth = auth
        self._store = account_data
        self._push_rules = push_rules

    def set_push_rules_source(self, push_rules: Optional[PushRulesSource]) -> None:
        """Where ``GET .../account_data/m.push_rules`` reads from once push rules have their own store."""
        self._push_rules = push_rules

    def register(self, router: Router) -> None:
        for prefix in CLIENT_PREFIXES:
            router.add("GET", f"{prefix}/user/{{userId}}/account_data/{{type}}", self.get_global)
            router.add("PUT", f"{prefix}/user/{{userId}}/account_data/{{type}}", self.put_global)
            router.add("GET", f"{prefix}/user/{{userId}}/rooms/{{roomId}}/account_data/{{type}}", self.get_room)
            router.add("PUT", f"{prefix}/user/{{userId}}/rooms/{{roomId}}/account_data/{{type}}", self.put_room)

    # -- global -------------------------------------------------------------------
    async def get_global(self, request: Any, userId: str, type: str) -> dict[str, Any]:
        """``GET /user/{userId}/account_data/{type}`` (spec: getAccountData)."""
        requester = await self._auth.get_requester(request)
        check_own_user(requester, userId, "account data")
        _check_type(type)
        if type == "m.push_rules" and self._push_rules is not None:
            return await self._push_rules(userId)
        content = await self._store.get(userId, type)
        if content is None:
            raise MatrixError(404, Codes.NOT_FOUND, "Account data not found")
        return content

    async def put_global(self, request: Any, userId: str, type: str) -> dict[str, Any]:
        """``PUT /user/{userId}/account_data/{type}`` (spec: setAccountData)."""
        requester = await self._auth.get_requester(request)
        check_own_user(requester, userId, "account data")
        _check_settable_type(type)
        content = parse_content(request)
        await self._store.put(userId, type, content, GLOBAL)
        return {}

    # -- per room -------------------------------------------------------------------
    async def get_room(self, request: Any, userId: str, roomId: str, type: str) -> dict[str, Any]:
        """``GET /user/{userId}/rooms/{roomId}/account_data/{type}`` (spec: getAccountDataPerRoom)."""
        requester = await self._auth.get_requester(request)
        check_own_user(requester, userId, "account data")
        check_room_id(roomId)
        _check_type(type)
        content = await self._store.get(userId, type, roomId)
        if content is None:
            raise MatrixError(404, Codes.NOT_FOUND, "Room account data not found")
        return content

    async def put_room(self, request: Any, userId: str, roomId: str, type: str) -> dict[str, Any]:
        """``PUT /user/{userId}/rooms/{roomId}/account_data/{type}`` (spec: setAccountDataPerRoom)."""
        requester = await self._auth.get_requester(request)
        check_own_user(requester, userId, "account data")
        check_room_id(roomId)
        _check_settable_type(type)
        content = parse_content(request)
        await self._store.put(userId, type, content, roomId)
        return {}


def _check_type(data_type: str) -> None:
    if not data_type:
        raise MatrixError(400, Codes.INVALID_PARAM, "The account data type may not be empty")
    if len(data_type.encode("utf-8", "surrogatepass")) > MAX_TYPE_LENGTH:
        raise MatrixError(400, Codes.INVALID_PARAM, f"The account data type is limited to {MAX_TYPE_LENGTH} bytes")


def _check_settable_type(data_type: str) -> None:
    _check_type(data_type)
    if data_type in SERVER_MANAGED_TYPES:
        # Spec: "Servers MUST reject setting account data for event types that the server manages by using a 405".
        hint = "/rooms/{roomId}/read_markers" if data_type == "m.fully_read" else "/pushrules"
        raise MatrixError(405, Codes.BAD_JSON, f"Cannot set {data_type} through this API; use {hint}")
