"""Read queries for ``/sync``, batched over rooms (over the tables of ``0005_rooms.sql``).

``/sync`` reads many rooms at once, so every method here takes all the rooms
it is about and answers in one transaction: one round trip to the database
thread (SQLite) or one connection checkout (PostgreSQL) however many rooms a
user is in, and each statement inside is an index lookup. Per-room lookups
("the newest N events of each room") are one small statement per room on
SQLite, where a statement costs no round trip, and one statement for all rooms
on PostgreSQL (``unnest`` of the parameters ``CROSS JOIN LATERAL`` the
per-room lookup), where every statement is a round trip. Nothing here writes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Iterable, Optional

from mxtwisted.storage.database import Database, Txn
from mxtwisted.storage.events import _EVENT_COLUMNS, StoredEvent, _event_row

_CHUNK = 200
#: Above this many stream positions, "which of my rooms changed" probes each joined room instead of
#: scanning the range of the events stream.
LONG_RANGE = 20_000


@dataclass(frozen=True)
class MembershipInfo:
    """One of a user's membership events (their current one in a room, or one in a range)."""

    room_id: str
    membership: str
    event_id: str
    stream_ordering: int
    sender: str
    forgotten: bool = False


@dataclass(frozen=True)
class SummaryInfo:
    """What the room summary (``rooms.join.{roomId}.summary``) is made of, from the current state."""

    joined: int
    invited: int
    #: Whether ``m.room.name`` or ``m.room.canonical_alias`` is set and not empty (then heroes are optional).
    named: bool
    #: Up to 5 other joined/invited members by stream ordering (else left/banned ones), for ``m.heroes``.
    heroes: tuple[str, ...]


class SyncStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def get_memberships(self, user_id: str) -> dict[str, MembershipInfo]:
        """room_id → the user's current membership, for every room they have one in."""

        async def txn_fn(txn: Txn) -> list:
            return await txn.select(
                "SELECT cse.room_id, cse.membership, cse.event_id, rm.stream_ordering, rm.sender,"
                " (SELECT 1 FROM room_forgotten f WHERE f.user_id = cse.state_key AND f.room_id = cse.room_id)"
                " FROM current_state_events cse JOIN room_memberships rm ON rm.event_id = cse.event_id"
                " WHERE cse.type = 'm.room.member' AND cse.state_key = ?",
                (user_id,),
            )

        rows = await self.db.run_interaction("sync_memberships", txn_fn, readonly=True)
        return {r[0]: MembershipInfo(r[0], r[1], r[2], r[3], r[4], bool(r[5])) for r in rows}

    async def get_changes(
        self, user_id: str, since: int, upto: int, completions: bool = True
    ) -> tuple[set[str], list[MembershipInfo], set[str]]:
        """What happened in ``(since, upto]`` on the events stream that concerns ``user_id``: the rooms they
        are joined to now that have new events, their own membership events (oldest first), and the rooms they
        are joined to that got their full state (joined with partial state, mxtwisted.federation.partial_state;
        looked for only with ``completions``).

        One range scan of the events stream joined to the user's membership: its cost depends on the
        events in the range, not on how many rooms the user is in (for a very old token, an index probe
        per joined room instead).
        """

        async def txn_fn(txn: Txn) -> tuple[list, list]:
            if upto - since <= LONG_RANGE:
                rooms = await txn.select(
                    "SELECT DISTINCT e.room_id FROM events e JOIN current_state_events cse"
                    " ON cse.room_id = e.room_id AND cse.type = 'm.room.member' AND cse.state_key = ?"
                    " WHERE e.stream_ordering > ? AND e.stream_ordering <= ? AND e.outlier = 0"
                    " AND e.rejected_reason IS NULL AND cse.membership = 'join'",
                    (user_id, since, upto),
                )
            else:
                # A token from long ago: one index probe per joined room beats scanning the whole range.
                rooms = await txn.select(
                    "SELECT cse.room_id FROM current_state_events cse WHERE cse.type = 'm.room.member'"
                    " AND cse.state_key = ? AND cse.membership = 'join' AND EXISTS (SELECT 1 FROM events e"
                    " WHERE e.room_id = cse.room_id AND e.stream_ordering > ? AND e.stream_ordering <= ?"
                    " AND e.outlier = 0 AND e.rejected_reason IS NULL)",
                    (user_id, since, upto),
                )
            members = await txn.select(
                "SELECT room_id, membership, event_id, stream_ordering, sender FROM room_memberships"
                " WHERE user_id = ? AND stream_ordering > ? AND stream_ordering <= ? ORDER BY stream_ordering",
                (user_id, since, upto),
            )
            if not completions:
                return rooms, members, []
            completed = await txn.select(
                "SELECT p.room_id FROM partial_state_completions p JOIN current_state_events cse"
                " ON cse.room_id = p.room_id AND cse.type = 'm.room.member' AND cse.state_key = ?"
                " WHERE p.stream_ordering > ? AND p.stream_ordering <= ? AND cse.membership = 'join'",
                (user_id, since, upto),
            )
            return rooms, members, completed

        rooms, members, completed = await self.db.run_interaction("sync_changes", txn_fn, readonly=True)
        return {r[0] for r in rooms}, [MembershipInfo(*r) for r in members], {r[0] for r in completed}

    async def get_memberships_at(self, user_id: str, room_ids: Iterable[str], position: int) -> dict[str, str]:
        """room_id → the user's membership at a stream position (rooms where they had none are left out)."""
        rooms = list(dict.fromkeys(room_ids))
        if not rooms:
            return {}

        lookup = (
            "SELECT membership FROM room_memberships WHERE user_id = ? AND room_id = {room} AND stream_ordering <= ?"
            " ORDER BY stream_ordering DESC LIMIT 1"
        )

        async def txn_fn(txn: Txn) -> dict[str, str]:
            out = {}
            if txn.engine.name == "postgres":
                rows = await txn.select(
                    "SELECT r.room_id, m.membership FROM unnest(?::text[]) AS r(room_id)"
                    f" CROSS JOIN LATERAL ({lookup.format(room='r.room_id')}) AS m",
                    (rooms, user_id, position),
                )
                return {r[0]: r[1] for r in rows}
            for room_id in rooms:
                row = await txn.select_one(lookup.format(room="?"), (user_id, room_id, position))
                if row:
                    out[room_id] = row[0]
            return out

        return await self.db.run_interaction("sync_memberships_at", txn_fn, readonly=True)

    async def get_recent_events(
        self, requests: list[tuple[str, int, int, int]]
    ) -> dict[str, list[StoredEvent]]:
        """For each (room_id, after, upto, limit): the room's newest ``limit`` events with stream ordering in
        ``(after, upto]``, newest first. Rejected and outlier events are never returned."""
        if not requests:
            return {}

        lookup = (
            f"SELECT {_EVENT_COLUMNS} FROM events WHERE room_id = {{room}} AND stream_ordering > {{after}}"
            " AND stream_ordering <= {upto} AND outlier = 0 AND rejected_reason IS NULL"
            " ORDER BY stream_ordering DESC LIMIT {limit}"
        )

        async def txn_fn(txn: Txn) -> list:
            if txn.engine.name == "postgres":
                inner = lookup.format(room="r.room_id", after="r.lo", upto="r.hi", limit="r.n")
                return await txn.select(
                    "SELECT e.* FROM unnest(?::text[], ?::bigint[], ?::bigint[], ?::bigint[]) AS r(room_id, lo, hi, n)"
                    f" CROSS JOIN LATERAL ({inner}) AS e",
                    [list(column) for column in zip(*requests, strict=True)],
                )
            rows: list = []
            for request in requests:
                rows.extend(await txn.select(lookup.format(room="?", after="?", upto="?", limit="?"), request))
            return rows

        rows = await self.db.run_interaction("sync_recent_events", txn_fn, readonly=True)
        out: dict[str, list[StoredEvent]] = {room_id: [] for room_id, _, _, _ in requests}
        for row in rows:
            out[row[1]].append(_event_row(row))
        for events in out.values():
            events.sort(key=lambda e: e.stream_ordering, reverse=True)
        return out

    async def get_state_groups_at(self, requests: Iterable[tuple[str, int]]) -> dict[tuple[str, int], Optional[int]]:
        """For each (room_id, position): the state group after the room's last event at or before the
        position, i.e. the room's state at that point of the stream (None: no event yet)."""
        wanted = list(dict.fromkeys(requests))
        if not wanted:
            return {}

        # The last event first (a backward index scan), then its group: cheap however long the room is.
        lookup = (
            "SELECT g.state_group FROM (SELECT event_id FROM events WHERE room_id = {room} AND stream_ordering <= {pos}"
            " AND outlier = 0 AND rejected_reason IS NULL ORDER BY stream_ordering DESC LIMIT 1) AS last"
            " JOIN event_to_state_groups g ON g.event_id = last.event_id"
        )

        async def txn_fn(txn: Txn) -> dict[tuple[str, int], Optional[int]]:
            out: dict[tuple[str, int], Optional[int]] = {key: None for key in wanted}
            if txn.engine.name == "postgres":
                rows = await txn.select(
                    "SELECT r.n, s.state_group FROM unnest(?::text[], ?::bigint[], ?::int[]) AS r(room_id, pos, n)"
                    f" CROSS JOIN LATERAL ({lookup.format(room='r.room_id', pos='r.pos')}) AS s",
                    ([k[0] for k in wanted], [k[1] for k in wanted], list(range(len(wanted)))),
                )
                for n, group in rows:
                    out[wanted[n]] = group
                return out
            for key in wanted:
                row = await txn.select_one(lookup.format(room="?", pos="?"), key)
                out[key] = row[0] if row else None
            return out

        return await self.db.run_interaction("sync_state_groups_at", txn_fn, readonly=True)

    async def get_rooms_ever_joined(self, user_id: str, room_ids: Iterable[str]) -> set[str]:
        """The rooms among ``room_ids`` the user has ever been joined to (whose state they may have seen)."""
        rooms = list(dict.fromkeys(room_ids))
        if not rooms:
            return set()

        async def txn_fn(txn: Txn) -> list:
            return await txn.select_in(
                "SELECT DISTINCT room_id FROM room_memberships WHERE user_id = ? AND membership = 'join'"
                " AND room_id IN ({in})",
                rooms, before=(user_id,), chunk=_CHUNK,
            )

        return {r[0] for r in await self.db.run_interaction("sync_ever_joined", txn_fn, readonly=True)}

    async def get_summaries(self, room_ids: Iterable[str], user_id: str) -> dict[str, SummaryInfo]:
        """Member counts, whether the room is named, and hero candidates, from the rooms' current state."""
        rooms = list(dict.fromkeys(room_ids))
        if not rooms:
            return {}

        async def txn_fn(txn: Txn) -> tuple[list, list, list]:
            counts = await txn.select_in(
                "SELECT room_id, membership, COUNT(*) FROM current_state_events"
                " WHERE room_id IN ({in}) AND type = 'm.room.member' AND membership IN ('join', 'invite')"
                " GROUP BY room_id, membership",
                rooms, chunk=_CHUNK,
            )
            names = await txn.select_in(
                "SELECT cse.room_id, cse.type, e.json FROM current_state_events cse"
                " JOIN events e ON e.event_id = cse.event_id"
                " WHERE cse.room_id IN ({in}) AND cse.type IN ('m.room.name', 'm.room.canonical_alias')"
                " AND cse.state_key = ''",
                rooms, chunk=_CHUNK,
            )
            named = {r[0] for r in names if _names_room(r[1], r[2])}
            unnamed = [r for r in rooms if r not in named]
            heroes = await txn.select_in(
                "SELECT room_id, state_key, grp, rn FROM ("
                " SELECT cse.room_id, cse.state_key,"
                " CASE WHEN cse.membership IN ('join', 'invite') THEN 0 ELSE 1 END AS grp,"
                " ROW_NUMBER() OVER (PARTITION BY cse.room_id,"
                " CASE WHEN cse.membership IN ('join', 'invite') THEN 0 ELSE 1 END"
                " ORDER BY rm.stream_ordering) AS rn"
                " FROM current_state_events cse JOIN room_memberships rm ON rm.event_id = cse.event_id"
                " WHERE cse.room_id IN ({in}) AND cse.type = 'm.room.member' AND cse.state_key <> ?"
                " AND cse.membership IN ('join', 'invite', 'leave', 'ban')"
                ") ranked WHERE rn <= 5 ORDER BY room_id, grp, rn",
                unnamed, after=(user_id,), chunk=_CHUNK,
            )
            return counts, [(r, True) for r in named], heroes

        counts, named_rows, hero_rows = await self.db.run_interaction("sync_summaries", txn_fn, readonly=True)
        joined: dict[str, int] = {}
        invited: dict[str, int] = {}
        for room_id, membership, count in counts:
            (joined if membership == "join" else invited)[room_id] = int(count)
        named = {r for r, _ in named_rows}
        by_group: dict[str, dict[int, list[str]]] = {}
        for room_id, member, group, _ in hero_rows:
            by_group.setdefault(room_id, {}).setdefault(int(group), []).append(member)
        out = {}
        for room_id in rooms:
            groups = by_group.get(room_id, {})
            heroes = groups.get(0) or groups.get(1) or []
            out[room_id] = SummaryInfo(joined.get(room_id, 0), invited.get(room_id, 0), room_id in named, tuple(heroes))
        return out


def _names_room(event_type: str, event_json: str) -> bool:
    """Whether an ``m.room.name`` / ``m.room.canonical_alias`` event sets a non-empty name / alias."""
    try:
        content = json.loads(event_json).get("content") or {}
    except ValueError:
        return False
    value = content.get("name" if event_type == "m.room.name" else "alias") if isinstance(content, dict) else None
    return isinstance(value, str) and bool(value)
