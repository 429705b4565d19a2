"""``GET /rooms/{roomId}/context/{eventId}`` and ``GET /v1/rooms/{roomId}/timestamp_to_event``.

Spec: Client-Server API "Room participation". The context is the event, up
to ``limit`` events around it (half before, half after, as Synapse splits
it), the room state at the last event returned, and ``start``/``end`` tokens
for ``/messages``. Everything goes through :class:`RoomReader`, so history
visibility applies to the event (``404`` if the user may not see it) and to
the events around it; the ``filter`` (a RoomEventFilter) applies to the
events around it and to the state, and ``lazy_load_members`` keeps only the
member events of the senders returned.
"""

from __future__ import annotations

import json
from typing import Any, Optional

from mxtwisted.api.client import CLIENT_PREFIXES as PREFIXES
from mxtwisted.api.client.rooms import _parse_filter
from mxtwisted.handlers.auth import Authenticator
from mxtwisted.http.errors import Codes, MatrixError
from mxtwisted.http.resource import query_arg
from mxtwisted.http.router import Router
from mxtwisted.rooms.reader import RoomReader, stream_token

V1 = "/_matrix/client/v1"

DEFAULT_LIMIT = 10
MAX_LIMIT = 1000


def _check_room_id(room_id: str) -> None:
    if not room_id.startswith("!"):
        raise MatrixError(400, Codes.INVALID_PARAM, f"Invalid room ID {room_id!r}")


def _lazy_load_members(filter_text: Optional[str]) -> bool:
    if not filter_text:
        return False
    try:
        parsed = json.loads(filter_text)
    except ValueError:
        return False  # _parse_filter reports it
    return isinstance(parsed, dict) and parsed.get("lazy_load_members") is True


class ContextResource:
    def __init__(self, auth: Authenticator, reader: RoomReader) -> None:
        self.auth = auth
        self.reader = reader
        self.store = reader.store

    def register(self, router: Router) -> None:
        for p in PREFIXES:
            router.add("GET", f"{p}/rooms/{{roomId}}/context/{{eventId}}", self.context)
        router.add("GET", f"{V1}/rooms/{{roomId}}/timestamp_to_event", self.timestamp_to_event)

    async def context(self, request: Any, roomId: str, eventId: str) -> dict[str, Any]:
        requester = await self.auth.get_requester(request, allow_guest=True)
        _check_room_id(roomId)
        limit_text = query_arg(request, "limit") or str(DEFAULT_LIMIT)
        try:
            limit = int(limit_text)
        except ValueError:
            raise MatrixError(400, Codes.INVALID_PARAM, "'limit' must be an integer") from None
        if limit < 0:
            raise MatrixError(400, Codes.INVALID_PARAM, "'limit' must not be negative")
        limit = min(limit, MAX_LIMIT)
        filter_text = query_arg(request, "filter")
        event_filter = _parse_filter(filter_text)
        user_id, device_id = requester.user_id, requester.device_id

        # The event itself: 403 if the room cannot be read, 404 if the event is not visible.
        event = await self.reader.get_event(roomId, eventId, user_id, device_id)
        stored = await self.store.get_event(eventId)
        assert stored is not None
        position = stored.stream_ordering
        before_limit = limit // 2
        after_limit = limit - before_limit
        before = await self.reader.messages(
            roomId, user_id, device_id, stream_token(position - 1), None, True, before_limit, event_filter
        )
        after = await self.reader.messages(
            roomId, user_id, device_id, stream_token(position), None, False, after_limit, event_filter
        )
        events_before, events_after = before["chunk"], after["chunk"]

        last_id = events_after[-1]["event_id"] if events_after else eventId
        state_ids = await self.store.get_state_ids_at_event(last_id) or {}
        if _lazy_load_members(filter_text):
            senders = {e["sender"] for e in (*events_before, event, *events_after)}
            state_ids = {k: v for k, v in state_ids.items() if k[0] != "m.room.member" or k[1] in senders}
        stored_state = await self.store.get_events(state_ids.values())
        state = [stored_state[eid] for eid in state_ids.values() if eid in stored_state]
        if event_filter is not None:
            state = [e for e in state if event_filter(e)]
        return {
            "event": event,
            "events_before": events_before,
            "events_after": events_after,
            "state": await self.reader.serialize(state, user_id, device_id),
            # Exhausted in a direction: the earliest position going back, the current one going forward.
            "start": before.get("end") or stream_token(0),
            "end": after.get("end") or stream_token(self.store.stream.current),
        }

    async def timestamp_to_event(self, request: Any, roomId: str) -> dict[str, Any]:
        requester = await self.auth.get_requester(request, allow_guest=True)
        _check_room_id(roomId)
        ts_text = query_arg(request, "ts")
        if ts_text is None:
            raise MatrixError(400, Codes.MISSING_PARAM, "Missing 'ts'")
        try:
            ts = int(ts_text)
        except ValueError:
            raise MatrixError(400, Codes.INVALID_PARAM, "'ts' must be an integer (milliseconds)") from None
        if not 0 <= ts < 2**63:
            raise MatrixError(400, Codes.INVALID_PARAM, "'ts' is out of range")
        direction = query_arg(request, "dir")
        if direction is None:
            raise MatrixError(400, Codes.MISSING_PARAM, "Missing 'dir'")
        if direction not in ("f", "b"):
            raise MatrixError(400, Codes.INVALID_PARAM, "'dir' must be 'f' or 'b'")
        await self.reader.check_can_read(roomId, requester.user_id)
        found = await self.store.get_event_at_or_before_ts(roomId, ts, backwards=direction == "b")
        if found is None:
            where = "backward" if direction == "b" else "forward"
            raise MatrixError(404, Codes.NOT_FOUND, f"Unable to find event from {ts} in {where} direction")
        event_id, origin_server_ts = found
        return {"event_id": event_id, "origin_server_ts": origin_server_ts}
