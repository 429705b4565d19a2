"""Users, devices and tokens.

Tokens are stored only as SHA-256 digests (:func:`token_hash`): a leaked
database does not leak working tokens, and a high-entropy token needs no slow
hash. Looking a token up is the hot path of every client request, so
:class:`TokenStore` keeps a bounded cache of recent lookups, invalidated after
the commit of anything that deletes or changes a token.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass
from typing import Iterable, Optional

from mxtwisted.storage.database import Database, IntegrityError, Txn


def token_hash(token: str) -> str:
    """The stored form of a token."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


class UserExistsError(Exception):
    """The user ID is already registered."""


@dataclass(frozen=True)
class User:
    user_id: str
    password_hash: Optional[str]
    created_ts: int
    is_guest: bool
    admin: bool
    deactivated: bool
    user_type: Optional[str]


_USER_COLUMNS = "user_id, password_hash, created_ts, is_guest, admin, deactivated, user_type"


def _user(row: tuple) -> User:
    return User(row[0], row[1], row[2], bool(row[3]), bool(row[4]), bool(row[5]), row[6])


class UserStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def create_user(
        self,
        user_id: str,
        password_hash: Optional[str],
        created_ts: int,
        is_guest: bool = False,
        admin: bool = False,
        user_type: Optional[str] = None,
    ) -> None:
        """Insert a user; raises :class:`UserExistsError` if the ID is taken (case-insensitively)."""

        async def txn_fn(txn: Txn) -> bool:
            taken = await txn.select_one("SELECT 1 FROM users WHERE lower(user_id) = lower(?)", (user_id,))
            if taken:
                return False
            await txn.execute(
                "INSERT INTO users (user_id, password_hash, created_ts, is_guest, admin, user_type) VALUES (?, ?, ?, ?, ?, ?)",
                (user_id, password_hash, created_ts, int(is_guest), int(admin), user_type),
            )
            return True

        try:
            created = await self.db.run_interaction("create_user", txn_fn)
        except IntegrityError:
            created = False
        if not created:
            raise UserExistsError(user_id)

    async def get_user(self, user_id: str) -> Optional[User]:
        async def txn_fn(txn: Txn) -> Optional[tuple]:
            return await txn.select_one(f"SELECT {_USER_COLUMNS} FROM users WHERE user_id = ?", (user_id,))

        row = await self.db.run_interaction("get_user", txn_fn, readonly=True)
        return _user(row) if row else None

    async def find_user_case_insensitive(self, user_id: str) -> list[str]:
        """User IDs equal to ``user_id`` ignoring case (for login with a differently-cased name)."""

        async def txn_fn(txn: Txn) -> list:
            return await txn.select("SELECT user_id FROM users WHERE lower(user_id) = lower(?)", (user_id,))

        return [r[0] for r in await self.db.run_interaction("find_user", txn_fn, readonly=True)]

    async def set_password_hash(self, user_id: str, password_hash: Optional[str]) -> None:
        async def txn_fn(txn: Txn) -> None:
            await txn.execute("UPDATE users SET password_hash = ? WHERE user_id = ?", (password_hash, user_id))

        await self.db.run_interaction("set_password_hash", txn_fn)

    async def set_admin(self, user_id: str, admin: bool) -> None:
        async def txn_fn(txn: Txn) -> None:
            await txn.execute("UPDATE users SET admin = ? WHERE user_id = ?", (int(admin), user_id))

        await self.db.run_interaction("set_admin", txn_fn)

    async def count_users(self) -> int:
        async def txn_fn(txn: Txn) -> int:
            row = await txn.select_one("SELECT COUNT(*) FROM users")
            return int(row[0]) if row else 0

        return await self.db.run_interaction("count_users", txn_fn, readonly=True)


@dataclass(frozen=True)
class Device:
    user_id: str
    device_id: str
    display_name: Optional[str]
    created_ts: int
    last_seen_ts: Optional[int]
    last_seen_ip: Optional[str]
    last_seen_user_agent: Optional[str]


_DEVICE_COLUMNS = "user_id, device_id, display_name, created_ts, last_seen_ts, last_seen_ip, last_seen_user_agent"


class DeviceStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def ensure_device(self, user_id: str, device_id: str, display_name: Optional[str], now_ms: int) -> bool:
        """Create the device unless it exists (a client may log in again with its device ID). True if created."""

        async def txn_fn(txn: Txn) -> bool:
            count = await txn.execute(
                "INSERT INTO devices (user_id, device_id, display_name, created_ts) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (user_id, device_id) DO NOTHING",
                (user_id, device_id, display_name, now_ms),
            )
            return count == 1

        return await self.db.run_interaction("ensure_device", txn_fn)

    async def get_device(self, user_id: str, device_id: str) -> Optional[Device]:
        async def txn_fn(txn: Txn) -> Optional[tuple]:
            return await txn.select_one(
                f"SELECT {_DEVICE_COLUMNS} FROM devices WHERE user_id = ? AND device_id = ?", (user_id, device_id)
            )

        row = await self.db.run_interaction("get_device", txn_fn, readonly=True)
        return Device(*row) if row else None

    async def get_devices(self, user_id: str) -> list[Device]:
        async def txn_fn(txn: Txn) -> list:
            return await txn.select(
                f"SELECT {_DEVICE_COLUMNS} FROM devices WHERE user_id = ? ORDER BY device_id", (user_id,)
            )

        return [Device(*r) for r in await self.db.run_interaction("get_devices", txn_fn, readonly=True)]

    async def set_display_name(self, user_id: str, device_id: str, display_name: Optional[str]) -> bool:
        async def txn_fn(txn: Txn) -> int:
            return await txn.execute(
                "UPDATE devices SET display_name = ? WHERE user_id = ? AND device_id = ?",
                (display_name, user_id, device_id),
            )

        return await self.db.run_interaction("set_device_display_name", txn_fn) == 1

    async def record_seen(self, user_id: str, device_id: str, ip: str, user_agent: Optional[str], now_ms: int) -> None:
        async def txn_fn(txn: Txn) -> None:
            await txn.execute(
                "UPDATE devices SET last_seen_ts = ?, last_seen_ip = ?, last_seen_user_agent = ? WHERE user_id = ? AND device_id = ?",
                (now_ms, ip, user_agent, user_id, device_id),
            )

        await self.db.run_interaction("record_device_seen", txn_fn)


@dataclass(frozen=True)
class TokenInfo:
    """What an access token authenticates."""

    user_id: str
    device_id: Optional[str]
    valid_until_ts: Optional[int]
    is_guest: bool
    deactivated: bool
    token_hash: str
    #: Set for access tokens issued with a refresh token; ``used`` records their first use.
    refresh_token_hash: Optional[str] = None
    used: bool = True


