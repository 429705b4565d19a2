"""The presence of local users, positioned on the ``presence`` stream for /sync.

Spec: Client-Server API, "Presence". One row per user: the state last
announced to others. The presence handler keeps the live state of active
users in memory and writes a row only when something others should learn
about changes (state, status message, ``currently_active``), so a user who
is busy chatting does not cost a write per message.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Iterable, Optional

from mxtwisted.storage.database import Database, Txn
from mxtwisted.storage.streams import StreamIdGenerator

ONLINE = "online"
UNAVAILABLE = "unavailable"
OFFLINE = "offline"
PRESENCE_STATES = (ONLINE, UNAVAILABLE, OFFLINE)

#: Users per ``IN (...)`` list.
_CHUNK = 500


@dataclass(frozen=True)
class UserPresence:
    user_id: str
    state: str = OFFLINE
    status_msg: Optional[str] = None
    #: Milliseconds since the epoch of the last pro-active event; 0 if never.
    last_active_ts: int = 0
    #: Milliseconds since the epoch of the last /sync request; 0 if never.
    last_user_sync_ts: int = 0
    currently_active: bool = False
    #: Position on the presence stream of the last announced change (0: never stored).
    stream_id: int = 0

    def replace(self, **changes: object) -> UserPresence:
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]


_COLUMNS = "user_id, state, status_msg, last_active_ts, last_user_sync_ts, currently_active, stream_id"


def _presence(row: tuple) -> UserPresence:
    user_id, state, status_msg, last_active_ts, last_user_sync_ts, currently_active, stream_id = row
    return UserPresence(
        user_id, state, status_msg, int(last_active_ts), int(last_user_sync_ts), bool(currently_active), int(stream_id)
    )


class PresenceStore:
    def __init__(self, db: Database, stream: StreamIdGenerator) -> None:
        self.db = db
        self.stream = stream

    @classmethod
    async def create(cls, db: Database) -> PresenceStore:
        return cls(db, await StreamIdGenerator.load(db, "presence"))

    async def put(self, presence: UserPresence) -> UserPresence:
        """Store a user's presence at a new stream position; returns it with that ``stream_id``.

        Writes of one user may commit out of order; a row is never replaced by an older position.
        """
        stream_id = self.stream.allocate()
        presence = presence.replace(stream_id=stream_id)

        async def txn_fn(txn: Txn) -> None:
            await txn.execute(
                f"INSERT INTO presence ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (user_id) DO UPDATE SET state = excluded.state, status_msg = excluded.status_msg,"
                " last_active_ts = excluded.last_active_ts, last_user_sync_ts = excluded.last_user_sync_ts,"
                " currently_active = excluded.currently_active, stream_id = excluded.stream_id"
                " WHERE presence.stream_id < excluded.stream_id",
                (
                    presence.user_id,
                    presence.state,
                    presence.status_msg,
                    presence.last_active_ts,
                    presence.last_user_sync_ts,
                    1 if presence.currently_active else 0,
                    stream_id,
                ),
            )

        try:
            await self.db.run_interaction("put_presence", txn_fn)
        finally:
            self.stream.finish(stream_id)
        return presence

    async def get(self, user_id: str) -> Optional[UserPresence]:
        return (await self.get_many([user_id])).get(user_id)

    async def get_many(self, user_ids: Iterable[str]) -> dict[str, UserPresence]:
        users = sorted(set(user_ids))
        if not users:
            return {}

        async def txn_fn(txn: Txn) -> list:
            return await txn.select_in(f"SELECT {_COLUMNS} FROM presence WHERE user_id IN ({{in}})", users, chunk=_CHUNK)

        rows = await self.db.run_interaction("get_presence", txn_fn, readonly=True)
        return {p.user_id: p for p in map(_presence, rows)}

    async def get_changed(self, since: int, upto: int) -> list[UserPresence]:
        """Users whose presence changed in (since, upto], in stream order."""
        if upto <= since:
            return []

        async def txn_fn(txn: Txn) -> list:
            return await txn.select(
                f"SELECT {_COLUMNS} FROM presence WHERE stream_id > ? AND stream_id <= ? ORDER BY stream_id",
                (since, upto),
            )

        rows = await self.db.run_interaction("get_changed_presence", txn_fn, readonly=True)
        return [_presence(r) for r in rows]

    async def get_not_offline(self) -> list[UserPresence]:
        """Users whose last stored state is not offline (their timers resume after a restart)."""

        async def txn_fn(txn: Txn) -> list:
            return await txn.select(f"SELECT {_COLUMNS} FROM presence WHERE state <> ?", (OFFLINE,))

        rows = await self.db.run_interaction("get_not_offline_presence", txn_fn, readonly=True)
        return [_presence(r) for r in rows]
