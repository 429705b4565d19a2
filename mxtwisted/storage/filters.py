"""User filters (Client-Server API, "Filtering"): ``POST``/``GET /user/{userId}/filter``.

Filter IDs are a per-user counter (``"0"``, ``"1"``...). Uploading a filter
identical to one the user already has (same canonical JSON) returns that
filter's ID instead of storing a copy, so clients that upload their filter at
every start do not grow the table.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Optional

from mxtwisted.storage.database import Database, IntegrityError, Txn


def _canonical(filter_json: dict[str, Any]) -> str:
    return json.dumps(filter_json, ensure_ascii=False, sort_keys=True, separators=(",", ":"))


class FilterStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def add_filter(self, user_id: str, filter_json: dict[str, Any]) -> str:
        """Store a (validated) filter; returns its ID."""
        text = _canonical(filter_json)
        digest = hashlib.sha256(text.encode("utf-8")).hexdigest()

        async def txn_fn(txn: Txn) -> int:
            row = await txn.select_one(
                "SELECT filter_id FROM user_filters WHERE user_id = ? AND filter_hash = ?", (user_id, digest)
            )
            if row:
                return int(row[0])
            row = await txn.select_one("SELECT MAX(filter_id) FROM user_filters WHERE user_id = ?", (user_id,))
            filter_id = int(row[0]) + 1 if row and row[0] is not None else 0
            await txn.execute(
                "INSERT INTO user_filters (user_id, filter_id, filter_json, filter_hash) VALUES (?, ?, ?, ?)",
                (user_id, filter_id, text, digest),
            )
            return filter_id

        # Two concurrent uploads by one user can pick the same ID (PostgreSQL): the loser retries.
        for attempt in range(5):
            try:
                return str(await self.db.run_interaction("add_filter", txn_fn))
            except IntegrityError:
                if attempt == 4:
                    raise
        raise AssertionError("unreachable")

    async def get_filter(self, user_id: str, filter_id: str) -> Optional[dict[str, Any]]:
        """The filter as uploaded, or None (also for IDs that are not ours, like ``abc``)."""
        if not filter_id.isascii() or not filter_id.isdigit() or len(filter_id) > 18:
            return None

        async def txn_fn(txn: Txn) -> Optional[tuple]:
            return await txn.select_one(
                "SELECT filter_json FROM user_filters WHERE user_id = ? AND filter_id = ?", (user_id, int(filter_id))
            )

        row = await self.db.run_interaction("get_filter", txn_fn, readonly=True)
        return json.loads(row[0]) if row else None

    async def delete_user_filters(self, user_id: str) -> None:
        """Remove every filter of a user (account deactivation)."""

        async def txn_fn(txn: Txn) -> None:
            await txn.execute("DELETE FROM user_filters WHERE user_id = ?", (user_id,))

        await self.db.run_interaction("delete_user_filters", txn_fn)
