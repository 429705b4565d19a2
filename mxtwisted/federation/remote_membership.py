"""Our users' invites, knocks and rejections that involve another server.

Spec: Server-Server API, "Inviting to a room" (``PUT /v2/invite``), "Knocking upon a room"
(``GET /v1/make_knock``, ``PUT /v1/send_knock``) and "Leaving Rooms (Rejecting Invites)"
(``GET /v1/make_leave``, ``PUT /v2/send_leave``).

* **Inviting a user of another server** to a room of ours: the invite is built and
  authorised like any local event but not stored yet; the invitee's server gets it
  with the room's state (``invite_room_state``) and must give it back with its own
  valid signature on the very same event. Only then is it persisted (with both
  signatures), and the federation sender delivers it to the room's servers. A
  refusal of the invitee's server (4xx) reaches the client as it was given; an
  unreachable server or a 5xx is ``502 M_UNKNOWN``; an answer that is not our event
  validly signed is ``502`` as well.
* **Knocking on a room we are not in**: ``make_knock`` on the candidate servers in
  turn (failover as for joins), our signed knock to ``send_knock``, and the knock is
  stored as an out-of-band membership with the returned ``knock_room_state``, so
  ``/sync`` shows it under ``rooms.knock``.
* **Rejecting an invite / rescinding a knock in a room we are not in**:
  ``make_leave``/``send_leave`` through the servers that know the room (the
  inviter's, the invite's origin, the room ID's, those of the room state senders).
  If none can be reached the invite is still rejected here (as Synapse): a leave
  that only this server knows, built on the invite, is stored instead. Either way
  the user's membership becomes ``leave``, so ``/sync`` moves the room to
  ``rooms.leave``.
"""

from __future__ import annotations

import secrets
from typing import Any, Optional
from urllib.parse import quote

from twisted.logger import Logger
from unpaddedbase64 import encode_base64

from mxtwisted.events.event import Event
from mxtwisted.events.hashing import add_content_hash, compute_reference_hash
from mxtwisted.events.room_versions import (
    KNOWN_ROOM_VERSIONS,
    EventFormat,
    RoomVersion,
    UnsupportedRoomVersion,
    get_room_version,
)
from mxtwisted.events.signing import SignatureVerifyError, cosign_event
from mxtwisted.events.validation import is_valid_server_name
from mxtwisted.federation.client import FederationError, RequestSendFailed
from mxtwisted.federation.invites import (
    ROOM_VERSION_KEY,
    checked_room_state,
    is_resident,
    room_state_pdus,
)
from mxtwisted.federation.pdu_checks import verify_server_signature
from mxtwisted.federation.remote_join import (
    InvalidResponse,
    RemoteJoiner,
    check_membership_template,
    passed_through,
    sign_from_template,
    through_first_server,
)
from mxtwisted.federation.server_visibility import server_of
from mxtwisted.http.errors import Codes, MatrixError
from mxtwisted.rooms.engine import RoomEngine

log = Logger()

F1 = "/_matrix/federation/v1"
F2 = "/_matrix/federation/v2"
MEMBER = "m.room.member"


def _q(value: str) -> str:
    return quote(value, safe="")


