"""The event graph, state groups and current state.

One class, :class:`EventStore`, owns the tables of ``0005_rooms.sql``. The
room engine (``mxtwisted/rooms``) computes everything an event changes and
hands it to :meth:`EventStore.persist_event`, which writes it in one
transaction: the event, its edges, the forward extremities, its state group,
the current state, membership rows and the transaction ID. So either all of
it is durable or none of it is.

State groups are deltas on a previous group with a snapshot every
:data:`SNAPSHOT_INTERVAL` groups, so a room with 10,000 members does not copy
10,000 rows per state change, and reading the state at an event walks at most
that many small deltas (cached in memory by group).
"""

from __future__ import annotations

import json
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Iterable, Optional

from mxtwisted.storage.database import Database, Txn
from mxtwisted.storage.streams import StreamIdGenerator

StateKey = tuple[str, str]
StateMap = dict[StateKey, str]

#: A chain of delta groups gets a new full snapshot once it is this long *and* at least half as long as the
#: state is big: reading a chain then costs at most ~1.5x reading a snapshot, and the snapshots written while a
#: room grows to N state entries add up to O(N) rows rather than O(N^2).
SNAPSHOT_INTERVAL = 64


#: Below every stream ordering (backfilled events have negative ones, decreasing into the past).
MIN_STREAM_ORDERING = -(2**62)


