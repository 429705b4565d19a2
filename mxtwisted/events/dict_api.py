"""Auth checks and state resolution on plain JSON dicts, for tools outside the server.

The server itself works with :class:`~mxtwisted.events.event.Event` objects;
these wrappers take events as they travel (dicts) and a room version
identifier, so a script can check or resolve a room from a JSON dump.
"""

from __future__ import annotations

from typing import Iterable, Mapping, Optional, Sequence, Union

from mxtwisted.events.auth import AuthError, check_auth_events_list, check_auth_rules
from mxtwisted.events.event import Event
from mxtwisted.events.room_versions import RoomVersion, get_room_version
from mxtwisted.events.state_res import resolve_state_groups

StateKey = tuple[str, str]


def _rv(room_version: Union[str, RoomVersion]) -> RoomVersion:
    return room_version if isinstance(room_version, RoomVersion) else get_room_version(room_version)


def check_event_auth(
    event: dict,
    auth_events: Union[Iterable[dict], Mapping[StateKey, dict]],
    room_version: Union[str, RoomVersion],
    check_listed: bool = True,
) -> Optional[str]:
    """Whether ``event`` is allowed by the auth rules: None if so, else the reason.

    ``auth_events`` is either the list of the event's own auth events (then the
    rules about that list are checked too, unless ``check_listed`` is False) or
    a state map ``{(type, state_key): event}`` to check against. For room v12,
    include the create event even though v12 events do not list it.
    """
    rv = _rv(room_version)
    ev = Event(event, rv)
    try:
        if isinstance(auth_events, Mapping):
            state = {key: Event(value, rv) for key, value in auth_events.items()}
        else:
            listed = [Event(e, rv) for e in auth_events]
            if check_listed:
                check_auth_events_list(ev, [e for e in listed if e.event_id in ev.auth_event_ids])
            state = {(e.type, e.state_key): e for e in listed if e.state_key is not None}
        check_auth_rules(ev, state)
    except AuthError as e:
        return e.reason
    return None


def resolve_state(
    room_version: Union[str, RoomVersion],
    state_maps: Sequence[Mapping[StateKey, str]],
    events: Iterable[dict],
) -> dict[StateKey, str]:
    """Resolve state maps (``{(type, state_key): event_id}``) given every event they and their auth chains use."""
    rv = _rv(room_version)
    event_map = {}
    for d in events:
        ev = Event(d, rv)
        event_map[ev.event_id] = ev
    return resolve_state_groups(rv, state_maps, event_map)
