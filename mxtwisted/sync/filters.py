"""Filters: the model, its validation, and matching (pure: no I/O, no Twisted).

Spec: Client-Server API, "Filtering" and ``POST /user/{userId}/filter``
(``Filter``, ``RoomFilter``, ``RoomEventFilter``, ``EventFilter``). A filter
is parsed once with :func:`parse_filter`, which refuses wrong JSON types with
``M_BAD_JSON`` and well-typed but invalid values (a malformed user or room ID,
an unknown ``event_format``, a negative ``limit``) with ``M_INVALID_PARAM``;
unknown keys are allowed, for forward compatibility. Then:

* ``types`` / ``not_types`` match event types, where ``*`` matches any
  sequence of characters (anywhere in the pattern, e.g. ``m.room.*`` or
  ``*.member``); ``senders`` / ``not_senders`` and ``rooms`` / ``not_rooms``
  match exactly. A ``not_`` list always wins over the inclusive list, an
  absent inclusive list includes everything and an empty one nothing.
* ``contains_url`` keeps only (true) or drops (false) events whose content has
  a string ``url``.
* ``limit`` bounds the number of events; for the timeline the default is
  :data:`DEFAULT_TIMELINE_LIMIT` and the server's maximum
  :data:`MAX_TIMELINE_LIMIT`. ``0`` is accepted (no timeline events, like
  Synapse), although the spec asks clients for at least 1.
* ``event_fields`` (dot-separated property paths, spec appendix) and
  ``event_format`` shape the events returned.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Iterable, Mapping, Optional

from mxtwisted.events.property_paths import split_property_path
from mxtwisted.events.validation import is_valid_user_id

BAD_JSON = "M_BAD_JSON"
INVALID_PARAM = "M_INVALID_PARAM"

#: Timeline events per room when the filter does not say.
DEFAULT_TIMELINE_LIMIT = 10
#: The most timeline events per room a filter may ask for (as Synapse's ``filter_timeline_limit`` default).
MAX_TIMELINE_LIMIT = 100

EVENT_FORMATS = ("client", "federation")


class InvalidFilter(ValueError):
    """A filter that does not follow the spec; ``errcode`` is ``M_BAD_JSON`` or ``M_INVALID_PARAM``."""

    def __init__(self, errcode: str, message: str) -> None:
        super().__init__(message)
        self.errcode = errcode
        self.message = message


@lru_cache(maxsize=1024)
def _glob(pattern: str) -> re.Pattern[str]:
    return re.compile(".*".join(re.escape(part) for part in pattern.split("*")), re.DOTALL)


def type_matches(pattern: str, event_type: Optional[str]) -> bool:
    """Whether ``event_type`` matches a ``types`` entry, where ``*`` is any sequence of characters."""
    if event_type is None:
        return False
    if "*" not in pattern:
        return pattern == event_type
    return _glob(pattern).fullmatch(event_type) is not None


@dataclass(frozen=True)
class EventFilter:
    """Spec ``EventFilter``: presence and global account data (and the base of ``RoomEventFilter``)."""

    limit: Optional[int] = None
    types: Optional[tuple[str, ...]] = None
    not_types: tuple[str, ...] = ()
    senders: Optional[tuple[str, ...]] = None
    not_senders: tuple[str, ...] = ()

    def matches_type(self, event_type: Optional[str]) -> bool:
        if any(type_matches(p, event_type) for p in self.not_types):
            return False
        return self.types is None or any(type_matches(p, event_type) for p in self.types)

    def matches_sender(self, sender: Optional[str]) -> bool:
        if sender is not None and sender in self.not_senders:
            return False
        return self.senders is None or (sender is not None and sender in self.senders)

    def matches(self, event: Mapping[str, Any]) -> bool:
        """Whether an event-shaped dict (``type``, ``sender``...) passes the filter."""
        return self.matches_type(event.get("type")) and self.matches_sender(event.get("sender"))

    def filter(self, events: Iterable[Mapping[str, Any]]) -> list[Any]:
        """The events that pass, at most ``limit`` of them (the first ones)."""
        out = [e for e in events if self.matches(e)]
        return out if self.limit is None else out[: self.limit]

    def blocks_all(self) -> bool:
        """True when nothing can pass (so the data need not even be fetched)."""
        return self.types == () or self.senders == () or "*" in self.not_types


@dataclass(frozen=True)
class RoomEventFilter(EventFilter):
    """Spec ``RoomEventFilter``: timeline, state, ephemeral and room account data."""

    rooms: Optional[tuple[str, ...]] = None
    not_rooms: tuple[str, ...] = ()
    contains_url: Optional[bool] = None
    lazy_load_members: bool = False
    include_redundant_members: bool = False
    unread_thread_notifications: bool = False

    def matches_room(self, room_id: Optional[str]) -> bool:
        if room_id is not None and room_id in self.not_rooms:
            return False
        return self.rooms is None or (room_id is not None and room_id in self.rooms)

    def matches(self, event: Mapping[str, Any], room_id: Optional[str] = None) -> bool:
        if not super().matches(event):
            return False
        if not self.matches_room(room_id if room_id is not None else event.get("room_id")):
            return False
        if self.contains_url is not None:
            content = event.get("content")
            has_url = isinstance(content, Mapping) and isinstance(content.get("url"), str)
            if has_url != self.contains_url:
                return False
        return True

    def filter_room(self, room_id: str, events: Iterable[Mapping[str, Any]]) -> list[Any]:
        """The events of one room that pass, at most ``limit`` of them."""
        out = [e for e in events if self.matches(e, room_id)]
        return out if self.limit is None else out[: self.limit]

    def blocks_all(self) -> bool:
        return super().blocks_all() or self.rooms == () or "*" in self.not_rooms


@dataclass(frozen=True)
class RoomFilter:
    """Spec ``RoomFilter``: which rooms, and a filter per part of each room."""

    rooms: Optional[tuple[str, ...]] = None
    not_rooms: tuple[str, ...] = ()
    include_leave: bool = False
    ephemeral: RoomEventFilter = field(default_factory=RoomEventFilter)
    state: RoomEventFilter = field(default_factory=RoomEventFilter)
    timeline: RoomEventFilter = field(default_factory=RoomEventFilter)
    account_data: RoomEventFilter = field(default_factory=RoomEventFilter)

    def matches_room(self, room_id: str) -> bool:
        """Applied before the per-part filters: to every room of every section."""
        if room_id in self.not_rooms:
            return False
        return self.rooms is None or room_id in self.rooms


@dataclass(frozen=True)
class Filter:
    """Spec ``Filter``: what ``/sync`` returns."""

    event_fields: Optional[tuple[str, ...]] = None
    event_format: str = "client"
    presence: EventFilter = field(default_factory=EventFilter)
    account_data: EventFilter = field(default_factory=EventFilter)
    room: RoomFilter = field(default_factory=RoomFilter)

    @property
    def timeline_limit(self) -> int:
        limit = self.room.timeline.limit
        if limit is None:
            return DEFAULT_TIMELINE_LIMIT
        return min(limit, MAX_TIMELINE_LIMIT)

    @property
    def lazy_load_members(self) -> bool:
        """Spec: for ``/sync``, lazy-loading is set on the ``state`` part of the room filter."""
        return self.room.state.lazy_load_members

    @property
    def include_redundant_members(self) -> bool:
        return self.room.state.lazy_load_members and self.room.state.include_redundant_members

    @property
    def unread_thread_notifications(self) -> bool:
        return self.room.timeline.unread_thread_notifications

    def shape_event(self, event: dict[str, Any]) -> dict[str, Any]:
        """Apply ``event_fields`` to a serialised event."""
        if self.event_fields is None:
            return event
        return apply_event_fields(event, self.event_fields)


DEFAULT_FILTER = Filter()


# -- parsing and validation ----------------------------------------------------------------------------
def _where(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _object(value: Any, path: str) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise InvalidFilter(BAD_JSON, f"'{path}' must be an object")
    return value


def _bool(obj: Mapping[str, Any], key: str, path: str) -> Optional[bool]:
    value = obj.get(key)
    if value is None:
        return None
    if not isinstance(value, bool):
        raise InvalidFilter(BAD_JSON, f"'{_where(path, key)}' must be a boolean")
    return value


def _strings(obj: Mapping[str, Any], key: str, path: str) -> Optional[tuple[str, ...]]:
    value = obj.get(key)
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise InvalidFilter(BAD_JSON, f"'{_where(path, key)}' must be an array of strings")
    return tuple(value)


def _user_ids(obj: Mapping[str, Any], key: str, path: str) -> Optional[tuple[str, ...]]:
    values = _strings(obj, key, path)
    for value in values or ():
        if not is_valid_user_id(value, historical=True):
            raise InvalidFilter(INVALID_PARAM, f"'{_where(path, key)}': {value!r} is not a user ID")
    return values


def _room_ids(obj: Mapping[str, Any], key: str, path: str) -> Optional[tuple[str, ...]]:
    values = _strings(obj, key, path)
    for value in values or ():
        if not value.startswith("!") or len(value) < 2:
            raise InvalidFilter(INVALID_PARAM, f"'{_where(path, key)}': {value!r} is not a room ID")
    return values


def _limit(obj: Mapping[str, Any], path: str) -> Optional[int]:
    value = obj.get("limit")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidFilter(BAD_JSON, f"'{_where(path, 'limit')}' must be an integer")
    if isinstance(value, float):
        if not value.is_integer():
            raise InvalidFilter(BAD_JSON, f"'{_where(path, 'limit')}' must be an integer")
        value = int(value)
    if value < 0:
        raise InvalidFilter(INVALID_PARAM, f"'{_where(path, 'limit')}' must not be negative")
    return value


def _event_filter_fields(obj: Mapping[str, Any], path: str) -> dict[str, Any]:
    return {
        "limit": _limit(obj, path),
        "types": _strings(obj, "types", path),
        "not_types": _strings(obj, "not_types", path) or (),
        "senders": _user_ids(obj, "senders", path),
        "not_senders": _user_ids(obj, "not_senders", path) or (),
    }


def parse_event_filter(value: Any, path: str = "") -> EventFilter:
    if value is None:
        return EventFilter()
    return EventFilter(**_event_filter_fields(_object(value, path or "filter"), path))


def parse_room_event_filter(value: Any, path: str = "") -> RoomEventFilter:
    """A ``RoomEventFilter`` (also the ``filter`` parameter of ``/messages`` and ``/context``)."""
    if value is None:
        return RoomEventFilter()
    obj = _object(value, path or "filter")
    return RoomEventFilter(
        **_event_filter_fields(obj, path),
        rooms=_room_ids(obj, "rooms", path),
        not_rooms=_room_ids(obj, "not_rooms", path) or (),
        contains_url=_bool(obj, "contains_url", path),
        lazy_load_members=bool(_bool(obj, "lazy_load_members", path)),
        include_redundant_members=bool(_bool(obj, "include_redundant_members", path)),
        unread_thread_notifications=bool(_bool(obj, "unread_thread_notifications", path)),
    )


def parse_room_filter(value: Any, path: str = "room") -> RoomFilter:
    if value is None:
        return RoomFilter()
    obj = _object(value, path)
    return RoomFilter(
        rooms=_room_ids(obj, "rooms", path),
        not_rooms=_room_ids(obj, "not_rooms", path) or (),
        include_leave=bool(_bool(obj, "include_leave", path)),
        ephemeral=parse_room_event_filter(obj.get("ephemeral"), _where(path, "ephemeral")),
        state=parse_room_event_filter(obj.get("state"), _where(path, "state")),
        timeline=parse_room_event_filter(obj.get("timeline"), _where(path, "timeline")),
        account_data=parse_room_event_filter(obj.get("account_data"), _where(path, "account_data")),
    )


def parse_filter(value: Any) -> Filter:
    """Validate a ``Filter`` JSON object and build its model. Raises :class:`InvalidFilter`."""
    obj = _object(value, "filter")
    event_format = obj.get("event_format", "client")
    if not isinstance(event_format, str):
        raise InvalidFilter(BAD_JSON, "'event_format' must be a string")
    if event_format not in EVENT_FORMATS:
        raise InvalidFilter(INVALID_PARAM, f"'event_format' must be one of {', '.join(EVENT_FORMATS)}")
    return Filter(
        event_fields=_strings(obj, "event_fields", ""),
        event_format=event_format,
        presence=parse_event_filter(obj.get("presence"), "presence"),
        account_data=parse_event_filter(obj.get("account_data"), "account_data"),
        room=parse_room_filter(obj.get("room"), "room"),
    )


# -- event_fields ---------------------------------------------------------------------------------------
def apply_event_fields(event: Mapping[str, Any], fields: Iterable[str]) -> dict[str, Any]:
    """Only the listed properties of ``event`` (paths that do not exist are skipped)."""
    out: dict[str, Any] = {}
    for path in fields:
        segments = split_property_path(path)
        source: Any = event
        for segment in segments:
            if not isinstance(source, Mapping) or segment not in source:
                source = _MISSING
                break
            source = source[segment]
        if source is _MISSING:
            continue
        target = out
        for segment in segments[:-1]:
            nested = target.get(segment)
            if not isinstance(nested, dict):
                nested = target[segment] = {}
            target = nested
        target[segments[-1]] = copy.deepcopy(source)
    return out


_MISSING = object()
