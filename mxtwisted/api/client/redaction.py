"""``PUT /rooms/{roomId}/redact/{eventId}/{txnId}`` (Client-Server API "Redactions").

Sends an ``m.room.redaction`` through the room engine, which stores the
target's redacted form at once (the room version's redaction algorithm), so
the removed content is gone from the database; clients reading the target
get it with ``unsigned.redacted_because``. Who may redact what:

- the auth rules: the sender must be joined with the power to send
  ``m.room.redaction``;
- on top of them (the auth rules of rooms v3+ let any user of this server
  through, because the target's sender is on the same server): a user may
  redact their own events, and other users' events only with the room's
  ``redact`` power level, else ``403 M_FORBIDDEN``.

An unknown event, or one of another room, is ``404 M_NOT_FOUND`` (asked only
of joined members, so that others cannot probe which events exist). The
transaction ID makes the request idempotent per device, as for ``/send``.
"""

from __future__ import annotations

from typing import Any, Optional

from mxtwisted.api.client import CLIENT_PREFIXES as PREFIXES
from mxtwisted.events.auth import get_named_level
from mxtwisted.handlers.auth import Authenticator
from mxtwisted.http.errors import Codes, MatrixError
from mxtwisted.http.resource import parse_json_object
from mxtwisted.http.router import Router
from mxtwisted.ratelimit import Ratelimiter
from mxtwisted.rooms.engine import RoomEngine
from mxtwisted.rooms.reader import RoomReader


class RedactionResource:
    def __init__(
        self, auth: Authenticator, engine: RoomEngine, reader: RoomReader, ratelimiter: Optional[Ratelimiter] = None
    ) -> None:
        self.auth = auth
        self.engine = engine
        self.store = engine.store
        self.reader = reader
        self._ratelimiter = ratelimiter

    def register(self, router: Router) -> None:
        for p in PREFIXES:
            router.add("PUT", f"{p}/rooms/{{roomId}}/redact/{{eventId}}/{{txnId}}", self.redact)

    async def redact(self, request: Any, roomId: str, eventId: str, txnId: str) -> dict[str, Any]:
        requester = await self.auth.get_requester(request)
        if not roomId.startswith("!"):
            raise MatrixError(400, Codes.INVALID_PARAM, f"Invalid room ID {roomId!r}")
        body = parse_json_object(request, allow_empty=True)
        reason = body.get("reason")
        if reason is not None and not isinstance(reason, str):
            raise MatrixError(400, Codes.BAD_JSON, "'reason' must be a string")
        txn = (requester.user_id, requester.device_id, txnId) if requester.device_id else None
        if txn is not None:
            done = await self.store.get_event_by_txn(txn[0], txn[1], roomId, txnId)
            if done is not None:
                return {"event_id": done}
        if await self.reader.membership(roomId, requester.user_id) != "join":
            raise MatrixError(403, Codes.FORBIDDEN, "You are not joined to this room")
        target = await self.store.get_event(eventId)
        if target is None or target.room_id != roomId or target.outlier or target.rejected_reason:
            raise MatrixError(404, Codes.NOT_FOUND, "Event not found")
        if target.sender != requester.user_id:
            room = await self.engine.get_room_cache(roomId)
            auth_state = await self.engine.get_state_events(room, [("m.room.create", ""), ("m.room.power_levels", "")])
            if await self.engine.get_power_level(room, requester.user_id) < get_named_level("redact", auth_state):
                raise MatrixError(403, Codes.FORBIDDEN, "You don't have permission to redact other users' events")
        if self._ratelimiter is not None:
            self._ratelimiter.ratelimit(requester.user_id)
        # The body is the redaction's content; ``redacts`` is the server's to set (in content from room v11).
        content = {key: value for key, value in body.items() if key != "redacts"}
        event_id, _ = await self.engine.send_event(
            requester.user_id, roomId, "m.room.redaction", content, txn=txn, redacts=eventId
        )
        return {"event_id": event_id}
