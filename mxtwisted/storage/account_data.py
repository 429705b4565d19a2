"""Per-user account data (global and per room) and room tags, positioned on a stream for /sync."""

from __future__ import annotations

import json
from typing import Any, Callable, Optional

from mxtwisted.storage.database import Database, Txn
from mxtwisted.storage.streams import StreamIdGenerator

#: room_id value of global account data.
GLOBAL = ""


class AccountDataStore:
    def __init__(self, db: Database, stream: StreamIdGenerator) -> None:
        self.db = db
        self.stream = stream
        self._listeners: list[Callable[[str, int], None]] = []

    def add_listener(self, listener: Callable[[str, int], None]) -> None:
        """Called with (user_id, stream_id) after each committed change (to wake the user's /sync)."""
        self._listeners.append(listener)

    def _changed(self, user_id: str, stream_id: int) -> None:
        for listener in self._listeners:
            listener(user_id, stream_id)

    @classmethod
    async def create(cls, db: Database) -> AccountDataStore:
        return cls(db, await StreamIdGenerator.load(db, "account_data"))

    async def get(self, user_id: str, data_type: str, room_id: str = GLOBAL) -> Optional[dict]:
        async def txn_fn(txn: Txn) -> Optional[tuple]:
            return await txn.select_one(
                "SELECT content FROM account_data WHERE user_id = ? AND room_id = ? AND data_type = ?",
                (user_id, room_id, data_type),
            )

        row = await self.db.run_interaction("get_account_data", txn_fn, readonly=True)
        return json.loads(row[0]) if row else None

    async def put(self, user_id: str, data_type: str, content: dict, room_id: str = GLOBAL) -> int:
        """Store (replace) one account data entry; returns its stream position."""
        stream_id = self.stream.allocate()

        async def txn_fn(txn: Txn) -> None:
            await txn.execute(
                "INSERT INTO account_data (user_id, room_id, data_type, content, stream_id) VALUES (?, ?, ?, ?, ?)"
                " ON CONFLICT (user_id, room_id, data_type) DO UPDATE SET content = excluded.content,"
                " stream_id = excluded.stream_id",
                (user_id, room_id, data_type, json.dumps(content, ensure_ascii=False), stream_id),
            )

        try:
            await self.db.run_interaction("put_account_data", txn_fn)
        finally:
            self.stream.finish(stream_id)
        self._changed(user_id, stream_id)
        return stream_id

    async def delete_all(self, user_id: str) -> None:
        async def txn_fn(txn: Txn) -> None:
            await txn.execute("DELETE FROM account_data WHERE user_id = ?", (user_id,))
            await txn.execute("DELETE FROM room_tags WHERE user_id = ?", (user_id,))

        await self.db.run_interaction("delete_account_data", txn_fn)

    async def get_changed(self, user_id: str, since: int, upto: int) -> list[tuple[str, str, dict]]:
        """(room_id, type, content) of entries changed in (since, upto], for sync."""

        async def txn_fn(txn: Txn) -> list:
            return await txn.select(
                "SELECT room_id, data_type, content FROM account_data WHERE user_id = ? AND stream_id > ? AND stream_id <= ?",
                (user_id, since, upto),
            )

        rows = await self.db.run_interaction("get_changed_account_data", txn_fn, readonly=True)
        return [(r[0], r[1], json.loads(r[2])) for r in rows]

    # -- tags (delivered as the m.tag room account data) -------------------------
    async def get_tags(self, user_id: str, room_id: str) -> dict[str, dict]:
        async def txn_fn(txn: Txn) -> list:
            return await txn.select(
                "SELECT tag, content FROM room_tags WHERE user_id = ? AND room_id = ?", (user_id, room_id)
            )

        rows = await self.db.run_interaction("get_tags", txn_fn, readonly=True)
        return {tag: json.loads(content) for tag, content in rows}

    async def set_tag(self, user_id: str, room_id: str, tag: str, content: Optional[dict[str, Any]]) -> int:
        """Add or replace a tag (``content`` None removes it); the m.tag account data follows."""
        stream_id = self.stream.allocate()

        async def txn_fn(txn: Txn) -> None:
            if content is None:
                await txn.execute(
                    "DELETE FROM room_tags WHERE user_id = ? AND room_id = ? AND tag = ?", (user_id, room_id, tag)
                )
            else:
                await txn.execute(
                    "INSERT INTO room_tags (user_id, room_id, tag, content) VALUES (?, ?, ?, ?)"
                    " ON CONFLICT (user_id, room_id, tag) DO UPDATE SET content = excluded.content",
                    (user_id, room_id, tag, json.dumps(content, ensure_ascii=False)),
                )
            rows = await txn.select(
                "SELECT tag, content FROM room_tags WHERE user_id = ? AND room_id = ?", (user_id, room_id)
            )
            tags = {t: json.loads(c) for t, c in rows}
            await txn.execute(
                "INSERT INTO account_data (user_id, room_id, data_type, content, stream_id) VALUES (?, ?, 'm.tag', ?, ?)"
                " ON CONFLICT (user_id, room_id, data_type) DO UPDATE SET content = excluded.content,"
                " stream_id = excluded.stream_id",
                (user_id, room_id, json.dumps({"tags": tags}, ensure_ascii=False), stream_id),
            )

        try:
            await self.db.run_interaction("set_tag", txn_fn)
        finally:
            self.stream.finish(stream_id)
        self._changed(user_id, stream_id)
        return stream_id
