"""User-interactive authentication sessions and registration tokens."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Optional

from mxtwisted.storage.database import Database, IntegrityError, Txn


@dataclass
class UIASession:
    session_id: str
    creation_ts: int
    uri: str
    method: str
    description: str
    clientdict: dict
    serverdict: dict
    completed: dict[str, Any]  # stage type -> result


class UIAStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def create_session(
        self, session_id: str, now_ms: int, uri: str, method: str, description: str, clientdict: dict
    ) -> None:
        async def txn_fn(txn: Txn) -> None:
            await txn.execute(
                "INSERT INTO ui_auth_sessions (session_id, creation_ts, uri, method, description, clientdict)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (session_id, now_ms, uri, method, description, json.dumps(clientdict)),
            )

        await self.db.run_interaction("create_ui_auth_session", txn_fn)

    async def get_session(self, session_id: str) -> Optional[UIASession]:
        async def txn_fn(txn: Txn) -> Optional[tuple]:
            row = await txn.select_one(
                "SELECT session_id, creation_ts, uri, method, description, clientdict, serverdict"
                " FROM ui_auth_sessions WHERE session_id = ?",
                (session_id,),
            )
            if row is None:
                return None
            stages = await txn.select(
                "SELECT stage_type, result FROM ui_auth_session_stages WHERE session_id = ?", (session_id,)
            )
            return row, stages

        found = await self.db.run_interaction("get_ui_auth_session", txn_fn, readonly=True)
        if found is None:
            return None
        row, stages = found
        return UIASession(
            row[0],
            row[1],
            row[2],
            row[3],
            row[4],
            json.loads(row[5]),
            json.loads(row[6]),
            {stage: json.loads(result) for stage, result in stages},
        )

    async def set_clientdict(self, session_id: str, clientdict: dict) -> None:
        async def txn_fn(txn: Txn) -> None:
            await txn.execute(
                "UPDATE ui_auth_sessions SET clientdict = ? WHERE session_id = ?", (json.dumps(clientdict), session_id)
            )

        await self.db.run_interaction("set_ui_auth_clientdict", txn_fn)

    async def set_server_value(self, session_id: str, key: str, value: Any) -> None:
        async def txn_fn(txn: Txn) -> None:
            row = await txn.select_one("SELECT serverdict FROM ui_auth_sessions WHERE session_id = ?", (session_id,))
            if row is None:
                return
            serverdict = json.loads(row[0])
            serverdict[key] = value
            await txn.execute(
                "UPDATE ui_auth_sessions SET serverdict = ? WHERE session_id = ?", (json.dumps(serverdict), session_id)
            )

        await self.db.run_interaction("set_ui_auth_server_value", txn_fn)

    async def mark_stage_complete(self, session_id: str, stage_type: str, result: Any) -> None:
        async def txn_fn(txn: Txn) -> None:
            await txn.execute(
                "INSERT INTO ui_auth_session_stages (session_id, stage_type, result) VALUES (?, ?, ?)"
                " ON CONFLICT (session_id, stage_type) DO UPDATE SET result = excluded.result",
                (session_id, stage_type, json.dumps(result)),
            )

        await self.db.run_interaction("mark_ui_auth_stage", txn_fn)

    async def take_session(self, session_id: str) -> Optional[dict]:
        """Delete a session and return its server-side data as it was at deletion (None if already gone)."""

        async def txn_fn(txn: Txn) -> Optional[dict]:
            row = await txn.select_one("SELECT serverdict FROM ui_auth_sessions WHERE session_id = ?", (session_id,))
            if row is None:
                return None
            await txn.execute("DELETE FROM ui_auth_session_stages WHERE session_id = ?", (session_id,))
            await txn.execute("DELETE FROM ui_auth_sessions WHERE session_id = ?", (session_id,))
            return json.loads(row[0])

        return await self.db.run_interaction("take_ui_auth_session", txn_fn)

    async def delete_session(self, session_id: str) -> bool:
        """Delete a session; True if it existed (so exactly one caller wins when two race)."""

        async def txn_fn(txn: Txn) -> int:
            await txn.execute("DELETE FROM ui_auth_session_stages WHERE session_id = ?", (session_id,))
            return await txn.execute("DELETE FROM ui_auth_sessions WHERE session_id = ?", (session_id,))

        return await self.db.run_interaction("delete_ui_auth_session", txn_fn) == 1

    async def get_expired(self, older_than_ms: int) -> list[tuple[str, dict]]:
        """(session_id, serverdict) of the sessions created before ``older_than_ms``."""

        async def txn_fn(txn: Txn) -> list:
            return await txn.select(
                "SELECT session_id, serverdict FROM ui_auth_sessions WHERE creation_ts < ?", (older_than_ms,)
            )

        rows = await self.db.run_interaction("get_expired_ui_auth", txn_fn, readonly=True)
        return [(r[0], json.loads(r[1])) for r in rows]

    async def delete_expired(self, older_than_ms: int) -> int:
        async def txn_fn(txn: Txn) -> int:
            await txn.execute(
                "DELETE FROM ui_auth_session_stages WHERE session_id IN"
                " (SELECT session_id FROM ui_auth_sessions WHERE creation_ts < ?)",
                (older_than_ms,),
            )
            return await txn.execute("DELETE FROM ui_auth_sessions WHERE creation_ts < ?", (older_than_ms,))

        return await self.db.run_interaction("delete_expired_ui_auth", txn_fn)


@dataclass(frozen=True)
class RegistrationToken:
    token: str
    uses_allowed: Optional[int]
    pending: int
    completed: int
    expiry_time: Optional[int]

    def is_valid(self, now_ms: int) -> bool:
        """Spec: a token is valid while unexpired and (uses_allowed unset or pending + completed below it)."""
        if self.expiry_time is not None and self.expiry_time <= now_ms:
            return False
        return self.uses_allowed is None or self.pending + self.completed < self.uses_allowed

    def to_json(self) -> dict[str, Any]:
        return {
            "token": self.token,
            "uses_allowed": self.uses_allowed,
            "pending": self.pending,
            "completed": self.completed,
            "expiry_time": self.expiry_time,
        }


class RegistrationTokenExists(Exception):
    pass


class RegistrationTokenStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def create(self, token: str, uses_allowed: Optional[int], expiry_time: Optional[int]) -> RegistrationToken:
        async def txn_fn(txn: Txn) -> None:
            await txn.execute(
                "INSERT INTO registration_tokens (token, uses_allowed, expiry_time) VALUES (?, ?, ?)",
                (token, uses_allowed, expiry_time),
            )

        try:
            await self.db.run_interaction("create_registration_token", txn_fn)
        except IntegrityError:
            raise RegistrationTokenExists(token) from None
        return RegistrationToken(token, uses_allowed, 0, 0, expiry_time)

    async def get(self, token: str) -> Optional[RegistrationToken]:
        async def txn_fn(txn: Txn) -> Optional[tuple]:
            return await txn.select_one(
                "SELECT token, uses_allowed, pending, completed, expiry_time FROM registration_tokens WHERE token = ?",
                (token,),
            )

        row = await self.db.run_interaction("get_registration_token", txn_fn, readonly=True)
        return RegistrationToken(*row) if row else None

    async def list(self) -> list[RegistrationToken]:
        async def txn_fn(txn: Txn) -> list:
            return await txn.select(
                "SELECT token, uses_allowed, pending, completed, expiry_time FROM registration_tokens ORDER BY token"
            )

        return [
            RegistrationToken(*r)
            for r in await self.db.run_interaction("list_registration_tokens", txn_fn, readonly=True)
        ]

    async def delete(self, token: str) -> bool:
        async def txn_fn(txn: Txn) -> int:
            return await txn.execute("DELETE FROM registration_tokens WHERE token = ?", (token,))

        return await self.db.run_interaction("delete_registration_token", txn_fn) == 1

    async def update(self, token: str, changes: dict[str, Optional[int]]) -> Optional[RegistrationToken]:
        """Set ``uses_allowed`` and/or ``expiry_time`` (the keys of ``changes``); the updated token, or None if unknown."""
        columns = [name for name in ("uses_allowed", "expiry_time") if name in changes]
        if len(columns) != len(changes):
            raise ValueError(f"unknown registration token fields: {sorted(set(changes) - set(columns))}")

        async def txn_fn(txn: Txn) -> Optional[tuple]:
            if columns:
                assignments = ", ".join(f"{name} = ?" for name in columns)
                await txn.execute(
                    f"UPDATE registration_tokens SET {assignments} WHERE token = ?",
                    (*[changes[name] for name in columns], token),
                )
            return await txn.select_one(
                "SELECT token, uses_allowed, pending, completed, expiry_time FROM registration_tokens WHERE token = ?",
                (token,),
            )

        row = await self.db.run_interaction("update_registration_token", txn_fn)
        return RegistrationToken(*row) if row else None

    async def reserve(self, token: str, now_ms: int) -> bool:
        """Take one pending use of a valid token (in one transaction, so two sessions can't overspend it)."""

        async def txn_fn(txn: Txn) -> bool:
            row = await txn.select_one(
                "SELECT token, uses_allowed, pending, completed, expiry_time FROM registration_tokens WHERE token = ?",
                (token,),
            )
            if row is None or not RegistrationToken(*row).is_valid(now_ms):
                return False
            await txn.execute("UPDATE registration_tokens SET pending = pending + 1 WHERE token = ?", (token,))
            return True

        return await self.db.run_interaction("reserve_registration_token", txn_fn)

    async def release(self, token: str) -> None:
        """A session that reserved a use of the token expired unfinished: the use is free again."""

        async def txn_fn(txn: Txn) -> None:
            await txn.execute(
                "UPDATE registration_tokens SET pending = pending - 1 WHERE token = ? AND pending > 0", (token,)
            )

        await self.db.run_interaction("release_registration_token", txn_fn)

    async def complete(self, token: str) -> None:
        """A registration that used the token finished: pending → completed."""

        async def txn_fn(txn: Txn) -> None:
            await txn.execute(
                "UPDATE registration_tokens SET pending = pending - 1, completed = completed + 1"
                " WHERE token = ? AND pending > 0",
                (token,),
            )

        await self.db.run_interaction("complete_registration_token", txn_fn)
