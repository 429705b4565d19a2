"""The room engine: build, authorise, persist and announce events.

Spec: Server-Server API "Room Versions"/"PDUs", Client-Server "Sending events".
Every event of a room goes through :meth:`RoomEngine.send_event` under that
room's lock, so concurrent sends to one room are serialised and never fork
the DAG locally, while sends to different rooms run concurrently. The
engine keeps each active room's current state, forward extremities and depth
in memory (:class:`RoomCache`), so building and authorising an event costs no
database round trip and does not depend on the size of the room: the auth
rules only ever look at the handful of state events the new event's auth
types select.
"""

from __future__ import annotations

import secrets
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Iterable, Optional

from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from mxtwisted.events.auth import (
    AuthError,
    auth_types_for_event,
    check_auth_events_list,
    check_auth_rules,
    get_power_level,
)
from mxtwisted.events.event import Event
from mxtwisted.events.hashing import add_content_hash, compute_event_id, compute_reference_hash
from mxtwisted.events.redaction import redact_event
from mxtwisted.events.room_versions import EventFormat, RoomVersion, get_room_version
from mxtwisted.events.signing import sign_event
from mxtwisted.events.validation import EventValidationError, validate_event
from mxtwisted.http.errors import Codes, MatrixError
from mxtwisted.notifier import Notifier
from mxtwisted.rooms import room_state
from mxtwisted.rooms.room_state import GroupedState
from mxtwisted.storage.backfill import BackfilledEvent, persist_backfilled
from mxtwisted.storage.events import EventStore, PersistContext, StateMap, StoredEvent, needs_snapshot
from mxtwisted.storage.partial_state import (
    PartialRoom,
    add_partial_room,
    complete_partial_room,
    get_partial_room,
    groups_since,
)

log = Logger()

#: Called after an event is persisted: (event, stored stream ordering).
EventListener = Callable[[Event, int], Any]
#: Checks run before an event is persisted; raise MatrixError to refuse (spam checkers, room policies).
EventCheck = Callable[[Event], Awaitable[None]]

#: How long a reader of a room joined with partial state waits for its full state.
FULL_STATE_WAIT_SECONDS = 60.0

#: At most this many prev_events for a new local event (as Synapse): a room with more forward extremities
#: is merged over several events.
MAX_PREV_EVENTS = 10

#: What became of a remote event (:meth:`RoomEngine.persist_remote_event`).
ACCEPTED = "accepted"
SOFT_FAILED = "soft_failed"


@dataclass
class RemoteOutcome:
    event: Event
    stream_ordering: int
    #: ACCEPTED or SOFT_FAILED (a rejected event raises).
    status: str


@dataclass
class RoomCache:
    """What the engine keeps in memory for an active room."""

    room_id: str
    version: RoomVersion
    state: StateMap
    state_group: Optional[int]
    state_chain_length: int
    extremities: list[str]
    depth: int
    members_joined_local: set[str] = field(default_factory=set)
    #: Joined with partial state (``omit_members``) and not complete yet: the resident servers then, which
    #: stand in for the member list (see mxtwisted.federation.partial_state). None: the state is complete.
    partial_servers: Optional[list[str]] = None


