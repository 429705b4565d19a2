"""Checks of PDUs that other servers give us, shared by every path that receives them (transactions,
send_join answers, joins/leaves/knocks/invites sent to us, backfill, fetched state and auth chains).

Spec: Server-Server API "Validating hashes and signatures on received events": every server that must sign
an event (``required_signers``: the sender's server, and for v1/v2 the event ID's; restricted joins the
authorising server) has a valid signature on its *redacted* form, with a key valid at the event's
``origin_server_ts`` from room v5; an event whose content hash does not match is used redacted.
"""

from __future__ import annotations

from typing import Any, Iterable, Optional

from mxtwisted.events.auth import AuthError, check_auth_events_list, check_auth_rules
from mxtwisted.events.event import Event
from mxtwisted.events.hashing import ContentHashError, check_content_hash
from mxtwisted.events.redaction import redact_event, redacted_view
from mxtwisted.events.room_versions import RoomVersion
from mxtwisted.events.signing import SignatureVerifyError, required_signers
from mxtwisted.events.validation import EventValidationError, validate_event


class PduCheckError(Exception):
    """A PDU fails the checks (the message says why); it must not be used."""


async def verify_server_signature(keyring: Any, event_dict: dict[str, Any], server: str, version: RoomVersion) -> None:
    """``server``'s signature on the redacted event, with a key of that server valid at the event's time
    (from room v5). Raises SignatureVerifyError."""
    if keyring is None:
        raise SignatureVerifyError("this server cannot verify signatures of other servers")
    redacted = redacted_view(event_dict, version)
    signatures = redacted.get("signatures")
    theirs = signatures.get(server) if isinstance(signatures, dict) else None
    if not isinstance(theirs, dict) or not theirs:
        raise SignatureVerifyError(f"not signed by {server}")
    ts = event_dict.get("origin_server_ts")
    minimum = ts if version.enforce_key_validity and isinstance(ts, int) else 0
    await keyring.verify_json_for_server(server, dict(redacted, signatures={server: theirs}), minimum_valid_until_ts=minimum)


async def verify_pdu_signatures(
    keyring: Any, event_dict: dict[str, Any], version: RoomVersion, servers: Optional[Iterable[str]] = None
) -> None:
    """The signatures of every server that must sign the event (or of ``servers``). Raises PduCheckError."""
    try:
        signers = required_signers(event_dict, version) if servers is None else set(servers)
        for server in sorted(signers):
            await verify_server_signature(keyring, event_dict, server, version)
    except SignatureVerifyError as e:
        raise PduCheckError(f"Invalid signature: {e}") from None


async def check_pdu(keyring: Any, raw: Any, version: RoomVersion, room_id: Optional[str] = None) -> Event:
    """A received PDU, ready to use: the PDU format of ``version``, the room (when ``room_id`` is given),
    the required signatures; redacted when its content hash does not match. Raises PduCheckError."""
    if not isinstance(raw, dict):
        raise PduCheckError("A PDU is not an object")
    try:
        validate_event(raw, version)
    except EventValidationError as e:
        raise PduCheckError(f"Invalid PDU: {e.reason}") from None
    ev = Event(raw, version)
    if room_id is not None and ev.room_id != room_id:
        raise PduCheckError(f"{ev.event_id} belongs to another room")
    await verify_pdu_signatures(keyring, raw, version)
    try:
        hash_ok = check_content_hash(raw)
    except ContentHashError as e:
        raise PduCheckError(f"{ev.event_id}: {e}") from None
    if not hash_ok:
        return Event(redact_event(raw, version), version, event_id=ev.event_id)
    return ev


def auth_order(events: dict[str, Event], version: RoomVersion, room_id: str) -> list[Event]:
    """The events with each one after its auth events (those in ``events``); refuses auth cycles."""
    create_id = "$" + room_id[1:] if version.room_id_from_create_event else None
    done: dict[str, None] = {}
    visiting: set[str] = set()

    def auth_ids(ev: Event) -> list[str]:
        ids = list(ev.auth_event_ids)
        if create_id is not None and ev.type != "m.room.create" and create_id not in ids:
            ids.append(create_id)
        return [i for i in ids if i in events]

    for start in sorted(events, key=lambda eid: events[eid].depth):
        stack = [(start, False)]
        while stack:
            eid, expanded = stack.pop()
            if eid in done:
                continue
            if expanded:
                visiting.discard(eid)
                done[eid] = None
                continue
            if eid in visiting:
                raise PduCheckError("the auth chain has a cycle")
            visiting.add(eid)
            stack.append((eid, True))
            for auth_id in auth_ids(events[eid]):
                if auth_id not in done:
                    if auth_id in visiting:
                        raise PduCheckError("the auth chain has a cycle")
                    stack.append((auth_id, False))
    return [events[eid] for eid in done]


def check_against_auth_events(ev: Event, events: dict[str, Event], create_id: str) -> None:
    """Mark ``ev`` rejected when its auth events are missing or rejected, or it fails the auth rules against
    them (its auth events were checked before it)."""
    if ev.type == "m.room.create" and ev.state_key == "":
        try:
            check_auth_rules(ev, {})
        except AuthError as e:
            ev.rejected_reason = e.reason
        return
    auth: list[Event] = []
    for auth_id in ev.auth_event_ids:
        auth_ev = events.get(auth_id)
        if auth_ev is None:
            ev.rejected_reason = f"auth event {auth_id} is missing"
            return
        if auth_ev.rejected_reason is not None:
            ev.rejected_reason = f"auth event {auth_id} was rejected"
            return
        auth.append(auth_ev)
    try:
        check_auth_events_list(ev, auth)
        auth_state = {(a.type, a.state_key or ""): a for a in auth}
        auth_state.setdefault(("m.room.create", ""), events[create_id])
        check_auth_rules(ev, auth_state)
    except AuthError as e:
        ev.rejected_reason = e.reason


__all__ = [
    "PduCheckError",
    "auth_order",
    "check_against_auth_events",
    "check_pdu",
    "verify_pdu_signatures",
    "verify_server_signature",
]
