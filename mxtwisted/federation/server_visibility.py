"""History visibility for other servers: which events a remote server may see.

Spec: Server-Server API, "Retrieving events" / Client-Server "Room History
Visibility". A server may see an event when any of its users could: events
sent by its own users always; events whose history visibility (in the state
at the event) is ``world_readable`` or ``shared``; for ``invited``, when one
of its users is invited or joined at the event; for ``joined``, when one of
its users is joined at the event. Like Synapse (``filter_events_for_server``),
an event the server may not see is given in its redacted form rather than
left out, so the DAG the server receives has no holes.
"""

from __future__ import annotations

from typing import Optional

from mxtwisted.events.redaction import redact_event
from mxtwisted.events.room_versions import RoomVersion
from mxtwisted.rooms.visibility import INVITED, JOINED, SHARED, WORLD_READABLE
from mxtwisted.storage.events import EventStore, StateMap, StoredEvent

HISTORY_VISIBILITY_KEY = ("m.room.history_visibility", "")


def server_of(user_id: str) -> str:
    """The server name of a user ID (what follows the first colon)."""
    return user_id.partition(":")[2]


def _visibility(state: Optional[StateMap], contents: dict[str, dict]) -> str:
    if state is None:
        # No state known at the event (an outlier): as Synapse, treat it as open.
        return SHARED
    hv_id = state.get(HISTORY_VISIBILITY_KEY)
    value = contents.get(hv_id, {}).get("history_visibility") if hv_id else None
    return value if value in (WORLD_READABLE, SHARED, INVITED, JOINED) else SHARED


async def visible_to_server(
    store: EventStore, server_name: str, events: list[StoredEvent]
) -> dict[str, bool]:
    """event_id → whether ``server_name`` may see the event (the state at every event read in a few round trips)."""
    groups = await store.get_state_groups_of_events(ev.event_id for ev in events)
    group_states = await store.get_state_ids_for_groups(set(groups.values()))
    states: dict[str, Optional[StateMap]] = {
        ev.event_id: group_states.get(groups[ev.event_id]) if ev.event_id in groups else None for ev in events
    }
    needed: set[str] = set()
    for state in states.values():
        if state is None:
            continue
        hv = state.get(HISTORY_VISIBILITY_KEY)
        if hv:
            needed.add(hv)
    contents = {eid: s.json.get("content") or {} for eid, s in (await store.get_events(needed)).items()}
    visibilities = {eid: _visibility(states[eid], contents) for eid in states}
    # Membership of the server's users only matters for "invited" and "joined".
    member_ids: set[str] = set()
    for ev in events:
        state = states[ev.event_id]
        if state is None or visibilities[ev.event_id] not in (INVITED, JOINED):
            continue
        member_ids.update(
            eid for (etype, skey), eid in state.items() if etype == "m.room.member" and server_of(skey) == server_name
        )
    memberships = {
        eid: (s.json.get("content") or {}).get("membership") for eid, s in (await store.get_events(member_ids)).items()
    }
    result: dict[str, bool] = {}
    for ev in events:
        visibility = visibilities[ev.event_id]
        state = states[ev.event_id]
        if server_of(ev.sender) == server_name or visibility in (WORLD_READABLE, SHARED) or state is None:
            result[ev.event_id] = True
            continue
        allowed = {"join", "invite"} if visibility == INVITED else {"join"}
        result[ev.event_id] = any(
            memberships.get(eid) in allowed
            for (etype, skey), eid in state.items()
            if etype == "m.room.member" and server_of(skey) == server_name
        )
    return result


async def filter_events_for_server(
    store: EventStore, server_name: str, events: list[StoredEvent], version: RoomVersion
) -> list[dict]:
    """The PDUs of ``events`` (in input order) as ``server_name`` may receive them: each in full when
    the server may see it, else redacted. Rejected events are left out (as Synapse: they are not part of
    the room for anybody)."""
    events = [ev for ev in events if ev.rejected_reason is None]
    visible = await visible_to_server(store, server_name, events)
    result = []
    for ev in events:
        pdu = pdu_json(ev)
        result.append(pdu if visible[ev.event_id] else redact_event(pdu, version))
    return result


def pdu_json(ev: StoredEvent) -> dict:
    """The event as a PDU: its stored JSON without server-local ``unsigned`` data."""
    pdu = dict(ev.json)
    pdu.pop("unsigned", None)
    return pdu
