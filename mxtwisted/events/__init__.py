"""The Matrix protocol core: pure functions over events as plain JSON dicts.

No I/O and no Twisted here, and nothing imported from the rest of mxtwisted:
everything in ``mxtwisted.events`` is a function of its arguments, so it can be
tested against the spec's examples directly. See ``docs/protocol.md`` for the
API and the index from spec sections to functions.

This module re-exports the stable public API; the submodules hold the details:

- ``room_versions``: the per-room-version rules, as data;
- ``canonical_json``: canonical JSON encoding, checks and a strict parser;
- ``redaction``: the redaction algorithm;
- ``hashing``: content hashes, reference hashes, event IDs, v12 room IDs;
- ``signing``: server keys, signing and verifying JSON and events;
- ``validation``: event format validation and identifier grammars;
- ``event``: the :class:`Event` view over an event dict.
"""

# --- Authorisation rules (mxtwisted/events/auth.py) -------------------------
from mxtwisted.events.auth import (
    AuthError,
    auth_types_for_event,
    check_auth_events_list,
    check_auth_rules,
)
from mxtwisted.events.canonical_json import (
    CanonicalJsonError,
    check_canonical_json,
    encode_canonical_json,
    parse_json_strict,
)

# --- Plain-dict entry points (mxtwisted/events/dict_api.py) -----------------
from mxtwisted.events.dict_api import check_event_auth, resolve_state
from mxtwisted.events.event import Event
from mxtwisted.events.hashing import (
    ContentHashError,
    add_content_hash,
    check_content_hash,
    compute_content_hash,
    compute_event_id,
    compute_reference_hash,
    compute_room_id_v12,
    generate_v1_event_id,
)
from mxtwisted.events.redaction import prune_unsigned_for_redaction, redact_event
from mxtwisted.events.room_versions import (
    DEFAULT_ROOM_VERSION,
    KNOWN_ROOM_VERSIONS,
    EventFormat,
    RedactionRules,
    RoomVersion,
    StateResAlgorithm,
    UnsupportedRoomVersion,
    get_room_version,
)
from mxtwisted.events.signing import (
    SignatureVerifyError,
    cosign_event,
    key_valid_for_event,
    required_signers,
    sign_event,
    sign_json,
    verify_event_signature,
    verify_json,
)

# --- State resolution (mxtwisted/events/state_res.py) -----------------------
from mxtwisted.events.state_res import StateResolutionError, resolve_state_groups
from mxtwisted.events.validation import (
    EventValidationError,
    is_valid_event_id,
    is_valid_room_alias,
    is_valid_room_id,
    is_valid_server_name,
    is_valid_user_id,
    parse_user_id,
    validate_event,
)

__all__ = [
    # room versions
    "DEFAULT_ROOM_VERSION",
    "KNOWN_ROOM_VERSIONS",
    "EventFormat",
    "RedactionRules",
    "RoomVersion",
    "StateResAlgorithm",
    "UnsupportedRoomVersion",
    "get_room_version",
    "Event",
    # canonical JSON
    "CanonicalJsonError",
    "check_canonical_json",
    "encode_canonical_json",
    "parse_json_strict",
    # hashes and IDs
    "ContentHashError",
    "add_content_hash",
    "check_content_hash",
    "compute_content_hash",
    "compute_event_id",
    "compute_reference_hash",
    "compute_room_id_v12",
    "generate_v1_event_id",
    # redaction
    "prune_unsigned_for_redaction",
    "redact_event",
    # signing
    "SignatureVerifyError",
    "cosign_event",
    "key_valid_for_event",
    "required_signers",
    "sign_event",
    "sign_json",
    "verify_event_signature",
    "verify_json",
    # validation
    "EventValidationError",
    "is_valid_event_id",
    "is_valid_room_alias",
    "is_valid_room_id",
    "is_valid_server_name",
    "is_valid_user_id",
    "parse_user_id",
    "validate_event",
    # auth rules
    "AuthError",
    "auth_types_for_event",
    "check_auth_events_list",
    "check_auth_rules",
    "check_event_auth",
    # state resolution
    "StateResolutionError",
    "resolve_state",
    "resolve_state_groups",
]
