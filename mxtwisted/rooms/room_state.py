"""The state of a room at a point of its DAG, for events other servers send us.

Spec: Server-Server API "Checks performed on receipt of a PDU" and the room versions' "State resolution".
A local event always builds on the room's current state, but an event of another server may name any
events as its prev_events: the state before it is the state after its prev_event (one), or the resolution of
the states after each of them (several). Likewise the room's current state after it is the resolution of the
states after each forward extremity. The resolution itself is the Protocol core's
(:func:`mxtwisted.events.state_res.resolve_state_groups`); this module loads what it needs: the states
(through state groups) and the events of their auth chains.

Resolution only loads events when the states really differ; states that agree (the usual case: one prev event,
or prevs whose states are the same group) cost one group lookup.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Optional, Sequence

from mxtwisted.events.event import Event
from mxtwisted.events.room_versions import RoomVersion
from mxtwisted.events.state_res import resolve_state_groups, separate
from mxtwisted.storage.events import EventStore, StateMap, StoredEvent


class StateUnknown(Exception):
    """The state after some of the given events is not known here (``event_ids``): it must be fetched from
    another server before the event that needs it can be checked."""

    def __init__(self, event_ids: Sequence[str]) -> None:
        super().__init__(f"state unknown after {', '.join(event_ids)}")
        self.event_ids = list(event_ids)


@dataclass
class GroupedState:
    """A state map and, when one exists, the state group that holds exactly it (a base for new delta groups)."""

    state: StateMap
    group: Optional[int]
    chain_length: int = 0


def auth_ids_of(stored: StoredEvent, version: RoomVersion) -> list[str]:
    """The auth events of an event; from room v12 the create event, named by the room ID, is one of them."""
    ids = Event(stored.json, version).auth_event_ids
    if version.room_id_from_create_event and stored.type != "m.room.create":
        ids = ids + ["$" + stored.room_id[1:]]
    return ids


async def load_auth_chain(store: EventStore, event_ids: Iterable[str], version: RoomVersion) -> list[StoredEvent]:
    """Every event in the auth chains of ``event_ids`` (the events themselves only as auth events of
    another), each once, walking ``auth_events`` a level at a time; oldest first."""
    seen: dict[str, StoredEvent] = {}
    start = list(dict.fromkeys(event_ids))
    frontier: set[str] = set()
    for stored in (await store.get_events(start)).values():
        frontier.update(auth_ids_of(stored, version))
    while frontier:
        found = await store.get_events(frontier)
        next_frontier: set[str] = set()
        for event_id, stored in found.items():
            seen[event_id] = stored
            for auth_id in auth_ids_of(stored, version):
                if auth_id not in seen and auth_id not in found:
                    next_frontier.add(auth_id)
        frontier = next_frontier
    return sorted(seen.values(), key=lambda s: (s.json.get("depth", 0), s.stream_ordering))


async def states_after(store: EventStore, event_ids: Sequence[str]) -> dict[str, GroupedState]:
    """The state after each event (its state group). Raises :class:`StateUnknown` for events without one
    (unknown events, or outliers stored without their state)."""
    groups = await store.get_state_groups_of_events(event_ids)
    unknown = [eid for eid in event_ids if eid not in groups]
    if unknown:
        raise StateUnknown(unknown)
    maps = await store.get_state_ids_for_groups(set(groups.values()))
    out = {}
    for event_id in event_ids:
        group = groups[event_id]
        out[event_id] = GroupedState(maps[group], group)
    return out


async def resolve(
    store: EventStore, version: RoomVersion, states: Sequence[GroupedState], unstored: Iterable[Event] = ()
) -> GroupedState:
    """The resolution of ``states``. When they are all one group (or equal maps) that one is returned as is;
    otherwise the events of the maps and of their auth chains are loaded and resolved (the result has no
    group yet). ``unstored``: events the maps name that are not stored yet (the event being persisted)."""
    distinct: dict[object, GroupedState] = {}
    for s in states:
        distinct.setdefault(s.group if s.group is not None else id(s), s)
    candidates = list(distinct.values())
    if len(candidates) == 1:
        return candidates[0]
    _, conflicted = separate([s.state for s in candidates])
    if not conflicted:
        return candidates[0]
    extra = {ev.event_id: ev for ev in unstored}
    ids = {eid for s in candidates for eid in s.state.values()}
    stored = dict(await store.get_events(ids - set(extra)))
    chain_of = (ids - set(extra)) | {a for ev in extra.values() for a in ev.auth_event_ids}
    for ev in await load_auth_chain(store, chain_of, version):
        stored.setdefault(ev.event_id, ev)
    if extra:
        stored.update(await store.get_events({a for ev in extra.values() for a in ev.auth_event_ids} - set(stored)))
    event_map = {
        eid: Event(s.json, version, event_id=eid, rejected_reason=s.rejected_reason) for eid, s in stored.items()
    }
    event_map.update(extra)
    return GroupedState(resolve_state_groups(version, [s.state for s in candidates], event_map), None)


async def state_before(store: EventStore, version: RoomVersion, prev_event_ids: Sequence[str]) -> GroupedState:
    """The state before an event with these prev_events (raises :class:`StateUnknown`)."""
    after = await states_after(store, prev_event_ids)
    return await resolve(store, version, list(after.values()))


__all__ = ["GroupedState", "StateUnknown", "auth_ids_of", "load_auth_chain", "resolve", "state_before", "states_after"]
