"""A local user joins a room of another server: make_join / send_join as the joining server.

Spec: Server-Server API, "Joining Rooms" (``GET /v1/make_join``, ``PUT /v2/send_join``),
"Validating hashes and signatures on received events", and ``GET /v1/query/directory``
for remote aliases; Client-Server ``POST /join/{roomIdOrAlias}`` (``via`` / ``server_name``).

The candidate servers are asked in turn for a join template (``make_join``, with
every room version this server knows) until one answers. The template must be a
join of our user into that room, in a known room version. This server fills in
``origin``, ``origin_server_ts`` and the user's profile, hashes and signs it (in
rooms v1/v2 it also names the event), and sends it back (``send_join``). The
answer's ``state`` and ``auth_chain`` events are checked one by one (PDU format,
room, signatures of the servers that must sign them through the keyring, content
hash: the redacted form is kept on a mismatch), then against the auth rules in
auth order (an event failing them is stored as rejected and left out of the state);
the join itself (or the countersigned ``event`` of a restricted join) must pass
the auth rules against the returned state. The room engine then stores the events
as outliers, the room, and the join with that state as the state before it, so
local reads and ``/sync`` show the room.

Failover as Synapse: a server that cannot be reached, answers 5xx, says it does
not know the room (404) or cannot authorise/grant the join, or gives an invalid
answer, is skipped; any other refusal (e.g. 403 for an invite-only room) is passed
to the client. With no candidate server: 404 ``M_NOT_FOUND``; when every one
failed: 502 (404 when all of them said they did not know the room).
"""

from __future__ import annotations

import secrets
from typing import Any, Awaitable, Callable, Optional, TypeVar
from urllib.parse import quote

from twisted.logger import Logger

from mxtwisted.events.auth import (
    AUTHORISING_USER,
    AuthError,
    auth_types_for_event,
    check_auth_events_list,
    check_auth_rules,
)
from mxtwisted.events.event import Event
from mxtwisted.events.hashing import add_content_hash
from mxtwisted.events.room_versions import (
    KNOWN_ROOM_VERSIONS,
    EventFormat,
    RoomVersion,
    UnsupportedRoomVersion,
    get_room_version,
)
from mxtwisted.events.signing import cosign_event
from mxtwisted.events.validation import EventValidationError, is_valid_server_name, validate_event
from mxtwisted.federation.client import FederationError, RequestSendFailed
from mxtwisted.federation.pdu_checks import PduCheckError, auth_order, check_against_auth_events, check_pdu
from mxtwisted.http.errors import Codes, MatrixError
from mxtwisted.rooms.engine import RoomEngine
from mxtwisted.storage.events import StateMap

log = Logger()

F1 = "/_matrix/federation/v1"
F2 = "/_matrix/federation/v2"
MEMBER = "m.room.member"
#: Error codes of a make_join refusal after which the next server is tried (as Synapse).
FAILOVER_ERRCODES = frozenset({Codes.NOT_FOUND, "M_UNABLE_TO_AUTHORISE_JOIN", "M_UNABLE_TO_GRANT_JOIN"})


class InvalidResponse(Exception):
    """A remote server's answer that cannot be used (bad format, signature, or state)."""


def _path_part(value: str) -> str:
    return quote(value, safe="")


