"""Rooms joined with partial state, and putting their full state in place (mxtwisted.federation.partial_state).

Table ``partial_state_rooms`` (schema 0013). Completing a room rewrites, in one transaction, the state groups of
the events from the join on (their partial state plus the missing member events), the room's current state,
and removes the row: a crash leaves either the partial room (resumed at start-up) or the complete one.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Optional

from mxtwisted.storage.database import Txn
from mxtwisted.storage.events import EventStore, StateMap, _membership_of


@dataclass
class PartialRoom:
    room_id: str
    join_event_id: str
    #: The resident servers when we joined (``servers_in_room``).
    servers: list[str]


async def add_partial_room(store: EventStore, room: PartialRoom, now_ms: int) -> None:
    async def txn_fn(txn: Txn) -> None:
        await txn.execute(
            "INSERT INTO partial_state_rooms (room_id, join_event_id, servers, created_ts) VALUES (?, ?, ?, ?)"
            " ON CONFLICT (room_id) DO UPDATE SET join_event_id = excluded.join_event_id, servers = excluded.servers",
            (room.room_id, room.join_event_id, json.dumps(room.servers), now_ms),
        )

    await store.db.run_interaction("add_partial_room", txn_fn)


def _row(row: tuple) -> PartialRoom:
    servers = json.loads(row[2])
    return PartialRoom(row[0], row[1], [s for s in servers if isinstance(s, str)] if isinstance(servers, list) else [])


async def get_partial_room(store: EventStore, room_id: str) -> Optional[PartialRoom]:
    async def txn_fn(txn: Txn) -> Optional[tuple]:
        return await txn.select_one(
            "SELECT room_id, join_event_id, servers FROM partial_state_rooms WHERE room_id = ?", (room_id,)
        )

    row = await store.db.run_interaction("get_partial_room", txn_fn, readonly=True)
    return _row(row) if row else None


async def list_partial_rooms(store: EventStore) -> list[PartialRoom]:
    async def txn_fn(txn: Txn) -> list:
        return await txn.select("SELECT room_id, join_event_id, servers FROM partial_state_rooms ORDER BY created_ts")

    return [_row(r) for r in await store.db.run_interaction("list_partial_rooms", txn_fn, readonly=True)]


async def complete_partial_room(
    store: EventStore,
    room_id: str,
    new_groups: dict[int, StateMap],
    event_groups: dict[str, int],
    current_delta: StateMap,
    stream_ordering: int,
) -> None:
    """Put the full state in place: ``new_groups`` (snapshots), the events' groups (``event_groups``), the
    keys the current state gains (``current_delta``), and the room is no longer partial; it was completed at
    ``stream_ordering`` (of the events stream, for /sync)."""

    async def txn_fn(txn: Txn) -> None:
        for group, state in new_groups.items():
            await txn.execute(
                "INSERT INTO state_groups (id, room_id, prev_group, chain_length) VALUES (?, ?, NULL, 0)", (group, room_id)
            )
            await txn.executemany(
                "INSERT INTO state_group_entries (state_group, type, state_key, event_id) VALUES (?, ?, ?, ?)",
                [(group, t, sk, eid) for (t, sk), eid in state.items()],
            )
        await txn.executemany(
            "INSERT INTO event_to_state_groups (event_id, state_group) VALUES (?, ?)"
            " ON CONFLICT (event_id) DO UPDATE SET state_group = excluded.state_group",
            list(event_groups.items()),
        )
        for (etype, skey), eid in current_delta.items():
            membership = await _membership_of(txn, eid) if etype == "m.room.member" else None
            await txn.execute(
                "INSERT INTO current_state_events (room_id, type, state_key, event_id, membership)"
                " VALUES (?, ?, ?, ?, ?) ON CONFLICT (room_id, type, state_key) DO UPDATE"
                " SET event_id = excluded.event_id, membership = excluded.membership",
                (room_id, etype, skey, eid, membership),
            )
        await txn.execute("DELETE FROM partial_state_rooms WHERE room_id = ?", (room_id,))
        await txn.execute(
            "INSERT INTO partial_state_completions (room_id, stream_ordering) VALUES (?, ?)"
            " ON CONFLICT (room_id) DO UPDATE SET stream_ordering = excluded.stream_ordering",
            (room_id, stream_ordering),
        )

    await store.db.run_interaction("complete_partial_room", txn_fn)
    store.partial_completed_upto = max(store.partial_completed_upto, stream_ordering)
    for group, state in new_groups.items():
        store._cache_group(group, dict(state))


async def groups_since(store: EventStore, room_id: str, event_id: str) -> dict[str, int]:
    """event_id → state group of the events of the room stored since ``event_id`` (included)."""

    async def txn_fn(txn: Txn) -> list:
        return await txn.select(
            "SELECT e.event_id, g.state_group FROM events AS e JOIN event_to_state_groups AS g ON g.event_id = e.event_id"
            " WHERE e.room_id = ? AND e.stream_ordering >= (SELECT stream_ordering FROM events WHERE event_id = ?)",
            (room_id, event_id),
        )

    return {r[0]: r[1] for r in await store.db.run_interaction("groups_since", txn_fn, readonly=True)}


async def remove_partial_room(store: EventStore, room_id: str) -> None:
    async def txn_fn(txn: Txn) -> None:
        await txn.execute("DELETE FROM partial_state_rooms WHERE room_id = ?", (room_id,))

    await store.db.run_interaction("remove_partial_room", txn_fn)


__all__ = [
    "PartialRoom",
    "add_partial_room",
    "complete_partial_room",
    "get_partial_room",
    "groups_since",
    "list_partial_rooms",
    "remove_partial_room",
]