class TokenStore:
    """Access, refresh and login tokens, plus device deletion (which kills tokens)."""

    CACHE_SIZE = 10_000

    def __init__(self, db: Database) -> None:
        self.db = db
        self._cache: OrderedDict[str, Optional[TokenInfo]] = OrderedDict()

    # -- cache -------------------------------------------------------------
    def _cache_put(self, key: str, value: Optional[TokenInfo]) -> None:
        self._cache[key] = value
        self._cache.move_to_end(key)
        while len(self._cache) > self.CACHE_SIZE:
            self._cache.popitem(last=False)

    def _invalidate(self, hashes: Iterable[str]) -> None:
        for h in hashes:
            self._cache.pop(h, None)

    def _invalidate_user(self, user_id: str) -> None:
        for h in [h for h, info in self._cache.items() if info is not None and info.user_id == user_id]:
            del self._cache[h]

    # -- access tokens ------------------------------------------------------
    async def add_access_token(
        self,
        token: str,
        user_id: str,
        device_id: Optional[str],
        now_ms: int,
        valid_until_ts: Optional[int] = None,
        refresh_token: Optional[str] = None,
    ) -> None:
        h = token_hash(token)
        rh = token_hash(refresh_token) if refresh_token else None

        async def txn_fn(txn: Txn) -> None:
            await txn.execute(
                "INSERT INTO access_tokens (token_hash, user_id, device_id, created_ts, valid_until_ts, refresh_token_hash)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (h, user_id, device_id, now_ms, valid_until_ts, rh),
            )
            txn.call_after(self._invalidate, [h])

        await self.db.run_interaction("add_access_token", txn_fn)

    async def get_access_token(self, token: str) -> Optional[TokenInfo]:
        """Who a token belongs to, or None if it is unknown."""
        h = token_hash(token)
        if h in self._cache:
            self._cache.move_to_end(h)
            return self._cache[h]

        async def txn_fn(txn: Txn) -> Optional[tuple]:
            return await txn.select_one(
                "SELECT t.user_id, t.device_id, t.valid_until_ts, u.is_guest, u.deactivated, t.refresh_token_hash, t.used"
                " FROM access_tokens AS t JOIN users AS u ON u.user_id = t.user_id WHERE t.token_hash = ?",
                (h,),
            )

        row = await self.db.run_interaction("get_access_token", txn_fn, readonly=True)
        info = TokenInfo(row[0], row[1], row[2], bool(row[3]), bool(row[4]), h, row[5], bool(row[6])) if row else None
        self._cache_put(h, info)
        return info

    async def delete_access_token(self, token_hash_value: str) -> None:
        async def txn_fn(txn: Txn) -> None:
            row = await txn.select_one(
                "SELECT refresh_token_hash FROM access_tokens WHERE token_hash = ?", (token_hash_value,)
            )
            await txn.execute("DELETE FROM access_tokens WHERE token_hash = ?", (token_hash_value,))
            if row and row[0]:
                await txn.execute("DELETE FROM refresh_tokens WHERE token_hash = ?", (row[0],))
            txn.call_after(self._invalidate, [token_hash_value])

        await self.db.run_interaction("delete_access_token", txn_fn)

    async def delete_user_tokens(self, user_id: str, except_token_hash: Optional[str] = None) -> list[Optional[str]]:
        """Delete every token of ``user_id`` except one; returns the device IDs that lost tokens."""

        async def txn_fn(txn: Txn) -> list[Optional[str]]:
            keep = except_token_hash or ""
            rows = await txn.select(
                "SELECT DISTINCT device_id FROM access_tokens WHERE user_id = ? AND token_hash <> ?", (user_id, keep)
            )
            keep_device = await txn.select_one("SELECT device_id FROM access_tokens WHERE token_hash = ?", (keep,))
            await txn.execute("DELETE FROM access_tokens WHERE user_id = ? AND token_hash <> ?", (user_id, keep))
            if keep_device and keep_device[0] is not None:
                await txn.execute(
                    "DELETE FROM refresh_tokens WHERE user_id = ? AND device_id <> ?", (user_id, keep_device[0])
                )
            else:
                await txn.execute("DELETE FROM refresh_tokens WHERE user_id = ?", (user_id,))
            txn.call_after(self._invalidate_user, user_id)
            return [r[0] for r in rows]

        return await self.db.run_interaction("delete_user_tokens", txn_fn)

    async def delete_devices(self, user_id: str, device_ids: list[str]) -> None:
        """Delete devices and every token issued to them, in one transaction."""

        async def txn_fn(txn: Txn) -> None:
            for device_id in device_ids:
                await txn.execute("DELETE FROM access_tokens WHERE user_id = ? AND device_id = ?", (user_id, device_id))
                await txn.execute(
                    "DELETE FROM refresh_tokens WHERE user_id = ? AND device_id = ?", (user_id, device_id)
                )
                await txn.execute("DELETE FROM devices WHERE user_id = ? AND device_id = ?", (user_id, device_id))
            txn.call_after(self._invalidate_user, user_id)

        await self.db.run_interaction("delete_devices", txn_fn)

    async def delete_devices_tokens(self, user_id: str, device_ids: list[str]) -> None:
        """Delete the tokens of devices but keep the devices."""

        async def txn_fn(txn: Txn) -> None:
            for device_id in device_ids:
                await txn.execute("DELETE FROM access_tokens WHERE user_id = ? AND device_id = ?", (user_id, device_id))
                await txn.execute("DELETE FROM refresh_tokens WHERE user_id = ? AND device_id = ?", (user_id, device_id))
            txn.call_after(self._invalidate_user, user_id)

        await self.db.run_interaction("delete_devices_tokens", txn_fn)

    async def deactivate_user(self, user_id: str) -> None:
        """Mark deactivated, drop password, devices and every token, at once."""

        async def txn_fn(txn: Txn) -> None:
            await txn.execute("UPDATE users SET deactivated = 1, password_hash = NULL WHERE user_id = ?", (user_id,))
            await txn.execute("DELETE FROM access_tokens WHERE user_id = ?", (user_id,))
            await txn.execute("DELETE FROM refresh_tokens WHERE user_id = ?", (user_id,))
            await txn.execute("DELETE FROM login_tokens WHERE user_id = ?", (user_id,))
            await txn.execute("DELETE FROM devices WHERE user_id = ?", (user_id,))
            txn.call_after(self._invalidate_user, user_id)

        await self.db.run_interaction("deactivate_user", txn_fn)

    # -- refresh tokens -----------------------------------------------------
    async def add_refresh_token(
        self, token: str, user_id: str, device_id: str, now_ms: int, expiry_ts: Optional[int]
    ) -> None:
        async def txn_fn(txn: Txn) -> None:
            await txn.execute(
                "INSERT INTO refresh_tokens (token_hash, user_id, device_id, created_ts, expiry_ts) VALUES (?, ?, ?, ?, ?)",
                (token_hash(token), user_id, device_id, now_ms, expiry_ts),
            )

        await self.db.run_interaction("add_refresh_token", txn_fn)

    async def rotate_refresh_token(
        self, old_token: str, new_refresh: str, new_access: str, now_ms: int,
        refresh_expiry_ts: Optional[int], access_valid_until_ts: Optional[int],
    ) -> Optional[tuple[str, str, Optional[int]]]:
        """Exchange a refresh token for a new refresh + access token pair, atomically.

        Spec grace period: the old token stays usable until its successor (or the successor's access token) is
        first used; using it again in the meantime replaces that unused successor. Returns (user_id, device_id,
        old token's expiry_ts), or None if the old token is unknown.
        """
        old = token_hash(old_token)
        new_rh = token_hash(new_refresh)
        new_ah = token_hash(new_access)

        async def txn_fn(txn: Txn) -> Optional[tuple]:
            row = await txn.select_one(
                "SELECT user_id, device_id, expiry_ts, next_token_hash FROM refresh_tokens WHERE token_hash = ?", (old,)
            )
            if row is None:
                return None
            user_id, device_id, expiry, successor = row
            dropped: list[str] = []
            if successor is not None:
                # The successor was never used (or this token would be gone): replace it.
                dropped += await _delete_refresh_tokens(txn, "token_hash = ?", (successor,))
            # This token's own predecessor is now certainly obsolete.
            dropped += await _delete_refresh_tokens(txn, "next_token_hash = ?", (old,))
            await txn.execute(
                "INSERT INTO refresh_tokens (token_hash, user_id, device_id, created_ts, expiry_ts) VALUES (?, ?, ?, ?, ?)",
                (new_rh, user_id, device_id, now_ms, refresh_expiry_ts),
            )
            await txn.execute(
                "INSERT INTO access_tokens (token_hash, user_id, device_id, created_ts, valid_until_ts,"
                " refresh_token_hash, used) VALUES (?, ?, ?, ?, ?, ?, 0)",
                (new_ah, user_id, device_id, now_ms, access_valid_until_ts, new_rh),
            )
            await txn.execute("UPDATE refresh_tokens SET next_token_hash = ? WHERE token_hash = ?", (new_rh, old))
            txn.call_after(self._invalidate, dropped + [new_ah])
            return user_id, device_id, expiry

        return await self.db.run_interaction("rotate_refresh_token", txn_fn)

    async def mark_access_token_used(self, info: TokenInfo) -> None:
        """First use of an access token from a refresh: the refresh token it replaced is now revoked."""

        async def txn_fn(txn: Txn) -> list[str]:
            await txn.execute("UPDATE access_tokens SET used = 1 WHERE token_hash = ?", (info.token_hash,))
            dropped = await _delete_refresh_tokens(txn, "next_token_hash = ?", (info.refresh_token_hash,))
            txn.call_after(self._invalidate, dropped + [info.token_hash])
            return dropped

        await self.db.run_interaction("mark_access_token_used", txn_fn)

    # -- login tokens --------------------------------------------------------
    async def add_login_token(
        self, token: str, user_id: str, expiry_ts: int, auth_provider_id: Optional[str] = None
    ) -> None:
        async def txn_fn(txn: Txn) -> None:
            await txn.execute(
                "INSERT INTO login_tokens (token_hash, user_id, expiry_ts, auth_provider_id) VALUES (?, ?, ?, ?)",
                (token_hash(token), user_id, expiry_ts, auth_provider_id),
            )

        await self.db.run_interaction("add_login_token", txn_fn)

    async def consume_login_token(self, token: str, now_ms: int) -> Optional[str]:
        """Atomically use a login token; returns its user ID if it was valid and unexpired."""
        h = token_hash(token)

        async def txn_fn(txn: Txn) -> Optional[str]:
            row = await txn.select_one("SELECT user_id, expiry_ts FROM login_tokens WHERE token_hash = ?", (h,))
            await txn.execute("DELETE FROM login_tokens WHERE token_hash = ? OR expiry_ts < ?", (h, now_ms))
            if row is None or row[1] < now_ms:
                return None
            return row[0]

        return await self.db.run_interaction("consume_login_token", txn_fn)


async def _delete_refresh_tokens(txn: Txn, where: str, args: tuple) -> list[str]:
    """Delete the refresh tokens matching ``where`` and the access tokens issued with them; returns the
    deleted access token hashes (for cache invalidation)."""
    refresh = [r[0] for r in await txn.select(f"SELECT token_hash FROM refresh_tokens WHERE {where}", args)]
    dropped: list[str] = []
    for rh in refresh:
        dropped += [r[0] for r in await txn.select("SELECT token_hash FROM access_tokens WHERE refresh_token_hash = ?", (rh,))]
        await txn.execute("DELETE FROM access_tokens WHERE refresh_token_hash = ?", (rh,))
        await txn.execute("DELETE FROM refresh_tokens WHERE token_hash = ?", (rh,))
    return dropped
