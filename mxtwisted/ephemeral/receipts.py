"""Receipts and the fully read marker, and the ``receipts`` stream for /sync.

Spec: Client-Server API, "Receipts" (``POST
/rooms/{roomId}/receipt/{receiptType}/{eventId}``, the ``m.receipt``
ephemeral event) and "Read and unread markers" (``POST
/rooms/{roomId}/read_markers``, the ``m.fully_read`` room account data).

* A receipt is for an event of a room the user is joined to, that the user
  can see (history visibility); otherwise ``403`` (not joined) or ``404``
  (no such event in the room, or not visible).
* Receipts are "up to" markers and only move forward: a receipt for an
  event at or before the current one of the same (type, thread) is accepted
  and changes nothing, as Synapse does.
* ``m.read.private`` receipts are only ever given to their own user.
* Threaded receipts carry ``thread_id``: ``main`` for the main timeline, or
  the thread root's event ID; the event must belong to that thread (``400
  M_INVALID_PARAM`` otherwise). ``m.fully_read`` takes no thread.
* The fully read marker is the ``m.fully_read`` room account data
  ``{"event_id": ...}``; it also only moves forward.
* Receipts of remote users arrive over federation
  (:meth:`ReceiptsHandler.store_remote_receipt`, checked by
  :mod:`mxtwisted.federation.edus`) and are stored and delivered like local ones;
  listeners (:meth:`ReceiptsHandler.add_listener`) hear of every receipt that moved.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Optional

from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from mxtwisted.ephemeral import HandlerStreamSource, Updates
from mxtwisted.http.errors import Codes, MatrixError
from mxtwisted.notifier import Notifier
from mxtwisted.rooms.visibility import filter_events_for_user
from mxtwisted.storage.account_data import AccountDataStore
from mxtwisted.storage.events import StoredEvent
from mxtwisted.storage.receipts import ReceiptStore

log = Logger()

#: ``listener(room_id, receipt_type, user_id, event_id, thread_id, data)``: a receipt moved forward
#: (``data`` is ``{"ts": ...}``, without the thread).
ReceiptListener = Callable[[str, str, str, str, Optional[str], dict[str, Any]], None]

#: Stream name (notifier and sync tokens).
RECEIPTS_STREAM = "receipts"
#: The account data stream, advanced by the fully read marker.
ACCOUNT_DATA_STREAM = "account_data"

READ = "m.read"
READ_PRIVATE = "m.read.private"
FULLY_READ = "m.fully_read"
#: Receipt types that are stored as receipts and delivered in ``m.receipt``.
RECEIPT_TYPES = (READ, READ_PRIVATE)
#: Types accepted by ``/receipt/{receiptType}/...`` (``m.fully_read`` sets the marker).
RECEIPT_ENDPOINT_TYPES = (READ, READ_PRIVATE, FULLY_READ)
#: Keys of a ``/read_markers`` body, in the order they are applied.
READ_MARKER_TYPES = (FULLY_READ, READ, READ_PRIVATE)

#: Thread ID of the main timeline.
MAIN_TIMELINE = "main"
#: Relations followed to find an event's thread (the spec recommends at most 3 hops).
MAX_RELATION_HOPS = 3


class ReceiptsHandler:
    """Receipts and read markers of local users.

    ``rooms`` is the room engine (room caches for membership, its event store).
    """

    def __init__(
        self,
        clock: IReactorTime,
        notifier: Notifier,
        rooms: Any,
        store: ReceiptStore,
        account_data: AccountDataStore,
    ) -> None:
        self._clock = clock
        self._notifier = notifier
        self._rooms = rooms
        self._events = rooms.store
        self.store = store
        self._account_data = account_data
        self._marker_locks: dict[tuple[str, str], defer.DeferredLock] = {}
        self._listeners: list[ReceiptListener] = []
        self.source = HandlerStreamSource(RECEIPTS_STREAM, self)

    def add_listener(self, listener: ReceiptListener) -> None:
        """Hear of every stored receipt that moved forward, of local and remote users alike (federation
        sends the public ones of local users)."""
        self._listeners.append(listener)

    def now_ms(self) -> int:
        return int(self._clock.seconds() * 1000)

    # -- checks ------------------------------------------------------------------------
    async def _joined_room(self, user_id: str, room_id: str) -> Any:
        room = await self._rooms.get_room_cache(room_id)
        if user_id not in room.members_joined_local:
            raise MatrixError(403, Codes.FORBIDDEN, "You are not in this room")
        return room

    async def check_event(self, user_id: str, room_id: str, event_id: str) -> StoredEvent:
        """The event ``user_id`` acknowledges: 404 unless it is an event of ``room_id`` they can see."""
        stored = await self._events.get_event(event_id)
        if stored is None or stored.room_id != room_id or stored.outlier or stored.rejected_reason:
            raise MatrixError(404, Codes.NOT_FOUND, f"Event {event_id} not found in room {room_id}")
        if not await filter_events_for_user(self._events, user_id, [stored], True):
            raise MatrixError(404, Codes.NOT_FOUND, f"Event {event_id} not found in room {room_id}")
        return stored

    async def thread_of(self, event: StoredEvent) -> tuple[str, set[str]]:
        """(the event's thread: ``main`` or a thread root, the events its relations pass through).

        An event is in a thread if it has an ``m.thread`` relation, or relates (by any
        relation, up to :data:`MAX_RELATION_HOPS`) to an event that has one.
        """
        chain = {event.event_id}
        current: Optional[StoredEvent] = event
        for _ in range(MAX_RELATION_HOPS):
            relates_to = (current.json.get("content") or {}).get("m.relates_to") if current else None
            if not isinstance(relates_to, dict) or not isinstance(relates_to.get("event_id"), str):
                break
            parent_id = relates_to["event_id"]
            if relates_to.get("rel_type") == "m.thread":
                return parent_id, chain
            chain.add(parent_id)
            current = await self._events.get_event(parent_id)
        return MAIN_TIMELINE, chain

    async def check_thread(self, event: StoredEvent, thread_id: str) -> None:
        """400 M_INVALID_PARAM unless ``event`` belongs to ``thread_id``.

        The main timeline holds the events not in a thread (thread roots included); thread
        ``$A`` holds its root ``$A``, the events in it, and the events related to either.
        """
        thread, chain = await self.thread_of(event)
        if thread == thread_id or (thread_id != MAIN_TIMELINE and thread_id in chain):
            return
        raise MatrixError(
            400, Codes.INVALID_PARAM, f"Event {event.event_id} is not related to thread {thread_id}"
        )

    # -- receipts ------------------------------------------------------------------------
    async def send_receipt(
        self, user_id: str, room_id: str, receipt_type: str, event_id: str, thread_id: Optional[str] = None
    ) -> None:
        """``POST /rooms/{roomId}/receipt/{receiptType}/{eventId}`` (``m.fully_read`` sets the marker)."""
        if receipt_type not in RECEIPT_ENDPOINT_TYPES:
            raise MatrixError(
                400, Codes.INVALID_PARAM, f"Receipt type must be one of {', '.join(RECEIPT_ENDPOINT_TYPES)}"
            )
        if thread_id is not None and receipt_type == FULLY_READ:
            raise MatrixError(400, Codes.INVALID_PARAM, f"thread_id is not compatible with {FULLY_READ}")
        await self._joined_room(user_id, room_id)
        event = await self.check_event(user_id, room_id, event_id)
        if thread_id is not None:
            await self.check_thread(event, thread_id)
        if receipt_type == FULLY_READ:
            await self._set_fully_read(user_id, room_id, event)
        else:
            await self._store_receipt(user_id, room_id, receipt_type, event, thread_id)

    async def set_read_markers(self, user_id: str, room_id: str, markers: dict[str, str]) -> None:
        """``POST /rooms/{roomId}/read_markers``: ``markers`` maps ``m.fully_read`` / ``m.read`` /
        ``m.read.private`` to event IDs. Every event is checked before anything changes."""
        await self._joined_room(user_id, room_id)
        events = {}
        for marker_type in READ_MARKER_TYPES:
            if marker_type in markers:
                events[marker_type] = await self.check_event(user_id, room_id, markers[marker_type])
        for marker_type, event in events.items():
            if marker_type == FULLY_READ:
                await self._set_fully_read(user_id, room_id, event)
            else:
                await self._store_receipt(user_id, room_id, marker_type, event, None)

    async def store_remote_receipt(
        self, user_id: str, room_id: str, receipt_type: str, event_ids: list[str], thread_id: Optional[str], ts: int
    ) -> bool:
        """A receipt of a remote user (sender and membership checked by the caller): stored for the latest
        of ``event_ids`` known in the room. False when none is (an event we do not have yet: receipts are
        hints, not worth fetching events for) or when it does not move the receipt forward."""
        known = [
            e for e in (await self._events.get_events(event_ids)).values()
            if e.room_id == room_id and not e.outlier and not e.rejected_reason
        ]
        if not known:
            return False
        latest = max(known, key=lambda e: e.stream_ordering)
        return await self._store_receipt(user_id, room_id, receipt_type, latest, thread_id, {"ts": ts})

    async def _store_receipt(
        self,
        user_id: str,
        room_id: str,
        receipt_type: str,
        event: StoredEvent,
        thread_id: Optional[str],
        data: Optional[dict[str, Any]] = None,
    ) -> bool:
        """Store the receipt unless it is not ahead of the current one; True when stored."""
        data = {"ts": self.now_ms()} if data is None else data
        position = await self.store.insert_receipt(
            room_id, receipt_type, user_id, thread_id, event.event_id, event.stream_ordering, data
        )
        if position is None:
            return False  # not ahead of the current receipt
        for listener in self._listeners:
            try:
                listener(room_id, receipt_type, user_id, event.event_id, thread_id, data)
            except Exception:
                log.failure("Receipt listener failed")
        if receipt_type == READ_PRIVATE:
            users: set[str] = {user_id}
        else:
            room = await self._rooms.get_room_cache(room_id)
            users = set(room.members_joined_local) | {user_id}
        self._notifier.notify_users(RECEIPTS_STREAM, self.store.stream.current, users)
        return True

    # -- the fully read marker ------------------------------------------------------------
    async def _set_fully_read(self, user_id: str, room_id: str, event: StoredEvent) -> None:
        """Move the ``m.fully_read`` marker to ``event`` if that is ahead of where it is."""
        key = (user_id, room_id)
        lock = self._marker_locks.get(key)
        if lock is None:
            lock = self._marker_locks[key] = defer.DeferredLock()
        await lock.acquire()
        try:
            current = await self._account_data.get(user_id, FULLY_READ, room_id)
            current_id = current.get("event_id") if isinstance(current, dict) else None
            if isinstance(current_id, str):
                if current_id == event.event_id:
                    return
                current_event = await self._events.get_event(current_id)
                if current_event is not None and current_event.stream_ordering >= event.stream_ordering:
                    return
            await self._account_data.put(user_id, FULLY_READ, {"event_id": event.event_id}, room_id)
            self._notifier.notify_users(ACCOUNT_DATA_STREAM, self._account_data.stream.current, [user_id])
        finally:
            lock.release()
            if not lock.locked and not lock.waiting:
                self._marker_locks.pop(key, None)

    # -- the stream ----------------------------------------------------------------------------
    def current_position(self) -> int:
        return self.store.stream.current

    async def get_updates(self, user_id: str, room_ids: set[str], from_pos: int, to_pos: int) -> Updates:
        per_room: dict[str, list[dict]] = {}
        if from_pos >= to_pos or not room_ids:
            return per_room, []
        rooms = self.store.rooms_changed_since(room_ids, from_pos)
        contents: dict[str, dict[str, dict[str, dict[str, dict]]]] = {}
        for receipt in await self.store.get_receipts_for_rooms(rooms, from_pos, to_pos):
            if receipt.receipt_type == READ_PRIVATE and receipt.user_id != user_id:
                continue  # spec: never sent to any other user than its own
            data = dict(receipt.data)
            if receipt.thread_id is not None:
                data["thread_id"] = receipt.thread_id
            by_event = contents.setdefault(receipt.room_id, {})
            by_event.setdefault(receipt.event_id, {}).setdefault(receipt.receipt_type, {})[receipt.user_id] = data
        for room_id, content in contents.items():
            per_room[room_id] = [{"type": "m.receipt", "content": content}]
        return per_room, []
