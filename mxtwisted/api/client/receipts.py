"""Receipts and read markers (Client-Server API, "Receipts", "Read and unread markers").

* ``POST /rooms/{roomId}/receipt/{receiptType}/{eventId}``: ``m.read``,
  ``m.read.private``, or ``m.fully_read`` (sets the fully read marker, as
  ``/read_markers`` does); the body may hold ``thread_id`` (``main`` or a
  thread root's event ID) for a threaded receipt.
* ``POST /rooms/{roomId}/read_markers``: ``m.fully_read``, ``m.read`` and
  ``m.read.private``, each optional.

Errors: an unknown receipt type or a bad ``thread_id`` is ``400
M_INVALID_PARAM``; not being joined to the room ``403 M_FORBIDDEN``; an event
that is not in the room (or not visible to you) ``404 M_NOT_FOUND``. Unknown
keys of a ``/read_markers`` body are ignored (receipt types are extensible).
The rules live in :mod:`mxtwisted.ephemeral.receipts`.
"""

from __future__ import annotations

from typing import Any, Optional

from mxtwisted.api.client import CLIENT_PREFIXES
from mxtwisted.api.client.account_data import check_room_id
from mxtwisted.ephemeral.presence import PresenceHandler
from mxtwisted.ephemeral.receipts import READ_MARKER_TYPES, ReceiptsHandler
from mxtwisted.handlers.auth import Authenticator
from mxtwisted.http.errors import Codes, MatrixError
from mxtwisted.http.resource import parse_json_object
from mxtwisted.http.router import Router


def _check_event_id(event_id: Any, what: str) -> str:
    if not isinstance(event_id, str) or not event_id.startswith("$"):
        raise MatrixError(400, Codes.INVALID_PARAM, f"{what} must be an event ID")
    return event_id


class ReceiptsResource:
    def __init__(
        self, auth: Authenticator, receipts: ReceiptsHandler, presence: Optional[PresenceHandler] = None
    ) -> None:
        self._auth = auth
        self._receipts = receipts
        self._presence = presence

    def register(self, router: Router) -> None:
        for prefix in CLIENT_PREFIXES:
            router.add("POST", f"{prefix}/rooms/{{roomId}}/receipt/{{receiptType}}/{{eventId}}", self.post_receipt)
            router.add("POST", f"{prefix}/rooms/{{roomId}}/read_markers", self.set_read_markers)

    async def post_receipt(self, request: Any, roomId: str, receiptType: str, eventId: str) -> dict[str, Any]:
        """``POST /rooms/{roomId}/receipt/{receiptType}/{eventId}`` (spec: postReceipt)."""
        requester = await self._auth.get_requester(request)
        check_room_id(roomId)
        _check_event_id(eventId, "eventId")
        # Spec: the body is required; older clients send none, which Synapse accepts too.
        body = parse_json_object(request, allow_empty=True)
        thread_id = None
        if "thread_id" in body:
            thread_id = body["thread_id"]
            if not isinstance(thread_id, str) or not thread_id:
                raise MatrixError(400, Codes.INVALID_PARAM, "thread_id field must be a non-empty string")
        await self._receipts.send_receipt(requester.user_id, roomId, receiptType, eventId, thread_id)
        if self._presence is not None:
            self._presence.bump_active(requester.user_id)
        return {}

    async def set_read_markers(self, request: Any, roomId: str) -> dict[str, Any]:
        """``POST /rooms/{roomId}/read_markers`` (spec: setReadMarker)."""
        requester = await self._auth.get_requester(request)
        check_room_id(roomId)
        body = parse_json_object(request)
        markers = {}
        for marker_type in READ_MARKER_TYPES:
            value = body.get(marker_type)
            if value is not None:
                markers[marker_type] = _check_event_id(value, marker_type)
        await self._receipts.set_read_markers(requester.user_id, roomId, markers)
        if self._presence is not None:
            self._presence.bump_active(requester.user_id)
        return {}
