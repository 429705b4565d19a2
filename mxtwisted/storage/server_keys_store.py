"""Other servers' signing keys, as fetched by the keyring (table ``server_keys``, schema 0010)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Iterable, Optional

from mxtwisted.storage.database import Database, Txn


@dataclass(frozen=True)
class StoredServerKey:
    server_name: str
    key_id: str
    #: Unpadded base64 ed25519 public key.
    verify_key: str
    #: Usable until (ms); for a key from ``old_verify_keys``, its ``expired_ts``.
    valid_until_ts: int
    fetched_ts: int
    #: The signed key response that carried this key, as received.
    key_json: dict[str, Any]


class ServerKeyStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def store_keys(self, keys: Iterable[StoredServerKey]) -> None:
        """Insert or replace keys (one transaction). A key already known with a later validity keeps it."""
        rows = [
            (k.server_name, k.key_id, k.verify_key, k.valid_until_ts, k.fetched_ts, json.dumps(k.key_json, separators=(",", ":")))
            for k in keys
        ]
        if not rows:
            return

        async def txn_fn(txn: Txn) -> None:
            await txn.executemany(
                "INSERT INTO server_keys (server_name, key_id, verify_key, valid_until_ts, fetched_ts, key_json)"
                " VALUES (?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (server_name, key_id) DO UPDATE SET verify_key = excluded.verify_key,"
                " valid_until_ts = excluded.valid_until_ts, fetched_ts = excluded.fetched_ts,"
                " key_json = excluded.key_json"
                " WHERE excluded.valid_until_ts >= server_keys.valid_until_ts",
                rows,
            )

        await self.db.run_interaction("store_server_keys", txn_fn)

    async def get_keys(self, server_name: str, key_ids: Optional[Iterable[str]] = None) -> dict[str, StoredServerKey]:
        """Stored keys of ``server_name`` by key ID (all of them when ``key_ids`` is None)."""
        wanted = None if key_ids is None else list(key_ids)

        async def txn_fn(txn: Txn) -> list[tuple]:
            if wanted is None:
                return await txn.select(
                    "SELECT key_id, verify_key, valid_until_ts, fetched_ts, key_json FROM server_keys WHERE server_name = ?",
                    (server_name,),
                )
            result = []
            for key_id in wanted:
                row = await txn.select_one(
                    "SELECT key_id, verify_key, valid_until_ts, fetched_ts, key_json FROM server_keys"
                    " WHERE server_name = ? AND key_id = ?",
                    (server_name, key_id),
                )
                if row:
                    result.append(row)
            return result

        rows = await self.db.run_interaction("get_server_keys", txn_fn, readonly=True)
        return {
            row[0]: StoredServerKey(server_name, row[0], row[1], int(row[2]), int(row[3]), json.loads(row[4]))
            for row in rows
        }
