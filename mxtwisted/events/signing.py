"""Signing and verifying JSON objects and events with ed25519 server keys.

Spec: Appendices "Signing JSON" > "Signing Details" and "Checking for a
Signature"; Server-Server API "Signing Events" ("Adding hashes and signatures
to outgoing events", "Validating hashes and signatures on received events"),
"Retrieving server keys" (``verify_keys``, ``old_verify_keys`` with
``expired_ts``, ``valid_until_ts``) and ``rooms/fragments/v5-signing-requirements.md``.

The cryptography and the signing algorithm are those of ``signedjson`` (which
uses PyNaCl); this module adds the Matrix rules on top: which form of an event
is signed, which servers must have signed it, and whether a key counts.

Key objects are signedjson's: a PyNaCl ``SigningKey``/``VerifyKey`` carrying
``alg`` (``"ed25519"``) and ``version`` attributes; the key ID is
``alg:version``.
"""

from __future__ import annotations

import copy
import secrets
import string
from typing import Any, Iterable, Mapping, Optional

import signedjson.key
import signedjson.sign
from signedjson.types import SigningKey, VerifyKey

from mxtwisted.events.canonical_json import CanonicalJsonError
from mxtwisted.events.hashing import add_content_hash
from mxtwisted.events.redaction import redacted_view
from mxtwisted.events.room_versions import EventFormat, RoomVersion

__all__ = [
    "MAX_KEY_VALIDITY_PERIOD_MS",
    "SignatureVerifyError",
    "SigningKey",
    "VerifyKey",
    "cap_key_valid_until_ts",
    "compute_event_signature",
    "cosign_event",
    "decode_signing_key_base64",
    "decode_verify_key_base64",
    "encode_signing_key_base64",
    "encode_verify_key_base64",
    "generate_signing_key",
    "get_verify_key",
    "key_valid_for_event",
    "make_key_id",
    "read_signing_keys",
    "required_signers",
    "sign_event",
    "sign_json",
    "signature_key_ids",
    "verify_event_signature",
    "verify_json",
    "write_signing_keys",
]

#: "Servers MUST use the lesser of [valid_until_ts] and 7 days into the future
#: when determining if a key is valid" (v5 signing requirements).
MAX_KEY_VALIDITY_PERIOD_MS: int = 7 * 24 * 60 * 60 * 1000


class SignatureVerifyError(Exception):
    """A required signature is missing, malformed or does not verify."""


# -- keys -----------------------------------------------------------------


def make_key_id(key: SigningKey | VerifyKey) -> str:
    """The key ID of a key: ``<algorithm>:<version>``, e.g. ``ed25519:a_AbCd``.

    Spec: Appendices "Signing Details" (the *signing key identifier*).
    """
    return f"{key.alg}:{key.version}"


def _random_key_version() -> str:
    alphabet = string.ascii_letters + string.digits
    return "a_" + "".join(secrets.choice(alphabet) for _ in range(4))


def generate_signing_key(version: Optional[str] = None) -> SigningKey:
    """A new random ed25519 signing key.

    ``version`` defaults to Synapse's style, ``a_`` + four random letters or
    digits. Key versions must match ``[a-zA-Z0-9_]`` (Server-Server API,
    "Publishing Keys").
    """
    return signedjson.key.generate_signing_key(version if version is not None else _random_key_version())


def get_verify_key(signing_key: SigningKey) -> VerifyKey:
    """The public verify key of a signing key, with the same ``alg`` and ``version``."""
    return signedjson.key.get_verify_key(signing_key)


def decode_signing_key_base64(algorithm: str, version: str, key_base64: str) -> SigningKey:
    """A signing key from its unpadded base64 32-byte seed (as in a signing key file)."""
    return signedjson.key.decode_signing_key_base64(algorithm, version, key_base64)


def encode_signing_key_base64(key: SigningKey) -> str:
    """The unpadded base64 seed of a signing key (secret: handle with care)."""
    return signedjson.key.encode_signing_key_base64(key)


