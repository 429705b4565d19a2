"""Joining, leaving and knocking on rooms of this server over federation: make_join / send_join,
make_leave / send_leave, make_knock / send_knock.

Spec: Server-Server API, "Joining Rooms", "Leaving Rooms" (v2 send_join and
send_leave) and "Knocking upon a room" (rooms v7+, 403 before). A remote
server asks for a template (``make_*``): an unsigned ``m.room.member`` event on top of the room's current state, which this server
checks against the auth rules as a dry run. The remote server fills in its
part, hashes and signs it, and sends it back (``send_*``): this server checks
the content hash, the signatures of the servers that must sign it (through
the key lookup), then the room engine checks its format, that its sender
belongs to the requesting server and the auth rules against the room's
current state, and persists it like any other event. For a restricted join
this server, whose user authorised it, adds its own signature and returns the
countersigned event.
"""

from __future__ import annotations

from typing import Any, Optional

from mxtwisted.events.auth import AUTHORISING_USER, AuthError, check_auth_rules
from mxtwisted.events.event import Event
from mxtwisted.events.hashing import ContentHashError, check_content_hash
from mxtwisted.events.room_versions import RoomVersion
from mxtwisted.events.signing import (
    SignatureVerifyError,
    cosign_event,
    required_signers,
)
from mxtwisted.events.validation import is_valid_user_id
from mxtwisted.federation.pdu_checks import verify_server_signature
from mxtwisted.federation.server_visibility import pdu_json, server_of
from mxtwisted.http.errors import Codes, MatrixError
from mxtwisted.rooms.engine import RoomEngine
from mxtwisted.rooms.restricted import restricted_join_authoriser
from mxtwisted.rooms.room_state import load_auth_chain
from mxtwisted.storage.events import EventStore, StateMap, StoredEvent

MEMBER = "m.room.member"
#: How many members' events are kept in a send_join ``state`` with ``omit_members`` when the room has no
#: name nor canonical alias (the "heroes" of the Client-Server room summary).
HEROES = 5


async def state_before(store: EventStore, stored: StoredEvent) -> Optional[StateMap]:
    """The state of the room just before ``stored`` (its stored group is the state after it)."""
    state = await store.get_state_ids_at_event(stored.event_id)
    if state is None:
        return None
    state = dict(state)
    if stored.state_key is not None and state.get((stored.type, stored.state_key)) == stored.event_id:
        if stored.replaces_state:
            state[(stored.type, stored.state_key)] = stored.replaces_state
        else:
            del state[(stored.type, stored.state_key)]
    return state


def _check_knock_version(membership: str, version: RoomVersion) -> None:
    """Knocks exist from room v7 (as Synapse: 403 in older rooms)."""
    if membership == "knock" and not version.knock_join_rule:
        raise MatrixError(403, Codes.FORBIDDEN, f"Room version {version.identifier} does not support knocking")


