"""A read-only view of one event in the PDU format of its room version.

Spec: "Server-Server API: PDUs" and "Room Versions: event format". The event is
kept as the plain JSON dict it travels as; :class:`Event` only adds typed access
to the fields the rest of the protocol code needs, with the per-version
differences (v1 reference pairs, v11 ``redacts`` in content, v12 room IDs)
hidden behind the same names.
"""

from __future__ import annotations

from typing import Any, Mapping, Optional

from mxtwisted.events.room_versions import EventFormat, RoomVersion


def _reference_ids(refs: Any, fmt: EventFormat) -> list[str]:
    """Event IDs out of a ``prev_events``/``auth_events`` list of any format."""
    if not isinstance(refs, list):
        return []
    if fmt is EventFormat.V1:
        return [r[0] for r in refs if isinstance(r, list) and r and isinstance(r[0], str)]
    return [r for r in refs if isinstance(r, str)]


class Event:
    """An event (PDU) of a known room version.

    ``event_id`` may be given when it is already known (for example when loaded
    from storage, or in tests); otherwise it is read from the event (v1, v2) or
    computed from the reference hash (v3+) on first use.
    """

    __slots__ = ("_d", "room_version", "_event_id", "rejected_reason")

    def __init__(
        self,
        event_dict: Mapping[str, Any],
        room_version: RoomVersion,
        event_id: Optional[str] = None,
        rejected_reason: Optional[str] = None,
    ) -> None:
        self._d = dict(event_dict)
        self.room_version = room_version
        self._event_id = event_id
        #: Why this event was rejected by the auth rules, or None if it was not.
        self.rejected_reason = rejected_reason

    # -- identity ---------------------------------------------------------
    @property
    def event_id(self) -> str:
        if self._event_id is None:
            if self.room_version.event_format is EventFormat.V1:
                self._event_id = self._d["event_id"]
            else:
                from mxtwisted.events.hashing import compute_event_id

                self._event_id = compute_event_id(self._d, self.room_version)
        return self._event_id

    @property
    def room_id(self) -> str:
        """The room ID; for a v12 create event, derived from its own event ID."""
        room_id = self._d.get("room_id")
        if room_id is None and self.room_version.room_id_from_create_event and self.type == "m.room.create":
            return "!" + self.event_id[1:]
        return room_id

    # -- plain fields -------------------------------------------------------
    @property
    def type(self) -> str:
        return self._d["type"]

    @property
    def state_key(self) -> Optional[str]:
        return self._d.get("state_key")

    def is_state(self) -> bool:
        return "state_key" in self._d

    @property
    def sender(self) -> str:
        return self._d["sender"]

    @property
    def content(self) -> dict:
        c = self._d.get("content")
        return c if isinstance(c, dict) else {}

    @property
    def depth(self) -> int:
        return self._d.get("depth", 0)

    @property
    def origin_server_ts(self) -> int:
        return self._d.get("origin_server_ts", 0)

    @property
    def membership(self) -> Optional[str]:
        m = self.content.get("membership")
        return m if isinstance(m, str) else None

    @property
    def redacts(self) -> Optional[str]:
        """The event a redaction redacts: ``content.redacts`` from v11, top level before."""
        if self.room_version.redacts_in_content:
            r = self.content.get("redacts")
            return r if isinstance(r, str) else None
        r = self._d.get("redacts")
        return r if isinstance(r, str) else None

    @property
    def prev_event_ids(self) -> list[str]:
        return _reference_ids(self._d.get("prev_events"), self.room_version.event_format)

    @property
    def auth_event_ids(self) -> list[str]:
        return _reference_ids(self._d.get("auth_events"), self.room_version.event_format)

    @property
    def hashes(self) -> dict:
        return self._d.get("hashes") or {}

    @property
    def signatures(self) -> dict:
        return self._d.get("signatures") or {}

    @property
    def unsigned(self) -> dict:
        return self._d.get("unsigned") or {}

    def get(self, key: str, default: Any = None) -> Any:
        return self._d.get(key, default)

    def get_dict(self) -> dict:
        """A copy of the event as its JSON dict."""
        return dict(self._d)

    def get_pdu_json(self) -> dict:
        """The event as sent over federation: without ``unsigned`` server-only data."""
        d = dict(self._d)
        d.pop("unsigned", None)
        return d

    def __repr__(self) -> str:
        return f"<Event {self.event_id} {self.type} {self.state_key!r}>"