class RemoteJoiner:
    def __init__(self, engine: RoomEngine, client: Any, keyring: Any, signing_key: Any, profiles: Any = None) -> None:
        """``client``: the FederationClient; ``keyring``: ``verify_json_for_server``; ``profiles``: a
        ProfileStore for the displayname/avatar_url of the join (optional)."""
        self.engine = engine
        self.server_name = engine.server_name
        self._client = client
        self._keyring = keyring
        self._signing_key = signing_key
        self._profiles = profiles
        #: Ask for partial state (``omit_members``) when joining; the full state is then fetched in the
        #: background by whoever ``on_partial_join(room_id)`` tells (mxtwisted.federation.partial_state).
        self.partial_joins = False
        self.on_partial_join: Optional[Callable[[str], Any]] = None

    # -- aliases ------------------------------------------------------------------------------
    async def resolve_alias(self, alias: str) -> tuple[str, list[str]]:
        """Ask the alias's server (``/query/directory``): (room_id, servers). 404 M_NOT_FOUND when unknown,
        502 when the server cannot be asked or answers nonsense."""
        server = alias.split(":", 1)[1]
        try:
            resp = await self._client.get_json(server, f"{F1}/query/directory", {"room_alias": alias})
        except FederationError as e:
            if e.status == 404:
                raise MatrixError(404, Codes.NOT_FOUND, "Room alias not found") from None
            raise MatrixError(502, Codes.UNKNOWN, f"The alias's server refused the query ({e.status})") from None
        except RequestSendFailed as e:
            log.info("Alias query to {server} failed: {e}", server=server, e=e)
            raise MatrixError(502, Codes.UNKNOWN, "Failed to query the alias's server") from None
        room_id = resp.get("room_id") if isinstance(resp, dict) else None
        servers = resp.get("servers") if isinstance(resp, dict) else None
        if not isinstance(room_id, str) or not room_id.startswith("!") or not isinstance(servers, list):
            raise MatrixError(502, Codes.UNKNOWN, "The alias's server gave an invalid answer")
        return room_id, [s for s in servers if isinstance(s, str)]

    # -- joining ---------------------------------------------------------------------------------
    async def join(self, user_id: str, room_id: str, servers: list[str], reason: Optional[str] = None) -> str:
        """Join ``user_id`` (local) to the remote room through the first of ``servers`` that works.
        Returns the join's event ID."""
        candidates = [
            s for s in dict.fromkeys(servers) if s != self.server_name and is_valid_server_name(s)
        ]
        return await through_first_server(
            candidates, lambda server: self._join_via(server, user_id, room_id, reason), room_id, "join", "join"
        )

    async def _join_via(self, server: str, user_id: str, room_id: str, reason: Optional[str]) -> str:
        made = await self._client.get_json(
            server,
            f"{F1}/make_join/{_path_part(room_id)}/{_path_part(user_id)}",
            {"ver": list(KNOWN_ROOM_VERSIONS)},
        )
        if not isinstance(made, dict):
            raise InvalidResponse("make_join answer is not an object")
        try:
            version = get_room_version(made.get("room_version", "1"))
        except UnsupportedRoomVersion:
            raise InvalidResponse(f"unknown room version {made.get('room_version')!r}") from None
        event = await self._build_join(made.get("event"), version, user_id, room_id, reason)
        event_id = Event(event, version).event_id
        # Partial state ("faster joins", spec send_join omit_members): the answer leaves out most member
        # events; the full state is fetched in the background (mxtwisted.federation.partial_state).
        resp = await self._client.put_json(
            server, f"{F2}/send_join/{_path_part(room_id)}/{_path_part(event_id)}", event,
            {"omit_members": "true"} if self.partial_joins else None,
        )
        partial_servers = _partial_servers(resp, server) if self.partial_joins else None
        join, state, outliers, creator = await self._check_send_join(
            resp, event, version, room_id, partial=partial_servers is not None
        )
        await self.engine.persist_joined_remote_room(join, state, outliers, creator, partial_servers=partial_servers)
        if partial_servers is not None and self.on_partial_join is not None:
            self.on_partial_join(room_id)
        return join.event_id

    async def _build_join(
        self, template: Any, version: RoomVersion, user_id: str, room_id: str, reason: Optional[str]
    ) -> dict[str, Any]:
        """Check the make_join template and make our signed join from it."""
        check_membership_template(template, user_id, room_id, "join")
        content = {"membership": "join"}
        if isinstance(template["content"].get(AUTHORISING_USER), str):
            content[AUTHORISING_USER] = template["content"][AUTHORISING_USER]
        if self._profiles is not None:
            profile = await self._profiles.get_profile(user_id)
            for key in ("displayname", "avatar_url"):
                if isinstance(profile.get(key), str):
                    content[key] = profile[key]
        if reason:
            content["reason"] = reason
        return sign_from_template(template, content, self.server_name, self._signing_key, version, self.engine.now_ms())

    # -- checking the send_join answer --------------------------------------------------------------
    async def _check_send_join(
        self, resp: Any, our_join: dict[str, Any], version: RoomVersion, room_id: str, partial: bool = False
    ) -> tuple[Event, StateMap, list[Event], Optional[str]]:
        """(the join to persist, the state before it, the events to store as outliers in auth order,
        the room's creator)."""
        if not isinstance(resp, dict):
            raise InvalidResponse("send_join answer is not an object")
        state_list, chain_list = resp.get("state"), resp.get("auth_chain")
        if not isinstance(state_list, list) or not isinstance(chain_list, list):
            raise InvalidResponse("send_join answer lacks state or auth_chain")
        events: dict[str, Event] = {}
        state_ids: list[str] = []
        for raw in chain_list:
            ev = await self._checked_pdu(raw, version, room_id)
            events[ev.event_id] = ev
        for raw in state_list:
            ev = await self._checked_pdu(raw, version, room_id)
            events.setdefault(ev.event_id, ev)
            if ev.state_key is None:
                raise InvalidResponse(f"{ev.event_id} in state is not a state event")
            state_ids.append(ev.event_id)
        join = Event(our_join, version)
        events.pop(join.event_id, None)
        if isinstance(resp.get("event"), dict):
            # A restricted join countersigned by the resident server: must be our join, with valid signatures.
            signed = await self._checked_pdu(resp["event"], version, room_id)
            if signed.event_id != join.event_id:
                raise InvalidResponse("the countersigned join is not our join")
            join = signed
        try:
            ordered = auth_order(events, version, room_id)
        except PduCheckError as e:
            raise InvalidResponse(str(e)) from None
        create_id = _create_id(events, state_ids, version, room_id)
        for ev in ordered:
            check_against_auth_events(ev, events, create_id)
        create = events[create_id]
        if create.rejected_reason is not None:
            raise InvalidResponse("the room's create event fails the auth rules")
        if create.content.get("room_version", "1") != version.identifier:
            raise InvalidResponse("the create event's room version differs from make_join's")
        state: StateMap = {}
        for event_id in state_ids:
            ev = events[event_id]
            key = (ev.type, ev.state_key or "")
            if key in state:
                raise InvalidResponse(f"two state events for {key}")
            if ev.rejected_reason is None:
                state[key] = event_id
        # The join must be allowed by its own auth events and by the returned state.
        try:
            own = [events[a] for a in join.auth_event_ids]
        except KeyError:
            raise InvalidResponse("an auth event of the join is missing from the answer") from None
        try:
            check_auth_events_list(join, own)
            check_auth_rules(join, {("m.room.create", ""): create} | {(a.type, a.state_key or ""): a for a in own})
            keys = auth_types_for_event(join) | {("m.room.create", "")}
            returned = {key: events[state[key]] for key in keys if key in state}
            if partial:
                # Member events may be left out of a partial state: the join's own auth events stand in.
                returned = {(a.type, a.state_key or ""): a for a in own} | returned
            check_auth_rules(join, returned)
        except AuthError as e:
            raise InvalidResponse(f"the join is not allowed by the room's state: {e.reason}") from None
        return join, state, ordered, create.sender

    async def _checked_pdu(self, raw: Any, version: RoomVersion, room_id: str) -> Event:
        """A received PDU after the format, room, signature and hash checks (redacted on a hash mismatch)."""
        try:
            return await check_pdu(self._keyring, raw, version, room_id)
        except PduCheckError as e:
            raise InvalidResponse(str(e)) from None


