"""Invites to this server's users from other servers, and the room state that travels with invites and knocks.

Spec: Server-Server API, "Inviting to a room" (``PUT /_matrix/federation/v2/invite/{roomId}/{eventId}``)
and "Knocking upon a room" (``knock_room_state``); Client-Server API "Stripped state".

A remote server that invites one of our users asks us to sign the invite. We check
it as the spec asks before signing anything: the PDU format of the room version
(``M_INCOMPATIBLE_ROOM_VERSION`` for a version we do not implement), that it is an
``m.room.member`` invite whose ``state_key`` is a user of ours, sent by a user of the
requesting server, named by the path's event ID, with a matching content hash and
the sender server's valid signature (through the keyring); ``400 M_INVALID_PARAM``
otherwise. Spam checkers may refuse it (``user_may_invite``, as for a local invite).
We then add our signature and answer with the event.

Where it is kept: when a user of ours is joined to the room, the inviting server
also sends the invite in a transaction, which persists it like any event of the
room, so nothing is stored here. Otherwise the room is not ours to know: the
invite is stored as an out-of-band membership (an outlier that is still the
user's current membership, :meth:`RoomEngine.persist_out_of_band_membership`) with
the room state the inviter gave in ``unsigned.invite_room_state``, so ``/sync``
shows it under ``rooms.invite``; no room row is written, so the room stays
unknown (``404``) until a join brings its state.

The state given with invites and knocks (``invite_room_state`` / ``knock_room_state``)
is sent as full PDUs (spec v1.16: formatted for the room version, the create
event included). What we receive is kept in stripped form for clients: entries
that are PDUs must belong to the room and carry valid signatures (dropped
otherwise), stripped entries (as older servers send) are kept as they are. For
rooms whose ID is their create event's (v12+), an invite must bring that create
event.
"""

from __future__ import annotations

from typing import Any, Optional

from twisted.logger import Logger

from mxtwisted.events.event import Event
from mxtwisted.events.hashing import ContentHashError, check_content_hash
from mxtwisted.events.room_versions import RoomVersion, UnsupportedRoomVersion, get_room_version
from mxtwisted.events.signing import SignatureVerifyError, cosign_event, required_signers
from mxtwisted.events.validation import EventValidationError, is_valid_user_id, validate_event
from mxtwisted.federation.pdu_checks import verify_server_signature
from mxtwisted.federation.room_acl import check_origin_allowed
from mxtwisted.federation.server_visibility import server_of
from mxtwisted.http.errors import Codes, MatrixError
from mxtwisted.rooms.engine import RoomCache, RoomEngine
from mxtwisted.rooms.serialize import STRIPPED_STATE_TYPES, stripped_state

log = Logger()

MEMBER = "m.room.member"


#: In ``unsigned`` of an out-of-band membership: its room's version, which no room row records (server-only,
#: never sent: ``unsigned`` is dropped from PDUs and only known keys reach clients).
ROOM_VERSION_KEY = "io.mxtwisted.room_version"


class InvalidRoomState(Exception):
    """An ``invite_room_state`` that the room version requires to be better (no valid create event)."""


# -- the state given with invites and knocks ---------------------------------------------------------------
async def room_state_pdus(engine: RoomEngine, room: RoomCache, member: Optional[str] = None) -> list[dict[str, Any]]:
    """The room's current state of :data:`STRIPPED_STATE_TYPES` (and ``member``'s own member event, e.g. the
    inviter's, so the invitee can show who invited them) as PDUs, for ``invite_room_state`` /
    ``knock_room_state``."""
    keys = [(t, "") for t in STRIPPED_STATE_TYPES]
    if member is not None:
        keys.append((MEMBER, member))
    events = await engine.get_state_events(room, keys)
    return [events[key].get_pdu_json() for key in keys if key in events]


#: Entries of a received invite_room_state / knock_room_state that are looked at.
MAX_ROOM_STATE_ENTRIES = 50


async def checked_room_state(
    entries: Any, version: RoomVersion, room_id: str, keyring: Any, require_create: bool
) -> list[dict[str, Any]]:
    """The stripped state to keep for clients from a received ``invite_room_state`` / ``knock_room_state``.
    Raises :class:`InvalidRoomState` when ``require_create`` and the room's create event is not among them
    (only checked in rooms whose ID derives from the create event, where it can be verified).

    Stripped state is a preview that clients must not trust, so only the create event (which proves the
    room's version and, from v12, its ID) has its signatures checked, and at most
    :data:`MAX_ROOM_STATE_ENTRIES` entries are looked at: a remote server must not make us fetch the keys
    of any number of made-up servers."""
    kept: list[dict[str, Any]] = []
    create_ok = False
    for entry in entries[:MAX_ROOM_STATE_ENTRIES] if isinstance(entries, list) else []:
        if not isinstance(entry, dict):
            continue
        if entry.get("type") == "m.room.create" and "signatures" in entry and "hashes" in entry:
            try:
                ev = await _checked_state_pdu(entry, version, room_id, keyring)
            except (InvalidRoomState, EventValidationError, SignatureVerifyError, ContentHashError) as e:
                log.info("Dropping a room state entry of {room_id}: {e}", room_id=room_id, e=e)
                continue
            if ev.type == "m.room.create" and ev.state_key == "":
                create_ok = create_ok or (not version.room_id_from_create_event or "!" + ev.event_id[1:] == room_id)
            kept.append(stripped_state(ev.get_dict()))
            continue
        if (
            isinstance(entry.get("type"), str)
            and isinstance(entry.get("state_key"), str)
            and isinstance(entry.get("sender"), str)
            and isinstance(entry.get("content"), dict)
        ):
            kept.append(stripped_state(entry))
    if require_create and version.room_id_from_create_event and not create_ok:
        raise InvalidRoomState("the room's create event is missing from the room state or is not valid")
    return kept


