"""Room endpoints of the Client-Server API: create, send, state, read, membership.

Spec: Client-Server API, "Rooms" (``/createRoom``, ``/rooms/{roomId}/send``,
``/state``, ``/event``, ``/messages``, ``/members``, ``/joined_members``,
``/join``, ``/leave``, ``/invite``, ``/joined_rooms``). Thin: parse, call the
room engine / reader / membership handler, serialise. Rooms of other servers:
``/join`` of an unknown room goes through the remote joiner (via the given
servers, the inviter's, the room ID's); ``/leave`` of a room no user of ours
is in rejects the invite or rescinds the knock over federation; inviting a user
of another server goes through their server (:mod:`mxtwisted.federation.remote_membership`).
"""

from __future__ import annotations

import json
from typing import Any, Optional

from mxtwisted.api.client import CLIENT_PREFIXES as PREFIXES
from mxtwisted.events.validation import is_valid_room_alias
from mxtwisted.handlers.auth import Authenticator, Requester
from mxtwisted.http.errors import Codes, MatrixError
from mxtwisted.http.resource import parse_json_object, query_arg
from mxtwisted.http.router import Router
from mxtwisted.ratelimit import Ratelimiter
from mxtwisted.rooms.creation import RoomCreator
from mxtwisted.rooms.membership import INVITE, JOIN, LEAVE, MembershipHandler
from mxtwisted.rooms.reader import RoomReader

MAX_LIMIT = 1000


def _check_room_id(room_id: str) -> None:
    if not room_id.startswith("!"):
        raise MatrixError(400, Codes.INVALID_PARAM, f"Invalid room ID {room_id!r}")


