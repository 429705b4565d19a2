"""Content hashes, reference hashes and the event and room IDs derived from them.

Spec: Server-Server API "Signing Events" > "Calculating the content hash for an
event" and "Calculating the reference hash for an event"; the "Event IDs"
section of each room version (``rooms/fragments/v1-event-ids.md``,
``rooms/v3.md``, ``rooms/fragments/v4-event-ids.md``); ``rooms/v12.md`` and
Appendices "Room IDs" for v12 room IDs; Appendices "Unpadded Base64" and
"URL-safe unpadded Base64" for the encodings.
"""

from __future__ import annotations

import hashlib
import string
from typing import Any, Callable, Mapping, Optional

from unpaddedbase64 import decode_base64, encode_base64

from mxtwisted.events.canonical_json import encode_canonical_json
from mxtwisted.events.redaction import redacted_view
from mxtwisted.events.room_versions import KNOWN_ROOM_VERSIONS, EventFormat, RoomVersion

__all__ = [
    "ContentHashError",
    "add_content_hash",
    "check_content_hash",
    "compute_content_hash",
    "compute_event_id",
    "compute_reference_hash",
    "compute_room_id_v12",
    "generate_v1_event_id",
]


class ContentHashError(ValueError):
    """The ``hashes`` property of an event is missing or malformed."""


def compute_content_hash(event_dict: Mapping[str, Any]) -> bytes:
    """The SHA-256 content hash of an event, as raw bytes (32 of them).

    Spec: Server-Server API, "Calculating the content hash for an event": drop
    ``unsigned``, ``signatures`` and ``hashes``, encode the rest (the full,
    unredacted event) as canonical JSON, hash with SHA-256.

    The canonical JSON here is the lenient one (no integer range check), so
    events of rooms v1-v5 that break the strict number rules still hash; the
    strict rules are enforced by validation, not here.
    """
    stripped = {k: v for k, v in event_dict.items() if k not in ("unsigned", "signatures", "hashes")}
    return hashlib.sha256(encode_canonical_json(stripped)).digest()


def add_content_hash(event_dict: Mapping[str, Any]) -> dict[str, Any]:
    """Return a copy of the event with ``hashes.sha256`` set to its content hash.

    Spec: Server-Server API, "Adding hashes and signatures to outgoing events"
    (the hash is unpadded standard base64 under ``hashes`` > ``sha256``).
    Other hash algorithms already in ``hashes`` are kept.
    """
    result = dict(event_dict)
    hashes = result.get("hashes")
    hashes = dict(hashes) if isinstance(hashes, Mapping) else {}
    hashes["sha256"] = encode_base64(compute_content_hash(event_dict))
    result["hashes"] = hashes
    return result


def check_content_hash(event_dict: Mapping[str, Any]) -> bool:
    """Whether the event's ``hashes.sha256`` matches its content hash.

    Spec: Server-Server API, "Validating hashes and signatures on received
    events". ``False`` means the content does not match the hash: the receiver
    is then expected to use the redacted form of the event instead.

    Raises :class:`ContentHashError` when there is nothing to compare, i.e.
    ``hashes`` is not an object, has no string ``sha256``, or that string is
    not base64 (padded or not). Such an event does not have the PDU format and
    is dropped rather than redacted (event validation already refuses it).
    """
    hashes = event_dict.get("hashes")
    if not isinstance(hashes, Mapping):
        raise ContentHashError("event has no 'hashes' object")
    expected = hashes.get("sha256")
    if not isinstance(expected, str):
        raise ContentHashError("event has no 'hashes.sha256' string")
    try:
        expected_bytes = decode_base64(expected)
    except Exception:
        raise ContentHashError("'hashes.sha256' is not base64") from None
    return expected_bytes == compute_content_hash(event_dict)


def compute_reference_hash(event_dict: Mapping[str, Any], room_version: RoomVersion) -> bytes:
    """The SHA-256 reference hash of an event, as raw bytes.

    Spec: Server-Server API, "Calculating the reference hash for an event":
    redact the event per ``room_version``, remove ``signatures`` and
    ``unsigned``, encode as canonical JSON, hash with SHA-256. (Redaction
    already drops every key outside the keep-list, including ``unsigned`` and
    any stray top-level ``age_ts``.)
    """
    redacted = redacted_view(event_dict, room_version)
    redacted.pop("signatures", None)
    redacted.pop("unsigned", None)
    return hashlib.sha256(encode_canonical_json(redacted)).digest()


def compute_event_id(event_dict: Mapping[str, Any], room_version: RoomVersion) -> str:
    """The event ID of an event in a room of version 3 or later.

    Spec: room v3 "Event IDs" (``$`` + unpadded *standard* base64 of the
    reference hash, so it may contain ``+`` and ``/``) and
    ``rooms/fragments/v4-event-ids.md`` for v4 and later (``$`` + *URL-safe*
    unpadded base64, using ``-`` and ``_``).

    In rooms v1 and v2 the ID is chosen by the sending server and carried in
    the event's ``event_id`` (see :func:`generate_v1_event_id`); asking for a
    computed ID there raises ``ValueError``.
    """
    fmt = room_version.event_format
    if fmt is EventFormat.V1:
        raise ValueError(f"room version {room_version.identifier}: event IDs are chosen by the sender, not computed")
    digest = compute_reference_hash(event_dict, room_version)
    return "$" + encode_base64(digest, urlsafe=fmt is EventFormat.V3)


def compute_room_id_v12(create_event_dict: Mapping[str, Any], room_version: Optional[RoomVersion] = None) -> str:
    """The room ID of a room whose ID is derived from its create event (v12).

    Spec: ``rooms/v12.md`` and Appendices "Room IDs": the room ID is the
    ``m.room.create`` event's event ID with the sigil ``!`` instead of ``$``,
    that is ``!`` + URL-safe unpadded base64 of its reference hash. The create
    event has no ``room_id`` property.

    ``room_version`` defaults to room version 12; any version given must have
    ``room_id_from_create_event``.
    """
    if room_version is None:
        room_version = KNOWN_ROOM_VERSIONS["12"]
    if not room_version.room_id_from_create_event:
        raise ValueError(f"room version {room_version.identifier} does not derive room IDs from create events")
    return "!" + compute_event_id(create_event_dict, room_version)[1:]


_V1_ID_ALPHABET = string.ascii_letters + string.digits  # 62 characters


def generate_v1_event_id(server_name: str, random_source: Callable[[int], bytes], length: int = 18) -> str:
    """A new event ID for rooms v1 and v2: ``$opaque:server_name``.

    Spec: ``rooms/fragments/v1-event-ids.md`` (``opaque_id`` is a locally
    unique string, ``domain`` the server name of the server creating the
    event) and Appendices "Event IDs" (255 bytes at most).

    ``random_source(n)`` must return ``n`` random bytes, e.g.
    ``secrets.token_bytes``; it is a parameter so this module stays free of
    I/O and tests can be deterministic. The opaque part is ``length``
    characters of ``[A-Za-z0-9]``, drawn without modulo bias.
    """
    chars: list[str] = []
    while len(chars) < length:
        for b in random_source(length * 2):
            # 248 = 4 * 62: bytes at or above it would favour the first letters.
            if b < 248:
                chars.append(_V1_ID_ALPHABET[b % 62])
                if len(chars) == length:
                    break
    event_id = "$" + "".join(chars) + ":" + server_name
    if len(event_id.encode("utf-8")) > 255:
        raise ValueError("server name too long for an event ID")
    return event_id