def decode_verify_key_base64(algorithm: str, version: str, key_base64: str) -> VerifyKey:
    """A verify key from unpadded base64 public key bytes, as published under ``verify_keys``.

    Raises ``ValueError`` for an unsupported algorithm or bad key bytes.
    """
    try:
        return signedjson.key.decode_verify_key_base64(algorithm, version, key_base64)
    except ValueError:
        raise
    except Exception as e:  # binascii / nacl errors for malformed input
        raise ValueError(f"invalid verify key: {e}") from None


def encode_verify_key_base64(key: VerifyKey) -> str:
    """The unpadded base64 public key, as published under ``verify_keys`` > ``key``."""
    return signedjson.key.encode_verify_key_base64(key)


def read_signing_keys(lines: str | Iterable[str]) -> list[SigningKey]:
    """Parse the Synapse signing key file format: one ``<alg> <version> <base64 seed>`` per line.

    Accepts the file content as one string or any iterable of lines (e.g. an
    open text file). Blank lines are skipped. Raises ``ValueError`` naming the
    line for anything else that is not a valid key line.
    """
    if isinstance(lines, str):
        lines = lines.splitlines()
    keys: list[SigningKey] = []
    for n, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            keys.extend(signedjson.key.read_signing_keys([line]))
        except Exception as e:
            raise ValueError(f"signing key line {n}: {e}") from None
    return keys


def write_signing_keys(keys: Iterable[SigningKey]) -> str:
    """The Synapse signing key file content for ``keys``: ``<alg> <version> <base64 seed>\\n`` each."""
    lines = [f"{key.alg} {key.version} {encode_signing_key_base64(key)}\n" for key in keys]
    return "".join(lines)


def cap_key_valid_until_ts(valid_until_ts: int, fetched_at_ms: int) -> int:
    """The ``valid_until_ts`` to store for a key fetched at ``fetched_at_ms``.

    Spec: ``rooms/fragments/v5-signing-requirements.md`` and the
    ``valid_until_ts`` field of "Publishing Keys": use the lesser of the
    published value and 7 days after fetching, so a stolen key cannot be
    published as valid for years.
    """
    return min(valid_until_ts, fetched_at_ms + MAX_KEY_VALIDITY_PERIOD_MS)


def key_valid_for_event(valid_until_ts: int, event_origin_server_ts: int, room_version: RoomVersion) -> bool:
    """Whether a server key may be used to verify an event's signature.

    Spec: ``rooms/fragments/v5-signing-requirements.md`` (from v5 the key's
    ``valid_until_ts`` must be at least the event's ``origin_server_ts``), the
    ``valid_until_ts`` field of "Publishing Keys" ("MUST be ignored in room
    versions 1, 2, 3, and 4") and "Validating hashes and signatures on received
    events" (keys known to have expired before ``origin_server_ts`` are ignored).

    For a current key pass its ``valid_until_ts`` (capped with
    :func:`cap_key_valid_until_ts`); for an ``old_verify_keys`` entry pass its
    ``expired_ts``. In rooms v1-v4 every known key counts, as in Synapse.
    """
    if not room_version.enforce_key_validity:
        return True
    return valid_until_ts >= event_origin_server_ts


# -- JSON objects ---------------------------------------------------------


def sign_json(obj: Mapping[str, Any], server_name: str, signing_key: SigningKey) -> dict[str, Any]:
    """Return a copy of ``obj`` with this server's signature added.

    Spec: Appendices "Signing Details": the object without ``signatures`` and
    ``unsigned`` is encoded as canonical JSON and signed; the unpadded base64
    signature goes to ``signatures`` > ``server_name`` > key ID. Signatures
    already present (from other servers or other keys) are kept.
    """
    # signedjson mutates its argument (and the nested signatures object).
    work = dict(obj)
    if "signatures" in work:
        work["signatures"] = copy.deepcopy(work["signatures"])
    try:
        return signedjson.sign.sign_json(work, server_name, signing_key)
    except (ValueError, TypeError, AttributeError) as e:
        raise CanonicalJsonError(f"cannot sign: {e}") from None


