"""Event format validation per room version, and the identifier grammars.

Spec:

- Server-Server API "Checks performed on receipt of a PDU", step 1: an event
  that does not have the event format of its room version is dropped.
- The event format of each room version: the PDU schemas
  (``data/api/server-server/definitions/pdu_v1``, ``pdu_v3``, ``pdu_v4``,
  ``pdu_v6``, ``pdu_v11``, ``pdu_v12`` and their ``components``): required
  keys, key types, ``depth`` below 2**63-1 (below 2**53-1 from v6),
  ``prev_events`` at most 20 and ``auth_events`` at most 10 entries, and the
  reference formats (``[event_id, hashes]`` pairs in v1/v2, plain event IDs
  from v3).
- Client-Server API "Size limits": the whole event at most 65536 bytes of
  canonical JSON; ``type`` and ``state_key`` at most 255 bytes; ``sender``,
  ``room_id``, ``event_id`` within the size limits of their identifiers
  (Appendices: 255 bytes).
- Canonical JSON strictness from room v6 (``rooms/fragments/v6-canonical-json.md``).
- Appendices "Identifier Grammar": server names, user IDs (current and
  historical), room IDs (with a domain, or v12's hash form), event IDs, room
  aliases.

What this module does *not* check, because the spec makes it part of the
authorisation rules (an event failing them is *rejected*, i.e. kept in the DAG
as rejected, not dropped): event-type specific content (membership values,
power level types, ...), a v12 create event having a ``room_id``, and a v12
event listing the create event in ``auth_events``.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any, Mapping, Optional

from mxtwisted.events.canonical_json import CanonicalJsonError, check_canonical_json, encode_canonical_json
from mxtwisted.events.room_versions import EventFormat, RoomVersion

__all__ = [
    "MAX_AUTH_EVENTS",
    "MAX_DEPTH_V1",
    "MAX_DEPTH_V6",
    "MAX_ID_BYTES",
    "MAX_PDU_SIZE",
    "MAX_PREV_EVENTS",
    "EventValidationError",
    "is_compliant_user_id",
    "is_valid_event_id",
    "is_valid_room_alias",
    "is_valid_room_id",
    "is_valid_server_name",
    "is_valid_user_id",
    "parse_user_id",
    "validate_event",
]

#: Client-Server API "Size limits": a PDU in canonical JSON is at most this many bytes.
MAX_PDU_SIZE: int = 65536
#: Appendices "Identifier Grammar"; Client-Server API "Size limits".
MAX_ID_BYTES: int = 255
#: PDU schemas: ``prev_events`` "Must contain less than or equal to 20 events".
MAX_PREV_EVENTS: int = 20
#: PDU schemas: ``auth_events`` "Must contain less than or equal to 10 events".
MAX_AUTH_EVENTS: int = 10
#: ``depth`` limit of rooms v1-v5 (PDU schemas v1, v3, v4): 2**63 - 1.
MAX_DEPTH_V1: int = 2**63 - 1
#: ``depth`` limit from room v6 (``components/depth_v6``): 2**53 - 1.
MAX_DEPTH_V6: int = 2**53 - 1


class EventValidationError(ValueError):
    """An event does not have the format of its room version.

    ``reason`` says what is wrong. ``persist_as_rejected`` is True only for a
    size-limit failure that older servers did not enforce (a field within 255
    code points but over 255 bytes, in rooms before v11; see
    ``RoomVersion.strict_event_byte_limits``): such an event is stored as
    rejected rather than dropped, so that the room's DAG stays the same on
    every server. Otherwise the event is to be dropped (or, for a client
    request, refused with ``M_BAD_JSON``).
    """

    def __init__(self, reason: str, *, persist_as_rejected: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.persist_as_rejected = persist_as_rejected


# -- identifier grammar ---------------------------------------------------

_PORT_RE = re.compile(r"[0-9]{1,5}")
_DNS_NAME_RE = re.compile(r"[0-9A-Za-z.\-]{1,255}")
_IPV4_RE = re.compile(r"[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}")
_IPV6_RE = re.compile(r"[0-9A-Fa-f:.]{2,45}")
_USER_LOCALPART_RE = re.compile(r"[a-z0-9._=\-/+]+")
_V3_HASH_ID_RE = re.compile(r"[A-Za-z0-9+/]{43}")  # unpadded standard base64 of 32 bytes
_V4_HASH_ID_RE = re.compile(r"[A-Za-z0-9_\-]{43}")  # unpadded URL-safe base64 of 32 bytes


def _utf8_len(s: str) -> int:
    # surrogatepass: lone surrogates are refused elsewhere, not by a crash here.
    return len(s.encode("utf-8", "surrogatepass"))


def _is_valid_host(host: str) -> bool:
    if host.startswith("["):
        if not host.endswith("]"):
            return False
        inner = host[1:-1]
        if not _IPV6_RE.fullmatch(inner):
            return False
        try:
            ipaddress.IPv6Address(inner)
        except ValueError:
            return False
        return True
    if _IPV4_RE.fullmatch(host):
        # A dotted quad is an IPv4 literal, whose parts must be 0-255.
        return all(int(part) <= 255 for part in host.split("."))
    return _DNS_NAME_RE.fullmatch(host) is not None


def is_valid_server_name(s: Any) -> bool:
    """Whether ``s`` is a server name: ``hostname [ ":" port ]``.

    Spec: Appendices "Server Name". The hostname is a dotted-quad IPv4 literal
    (each part 0-255), an IPv6 literal in brackets (2-45 characters of
    ``[0-9A-Fa-f:.]`` forming an RFC 3513 address), or a DNS name of 1-255
    characters of ``[0-9A-Za-z.-]``; the port is 1-5 digits. Case is kept:
    server names are case-sensitive.
    """
    if not isinstance(s, str) or not s:
        return False
    if s.startswith("["):
        close = s.find("]")
        if close == -1:
            return False
        host, rest = s[: close + 1], s[close + 1 :]
    else:
        host, sep, port = s.partition(":")
        rest = sep + port
    if rest:
        if not rest.startswith(":") or not _PORT_RE.fullmatch(rest[1:]):
            return False
    return _is_valid_host(host)


def _historical_localpart_ok(localpart: str) -> bool:
    # Any non-surrogate code point except ':' (excluded by the split) and NUL.
    return "\x00" not in localpart and not any("\ud800" <= c <= "\udfff" for c in localpart)


def _split_sigil_id(s: Any, sigil: str) -> Optional[tuple[str, str]]:
    """``(localpart, server_name)`` of ``<sigil>localpart:server_name``, or None."""
    if not isinstance(s, str) or not s.startswith(sigil):
        return None
    localpart, sep, server_name = s[1:].partition(":")
    if not sep:
        return None
    return localpart, server_name


def _user_id_grammar_ok(s: Any, historical: bool) -> bool:
    parts = _split_sigil_id(s, "@")
    if parts is None:
        return False
    localpart, server_name = parts
    if not is_valid_server_name(server_name):
        return False
    if historical:
        return _historical_localpart_ok(localpart)
    return _USER_LOCALPART_RE.fullmatch(localpart) is not None


def is_valid_user_id(s: Any, historical: bool = False) -> bool:
    """Whether ``s`` is a user ID, at most 255 bytes long.

    Spec: Appendices "User Identifiers" and "Historical User IDs".

    With ``historical=False`` (for IDs this server creates or registers): the
    current grammar, a non-empty localpart of ``[a-z0-9._=\\-/+]``.

    With ``historical=True`` (for IDs in events and from other servers): what
    servers "MUST accept", a localpart of any non-surrogate code points except
    ``:`` and NUL, including control characters and the empty string. (Older
    spec versions limited this to printable ASCII; that narrower set is now
    the *compliant* one: see :func:`is_compliant_user_id`.)
    """
    return _user_id_grammar_ok(s, historical) and _utf8_len(s) <= MAX_ID_BYTES


def is_compliant_user_id(s: Any) -> bool:
    """Whether ``s`` is a user ID that is not "non-compliant".

    Spec: Appendices "Historical User IDs": user IDs with an empty localpart or
    characters outside U+0021-U+007E are non-compliant, and SHOULD NOT be
    forwarded to clients outside of events (e.g. device list updates from them
    are dropped). The compliant localparts are non-empty printable ASCII
    (0x21-0x39, 0x3B-0x7E: no ``:``), a superset of the current grammar.
    """
    if not is_valid_user_id(s, historical=True):
        return False
    localpart = s[1:].partition(":")[0]
    return bool(localpart) and all("\x21" <= c <= "\x7e" for c in localpart)


def parse_user_id(s: Any) -> tuple[str, str]:
    """Split a user ID into ``(localpart, server_name)``.

    Accepts any user ID valid under the historical grammar
    (``is_valid_user_id(s, historical=True)``); raises ``ValueError`` otherwise.
    """
    if not is_valid_user_id(s, historical=True):
        raise ValueError(f"invalid user ID {s!r}")
    localpart, _, server_name = s[1:].partition(":")
    return localpart, server_name


def _room_id_grammar_ok(s: Any, room_version: RoomVersion) -> bool:
    if not isinstance(s, str) or not s.startswith("!"):
        return False
    if room_version.room_id_from_create_event:
        return _V4_HASH_ID_RE.fullmatch(s[1:]) is not None
    parts = _split_sigil_id(s, "!")
    if parts is None:
        return False
    localpart, server_name = parts
    return _historical_localpart_ok(localpart) and is_valid_server_name(server_name)


def is_valid_room_id(s: Any, room_version: RoomVersion) -> bool:
    """Whether ``s`` is a room ID of a room of ``room_version``, at most 255 bytes long.

    Spec: Appendices "Room IDs"; ``rooms/v12.md``. Up to v11:
    ``!opaque_id:domain`` where ``opaque_id`` is any non-surrogate code points
    except ``:`` and NUL and ``domain`` a server name. From v12
    (``room_id_from_create_event``): ``!`` + the URL-safe unpadded base64
    SHA-256 reference hash of the create event (43 characters), no domain.
    """
    return _room_id_grammar_ok(s, room_version) and _utf8_len(s) <= MAX_ID_BYTES


def _event_id_grammar_ok(s: Any, room_version: RoomVersion) -> bool:
    if not isinstance(s, str) or not s.startswith("$"):
        return False
    fmt = room_version.event_format
    if fmt is EventFormat.V1:
        parts = _split_sigil_id(s, "$")
        if parts is None:
            return False
        opaque, server_name = parts
        return _historical_localpart_ok(opaque) and is_valid_server_name(server_name)
    pattern = _V3_HASH_ID_RE if fmt is EventFormat.V2 else _V4_HASH_ID_RE
    return pattern.fullmatch(s[1:]) is not None


def is_valid_event_id(s: Any, room_version: RoomVersion) -> bool:
    """Whether ``s`` is an event ID of a room of ``room_version``, at most 255 bytes long.

    Spec: Appendices "Event IDs"; ``rooms/fragments/v1-event-ids.md`` (v1, v2:
    ``$opaque_id:domain``), ``rooms/v3.md`` (``$`` + 43 characters of unpadded
    standard base64), ``rooms/fragments/v4-event-ids.md`` (v4+: ``$`` + 43
    characters of URL-safe unpadded base64).
    """
    return _event_id_grammar_ok(s, room_version) and _utf8_len(s) <= MAX_ID_BYTES


def is_valid_room_alias(s: Any) -> bool:
    """Whether ``s`` is a room alias ``#localpart:domain``, at most 255 bytes long.

    Spec: Appendices "Room Aliases": the localpart may hold any non-surrogate
    code points except ``:`` and NUL; the domain is a server name.
    """
    parts = _split_sigil_id(s, "#")
    if parts is None:
        return False
    localpart, server_name = parts
    return _historical_localpart_ok(localpart) and is_valid_server_name(server_name) and _utf8_len(s) <= MAX_ID_BYTES


# -- event format ---------------------------------------------------------


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _check_references(event_dict: Mapping[str, Any], key: str, limit: int, fmt: EventFormat) -> None:
    refs = event_dict[key]
    if not isinstance(refs, list):
        raise EventValidationError(f"'{key}' is not a list")
    if len(refs) > limit:
        raise EventValidationError(f"'{key}' has {len(refs)} entries, more than {limit}")
    for ref in refs:
        if fmt is EventFormat.V1:
            # [event_id, {hash algorithm: hash}] pairs.
            if not (isinstance(ref, list) and len(ref) == 2 and isinstance(ref[0], str) and isinstance(ref[1], dict)):
                raise EventValidationError(f"'{key}' entries must be [event_id, hashes] pairs")
        elif not isinstance(ref, str):
            raise EventValidationError(f"'{key}' entries must be event ID strings")


def _check_signatures(signatures: Any) -> None:
    if not isinstance(signatures, dict):
        raise EventValidationError("'signatures' is not an object")
    for server_signatures in signatures.values():
        if not isinstance(server_signatures, dict) or not all(
            isinstance(sig, str) for sig in server_signatures.values()
        ):
            raise EventValidationError("'signatures' must map server names to objects of signature strings")


def validate_event(event_dict: Mapping[str, Any], room_version: RoomVersion) -> None:
    """Check that an event (PDU) has the event format of ``room_version``.

    Spec: see the module docstring. Raises :class:`EventValidationError` with
    the first problem found; returns None for a valid event. ``event_dict`` is
    the PDU in federation format as received (the 65536-byte limit is measured
    on it as given, ``unsigned`` included).

    Checks, in order:

    1. the event is an object of JSON values; from v6 strictly canonical
       (integers only, within [-(2**53)+1, (2**53)-1]);
    2. canonical JSON size at most 65536 bytes;
    3. the required keys of the version's PDU schema: ``sender``,
       ``origin_server_ts``, ``type``, ``content``, ``depth``, ``hashes``,
       ``signatures``, ``prev_events``, ``auth_events``, ``room_id`` (except
       for a v12 ``m.room.create``) and ``event_id`` in v1/v2;
    4. their types: strings for ``type``, ``state_key``, ``sender``,
       ``room_id``, ``event_id`` and (v1-v10 redactions) ``redacts``;
       integers for ``origin_server_ts`` and ``depth`` (0 to 2**63-1, or to
       2**53-1 from v6); objects for ``content``, ``unsigned``, ``hashes``
       (with a ``sha256`` string) and ``signatures`` (server name to key ID to
       string); the reference lists' format and their 20 / 10 entry limits;
    5. identifier grammar: ``sender`` a user ID (historical grammar),
       ``room_id`` a room ID of the version, ``event_id`` (v1/v2) an event ID;
    6. the 255-byte limits on ``type``, ``state_key``, ``sender``, ``room_id``
       and ``event_id`` (see :class:`EventValidationError` for the lenient
       case of rooms before v11).
    """
    if not isinstance(event_dict, Mapping):
        raise EventValidationError("event is not an object")
    try:
        check_canonical_json(event_dict, strict=room_version.strict_canonicaljson)
    except CanonicalJsonError as e:
        raise EventValidationError(f"event is not valid canonical JSON: {e}") from None
    size = len(encode_canonical_json(event_dict))
    if size > MAX_PDU_SIZE:
        raise EventValidationError(f"event is {size} bytes of canonical JSON, more than {MAX_PDU_SIZE}")

    fmt = room_version.event_format
    is_v12_create = room_version.room_id_from_create_event and event_dict.get("type") == "m.room.create"
    required = [
        "type",
        "sender",
        "origin_server_ts",
        "content",
        "depth",
        "hashes",
        "signatures",
        "prev_events",
        "auth_events",
    ]
    if not is_v12_create:
        required.append("room_id")
    if fmt is EventFormat.V1:
        required.append("event_id")
    for key in required:
        if key not in event_dict:
            raise EventValidationError(f"event has no '{key}'")

    # ``event_id`` is part of the format only in v1/v2; later it is ignored.
    id_keys = ("type", "sender", "room_id", "state_key") + (("event_id",) if fmt is EventFormat.V1 else ())
    for key in id_keys:
        if key in event_dict and not isinstance(event_dict[key], str):
            raise EventValidationError(f"'{key}' is not a string")
    if not isinstance(event_dict["content"], dict):
        raise EventValidationError("'content' is not an object")
    if "unsigned" in event_dict and not isinstance(event_dict["unsigned"], dict):
        raise EventValidationError("'unsigned' is not an object")
    if not _is_int(event_dict["origin_server_ts"]):
        raise EventValidationError("'origin_server_ts' is not an integer")

    depth = event_dict["depth"]
    max_depth = MAX_DEPTH_V6 if room_version.strict_canonicaljson else MAX_DEPTH_V1
    if not _is_int(depth):
        raise EventValidationError("'depth' is not an integer")
    if not 0 <= depth <= max_depth:
        raise EventValidationError(f"'depth' {depth} is outside [0, {max_depth}]")

    hashes = event_dict["hashes"]
    if not isinstance(hashes, dict) or not isinstance(hashes.get("sha256"), str):
        raise EventValidationError("'hashes' must be an object with a 'sha256' string")
    _check_signatures(event_dict["signatures"])

    _check_references(event_dict, "prev_events", MAX_PREV_EVENTS, fmt)
    _check_references(event_dict, "auth_events", MAX_AUTH_EVENTS, fmt)

    if (
        not room_version.redacts_in_content
        and event_dict["type"] == "m.room.redaction"
        and "redacts" in event_dict
        and not isinstance(event_dict["redacts"], str)
    ):
        raise EventValidationError("'redacts' is not a string")

    if not _user_id_grammar_ok(event_dict["sender"], historical=True):
        raise EventValidationError(f"'sender' {event_dict['sender']!r} is not a valid user ID")
    if "room_id" in event_dict and not is_v12_create:
        if not _room_id_grammar_ok(event_dict["room_id"], room_version):
            raise EventValidationError(
                f"'room_id' {event_dict['room_id']!r} is not a room ID of room version {room_version.identifier}"
            )
    if fmt is EventFormat.V1 and not _event_id_grammar_ok(event_dict["event_id"], room_version):
        raise EventValidationError(f"'event_id' {event_dict['event_id']!r} is not a valid event ID")

    _check_field_sizes(event_dict, room_version)


def _check_field_sizes(event_dict: Mapping[str, Any], room_version: RoomVersion) -> None:
    """Client-Server API "Size limits" for the identifier-like fields.

    Over 255 code points: always dropped. Over 255 bytes but within 255 code
    points: dropped from v11 (``strict_event_byte_limits``), stored as
    rejected before (what older Synapse versions did, which measured code
    points).
    """
    lenient: Optional[str] = None
    keys = ["type", "state_key", "sender", "room_id"]
    if room_version.event_format is EventFormat.V1:
        keys.append("event_id")
    for key in keys:
        value = event_dict.get(key)
        if not isinstance(value, str):
            continue
        if len(value) > MAX_ID_BYTES:
            raise EventValidationError(f"'{key}' is longer than {MAX_ID_BYTES} bytes")
        if _utf8_len(value) > MAX_ID_BYTES and lenient is None:
            lenient = key
    if lenient is not None:
        raise EventValidationError(
            f"'{lenient}' is longer than {MAX_ID_BYTES} bytes",
            persist_as_rejected=not room_version.strict_event_byte_limits,
        )