def needs_snapshot(chain_length: int, state_size: int) -> bool:
    return chain_length >= max(SNAPSHOT_INTERVAL, state_size // 2)


@dataclass(frozen=True)
class RoomInfo:
    room_id: str
    room_version: str
    creator: Optional[str]
    is_public: bool


@dataclass
class StoredEvent:
    """An event as stored: its JSON plus what only the server knows."""

    event_id: str
    room_id: str
    stream_ordering: int
    json: dict
    rejected_reason: Optional[str]
    outlier: bool
    redacted_by: Optional[str]
    received_ts: int
    replaces_state: Optional[str] = None

    @property
    def type(self) -> str:
        return self.json["type"]

    @property
    def state_key(self) -> Optional[str]:
        return self.json.get("state_key")

    @property
    def sender(self) -> str:
        return self.json["sender"]


@dataclass
class PersistContext:
    """Everything that persisting one event changes, computed by the room engine."""

    stream_ordering: int
    received_ts: int
    rejected_reason: Optional[str] = None
    outlier: bool = False
    #: prev_events that stop being forward extremities.
    prev_event_ids: list[str] = field(default_factory=list)
    auth_event_ids: list[str] = field(default_factory=list)
    #: The state group of the state after the event, and, if it is new, its definition.
    state_group: Optional[int] = None
    new_group_prev: Optional[int] = None
    new_group_delta: Optional[StateMap] = None
    new_group_chain_length: int = 0
    #: Changes to the room's current state (only for accepted state events).
    current_state_delta: Optional[StateMap] = None
    #: (user_id, device_id, txn_id) of a client send.
    txn: Optional[tuple[str, str, str]] = None
    #: For an accepted redaction in the room: the target's id and its redacted JSON, if the target is stored.
    redaction_target: Optional[tuple[str, dict]] = None
    #: For a state event: the event it replaced in the room's state.
    replaces_state: Optional[str] = None
    #: Keys that leave the room's current state (a state resolution may drop a key).
    current_state_removed: list[StateKey] = field(default_factory=list)
    #: More new state groups written with the event, before its own: (id, prev_group, delta, chain_length).
    #: A resolved state (the state before an event with several prev_events, or the room's state after a
    #: fork) that no event's group holds yet.
    extra_groups: list[tuple[int, Optional[int], StateMap, int]] = field(default_factory=list)
    #: The event becomes the room's only forward extremity (a rejoin through another server: what we had
    #: before is history now).
    clear_extremities: bool = False


def _event_row(row: tuple) -> StoredEvent:
    return StoredEvent(
        event_id=row[0],
        room_id=row[1],
        stream_ordering=row[2],
        json=json.loads(row[3]),
        rejected_reason=row[4],
        outlier=bool(row[5]),
        redacted_by=row[6],
        received_ts=row[7],
        replaces_state=row[8],
    )


_EVENT_COLUMNS = (
    "event_id, room_id, stream_ordering, json, rejected_reason, outlier, redacted_by, received_ts, replaces_state"
)


class EventStore:
    def __init__(self, db: Database, stream: StreamIdGenerator, state_group_start: int) -> None:
        self.db = db
        #: The events stream: stream_ordering of every event.
        self.stream = stream
        self._next_state_group = state_group_start
        self._group_cache: OrderedDict[int, StateMap] = OrderedDict()
        self._group_cache_size = 256
        #: The newest position at which a room joined with partial state got its full state (so that /sync
        #: looks for such rooms only when one completed after its token: usually never).
        self.partial_completed_upto = 0

    @classmethod
    async def create(cls, db: Database) -> EventStore:
        stream = await StreamIdGenerator.load(db, "events", "stream_ordering")

        async def max_group(txn: Txn) -> int:
            row = await txn.select_one("SELECT MAX(id) FROM state_groups")
            return int(row[0]) if row and row[0] is not None else 0

        store = cls(db, stream, await db.run_interaction("max_state_group", max_group, readonly=True) + 1)

        async def last_completion(txn: Txn) -> int:
            row = await txn.select_one("SELECT MAX(stream_ordering) FROM partial_state_completions")
            return int(row[0]) if row and row[0] is not None else 0

        store.partial_completed_upto = await db.run_interaction("last_partial_completion", last_completion, readonly=True)
        return store

    def allocate_state_group(self) -> int:
        group = self._next_state_group
        self._next_state_group += 1
        return group

    # -- rooms -----------------------------------------------------------------
    async def store_room(self, room_id: str, room_version: str, creator: Optional[str], is_public: bool, now_ms: int) -> None:
        async def txn_fn(txn: Txn) -> None:
            await txn.execute(
                "INSERT INTO rooms (room_id, room_version, creator, is_public, created_ts) VALUES (?, ?, ?, ?, ?)",
                (room_id, room_version, creator, int(is_public), now_ms),
            )

        await self.db.run_interaction("store_room", txn_fn)

    async def get_room(self, room_id: str) -> Optional[RoomInfo]:
        async def txn_fn(txn: Txn) -> Optional[tuple]:
            return await txn.select_one(
                "SELECT room_id, room_version, creator, is_public FROM rooms WHERE room_id = ?", (room_id,)
            )

        row = await self.db.run_interaction("get_room", txn_fn, readonly=True)
        return RoomInfo(row[0], row[1], row[2], bool(row[3])) if row else None

    async def set_room_public(self, room_id: str, is_public: bool) -> None:
        async def txn_fn(txn: Txn) -> None:
            await txn.execute("UPDATE rooms SET is_public = ? WHERE room_id = ?", (int(is_public), room_id))

        await self.db.run_interaction("set_room_public", txn_fn)

    async def get_public_rooms(self) -> list[str]:
        async def txn_fn(txn: Txn) -> list:
            return await txn.select("SELECT room_id FROM rooms WHERE is_public = 1 ORDER BY room_id")

        return [r[0] for r in await self.db.run_interaction("get_public_rooms", txn_fn, readonly=True)]

    # -- persisting ----------------------------------------------------------------
    async def persist_event(self, event_id: str, room_id: str, event_json: dict, ctx: PersistContext) -> None:
        """Write one event and everything it changes, atomically."""
        ev = event_json
        state_key = ev.get("state_key")
        event_text = json.dumps(ev, ensure_ascii=False, separators=(",", ":"))

        async def txn_fn(txn: Txn) -> None:
            # An event known so far only as an outlier (fetched as an auth or state event, or as a gap's
            # prev event) that is now persisted properly takes its new place in the stream (and, as a
            # timeline event, in /sync). A proper event is never replaced (the engine checks under the
            # room's lock).
            await txn.execute(
                "INSERT INTO events (stream_ordering, event_id, room_id, type, state_key, sender, depth,"
                " origin_server_ts, received_ts, json, rejected_reason, outlier, replaces_state)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (event_id) DO UPDATE SET stream_ordering = excluded.stream_ordering,"
                " received_ts = excluded.received_ts, json = excluded.json, rejected_reason = excluded.rejected_reason,"
                " outlier = excluded.outlier, replaces_state = excluded.replaces_state WHERE events.outlier = 1",
                (
                    ctx.stream_ordering, event_id, room_id, ev["type"], state_key, ev["sender"], ev.get("depth", 0),
                    ev.get("origin_server_ts", 0), ctx.received_ts, event_text, ctx.rejected_reason, int(ctx.outlier),
                    ctx.replaces_state,
                ),
            )
            if ctx.prev_event_ids:
                await txn.executemany(
                    "INSERT INTO event_edges (event_id, prev_event_id) VALUES (?, ?) ON CONFLICT DO NOTHING",
                    [(event_id, p) for p in ctx.prev_event_ids],
                )
            if ctx.auth_event_ids:
                await txn.executemany(
                    "INSERT INTO event_auth (event_id, auth_id) VALUES (?, ?) ON CONFLICT DO NOTHING",
                    [(event_id, a) for a in ctx.auth_event_ids],
                )
            groups = list(ctx.extra_groups)
            if ctx.new_group_delta is not None and ctx.state_group is not None:
                groups.append((ctx.state_group, ctx.new_group_prev, ctx.new_group_delta, ctx.new_group_chain_length))
            for group, prev_group, delta, chain_length in groups:
                await txn.execute(
                    "INSERT INTO state_groups (id, room_id, prev_group, chain_length) VALUES (?, ?, ?, ?)",
                    (group, room_id, prev_group, chain_length),
                )
                await txn.executemany(
                    "INSERT INTO state_group_entries (state_group, type, state_key, event_id) VALUES (?, ?, ?, ?)",
                    [(group, t, sk, eid) for (t, sk), eid in delta.items()],
                )
            if ctx.state_group is not None:
                # Outliers may have one too: a rejected or soft-failed event, or one whose state was fetched
                # from another server, is known with the state after it without being in the timeline.
                await txn.execute(
                    "INSERT INTO event_to_state_groups (event_id, state_group) VALUES (?, ?)"
                    " ON CONFLICT (event_id) DO UPDATE SET state_group = excluded.state_group",
                    (event_id, ctx.state_group),
                )
            if ctx.outlier:
                return
            # Forward extremities: this event replaces the prev events it references.
            if ctx.clear_extremities:
                await txn.execute("DELETE FROM room_forward_extremities WHERE room_id = ?", (room_id,))
            for prev in ctx.prev_event_ids:
                await txn.execute(
                    "DELETE FROM room_forward_extremities WHERE room_id = ? AND event_id = ?", (room_id, prev)
                )
            await txn.execute(
                "INSERT INTO room_forward_extremities (room_id, event_id) VALUES (?, ?) ON CONFLICT DO NOTHING",
                (room_id, event_id),
            )
            for etype, skey in ctx.current_state_removed:
                await txn.execute(
                    "DELETE FROM current_state_events WHERE room_id = ? AND type = ? AND state_key = ?",
                    (room_id, etype, skey),
                )
            if ctx.current_state_delta:
                for (etype, skey), eid in ctx.current_state_delta.items():
                    membership = None
                    if etype == "m.room.member":
                        membership = ev["content"].get("membership") if eid == event_id else await _membership_of(txn, eid)
                    await txn.execute(
                        "INSERT INTO current_state_events (room_id, type, state_key, event_id, membership)"
                        " VALUES (?, ?, ?, ?, ?) ON CONFLICT (room_id, type, state_key) DO UPDATE"
                        " SET event_id = excluded.event_id, membership = excluded.membership",
                        (room_id, etype, skey, eid, membership),
                    )
            if ev["type"] == "m.room.member" and state_key is not None and ctx.rejected_reason is None:
                content = ev.get("content") or {}
                displayname = content.get("displayname")
                avatar_url = content.get("avatar_url")
                await txn.execute(
                    "INSERT INTO room_memberships (event_id, room_id, user_id, sender, membership, stream_ordering,"
                    " displayname, avatar_url) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        event_id, room_id, state_key, ev["sender"], str(content.get("membership")), ctx.stream_ordering,
                        displayname if isinstance(displayname, str) else None,
                        avatar_url if isinstance(avatar_url, str) else None,
                    ),
                )
                if content.get("membership") == "join":
                    await txn.execute("DELETE FROM room_forgotten WHERE user_id = ? AND room_id = ?", (state_key, room_id))
            if ctx.txn is not None:
                user_id, device_id, txn_id = ctx.txn
                await txn.execute(
                    "INSERT INTO event_txn_ids (user_id, device_id, txn_id, event_id, room_id, created_ts)"
                    " VALUES (?, ?, ?, ?, ?, ?)",
                    (user_id, device_id, txn_id, event_id, room_id, ctx.received_ts),
                )
            if ctx.redaction_target is not None:
                target_id, redacted_json = ctx.redaction_target
                await txn.execute(
                    "INSERT INTO redactions (event_id, redacts, room_id) VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
                    (event_id, target_id, room_id),
                )
                # The redacted form replaces the original at once: redacted content is not kept.
                await txn.execute(
                    "UPDATE events SET json = ?, redacted_by = ? WHERE event_id = ? AND redacted_by IS NULL",
                    (json.dumps(redacted_json, ensure_ascii=False, separators=(",", ":")), event_id, target_id),
                )

        await self.db.run_interaction("persist_event", txn_fn)
        written = list(ctx.extra_groups)
        if ctx.new_group_delta is not None and ctx.state_group is not None:
            written.append((ctx.state_group, ctx.new_group_prev, ctx.new_group_delta, ctx.new_group_chain_length))
        for group, prev_group, delta, _ in written:
            if prev_group is None:
                self._cache_group(group, dict(delta))
            elif prev_group in self._group_cache:
                full = dict(self._group_cache[prev_group])
                full.update(delta)
                self._cache_group(group, full)

    async def persist_outliers(self, room_id: str, events: list[tuple[str, dict, PersistContext]]) -> None:
        """Write many outliers (an auth chain, a room's state) in one transaction: their rows and their
        prev/auth edges only (see :meth:`persist_event`, which stops there for an outlier). An event stored
        meanwhile (two transactions fetching the same auth events at once) is left as it is."""
        if not events:
            return
        rows = []
        edges = []
        auth = []
        for event_id, ev, ctx in events:
            rows.append((
                ctx.stream_ordering, event_id, room_id, ev["type"], ev.get("state_key"), ev["sender"], ev.get("depth", 0),
                ev.get("origin_server_ts", 0), ctx.received_ts, json.dumps(ev, ensure_ascii=False, separators=(",", ":")),
                ctx.rejected_reason, 1, None,
            ))
            edges.extend((event_id, p) for p in ctx.prev_event_ids)
            auth.extend((event_id, a) for a in ctx.auth_event_ids)

        async def txn_fn(txn: Txn) -> None:
            await txn.executemany(
                "INSERT INTO events (stream_ordering, event_id, room_id, type, state_key, sender, depth,"
                " origin_server_ts, received_ts, json, rejected_reason, outlier, replaces_state)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (event_id) DO NOTHING",
                rows,
            )
            if edges:
                await txn.executemany(
                    "INSERT INTO event_edges (event_id, prev_event_id) VALUES (?, ?) ON CONFLICT DO NOTHING", edges
                )
            if auth:
                await txn.executemany(
                    "INSERT INTO event_auth (event_id, auth_id) VALUES (?, ?) ON CONFLICT DO NOTHING", auth
                )

        await self.db.run_interaction("persist_outliers", txn_fn)

    async def set_event_state(self, event_id: str, room_id: str, group: int, state: StateMap) -> None:
        """Give a stored event without one (an outlier) the state after it: a new snapshot group."""

        async def txn_fn(txn: Txn) -> None:
            await txn.execute(
                "INSERT INTO state_groups (id, room_id, prev_group, chain_length) VALUES (?, ?, NULL, 0)", (group, room_id)
            )
            await txn.executemany(
                "INSERT INTO state_group_entries (state_group, type, state_key, event_id) VALUES (?, ?, ?, ?)",
                [(group, t, sk, eid) for (t, sk), eid in state.items()],
            )
            await txn.execute(
                "INSERT INTO event_to_state_groups (event_id, state_group) VALUES (?, ?) ON CONFLICT DO NOTHING",
                (event_id, group),
            )

        await self.db.run_interaction("set_event_state", txn_fn)
        self._cache_group(group, dict(state))

    # -- reading events -------------------------------------------------------------
    async def get_event(self, event_id: str) -> Optional[StoredEvent]:
        return (await self.get_events([event_id])).get(event_id)

    async def get_events(self, event_ids: Iterable[str]) -> dict[str, StoredEvent]:
        ids = list(dict.fromkeys(event_ids))
        if not ids:
            return {}

        async def txn_fn(txn: Txn) -> list:
            return await txn.select_in(f"SELECT {_EVENT_COLUMNS} FROM events WHERE event_id IN ({{in}})", ids)

        rows = await self.db.run_interaction("get_events", txn_fn, readonly=True)
        return {row[0]: _event_row(row) for row in rows}

    async def get_room_events(
        self, room_id: str, from_stream: int, to_stream: Optional[int], backwards: bool, limit: int
    ) -> list[StoredEvent]:
        """Events of a room by stream order, for /messages: backwards from ``from_stream`` (exclusive) or
        forwards after it, stopping at ``to_stream``. Rejected and outlier events are never returned.
        Backfilled history has negative stream orderings (:mod:`mxtwisted.storage.backfill`): going backwards
        without ``to_stream`` reads down to :data:`MIN_STREAM_ORDERING`."""

        async def txn_fn(txn: Txn) -> list:
            if backwards:
                lower = to_stream if to_stream is not None else MIN_STREAM_ORDERING
                return await txn.select(
                    f"SELECT {_EVENT_COLUMNS} FROM events WHERE room_id = ? AND stream_ordering <= ?"
                    " AND stream_ordering > ? AND outlier = 0 AND rejected_reason IS NULL"
                    " ORDER BY stream_ordering DESC LIMIT ?",
                    (room_id, from_stream, lower, limit),
                )
            upper = to_stream if to_stream is not None else 2**62
            return await txn.select(
                f"SELECT {_EVENT_COLUMNS} FROM events WHERE room_id = ? AND stream_ordering > ?"
                " AND stream_ordering <= ? AND outlier = 0 AND rejected_reason IS NULL"
                " ORDER BY stream_ordering ASC LIMIT ?",
                (room_id, from_stream, upper, limit),
            )

        return [_event_row(r) for r in await self.db.run_interaction("get_room_events", txn_fn, readonly=True)]

    async def get_event_by_txn(self, user_id: str, device_id: str, room_id: str, txn_id: str) -> Optional[str]:
        async def txn_fn(txn: Txn) -> Optional[tuple]:
            return await txn.select_one(
                "SELECT event_id FROM event_txn_ids WHERE user_id = ? AND device_id = ? AND room_id = ? AND txn_id = ?",
                (user_id, device_id, room_id, txn_id),
            )

        row = await self.db.run_interaction("get_event_by_txn", txn_fn, readonly=True)
        return row[0] if row else None

    async def get_txn_ids(self, event_ids: list[str]) -> dict[str, tuple[str, str, str]]:
        """event_id → (user_id, device_id, txn_id) for client-sent events (for unsigned.transaction_id)."""
        if not event_ids:
            return {}

        async def txn_fn(txn: Txn) -> list:
            marks = ",".join("?" * len(event_ids))
            return await txn.select(
                f"SELECT event_id, user_id, device_id, txn_id FROM event_txn_ids WHERE event_id IN ({marks})", event_ids
            )

        rows = await self.db.run_interaction("get_txn_ids", txn_fn, readonly=True)
        return {r[0]: (r[1], r[2], r[3]) for r in rows}

    async def get_event_at_or_before_ts(self, room_id: str, ts: int, backwards: bool) -> Optional[tuple[str, int]]:
        """For /timestamp_to_event: the closest event in a direction. Returns (event_id, origin_server_ts)."""

        async def txn_fn(txn: Txn) -> Optional[tuple]:
            if backwards:
                return await txn.select_one(
                    "SELECT event_id, origin_server_ts FROM events WHERE room_id = ? AND origin_server_ts <= ?"
                    " AND outlier = 0 AND rejected_reason IS NULL ORDER BY origin_server_ts DESC, stream_ordering DESC LIMIT 1",
                    (room_id, ts),
                )
            return await txn.select_one(
                "SELECT event_id, origin_server_ts FROM events WHERE room_id = ? AND origin_server_ts >= ?"
                " AND outlier = 0 AND rejected_reason IS NULL ORDER BY origin_server_ts ASC, stream_ordering ASC LIMIT 1",
                (room_id, ts),
            )

        row = await self.db.run_interaction("get_event_by_ts", txn_fn, readonly=True)
        return (row[0], row[1]) if row else None

    # -- graph ------------------------------------------------------------------------
    async def get_forward_extremities(self, room_id: str) -> list[str]:
        async def txn_fn(txn: Txn) -> list:
            return await txn.select("SELECT event_id FROM room_forward_extremities WHERE room_id = ?", (room_id,))

        return sorted(r[0] for r in await self.db.run_interaction("get_forward_extremities", txn_fn, readonly=True))

    # -- state --------------------------------------------------------------------------
    async def get_current_state_ids(self, room_id: str) -> StateMap:
        async def txn_fn(txn: Txn) -> list:
            return await txn.select(
                "SELECT type, state_key, event_id FROM current_state_events WHERE room_id = ?", (room_id,)
            )

        rows = await self.db.run_interaction("get_current_state_ids", txn_fn, readonly=True)
        return {(r[0], r[1]): r[2] for r in rows}

    async def get_state_group_of_event(self, event_id: str) -> Optional[int]:
        async def txn_fn(txn: Txn) -> Optional[tuple]:
            return await txn.select_one("SELECT state_group FROM event_to_state_groups WHERE event_id = ?", (event_id,))

        row = await self.db.run_interaction("get_state_group_of_event", txn_fn, readonly=True)
        return row[0] if row else None

    async def get_state_group_info(self, group: int) -> Optional[tuple[Optional[int], int]]:
        """(prev_group, chain_length) of a group."""

        async def txn_fn(txn: Txn) -> Optional[tuple]:
            return await txn.select_one("SELECT prev_group, chain_length FROM state_groups WHERE id = ?", (group,))

        row = await self.db.run_interaction("get_state_group_info", txn_fn, readonly=True)
        return (row[0], row[1]) if row else None

    def _cache_group(self, group: int, state: StateMap) -> None:
        self._group_cache[group] = state
        self._group_cache.move_to_end(group)
        while len(self._group_cache) > self._group_cache_size:
            self._group_cache.popitem(last=False)

    async def get_state_ids_for_group(self, group: int) -> StateMap:
        """The full state of a group: its snapshot plus the deltas down the chain (cached)."""
        cached = self._group_cache.get(group)
        if cached is not None:
            self._group_cache.move_to_end(group)
            return cached

        async def txn_fn(txn: Txn) -> list:
            # The whole chain down to its snapshot in one round trip (recursive CTE on both engines).
            return await txn.select(
                "WITH RECURSIVE chain(id, n) AS ("
                " SELECT id, 0 FROM state_groups WHERE id = ?"
                " UNION ALL SELECT g.prev_group, chain.n + 1 FROM state_groups AS g JOIN chain ON g.id = chain.id"
                " WHERE g.prev_group IS NOT NULL)"
                " SELECT chain.n, e.type, e.state_key, e.event_id FROM chain"
                " JOIN state_group_entries AS e ON e.state_group = chain.id ORDER BY chain.n DESC",
                (group,),
            )

        rows = await self.db.run_interaction("get_state_group", txn_fn, readonly=True)
        state: StateMap = {}
        # Oldest (the snapshot) first, so later deltas override it.
        for _, etype, skey, eid in rows:
            if eid is None:
                state.pop((etype, skey), None)
            else:
                state[(etype, skey)] = eid
        self._cache_group(group, state)
        return state

    async def get_state_groups_of_events(self, event_ids: Iterable[str]) -> dict[str, int]:
        """event_id → state group for many events in one round trip (events without a group are left out)."""
        ids = list(dict.fromkeys(event_ids))
        if not ids:
            return {}

        async def txn_fn(txn: Txn) -> list:
            return await txn.select_in("SELECT event_id, state_group FROM event_to_state_groups WHERE event_id IN ({in})", ids)

        rows = await self.db.run_interaction("get_state_groups_of_events", txn_fn, readonly=True)
        return {r[0]: r[1] for r in rows}

    async def get_state_ids_for_groups(self, groups: Iterable[int]) -> dict[int, StateMap]:
        """Like :meth:`get_state_ids_for_group` for many groups, loading the uncached ones in one transaction."""
        wanted = list(dict.fromkeys(groups))
        result: dict[int, StateMap] = {}
        missing = []
        for group in wanted:
            cached = self._group_cache.get(group)
            if cached is not None:
                self._group_cache.move_to_end(group)
                result[group] = cached
            else:
                missing.append(group)
        if not missing:
            return result
        known = dict(self._group_cache)

        async def txn_fn(txn: Txn) -> tuple[dict[int, Optional[int]], dict[int, list]]:
            # Walk every chain down to a snapshot (or a group we already hold), a level at a time.
            prev: dict[int, Optional[int]] = {}
            frontier = list(missing)
            while frontier:
                marks = ",".join("?" * len(frontier))
                rows = await txn.select(f"SELECT id, prev_group FROM state_groups WHERE id IN ({marks})", frontier)
                found = {r[0]: r[1] for r in rows}
                next_frontier = []
                for g in frontier:
                    p = found.get(g)
                    prev[g] = p
                    if p is not None and p not in prev and p not in known and p not in next_frontier:
                        next_frontier.append(p)
                frontier = next_frontier
            entries: dict[int, list] = {g: [] for g in prev}
            for row in await txn.select_in(
                "SELECT state_group, type, state_key, event_id FROM state_group_entries WHERE state_group IN ({in})",
                list(prev),
            ):
                entries[row[0]].append(row[1:])
            return prev, entries

        prev, entries = await self.db.run_interaction("get_state_groups", txn_fn, readonly=True)
        built: dict[int, StateMap] = {}

        def build(group: int) -> StateMap:
            chain = []
            current: Optional[int] = group
            base: StateMap = {}
            while current is not None:
                if current in built:
                    base = built[current]
                    break
                if current in known:
                    base = known[current]
                    break
                chain.append(current)
                current = prev.get(current)
            state = dict(base)
            for g in reversed(chain):
                for etype, skey, eid in entries.get(g, ()):
                    if eid is None:
                        state.pop((etype, skey), None)
                    else:
                        state[(etype, skey)] = eid
            built[group] = state
            return state

        for group in missing:
            state = build(group)
            self._cache_group(group, state)
            result[group] = state
        return result

    async def get_state_ids_at_event(self, event_id: str) -> Optional[StateMap]:
        """The state after ``event_id``, or None for an unknown / outlier event."""
        group = await self.get_state_group_of_event(event_id)
        if group is None:
            return None
        return await self.get_state_ids_for_group(group)

    # -- out-of-band membership -----------------------------------------------------------------
    async def persist_out_of_band_membership(
        self, event_id: str, room_id: str, event_json: dict, stream_ordering: int, received_ts: int
    ) -> None:
        """A local user's membership in a room this server is not in: an invite or knock handled over
        federation, or the leave that rejects or rescinds one. Stored as an outlier (no state group, no
        forward extremity, not in the timeline), but with the user's membership row and their entry in the
        room's current members, so ``/sync`` lists the room under ``invite``/``knock``/``leave``. Membership
        reads (``/sync``, joined rooms) then see it like any other; the room itself stays unknown unless a
        join brings its state (that join's state then replaces this entry)."""
        ev = event_json
        state_key = ev["state_key"]
        content = ev.get("content") or {}
        membership = str(content.get("membership"))

        async def txn_fn(txn: Txn) -> None:
            await txn.execute(
                "INSERT INTO events (stream_ordering, event_id, room_id, type, state_key, sender, depth,"
                " origin_server_ts, received_ts, json, rejected_reason, outlier, replaces_state)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, NULL, 1, NULL)",
                (
                    stream_ordering, event_id, room_id, ev["type"], state_key, ev["sender"], ev.get("depth", 0),
                    ev.get("origin_server_ts", 0), received_ts, encode_event_json(ev),
                ),
            )
            displayname, avatar_url = content.get("displayname"), content.get("avatar_url")
            await txn.execute(
                "INSERT INTO room_memberships (event_id, room_id, user_id, sender, membership, stream_ordering,"
                " displayname, avatar_url) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    event_id, room_id, state_key, ev["sender"], membership, stream_ordering,
                    displayname if isinstance(displayname, str) else None,
                    avatar_url if isinstance(avatar_url, str) else None,
                ),
            )
            await txn.execute(
                "INSERT INTO current_state_events (room_id, type, state_key, event_id, membership)"
                " VALUES (?, 'm.room.member', ?, ?, ?) ON CONFLICT (room_id, type, state_key) DO UPDATE"
                " SET event_id = excluded.event_id, membership = excluded.membership",
                (room_id, state_key, event_id, membership),
            )

        await self.db.run_interaction("persist_out_of_band_membership", txn_fn)

    # -- membership ---------------------------------------------------------------------------
    async def get_rooms_for_user(self, user_id: str, memberships: tuple[str, ...] = ("join",)) -> dict[str, str]:
        """room_id → membership for the user's current memberships in the given states."""

        async def txn_fn(txn: Txn) -> list:
            marks = ",".join("?" * len(memberships))
            return await txn.select(
                "SELECT room_id, membership FROM current_state_events WHERE type = 'm.room.member' AND state_key = ?"
                f" AND membership IN ({marks})",
                (user_id, *memberships),
            )

        rows = await self.db.run_interaction("get_rooms_for_user", txn_fn, readonly=True)
        return {r[0]: r[1] for r in rows}

    async def get_members(self, room_id: str, memberships: Optional[tuple[str, ...]] = None) -> dict[str, str]:
        """user_id → event_id of the current member events (optionally only some memberships)."""

        async def txn_fn(txn: Txn) -> list:
            if memberships is None:
                return await txn.select(
                    "SELECT state_key, event_id FROM current_state_events WHERE room_id = ? AND type = 'm.room.member'",
                    (room_id,),
                )
            marks = ",".join("?" * len(memberships))
            return await txn.select(
                "SELECT state_key, event_id FROM current_state_events WHERE room_id = ? AND type = 'm.room.member'"
                f" AND membership IN ({marks})",
                (room_id, *memberships),
            )

        return {r[0]: r[1] for r in await self.db.run_interaction("get_members", txn_fn, readonly=True)}

    async def forget_room(self, user_id: str, room_id: str) -> None:
        async def txn_fn(txn: Txn) -> None:
            await txn.execute(
                "INSERT INTO room_forgotten (user_id, room_id) VALUES (?, ?) ON CONFLICT DO NOTHING", (user_id, room_id)
            )

        await self.db.run_interaction("forget_room", txn_fn)

    async def is_forgotten(self, user_id: str, room_id: str) -> bool:
        async def txn_fn(txn: Txn) -> Optional[tuple]:
            return await txn.select_one("SELECT 1 FROM room_forgotten WHERE user_id = ? AND room_id = ?", (user_id, room_id))

        return bool(await self.db.run_interaction("is_forgotten", txn_fn, readonly=True))

    async def get_membership_history(self, user_id: str, room_id: str) -> list[tuple[int, str]]:
        """(stream_ordering, membership) of every membership event of the user in the room, oldest first."""

        async def txn_fn(txn: Txn) -> list:
            return await txn.select(
                "SELECT stream_ordering, membership FROM room_memberships WHERE user_id = ? AND room_id = ?"
                " ORDER BY stream_ordering",
                (user_id, room_id),
            )

        return [(r[0], r[1]) for r in await self.db.run_interaction("membership_history", txn_fn, readonly=True)]

    # -- aliases -----------------------------------------------------------------------------------
    async def create_alias(self, alias: str, room_id: str, creator: str) -> bool:
        async def txn_fn(txn: Txn) -> int:
            return await txn.execute(
                "INSERT INTO room_aliases (room_alias, room_id, creator) VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
                (alias, room_id, creator),
            )

        return await self.db.run_interaction("create_alias", txn_fn) == 1

    async def get_alias(self, alias: str) -> Optional[tuple[str, str]]:
        """(room_id, creator) of a local alias."""

        async def txn_fn(txn: Txn) -> Optional[tuple]:
            return await txn.select_one("SELECT room_id, creator FROM room_aliases WHERE room_alias = ?", (alias,))

        row = await self.db.run_interaction("get_alias", txn_fn, readonly=True)
        return (row[0], row[1]) if row else None

    async def delete_alias(self, alias: str) -> bool:
        async def txn_fn(txn: Txn) -> int:
            return await txn.execute("DELETE FROM room_aliases WHERE room_alias = ?", (alias,))

        return await self.db.run_interaction("delete_alias", txn_fn) == 1

    async def get_aliases_for_room(self, room_id: str) -> list[str]:
        async def txn_fn(txn: Txn) -> list:
            return await txn.select("SELECT room_alias FROM room_aliases WHERE room_id = ? ORDER BY room_alias", (room_id,))

        return [r[0] for r in await self.db.run_interaction("get_aliases_for_room", txn_fn, readonly=True)]


async def _membership_of(txn: Txn, event_id: str) -> Optional[str]:
    row = await txn.select_one("SELECT json FROM events WHERE event_id = ?", (event_id,))
    if not row:
        return None
    content = json.loads(row[0]).get("content") or {}
    membership = content.get("membership")
    return membership if isinstance(membership, str) else None


def encode_event_json(ev: dict[str, Any]) -> str:
    return json.dumps(ev, ensure_ascii=False, separators=(",", ":"))
