"""Rooms over federation, served side: retrieving events and state, joining and leaving.

Spec: Server-Server API, "Retrieving events" (``/event``, ``/state``,
``/state_ids``, ``/event_auth``, ``/backfill``, ``/get_missing_events``),
"Joining Rooms" (``make_join``, v2 ``send_join``), "Leaving Rooms"
(``make_leave``, v2 ``send_leave``), "Knocking upon a room" (``make_knock``,
``send_knock``) and "Inviting to a room" (v2 ``invite``; the deprecated v1
endpoint is not served). Every handler receives the requesting
server's name (``origin``) from the request authentication. As Synapse,
events and state of a room are only given to a server that has a joined user
in the room now (403 M_FORBIDDEN otherwise), and events it could not have
seen under the room's history visibility are given redacted
(:mod:`mxtwisted.federation.server_visibility`). A server the room's
``m.room.server_acl`` denies gets 403 M_FORBIDDEN from every endpoint here
(spec: "Server Access Control Lists").
"""

from __future__ import annotations

import heapq
from typing import Any, Callable, Optional

from mxtwisted.federation.invites import FederationInvites, room_state_pdus
from mxtwisted.federation.joins import FederationJoins, state_before
from mxtwisted.federation.room_acl import check_origin_allowed
from mxtwisted.federation.server_visibility import filter_events_for_server, pdu_json, server_of
from mxtwisted.http.errors import Codes, MatrixError
from mxtwisted.http.resource import parse_json_object, query_arg
from mxtwisted.http.router import Router
from mxtwisted.rooms.engine import RoomCache, RoomEngine
from mxtwisted.rooms.room_state import load_auth_chain
from mxtwisted.storage.events import StoredEvent

V1 = "/_matrix/federation/v1"
V2 = "/_matrix/federation/v2"
#: Most events one /backfill or /get_missing_events answer holds (Synapse's caps).
MAX_BACKFILL = 100
MAX_MISSING_EVENTS = 20


def federation_route(authenticator: Any, handler: Callable[..., Any]) -> Callable[..., Any]:
    """``handler(request, origin, **params)`` as a router handler, authenticated by ``authenticator``:
    through ``mxtwisted.federation.auth.federation_handler`` when it exists, else directly with
    ``authenticator.authenticate(request)``."""
    try:
        from mxtwisted.federation.auth import federation_handler  # type: ignore[import-not-found]
    except ImportError:
        federation_handler = None
    if federation_handler is not None:
        return federation_handler(authenticator, handler)

    async def wrapped(request: Any, **params: str) -> Any:
        origin = await authenticator.authenticate(request)
        return await handler(request, origin, **params)

    return wrapped


def _query_list(request: Any, name: str) -> list[str]:
    try:
        return [v.decode("utf-8") for v in request.args.get(name.encode("ascii"), [])]
    except UnicodeDecodeError:
        raise MatrixError(400, Codes.INVALID_PARAM, f"Query parameter {name!r} must be UTF-8") from None


def _int_param(value: Any, name: str, default: Optional[int] = None) -> int:
    if value is None:
        if default is None:
            raise MatrixError(400, Codes.MISSING_PARAM, f"Missing parameter {name!r}")
        return default
    if isinstance(value, bool):
        raise MatrixError(400, Codes.INVALID_PARAM, f"{name!r} must be an integer")
    try:
        return int(value)
    except (TypeError, ValueError):
        raise MatrixError(400, Codes.INVALID_PARAM, f"{name!r} must be an integer") from None


