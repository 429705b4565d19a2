"""Storing history fetched from other servers (federation backfill).

Spec: Server-Server API "Backfilling and retrieving missing events". A server that
joined a room late has none of the events before its join; when a user pages back
that far, :mod:`mxtwisted.federation.backfill` fetches them and this module stores
them. Backfilled events are *history*: they never change the room's current state,
its forward extremities, or the events stream that ``/sync`` reads forwards. So,
as in Synapse, they get stream orderings **below every existing one** (negative
and decreasing, the oldest lowest): ``/messages`` going backwards reaches them
right after the earliest event it had, and a sync token (never negative) never
has them "after" it.

The lowest ordering is read inside the writing transaction (``MIN(stream_ordering)``,
an index lookup), so callers must not run two of these writes at once (the
backfiller serialises them).

The room's *backward extremities* are not kept in a table: they are the
prev_events of the room's earliest timeline events that are not known here with
their state (unknown, or outliers stored only for an auth chain), which one
indexed query finds whenever paging reaches the start of what is stored.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from mxtwisted.storage.database import Txn
from mxtwisted.storage.events import EventStore, StateMap, encode_event_json

#: How many of a room's earliest timeline events are looked at for missing prev_events.
EXTREMITY_SCAN = 50


@dataclass
class BackfilledEvent:
    """One event to store, with what the backfiller worked out about it."""

    event_id: str
    json: dict
    prev_event_ids: list[str] = field(default_factory=list)
    auth_event_ids: list[str] = field(default_factory=list)
    rejected_reason: Optional[str] = None
    #: An event of the state before the history (fetched with ``/state``): known, not in the timeline.
    outlier: bool = False
    #: The state group of the state after the event (timeline events only).
    state_group: Optional[int] = None
    #: When ``state_group`` is new: (prev_group, delta or full state when prev_group is None, chain_length).
    new_group: Optional[tuple[Optional[int], StateMap, int]] = None
    #: For a state event: the event it replaced in the state (``unsigned.prev_content``, served ``/state_ids``).
    replaces_state: Optional[str] = None
    #: A redaction we already had applies to it: ``json`` is the redacted form and this is the redaction.
    redacted_by: Optional[str] = None
    #: For an accepted redaction: the event it redacts (remembered, so the target is redacted when it comes).
    redacts: Optional[str] = None
    #: For an accepted redaction whose target is stored and may be redacted: the target's redacted JSON.
    redacted_target_json: Optional[dict] = None


async def backward_extremities(store: EventStore, room_id: str) -> dict[str, list[str]]:
    """The events the room's history continues with before the earliest events stored here: extremity ID →
    the IDs of our events naming it as a prev_event. Empty when the history is complete (or unknown)."""

    async def txn_fn(txn: Txn) -> list:
        return await txn.select(
            "SELECT g.prev_event_id, low.event_id FROM"
            " (SELECT event_id FROM events WHERE room_id = ? AND outlier = 0"
            "  ORDER BY stream_ordering ASC LIMIT ?) AS low"
            " JOIN event_edges AS g ON g.event_id = low.event_id"
            " LEFT JOIN events AS p ON p.event_id = g.prev_event_id"
            " LEFT JOIN event_to_state_groups AS s ON s.event_id = g.prev_event_id"
            # Unknown, or an outlier without state (one with state was placed in the DAG by another path).
            " WHERE p.event_id IS NULL OR (p.outlier = 1 AND s.event_id IS NULL)",
            (room_id, EXTREMITY_SCAN),
        )

    out: dict[str, list[str]] = {}
    for prev_id, successor in await store.db.run_interaction("backward_extremities", txn_fn, readonly=True):
        out.setdefault(prev_id, []).append(successor)
    return out


async def redactions_of(store: EventStore, event_ids: list[str]) -> dict[str, list[str]]:
    """Target event ID → IDs of the stored redactions naming it (a redaction is newer than its target,
    so backfill usually brings the target after we had the redaction)."""
    if not event_ids:
        return {}

    async def txn_fn(txn: Txn) -> list:
        return await txn.select_in("SELECT redacts, event_id FROM redactions WHERE redacts IN ({in})", event_ids)

    out: dict[str, list[str]] = {}
    for target, redaction in await store.db.run_interaction("redactions_of", txn_fn, readonly=True):
        out.setdefault(target, []).append(redaction)
    return out


async def lowest_stream_ordering(store: EventStore) -> int:
    """The lowest stream ordering in use (0 when none is negative): the floor for ``/messages`` reading forwards
    from the start of every room."""

    async def txn_fn(txn: Txn) -> Optional[tuple]:
        return await txn.select_one("SELECT MIN(stream_ordering) FROM events")

    row = await store.db.run_interaction("lowest_stream_ordering", txn_fn, readonly=True)
    return min(0, int(row[0])) if row and row[0] is not None else 0


async def persist_backfilled(
    store: EventStore, room_id: str, events: list[BackfilledEvent], received_ts: int
) -> list[str]:
    """Store ``events`` (oldest first) in one transaction, with stream orderings below every existing one (the
    first event lowest). An event already stored as an outlier without state becomes a timeline event; any
    other already stored event is left as it is. Touches neither the room's current state nor its forward
    extremities. Returns the IDs of the events that are now in the timeline."""

    async def txn_fn(txn: Txn) -> list[str]:
        row = await txn.select_one("SELECT MIN(stream_ordering) FROM events")
        low = min(0, int(row[0])) if row and row[0] is not None else 0
        added: list[str] = []
        for i, item in enumerate(events):
            ordering = low - len(events) + i
            if item.new_group is not None and item.state_group is not None:
                prev_group, delta, chain_length = item.new_group
                await txn.execute(
                    "INSERT INTO state_groups (id, room_id, prev_group, chain_length) VALUES (?, ?, ?, ?)",
                    (item.state_group, room_id, prev_group, chain_length),
                )
                await txn.executemany(
                    "INSERT INTO state_group_entries (state_group, type, state_key, event_id) VALUES (?, ?, ?, ?)",
                    [(item.state_group, t, sk, eid) for (t, sk), eid in delta.items()],
                )
            if not await _write_event(txn, room_id, item, ordering, received_ts):
                continue
            if item.outlier:
                continue
            added.append(item.event_id)
            await _write_timeline_extras(txn, room_id, item, ordering)
        return added

    return await store.db.run_interaction("persist_backfilled", txn_fn)


async def _write_event(txn: Txn, room_id: str, item: BackfilledEvent, ordering: int, received_ts: int) -> bool:
    """Insert the event row (or turn a stateless outlier into a timeline event). False: already known."""
    ev = item.json
    existing = await txn.select_one("SELECT outlier FROM events WHERE event_id = ?", (item.event_id,))
    if existing is not None:
        if item.outlier or not existing[0]:
            return False
        if await txn.select_one("SELECT 1 FROM event_to_state_groups WHERE event_id = ?", (item.event_id,)):
            return False
        await txn.execute(
            "UPDATE events SET stream_ordering = ?, outlier = 0, rejected_reason = COALESCE(rejected_reason, ?),"
            " replaces_state = ? WHERE event_id = ?",
            (ordering, item.rejected_reason, item.replaces_state, item.event_id),
        )
        if item.redacted_by is not None:
            await txn.execute(
                "UPDATE events SET json = ?, redacted_by = ? WHERE event_id = ? AND redacted_by IS NULL",
                (encode_event_json(ev), item.redacted_by, item.event_id),
            )
        return True
    await txn.execute(
        "INSERT INTO events (stream_ordering, event_id, room_id, type, state_key, sender, depth, origin_server_ts,"
        " received_ts, json, rejected_reason, outlier, redacted_by, replaces_state)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            ordering, item.event_id, room_id, ev["type"], ev.get("state_key"), ev["sender"], ev.get("depth", 0),
            ev.get("origin_server_ts", 0), received_ts, encode_event_json(ev),
            item.rejected_reason, int(item.outlier), item.redacted_by, item.replaces_state,
        ),
    )
    if item.prev_event_ids:
        await txn.executemany(
            "INSERT INTO event_edges (event_id, prev_event_id) VALUES (?, ?) ON CONFLICT DO NOTHING",
            [(item.event_id, p) for p in item.prev_event_ids],
        )
    if item.auth_event_ids:
        await txn.executemany(
            "INSERT INTO event_auth (event_id, auth_id) VALUES (?, ?) ON CONFLICT DO NOTHING",
            [(item.event_id, a) for a in item.auth_event_ids],
        )
    return True


async def _write_timeline_extras(txn: Txn, room_id: str, item: BackfilledEvent, ordering: int) -> None:
    """The state group, membership row and redaction of a timeline event (never current state)."""
    ev = item.json
    if item.state_group is not None:
        await txn.execute(
            "INSERT INTO event_to_state_groups (event_id, state_group) VALUES (?, ?) ON CONFLICT DO NOTHING",
            (item.event_id, item.state_group),
        )
    if item.rejected_reason is not None:
        return
    state_key = ev.get("state_key")
    if ev["type"] == "m.room.member" and isinstance(state_key, str):
        content = ev.get("content") or {}
        displayname, avatar_url = content.get("displayname"), content.get("avatar_url")
        await txn.execute(
            "INSERT INTO room_memberships (event_id, room_id, user_id, sender, membership, stream_ordering,"
            " displayname, avatar_url) VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
            (
                item.event_id, room_id, state_key, ev["sender"], str(content.get("membership")), ordering,
                displayname if isinstance(displayname, str) else None,
                avatar_url if isinstance(avatar_url, str) else None,
            ),
        )
    if item.redacts is not None:
        await txn.execute(
            "INSERT INTO redactions (event_id, redacts, room_id) VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
            (item.event_id, item.redacts, room_id),
        )
        if item.redacted_target_json is not None:
            await txn.execute(
                "UPDATE events SET json = ?, redacted_by = ? WHERE event_id = ? AND room_id = ? AND redacted_by IS NULL",
                (encode_event_json(item.redacted_target_json), item.event_id, item.redacts, room_id),
            )


__all__ = [
    "BackfilledEvent",
    "backward_extremities",
    "lowest_stream_ordering",
    "persist_backfilled",
    "redactions_of",
]