class RoomsResource:
    def __init__(
        self,
        auth: Authenticator,
        creator: RoomCreator,
        membership: MembershipHandler,
        reader: RoomReader,
        message_ratelimiter: Optional[Ratelimiter] = None,
        remote_join: Any = None,
        remote_membership: Any = None,
    ) -> None:
        self.auth = auth
        self.creator = creator
        self.membership = membership
        self.reader = reader
        self.engine = creator.engine
        self.store = creator.engine.store
        self._ratelimiter = message_ratelimiter
        #: Joins rooms of other servers (mxtwisted.federation.remote_join.RemoteJoiner), or None.
        self.remote_join = remote_join
        #: Rejects invites / rescinds knocks in rooms of other servers, and names the servers an invite
        #: came from (mxtwisted.federation.remote_membership.RemoteMemberships), or None.
        self.remote_membership = remote_membership

    def register(self, router: Router) -> None:
        for p in PREFIXES:
            router.add("POST", f"{p}/createRoom", self.create_room)
            router.add("PUT", f"{p}/rooms/{{roomId}}/send/{{eventType}}/{{txnId}}", self.send)
            router.add("PUT", f"{p}/rooms/{{roomId}}/state/{{eventType}}/{{stateKey}}", self.put_state)
            router.add("PUT", f"{p}/rooms/{{roomId}}/state/{{eventType}}", self.put_state)
            router.add("GET", f"{p}/rooms/{{roomId}}/state/{{eventType}}/{{stateKey}}", self.get_state_event)
            router.add("GET", f"{p}/rooms/{{roomId}}/state/{{eventType}}", self.get_state_event)
            router.add("GET", f"{p}/rooms/{{roomId}}/state", self.get_state)
            router.add("GET", f"{p}/rooms/{{roomId}}/event/{{eventId}}", self.get_event)
            router.add("GET", f"{p}/rooms/{{roomId}}/messages", self.messages)
            router.add("GET", f"{p}/rooms/{{roomId}}/joined_members", self.joined_members)
            router.add("GET", f"{p}/rooms/{{roomId}}/members", self.members)
            router.add("GET", f"{p}/joined_rooms", self.joined_rooms)
            router.add("POST", f"{p}/join/{{roomIdOrAlias}}", self.join_by_id_or_alias)
            router.add("POST", f"{p}/rooms/{{roomId}}/join", self.join)
            router.add("POST", f"{p}/rooms/{{roomId}}/leave", self.leave)
            router.add("POST", f"{p}/rooms/{{roomId}}/invite", self.invite)

    def _ratelimit(self, requester: Requester) -> None:
        if self._ratelimiter is not None:
            self._ratelimiter.ratelimit(requester.user_id)

    # -- create and send ---------------------------------------------------------------
    async def create_room(self, request: Any) -> dict[str, Any]:
        requester = await self.auth.get_requester(request)
        body = parse_json_object(request, allow_empty=True)
        room_id, alias = await self.creator.create_room(requester.user_id, body)
        result: dict[str, Any] = {"room_id": room_id}
        if alias:
            result["room_alias"] = alias
        return result

    async def send(self, request: Any, roomId: str, eventType: str, txnId: str) -> dict[str, Any]:
        requester = await self.auth.get_requester(request, allow_guest=True)
        _check_room_id(roomId)
        content = parse_json_object(request)
        if eventType == "m.room.redaction":
            raise MatrixError(400, Codes.BAD_JSON, "Use /redact to send redactions")
        self._ratelimit(requester)
        txn = (requester.user_id, requester.device_id or "", txnId) if requester.device_id else None
        event_id, _ = await self.engine.send_event(requester.user_id, roomId, eventType, content, txn=txn)
        return {"event_id": event_id}

    async def put_state(self, request: Any, roomId: str, eventType: str, stateKey: str = "") -> dict[str, Any]:
        requester = await self.auth.get_requester(request)
        _check_room_id(roomId)
        content = parse_json_object(request)
        if eventType == "m.room.member":
            membership = content.get("membership")
            if not isinstance(membership, str):
                raise MatrixError(400, Codes.BAD_JSON, "'membership' must be a string")
            reason = content.get("reason")
            extra = {k: v for k, v in content.items() if k not in ("membership", "reason")}
            event_id = await self.membership.update(requester.user_id, roomId, stateKey, membership, reason, extra)
            return {"event_id": event_id}
        self._ratelimit(requester)
        event_id, _ = await self.engine.send_event(requester.user_id, roomId, eventType, content, state_key=stateKey)
        return {"event_id": event_id}

    # -- read ----------------------------------------------------------------------------
    async def get_state(self, request: Any, roomId: str) -> list[dict[str, Any]]:
        requester = await self.auth.get_requester(request, allow_guest=True)
        _check_room_id(roomId)
        return await self.reader.get_state(roomId, requester.user_id)  # type: ignore[return-value]

    async def get_state_event(self, request: Any, roomId: str, eventType: str, stateKey: str = "") -> dict[str, Any]:
        requester = await self.auth.get_requester(request, allow_guest=True)
        _check_room_id(roomId)
        stored = await self.reader.get_state_event(roomId, requester.user_id, eventType, stateKey)
        if query_arg(request, "format", "content") == "event":
            return (await self.reader.serialize([stored], requester.user_id, None))[0]
        return stored.json.get("content") or {}

    async def get_event(self, request: Any, roomId: str, eventId: str) -> dict[str, Any]:
        requester = await self.auth.get_requester(request, allow_guest=True)
        _check_room_id(roomId)
        return await self.reader.get_event(roomId, eventId, requester.user_id, requester.device_id)

    async def messages(self, request: Any, roomId: str) -> dict[str, Any]:
        requester = await self.auth.get_requester(request, allow_guest=True)
        _check_room_id(roomId)
        direction = query_arg(request, "dir", "b")
        if direction not in ("b", "f"):
            raise MatrixError(400, Codes.INVALID_PARAM, "'dir' must be 'b' or 'f'")
        limit_text = query_arg(request, "limit", "10") or "10"
        try:
            limit = int(limit_text)
        except ValueError:
            raise MatrixError(400, Codes.INVALID_PARAM, "'limit' must be an integer") from None
        if limit < 0:
            raise MatrixError(400, Codes.INVALID_PARAM, "'limit' must not be negative")
        limit = min(limit, MAX_LIMIT)
        event_filter = _parse_filter(query_arg(request, "filter"))
        return await self.reader.messages(
            roomId, requester.user_id, requester.device_id,
            query_arg(request, "from"), query_arg(request, "to"), direction == "b", limit, event_filter,
        )

    async def joined_members(self, request: Any, roomId: str) -> dict[str, Any]:
        requester = await self.auth.get_requester(request, allow_guest=True)
        _check_room_id(roomId)
        if await self.reader.membership(roomId, requester.user_id) != JOIN:
            raise MatrixError(403, Codes.FORBIDDEN, "You are not joined to this room")
        await self.engine.wait_full_state(roomId)  # joined with partial state: the members come with it
        members = await self.store.get_members(roomId, ("join",))
        events = await self.store.get_events(members.values())
        joined: dict[str, Any] = {}
        for user_id, event_id in members.items():
            content = events[event_id].json.get("content", {}) if event_id in events else {}
            # Spec: optional strings; absent rather than null when unset.
            joined[user_id] = {
                key: content[field] for key, field in (("display_name", "displayname"), ("avatar_url", "avatar_url"))
                if isinstance(content.get(field), str)
            }
        return {"joined": joined}

    async def members(self, request: Any, roomId: str) -> dict[str, Any]:
        requester = await self.auth.get_requester(request, allow_guest=True)
        _check_room_id(roomId)
        membership = query_arg(request, "membership")
        not_membership = query_arg(request, "not_membership")
        at = query_arg(request, "at")
        if at is not None:
            joined = await self.reader.check_can_read(roomId, requester.user_id)
            position = _stream_of(at)
            events = await self.store.get_room_events(roomId, position, None, True, 1)
            state_ids = await self.store.get_state_ids_at_event(events[0].event_id) if events else {}
            del joined
        else:
            state_ids = await self.reader.visible_state_ids(roomId, requester.user_id)
        member_ids = [eid for (t, _), eid in (state_ids or {}).items() if t == "m.room.member"]
        stored = await self.store.get_events(member_ids)
        chosen = []
        for eid in member_ids:
            ev = stored.get(eid)
            if ev is None:
                continue
            m = (ev.json.get("content") or {}).get("membership")
            if membership is not None and m != membership:
                continue
            if not_membership is not None and m == not_membership:
                continue
            chosen.append(ev)
        return {"chunk": await self.reader.serialize(chosen, requester.user_id, None)}

    async def joined_rooms(self, request: Any) -> dict[str, Any]:
        requester = await self.auth.get_requester(request, allow_guest=True)
        rooms = await self.store.get_rooms_for_user(requester.user_id, ("join",))
        return {"joined_rooms": sorted(rooms)}

    # -- membership ----------------------------------------------------------------------------
    async def _resolve_room(self, room_id_or_alias: str) -> tuple[str, list[str]]:
        """(room ID, servers the alias's server named); a remote alias is asked of its server."""
        if room_id_or_alias.startswith("!"):
            return room_id_or_alias, []
        if room_id_or_alias.startswith("#") and is_valid_room_alias(room_id_or_alias):
            if self.remote_join is not None and room_id_or_alias.split(":", 1)[1] != self.engine.server_name:
                return await self.remote_join.resolve_alias(room_id_or_alias)
            found = await self.store.get_alias(room_id_or_alias)
            if found is None:
                raise MatrixError(404, Codes.NOT_FOUND, "Room alias not found")
            return found[0], []
        raise MatrixError(400, Codes.INVALID_PARAM, f"Invalid room ID or alias {room_id_or_alias!r}")

    async def join_by_id_or_alias(self, request: Any, roomIdOrAlias: str) -> dict[str, Any]:
        await self.auth.get_requester(request, allow_guest=True)
        # Spec: ``via`` (``server_name`` before v1.12) names servers to join through.
        servers = _query_list(request, "via") + _query_list(request, "server_name")
        room_id, alias_servers = await self._resolve_room(roomIdOrAlias)
        return await self._join(request, room_id, servers + alias_servers)

    async def join(self, request: Any, roomId: str) -> dict[str, Any]:
        return await self._join(request, roomId, [])

    async def _join(self, request: Any, roomId: str, servers: list[str]) -> dict[str, Any]:
        requester = await self.auth.get_requester(request, allow_guest=True)
        body = parse_json_object(request, allow_empty=True)
        reason = body.get("reason")
        _check_room_id(roomId)
        if self.remote_join is not None:
            remote_servers = await self._remote_join_servers(requester.user_id, roomId, servers)
            if remote_servers is not None:
                # A room this server does not follow: join it through a server that does.
                if reason is not None and not isinstance(reason, str):
                    raise MatrixError(400, Codes.BAD_JSON, "'reason' must be a string")
                await self.remote_join.join(requester.user_id, roomId, remote_servers, reason)
                return {"room_id": roomId}
        await self.membership.update(requester.user_id, roomId, requester.user_id, JOIN, reason)
        return {"room_id": roomId}

    async def _remote_join_servers(self, user_id: str, room_id: str, given: list[str]) -> Optional[list[str]]:
        """The servers to join ``room_id`` through, or None for a local join. A room we do not know is joined
        through the given servers, the inviter's (spec "Joining Rooms") and the room ID's server. A room we
        know but have no joined user in any more (our state of it is stale) is joined through those and the
        servers of its other members, when it has any; else (a room of ours everybody left) locally."""
        known = await self.store.get_room(room_id) is not None
        if known and (self.remote_membership is None or await self.remote_membership.is_resident(room_id)):
            return None
        servers = list(given)
        if self.remote_membership is not None:
            servers += await self.remote_membership.servers_for_user(user_id, room_id)
        if ":" in room_id:
            servers.append(room_id.split(":", 1)[1])
        if known:
            members = await self.store.get_members(room_id, ("join",))
            servers += sorted({user.partition(":")[2] for user in members})
            if not [s for s in servers if s and s != self.engine.server_name]:
                return None
        return servers

    async def leave(self, request: Any, roomId: str) -> dict[str, Any]:
        requester = await self.auth.get_requester(request, allow_guest=True)
        _check_room_id(roomId)
        body = parse_json_object(request, allow_empty=True)
        reason = body.get("reason")
        if self.remote_membership is not None and not await self.remote_membership.is_resident(roomId):
            # No user of ours is in the room: an invite or knock is rejected through a server that is.
            if reason is not None and not isinstance(reason, str):
                raise MatrixError(400, Codes.BAD_JSON, "'reason' must be a string")
            if await self.remote_membership.leave(requester.user_id, roomId, reason) is not None:
                return {}
        await self.membership.update(requester.user_id, roomId, requester.user_id, LEAVE, reason)
        return {}

    async def invite(self, request: Any, roomId: str) -> dict[str, Any]:
        requester = await self.auth.get_requester(request)
        _check_room_id(roomId)
        body = parse_json_object(request)
        target = body.get("user_id")
        if not isinstance(target, str):
            if "medium" in body or "id_server" in body:
                raise MatrixError(400, Codes.THREEPID_MEDIUM_NOT_SUPPORTED, "Third-party invites are not supported")
            raise MatrixError(400, Codes.MISSING_PARAM, "Missing 'user_id'")
        await self.membership.update(requester.user_id, roomId, target, INVITE, body.get("reason"))
        return {}