class FederationJoins:
    def __init__(self, engine: RoomEngine, signing_key: Any, keyring: Any) -> None:
        """``keyring``: ``await keyring.verify_json_for_server(server, obj, minimum_valid_until_ts=ms)``
        raising SignatureVerifyError (mxtwisted.federation's Keyring); None refuses every remote event."""
        self.engine = engine
        self.server_name = engine.server_name
        self._signing_key = signing_key
        self._keyring = keyring

    async def _active_room(self, room_id: str) -> Any:
        """A room we can build on: known, with a local user joined now. A room all our users left is not
        followed any more (our state of it is stale): 404, so that the asking server tries another."""
        room = await self.engine.get_room_cache(room_id)
        if not room.members_joined_local:
            raise MatrixError(404, Codes.NOT_FOUND, "Not an active room on this server")
        return room

    # -- make_* ----------------------------------------------------------------------------
    async def make_membership(
        self, origin: str, room_id: str, user_id: str, membership: str, supported_versions: Optional[list[str]]
    ) -> dict[str, Any]:
        """The template of ``make_join`` / ``make_leave``: ``{"event": ..., "room_version": ...}``."""
        if not is_valid_user_id(user_id, historical=True):
            raise MatrixError(400, Codes.INVALID_PARAM, "Invalid user ID")
        if server_of(user_id) != origin:
            raise MatrixError(403, Codes.FORBIDDEN, "The user does not belong to the requesting server")
        room = await self._active_room(room_id)
        version = room.version
        if supported_versions is not None and version.identifier not in supported_versions:
            raise MatrixError(
                400,
                Codes.INCOMPATIBLE_ROOM_VERSION,
                f"Your server does not support the room's version {version.identifier}",
                extra={"room_version": version.identifier},
            )
        _check_knock_version(membership, version)
        content: dict[str, Any] = {"membership": membership}
        if membership == "join":
            current = await self.engine.get_state_events(room, [(MEMBER, user_id)])
            event = current.get((MEMBER, user_id))
            if event is None or event.membership not in ("join", "invite", "ban"):
                authoriser = await restricted_join_authoriser(self.engine, room, user_id)
                if authoriser is not None:
                    content[AUTHORISING_USER] = authoriser
        template, auth_state, _ = await self.engine.build_template(room, user_id, MEMBER, content, state_key=user_id)
        template["origin"] = self.server_name
        # Dry run of the auth rules against the current state: refuse now what send_* would refuse.
        # (Signatures are checked at send_*; the dry run assumes the ones the auth rules look for.)
        placeholder = {"ed25519:dry_run": ""}
        probe = dict(template, hashes={"sha256": ""}, signatures={origin: placeholder, self.server_name: placeholder})
        if version.event_id_in_event:
            probe["event_id"] = f"$probe:{origin}"
        try:
            check_auth_rules(Event(probe, version, event_id="$probe"), auth_state)
        except AuthError as e:
            raise MatrixError(403, Codes.FORBIDDEN, e.reason) from None
        return {"event": template, "room_version": version.identifier}

    # -- send_* ----------------------------------------------------------------------------
    async def send_membership(
        self, origin: str, room_id: str, event_id: str, event_dict: Any, membership: str
    ) -> tuple[Event, bool]:
        """Check and persist a signed join / leave. Returns (the event as persisted, whether this server
        countersigned it)."""
        if not isinstance(event_dict, dict):
            raise MatrixError(400, Codes.BAD_JSON, "The body must be an event")
        room = await self._active_room(room_id)
        version = room.version
        _check_knock_version(membership, version)
        if event_dict.get("room_id") != room_id:
            raise MatrixError(400, Codes.BAD_JSON, "The event's room_id does not match the path")
        try:
            ev = Event(event_dict, version)
            actual_id = ev.event_id
        except Exception:
            raise MatrixError(400, Codes.BAD_JSON, "The event cannot be read") from None
        if actual_id != event_id:
            raise MatrixError(400, Codes.BAD_JSON, "The event ID does not match the path")
        sender = event_dict.get("sender")
        if (
            event_dict.get("type") != MEMBER
            or not isinstance(sender, str)
            or event_dict.get("state_key") != sender
            or ev.membership != membership
        ):
            raise MatrixError(400, Codes.BAD_JSON, f"The event must be a {membership} of its sender")
        if server_of(sender) != origin:
            raise MatrixError(403, Codes.FORBIDDEN, "The event's sender does not belong to the requesting server")
        try:
            if not check_content_hash(event_dict):
                raise MatrixError(400, Codes.BAD_JSON, "The event's content hash does not match")
        except ContentHashError as e:
            raise MatrixError(400, Codes.BAD_JSON, f"Invalid event: {e}") from None
        countersign = False
        authoriser = ev.content.get(AUTHORISING_USER) if membership == "join" else None
        if authoriser is not None and version.restricted_join_rule:
            if not isinstance(authoriser, str) or server_of(authoriser) != self.server_name:
                raise MatrixError(400, Codes.BAD_JSON, "This server cannot authorise a join on behalf of that user")
            countersign = True
        try:
            signers = required_signers(event_dict, version)
        except SignatureVerifyError as e:
            raise MatrixError(400, Codes.BAD_JSON, str(e)) from None
        for server in sorted(signers):
            if server == self.server_name and countersign:
                continue
            await self._check_signature(event_dict, server, version)

        def prepare(event: Event) -> dict[str, Any]:
            if countersign:
                return cosign_event(event.get_dict(), self.server_name, self._signing_key, version)
            return event.get_dict()

        persisted = (await self.engine.persist_remote_event(event_dict, origin, prepare)).event
        return persisted, countersign

    async def _check_signature(self, event_dict: dict[str, Any], server: str, version: RoomVersion) -> None:
        """``server``'s signature on the event (:func:`~mxtwisted.federation.pdu_checks.verify_server_signature`);
        403 M_FORBIDDEN when it is missing or not valid."""
        try:
            await verify_server_signature(self._keyring, event_dict, server, version)
        except SignatureVerifyError as e:
            raise MatrixError(403, Codes.FORBIDDEN, f"The event has no valid signature of {server}: {e}") from None

    # -- send_join response ------------------------------------------------------------------------
    async def join_response(self, join: Event, countersigned: bool, omit_members: bool) -> dict[str, Any]:
        """The v2 send_join body: the state before the join, the auth chain, and per ``omit_members``."""
        store = self.engine.store
        stored = await store.get_event(join.event_id)
        assert stored is not None
        state = await state_before(store, stored) or {}
        servers = sorted(await self._joined_servers(state))
        kept = dict(state)
        if omit_members:
            heroes = await self._hero_members(state, join.sender)
            kept = {key: eid for key, eid in state.items() if key[0] != MEMBER or key[1] in heroes}
        state_events = await store.get_events(kept.values())
        chain = await load_auth_chain(store, list(kept.values()) + [join.event_id], join.room_version)
        if omit_members:
            chain = [ev for ev in chain if ev.event_id not in state_events]
        body: dict[str, Any] = {
            "state": [pdu_json(state_events[eid]) for eid in sorted(kept.values()) if eid in state_events],
            "auth_chain": [pdu_json(ev) for ev in chain],
            "members_omitted": omit_members,
            "servers_in_room": servers,
        }
        if countersigned:
            body["event"] = join.get_pdu_json()
        return body

    async def _joined_servers(self, state: StateMap) -> set[str]:
        member_ids = [eid for (etype, _), eid in state.items() if etype == MEMBER]
        events = await self.engine.store.get_events(member_ids)
        return {
            server_of(ev.state_key or "") for ev in events.values() if (ev.json.get("content") or {}).get("membership") == "join"
        }

    async def _hero_members(self, state: StateMap, joining: str) -> set[str]:
        """Members whose events stay with ``omit_members``: the joining user's own, and when the room has no
        name nor canonical alias, those of up to :data:`HEROES` joined or invited members (by user ID)."""
        heroes = {joining}
        if ("m.room.name", "") in state or ("m.room.canonical_alias", "") in state:
            return heroes
        member_ids = {eid: skey for (etype, skey), eid in state.items() if etype == MEMBER and skey != joining}
        events = await self.engine.store.get_events(member_ids)
        candidates = sorted(
            member_ids[eid] for eid, ev in events.items()
            if (ev.json.get("content") or {}).get("membership") in ("join", "invite")
        )
        return heroes | set(candidates[:HEROES])

