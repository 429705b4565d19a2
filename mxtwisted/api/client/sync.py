"""``GET /sync`` and the filter endpoints (Client-Server API, "Syncing" and "Filtering").

* ``GET /sync`` (guests allowed): parses ``filter`` (a filter ID, or inline JSON
  when it starts with ``{``), ``since``, ``timeout``, ``full_state``,
  ``set_presence`` and ``use_state_after`` (spec v1.16; also under its
  unstable name ``org.matrix.msc4222.use_state_after``), then calls
  :class:`~mxtwisted.sync.handler.SyncHandler`. A request whose connection
  closes stops waiting.
* ``POST /user/{userId}/filter``: validates the filter (``400 M_BAD_JSON`` for
  wrong JSON types, ``400 M_INVALID_PARAM`` for invalid values) and stores it;
  only for yourself (``403 M_FORBIDDEN``).
* ``GET /user/{userId}/filter/{filterId}``: ``404 M_NOT_FOUND`` if unknown.

Stored filters never change, so parsed ones are kept in memory: a long-polling
client costs no filter lookup per request.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from typing import Any, Optional

from twisted.internet import defer

from mxtwisted.api.client import CLIENT_PREFIXES as PREFIXES
from mxtwisted.handlers.auth import Authenticator
from mxtwisted.http.errors import Codes, MatrixError
from mxtwisted.http.resource import parse_json_object, query_arg
from mxtwisted.http.router import Router
from mxtwisted.storage.filters import FilterStore
from mxtwisted.sync.filters import DEFAULT_FILTER, Filter, InvalidFilter, parse_filter
from mxtwisted.sync.handler import SyncHandler, SyncRequest
from mxtwisted.sync.tokens import InvalidToken, SyncToken

PRESENCE_STATES = ("offline", "online", "unavailable")

#: Longest wait a client may ask for (ms); longer timeouts are shortened to this.
MAX_TIMEOUT_MS = 10 * 60 * 1000


def _bool_arg(request: Any, *names: str) -> bool:
    for name in names:
        value = query_arg(request, name)
        if value is None:
            continue
        if value == "true":
            return True
        if value == "false":
            return False
        raise MatrixError(400, Codes.INVALID_PARAM, f"'{name}' must be 'true' or 'false'")
    return False


def _int_arg(request: Any, name: str, default: int) -> int:
    value = query_arg(request, name)
    if value is None or value == "":
        return default
    if not value.isascii() or not value.isdigit():
        raise MatrixError(400, Codes.INVALID_PARAM, f"'{name}' must be a non-negative integer")
    return int(value)


def parse_filter_json(text: str) -> Filter:
    """An inline filter: ``400 M_NOT_JSON`` if not JSON, else as :func:`parse_filter`."""
    try:
        value = json.loads(text)
    except ValueError:
        raise MatrixError(400, Codes.NOT_JSON, "'filter' is not valid JSON") from None
    try:
        return parse_filter(value)
    except InvalidFilter as e:
        raise MatrixError(400, e.errcode, e.message) from None


class SyncResource:
    def __init__(self, auth: Authenticator, handler: SyncHandler, filters: FilterStore, cache_size: int = 10_000) -> None:
        self.auth = auth
        self.handler = handler
        self.filters = filters
        self._cache: OrderedDict[tuple[str, str], Filter] = OrderedDict()
        self._cache_size = cache_size

    def register(self, router: Router) -> None:
        for p in PREFIXES:
            router.add("GET", f"{p}/sync", self.sync)
            router.add("POST", f"{p}/user/{{userId}}/filter", self.define_filter)
            router.add("GET", f"{p}/user/{{userId}}/filter/{{filterId}}", self.get_filter)

    # -- /sync ----------------------------------------------------------------------------------
    async def sync(self, request: Any) -> dict[str, Any]:
        requester = await self.auth.get_requester(request, allow_guest=True)
        timeout = min(_int_arg(request, "timeout", 0), MAX_TIMEOUT_MS)
        full_state = _bool_arg(request, "full_state")
        use_state_after = _bool_arg(request, "use_state_after", "org.matrix.msc4222.use_state_after")
        set_presence = query_arg(request, "set_presence")
        if set_presence is not None and set_presence not in PRESENCE_STATES:
            raise MatrixError(400, Codes.INVALID_PARAM, f"'set_presence' must be one of {', '.join(PRESENCE_STATES)}")
        since_text = query_arg(request, "since")
        since = None
        if since_text:
            try:
                since = SyncToken.decode(since_text)
            except InvalidToken as e:
                raise MatrixError(400, Codes.INVALID_PARAM, str(e)) from None
        sync_filter = await self._filter_for(requester.user_id, query_arg(request, "filter"))
        disconnected: defer.Deferred = defer.Deferred()

        def finished(_: Any) -> None:
            if not disconnected.called:
                disconnected.callback(None)

        request.notifyFinish().addBoth(finished)
        return await self.handler.sync(
            SyncRequest(
                user_id=requester.user_id,
                device_id=requester.device_id,
                filter=sync_filter,
                since=since,
                timeout_ms=timeout,
                full_state=full_state,
                use_state_after=use_state_after,
                set_presence=set_presence,
            ),
            disconnected,
        )

    async def _filter_for(self, user_id: str, text: Optional[str]) -> Filter:
        if not text:
            return DEFAULT_FILTER
        if text.startswith("{"):
            return parse_filter_json(text)
        key = (user_id, text)
        cached = self._cache.get(key)
        if cached is not None:
            self._cache.move_to_end(key)
            return cached
        stored = await self.filters.get_filter(user_id, text)
        if stored is None:
            raise MatrixError(400, Codes.INVALID_PARAM, f"No such filter: {text!r}")
        try:
            parsed = parse_filter(stored)
        except InvalidFilter as e:
            raise MatrixError(400, e.errcode, e.message) from None
        self._cache[key] = parsed
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return parsed

    # -- filters ---------------------------------------------------------------------------------
    async def define_filter(self, request: Any, userId: str) -> dict[str, Any]:
        """``POST /user/{userId}/filter`` (spec: defineFilter)."""
        requester = await self.auth.get_requester(request)
        if requester.user_id != userId:
            raise MatrixError(403, Codes.FORBIDDEN, "Cannot create filters for other users")
        body = parse_json_object(request)
        try:
            parse_filter(body)
        except InvalidFilter as e:
            raise MatrixError(400, e.errcode, e.message) from None
        return {"filter_id": await self.filters.add_filter(userId, body)}

    async def get_filter(self, request: Any, userId: str, filterId: str) -> dict[str, Any]:
        """``GET /user/{userId}/filter/{filterId}`` (spec: getFilter)."""
        requester = await self.auth.get_requester(request)
        if requester.user_id != userId:
            raise MatrixError(403, Codes.FORBIDDEN, "Cannot get filters of other users")
        stored = await self.filters.get_filter(userId, filterId)
        if stored is None:
            raise MatrixError(404, Codes.NOT_FOUND, "No such filter")
        return stored