def _query_list(request: Any, name: str) -> list[str]:
    """Every value of a repeated query parameter, decoded as UTF-8."""
    try:
        return [v.decode("utf-8") for v in request.args.get(name.encode("ascii"), [])]
    except UnicodeDecodeError:
        raise MatrixError(400, Codes.INVALID_PARAM, f"Query parameter {name!r} must be UTF-8") from None


def _stream_of(token: str) -> int:
    from mxtwisted.rooms.reader import parse_stream_token

    value = parse_stream_token(token)
    assert value is not None
    return value


def _parse_filter(text: Optional[str]) -> Any:
    """The ``filter`` parameter (a RoomEventFilter, spec "Filtering") as a predicate on stored events (or None).

    Validated and matched by :mod:`mxtwisted.sync.filters` (``*`` wildcards in ``types``/``not_types``,
    ``rooms``, ``contains_url``...): ``400 M_NOT_JSON`` / ``M_BAD_JSON`` / ``M_INVALID_PARAM`` when invalid.
    """
    if not text:
        return None
    from mxtwisted.sync.filters import InvalidFilter, parse_room_event_filter

    try:
        spec = json.loads(text)
    except ValueError:
        raise MatrixError(400, Codes.NOT_JSON, "'filter' is not JSON") from None
    if not isinstance(spec, dict):
        raise MatrixError(400, Codes.BAD_JSON, "'filter' must be a JSON object")
    try:
        room_filter = parse_room_event_filter(spec, "filter")
    except InvalidFilter as e:
        raise MatrixError(400, e.errcode, e.message) from None

    def predicate(ev: Any) -> bool:
        return room_filter.matches(ev.json, ev.room_id)

    return predicate