def signature_key_ids(obj: Mapping[str, Any], server_name: str) -> list[str]:
    """The key IDs of ``server_name``'s signatures on ``obj`` whose algorithm we understand.

    Spec: Appendices "Checking for a Signature", steps 1-2. Malformed
    ``signatures`` yield an empty list.
    """
    signatures = obj.get("signatures")
    if not isinstance(signatures, Mapping):
        return []
    mine = signatures.get(server_name)
    if not isinstance(mine, Mapping):
        return []
    return [k for k in mine if isinstance(k, str) and signedjson.key.is_signing_algorithm_supported(k)]


def verify_json(obj: Mapping[str, Any], server_name: str, verify_key: VerifyKey) -> None:
    """Check ``server_name``'s signature made with ``verify_key`` on ``obj``.

    Spec: Appendices "Checking for a Signature": look up
    ``signatures`` > ``server_name`` > the key's ID, base64-decode it, and check
    it against the canonical JSON of ``obj`` without ``signatures`` and
    ``unsigned``. Raises :class:`SignatureVerifyError` if the signature is
    missing, malformed or wrong.
    """
    signatures = obj.get("signatures")
    if not isinstance(signatures, Mapping):
        raise SignatureVerifyError("object has no signatures")
    mine = signatures.get(server_name)
    if not isinstance(mine, Mapping):
        raise SignatureVerifyError(f"not signed by {server_name}")
    key_id = make_key_id(verify_key)
    if not isinstance(mine.get(key_id), str):
        raise SignatureVerifyError(f"no signature from {server_name} with key {key_id}")
    try:
        signedjson.sign.verify_signed_json(dict(obj), server_name, verify_key)
    except signedjson.sign.SignatureVerifyException as e:
        raise SignatureVerifyError(str(e)) from None
    except (ValueError, TypeError) as e:  # e.g. content that canonical JSON cannot encode
        raise SignatureVerifyError(f"cannot check signature: {e}") from None


# -- events ---------------------------------------------------------------


def compute_event_signature(
    event_dict: Mapping[str, Any], server_name: str, signing_key: SigningKey, room_version: RoomVersion
) -> str:
    """This server's signature (unpadded base64) on an event, as it stands.

    Spec: Server-Server API "Adding hashes and signatures to outgoing events":
    the event is redacted per ``room_version`` and signed as in "Signing JSON".
    The content hash must already be in the event (the signature covers it).
    """
    # A read-only view: sign_json copies what signedjson changes (the top level and the signatures).
    redacted = redacted_view(event_dict, room_version)
    signed = sign_json(redacted, server_name, signing_key)
    return signed["signatures"][server_name][make_key_id(signing_key)]


def _with_signature(event_dict: Mapping[str, Any], server_name: str, key_id: str, signature: str) -> dict[str, Any]:
    result = dict(event_dict)
    signatures = result.get("signatures")
    signatures = copy.deepcopy(dict(signatures)) if isinstance(signatures, Mapping) else {}
    mine = signatures.get(server_name)
    mine = dict(mine) if isinstance(mine, Mapping) else {}
    mine[key_id] = signature
    signatures[server_name] = mine
    result["signatures"] = signatures
    return result


def sign_event(
    event_dict: Mapping[str, Any], server_name: str, signing_key: SigningKey, room_version: RoomVersion
) -> dict[str, Any]:
    """Hash and sign a new event of this server; returns the signed copy.

    Spec: Server-Server API "Adding hashes and signatures to outgoing events":
    compute the content hash into ``hashes.sha256``, redact the event, sign
    the redacted form, and copy the signature back into the full event. Keys
    outside the redacted form (``unsigned`` included) are left as they were.

    To add this server's signature to someone else's event (restricted joins,
    invites) use :func:`cosign_event`, which leaves ``hashes`` alone.
    """
    hashed = add_content_hash(event_dict)
    return cosign_event(hashed, server_name, signing_key, room_version)


