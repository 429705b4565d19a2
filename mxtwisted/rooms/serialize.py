"""Events as clients see them (spec: Client-Server API, "Room Events", ClientEvent).

Clients get ``event_id``, ``type``, ``content``, ``sender``,
``origin_server_ts``, ``room_id``, ``state_key`` for state events, and an
``unsigned`` with ``age``, ``transaction_id`` (only for the sending device),
``prev_content`` for state events that replaced an earlier one, and
``redacted_because`` for redacted events. Server-only fields (``hashes``,
``signatures``, ``auth_events``, ``prev_events``, ``depth``, ``origin``...) are
never included.
"""

from __future__ import annotations

from typing import Any, Optional

_CLIENT_KEYS = ("type", "content", "sender", "origin_server_ts", "state_key")


def client_event(
    event_json: dict[str, Any],
    event_id: str,
    room_id: str,
    now_ms: int,
    transaction_id: Optional[str] = None,
    prev_content: Optional[dict] = None,
    prev_sender: Optional[str] = None,
    replaces_state: Optional[str] = None,
    redacted_because: Optional[dict] = None,
    include_room_id: bool = True,
) -> dict[str, Any]:
    out: dict[str, Any] = {k: event_json[k] for k in _CLIENT_KEYS if k in event_json}
    out.setdefault("content", {})
    out["event_id"] = event_id
    if include_room_id:
        out["room_id"] = room_id
    if event_json.get("type") == "m.room.redaction":
        redacts = event_json.get("redacts") or (event_json.get("content") or {}).get("redacts")
        if isinstance(redacts, str):
            out["redacts"] = redacts
    unsigned: dict[str, Any] = {}
    ts = event_json.get("origin_server_ts")
    if isinstance(ts, int):
        unsigned["age"] = max(0, now_ms - ts)
    if transaction_id is not None:
        unsigned["transaction_id"] = transaction_id
    if replaces_state is not None:
        unsigned["replaces_state"] = replaces_state
        if prev_content is not None:
            unsigned["prev_content"] = prev_content
        if prev_sender is not None:
            unsigned["prev_sender"] = prev_sender
    if redacted_because is not None:
        unsigned["redacted_because"] = redacted_because
    for key in ("invite_room_state", "knock_room_state"):
        value = (event_json.get("unsigned") or {}).get(key)
        if value is not None:
            unsigned[key] = value
    if unsigned:
        out["unsigned"] = unsigned
    return out


#: Spec "Stripped state": the state events given with invites and knocks (m.room.create required since v1.16).
STRIPPED_STATE_TYPES = (
    "m.room.create",
    "m.room.name",
    "m.room.avatar",
    "m.room.topic",
    "m.room.join_rules",
    "m.room.canonical_alias",
    "m.room.encryption",
)


def stripped_state(event_json: dict[str, Any]) -> dict[str, Any]:
    """Spec: "Stripped state" (invite_state / knock_state)."""
    return {k: event_json[k] for k in ("type", "state_key", "sender", "content") if k in event_json}
