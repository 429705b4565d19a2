"""History visibility: which events a user may see.

Spec: Client-Server API, "Room History Visibility". Decided per event from the
room state at that event: ``world_readable`` events are visible to anyone;
otherwise the user's membership at the event decides (``joined``: join;
``invited``: invite or join; ``shared``: also anyone joined to the room now).
A user always sees their own membership events. Applied on every read path
(/messages, /context, /event, /state at an event, /members at a point).
"""

from __future__ import annotations

from typing import Iterable, Optional

from mxtwisted.storage.events import EventStore, StateMap, StoredEvent

WORLD_READABLE = "world_readable"
SHARED = "shared"
INVITED = "invited"
JOINED = "joined"


def _visibility_and_membership(
    state: StateMap, events_content: dict[str, dict], user_id: str
) -> tuple[str, Optional[str]]:
    hv_id = state.get(("m.room.history_visibility", ""))
    visibility = SHARED
    if hv_id is not None:
        value = events_content.get(hv_id, {}).get("history_visibility")
        if value in (WORLD_READABLE, SHARED, INVITED, JOINED):
            visibility = value
    member_id = state.get(("m.room.member", user_id))
    membership = None
    if member_id is not None:
        m = events_content.get(member_id, {}).get("membership")
        membership = m if isinstance(m, str) else None
    return visibility, membership


async def filter_events_for_user(
    store: EventStore,
    user_id: Optional[str],
    events: Iterable[StoredEvent],
    currently_joined: bool,
) -> list[StoredEvent]:
    """The events of one room that ``user_id`` (None: an anonymous peeker) may see, in input order."""
    return (await filter_room_events_for_user(store, user_id, [(list(events), currently_joined)]))[0]


async def filter_room_events_for_user(
    store: EventStore,
    user_id: Optional[str],
    batches: list[tuple[list[StoredEvent], bool]],
) -> list[list[StoredEvent]]:
    """:func:`filter_events_for_user` for several rooms at once: each batch is (events of one room,
    whether the user is joined to it now). The state at every event is read in a few round trips
    for all of them together (/sync reads many rooms at once)."""
    all_events = [ev for events, _ in batches for ev in events]
    groups = await store.get_state_groups_of_events(ev.event_id for ev in all_events)
    group_states = await store.get_state_ids_for_groups(set(groups.values()))
    states: dict[str, Optional[StateMap]] = {}
    needed: set[str] = set()
    for ev in all_events:
        group = groups.get(ev.event_id)
        state = group_states.get(group) if group is not None else None
        states[ev.event_id] = state
        if state is None:
            continue
        hv = state.get(("m.room.history_visibility", ""))
        if hv:
            needed.add(hv)
        if user_id is not None:
            member = state.get(("m.room.member", user_id))
            if member:
                needed.add(member)
    contents = {eid: stored.json.get("content") or {} for eid, stored in (await store.get_events(needed)).items()}
    return [_visible(events, states, contents, user_id, currently_joined) for events, currently_joined in batches]


def _visible(
    events: list[StoredEvent],
    states: dict[str, Optional[StateMap]],
    contents: dict[str, dict],
    user_id: Optional[str],
    currently_joined: bool,
) -> list[StoredEvent]:
    visible = []
    for ev in events:
        if user_id is not None and ev.type == "m.room.member" and ev.state_key == user_id:
            visible.append(ev)
            continue
        state = states.get(ev.event_id)
        if state is None:
            continue
        visibility, membership = _visibility_and_membership(state, contents, user_id or "")
        if ev.type == "m.room.history_visibility" and ev.replaces_state:
            # The more permissive of the visibility before and after the change applies to the change itself.
            visibility = WORLD_READABLE if visibility == WORLD_READABLE else SHARED if currently_joined else visibility
        if visibility == WORLD_READABLE:
            visible.append(ev)
        elif user_id is None:
            continue
        elif membership == "join":
            visible.append(ev)
        elif visibility == INVITED and membership == "invite":
            visible.append(ev)
        elif visibility == SHARED and currently_joined:
            visible.append(ev)
    return visible
