"""The redaction algorithm: which parts of an event survive a redaction.

Spec: Client-Server API "Redactions", and the "Redactions" section of each room
version, written out in the fragments

- ``rooms/fragments/v1-redactions.md`` (rooms v1-v5),
- ``rooms/fragments/v6-redactions.md`` (v6, v7: ``m.room.aliases`` no longer kept),
- ``rooms/v8.md`` "Redactions" (v8: ``m.room.join_rules`` keeps ``allow``),
- ``rooms/fragments/v9-redactions.md`` (v9, v10: ``m.room.member`` keeps
  ``join_authorised_via_users_server``),
- ``rooms/fragments/v11-redactions.md`` (v11, and v12 which lists it as
  unchanged: ``origin``, ``membership`` and ``prev_state`` no longer kept at
  the top level; ``m.room.create`` keeps its whole content; power levels keep
  ``invite``; ``m.room.redaction`` keeps ``redacts``; ``m.room.member`` keeps
  ``third_party_invite.signed``).

The redacted form is what event signatures and reference hashes (hence event
IDs from v3) cover, so every key here matters to the byte.
"""

from __future__ import annotations

import copy
from typing import Any, Mapping

from mxtwisted.events.room_versions import RedactionRules, RoomVersion

__all__ = [
    "prune_unsigned_for_redaction",
    "redact_event",
    "redacted_view",
    "redaction_keeps",
]

_TOP_LEVEL_COMMON = frozenset(
    {
        "event_id",
        "type",
        "room_id",
        "sender",
        "state_key",
        "content",
        "hashes",
        "signatures",
        "depth",
        "prev_events",
        "auth_events",
        "origin_server_ts",
    }
)
# Kept up to v10, dropped from v11 on.
_TOP_LEVEL_PRE_V11 = _TOP_LEVEL_COMMON | {"prev_state", "origin", "membership"}

_POWER_LEVELS_KEYS = frozenset(
    {"ban", "events", "events_default", "kick", "redact", "state_default", "users", "users_default"}
)


def _top_level_keys(rules: RedactionRules) -> frozenset[str]:
    return _TOP_LEVEL_COMMON if rules is RedactionRules.V11 else _TOP_LEVEL_PRE_V11


def _content_keys(event_type: Any, rules: RedactionRules) -> frozenset[str]:
    """Content keys kept for ``event_type`` (without the v11 special cases handled inline)."""
    if event_type == "m.room.member":
        if rules in (RedactionRules.V9, RedactionRules.V11):
            return frozenset({"membership", "join_authorised_via_users_server"})
        return frozenset({"membership"})
    if event_type == "m.room.create":
        # From v11 the whole content is kept; that case is handled by the caller.
        return frozenset({"creator"})
    if event_type == "m.room.join_rules":
        if rules in (RedactionRules.V8, RedactionRules.V9, RedactionRules.V11):
            return frozenset({"join_rule", "allow"})
        return frozenset({"join_rule"})
    if event_type == "m.room.power_levels":
        if rules is RedactionRules.V11:
            return _POWER_LEVELS_KEYS | {"invite"}
        return _POWER_LEVELS_KEYS
    if event_type == "m.room.aliases" and rules is RedactionRules.V1:
        return frozenset({"aliases"})
    if event_type == "m.room.history_visibility":
        return frozenset({"history_visibility"})
    if event_type == "m.room.redaction" and rules is RedactionRules.V11:
        return frozenset({"redacts"})
    return frozenset()


def redaction_keeps(event_type: str, room_version: RoomVersion) -> tuple[frozenset[str], frozenset[str]]:
    """The (top-level keys, content keys) that redaction keeps for ``event_type``.

    Informational (used by tests and docs): for ``m.room.create`` in v11+ every
    content key is kept, and for ``m.room.member`` in v11+ the ``signed`` part
    of ``third_party_invite`` is kept as well; neither shows in the sets.
    """
    rules = room_version.redaction_rules
    return _top_level_keys(rules), _content_keys(event_type, rules)


def redact_event(event_dict: Mapping[str, Any], room_version: RoomVersion) -> dict[str, Any]:
    """Return the redacted copy of an event (the input is not modified).

    Spec: the room version's "Redactions" section (see the module docstring for
    the list per version). Every top-level key not in the version's keep-list
    is dropped (``unsigned`` included), and ``content`` is emptied except for
    the keys the event type keeps.

    The result always has a ``content`` object, empty when the event had no
    (object) content. Kept values are deep copies, so the result can be
    modified freely.
    """
    return copy.deepcopy(redacted_view(event_dict, room_version))


def redacted_view(event_dict: Mapping[str, Any], room_version: RoomVersion) -> dict[str, Any]:
    """The redacted event as :func:`redact_event` gives it, without copying the kept values: its top level
    and ``content`` are new dicts, nested values are the input's own. For reading only (hashing, signature
    checks), where the deep copy of every received event was a large part of the cost of checking them."""
    rules = room_version.redaction_rules
    top_keys = _top_level_keys(rules)
    event_type = event_dict.get("type")
    content = event_dict.get("content")
    if not isinstance(content, Mapping):
        content = {}

    new_content: dict[str, Any]
    if event_type == "m.room.create" and rules is RedactionRules.V11:
        new_content = dict(content)
    else:
        keep = _content_keys(event_type, rules)
        new_content = {k: v for k, v in content.items() if k in keep}
        if (
            event_type == "m.room.member"
            and rules is RedactionRules.V11
            and isinstance(content.get("third_party_invite"), Mapping)
        ):
            # v11: "allows the signed key of the third_party_invite key".
            tpi = content["third_party_invite"]
            new_content["third_party_invite"] = {"signed": tpi["signed"]} if "signed" in tpi else {}

    redacted = {k: v for k, v in event_dict.items() if k in top_keys and k != "content"}
    redacted["content"] = new_content
    return redacted


#: ``unsigned`` keys that describe the event's transport rather than its
#: content, and so may stay on a redacted event held by a server.
_UNSIGNED_KEPT_ON_REDACTION = frozenset({"age", "age_ts", "replaces_state"})


def prune_unsigned_for_redaction(unsigned: Any) -> dict[str, Any]:
    """The part of an event's ``unsigned`` that a server may keep once it redacts the event.

    The redaction algorithm itself drops ``unsigned`` entirely (it is not in any
    keep-list, and it is never signed or hashed). A server that stores or serves
    the redacted event still wants its own bookkeeping: the age (``age`` /
    ``age_ts``) and ``replaces_state``. Everything else, notably copies of other
    events' content such as ``prev_content`` or stripped room state, goes. The
    caller adds ``redacted_because`` when serving the event to clients (C-S API
    "Redactions").
    """
    if not isinstance(unsigned, Mapping):
        return {}
    return {k: copy.deepcopy(v) for k, v in unsigned.items() if k in _UNSIGNED_KEPT_ON_REDACTION}