async def _checked_state_pdu(entry: dict[str, Any], version: RoomVersion, room_id: str, keyring: Any) -> Event:
    validate_event(entry, version)
    ev = Event(entry, version)
    if ev.room_id != room_id:
        raise InvalidRoomState(f"{ev.event_id} belongs to another room")
    if ev.state_key is None:
        raise InvalidRoomState(f"{ev.event_id} is not a state event")
    if not check_content_hash(entry):
        raise InvalidRoomState(f"{ev.event_id} does not match its content hash")
    for server in sorted(required_signers(entry, version)):
        await verify_server_signature(keyring, entry, server, version)
    return ev


async def is_resident(engine: RoomEngine, room_id: str) -> bool:
    """Whether a user of this server is joined to the room now (so we hold its state and receive its events)."""
    try:
        room = await engine.get_room_cache(room_id)
    except MatrixError:
        return False
    return bool(room.members_joined_local)


def _invalid(message: str) -> MatrixError:
    return MatrixError(400, Codes.INVALID_PARAM, message)


# -- the served invite ---------------------------------------------------------------------------------------
class FederationInvites:
    def __init__(
        self, engine: RoomEngine, signing_key: Any, keyring: Any, membership: Any = None, users: Any = None
    ) -> None:
        """``keyring``: ``verify_json_for_server`` (None refuses every invite); ``membership``: the
        MembershipHandler, whose checks (spam checkers) are asked about each invite (optional); ``users``:
        the user store (``get_user``): only existing, active users are invited (optional)."""
        self.engine = engine
        self.server_name = engine.server_name
        self._signing_key = signing_key
        self._keyring = keyring
        self._membership = membership
        self._users = users

    async def on_invite(self, origin: str, room_id: str, event_id: str, body: dict[str, Any]) -> dict[str, Any]:
        """``PUT /v2/invite``: check, sign, keep; returns ``{"event": the invite with our signature}``."""
        identifier = body.get("room_version")
        if not isinstance(identifier, str):
            raise MatrixError(400, Codes.MISSING_PARAM, "Missing 'room_version'")
        try:
            version = get_room_version(identifier)
        except UnsupportedRoomVersion:
            raise MatrixError(
                400, Codes.INCOMPATIBLE_ROOM_VERSION, f"This server does not support room version {identifier}",
                extra={"room_version": identifier},
            ) from None
        event = body.get("event")
        if not isinstance(event, dict):
            raise MatrixError(400, Codes.MISSING_PARAM, "Missing 'event'")
        event = {k: v for k, v in event.items() if k != "unsigned"}
        try:
            room = await self.engine.get_room_cache(room_id)
        except MatrixError:
            room = None
        if room is not None:
            # Spec "Server Access Control Lists": /invite is protected by the room's ACL.
            await check_origin_allowed(self.engine, room, origin)
        ev = await self._check_invite(origin, room_id, event_id, event, version)
        target = ev.state_key or ""
        if self._users is not None:
            user = await self._users.get_user(target)
            if user is None or user.deactivated:
                raise MatrixError(404, Codes.NOT_FOUND, "The invited user does not exist")
        if self._membership is not None:
            await self._membership.check_remote_invite(ev.sender, room_id, target)
        try:
            room_state = await checked_room_state(
                body.get("invite_room_state"), version, room_id, self._keyring, require_create=True
            )
        except InvalidRoomState as e:
            raise _invalid(f"Invalid invite_room_state: {e}") from None
        signed = cosign_event(event, self.server_name, self._signing_key, version)
        if not await is_resident(self.engine, room_id):
            kept = dict(signed, unsigned={"invite_room_state": room_state, ROOM_VERSION_KEY: version.identifier})
            await self.engine.persist_out_of_band_membership(Event(kept, version, event_id=ev.event_id))
        return {"event": signed}

    async def _check_invite(
        self, origin: str, room_id: str, event_id: str, event: dict[str, Any], version: RoomVersion
    ) -> Event:
        """The spec's checks before signing an invite (400 M_INVALID_PARAM, M_BAD_JSON for a malformed PDU)."""
        try:
            validate_event(event, version)
        except EventValidationError as e:
            raise MatrixError(400, Codes.BAD_JSON, f"Invalid event: {e.reason}") from None
        ev = Event(event, version)
        if ev.room_id != room_id:
            raise _invalid("The event's room_id does not match the path")
        if ev.event_id != event_id:
            raise _invalid("The event ID does not match the path")
        if ev.type != MEMBER or ev.membership != "invite":
            raise _invalid("The event is not an invite")
        if server_of(ev.sender) != origin:
            raise _invalid("The invite's sender does not belong to the requesting server")
        target = ev.state_key or ""
        if not is_valid_user_id(target, historical=True) or server_of(target) != self.server_name:
            raise _invalid("The invited user does not belong to this server")
        try:
            hash_ok = check_content_hash(event)
        except ContentHashError as e:
            raise _invalid(f"Invalid event: {e}") from None
        if not hash_ok:
            raise _invalid("The event's content hash does not match")
        try:
            for server in sorted(required_signers(event, version)):
                await verify_server_signature(self._keyring, event, server, version)
        except SignatureVerifyError as e:
            raise _invalid(f"The invite's signature is not valid: {e}") from None
        return ev


__all__ = [
    "FederationInvites",
    "InvalidRoomState",
    "ROOM_VERSION_KEY",
    "checked_room_state",
    "is_resident",
    "room_state_pdus",
]
