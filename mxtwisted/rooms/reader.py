"""Reading rooms for a client: access checks, visibility, serialisation, pagination.

Every read path goes through :class:`RoomReader`, so history visibility is
enforced in one place (:mod:`mxtwisted.rooms.visibility`).
"""

from __future__ import annotations

import re
from typing import Any, Awaitable, Callable, Optional

from twisted.internet.interfaces import IReactorTime

from mxtwisted.http.errors import Codes, MatrixError
from mxtwisted.rooms.engine import RoomEngine
from mxtwisted.rooms.serialize import client_event
from mxtwisted.rooms.visibility import WORLD_READABLE, filter_events_for_user
from mxtwisted.storage.events import MIN_STREAM_ORDERING, StoredEvent

#: ``(room_id) -> whether older events were stored``: fetches history from other servers (federation backfill).
Backfill = Callable[[str], Awaitable[bool]]
#: Backfill requests one /messages page may make before answering with what it has (and an ``end`` token).
MAX_BACKFILL_ROUNDS = 3
_STREAM_HEAD = re.compile(r"s(-?[0-9]+)")


def parse_stream_token(token: Optional[str]) -> Optional[int]:
    """``s123`` (or a sync token ``s123_...``) → 123; ``s-5`` (backfilled history) → -5. Raises 400 for
    anything else."""
    if token is None:
        return None
    head = token.split("_", 1)[0]
    match = _STREAM_HEAD.fullmatch(head)
    if match:
        return int(match.group(1))
    if head.startswith("t") and "-" in head:
        _, _, stream = head[1:].partition("-")
        if stream.isdigit():
            return int(stream)
    raise MatrixError(400, Codes.INVALID_PARAM, f"Invalid pagination token {token!r}")


def stream_token(position: int) -> str:
    return f"s{position}"