T = TypeVar("T")


def passed_through(e: FederationError, server: str, what: str) -> MatrixError:
    """A remote refusal as the client's error: its status, errcode and message (and ``room_version``)."""
    body = e.body if isinstance(e.body, dict) else {}
    message = body.get("error")
    extra = {"room_version": body["room_version"]} if "room_version" in body else None
    return MatrixError(
        e.status, e.errcode or Codes.UNKNOWN, message if isinstance(message, str) else f"{server} refused the {what}",
        extra=extra,
    )


async def through_first_server(
    candidates: list[str], attempt: Callable[[str], Awaitable[T]], room_id: str, verb: str, noun: str
) -> T:
    """``attempt(server)`` with each candidate in turn until one works (joins and knocks, spec "Joining
    Rooms"): a server that does not know the room, errs or cannot be reached makes way for the next; a refusal
    (4xx) is the client's answer. 404 when no candidate or every one said it does not know the room, else 502."""
    if not candidates:
        raise MatrixError(404, Codes.NOT_FOUND, f"No known servers to {verb} the room through")
    all_not_found = True
    for server in candidates:
        try:
            return await attempt(server)
        except FederationError as e:
            if e.status >= 500 or e.errcode in FAILOVER_ERRCODES:
                log.info("{noun} via {server}: {status} {errcode}", noun=noun, server=server, status=e.status,
                         errcode=e.errcode)
                all_not_found = all_not_found and e.status == 404
                continue
            raise passed_through(e, server, noun) from None
        except (RequestSendFailed, InvalidResponse) as e:
            log.info("{noun} of {room} via {server} failed: {e}", noun=noun, room=room_id, server=server, e=e)
            all_not_found = False
    if all_not_found:
        raise MatrixError(404, Codes.NOT_FOUND, "No server could find the room")
    raise MatrixError(502, Codes.UNKNOWN, f"Failed to {verb} the room via any server")


