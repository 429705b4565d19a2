"""The authorisation rules for events, for every room version 1 to 12.

Spec: "Room Versions", section "Authorisation rules" of each version page
(rooms/v1 ... rooms/v12 and the fragments v1-auth-rules, v3-auth-rules,
v8-auth-rules), with the definitions of the Server-Server API ("Checks
performed on receipt of a PDU": *required power level*, *invite/kick/ban/redact
level*, *target user*; "Auth events selection"; "Third-party invites") and the
power level defaults of the ``m.room.power_levels`` event schema.

This module is pure protocol logic: no I/O and no Twisted. Every difference
between room versions is read from the :class:`RoomVersion` flags, never from
the version string.

The entry points are:

* :func:`check_auth_rules` -- is ``event`` allowed given a map of auth state
  ``(type, state_key) -> Event``? (The rules that depend on state; used when
  authorising against the event's auth events, the state before the event, the
  current state, and by state resolution's iterative auth checks.)
* :func:`check_auth_events_list` -- the checks on the auth events an event
  itself lists (duplicates, wrong types, rejected, wrong room, missing or -- in
  v12 -- present create event). These need the list, not a map, so they are a
  separate step performed on receipt of a PDU.
* :func:`auth_types_for_event` -- "Auth events selection".

A failure raises :class:`AuthError`, whose ``reason`` names the rule in the
numbering of that room version's page (e.g. ``room v10 auth rule 4.3.2``).
"""

from __future__ import annotations

import math
import re
from typing import Any, Iterable, Mapping, Optional, Union

from signedjson.key import decode_verify_key_bytes
from signedjson.sign import verify_signed_json
from unpaddedbase64 import decode_base64

from mxtwisted.events.event import Event
from mxtwisted.events.room_versions import KNOWN_ROOM_VERSIONS, RoomVersion
from mxtwisted.events.validation import is_valid_user_id as _validation_user_id

__all__ = [
    "AuthError",
    "AuthEvents",
    "CREATE_KEY",
    "JOIN_RULES_KEY",
    "POWER_LEVELS_KEY",
    "PowerLevel",
    "StateKey",
    "auth_types_for_event",
    "can_apply_redaction",
    "check_auth_events_list",
    "check_auth_rules",
    "default_power_levels_for_no_pl_event",
    "get_creators",
    "get_named_level",
    "get_power_level",
    "get_send_level",
    "is_room_creator",
    "is_valid_user_id",
    "rule_number",
]

StateKey = tuple[str, str]
#: Auth state: the event in force for each ``(type, state_key)``.
AuthEvents = Mapping[StateKey, Event]
#: A power level: an ``int``, or ``math.inf`` for the room creators of v12.
PowerLevel = Union[int, float]

CREATE = "m.room.create"
MEMBER = "m.room.member"
JOIN_RULES = "m.room.join_rules"
POWER_LEVELS = "m.room.power_levels"
THIRD_PARTY_INVITE = "m.room.third_party_invite"
ALIASES = "m.room.aliases"
REDACTION = "m.room.redaction"

CREATE_KEY: StateKey = (CREATE, "")
POWER_LEVELS_KEY: StateKey = (POWER_LEVELS, "")
JOIN_RULES_KEY: StateKey = (JOIN_RULES, "")

#: ``content`` key of a restricted join naming the user who authorised it.
AUTHORISING_USER = "join_authorised_via_users_server"

#: The power level properties holding a single level (rule "For the properties
#: users_default, events_default, state_default, ban, redact, kick, invite").
SCALAR_LEVELS = ("users_default", "events_default", "state_default", "ban", "redact", "kick", "invite")

#: Defaults of the named levels, with or without an m.room.power_levels event
#: (Server-Server API "Definitions"; m.room.power_levels schema).
NAMED_LEVEL_DEFAULTS = {"invite": 0, "kick": 50, "ban": 50, "redact": 50}
EVENTS_DEFAULT = 0
STATE_DEFAULT = 50
USERS_DEFAULT = 0
#: Level of the room creator(s) when the room has no m.room.power_levels event (v1-v11).
CREATOR_DEFAULT_LEVEL = 100

#: ``rule_name`` of an AuthError raised because a power levels value that a
#: rule consults is malformed (possible in v1-v9, whose rules validate only
#: ``users``); no spec rule number applies.
MALFORMED_POWER_LEVELS = "malformed_power_levels"

_MISSING: Any = object()