class RoomReader:
    def __init__(self, engine: RoomEngine, clock: IReactorTime) -> None:
        self.engine = engine
        self.store = engine.store
        self._clock = clock
        #: Set when federation is on (mxtwisted.service): /messages going back past the earliest event stored
        #: here asks other servers for older history.
        self.backfill: Optional[Backfill] = None

    def now_ms(self) -> int:
        return int(self._clock.seconds() * 1000)

    async def membership(self, room_id: str, user_id: str) -> Optional[str]:
        room = await self.engine.get_room_cache(room_id)
        state = await self.engine.get_state_events(room, [("m.room.member", user_id)])
        ev = state.get(("m.room.member", user_id))
        return ev.membership if ev else None

    async def is_world_readable(self, room_id: str) -> bool:
        room = await self.engine.get_room_cache(room_id)
        state = await self.engine.get_state_events(room, [("m.room.history_visibility", "")])
        ev = state.get(("m.room.history_visibility", ""))
        return bool(ev and ev.content.get("history_visibility") == WORLD_READABLE)

    async def _reading_membership(self, room_id: str, user_id: str) -> Optional[str]:
        """The membership that decides what a user may read: a room they left and forgot reads as never joined
        (spec: ``POST /rooms/{roomId}/forget``)."""
        membership = await self.membership(room_id, user_id)
        if membership in ("leave", "ban") and await self.store.is_forgotten(user_id, room_id):
            return None
        return membership

    async def check_can_read(self, room_id: str, user_id: str) -> bool:
        """403 unless the user is, was, or may peek (world_readable). Returns whether they are joined now."""
        membership = await self._reading_membership(room_id, user_id)
        if membership == "join":
            return True
        if membership in ("leave", "ban", "invite", "knock"):
            return False
        if await self.is_world_readable(room_id):
            return False
        raise MatrixError(403, Codes.FORBIDDEN, "You are not a member of this room")

    async def serialize(self, events: list[StoredEvent], user_id: Optional[str], device_id: Optional[str]) -> list[dict[str, Any]]:
        """Client events with unsigned data (age, transaction_id, prev_content, redacted_because)."""
        now = self.now_ms()
        prev_ids = [e.replaces_state for e in events if e.replaces_state]
        redaction_ids = [e.redacted_by for e in events if e.redacted_by]
        related = await self.store.get_events(prev_ids + redaction_ids)
        own = [e.event_id for e in events if user_id is not None and e.sender == user_id]
        txns = await self.store.get_txn_ids(own) if own else {}
        out = []
        for e in events:
            txn = txns.get(e.event_id)
            transaction_id = txn[2] if txn and txn[1] == device_id else None
            prev = related.get(e.replaces_state) if e.replaces_state else None
            redacted_because = None
            if e.redacted_by and e.redacted_by in related:
                r = related[e.redacted_by]
                redacted_because = client_event(r.json, r.event_id, r.room_id, now)
            out.append(
                client_event(
                    e.json, e.event_id, e.room_id, now,
                    transaction_id=transaction_id,
                    prev_content=(prev.json.get("content") if prev else None),
                    prev_sender=(prev.sender if prev else None),
                    replaces_state=e.replaces_state,
                    redacted_because=redacted_because,
                )
            )
        return out

    async def get_event(self, room_id: str, event_id: str, user_id: str, device_id: Optional[str]) -> dict[str, Any]:
        """``GET /rooms/{roomId}/event/{eventId}``: 404 unless the event exists in the room and is visible."""
        joined = await self.check_can_read(room_id, user_id)
        stored = await self.store.get_event(event_id)
        if stored is None or stored.room_id != room_id or stored.outlier or stored.rejected_reason:
            raise MatrixError(404, Codes.NOT_FOUND, "Event not found")
        if not await filter_events_for_user(self.store, user_id, [stored], joined):
            raise MatrixError(404, Codes.NOT_FOUND, "Event not found")
        return (await self.serialize([stored], user_id, device_id))[0]

    async def visible_state_ids(self, room_id: str, user_id: str) -> dict[tuple[str, str], str]:
        """Current state for members; the state when they left for former members; current for world_readable.
        A room joined with partial state is read once its full state is here (its members are missing before)."""
        await self.engine.wait_full_state(room_id)
        membership = await self._reading_membership(room_id, user_id)
        room = await self.engine.get_room_cache(room_id)
        if membership == "join":
            return dict(room.state)
        if membership in ("leave", "ban"):
            member_event_id = room.state.get(("m.room.member", user_id))
            if member_event_id:
                state = await self.store.get_state_ids_at_event(member_event_id)
                if state is not None:
                    return state
        if await self.is_world_readable(room_id):
            return dict(room.state)
        raise MatrixError(403, Codes.FORBIDDEN, "You are not a member of this room")

    async def get_state(self, room_id: str, user_id: str) -> list[dict[str, Any]]:
        state_ids = await self.visible_state_ids(room_id, user_id)
        events = await self.store.get_events(state_ids.values())
        return await self.serialize([events[eid] for eid in state_ids.values() if eid in events], user_id, None)

    async def get_state_event(self, room_id: str, user_id: str, event_type: str, state_key: str) -> StoredEvent:
        state_ids = await self.visible_state_ids(room_id, user_id)
        event_id = state_ids.get((event_type, state_key))
        stored = await self.store.get_event(event_id) if event_id else None
        if stored is None:
            raise MatrixError(404, Codes.NOT_FOUND, "Event not found")
        return stored

    async def messages(
        self,
        room_id: str,
        user_id: str,
        device_id: Optional[str],
        from_token: Optional[str],
        to_token: Optional[str],
        backwards: bool,
        limit: int,
        event_filter: Any = None,
    ) -> dict[str, Any]:
        """``GET /rooms/{roomId}/messages`` (spec v1.3+: ``from`` optional)."""
        joined = await self.check_can_read(room_id, user_id)
        start = parse_stream_token(from_token)
        end = parse_stream_token(to_token)
        if start is None:
            start = self.store.stream.current if backwards else MIN_STREAM_ORDERING
        chunk: list[StoredEvent] = []
        position = start
        exhausted = False
        batch_size = max(limit * 2, 20)
        backfill_rounds = 0
        # Fetch in batches until `limit` visible events are found (filtered-out events do not count).
        while len(chunk) < limit:
            batch = await self.store.get_room_events(room_id, position, end, backwards, batch_size)
            candidates = [e for e in batch if event_filter is None or event_filter(e)]
            visible = {e.event_id for e in await filter_events_for_user(self.store, user_id, candidates, joined)}
            for e in batch:
                position = e.stream_ordering - 1 if backwards else e.stream_ordering
                if e.event_id in visible:
                    chunk.append(e)
                    if len(chunk) >= limit:
                        break
            if len(chunk) < limit and len(batch) < batch_size:
                # Everything stored here is read: older history may be on other servers (stored below it).
                if backwards and end is None and self.backfill is not None:
                    if backfill_rounds >= MAX_BACKFILL_ROUNDS:
                        break
                    backfill_rounds += 1
                    if await self.backfill(room_id):
                        continue
                exhausted = True
                break
        result: dict[str, Any] = {
            "chunk": await self.serialize(chunk, user_id, device_id),
            "start": from_token or stream_token(start),
        }
        if not exhausted:
            result["end"] = stream_token(position)
        return result