class RemoteMemberships:
    def __init__(
        self, engine: RoomEngine, client: Any, keyring: Any, signing_key: Any, joiner: RemoteJoiner, profiles: Any = None
    ) -> None:
        """``client``: the FederationClient; ``keyring``: ``verify_json_for_server``; ``joiner``: the
        RemoteJoiner, whose checks of received PDUs are reused; ``profiles``: for the knock's displayname."""
        self.engine = engine
        self.store = engine.store
        self.server_name = engine.server_name
        self._client = client
        self._keyring = keyring
        self._signing_key = signing_key
        self._joiner = joiner
        self._profiles = profiles

    async def is_resident(self, room_id: str) -> bool:
        return await is_resident(self.engine, room_id)

    # -- inviting a remote user ---------------------------------------------------------------------
    async def invite(
        self, sender: str, room_id: str, target: str, content: dict[str, Any], txn: Optional[tuple[str, str, str]] = None
    ) -> str:
        """Invite ``target`` (of another server) to our room: their server signs, then we persist. Returns the
        invite's event ID."""
        ev = await self.engine.build_local_event(sender, room_id, MEMBER, content, state_key=target)
        version = ev.room_version
        room = await self.engine.get_room_cache(room_id)
        server = server_of(target)
        ours = ev.get_pdu_json()
        body = {
            "room_version": version.identifier,
            "event": ours,
            "invite_room_state": await room_state_pdus(self.engine, room, sender),
        }
        try:
            resp = await self._client.put_json(server, f"{F2}/invite/{_q(room_id)}/{_q(ev.event_id)}", body)
        except FederationError as e:
            log.info("Invite of {target} refused by {server}: {status} {errcode}", target=target, server=server,
                     status=e.status, errcode=e.errcode)
            if e.status >= 500:
                raise MatrixError(502, Codes.UNKNOWN, f"The invitee's server failed ({e.status})") from None
            raise passed_through(e, server, "invite") from None
        except RequestSendFailed as e:
            log.info("Invite of {target}: {server} cannot be reached: {e}", target=target, server=server, e=e)
            raise MatrixError(502, Codes.UNKNOWN, "The invitee's server cannot be reached") from None
        try:
            signed = await self._countersigned(resp, ours, server, version)
        except InvalidResponse as e:
            log.info("Invite of {target}: invalid answer of {server}: {e}", target=target, server=server, e=e)
            raise MatrixError(502, Codes.UNKNOWN, "The invitee's server gave an invalid answer") from None
        event_id, _ = await self.engine.persist_built_event(Event(signed, version, event_id=ev.event_id), txn)
        return event_id

    async def _countersigned(self, resp: Any, ours: dict[str, Any], server: str, version: RoomVersion) -> dict[str, Any]:
        """Our invite with the invitee server's signature, from its answer: the same event (all but the
        signatures), and that server's signature valid on it."""
        returned = resp.get("event") if isinstance(resp, dict) else None
        if not isinstance(returned, dict):
            raise InvalidResponse("the answer has no event")

        def essence(event: dict[str, Any]) -> dict[str, Any]:
            return {k: v for k, v in event.items() if k not in ("signatures", "unsigned")}

        if essence(returned) != essence(ours):
            raise InvalidResponse("the returned event is not our invite")
        theirs = returned.get("signatures", {}).get(server) if isinstance(returned.get("signatures"), dict) else None
        if not isinstance(theirs, dict) or not theirs:
            raise InvalidResponse(f"the invite is not signed by {server}")
        signed = dict(ours, signatures=dict(ours["signatures"], **{server: theirs}))
        try:
            await verify_server_signature(self._keyring, signed, server, version)
        except SignatureVerifyError as e:
            raise InvalidResponse(f"the signature of {server} is not valid: {e}") from None
        return signed

    # -- knocking on a remote room ----------------------------------------------------------------------
    async def knock(self, user_id: str, room_id: str, servers: list[str], reason: Optional[str] = None) -> str:
        """Knock on a room this server is not in, through the first of ``servers`` that works (then the room
        ID's server). Returns the knock's event ID."""
        candidates = self._candidates(servers + _room_id_server(room_id))
        return await through_first_server(
            candidates, lambda server: self._knock_via(server, user_id, room_id, reason), room_id, "knock on", "knock"
        )

    async def _knock_via(self, server: str, user_id: str, room_id: str, reason: Optional[str]) -> str:
        made = await self._client.get_json(
            server, f"{F1}/make_knock/{_q(room_id)}/{_q(user_id)}", {"ver": list(KNOWN_ROOM_VERSIONS)}
        )
        version = _version_of(made)
        if not version.knock_join_rule:
            raise InvalidResponse(f"room version {version.identifier} has no knocks")
        content: dict[str, Any] = {"membership": "knock"}
        if self._profiles is not None:
            profile = await self._profiles.get_profile(user_id)
            content.update({k: profile[k] for k in ("displayname", "avatar_url") if isinstance(profile.get(k), str)})
        if reason:
            content["reason"] = reason
        event = self._from_template(made.get("event"), version, user_id, room_id, "knock", content)
        event_id = Event(event, version).event_id
        resp = await self._client.put_json(server, f"{F1}/send_knock/{_q(room_id)}/{_q(event_id)}", event)
        if not isinstance(resp, dict) or not isinstance(resp.get("knock_room_state"), list):
            raise InvalidResponse("send_knock answer has no knock_room_state")
        room_state = await checked_room_state(resp["knock_room_state"], version, room_id, self._keyring, False)
        kept = dict(event, unsigned={"knock_room_state": room_state, ROOM_VERSION_KEY: version.identifier})
        await self.engine.persist_out_of_band_membership(Event(kept, version, event_id=event_id))
        return event_id

    # -- rejecting a remote invite / rescinding a knock -----------------------------------------------------
    async def leave(self, user_id: str, room_id: str, reason: Optional[str] = None) -> Optional[str]:
        """Reject the user's invite to (or rescind their knock on) a room this server is not in. None when the
        user has no invite or knock there (the caller goes on as for any leave). Returns the leave's ID."""
        member = await self._current_member(user_id, room_id)
        if member is None:
            return None
        version = member.room_version
        content: dict[str, Any] = {"membership": "leave"}
        if reason:
            content["reason"] = reason
        for server in self._candidates(self.servers_for(member)):
            try:
                return await self._leave_via(server, user_id, room_id, content)
            except FederationError as e:
                log.info("make_leave/send_leave via {server}: {status} {errcode}", server=server, status=e.status,
                         errcode=e.errcode)
            except (RequestSendFailed, InvalidResponse) as e:
                log.info("Leaving {room} via {server} failed: {e}", room=room_id, server=server, e=e)
        # Nobody could be told: the invite is rejected here all the same (the inviter's server keeps it).
        leave = self._local_leave(member, version, content)
        await self.engine.persist_out_of_band_membership(leave)
        return leave.event_id

    async def _leave_via(self, server: str, user_id: str, room_id: str, content: dict[str, Any]) -> str:
        made = await self._client.get_json(server, f"{F1}/make_leave/{_q(room_id)}/{_q(user_id)}")
        version = _version_of(made)
        event = self._from_template(made.get("event"), version, user_id, room_id, "leave", content)
        event_id = Event(event, version).event_id
        await self._client.put_json(server, f"{F2}/send_leave/{_q(room_id)}/{_q(event_id)}", event)
        kept = dict(event, unsigned={ROOM_VERSION_KEY: version.identifier})
        await self.engine.persist_out_of_band_membership(Event(kept, version, event_id=event_id))
        return event_id

    def _local_leave(self, member: Event, version: RoomVersion, content: dict[str, Any]) -> Event:
        """A leave built on the user's invite/knock (its only prev and auth event), for when no server of the
        room can be reached. Never sent: it only records the rejection here."""
        ref: Any = member.event_id
        if version.event_format is EventFormat.V1:
            ref = [member.event_id, {"sha256": encode_base64(compute_reference_hash(member.get_pdu_json(), version))}]
        user_id = member.state_key or ""
        event: dict[str, Any] = {
            "type": MEMBER,
            "room_id": member.room_id,
            "sender": user_id,
            "state_key": user_id,
            "content": content,
            "origin": self.server_name,
            "origin_server_ts": self.engine.now_ms(),
            "depth": member.depth + 1,
            "prev_events": [ref],
            "auth_events": [ref],
        }
        if version.event_format is EventFormat.V1:
            event["event_id"] = f"${secrets.token_urlsafe(18)}:{self.server_name}"
        signed = cosign_event(add_content_hash(event), self.server_name, self._signing_key, version)
        return Event(dict(signed, unsigned={ROOM_VERSION_KEY: version.identifier}), version)

    # -- helpers --------------------------------------------------------------------------------------------
    async def _current_member(self, user_id: str, room_id: str) -> Optional[Event]:
        """The user's current invite or knock event in the room (stored out of band), or None."""
        event_id = (await self.store.get_members(room_id)).get(user_id)
        stored = await self.store.get_event(event_id) if event_id else None
        if stored is None or (stored.json.get("content") or {}).get("membership") not in ("invite", "knock"):
            return None
        room = await self.store.get_room(room_id)
        version = get_room_version(room.room_version) if room is not None else _stored_version(stored.json)
        return Event(stored.json, version, event_id=stored.event_id)

    async def servers_for_user(self, user_id: str, room_id: str) -> list[str]:
        """Servers that know the room, from the user's invite or knock there (for joining after an invite)."""
        member = await self._current_member(user_id, room_id)
        return self.servers_for(member) if member is not None else _room_id_server(room_id)

    @staticmethod
    def servers_for(member: Event) -> list[str]:
        """The inviter's server and the invite's origin first, then the room ID's server, then the servers of
        the senders of the room state that came with the invite or knock."""
        servers = [server_of(member.sender)]
        origin = member.get("origin")
        if isinstance(origin, str):
            servers.append(origin)
        servers += _room_id_server(member.room_id)
        unsigned = member.unsigned
        for key in ("invite_room_state", "knock_room_state"):
            entries = unsigned.get(key)
            for entry in entries if isinstance(entries, list) else []:
                if isinstance(entry, dict) and isinstance(entry.get("sender"), str) and ":" in entry["sender"]:
                    servers.append(server_of(entry["sender"]))
        return servers

    def _candidates(self, servers: list[str]) -> list[str]:
        return [s for s in dict.fromkeys(servers) if s != self.server_name and is_valid_server_name(s)]

    def _from_template(
        self, template: Any, version: RoomVersion, user_id: str, room_id: str, membership: str, content: dict[str, Any]
    ) -> dict[str, Any]:
        """Our signed membership event from a ``make_knock``/``make_leave`` template (checked first)."""
        check_membership_template(template, user_id, room_id, membership)
        return sign_from_template(template, content, self.server_name, self._signing_key, version, self.engine.now_ms())


