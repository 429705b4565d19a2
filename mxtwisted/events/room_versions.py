"""The room version table: every per-version rule of the Matrix spec, as data.

Spec: "Room Versions" (https://spec.matrix.org/latest/rooms/) and the page of each
version (v1 ... v12). Code elsewhere never compares version strings; it asks the
:class:`RoomVersion` for the property it depends on, so adding a version is one
new row here.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class EventFormat(enum.Enum):
    """How event IDs are formed and how events reference each other.

    ``V1``: rooms v1 and v2. Event IDs are ``$opaque:origin`` and appear in the
    event itself; ``prev_events`` and ``auth_events`` are ``[event_id, {hashes}]``
    pairs.
    ``V2``: room v3. Event IDs are ``$`` + unpadded standard base64 of the
    reference hash; references are plain event ID lists.
    ``V3``: rooms v4 and later. As ``V2`` but with URL-safe base64.
    """

    V1 = 1
    V2 = 2
    V3 = 3


class StateResAlgorithm(enum.Enum):
    """Which state resolution algorithm a room uses."""

    V1 = "v1"  # room version 1
    V2 = "v2"  # room versions 2 to 11
    V2_1 = "v2.1"  # room version 12 (MSC4297)


class RedactionRules(enum.Enum):
    """Which list of keys the redaction algorithm preserves.

    ``V1``: v1-v5 (the m.room.aliases ``aliases`` key is kept).
    ``V6``: v6-v7 (aliases no longer special).
    ``V8``: v8 (join_rules keeps ``allow``).
    ``V9``: v9-v10 (member keeps ``join_authorised_via_users_server``).
    ``V11``: v11 and later (MSC2176/MSC3821/MSC3989 rules).
    """

    V1 = 1
    V6 = 6
    V8 = 8
    V9 = 9
    V11 = 11


@dataclass(frozen=True)
class RoomVersion:
    """The rules of one room version. Every field names the behaviour it switches."""

    identifier: str
    event_format: EventFormat
    state_res: StateResAlgorithm
    redaction_rules: RedactionRules
    #: Server keys must be valid (``valid_until_ts``) at the event's
    #: ``origin_server_ts`` when verifying its signatures (v5+).
    enforce_key_validity: bool
    #: m.room.aliases events have their own auth rule (v1-v5).
    special_case_aliases_auth: bool
    #: Events must be strict canonical JSON: integers within [-(2**53)+1,
    #: (2**53)-1], no floats (v6+).
    strict_canonicaljson: bool
    #: The ``notifications`` key of m.room.power_levels is checked like the
    #: other power levels when it changes (v6+).
    limit_notifications_power_levels: bool
    #: The ``knock`` join rule and membership exist (v7+).
    knock_join_rule: bool
    #: The ``restricted`` join rule exists (v8+).
    restricted_join_rule: bool
    #: Redaction keeps ``join_authorised_via_users_server`` (v9+).
    restricted_join_rule_fix: bool
    #: The ``knock_restricted`` join rule exists (v10+).
    knock_restricted_join_rule: bool
    #: Power level values must be integers, not strings (v10+).
    enforce_int_power_levels: bool
    #: The create event has no ``creator``; its ``sender`` is the creator (v11+).
    implicit_room_creator: bool
    #: m.room.redaction carries ``redacts`` in ``content`` as well (v11+).
    redacts_in_content: bool
    #: The room's creators (create ``sender`` plus ``additional_creators``) have
    #: infinite power and are not listed in m.room.power_levels (v12, MSC4289).
    privileged_creators: bool
    #: The room ID is ``!`` + the create event's reference hash, the create
    #: event has no ``room_id`` and is never listed in ``auth_events`` (v12,
    #: MSC4291).
    room_id_from_create_event: bool
    #: The 255-byte limits on ``type``, ``state_key``, ``sender``, ``room_id``
    #: and ``event_id`` are applied in bytes, dropping the event (v11+). Before
    #: v11, Synapse measured them in code points, so an event within 255 code
    #: points but over 255 bytes is kept as *rejected* rather than dropped, for
    #: every server to agree on the room's DAG. Not a spec rule: interop.
    strict_event_byte_limits: bool = False

    @property
    def event_id_in_event(self) -> bool:
        """Whether ``event_id`` is a field of the event (v1, v2)."""
        return self.event_format is EventFormat.V1


def _v(identifier: str, n: int) -> RoomVersion:
    """Build the row of room version ``n`` from the version that introduced each rule."""
    if n <= 2:
        event_format = EventFormat.V1
    elif n == 3:
        event_format = EventFormat.V2
    else:
        event_format = EventFormat.V3
    if n == 1:
        state_res = StateResAlgorithm.V1
    elif n <= 11:
        state_res = StateResAlgorithm.V2
    else:
        state_res = StateResAlgorithm.V2_1
    if n <= 5:
        redaction = RedactionRules.V1
    elif n <= 7:
        redaction = RedactionRules.V6
    elif n == 8:
        redaction = RedactionRules.V8
    elif n <= 10:
        redaction = RedactionRules.V9
    else:
        redaction = RedactionRules.V11
    return RoomVersion(
        identifier=identifier,
        event_format=event_format,
        state_res=state_res,
        redaction_rules=redaction,
        enforce_key_validity=n >= 5,
        special_case_aliases_auth=n <= 5,
        strict_canonicaljson=n >= 6,
        limit_notifications_power_levels=n >= 6,
        knock_join_rule=n >= 7,
        restricted_join_rule=n >= 8,
        restricted_join_rule_fix=n >= 9,
        knock_restricted_join_rule=n >= 10,
        enforce_int_power_levels=n >= 10,
        implicit_room_creator=n >= 11,
        redacts_in_content=n >= 11,
        privileged_creators=n >= 12,
        room_id_from_create_event=n >= 12,
        strict_event_byte_limits=n >= 11,
    )


#: Every room version of the current stable spec, by identifier.
KNOWN_ROOM_VERSIONS: dict[str, RoomVersion] = {
    str(n): _v(str(n), n) for n in range(1, 13)
}

#: The default for new rooms: the spec says servers SHOULD use room version 12.
DEFAULT_ROOM_VERSION = "12"


class UnsupportedRoomVersion(ValueError):
    """A room version string that this server does not implement."""


def get_room_version(identifier: str) -> RoomVersion:
    """Return the :class:`RoomVersion` for ``identifier`` or raise UnsupportedRoomVersion."""
    try:
        return KNOWN_ROOM_VERSIONS[identifier]
    except (KeyError, TypeError):
        raise UnsupportedRoomVersion(identifier) from None