class FederationRoomsResource:
    def __init__(self, engine: RoomEngine, joins: FederationJoins, invites: Optional[FederationInvites] = None) -> None:
        self.engine = engine
        self.store = engine.store
        self.joins = joins
        self.invites = invites
        self.server_name = engine.server_name

    def register(self, router: Router, authenticator: Any) -> None:
        routes = [
            ("GET", V1 + "/event/{eventId}", self.get_event),
            ("GET", V1 + "/state/{roomId}", self.get_state),
            ("GET", V1 + "/state_ids/{roomId}", self.get_state_ids),
            ("GET", V1 + "/event_auth/{roomId}/{eventId}", self.get_event_auth),
            ("GET", V1 + "/backfill/{roomId}", self.backfill),
            ("POST", V1 + "/get_missing_events/{roomId}", self.get_missing_events),
            ("GET", V1 + "/make_join/{roomId}/{userId}", self.make_join),
            ("PUT", V2 + "/send_join/{roomId}/{eventId}", self.send_join),
            ("GET", V1 + "/make_leave/{roomId}/{userId}", self.make_leave),
            ("PUT", V2 + "/send_leave/{roomId}/{eventId}", self.send_leave),
            ("GET", V1 + "/make_knock/{roomId}/{userId}", self.make_knock),
            ("PUT", V1 + "/send_knock/{roomId}/{eventId}", self.send_knock),
            ("PUT", V2 + "/invite/{roomId}/{eventId}", self.invite),
        ]
        for method, path, handler in routes:
            router.add(method, path, federation_route(authenticator, handler))

    # -- helpers ------------------------------------------------------------------------
    def _transaction(self, pdus: list[dict]) -> dict[str, Any]:
        return {"origin": self.server_name, "origin_server_ts": self.engine.now_ms(), "pdus": pdus}

    async def _room_for(self, origin: str, room_id: str) -> RoomCache:
        """The room (404 if unknown), if ``origin`` has a joined user in it now (403 otherwise)."""
        room = await self.engine.get_room_cache(room_id)
        members = await self.store.get_members(room_id, ("join",))
        if not any(server_of(user) == origin for user in members):
            raise MatrixError(403, Codes.FORBIDDEN, "Your server has no user in this room")
        # After the membership check, as Synapse: a server that is not in the room does not learn the ACL.
        await check_origin_allowed(self.engine, room, origin)
        return room

    async def _check_acl(self, origin: str, room_id: str) -> None:
        """403 M_FORBIDDEN when the room's server ACL denies ``origin`` (joins and leaves; 404 for an
        unknown room)."""
        await check_origin_allowed(self.engine, await self.engine.get_room_cache(room_id), origin)

    async def _event_in_room(self, room_id: str, event_id: Optional[str]) -> StoredEvent:
        if event_id is None:
            raise MatrixError(400, Codes.MISSING_PARAM, "Missing parameter 'event_id'")
        stored = await self.store.get_event(event_id)
        if stored is None or stored.room_id != room_id:
            raise MatrixError(404, Codes.NOT_FOUND, "Unknown event")
        return stored

    async def _state_and_chain(self, origin: str, room_id: str, request: Any) -> tuple[list[StoredEvent], list[StoredEvent]]:
        room = await self._room_for(origin, room_id)
        stored = await self._event_in_room(room_id, query_arg(request, "event_id"))
        state = await state_before(self.store, stored) if stored.rejected_reason is None else None
        if state is None:
            raise MatrixError(404, Codes.NOT_FOUND, "The state at this event is not known")
        events = await self.store.get_events(state.values())
        chain = await load_auth_chain(self.store, state.values(), room.version)
        return [events[eid] for eid in sorted(state.values()) if eid in events], chain

    # -- retrieving events ------------------------------------------------------------------
    async def get_event(self, request: Any, origin: str, eventId: str) -> dict[str, Any]:
        stored = await self.store.get_event(eventId)
        if stored is None or stored.rejected_reason is not None:
            raise MatrixError(404, Codes.NOT_FOUND, "Unknown event")
        room = await self._room_for(origin, stored.room_id)
        pdus = await filter_events_for_server(self.store, origin, [stored], room.version)
        return self._transaction(pdus)

    async def get_state(self, request: Any, origin: str, roomId: str) -> dict[str, Any]:
        state, chain = await self._state_and_chain(origin, roomId, request)
        return {"pdus": [pdu_json(ev) for ev in state], "auth_chain": [pdu_json(ev) for ev in chain]}

    async def get_state_ids(self, request: Any, origin: str, roomId: str) -> dict[str, Any]:
        state, chain = await self._state_and_chain(origin, roomId, request)
        return {"pdu_ids": [ev.event_id for ev in state], "auth_chain_ids": [ev.event_id for ev in chain]}

    async def get_event_auth(self, request: Any, origin: str, roomId: str, eventId: str) -> dict[str, Any]:
        room = await self._room_for(origin, roomId)
        await self._event_in_room(roomId, eventId)
        chain = await load_auth_chain(self.store, [eventId], room.version)
        return {"auth_chain": [pdu_json(ev) for ev in chain]}

    async def backfill(self, request: Any, origin: str, roomId: str) -> dict[str, Any]:
        starts = _query_list(request, "v")
        if not starts:
            raise MatrixError(400, Codes.MISSING_PARAM, "Missing parameter 'v'")
        limit = min(_int_param(query_arg(request, "limit"), "limit"), MAX_BACKFILL)
        if limit < 1:
            raise MatrixError(400, Codes.INVALID_PARAM, "'limit' must be positive")
        room = await self._room_for(origin, roomId)
        # Walk back through prev_events from the given events (included), the deepest first.
        found: list[StoredEvent] = []
        seen: set[str] = set()
        queue: list[tuple[int, int, str]] = []
        for stored in (await self.store.get_events(starts)).values():
            if stored.room_id == roomId:
                heapq.heappush(queue, (-stored.json.get("depth", 0), -stored.stream_ordering, stored.event_id))
        cache: dict[str, StoredEvent] = {}
        while queue and len(found) < limit:
            _, _, event_id = heapq.heappop(queue)
            if event_id in seen:
                continue
            seen.add(event_id)
            stored = cache.get(event_id) or await self.store.get_event(event_id)
            if stored is None or stored.room_id != roomId:
                continue
            found.append(stored)
            prev_ids = [p for p in _prev_ids(stored) if p not in seen]
            for prev in (await self.store.get_events(prev_ids)).values():
                cache[prev.event_id] = prev
                heapq.heappush(queue, (-prev.json.get("depth", 0), -prev.stream_ordering, prev.event_id))
        pdus = await filter_events_for_server(self.store, origin, found, room.version)
        return self._transaction(pdus)

    async def get_missing_events(self, request: Any, origin: str, roomId: str) -> dict[str, Any]:
        body = parse_json_object(request)
        earliest = body.get("earliest_events")
        latest = body.get("latest_events")
        for name, value in (("earliest_events", earliest), ("latest_events", latest)):
            if value is None:
                raise MatrixError(400, Codes.MISSING_PARAM, f"Missing {name!r}")
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise MatrixError(400, Codes.BAD_JSON, f"{name!r} must be a list of event IDs")
        limit = min(max(_int_param(body.get("limit"), "limit", 10), 0), MAX_MISSING_EVENTS)
        min_depth = _int_param(body.get("min_depth"), "min_depth", 0)
        room = await self._room_for(origin, roomId)
        # The events between the two sets: from the latest events' prev_events back, never past the earliest.
        seen: set[str] = set(earliest) | set(latest)
        found: list[StoredEvent] = []
        front = [s for s in (await self.store.get_events(latest)).values() if s.room_id == roomId]
        while front and len(found) < limit:
            prev_ids = sorted({p for ev in front for p in _prev_ids(ev)} - seen)
            seen.update(prev_ids)
            prevs = await self.store.get_events(prev_ids)
            front = []
            for prev in sorted(prevs.values(), key=lambda s: (-s.json.get("depth", 0), -s.stream_ordering)):
                if prev.room_id != roomId or prev.json.get("depth", 0) < min_depth or len(found) >= limit:
                    continue
                found.append(prev)
                front.append(prev)
        found.sort(key=lambda s: (s.json.get("depth", 0), s.stream_ordering))
        return {"events": await filter_events_for_server(self.store, origin, found, room.version)}

    # -- joining and leaving -------------------------------------------------------------------
    async def make_join(self, request: Any, origin: str, roomId: str, userId: str) -> dict[str, Any]:
        versions = _query_list(request, "ver") or ["1"]
        await self._check_acl(origin, roomId)
        return await self.joins.make_membership(origin, roomId, userId, "join", versions)

    async def send_join(self, request: Any, origin: str, roomId: str, eventId: str) -> dict[str, Any]:
        omit_members = (query_arg(request, "omit_members") or "").lower() == "true"
        body = parse_json_object(request)
        await self._check_acl(origin, roomId)
        join, countersigned = await self.joins.send_membership(origin, roomId, eventId, body, "join")
        return await self.joins.join_response(join, countersigned, omit_members)

    async def make_leave(self, request: Any, origin: str, roomId: str, userId: str) -> dict[str, Any]:
        await self._check_acl(origin, roomId)
        return await self.joins.make_membership(origin, roomId, userId, "leave", None)

    async def send_leave(self, request: Any, origin: str, roomId: str, eventId: str) -> dict[str, Any]:
        body = parse_json_object(request)
        await self._check_acl(origin, roomId)
        await self.joins.send_membership(origin, roomId, eventId, body, "leave")
        return {}

    # -- knocking and inviting ------------------------------------------------------------------
    async def make_knock(self, request: Any, origin: str, roomId: str, userId: str) -> dict[str, Any]:
        versions = _query_list(request, "ver")
        if not versions:
            raise MatrixError(400, Codes.MISSING_PARAM, "Missing parameter 'ver'")
        await self._check_acl(origin, roomId)
        return await self.joins.make_membership(origin, roomId, userId, "knock", versions)

    async def send_knock(self, request: Any, origin: str, roomId: str, eventId: str) -> dict[str, Any]:
        body = parse_json_object(request)
        await self._check_acl(origin, roomId)
        await self.joins.send_membership(origin, roomId, eventId, body, "knock")
        room = await self.engine.get_room_cache(roomId)
        return {"knock_room_state": await room_state_pdus(self.engine, room)}

    async def invite(self, request: Any, origin: str, roomId: str, eventId: str) -> dict[str, Any]:
        if self.invites is None:
            raise MatrixError(404, Codes.UNRECOGNIZED, "Invites over federation are not served")
        return await self.invites.on_invite(origin, roomId, eventId, parse_json_object(request))