class AuthError(Exception):
    """An event is not allowed by the authorisation rules.

    ``reason`` is a human-readable sentence naming the failed rule by its number
    in the room version's spec page; ``rule`` is that number (``"4.3.2"``) and
    ``rule_name`` a version-independent name (``"member.join.sender_is_target"``).
    """

    def __init__(self, reason: str, rule: Optional[str] = None, rule_name: Optional[str] = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.rule = rule
        self.rule_name = rule_name


# ---------------------------------------------------------------------------
# Rule numbering: each room version page numbers its rules differently (rules
# are added and removed). The outlines below list the rules in spec order; an
# entry with a flag exists only in versions where that RoomVersion flag is true
# ("!flag": false).
# ---------------------------------------------------------------------------

_Outline = tuple[tuple[str, Optional[str]], ...]

_OUTLINES: dict[str, _Outline] = {
    "": (
        ("create", None),
        ("room_id", "room_id_from_create_event"),
        ("auth_events", None),
        ("federate", None),
        ("aliases", "special_case_aliases_auth"),
        ("member", None),
        ("sender_joined", None),
        ("third_party_invite", None),
        ("required_power", None),
        ("state_key", None),
        ("power_levels", None),
        ("redaction", "event_id_in_event"),
        ("allow", None),
    ),
    "create": (
        ("prev_events", None),
        ("room_id", None),
        ("room_version", None),
        ("creator", "!implicit_room_creator"),
        ("additional_creators", "privileged_creators"),
        ("allow", None),
    ),
    # v12 drops rule 4 ("no create event") but keeps numbering rule 5 as 5.
    "auth_events": (
        ("duplicates", None),
        ("types", None),
        ("rejected", None),
        ("no_create", None),
        ("room", None),
    ),
    "aliases": (("state_key", None), ("domain", None), ("allow", None)),
    "member": (
        ("fields", None),
        ("authoriser_signature", "restricted_join_rule"),
        ("join", None),
        ("invite", None),
        ("leave", None),
        ("ban", None),
        ("knock", "knock_join_rule"),
        ("unknown", None),
    ),
    "member.join": (
        ("creator", None),
        ("sender_is_target", None),
        ("banned", None),
        ("invite", None),
        ("restricted", "restricted_join_rule"),
        ("public", None),
        ("reject", None),
    ),
    "member.join.restricted": (("member", None), ("authoriser", None), ("allow", None)),
    "member.invite": (
        ("third_party", None),
        ("sender_joined", None),
        ("target", None),
        ("power", None),
        ("reject", None),
    ),
    "member.invite.third_party": (
        ("target_banned", None),
        ("signed", None),
        ("fields", None),
        ("mxid", None),
        ("token", None),
        ("sender", None),
        ("signature", None),
        ("reject", None),
    ),
    "member.leave": (
        ("self", None),
        ("sender_joined", None),
        ("unban", None),
        ("kick", None),
        ("reject", None),
    ),
    "member.ban": (("sender_joined", None), ("power", None), ("reject", None)),
    "member.knock": (
        ("join_rule", None),
        ("sender_is_target", None),
        ("membership", None),
        ("reject", None),
    ),
    "third_party_invite": (("power", None),),
    "power_levels": (
        ("int_scalars", "enforce_int_power_levels"),
        ("int_maps", "enforce_int_power_levels"),
        ("users", None),
        ("creators", "privileged_creators"),
        ("no_previous", None),
        ("scalars", None),
        ("maps_old", None),
        ("maps_new", None),
        ("users_old", None),
        ("users_new", None),
        ("allow", None),
    ),
    "redaction": (("power", None), ("domain", None), ("reject", None)),
}


def _flag(rv: RoomVersion, flag: Optional[str]) -> bool:
    if flag is None:
        return True
    if flag.startswith("!"):
        return not getattr(rv, flag[1:])
    return bool(getattr(rv, flag))


def rule_number(rv: RoomVersion, rule_name: str) -> str:
    """The number of the rule ``rule_name`` (e.g. ``"member.join.banned"``) on
    the spec page of room version ``rv`` (e.g. ``"5.2.3"`` in v1, ``"4.3.3"`` in v10).

    The number stops at the first part that is unknown or absent from that
    version (``""`` for ``"aliases.domain"`` in v6)."""
    numbers: list[str] = []
    prefix = ""
    for part in rule_name.split("."):
        outline = _OUTLINES.get(prefix, ())
        number: Optional[int] = None
        n = 0
        for name, flag in outline:
            # v12 keeps numbering auth events rule 5 as 5 without rule 4.
            present = prefix == "auth_events" or _flag(rv, flag)
            n += present
            if name == part:
                number = n if present else None
                break
        if number is None:
            break
        numbers.append(str(number))
        prefix = f"{prefix}.{part}" if prefix else part
    return ".".join(numbers)


def _reject(event: Event, rule_name: str, detail: str) -> AuthError:
    rv = event.room_version
    number = rule_number(rv, rule_name)
    where = f"auth rule {number}" if number else "auth rules"
    return AuthError(
        f"room v{rv.identifier} {where} [{rule_name}]: {detail} (event {_eid(event)})",
        rule=number,
        rule_name=rule_name,
    )


def _eid(event: Event) -> str:
    try:
        return event.event_id
    except Exception:  # an event ID cannot be computed (no hashing module, malformed event)
        return "<unknown>"


# ---------------------------------------------------------------------------
# Identifiers (Appendices: "Server Name", "User Identifiers", "Historical User IDs")
# ---------------------------------------------------------------------------


def is_valid_user_id(user_id: Any) -> bool:
    """Whether ``user_id`` is a user ID servers must accept in events.

    This is the validation applied to an event's ``sender``
    (:func:`mxtwisted.events.validation.is_valid_user_id` with
    ``historical=True``), as v12 rule 1.4 requires for ``additional_creators``;
    it also decides "valid user IDs" for the ``users`` of m.room.power_levels.
    Appendices "User Identifiers" and "Historical User IDs": ``@localpart:domain``
    of at most 255 bytes, the domain a server name, the localpart any (possibly
    empty) run of non-surrogate code points other than ``:`` and NUL.
    """
    return _validation_user_id(user_id, historical=True)


def _domain(identifier: Any) -> Optional[str]:
    """The part after the first ``:`` of a user, room or event ID, or None."""
    if not isinstance(identifier, str):
        return None
    _, sep, domain = identifier.partition(":")
    return domain if sep else None


# ---------------------------------------------------------------------------
# Power level values (rooms/v1 "m.room.power_levels events accept values as
# strings" and "... as floats"; rooms/v10 "must be integers")
# ---------------------------------------------------------------------------

_STRINGY_INT = re.compile(r"[+-]?[0-9]+", re.ASCII)


def _parse_level(value: Any, rv: RoomVersion) -> Optional[int]:
    """The integer a power level value stands for in room version ``rv``, or None
    if it is not a valid power level there.

    * every version: a JSON integer (a JSON boolean is not one);
    * without ``enforce_int_power_levels`` (v1-v9): a string of base-10 digits,
      optionally signed, optionally surrounded by whitespace;
    * without ``strict_canonicaljson`` (v1-v5): a finite float, truncated
      towards zero.
    """
    if type(value) is int:
        return value
    if rv.enforce_int_power_levels:
        return None
    if isinstance(value, str):
        text = value.strip()
        if not _STRINGY_INT.fullmatch(text):
            return None
        try:
            return int(text)
        except ValueError:  # beyond Python's integer string conversion limit
            return None
    if type(value) is float and not rv.strict_canonicaljson:
        return int(value) if math.isfinite(value) else None
    return None


class _Levels:
    """Typed reading of one ``m.room.power_levels`` content in its room version.

    A malformed value that the rules nevertheless consult (possible only in
    v1-v9, where the rules validate ``users`` alone) raises AuthError: the
    event being authorised cannot be shown to be allowed.
    """

    def __init__(self, content: Mapping[str, Any], rv: RoomVersion) -> None:
        self.content = content
        self.rv = rv

    def _absent(self, value: Any) -> bool:
        # v1-v9 treat an explicit null like an absent key.
        return value is _MISSING or (value is None and not self.rv.enforce_int_power_levels)

    def scalar(self, name: str) -> Optional[int]:
        value = self.content.get(name, _MISSING)
        if self._absent(value):
            return None
        level = _parse_level(value, self.rv)
        if level is None:
            raise AuthError(f"m.room.power_levels has an invalid {name!r}: {value!r}", rule_name=MALFORMED_POWER_LEVELS)
        return level

    def scalar_or(self, name: str, default: int) -> int:
        level = self.scalar(name)
        return default if level is None else level

    def entry(self, name: str, key: str) -> Optional[int]:
        """``content[name][key]`` as a level, or None if absent."""
        value = self.content.get(name, _MISSING)
        if self._absent(value):
            return None
        if not isinstance(value, Mapping):
            raise AuthError(f"m.room.power_levels has an invalid {name!r}: {value!r}", rule_name=MALFORMED_POWER_LEVELS)
        raw = value.get(key, _MISSING)
        if raw is _MISSING or (name != "users" and self._absent(raw)):
            return None
        level = _parse_level(raw, self.rv)
        if level is None:
            raise AuthError(
                f"m.room.power_levels has an invalid {name}[{key!r}]: {raw!r}", rule_name=MALFORMED_POWER_LEVELS
            )
        return level

    def mapping(self, name: str) -> dict[str, int]:
        value = self.content.get(name, _MISSING)
        if self._absent(value):
            return {}
        if not isinstance(value, Mapping):
            raise AuthError(f"m.room.power_levels has an invalid {name!r}: {value!r}", rule_name=MALFORMED_POWER_LEVELS)
        out: dict[str, int] = {}
        for key, raw in value.items():
            if name != "users" and self._absent(raw):
                continue
            level = _parse_level(raw, self.rv)
            if level is None:
                raise AuthError(
                    f"m.room.power_levels has an invalid {name}[{key!r}]: {raw!r}", rule_name=MALFORMED_POWER_LEVELS
                )
            out[key] = level
        return out


def _levels(event: Optional[Event]) -> Optional[_Levels]:
    return None if event is None else _Levels(event.content, event.room_version)


# ---------------------------------------------------------------------------
# Creators and power levels
# ---------------------------------------------------------------------------


def _creators_of(create: Event) -> set[str]:
    rv = create.room_version
    if not rv.implicit_room_creator:
        creator = create.content.get("creator")
        return {creator} if isinstance(creator, str) else set()
    creators = {create.sender}
    if rv.privileged_creators:
        extra = create.content.get("additional_creators")
        if isinstance(extra, list):
            creators.update(u for u in extra if isinstance(u, str))
    return creators


def get_creators(auth_events: AuthEvents) -> set[str]:
    """The room creators, from the m.room.create event in ``auth_events``.

    v1-v10: ``content.creator``; v11: the create event's ``sender``; v12: the
    ``sender`` plus ``content.additional_creators`` (rooms/v12 "room creators").
    Empty if there is no create event.
    """
    create = auth_events.get(CREATE_KEY)
    return set() if create is None else _creators_of(create)


def is_room_creator(user_id: str, auth_events: AuthEvents) -> bool:
    """Whether ``user_id`` is one of :func:`get_creators`."""
    return user_id in get_creators(auth_events)


def get_power_level(user_id: str, auth_events: AuthEvents) -> PowerLevel:
    """The power level of ``user_id`` under ``auth_events``.

    Spec: m.room.power_levels schema and rooms/v12. In v12 the room creators
    have infinite power (``math.inf``) whatever the power levels say. Otherwise
    the level is ``users[user_id]``, else ``users_default`` (default 0). With no
    m.room.power_levels event the creator has 100 and everyone else 0 (see
    :func:`default_power_levels_for_no_pl_event`).

    Raises AuthError if the value it needs is malformed (only possible in v1-v9
    for ``users_default``).
    """
    create = auth_events.get(CREATE_KEY)
    creators = _creators_of(create) if create is not None else set()
    if create is not None and create.room_version.privileged_creators and user_id in creators:
        return math.inf
    levels = _levels(auth_events.get(POWER_LEVELS_KEY))
    if levels is None:
        return CREATOR_DEFAULT_LEVEL if user_id in creators else USERS_DEFAULT
    level = levels.entry("users", user_id)
    return levels.scalar_or("users_default", USERS_DEFAULT) if level is None else level


def get_named_level(name: str, auth_events: AuthEvents) -> int:
    """The *invite level*, *kick level*, *ban level* or *redact level*.

    Server-Server API "Definitions": ``invite`` defaults to 0, ``kick``, ``ban``
    and ``redact`` to 50, whether or not there is an m.room.power_levels event.
    """
    default = NAMED_LEVEL_DEFAULTS[name]
    levels = _levels(auth_events.get(POWER_LEVELS_KEY))
    return default if levels is None else levels.scalar_or(name, default)


def get_send_level(event_type: str, state_key: Optional[str], power_levels_event: Optional[Event]) -> int:
    """The *required power level* of an event type (Server-Server API "Definitions").

    ``events[event_type]`` if listed, else ``state_default`` (default 50) for a
    state event (``state_key`` not None) or ``events_default`` (default 0)
    otherwise. The defaults also apply when there is no power levels event.
    """
    levels = _levels(power_levels_event)
    if levels is None:
        return STATE_DEFAULT if state_key is not None else EVENTS_DEFAULT
    level = levels.entry("events", event_type)
    if level is not None:
        return level
    if state_key is not None:
        return levels.scalar_or("state_default", STATE_DEFAULT)
    return levels.scalar_or("events_default", EVENTS_DEFAULT)


def default_power_levels_for_no_pl_event(auth_events: AuthEvents) -> dict[str, Any]:
    """The power levels in force when the room has no m.room.power_levels event,
    as the content such an event would have.

    m.room.power_levels schema: the creator has 100 and everyone else 0
    (``users_default``); ``events_default`` 0, ``state_default`` 50, ``invite``
    0, ``kick``/``ban``/``redact`` 50, ``notifications.room`` 50. In v12 the
    creators are infinitely powerful instead and may not be listed in ``users``,
    so ``users`` is empty.
    """
    create = auth_events.get(CREATE_KEY)
    users: dict[str, int] = {}
    if create is not None and not create.room_version.privileged_creators:
        users = {creator: CREATOR_DEFAULT_LEVEL for creator in _creators_of(create)}
    return {
        "users": users,
        "users_default": USERS_DEFAULT,
        "events": {},
        "events_default": EVENTS_DEFAULT,
        "state_default": STATE_DEFAULT,
        "notifications": {"room": 50},
        **NAMED_LEVEL_DEFAULTS,
    }


def _membership(auth_events: AuthEvents, user_id: Any) -> Optional[str]:
    """The user's current membership (None when there is no member event)."""
    if not isinstance(user_id, str):
        return None
    member = auth_events.get((MEMBER, user_id))
    return None if member is None else member.membership


# ---------------------------------------------------------------------------
# Auth events selection (Server-Server API) and rule 2 / v12 rule 3
# ---------------------------------------------------------------------------


def auth_types_for_event(event: Event) -> set[StateKey]:
    """The ``(type, state_key)`` pairs whose current state are the auth events of ``event``.

    Spec: Server-Server API "Auth events selection". None for m.room.create;
    otherwise the create event (not in v12), the power levels, the sender's
    member event, and for m.room.member: the target's member event, the join
    rules when ``membership`` is join, invite or knock, the
    m.room.third_party_invite of ``content.third_party_invite.signed.token``
    for such an invite, and -- in versions with restricted rooms -- the member
    event of ``content.join_authorised_via_users_server`` for a join.
    """
    if event.type == CREATE:
        return set()
    rv = event.room_version
    types: set[StateKey] = {POWER_LEVELS_KEY, (MEMBER, event.sender)}
    if not rv.room_id_from_create_event:
        types.add(CREATE_KEY)
    if event.type == MEMBER:
        if isinstance(event.state_key, str):
            types.add((MEMBER, event.state_key))
        membership = event.membership
        if membership in ("join", "invite", "knock"):
            types.add(JOIN_RULES_KEY)
        if membership == "invite":
            token = _third_party_token(event.content)
            if token is not None:
                types.add((THIRD_PARTY_INVITE, token))
        if membership == "join" and rv.restricted_join_rule:
            authoriser = event.content.get(AUTHORISING_USER)
            if isinstance(authoriser, str):
                types.add((MEMBER, authoriser))
    return types


def _third_party_token(content: Mapping[str, Any]) -> Optional[str]:
    tpi = content.get("third_party_invite")
    signed = tpi.get("signed") if isinstance(tpi, Mapping) else None
    token = signed.get("token") if isinstance(signed, Mapping) else None
    return token if isinstance(token, str) else None


def check_auth_events_list(event: Event, auth_events: list[Event]) -> None:
    """Check the auth events ``event`` lists: rooms/v1 rule 2 ("Considering the
    event's auth_events"), v12 rule 3.

    ``auth_events`` are the events named by ``event.auth_event_ids`` (as stored,
    rejected ones included). Rejects: duplicate entries for a ``(type,
    state_key)`` pair (including the same event listed twice); entries not
    selected by :func:`auth_types_for_event` (so, in v12, any m.room.create);
    rejected entries; no m.room.create among them (v1-v11); entries of another
    room. An m.room.create event is judged by rule 1 alone, so it passes.
    """
    if event.type == CREATE:
        return
    rv = event.room_version
    listed = event.auth_event_ids
    seen_ids: set[str] = set()
    for event_id in listed:
        if event_id in seen_ids:
            raise _reject(event, "auth_events.duplicates", f"auth event {event_id} is listed twice")
        seen_ids.add(event_id)

    by_key: dict[tuple[str, Optional[str]], Event] = {}
    for auth_event in auth_events:
        key = (auth_event.type, auth_event.state_key)
        if key in by_key:
            raise _reject(
                event,
                "auth_events.duplicates",
                f"auth events {_eid(by_key[key])} and {_eid(auth_event)} are both {key}",
            )
        by_key[key] = auth_event

    expected = auth_types_for_event(event)
    for key, auth_event in by_key.items():
        if key[0] == CREATE and rv.room_id_from_create_event:
            raise _reject(event, "auth_events.types", f"the m.room.create event {_eid(auth_event)} must not be listed")
        if key not in expected:
            raise _reject(event, "auth_events.types", f"auth event {_eid(auth_event)} of {key} is not an auth type")

    for auth_event in by_key.values():
        if auth_event.rejected_reason is not None:
            raise _reject(event, "auth_events.rejected", f"auth event {_eid(auth_event)} was rejected")

    if not rv.room_id_from_create_event and CREATE_KEY not in by_key:
        raise _reject(event, "auth_events.no_create", "no m.room.create event among the auth events")

    for auth_event in by_key.values():
        if auth_event.room_id != event.room_id:
            raise _reject(
                event,
                "auth_events.room",
                f"auth event {_eid(auth_event)} is in room {auth_event.room_id}, not {event.room_id}",
            )


# ---------------------------------------------------------------------------
# The rules
# ---------------------------------------------------------------------------


def check_auth_rules(event: Event, auth_events: AuthEvents) -> None:
    """Raise AuthError unless ``event`` is allowed by the authorisation rules of
    its room version, given the auth state ``auth_events``.

    Spec: rooms/vN "Authorisation rules", all rules. ``auth_events`` maps
    ``(type, state_key)`` to the event in force; only the keys of
    :func:`auth_types_for_event` are consulted, and for v12 it must also hold
    the room's m.room.create event under ``("m.room.create", "")``. Events in
    the map are used whether or not they were themselves rejected (state
    resolution handles events rejected against the state at the event "as
    usual"); the v12 create event alone must be accepted (rule 2).

    The checks on the event's own list of auth events (duplicates, wrong types,
    rejected, wrong room) need the list, not a map: see
    :func:`check_auth_events_list`. Here, rule 2.4 (a create event exists) and
    2.5 (auth state of the same room) are applied to the map, and in v12 the
    create event must not be listed in ``event.auth_event_ids`` (rule 3.2).
    """
    try:
        _check_auth_rules(event, auth_events)
    except AuthError as e:
        if e.rule is not None:
            raise
        # A helper met malformed power levels content (v1-v9 only): the event
        # cannot be shown to be allowed.
        raise _reject(event, e.rule_name or MALFORMED_POWER_LEVELS, e.reason) from None


def _check_auth_rules(event: Event, auth_events: AuthEvents) -> None:
    rv = event.room_version

    # Rule 1: m.room.create.
    if event.type == CREATE:
        _check_create(event)
        return

    create = auth_events.get(CREATE_KEY)
    if rv.room_id_from_create_event:
        # v12 rule 2: the room ID is the ID of an accepted create event.
        if create is None or create.type != CREATE:
            raise _reject(event, "room_id", "the room's m.room.create event is not known")
        if create.rejected_reason is not None:
            raise _reject(event, "room_id", f"the m.room.create event {_eid(create)} was rejected")
        if not create.event_id.startswith("$") or event.room_id != "!" + create.event_id[1:]:
            raise _reject(event, "room_id", f"room ID {event.room_id} is not that of create event {_eid(create)}")
        # v12 rule 3.2: the create event MUST NOT be listed.
        if create.event_id in event.auth_event_ids:
            raise _reject(event, "auth_events.types", "the m.room.create event must not be listed in auth_events")
    elif create is None:
        raise _reject(event, "auth_events.no_create", "no m.room.create event in the auth events")

    for key in auth_types_for_event(event):
        auth_event = auth_events.get(key)
        if auth_event is not None and auth_event.room_id != event.room_id:
            raise _reject(
                event,
                "auth_events.room",
                f"auth event {_eid(auth_event)} is in room {auth_event.room_id}, not {event.room_id}",
            )

    # Rule 3 (v12: 4): m.federate.
    if create.content.get("m.federate", True) is False and _domain(event.sender) != _domain(create.sender):
        raise _reject(event, "federate", "the room is not federated and the sender is on another server")

    # Rule 4 (v1-v5 only): m.room.aliases.
    if event.type == ALIASES and rv.special_case_aliases_auth:
        if not event.is_state():
            raise _reject(event, "aliases.state_key", "m.room.aliases has no state_key")
        if event.state_key != _domain(event.sender):
            raise _reject(event, "aliases.domain", "the state_key is not the sender's domain")
        return

    # Rule 5 (v6-v11: 4): m.room.member.
    if event.type == MEMBER:
        _check_member(event, auth_events, create)
        return

    # Rule 6: the sender must be joined.
    if _membership(auth_events, event.sender) != "join":
        raise _reject(event, "sender_joined", f"sender {event.sender} is not joined to the room")

    sender_level = get_power_level(event.sender, auth_events)

    # Rule 7: m.room.third_party_invite.
    if event.type == THIRD_PARTY_INVITE:
        if sender_level >= get_named_level("invite", auth_events):
            return
        raise _reject(event, "third_party_invite.power", "sender's power level is below the invite level")

    # Rule 8: the event type's required power level.
    required = get_send_level(event.type, event.state_key, auth_events.get(POWER_LEVELS_KEY))
    if required > sender_level:
        raise _reject(event, "required_power", f"requires power level {required}, sender has {sender_level}")

    # Rule 9: a state_key starting with '@' must be the sender.
    state_key = event.state_key
    if isinstance(state_key, str) and state_key.startswith("@") and state_key != event.sender:
        raise _reject(event, "state_key", f"state_key {state_key} is another user's")

    # Rule 10: m.room.power_levels.
    if event.type == POWER_LEVELS:
        _check_power_levels(event, auth_events, create, sender_level)
        return

    # Rule 11 (v1, v2 only): m.room.redaction.
    if event.type == REDACTION and rv.event_id_in_event:
        if sender_level >= get_named_level("redact", auth_events):
            return
        own = _domain(event.event_id)
        if own is not None and own == _domain(event.redacts):
            return
        raise _reject(event, "redaction.reject", "below the redact level and redacting another server's event")


def _check_create(event: Event) -> None:
    """Rule 1: m.room.create."""
    rv = event.room_version
    content = event.content
    if event.get("prev_events"):
        raise _reject(event, "create.prev_events", "m.room.create has prev_events")
    if rv.room_id_from_create_event:
        if event.get("room_id", _MISSING) is not _MISSING:
            raise _reject(event, "create.room_id", "m.room.create has a room_id")
    else:
        room_domain = _domain(event.get("room_id"))
        if room_domain is None or room_domain != _domain(event.sender):
            raise _reject(event, "create.room_id", "the room ID's domain is not the sender's")
    version = content.get("room_version", _MISSING)
    if version is not _MISSING and not (isinstance(version, str) and version in KNOWN_ROOM_VERSIONS):
        raise _reject(event, "create.room_version", f"unknown room version {version!r}")
    if not rv.implicit_room_creator and "creator" not in content:
        raise _reject(event, "create.creator", "content has no creator")
    if rv.privileged_creators and "additional_creators" in content:
        extra = content["additional_creators"]
        if not isinstance(extra, list) or not all(is_valid_user_id(u) for u in extra):
            raise _reject(event, "create.additional_creators", "additional_creators is not a list of user IDs")


def _check_member(event: Event, auth_events: AuthEvents, create: Event) -> None:
    """Rule 5 (v6-v11: 4): m.room.member."""
    rv = event.room_version
    content = event.content
    target = event.state_key
    if not isinstance(target, str) or "membership" not in content:
        raise _reject(event, "member.fields", "no state_key or no content.membership")
    membership = event.membership

    # v8+: a join_authorised_via_users_server must have signed the event. The
    # signature itself is verified with the other signatures on receipt (its
    # server must be among the required signers); here it must be present.
    if rv.restricted_join_rule and AUTHORISING_USER in content:
        authoriser = content[AUTHORISING_USER]
        server = _domain(authoriser) if is_valid_user_id(authoriser) else None
        signatures = event.signatures
        if server is None or not isinstance(signatures, Mapping) or not signatures.get(server):
            raise _reject(
                event,
                "member.authoriser_signature",
                f"not signed by the server of {AUTHORISING_USER} {authoriser!r}",
            )

    sender = event.sender
    sender_membership = _membership(auth_events, sender)
    target_membership = _membership(auth_events, target)
    join_rules = auth_events.get(JOIN_RULES_KEY)
    # No join rules event (or no join_rule in it) means "invite", as every
    # implementation has it; the spec leaves it implicit.
    join_rule = "invite" if join_rules is None else join_rules.content.get("join_rule", "invite")

    if membership == "join":
        prev = event.prev_event_ids
        if len(prev) == 1 and prev[0] == create.event_id:
            creator = create.sender if rv.implicit_room_creator else create.content.get("creator")
            if target == creator:
                return
        if sender != target:
            raise _reject(event, "member.join.sender_is_target", f"{sender} cannot join {target}")
        if sender_membership == "ban":
            raise _reject(event, "member.join.banned", f"{sender} is banned")
        if join_rule == "invite" or (rv.knock_join_rule and join_rule == "knock"):
            if sender_membership in ("invite", "join"):
                return
            raise _reject(event, "member.join.invite", f"join rule is {join_rule} and {sender} is not invited")
        if (rv.restricted_join_rule and join_rule == "restricted") or (
            rv.knock_restricted_join_rule and join_rule == "knock_restricted"
        ):
            if sender_membership in ("join", "invite"):
                return
            authoriser = content.get(AUTHORISING_USER)
            if not isinstance(authoriser, str):
                raise _reject(event, "member.join.restricted.authoriser", f"no {AUTHORISING_USER}")
            if _membership(auth_events, authoriser) != "join":
                raise _reject(event, "member.join.restricted.authoriser", f"authoriser {authoriser} is not joined")
            if get_power_level(authoriser, auth_events) < get_named_level("invite", auth_events):
                raise _reject(event, "member.join.restricted.authoriser", f"authoriser {authoriser} cannot invite")
            return
        if join_rule == "public":
            return
        raise _reject(event, "member.join.reject", f"join rule {join_rule!r} does not allow the join")

    if membership == "invite":
        if "third_party_invite" in content:
            _check_third_party_invite(event, auth_events, target_membership)
            return
        if sender_membership != "join":
            raise _reject(event, "member.invite.sender_joined", f"inviter {sender} is not joined")
        if target_membership in ("join", "ban"):
            raise _reject(event, "member.invite.target", f"{target} is {target_membership}")
        if get_power_level(sender, auth_events) >= get_named_level("invite", auth_events):
            return
        raise _reject(event, "member.invite.reject", "sender's power level is below the invite level")

    if membership == "leave":
        if sender == target:
            allowed = ("invite", "join", "knock") if rv.knock_join_rule else ("invite", "join")
            if sender_membership in allowed:
                return
            raise _reject(event, "member.leave.self", f"{sender} is {sender_membership or 'not a member'}")
        if sender_membership != "join":
            raise _reject(event, "member.leave.sender_joined", f"{sender} is not joined")
        sender_level = get_power_level(sender, auth_events)
        if target_membership == "ban" and sender_level < get_named_level("ban", auth_events):
            raise _reject(event, "member.leave.unban", "sender's power level is below the ban level")
        if sender_level >= get_named_level("kick", auth_events) and get_power_level(target, auth_events) < sender_level:
            return
        raise _reject(event, "member.leave.reject", "below the kick level or not above the target's power level")

    if membership == "ban":
        if sender_membership != "join":
            raise _reject(event, "member.ban.sender_joined", f"{sender} is not joined")
        sender_level = get_power_level(sender, auth_events)
        if sender_level >= get_named_level("ban", auth_events) and get_power_level(target, auth_events) < sender_level:
            return
        raise _reject(event, "member.ban.reject", "below the ban level or not above the target's power level")

    if membership == "knock" and rv.knock_join_rule:
        if not (join_rule == "knock" or (rv.knock_restricted_join_rule and join_rule == "knock_restricted")):
            raise _reject(event, "member.knock.join_rule", f"join rule {join_rule!r} does not allow knocking")
        if sender != target:
            raise _reject(event, "member.knock.sender_is_target", f"{sender} cannot knock for {target}")
        if sender_membership not in ("ban", "invite", "join"):
            return
        raise _reject(event, "member.knock.reject", f"{sender} is {sender_membership}")

    raise _reject(event, "member.unknown", f"unknown membership {content.get('membership')!r}")


def _check_third_party_invite(event: Event, auth_events: AuthEvents, target_membership: Optional[str]) -> None:
    """Rule 5.3.1 (v8+: x.4.1): an invite with ``content.third_party_invite``."""
    if target_membership == "ban":
        raise _reject(event, "member.invite.third_party.target_banned", f"{event.state_key} is banned")
    tpi = event.content["third_party_invite"]
    signed = tpi.get("signed", _MISSING) if isinstance(tpi, Mapping) else _MISSING
    if not isinstance(signed, Mapping):
        raise _reject(event, "member.invite.third_party.signed", "third_party_invite has no signed object")
    if "mxid" not in signed or "token" not in signed:
        raise _reject(event, "member.invite.third_party.fields", "signed has no mxid or token")
    if signed["mxid"] != event.state_key:
        raise _reject(event, "member.invite.third_party.mxid", "signed.mxid is not the state_key")
    token = signed["token"]
    invite = auth_events.get((THIRD_PARTY_INVITE, token)) if isinstance(token, str) else None
    if invite is None:
        raise _reject(event, "member.invite.third_party.token", f"no m.room.third_party_invite for token {token!r}")
    if invite.sender != event.sender:
        raise _reject(event, "member.invite.third_party.sender", "sender is not the third-party invite's sender")
    if _verify_third_party_signature(signed, _public_keys(invite)):
        return
    raise _reject(event, "member.invite.third_party.reject", "no signature of signed matches the invite's public keys")


def _public_keys(invite: Event) -> list[str]:
    """The public keys of an m.room.third_party_invite: ``public_key`` and ``public_keys[].public_key``."""
    keys: list[str] = []
    content = invite.content
    single = content.get("public_key")
    if isinstance(single, str):
        keys.append(single)
    listed = content.get("public_keys")
    if isinstance(listed, list):
        for entry in listed:
            key = entry.get("public_key") if isinstance(entry, Mapping) else None
            if isinstance(key, str):
                keys.append(key)
    return keys


def _verify_third_party_signature(signed: Mapping[str, Any], public_keys: Iterable[str]) -> bool:
    """Whether any ed25519 signature in ``signed`` verifies with any of the (base64) public keys."""
    signatures = signed.get("signatures")
    if not isinstance(signatures, Mapping):
        return False
    candidates = [
        (name, key_id)
        for name, sigs in signatures.items()
        if isinstance(sigs, Mapping)
        for key_id in sigs
        if isinstance(key_id, str) and key_id.startswith("ed25519:")
    ]
    for public_key in public_keys:
        try:
            key_bytes = decode_base64(public_key)
        except Exception:  # not base64: matches nothing
            continue
        for name, key_id in candidates:
            try:
                verify_signed_json(dict(signed), name, decode_verify_key_bytes(key_id, key_bytes))
            except Exception:  # bad key length, bad signature, unencodable JSON: no match
                continue
            return True
    return False


def _check_power_levels(event: Event, auth_events: AuthEvents, create: Event, sender_level: PowerLevel) -> None:
    """Rule 10 (v6-v11: 9): m.room.power_levels."""
    rv = event.room_version
    content = event.content

    if rv.enforce_int_power_levels:
        for name in SCALAR_LEVELS:
            if name in content and type(content[name]) is not int:
                raise _reject(event, "power_levels.int_scalars", f"{name} is not an integer")
        for name in ("events", "notifications"):
            if name in content:
                value = content[name]
                if not isinstance(value, Mapping) or any(type(v) is not int for v in value.values()):
                    raise _reject(event, "power_levels.int_maps", f"{name} is not an object of integers")

    if "users" in content:
        users = content["users"]
        if not isinstance(users, Mapping):
            raise _reject(event, "power_levels.users", "users is not an object")
        for user_id, value in users.items():
            # As deployed servers check it: '@', a ':' and a non-empty server part. A
            # stricter grammar here would reject events the rest of the network accepts.
            if not (isinstance(user_id, str) and user_id.startswith("@") and _domain(user_id)):
                raise _reject(event, "power_levels.users", f"users key {user_id!r} is not a user ID")
            if _parse_level(value, rv) is None:
                raise _reject(event, "power_levels.users", f"users[{user_id!r}] is not an integer: {value!r}")
        if rv.privileged_creators:
            listed = set(users) & _creators_of(create)
            if listed:
                raise _reject(event, "power_levels.creators", f"room creators {sorted(listed)} are listed in users")

    previous = auth_events.get(POWER_LEVELS_KEY)
    if previous is None:
        return
    old = _Levels(previous.content, previous.room_version)
    new = _Levels(content, rv)

    for name in SCALAR_LEVELS:
        before, after = old.scalar(name), new.scalar(name)
        if before == after:
            continue
        if before is not None and before > sender_level:
            raise _reject(event, "power_levels.scalars", f"current {name} {before} is above the sender's level")
        if after is not None and after > sender_level:
            raise _reject(event, "power_levels.scalars", f"new {name} {after} is above the sender's level")

    maps = ("events", "notifications") if rv.limit_notifications_power_levels else ("events",)
    for name in maps:
        before_map, after_map = old.mapping(name), new.mapping(name)
        for key in before_map.keys() | after_map.keys():
            before, after = before_map.get(key), after_map.get(key)
            if before == after:
                continue
            if before is not None and before > sender_level:
                raise _reject(event, "power_levels.maps_old", f"current {name}[{key!r}] is above the sender's level")
            if after is not None and after > sender_level:
                raise _reject(event, "power_levels.maps_new", f"new {name}[{key!r}] is above the sender's level")

    before_users, after_users = old.mapping("users"), new.mapping("users")
    for user_id in before_users.keys() | after_users.keys():
        before, after = before_users.get(user_id), after_users.get(user_id)
        if before == after:
            continue
        if before is not None and user_id != event.sender and before >= sender_level:
            raise _reject(
                event, "power_levels.users_old", f"{user_id}'s current level {before} is not below the sender's"
            )
        if after is not None and after > sender_level:
            raise _reject(event, "power_levels.users_new", f"{user_id}'s new level {after} is above the sender's")


# ---------------------------------------------------------------------------
# Handling redactions (rooms/v3 onwards)
# ---------------------------------------------------------------------------


def can_apply_redaction(redaction: Event, redacted: Event, auth_events: AuthEvents) -> bool:
    """Whether a redaction (already allowed by the auth rules) is to be applied.

    Spec: rooms/v3 "Handling redactions" (v3 onwards; in v1 and v2 the auth
    rules themselves decide): the redaction's sender has at least the *redact
    level* (``auth_events`` being the state at the redaction), or its sender's
    domain is that of the redacted event's sender.
    """
    if get_power_level(redaction.sender, auth_events) >= get_named_level("redact", auth_events):
        return True
    own = _domain(redaction.sender)
    return own is not None and own == _domain(redacted.sender)
