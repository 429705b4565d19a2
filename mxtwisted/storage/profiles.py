"""Profile fields: ``displayname``, ``avatar_url`` and custom fields (spec v1.16), one row each, JSON values."""

from __future__ import annotations

import json
from typing import Any, Optional

from mxtwisted.storage.database import Database, Txn


class ProfileStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def get_profile(self, user_id: str) -> dict[str, Any]:
        async def txn_fn(txn: Txn) -> list:
            return await txn.select("SELECT field_name, value FROM profile_fields WHERE user_id = ?", (user_id,))

        rows = await self.db.run_interaction("get_profile", txn_fn, readonly=True)
        return {name: json.loads(value) for name, value in rows}

    async def get_field(self, user_id: str, field_name: str) -> Optional[Any]:
        async def txn_fn(txn: Txn) -> Optional[tuple]:
            return await txn.select_one(
                "SELECT value FROM profile_fields WHERE user_id = ? AND field_name = ?", (user_id, field_name)
            )

        row = await self.db.run_interaction("get_profile_field", txn_fn, readonly=True)
        return json.loads(row[0]) if row else None

    async def set_field(self, user_id: str, field_name: str, value: Any) -> None:
        """Set a field; ``None`` deletes it."""

        async def txn_fn(txn: Txn) -> None:
            if value is None:
                await txn.execute(
                    "DELETE FROM profile_fields WHERE user_id = ? AND field_name = ?", (user_id, field_name)
                )
            else:
                await txn.execute(
                    "INSERT INTO profile_fields (user_id, field_name, value) VALUES (?, ?, ?)"
                    " ON CONFLICT (user_id, field_name) DO UPDATE SET value = excluded.value",
                    (user_id, field_name, json.dumps(value, ensure_ascii=False)),
                )

        await self.db.run_interaction("set_profile_field", txn_fn)

    async def delete_profile(self, user_id: str) -> None:
        async def txn_fn(txn: Txn) -> None:
            await txn.execute("DELETE FROM profile_fields WHERE user_id = ?", (user_id,))

        await self.db.run_interaction("delete_profile", txn_fn)