class RoomEngine:
    def __init__(
        self,
        clock: IReactorTime,
        server_name: str,
        signing_key: Any,
        store: EventStore,
        notifier: Notifier,
    ) -> None:
        self._clock = clock
        self.server_name = server_name
        self._signing_key = signing_key
        self.store = store
        self.notifier = notifier
        self._locks: dict[str, defer.DeferredLock] = {}
        self._rooms: OrderedDict[str, RoomCache] = OrderedDict()
        self._rooms_max = 1000
        self._events: OrderedDict[str, Event] = OrderedDict()
        self._events_max = 20_000
        self._listeners: list[EventListener] = []
        self._checks: list[EventCheck] = []
        #: Readers waiting for the full state of rooms joined with partial state.
        self._full_state_waiters: dict[str, list[defer.Deferred]] = {}

    # -- hooks -----------------------------------------------------------------
    def add_listener(self, listener: EventListener) -> None:
        """Called after each event is persisted (notifier, federation sender, module hooks)."""
        self._listeners.append(listener)

    def add_check(self, check: EventCheck) -> None:
        """Called before each local event is persisted; may refuse it with a MatrixError."""
        self._checks.append(check)

    def now_ms(self) -> int:
        return int(self._clock.seconds() * 1000)

    # -- caches ------------------------------------------------------------------
    def _lock(self, room_id: str) -> defer.DeferredLock:
        lock = self._locks.get(room_id)
        if lock is None:
            lock = self._locks[room_id] = defer.DeferredLock()
        return lock

    async def get_room_cache(self, room_id: str) -> RoomCache:
        """The in-memory view of a room, loaded on first use. 404 M_NOT_FOUND if the room is unknown."""
        cached = self._rooms.get(room_id)
        if cached is not None:
            self._rooms.move_to_end(room_id)
            return cached
        info = await self.store.get_room(room_id)
        if info is None:
            raise MatrixError(404, Codes.NOT_FOUND, "Unknown room")
        version = get_room_version(info.room_version)
        state = await self.store.get_current_state_ids(room_id)
        extremities = await self.store.get_forward_extremities(room_id)
        events = await self.store.get_events(extremities)
        depth = max((e.json.get("depth", 0) for e in events.values()), default=0)
        group = None
        chain = 0
        if len(extremities) == 1:
            group = await self.store.get_state_group_of_event(extremities[0])
            if group is not None:
                info_row = await self.store.get_state_group_info(group)
                chain = info_row[1] if info_row else 0
        joined = {
            user for user, _ in (await self.store.get_members(room_id, ("join",))).items() if self._is_local(user)
        }
        cache = RoomCache(room_id, version, state, group, chain, extremities, depth, joined)
        partial = await get_partial_room(self.store, room_id)
        if partial is not None:
            cache.partial_servers = partial.servers
        self._rooms[room_id] = cache
        while len(self._rooms) > self._rooms_max:
            oldest, _ = next(iter(self._rooms.items()))
            if self._locks.get(oldest) is not None and self._locks[oldest].locked:
                break
            self._rooms.popitem(last=False)
        return cache

    def _is_local(self, user_id: str) -> bool:
        return user_id.endswith(":" + self.server_name)

    def _cache_event(self, event: Event) -> None:
        self._events[event.event_id] = event
        self._events.move_to_end(event.event_id)
        while len(self._events) > self._events_max:
            self._events.popitem(last=False)

    async def get_event_objects(self, event_ids: Iterable[str], version: RoomVersion) -> dict[str, Event]:
        """Events as :class:`Event` objects (from the cache or the store)."""
        result: dict[str, Event] = {}
        missing = []
        for event_id in event_ids:
            ev = self._events.get(event_id)
            if ev is not None:
                result[event_id] = ev
            else:
                missing.append(event_id)
        if missing:
            for event_id, stored in (await self.store.get_events(missing)).items():
                ev = Event(stored.json, version, event_id=event_id, rejected_reason=stored.rejected_reason)
                self._cache_event(ev)
                result[event_id] = ev
        return result

    async def get_state_events(self, room: RoomCache, keys: Iterable[tuple[str, str]]) -> dict[tuple[str, str], Event]:
        """The current state events of ``room`` for the given keys (those that exist)."""
        ids = {key: room.state[key] for key in keys if key in room.state}
        events = await self.get_event_objects(ids.values(), room.version)
        return {key: events[eid] for key, eid in ids.items() if eid in events}

    # -- sending ----------------------------------------------------------------------
    async def send_event(
        self,
        sender: str,
        room_id: str,
        event_type: str,
        content: dict[str, Any],
        state_key: Optional[str] = None,
        txn: Optional[tuple[str, str, str]] = None,
        redacts: Optional[str] = None,
    ) -> tuple[str, int]:
        """Build, authorise and persist a new local event. Returns (event_id, stream_ordering).

        ``txn`` is (user_id, device_id, txn_id): a repeated transaction returns the first event.
        """
        if txn is not None:
            existing = await self.store.get_event_by_txn(txn[0], txn[1], room_id, txn[2])
            if existing is not None:
                stored = await self.store.get_event(existing)
                return existing, stored.stream_ordering if stored else 0
        lock = self._lock(room_id)
        await lock.acquire()
        try:
            if txn is not None:
                existing = await self.store.get_event_by_txn(txn[0], txn[1], room_id, txn[2])
                if existing is not None:
                    stored = await self.store.get_event(existing)
                    return existing, stored.stream_ordering if stored else 0
            room = await self.get_room_cache(room_id)
            return await self._build_and_persist(room, sender, event_type, content, state_key, txn, redacts)
        finally:
            lock.release()
            if not lock.locked and not lock.waiting:
                self._locks.pop(room_id, None)

    async def create_room(
        self, room_id: Optional[str], version: RoomVersion, creator: str, create_content: dict[str, Any], is_public: bool
    ) -> tuple[str, str]:
        """Persist a new room's m.room.create event. Returns (room_id, event_id).

        For room v12 the room ID is derived from the create event, so ``room_id`` is None there.
        """
        content = dict(create_content)
        if not version.implicit_room_creator:
            content.setdefault("creator", creator)
        content["room_version"] = version.identifier
        event: dict[str, Any] = {
            "type": "m.room.create",
            "state_key": "",
            "sender": creator,
            "content": content,
            "origin_server_ts": self.now_ms(),
            "depth": 1,
            "prev_events": [],
            "auth_events": [],
        }
        if not version.room_id_from_create_event:
            assert room_id is not None
            event["room_id"] = room_id
        if version.event_format is EventFormat.V1:
            event["event_id"] = self._new_v1_event_id()
        event = self._hash_and_sign(event, version)
        ev = Event(event, version)
        room_id = ev.room_id
        try:
            validate_event(event, version)
            check_auth_rules(ev, {})
        except (AuthError, EventValidationError) as e:
            raise MatrixError(400, Codes.BAD_JSON, f"Invalid room creation: {getattr(e, 'reason', e)}") from None
        await self.store.store_room(room_id, version.identifier, creator, is_public, self.now_ms())
        room = RoomCache(room_id, version, {}, None, 0, [], 0)
        lock = self._lock(room_id)
        await lock.acquire()
        try:
            self._rooms[room_id] = room
            await self._persist(room, ev, txn=None)
        finally:
            lock.release()
        return room_id, ev.event_id

    def _new_v1_event_id(self) -> str:
        return f"${secrets.token_urlsafe(18)}:{self.server_name}"

    def _hash_and_sign(self, event: dict[str, Any], version: RoomVersion) -> dict[str, Any]:
        event = add_content_hash(event)
        return sign_event(event, self.server_name, self._signing_key, version)

    async def build_template(
        self,
        room: RoomCache,
        sender: str,
        event_type: str,
        content: dict[str, Any],
        state_key: Optional[str] = None,
        redacts: Optional[str] = None,
    ) -> tuple[dict[str, Any], dict[tuple[str, str], Event], GroupedState]:
        """An unhashed, unsigned event on top of the room's current state: prev_events (the forward
        extremities, see :meth:`choose_prev_events`), auth_events (selected from the state before it), depth.
        Returns it with the auth state it was selected from and the state before it. Used by :meth:`send_event` and by federation make_join/make_leave templates
        (rooms v1/v2: without ``event_id``, which the sending server adds)."""
        version = room.version
        event: dict[str, Any] = {
            "type": event_type,
            "room_id": room.room_id,
            "sender": sender,
            "content": content,
            "origin_server_ts": self.now_ms(),
            "depth": min(room.depth + 1, 2**63 - 1),
        }
        if state_key is not None:
            event["state_key"] = state_key
        if redacts is not None:
            if version.redacts_in_content:
                event["content"] = dict(content, redacts=redacts)
            else:
                event["redacts"] = redacts
        prev_ids, before = await self.choose_prev_events(room)
        # auth_events: the state before it of the auth types this event needs (spec: "Auth events selection").
        probe = Event(dict(event, prev_events=[], auth_events=[]), version, event_id="$probe")
        auth_keys = auth_types_for_event(probe)
        wanted = {key: before.state[key] for key in auth_keys | {("m.room.create", "")} if key in before.state}
        found = await self.get_event_objects(wanted.values(), version)
        auth_state = {key: found[eid] for key, eid in wanted.items() if eid in found}
        auth_ids = [
            ev.event_id for key, ev in sorted(auth_state.items())
            if key in auth_keys and not (version.room_id_from_create_event and key == ("m.room.create", ""))
        ]
        if version.event_format is EventFormat.V1:
            prev_events = await self.get_event_objects(prev_ids, version)
            auth_events = await self.get_event_objects(auth_ids, version)
            event["prev_events"] = [[eid, _hashes_ref(prev_events.get(eid))] for eid in prev_ids]
            event["auth_events"] = [[eid, _hashes_ref(auth_events.get(eid))] for eid in auth_ids]
        else:
            event["prev_events"] = prev_ids
            event["auth_events"] = auth_ids
        return event, auth_state, before

    async def choose_prev_events(self, room: RoomCache) -> tuple[list[str], GroupedState]:
        """The prev_events of a new local event and the state before it. Usually every forward extremity
        (merging forks) and the room's current state. Past :data:`MAX_PREV_EVENTS` extremities (the PDU
        format allows 20, and other servers' events may leave any number) the deepest ones, and the
        resolution of the states after them: the rest are merged by later events."""
        if len(room.extremities) <= MAX_PREV_EVENTS:
            return list(room.extremities), GroupedState(room.state, room.state_group, room.state_chain_length)
        events = await self.get_event_objects(room.extremities, room.version)
        chosen = sorted(room.extremities, key=lambda e: (events[e].depth if e in events else 0, e), reverse=True)
        chosen = chosen[:MAX_PREV_EVENTS]
        before = await room_state.state_before(self.store, room.version, chosen)
        if before.group is not None:
            info = await self.store.get_state_group_info(before.group)
            before.chain_length = info[1] if info else 0
        return chosen, before

    async def persist_remote_event(
        self,
        event_dict: dict[str, Any],
        origin: str,
        prepare: Optional[Callable[[Event], dict[str, Any]]] = None,
        from_transaction: bool = False,
    ) -> RemoteOutcome:
        """Persist an event another server built and signed, after the caller checked its signatures and
        content hash; its prev_events and auth_events must be known here, and the state after each prev
        event (:class:`~mxtwisted.rooms.room_state.StateUnknown` otherwise: the caller fetches it).

        Under the room lock, the spec's checks on receipt of a PDU: the PDU format of the room version, that
        the sender belongs to ``origin``, the auth rules against its own auth events, against the state
        before it (the resolved state of its prev_events) and against the room's current state. ``prepare``
        may return a changed event dict before it is checked (the countersignature of a restricted join).

        For a join, leave or knock sent to us (``from_transaction`` False) every check must pass (400
        M_BAD_JSON / 403 M_FORBIDDEN). For an event of a transaction (``from_transaction`` True) an event
        failing one of the first two auth checks is stored *rejected*, and one failing only the last is
        stored *soft-failed* (spec "Soft failure"): both are kept out of the timeline, the current state and
        the forward extremities, but remembered with the state after them, so later events may refer to
        them; a rejected one still raises 403. An accepted event moves the room's forward extremities and
        its current state becomes the resolution of the states after them (forks are resolved)."""
        room_id = event_dict.get("room_id")
        if not isinstance(room_id, str):
            raise MatrixError(400, Codes.BAD_JSON, "The event has no room_id")
        lock = self._lock(room_id)
        await lock.acquire()
        try:
            room = await self.get_room_cache(room_id)
            version = room.version
            try:
                validate_event(event_dict, version)
            except EventValidationError as e:
                raise MatrixError(400, Codes.BAD_JSON, f"Invalid event: {e.reason}") from None
            ev = Event(event_dict, version)
            if ev.sender.partition(":")[2] != origin:
                raise MatrixError(403, Codes.FORBIDDEN, "The event's sender does not belong to the requesting server")
            if prepare is not None:
                ev = Event(prepare(ev), version)
            known = await self.get_event_objects(ev.prev_event_ids + ev.auth_event_ids, version)
            for event_id in ev.prev_event_ids + ev.auth_event_ids:
                if event_id not in known or known[event_id].room_id != room_id:
                    raise MatrixError(400, Codes.BAD_JSON, f"Unknown prev or auth event {event_id}")
            stored = (await self.store.get_events([ev.event_id])).get(ev.event_id)
            if stored is not None and not stored.outlier:
                return RemoteOutcome(ev, stored.stream_ordering, ACCEPTED)
            if stored is not None and stored.rejected_reason is not None:
                raise MatrixError(403, Codes.FORBIDDEN, stored.rejected_reason)
            # Unknown, or known only as an outlier (then it is checked and takes its place now).
            before = await self._state_before(room, ev)
            create = await self.get_state_events(room, [("m.room.create", "")])
            own_auth = [known[eid] for eid in ev.auth_event_ids]
            try:
                for auth_ev in own_auth:
                    if auth_ev.rejected_reason is not None:
                        raise AuthError(f"auth event {auth_ev.event_id} was rejected")
                check_auth_events_list(ev, own_auth)
                # v12 events do not list the create event: the room's one completes their auth state.
                check_auth_rules(ev, create | {(a.type, a.state_key or ""): a for a in own_auth})
                keys = auth_types_for_event(ev) | {("m.room.create", "")}
                before_events = await self.get_event_objects(
                    [before.state[k] for k in keys if k in before.state], version
                )
                before_map = {k: before_events[before.state[k]] for k in keys if before.state.get(k) in before_events}
                check_auth_rules(ev, _with_own_auth(room, before_map, own_auth))
            except AuthError as e:
                if from_transaction:
                    rejected = Event(ev.get_dict(), version, event_id=ev.event_id, rejected_reason=e.reason)
                    await self._persist(room, rejected, txn=None, before=before, hidden=True)
                raise MatrixError(403, Codes.FORBIDDEN, e.reason) from None
            try:
                current = await self.get_state_events(room, auth_types_for_event(ev) | {("m.room.create", "")})
                check_auth_rules(ev, _with_own_auth(room, current, own_auth))
            except AuthError as e:
                if not from_transaction:
                    raise MatrixError(403, Codes.FORBIDDEN, e.reason) from None
                log.info(
                    "Soft-failing {event_id} in {room_id}: {reason}", event_id=ev.event_id, room_id=room_id, reason=e.reason
                )
                ordering = (await self._persist(room, ev, txn=None, before=before, hidden=True))[1]
                return RemoteOutcome(ev, ordering, SOFT_FAILED)
            return RemoteOutcome(ev, (await self._persist(room, ev, txn=None, before=before))[1], ACCEPTED)
        finally:
            lock.release()
            if not lock.locked and not lock.waiting:
                self._locks.pop(room_id, None)

    async def _state_before(self, room: RoomCache, ev: Event) -> GroupedState:
        """The state before a remote event: the room's current state when it builds on all the forward
        extremities (no database work), else the resolution of the states after its prev_events."""
        if set(ev.prev_event_ids) == set(room.extremities):
            return GroupedState(room.state, room.state_group, room.state_chain_length)
        before = await room_state.state_before(self.store, room.version, ev.prev_event_ids)
        if before.group is not None:
            info = await self.store.get_state_group_info(before.group)
            before.chain_length = info[1] if info else 0
        return before

    async def persist_outliers(self, room_id: str, events: list[Event]) -> None:
        """Store events fetched from another server (auth chains, state) as outliers: known, not in the
        timeline, no state of their own. ``events`` are checked and in auth order; rejected ones keep their
        ``rejected_reason``. Already known events are skipped."""
        known = await self.store.get_events([ev.event_id for ev in events])
        new = [ev for ev in dict((ev.event_id, ev) for ev in events if ev.event_id not in known).values()]
        if not new:
            return
        now = self.now_ms()
        orderings = [self.store.stream.allocate() for _ in new]
        batch = [
            (
                ev.event_id,
                ev.get_dict(),
                PersistContext(
                    stream_ordering=ordering,
                    received_ts=now,
                    rejected_reason=ev.rejected_reason,
                    outlier=True,
                    prev_event_ids=ev.prev_event_ids,
                    auth_event_ids=ev.auth_event_ids,
                ),
            )
            for ev, ordering in zip(new, orderings, strict=True)
        ]
        try:
            await self.store.persist_outliers(room_id, batch)
        finally:
            for ordering in orderings:
                self.store.stream.finish(ordering)
        for ev in new:
            self._cache_event(ev)

    async def persist_with_state(self, ev: Event, state_before: StateMap) -> None:
        """Remember ``ev`` (an event we missed, checked by the caller against its auth events, or an outlier
        we have) with the state before it as another server told us (``/state``): stored as an outlier with
        the state after it (a snapshot group), so that events built on it can be checked. The events
        ``state_before`` names must be stored. Under the room's lock (the event may be persisted properly
        by another transaction at the same time)."""
        lock = self._lock(ev.room_id)
        await lock.acquire()
        try:
            if await self.store.get_state_group_of_event(ev.event_id) is not None:
                return
            await self.persist_outliers(ev.room_id, [ev])
            after = dict(state_before)
            if ev.is_state() and ev.rejected_reason is None:
                after[(ev.type, ev.state_key or "")] = ev.event_id
            await self.store.set_event_state(ev.event_id, ev.room_id, self.store.allocate_state_group(), after)
        finally:
            lock.release()
            if not lock.locked and not lock.waiting:
                self._locks.pop(ev.room_id, None)

    async def _build_and_persist(
        self,
        room: RoomCache,
        sender: str,
        event_type: str,
        content: dict[str, Any],
        state_key: Optional[str],
        txn: Optional[tuple[str, str, str]],
        redacts: Optional[str],
    ) -> tuple[str, int]:
        ev, before = await self._build_checked(room, sender, event_type, content, state_key, redacts)
        return await self._persist(room, ev, txn, before=before)

    async def _build_checked(
        self,
        room: RoomCache,
        sender: str,
        event_type: str,
        content: dict[str, Any],
        state_key: Optional[str],
        redacts: Optional[str] = None,
    ) -> tuple[Event, GroupedState]:
        """A new local event on the room's current state: built, hashed, signed, in the PDU format (413
        M_TOO_LARGE / 400 M_BAD_JSON), allowed by the auth rules (403) and by the checks (modules). Returns
        it with the state before it."""
        version = room.version
        event, auth_state, before = await self.build_template(room, sender, event_type, content, state_key, redacts)
        if version.event_format is EventFormat.V1:
            event["event_id"] = self._new_v1_event_id()
        event = self._hash_and_sign(event, version)
        try:
            validate_event(event, version)
        except EventValidationError as e:
            if "too large" in e.reason or "bytes" in e.reason:
                raise MatrixError(413, Codes.TOO_LARGE, f"Event too large: {e.reason}") from None
            raise MatrixError(400, Codes.BAD_JSON, f"Invalid event: {e.reason}") from None
        ev = Event(event, version)
        try:
            check_auth_rules(ev, auth_state)
        except AuthError as e:
            raise MatrixError(403, Codes.FORBIDDEN, e.reason) from None
        for check in self._checks:
            await check(ev)
        return ev, before

    async def persist_joined_remote_room(
        self,
        join: Event,
        state_before: StateMap,
        outliers: list[Event],
        creator: Optional[str],
        partial_servers: Optional[list[str]] = None,
    ) -> int:
        """Store a room of another server that a local user has just joined (federation send_join): the
        checked auth chain and state as outliers (``outliers``, auth events first; rejected ones keep their
        ``rejected_reason``), the room with the join's room version, then ``join`` with ``state_before`` as
        the state before it: a new state group (that state plus the join) becomes the room's current state
        and the join its forward extremity. The caller checked signatures, hashes and auth rules.

        A room we know but have no joined user in any more (we stopped following it when our last user left)
        is rejoined the same way: the returned state replaces our stale current state and the join becomes
        the only forward extremity (what we had is history). Raises 409 if a local user is joined by now
        (then the join is a local one). Returns the join's stream ordering.

        ``partial_servers``: joined with partial state (``servers_in_room``); the room is recorded as partial
        before the join is stored, so that a stop in between resumes fetching the full state."""
        room_id = join.room_id
        version = join.room_version
        lock = self._lock(room_id)
        await lock.acquire()
        try:
            if partial_servers is not None:
                await add_partial_room(self.store, PartialRoom(room_id, join.event_id, partial_servers), self.now_ms())
            if await self.store.get_room(room_id) is not None:
                room = await self.get_room_cache(room_id)
                if room.members_joined_local or room.version.identifier != version.identifier:
                    raise MatrixError(409, Codes.UNKNOWN, "The room changed while joining it; try again")
                room.partial_servers = partial_servers
                await self.persist_outliers(room_id, [ev for ev in outliers if ev.event_id != join.event_id])
                before = GroupedState(dict(state_before), None)
                return (await self._persist(room, join, txn=None, full_state=True, before=before, rejoin=True))[1]
            await self.persist_outliers(room_id, [ev for ev in outliers if ev.event_id != join.event_id])
            await self.store.store_room(room_id, version.identifier, creator, False, self.now_ms())
            room = RoomCache(room_id, version, dict(state_before), None, 0, [], 0, partial_servers=partial_servers)
            self._rooms[room_id] = room
            return (await self._persist(room, join, txn=None, full_state=True))[1]
        finally:
            lock.release()
            if not lock.locked and not lock.waiting:
                self._locks.pop(room_id, None)

    async def _persist(
        self,
        room: RoomCache,
        ev: Event,
        txn: Optional[tuple[str, str, str]],
        full_state: bool = False,
        before: Optional[GroupedState] = None,
        hidden: bool = False,
        rejoin: bool = False,
    ) -> tuple[str, int]:
        """Persist ``ev`` with the state before it (``before``; the room's current state by default) and
        announce it.

        ``full_state``: the whole state after ``ev`` becomes the room's current state (a room just joined
        over federation), not only ``ev``'s own entry. ``hidden``: a rejected or soft-failed event, or one
        stored with state fetched from another server: kept with the state after it (a rejected event's is
        the state before it) but out of the timeline, the current state and the forward extremities, and
        not announced. ``rejoin``: the event replaces every forward extremity (with ``full_state``: a room
        rejoined through another server)."""
        version = room.version
        now = self.now_ms()
        if before is None:
            before = GroupedState(room.state, room.state_group, room.state_chain_length)
        stream_ordering = self.store.stream.allocate()
        ctx = PersistContext(
            stream_ordering=stream_ordering,
            received_ts=now,
            prev_event_ids=ev.prev_event_ids,
            auth_event_ids=ev.auth_event_ids,
            txn=txn,
            rejected_reason=ev.rejected_reason,
            outlier=hidden,
            clear_extremities=rejoin,
        )
        base_group, base_chain = before.group, before.chain_length
        if base_group is None and (not ev.is_state() or ev.rejected_reason is not None):
            # A resolved state no group holds yet: the event's group (the state after it is the same).
            base_group, base_chain = self.store.allocate_state_group(), 0
            ctx.extra_groups.append((base_group, None, dict(before.state), 0))
        new_state = before.state
        chain_length = base_chain
        if ev.is_state() and ev.rejected_reason is None:
            key = (ev.type, ev.state_key or "")
            ctx.replaces_state = before.state.get(key)
            group = self.store.allocate_state_group()
            new_state = dict(before.state)
            new_state[key] = ev.event_id
            if base_group is None or needs_snapshot(base_chain, len(before.state)):
                ctx.new_group_prev = None
                ctx.new_group_delta = dict(new_state)
                chain_length = 0
            else:
                ctx.new_group_prev = base_group
                ctx.new_group_delta = {key: ev.event_id}
                chain_length = base_chain + 1
            ctx.new_group_chain_length = chain_length
            ctx.state_group = group
        else:
            ctx.state_group = base_group
        # The room after the event: its forward extremities, and its current state (resolved at a fork).
        extremities = room.extremities
        current, current_group, current_chain = room.state, room.state_group, room.state_chain_length
        if not hidden:
            kept = [] if rejoin else [e for e in room.extremities if e not in ev.prev_event_ids]
            extremities = kept + [ev.event_id]
            after = GroupedState(new_state, ctx.state_group, chain_length)
            if full_state or extremities == [ev.event_id]:
                resolved = after
            else:
                others = await room_state.states_after(self.store, [e for e in extremities if e != ev.event_id])
                resolved = await room_state.resolve(self.store, version, [*others.values(), after], unstored=[ev])
            current = resolved.state
            current_group, current_chain = resolved.group, resolved.chain_length
            if resolved.group is None:
                current_group, current_chain = self._group_for(ctx, room, current)
            if full_state:
                ctx.current_state_delta = dict(current)
                ctx.current_state_removed = [k for k in room.state if k not in current]
            elif resolved is after and before.state is room.state:
                # The usual case (every local event): only the event's own key can change.
                own = (ev.type, ev.state_key or "")
                ctx.current_state_delta = {own: ev.event_id} if current.get(own) == ev.event_id else {}
            else:
                ctx.current_state_delta = {k: v for k, v in current.items() if room.state.get(k) != v}
                ctx.current_state_removed = [k for k in room.state if k not in current]
        redacts = ev.redacts if ev.type == "m.room.redaction" and not hidden else None
        if redacts is not None:
            targets = await self.store.get_events([redacts])
            target = targets.get(redacts)
            if target is not None and target.room_id == room.room_id and target.redacted_by is None:
                ctx.redaction_target = (redacts, redact_event(target.json, version))
        try:
            await self.store.persist_event(ev.event_id, room.room_id, ev.get_dict(), ctx)
        except BaseException:
            self.store.stream.finish(stream_ordering)
            # The cache may be stale now; drop it so the next send reloads the room.
            self._rooms.pop(room.room_id, None)
            raise
        self._cache_event(ev)
        if hidden:
            self.store.stream.finish(stream_ordering)
            return ev.event_id, stream_ordering
        for key in [*(ctx.current_state_delta or {}), *ctx.current_state_removed]:
            if key[0] == "m.room.member" and self._is_local(key[1]):
                member = (await self.get_event_objects([current[key]], version)).get(current[key]) if key in current else None
                if member is not None and member.membership == "join":
                    room.members_joined_local.add(key[1])
                else:
                    room.members_joined_local.discard(key[1])
        room.state = current
        room.state_group = current_group
        room.state_chain_length = current_chain
        room.extremities = extremities
        room.depth = max(room.depth, ev.depth)
        if redacts is not None:
            self._events.pop(redacts, None)
        self.store.stream.finish(stream_ordering)
        interested: Any = room.members_joined_local
        if ev.type == "m.room.member" and ev.state_key and self._is_local(ev.state_key):
            interested = interested | {ev.state_key}
        self.notifier.notify_users("events", self.store.stream.current, interested)
        for listener in self._listeners:
            try:
                result = listener(ev, stream_ordering)
                if isinstance(result, defer.Deferred):
                    result.addErrback(lambda f: log.failure("Event listener failed", f))
            except Exception:
                log.failure("Event listener failed")
        return ev.event_id, stream_ordering

    def partial_state_servers(self, room_id: str) -> list[str]:
        """The resident servers of a room joined with partial state whose full state is not here yet (they
        stand in for its member list when sending), else []. From the room cache only (no I/O)."""
        room = self._rooms.get(room_id)
        return list(room.partial_servers) if room is not None and room.partial_servers else []

    async def wait_full_state(self, room_id: str, timeout: float = FULL_STATE_WAIT_SECONDS) -> None:
        """For readers of a room's members (``/state``, ``/members``, ``/joined_members``): return once the
        room's full state is here when it was joined with partial state (at most ``timeout`` seconds, then
        with what there is), at once otherwise (as Synapse)."""
        try:
            room = await self.get_room_cache(room_id)
        except MatrixError:
            return
        if room.partial_servers is None:
            return
        waiter: defer.Deferred = defer.Deferred()
        self._full_state_waiters.setdefault(room_id, []).append(waiter)
        call = self._clock.callLater(timeout, lambda: waiter.called or waiter.callback(None))
        try:
            await waiter
        finally:
            if call.active():
                call.cancel()
            waiting = self._full_state_waiters.get(room_id, [])
            if waiter in waiting:
                waiting.remove(waiter)

    async def complete_partial_state(self, room_id: str, join_event_id: str, full_before_join: StateMap) -> None:
        """Put the full state of a room joined with partial state in place (the events it names are stored):
        the state after the join becomes ``full_before_join`` plus the join, and every state since the join
        (of later events, and the room's current state) gains the keys it lacked, keeping what changed since
        the join. One transaction; the room is then no longer partial."""
        lock = self._lock(room_id)
        await lock.acquire()
        try:
            room = await self.get_room_cache(room_id)
            if room.partial_servers is None:
                return
            partial_after_join = await self.store.get_state_ids_at_event(join_event_id) or {}
            join = (await self.get_event_objects([join_event_id], room.version)).get(join_event_id)
            full_after_join = dict(full_before_join)
            if join is not None and join.state_key is not None:
                full_after_join[(join.type, join.state_key)] = join_event_id

            def completed(state: StateMap) -> StateMap:
                changed = {k: v for k, v in state.items() if partial_after_join.get(k) != v}
                return full_after_join | changed

            events = await groups_since(self.store, room_id, join_event_id)
            states = await self.store.get_state_ids_for_groups(set(events.values()))
            remap: dict[int, int] = {}
            new_groups: dict[int, StateMap] = {}
            for old in sorted(set(events.values())):
                group = remap[old] = self.store.allocate_state_group()
                new_groups[group] = completed(states.get(old, {}))
            new_current = completed(room.state)
            current_delta = {k: v for k, v in new_current.items() if room.state.get(k) != v}
            # A position of the events stream: /sync gives the room's whole state to its local members again.
            ordering = self.store.stream.allocate()
            try:
                await complete_partial_room(
                    self.store, room_id, new_groups, {eid: remap[g] for eid, g in events.items()}, current_delta,
                    ordering,
                )
            finally:
                self.store.stream.finish(ordering)
            room.state = new_current
            room.state_group = remap.get(room.state_group) if room.state_group is not None else None
            room.state_chain_length = 0
            room.partial_servers = None
            log.info("Full state of {room_id} in place ({count} state entries)", room_id=room_id, count=len(new_current))
            for waiter in self._full_state_waiters.pop(room_id, []):
                if not waiter.called:
                    waiter.callback(None)
            self.notifier.notify_users("events", self.store.stream.current, room.members_joined_local)
        except BaseException:
            self._rooms.pop(room_id, None)
            raise
        finally:
            lock.release()
            if not lock.locked and not lock.waiting:
                self._locks.pop(room_id, None)

    def _group_for(self, ctx: PersistContext, room: RoomCache, state: StateMap) -> tuple[int, int]:
        """A new state group for a resolved current state, written with the event (``ctx``): a delta on the
        room's current group when that is short and no key is dropped, else a snapshot. (group, chain)."""
        group = self.store.allocate_state_group()
        base = room.state_group
        if base is not None and set(room.state) <= set(state) and not needs_snapshot(room.state_chain_length, len(state)):
            delta = {k: v for k, v in state.items() if room.state.get(k) != v}
            ctx.extra_groups.append((group, base, delta, room.state_chain_length + 1))
            return group, room.state_chain_length + 1
        ctx.extra_groups.append((group, None, dict(state), 0))
        return group, 0

    # -- history from other servers -------------------------------------------------------------
    async def persist_backfilled_events(self, room_id: str, events: list[BackfilledEvent]) -> list[str]:
        """Store history fetched with federation ``/backfill`` (checked and given its state by
        :class:`~mxtwisted.federation.backfill.Backfiller`), oldest first. Unlike every other persist path
        this one takes no room lock and changes nothing the lock protects: not the current state, not the
        forward extremities, not the depth; the events get stream orderings below every other one, so the
        events stream does not advance and neither the notifier nor any listener (the federation sender,
        modules) hears of them: they are not new. Returns the IDs now in the timeline."""
        added = await persist_backfilled(self.store, room_id, events, self.now_ms())
        for item in events:
            # Cached copies may be stale: redacted now, or a redaction's target redacted by it.
            if item.redacted_by is not None:
                self._events.pop(item.event_id, None)
            if item.redacted_target_json is not None and item.redacts is not None:
                self._events.pop(item.redacts, None)
        return added

    # -- reading helpers ---------------------------------------------------------------------
    async def get_power_level(self, room: RoomCache, user_id: str) -> float:
        state = await self.get_state_events(
            room, [("m.room.create", ""), ("m.room.power_levels", "")]
        )
        try:
            return get_power_level(user_id, state)
        except AuthError:
            return 0

    async def get_state_at_event(self, stored: StoredEvent, version: RoomVersion) -> StateMap:
        """The state after ``stored`` (for membership/visibility checks at that point of history)."""
        state = await self.store.get_state_ids_at_event(stored.event_id)
        return state or {}

    # -- events other servers complete or hold (invites, knocks over federation) ----------------------
    async def build_local_event(
        self, sender: str, room_id: str, event_type: str, content: dict[str, Any], state_key: Optional[str] = None
    ) -> Event:
        """A new local event, hashed, signed and allowed by the auth rules and the checks (modules), but not
        persisted: for an invite of a remote user, which the invitee's server must sign first
        (:meth:`persist_built_event` then stores it). Not under the room lock: nothing is written."""
        room = await self.get_room_cache(room_id)
        return (await self._build_checked(room, sender, event_type, content, state_key))[0]

    async def persist_built_event(self, ev: Event, txn: Optional[tuple[str, str, str]] = None) -> tuple[str, int]:
        """Persist an event of :meth:`build_local_event` once complete (e.g. with the invitee server's
        signature). Under the room lock the auth rules are checked again against the current state, which
        may have moved while the other server was asked (the event then names only some of the forward
        extremities, as a remote event may). Returns (event_id, stream_ordering)."""
        lock = self._lock(ev.room_id)
        await lock.acquire()
        try:
            room = await self.get_room_cache(ev.room_id)
            known = await self.store.get_events([ev.event_id])
            if ev.event_id in known:
                return ev.event_id, known[ev.event_id].stream_ordering
            current = await self.get_state_events(room, auth_types_for_event(ev) | {("m.room.create", "")})
            try:
                check_auth_rules(ev, current)
            except AuthError as e:
                raise MatrixError(403, Codes.FORBIDDEN, e.reason) from None
            return await self._persist(room, ev, txn, before=await self._state_before(room, ev))
        finally:
            lock.release()
            if not lock.locked and not lock.waiting:
                self._locks.pop(ev.room_id, None)

    async def persist_out_of_band_membership(self, ev: Event) -> int:
        """Store a local user's invite, knock, or the leave rejecting/rescinding one, in a room this server is
        not in (``EventStore.persist_out_of_band_membership``: an outlier that still counts as the user's
        membership), and wake the user's ``/sync``. Already stored: nothing. Returns its stream ordering."""
        lock = self._lock(ev.room_id)
        await lock.acquire()
        try:
            known = await self.store.get_events([ev.event_id])
            if ev.event_id in known:
                return known[ev.event_id].stream_ordering
            ordering = self.store.stream.allocate()
            try:
                await self.store.persist_out_of_band_membership(
                    ev.event_id, ev.room_id, ev.get_dict(), ordering, self.now_ms()
                )
            finally:
                self.store.stream.finish(ordering)
            # A room known from before (left) would otherwise keep a cached view without this membership.
            self._rooms.pop(ev.room_id, None)
            self._cache_event(ev)
            self.notifier.notify_users("events", self.store.stream.current, {ev.state_key or ""})
            return ordering
        finally:
            lock.release()
            if not lock.locked and not lock.waiting:
                self._locks.pop(ev.room_id, None)


def _with_own_auth(room: RoomCache, state: dict[tuple[str, str], Event], own_auth: list[Event]) -> dict:
    """The auth state to check a remote event against. With partial state (members omitted), a key the state
    lacks (the sender's membership, mostly) is taken from the event's own auth events, which were checked:
    the full state, when it comes, decides for later events (as Synapse does meanwhile)."""
    if room.partial_servers is None:
        return state
    return {(a.type, a.state_key or ""): a for a in own_auth} | state


def _hashes_ref(event: Optional[Event]) -> dict[str, str]:
    """The ``{"sha256": ...}`` reference hash of a v1/v2 prev/auth event reference."""
    if event is None:
        return {}
    from unpaddedbase64 import encode_base64

    return {"sha256": encode_base64(compute_reference_hash(event.get_dict(), event.room_version))}


__all__ = ["RoomEngine", "RoomCache", "compute_event_id"]