def cosign_event(
    event_dict: Mapping[str, Any], server_name: str, signing_key: SigningKey, room_version: RoomVersion
) -> dict[str, Any]:
    """Return a copy of an already hashed event with this server's signature added.

    Used where a second server signs an event another created: the
    authorising server of a restricted join (``join_authorised_via_users_server``)
    and the invitee's server of an invite. The content hash is not touched, so
    the original signatures stay valid.
    """
    signature = compute_event_signature(event_dict, server_name, signing_key, room_version)
    return _with_signature(event_dict, server_name, make_key_id(signing_key), signature)


def verify_event_signature(
    event_dict: Mapping[str, Any], server_name: str, verify_key: VerifyKey, room_version: RoomVersion
) -> None:
    """Check ``server_name``'s signature with ``verify_key`` on an event.

    Spec: Server-Server API "Validating hashes and signatures on received
    events": the event is redacted per ``room_version`` and the redacted form
    is checked as in "Checking for a Signature", so this succeeds for the full
    event and for a redacted copy alike. Raises :class:`SignatureVerifyError`.

    Whether the key counts at the event's time is :func:`key_valid_for_event`;
    the content hash is checked separately (``hashing.check_content_hash``).
    """
    verify_json(redacted_view(event_dict, room_version), server_name, verify_key)


def _domain_of(identifier: Any, what: str) -> str:
    """The server name part of ``@user:server`` / ``$event:server`` (after the first colon)."""
    if not isinstance(identifier, str) or ":" not in identifier:
        raise SignatureVerifyError(f"{what} {identifier!r} has no server name")
    return identifier.split(":", 1)[1]


def _is_third_party_invite(event_dict: Mapping[str, Any]) -> bool:
    content = event_dict.get("content")
    return (
        event_dict.get("type") == "m.room.member"
        and isinstance(content, Mapping)
        and content.get("membership") == "invite"
        and "third_party_invite" in content
    )


def required_signers(event_dict: Mapping[str, Any], room_version: RoomVersion) -> set[str]:
    """The server names whose signatures an event received over federation must carry.

    Spec: Server-Server API "Validating hashes and signatures on received
    events", and the auth rules of rooms v8+ for restricted joins:

    - the server of the ``sender`` ("the originating server"), except for an
      invite made from a third-party invite (``m.room.member`` with
      ``membership: invite`` and ``content.third_party_invite``), which may be
      sent by another server. The ``third_party_invite.signed`` signatures are
      an identity server's, not a server's: they are checked by the auth rules,
      not here;
    - in rooms v1 and v2, also the server in the ``event_id``, if it differs
      from the sender's;
    - in rooms with restricted joins (v8+), for a join with
      ``content.join_authorised_via_users_server``, the server of that user.

    Raises :class:`SignatureVerifyError` if one of those IDs has no server
    part (such an event cannot pass the signature checks).
    """
    signers: set[str] = set()
    sender_domain = _domain_of(event_dict.get("sender"), "sender")
    if not _is_third_party_invite(event_dict):
        signers.add(sender_domain)
    if room_version.event_format is EventFormat.V1:
        event_domain = _domain_of(event_dict.get("event_id"), "event_id")
        if event_domain != sender_domain:
            signers.add(event_domain)
    content = event_dict.get("content")
    if (
        room_version.restricted_join_rule
        and event_dict.get("type") == "m.room.member"
        and isinstance(content, Mapping)
        and content.get("membership") == "join"
        and "join_authorised_via_users_server" in content
    ):
        signers.add(_domain_of(content["join_authorised_via_users_server"], "join_authorised_via_users_server"))
    return signers
