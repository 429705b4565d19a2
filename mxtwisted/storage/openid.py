"""OpenID tokens (table ``openid_tokens``, schema 0012).

Like access tokens (:mod:`mxtwisted.storage.accounts`), only a SHA-256 digest
of each token is kept: a leaked database yields no usable token.
"""

from __future__ import annotations

from typing import Optional

from mxtwisted.storage.accounts import token_hash
from mxtwisted.storage.database import Database, Txn


class OpenIdTokenStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def add_token(self, token: str, user_id: str, valid_until_ts: int, now_ms: int) -> None:
        """Store a new token; tokens that expired by ``now_ms`` are deleted in the same transaction, so the
        table never grows beyond the tokens of the last hour."""

        async def txn_fn(txn: Txn) -> None:
            await txn.execute("DELETE FROM openid_tokens WHERE valid_until_ts <= ?", (now_ms,))
            await txn.execute(
                "INSERT INTO openid_tokens (token_hash, user_id, valid_until_ts) VALUES (?, ?, ?)",
                (token_hash(token), user_id, valid_until_ts),
            )

        await self.db.run_interaction("add_openid_token", txn_fn)

    async def get_user_for_token(self, token: str, now_ms: int) -> Optional[str]:
        """The user a token was issued to, or None when it is unknown or expired at ``now_ms``."""

        async def txn_fn(txn: Txn) -> Optional[tuple]:
            return await txn.select_one(
                "SELECT user_id FROM openid_tokens WHERE token_hash = ? AND valid_until_ts > ?",
                (token_hash(token), now_ms),
            )

        row = await self.db.run_interaction("get_openid_token", txn_fn, readonly=True)
        return row[0] if row is not None else None

    async def delete_user_tokens(self, user_id: str) -> None:
        """Forget every token of ``user_id`` (account deactivation)."""

        async def txn_fn(txn: Txn) -> None:
            await txn.execute("DELETE FROM openid_tokens WHERE user_id = ?", (user_id,))

        await self.db.run_interaction("delete_user_openid_tokens", txn_fn)