def _partial_servers(resp: Any, server: str) -> Optional[list[str]]:
    """The resident servers of a send_join answer with ``members_omitted`` (spec: ``servers_in_room``, which
    is then required; the answering server at least), or None for a full answer."""
    if not isinstance(resp, dict) or resp.get("members_omitted") is not True:
        return None
    servers = resp.get("servers_in_room")
    listed = [s for s in servers if isinstance(s, str) and is_valid_server_name(s)] if isinstance(servers, list) else []
    return list(dict.fromkeys([server, *listed]))


def check_membership_template(template: Any, user_id: str, room_id: str, membership: str) -> None:
    """A make_join/make_leave/make_knock template must be that membership of our user in that room (spec:
    the template is checked before we sign anything built from it). Raises InvalidResponse."""
    if not isinstance(template, dict) or not isinstance(template.get("content"), dict):
        raise InvalidResponse("the answer has no event template")
    if (
        template.get("type") != MEMBER
        or template.get("sender") != user_id
        or template.get("state_key") != user_id
        or template.get("room_id") != room_id
        or template["content"].get("membership") != membership
    ):
        raise InvalidResponse(f"the template is not a {membership} of our user in the room")


def sign_from_template(
    template: dict[str, Any], content: dict[str, Any], server_name: str, signing_key: Any, version: RoomVersion, now_ms: int
) -> dict[str, Any]:
    """Our membership event from a checked make_* template: its fields (not the other server's hashes,
    signatures or ID), our ``content``, origin and time (and an event ID of ours in rooms v1/v2), hashed and
    signed, in the PDU format (InvalidResponse otherwise)."""
    event = {k: v for k, v in template.items() if k not in ("event_id", "hashes", "signatures", "unsigned")}
    event["content"] = content
    event["origin"] = server_name
    event["origin_server_ts"] = now_ms
    if version.event_format is EventFormat.V1:
        event["event_id"] = f"${secrets.token_urlsafe(18)}:{server_name}"
    event = cosign_event(add_content_hash(event), server_name, signing_key, version)
    try:
        validate_event(event, version)
    except EventValidationError as e:
        raise InvalidResponse(f"the event built from the template is invalid: {e.reason}") from None
    return event


def _create_id(events: dict[str, Event], state_ids: list[str], version: RoomVersion, room_id: str) -> str:
    creates = [eid for eid in state_ids if events[eid].type == "m.room.create" and events[eid].state_key == ""]
    if len(creates) != 1:
        raise InvalidResponse("the state has no single create event")
    if version.room_id_from_create_event and "!" + creates[0][1:] != room_id:
        raise InvalidResponse("the create event does not match the room ID")
    return creates[0]


__all__ = ["RemoteJoiner", "InvalidResponse", "passed_through", "through_first_server"]