def _version_of(made: Any) -> RoomVersion:
    if not isinstance(made, dict):
        raise InvalidResponse("the make_* answer is not an object")
    try:
        return get_room_version(made.get("room_version", "1"))
    except (UnsupportedRoomVersion, TypeError):
        raise InvalidResponse(f"unknown room version {made.get('room_version')!r}") from None


def _stored_version(event_json: dict[str, Any]) -> RoomVersion:
    """The room version of an out-of-band member event: kept in its ``unsigned``; else the one of the create
    event in the room state that came with it, else guessed from the event's format."""
    unsigned = event_json.get("unsigned") or {}
    try:
        return get_room_version(str(unsigned[ROOM_VERSION_KEY]))
    except (KeyError, UnsupportedRoomVersion):
        pass
    for key in ("invite_room_state", "knock_room_state"):
        for entry in unsigned.get(key) or []:
            if isinstance(entry, dict) and entry.get("type") == "m.room.create":
                content = entry.get("content") or {}
                try:
                    return get_room_version(str(content.get("room_version", "1")))
                except UnsupportedRoomVersion:
                    break
    return get_room_version("1" if "event_id" in event_json else "10")


def _room_id_server(room_id: str) -> list[str]:
    """The server in a room ID (rooms before v12 name their creator's server)."""
    return [room_id.split(":", 1)[1]] if ":" in room_id else []


__all__ = ["RemoteMemberships"]
