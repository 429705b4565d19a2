"""Where the outgoing federation queue of each destination stands (table ``federation_destinations``,
schema 0011), and the local events a destination still has to receive after a restart."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from mxtwisted.storage.database import Database, Txn
from mxtwisted.storage.events import _EVENT_COLUMNS, StoredEvent, _event_row


@dataclass(frozen=True)
class DestinationRow:
    destination: str
    #: Every local event for this destination up to this stream ordering has been delivered.
    last_sent_stream_ordering: int
    retry_last_ts: int
    retry_interval_ms: int


class FederationQueueStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def get_destinations(self) -> dict[str, DestinationRow]:
        async def txn_fn(txn: Txn) -> list:
            return await txn.select(
                "SELECT destination, last_sent_stream_ordering, retry_last_ts, retry_interval_ms"
                " FROM federation_destinations"
            )

        rows = await self.db.run_interaction("get_federation_destinations", txn_fn, readonly=True)
        return {r[0]: DestinationRow(r[0], int(r[1]), int(r[2]), int(r[3])) for r in rows}

    async def get_destination(self, destination: str) -> Optional[DestinationRow]:
        async def txn_fn(txn: Txn) -> Optional[tuple]:
            return await txn.select_one(
                "SELECT destination, last_sent_stream_ordering, retry_last_ts, retry_interval_ms"
                " FROM federation_destinations WHERE destination = ?",
                (destination,),
            )

        r = await self.db.run_interaction("get_federation_destination", txn_fn, readonly=True)
        return DestinationRow(r[0], int(r[1]), int(r[2]), int(r[3])) if r is not None else None

    async def add_destination(self, destination: str, position: int) -> None:
        """Start tracking ``destination`` at ``position`` (nothing changes if it is already tracked)."""

        async def txn_fn(txn: Txn) -> None:
            await txn.execute(
                "INSERT INTO federation_destinations (destination, last_sent_stream_ordering) VALUES (?, ?)"
                " ON CONFLICT (destination) DO NOTHING",
                (destination, position),
            )

        await self.db.run_interaction("add_federation_destination", txn_fn)

    async def set_position(self, destination: str, position: int) -> None:
        async def txn_fn(txn: Txn) -> None:
            await txn.execute(
                "INSERT INTO federation_destinations (destination, last_sent_stream_ordering) VALUES (?, ?)"
                " ON CONFLICT (destination) DO UPDATE SET last_sent_stream_ordering = excluded.last_sent_stream_ordering",
                (destination, position),
            )

        await self.db.run_interaction("set_federation_position", txn_fn)

    async def set_retry(self, destination: str, retry_last_ts: int, retry_interval_ms: int) -> None:
        async def txn_fn(txn: Txn) -> None:
            await txn.execute(
                "UPDATE federation_destinations SET retry_last_ts = ?, retry_interval_ms = ? WHERE destination = ?",
                (retry_last_ts, retry_interval_ms, destination),
            )

        await self.db.run_interaction("set_federation_retry", txn_fn)

    async def get_catch_up_events(
        self, destination: str, local_server: str, after: int, upto: int, limit: int
    ) -> tuple[list[StoredEvent], int]:
        """Local events (sent by users of ``local_server``) after stream ordering ``after`` and at most
        ``upto``, in rooms where ``destination`` has a joined member now, oldest first, at most ``limit``.
        Returns them with the stream ordering the scan reached (to move the position past events of
        rooms the destination does not share)."""
        suffix = "%:" + local_server
        member_suffix = "%:" + destination

        async def txn_fn(txn: Txn) -> list:
            return await txn.select(
                f"SELECT {_EVENT_COLUMNS} FROM events WHERE stream_ordering > ? AND stream_ordering <= ?"
                " AND sender LIKE ? AND outlier = 0 AND rejected_reason IS NULL AND room_id IN ("
                "  SELECT room_id FROM current_state_events WHERE type = 'm.room.member'"
                "  AND membership = 'join' AND state_key LIKE ?)"
                " ORDER BY stream_ordering ASC LIMIT ?",
                (after, upto, suffix, member_suffix, limit),
            )

        rows = await self.db.run_interaction("get_federation_catch_up", txn_fn, readonly=True)
        events = [_event_row(r) for r in rows]
        # LIKE is a coarse filter: keep exactly the users of these servers.
        events = [
            e for e in events if e.sender.partition(":")[2] == local_server
        ]
        reached = upto if len(rows) < limit else max(int(r[2]) for r in rows)
        return events, reached
