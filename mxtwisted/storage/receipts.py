"""Receipts (``m.read``, ``m.read.private``), positioned on the ``receipts`` stream for /sync.

Spec: Client-Server API, "Receipts". One row per (room, receipt type, user,
thread): the latest receipt, since receipts are "up to" markers and clients
replace older ones. A receipt only moves forward: storing one for an event
at or before the event of the current receipt changes nothing and makes no
new position for sync to deliver (as Synapse does), so re-sending a receipt is cheap.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Iterable, Optional

from mxtwisted.storage.database import Database, Txn
from mxtwisted.storage.streams import StreamIdGenerator

#: thread_id column value of an unthreaded receipt.
UNTHREADED = ""

#: Rooms per ``IN (...)`` list, well below SQLite's bound-parameter limit.
_CHUNK = 500


@dataclass(frozen=True)
class Receipt:
    room_id: str
    receipt_type: str
    user_id: str
    #: None for an unthreaded receipt, else ``main`` or a thread root's event ID.
    thread_id: Optional[str]
    event_id: str
    #: ``{"ts": ...}`` (the receipt's data, without ``thread_id``).
    data: dict[str, Any]
    stream_id: int


def _receipt(row: tuple) -> Receipt:
    room_id, receipt_type, user_id, thread_id, event_id, data, stream_id = row
    return Receipt(room_id, receipt_type, user_id, thread_id or None, event_id, json.loads(data), int(stream_id))


_COLUMNS = "room_id, receipt_type, user_id, thread_id, event_id, data, stream_id"


class ReceiptStore:
    def __init__(self, db: Database, stream: StreamIdGenerator) -> None:
        self.db = db
        self.stream = stream
        #: room_id → the last stream position allocated to a receipt there, since this process started;
        #: lets an incremental sync skip the database for rooms without new receipts.
        self._room_changes: dict[str, int] = {}
        self._changes_known_from = stream.current

    @classmethod
    async def create(cls, db: Database) -> ReceiptStore:
        return cls(db, await StreamIdGenerator.load(db, "receipts"))

    async def insert_receipt(
        self,
        room_id: str,
        receipt_type: str,
        user_id: str,
        thread_id: Optional[str],
        event_id: str,
        event_stream_ordering: int,
        data: dict[str, Any],
    ) -> Optional[int]:
        """Store a receipt; its stream position, or None if the current one is for this event or a later one."""
        stream_id = self.stream.allocate()
        # Recorded before the position can become current, so a reader never misses it.
        self._room_changes[room_id] = stream_id

        async def txn_fn(txn: Txn) -> int:
            return await txn.execute(
                f"INSERT INTO receipts ({_COLUMNS}, event_stream_ordering) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (room_id, receipt_type, user_id, thread_id) DO UPDATE SET"
                " event_id = excluded.event_id, event_stream_ordering = excluded.event_stream_ordering,"
                " data = excluded.data, stream_id = excluded.stream_id"
                " WHERE receipts.event_stream_ordering < excluded.event_stream_ordering",
                (
                    room_id,
                    receipt_type,
                    user_id,
                    thread_id or UNTHREADED,
                    event_id,
                    json.dumps(data, ensure_ascii=False),
                    stream_id,
                    event_stream_ordering,
                ),
            )

        try:
            changed = await self.db.run_interaction("insert_receipt", txn_fn)
        finally:
            self.stream.finish(stream_id)
        return stream_id if changed else None

    def rooms_changed_since(self, room_ids: Iterable[str], since: int) -> set[str]:
        """The rooms among ``room_ids`` that may have receipts after position ``since`` (a superset)."""
        if since < self._changes_known_from:
            return set(room_ids)
        return {room_id for room_id in room_ids if self._room_changes.get(room_id, 0) > since}

    async def get_receipt(
        self, room_id: str, receipt_type: str, user_id: str, thread_id: Optional[str] = None
    ) -> Optional[Receipt]:
        async def txn_fn(txn: Txn) -> Optional[tuple]:
            return await txn.select_one(
                f"SELECT {_COLUMNS} FROM receipts WHERE room_id = ? AND receipt_type = ? AND user_id = ?"
                " AND thread_id = ?",
                (room_id, receipt_type, user_id, thread_id or UNTHREADED),
            )

        row = await self.db.run_interaction("get_receipt", txn_fn, readonly=True)
        return _receipt(row) if row else None

    async def get_receipts_for_rooms(self, room_ids: Iterable[str], since: int, upto: int) -> list[Receipt]:
        """Receipts of the rooms that changed in (since, upto], in stream order (every receipt when since is 0)."""
        rooms = sorted(set(room_ids))
        if not rooms or upto <= since:
            return []

        async def txn_fn(txn: Txn) -> list:
            return await txn.select_in(
                f"SELECT {_COLUMNS} FROM receipts WHERE room_id IN ({{in}}) AND stream_id > ? AND stream_id <= ?",
                rooms, after=(since, upto), chunk=_CHUNK,
            )

        rows = await self.db.run_interaction("get_receipts_for_rooms", txn_fn, readonly=True)
        return sorted((_receipt(r) for r in rows), key=lambda r: r.stream_id)

    async def get_receipts_for_user(self, user_id: str, room_id: str) -> list[Receipt]:
        """Every receipt of one user in one room (for read-up-to marks: notification counts, unread state)."""

        async def txn_fn(txn: Txn) -> list:
            return await txn.select(
                f"SELECT {_COLUMNS} FROM receipts WHERE user_id = ? AND room_id = ?", (user_id, room_id)
            )

        rows = await self.db.run_interaction("get_receipts_for_user", txn_fn, readonly=True)
        return [_receipt(r) for r in rows]
