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
from mxtwisted.storage.events import EventStore, PersistContext, StateMap, StoredEvent, needs_snapshot

log = Logger()

#: Called after an event is persisted: (event, stored stream ordering).
EventListener = Callable[[Event, int], Any]
#: Checks run before an event is persisted; raise MatrixError to refuse (spam checkers, room policies).
EventCheck = Callable[[Event], Awaitable[None]]


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
    ) -> tuple[dict[str, Any], dict[tuple[str, str], Event]]:
        """An unhashed, unsigned event on top of the room's current state: prev_events (the forward
        extremities), auth_events (selected from the current state), depth. Returns it with the auth state
        it was selected from. Used by :meth:`send_event` and by federation make_join/make_leave templates
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
        # auth_events: the current state of the auth types this event needs (spec: "Auth events selection").
        probe = Event(dict(event, prev_events=[], auth_events=[]), version, event_id="$probe")
        auth_keys = auth_types_for_event(probe)
        auth_state = await self.get_state_events(room, auth_keys | {("m.room.create", "")})
        auth_ids = [
            ev.event_id for key, ev in sorted(auth_state.items())
            if key in auth_keys and not (version.room_id_from_create_event and key == ("m.room.create", ""))
        ]
        prev_ids = list(room.extremities)
        if version.event_format is EventFormat.V1:
            prev_events = await self.get_event_objects(prev_ids, version)
            auth_events = await self.get_event_objects(auth_ids, version)
            event["prev_events"] = [[eid, _hashes_ref(prev_events.get(eid))] for eid in prev_ids]
            event["auth_events"] = [[eid, _hashes_ref(auth_events.get(eid))] for eid in auth_ids]
        else:
            event["prev_events"] = prev_ids
            event["auth_events"] = auth_ids
        return event, auth_state

    async def persist_remote_event(
        self, event_dict: dict[str, Any], origin: str, prepare: Optional[Callable[[Event], dict[str, Any]]] = None
    ) -> tuple[Event, int]:
        """Persist an event another server built and signed (federation send_join / send_leave), after the
        caller checked its signatures and content hash. Under the room lock: the PDU format of the room
        version, that the sender belongs to ``origin``, that its prev_events and auth_events are known events
        of the room, the auth rules against its own auth events and against the current state. ``prepare``
        may return a changed event dict before it is checked (the countersignature of a restricted join).
        Raises 400 M_BAD_JSON / 403 M_FORBIDDEN. Returns (event as persisted, stream_ordering)."""
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
            stored = await self.store.get_events([ev.event_id])
            if ev.event_id in stored:
                return ev, stored[ev.event_id].stream_ordering
            own_auth = [known[eid] for eid in ev.auth_event_ids]
            try:
                check_auth_events_list(ev, own_auth)
                # v12 events do not list the create event: the room's one completes their auth state.
                create = await self.get_state_events(room, [("m.room.create", "")])
                check_auth_rules(ev, create | {(a.type, a.state_key or ""): a for a in own_auth})
                current = await self.get_state_events(room, auth_types_for_event(ev) | {("m.room.create", "")})
                check_auth_rules(ev, current)
            except AuthError as e:
                raise MatrixError(403, Codes.FORBIDDEN, e.reason) from None
            return ev, (await self._persist(room, ev, txn=None))[1]
        finally:
            lock.release()
            if not lock.locked and not lock.waiting:
                self._locks.pop(room_id, None)

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
        version = room.version
        event, auth_state = await self.build_template(room, sender, event_type, content, state_key, redacts)
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
        return await self._persist(room, ev, txn)

    async def persist_joined_remote_room(
        self, join: Event, state_before: StateMap, outliers: list[Event], creator: Optional[str]
    ) -> int:
        """Store a room of another server that a local user has just joined (federation send_join): the
        checked auth chain and state as outliers (``outliers``, auth events first; rejected ones keep their
        ``rejected_reason``), the room with the join's room version, then ``join`` with ``state_before`` as
        the state before it: a new state group (that state plus the join) becomes the room's current state
        and the join its forward extremity. The caller checked signatures, hashes and auth rules. Raises
        409 if the room became known meanwhile. Returns the join's stream ordering."""
        room_id = join.room_id
        version = join.room_version
        lock = self._lock(room_id)
        await lock.acquire()
        try:
            if await self.store.get_room(room_id) is not None:
                raise MatrixError(409, Codes.UNKNOWN, "The room became known while joining it; try again")
            now = self.now_ms()
            known = await self.store.get_events([ev.event_id for ev in outliers])
            for ev in outliers:
                if ev.event_id in known or ev.event_id == join.event_id:
                    continue
                ordering = self.store.stream.allocate()
                ctx = PersistContext(
                    stream_ordering=ordering,
                    received_ts=now,
                    rejected_reason=ev.rejected_reason,
                    outlier=True,
                    prev_event_ids=ev.prev_event_ids,
                    auth_event_ids=ev.auth_event_ids,
                )
                try:
                    await self.store.persist_event(ev.event_id, room_id, ev.get_dict(), ctx)
                finally:
                    self.store.stream.finish(ordering)
                self._cache_event(ev)
            await self.store.store_room(room_id, version.identifier, creator, False, now)
            room = RoomCache(room_id, version, dict(state_before), None, 0, [], 0)
            self._rooms[room_id] = room
            return (await self._persist(room, join, txn=None, full_state=True))[1]
        finally:
            lock.release()
            if not lock.locked and not lock.waiting:
                self._locks.pop(room_id, None)

    async def _persist(
        self, room: RoomCache, ev: Event, txn: Optional[tuple[str, str, str]], full_state: bool = False
    ) -> tuple[str, int]:
        """``full_state``: the whole state after ``ev`` becomes the room's current state (a room just joined
        over federation), not only ``ev``'s own entry."""
        version = room.version
        now = self.now_ms()
        stream_ordering = self.store.stream.allocate()
        ctx = PersistContext(
            stream_ordering=stream_ordering,
            received_ts=now,
            prev_event_ids=ev.prev_event_ids,
            auth_event_ids=ev.auth_event_ids,
            txn=txn,
        )
        new_state = room.state
        if ev.is_state():
            key = (ev.type, ev.state_key or "")
            ctx.replaces_state = room.state.get(key)
            group = self.store.allocate_state_group()
            if room.state_group is None or needs_snapshot(room.state_chain_length, len(room.state)):
                new_state = dict(room.state)
                new_state[key] = ev.event_id
                ctx.new_group_prev = None
                ctx.new_group_delta = dict(new_state)
                ctx.new_group_chain_length = 0
            else:
                new_state = dict(room.state)
                new_state[key] = ev.event_id
                ctx.new_group_prev = room.state_group
                ctx.new_group_delta = {key: ev.event_id}
                ctx.new_group_chain_length = room.state_chain_length + 1
            ctx.state_group = group
            ctx.current_state_delta = dict(new_state) if full_state else {key: ev.event_id}
        else:
            ctx.state_group = room.state_group
        redacts = ev.redacts if ev.type == "m.room.redaction" else None
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
        room.state = new_state
        if ev.is_state():
            room.state_group = ctx.state_group
            room.state_chain_length = ctx.new_group_chain_length
            if ev.type == "m.room.member" and self._is_local(ev.state_key or ""):
                if ev.membership == "join":
                    room.members_joined_local.add(ev.state_key or "")
                else:
                    room.members_joined_local.discard(ev.state_key or "")
        # A local event's prev_events are all the extremities; a remote one (send_join) may name only some.
        room.extremities = [e for e in room.extremities if e not in ev.prev_event_ids] + [ev.event_id]
        room.depth = max(room.depth, ev.depth)
        self._cache_event(ev)
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


def _hashes_ref(event: Optional[Event]) -> dict[str, str]:
    """The ``{"sha256": ...}`` reference hash of a v1/v2 prev/auth event reference."""
    if event is None:
        return {}
    from unpaddedbase64 import encode_base64

    return {"sha256": encode_base64(compute_reference_hash(event.get_dict(), event.room_version))}


__all__ = ["RoomEngine", "RoomCache", "compute_event_id"]