def _prev_ids(stored: StoredEvent) -> list[str]:
    refs = stored.json.get("prev_events") or []
    return [r[0] if isinstance(r, list) else r for r in refs if isinstance(r, (str, list)) and r]


def register_served_federation(
    router: Router,
    components: Any,
    signing_key: Any,
    allow_public_rooms: bool = True,
    allow_profile_lookup: bool = True,
    users: Any = None,
) -> None:
    """Register the served room and query endpoints (used by ``HomeserverService.build_router`` when
    ``components.federation`` exists: its ``authenticator`` checks requests, its ``keyring`` signatures).
    ``allow_public_rooms`` / ``allow_profile_lookup``: ``allow_public_rooms_over_federation`` and
    ``allow_profile_lookup_over_federation`` (403 M_FORBIDDEN when off)."""
    from mxtwisted.api.federation.query import FederationQueryResource

    federation = components.federation
    keyring = getattr(federation, "keyring", None)
    joins = FederationJoins(components.rooms, signing_key, keyring)
    invites = FederationInvites(
        components.rooms, signing_key, keyring, getattr(components, "membership", None), users=users
    )
    FederationRoomsResource(components.rooms, joins, invites).register(router, federation.authenticator)
    FederationQueryResource(
        components.rooms.server_name, components.rooms.store, components.profile, allow_profile_lookup
    ).register(router, federation.authenticator)
    # Published room directory, space hierarchies, OpenID userinfo (the last without X-Matrix authentication).
    from mxtwisted.api.federation.directory import FederationDirectoryResource
    from mxtwisted.api.federation.hierarchy import FederationHierarchyResource
    from mxtwisted.api.federation.openid import OpenIdUserInfoResource
    from mxtwisted.rooms.directory import RoomDirectory

    FederationDirectoryResource(RoomDirectory(components.rooms, components.policies), allow_public_rooms).register(
        router, federation.authenticator
    )
    FederationHierarchyResource(components.hierarchy).register(router, federation.authenticator)
    OpenIdUserInfoResource(components.openid).register(router)
