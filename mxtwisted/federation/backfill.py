"""Fetching a room's history from before this server joined it (federation backfill).

Spec: Server-Server API "Backfilling and retrieving missing events" (``GET /v1/backfill``),
"Checks performed on receipt of a PDU", ``GET /v1/state_ids`` and ``GET /v1/state``.

When ``/messages`` going backwards has read every event stored here
(:class:`~mxtwisted.rooms.reader.RoomReader`), it calls :meth:`Backfiller.backfill`.
That asks a server of the room for the events before our earliest ones (the room's
backward extremities: prev_events we do not have), as Synapse does: up to 5
extremities and 100 events per request, the servers with users joined at that point
of the history first, then the servers in the room now, a few of them, each with a
timeout. Each returned PDU is checked like any received one: the room, the PDU format
of the room version, the signatures of the servers that must sign it (through the
keyring), the content hash (the redacted form is kept on a mismatch: a server gives
events we may not see redacted). Then, oldest first:

* the state before the event: the state after its prev_events when we know it
  (events of the same batch included; several are resolved with the room version's
  state resolution), else asked of the same server (``/state_ids``, and ``/state``
  for the events we lack, checked the same way and stored as outliers);
* the auth rules against its own auth events and against that state: an event that
  fails them, or whose auth events we lack or rejected, is stored *rejected* (never
  shown, but the history behind it can still be reached);
* a redaction we already had of it, or one it makes of a stored event, is applied.

The events are then stored through :meth:`RoomEngine.persist_backfilled_events`:
below every other event of the stream, with the state after each, never changing the
room's current state or forward extremities, and told to no listener (``/sync`` does
not see them as new, the federation sender does not send them). History visibility is
applied when they are read, as for any event.

Limits: only the start of the stored history is extended (a gap in the middle of it is
not filled); a server that answers nothing new, or no server at all, makes paging stop
there, and the room is not asked again for :data:`RETRY_AFTER` seconds.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Optional
from urllib.parse import quote

from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from mxtwisted.events.auth import (
    AuthError,
    auth_types_for_event,
    can_apply_redaction,
    check_auth_events_list,
    check_auth_rules,
)
from mxtwisted.events.event import Event
from mxtwisted.events.redaction import redact_event
from mxtwisted.events.room_versions import RoomVersion
from mxtwisted.events.state_res import StateResolutionError, resolve_state_groups
from mxtwisted.federation.client import FederationError, RequestSendFailed
from mxtwisted.federation.remote_join import InvalidResponse
from mxtwisted.federation.server_visibility import server_of
from mxtwisted.rooms.engine import RoomCache, RoomEngine
from mxtwisted.rooms.room_state import GroupedState
from mxtwisted.storage.backfill import BackfilledEvent, backward_extremities, redactions_of
from mxtwisted.storage.events import StateMap, needs_snapshot

log = Logger()

F1 = "/_matrix/federation/v1"
CREATE_KEY = ("m.room.create", "")
#: Events asked per /backfill request, and most extremities named in one (Synapse's numbers).
BACKFILL_LIMIT = 100
MAX_EXTREMITIES = 5
#: Servers tried per attempt, and how long each request may take (seconds).
MAX_SERVERS = 5
REQUEST_TIMEOUT = 20.0
#: After an attempt that stored nothing, the room is not asked again for this long (seconds).
RETRY_AFTER = 30.0

#: ``(pdu, room version, room ID) -> Event``: the format, room, signature and hash checks of a received PDU
#: (redacted on a hash mismatch); raises InvalidResponse. ``RemoteJoiner._checked_pdu`` in the server.
PduChecker = Callable[[Any, RoomVersion, str], Awaitable[Event]]


@dataclass
class _Batch:
    """What one backfill answer is being turned into."""

    server: str
    room: RoomCache
    #: Every event looked at so far: the batch, fetched state, and those loaded from the store.
    events: dict[str, Event] = field(default_factory=dict)
    #: The state after each event of the batch, once worked out.
    after: dict[str, GroupedState] = field(default_factory=dict)
    #: Events of the batch, oldest first, and fetched state events (stored as outliers, first).
    timeline: list[BackfilledEvent] = field(default_factory=list)
    outliers: list[BackfilledEvent] = field(default_factory=list)


class Backfiller:
    def __init__(
        self,
        engine: RoomEngine,
        client: Any,
        check_pdu: PduChecker,
        clock: IReactorTime,
        limit: int = BACKFILL_LIMIT,
        timeout: float = REQUEST_TIMEOUT,
    ) -> None:
        """``client``: the FederationClient (``get_json``); ``check_pdu``: see :data:`PduChecker`."""
        self.engine = engine
        self.store = engine.store
        self.server_name = engine.server_name
        self._client = client
        self._check_pdu = check_pdu
        self._clock = clock
        self.limit = limit
        self.timeout = timeout
        self._room_locks: dict[str, defer.DeferredLock] = {}
        #: Stored orderings are read and written in one go: one write at a time (storage.backfill).
        self._write_lock = defer.DeferredLock()
        self._quiet_until: dict[str, float] = {}

    async def backfill(self, room_id: str) -> bool:
        """Fetch and store events from before the earliest ones stored of ``room_id``. Returns whether any
        event was added to the room's timeline (then paging may go on). Never raises."""
        if self._quiet_until.get(room_id, 0.0) > self._clock.seconds():
            return False
        try:
            before = await backward_extremities(self.store, room_id)
            if not before:
                return False
            lock = self._room_locks.setdefault(room_id, defer.DeferredLock())
            await lock.acquire()
            try:
                if self._quiet_until.get(room_id, 0.0) > self._clock.seconds():
                    return False  # the attempt we waited for found nothing
                extremities = await backward_extremities(self.store, room_id)
                if extremities != before:
                    # Another request backfilled this room meanwhile: read what it stored.
                    return True
                added = await self._backfill_from_servers(room_id, extremities)
            finally:
                lock.release()
                if not lock.locked and not lock.waiting:
                    self._room_locks.pop(room_id, None)
        except Exception:
            log.failure("Backfilling {room_id} failed", room_id=room_id)
            added = 0
        if not added:
            now = self._clock.seconds()
            if len(self._quiet_until) > 10_000:
                self._quiet_until = {r: t for r, t in self._quiet_until.items() if t > now}
            self._quiet_until[room_id] = now + RETRY_AFTER
            return False
        self._quiet_until.pop(room_id, None)
        return True

    # -- asking servers ---------------------------------------------------------------------------------
    async def _backfill_from_servers(self, room_id: str, extremities: dict[str, list[str]]) -> int:
        room = await self.engine.get_room_cache(room_id)
        wanted = sorted(extremities)[:MAX_EXTREMITIES]
        servers = await self._servers(room, [s for eid in wanted for s in extremities[eid]])
        for server in servers[:MAX_SERVERS]:
            try:
                resp = await self._get(server, f"{F1}/backfill/{quote(room_id, safe='')}", {"v": wanted, "limit": self.limit})
                pdus = resp.get("pdus") if isinstance(resp, dict) else None
                if not isinstance(pdus, list):
                    raise InvalidResponse("the backfill answer has no pdus")
                added = await self._store_batch(_Batch(server, room), pdus[: self.limit])
            except (FederationError, RequestSendFailed, InvalidResponse, defer.TimeoutError) as e:
                log.info("Backfilling {room_id} from {server} failed: {e!r}", room_id=room_id, server=server, e=e)
                continue
            if added:
                log.info("Backfilled {n} events of {room_id} from {server}", n=added, room_id=room_id, server=server)
                return added
        return 0

    async def _servers(self, room: RoomCache, successors: list[str]) -> list[str]:
        """Servers to ask: those with users joined in the state at our earliest events (most users first),
        then those in the room now; never this one."""
        counts: dict[str, int] = {}
        groups = await self.store.get_state_groups_of_events(successors)
        for state in (await self.store.get_state_ids_for_groups(set(groups.values()))).values():
            member_ids = [eid for (etype, _), eid in state.items() if etype == "m.room.member"]
            for stored in (await self.store.get_events(member_ids)).values():
                if (stored.json.get("content") or {}).get("membership") == "join" and stored.state_key:
                    server = server_of(stored.state_key)
                    counts[server] = counts.get(server, 0) + 1
        ordered = sorted(counts, key=lambda s: (-counts[s], s))
        # A room joined with partial state knows few members yet: its resident servers stand in for them.
        servers_now = [server_of(u) for u in sorted(await self.store.get_members(room.room_id, ("join",)))]
        for server in [*(room.partial_servers or []), *servers_now]:
            if server not in ordered:
                ordered.append(server)
        return [s for s in ordered if s and s != self.server_name]

    async def _get(self, server: str, path: str, args: dict[str, Any]) -> Any:
        d = defer.ensureDeferred(self._client.get_json(server, path, args))
        d.addTimeout(self.timeout, self._clock)
        return await d

    # -- checking and storing a batch ----------------------------------------------------------------------
    async def _store_batch(self, batch: _Batch, pdus: list[Any]) -> int:
        room = batch.room
        received: dict[str, Event] = {}
        for raw in pdus:
            try:
                ev = await self._check_pdu(raw, room.version, room.room_id)
            except InvalidResponse as e:
                log.info("Ignoring a backfilled PDU from {server}: {e}", server=batch.server, e=e)
                continue
            received.setdefault(ev.event_id, ev)
        # Events in the timeline already, or placed in the DAG with their state by another path, stay as they are.
        known = await self.store.get_events(received)
        with_state = await self.store.get_state_groups_of_events(received)
        new = {
            eid: ev for eid, ev in received.items()
            if eid not in known or (known[eid].outlier and eid not in with_state)
        }
        if not new:
            return 0
        batch.events.update(new)
        redactions = await redactions_of(self.store, list(new))
        for ev in _oldest_first(new):
            try:
                before = await self._state_before(batch, ev)
            except InvalidResponse as e:
                # The events after it need its state: keep what is done (older events) and stop here.
                log.info("No state for backfilled {event_id}: {e}", event_id=ev.event_id, e=e)
                break
            rejected = known[ev.event_id].rejected_reason if ev.event_id in known else None
            rejected = rejected or await self._auth_failure(batch, ev, before.state)
            batch.timeline.append(await self._timeline_entry(batch, ev, before, rejected, redactions.get(ev.event_id, [])))
        if not batch.timeline:
            return 0
        await self._write_lock.acquire()
        try:
            added = await self.engine.persist_backfilled_events(room.room_id, batch.outliers + batch.timeline)
        finally:
            self._write_lock.release()
        return len(added)

    async def _timeline_entry(
        self, batch: _Batch, ev: Event, before: GroupedState, rejected: Optional[str], redactions: list[str]
    ) -> BackfilledEvent:
        """The event to store, with the state after it (a new group when it changes the state)."""
        item = BackfilledEvent(
            event_id=ev.event_id,
            json=ev.get_dict(),
            prev_event_ids=ev.prev_event_ids,
            auth_event_ids=ev.auth_event_ids,
            rejected_reason=rejected,
        )
        after = before
        if ev.is_state() and rejected is None:
            key = (ev.type, ev.state_key or "")
            item.replaces_state = before.state.get(key)
            state = dict(before.state)
            state[key] = ev.event_id
            if before.group is None or needs_snapshot(before.chain_length, len(before.state)):
                after = GroupedState(state, self.store.allocate_state_group(), 0)
                item.new_group = (None, dict(state), 0)
            else:
                after = GroupedState(state, self.store.allocate_state_group(), before.chain_length + 1)
                item.new_group = (before.group, {key: ev.event_id}, after.chain_length)
        elif before.group is None:
            after = GroupedState(before.state, self.store.allocate_state_group(), 0)
            item.new_group = (None, dict(before.state), 0)
        item.state_group = after.group
        batch.after[ev.event_id] = after
        if rejected is None:
            await self._apply_redactions(batch, ev, item, before.state, redactions)
        return item

    # -- state ---------------------------------------------------------------------------------------------
    async def _state_before(self, batch: _Batch, ev: Event) -> GroupedState:
        """The state before ``ev``: from its prev_events when their states are known here, else asked of the
        batch's server. Raises InvalidResponse when it cannot be had."""
        prevs = ev.prev_event_ids
        if not prevs:
            return GroupedState({}, None)
        states = [batch.after[p] for p in prevs if p in batch.after]
        stored = [p for p in prevs if p not in batch.after]
        groups = await self.store.get_state_groups_of_events(stored)
        if len(groups) < len(stored):
            return await self._remote_state_before(batch, ev)
        maps = await self.store.get_state_ids_for_groups(set(groups.values()))
        for group in dict.fromkeys(groups[p] for p in stored):
            info = await self.store.get_state_group_info(group)
            states.append(GroupedState(maps[group], group, info[1] if info else 0))
        distinct = {id(s) if s.group is None else s.group: s for s in states}
        maps_list = [s.state for s in distinct.values()]
        if all(m == maps_list[0] for m in maps_list):
            return next(iter(distinct.values()))
        try:
            event_map = await self._with_auth_chains(batch, {eid for m in maps_list for eid in m.values()})
            return GroupedState(resolve_state_groups(batch.room.version, maps_list, event_map), None)
        except StateResolutionError:
            return await self._remote_state_before(batch, ev)

    async def _remote_state_before(self, batch: _Batch, ev: Event) -> GroupedState:
        """``/state_ids`` at ``ev`` from the batch's server (the state before it), with ``/state`` for the
        events we lack: checked, auth-checked in auth order, kept to be stored as outliers."""
        room_id = batch.room.room_id
        path = quote(room_id, safe="")
        try:
            resp = await self._get(batch.server, f"{F1}/state_ids/{path}", {"event_id": ev.event_id})
        except (FederationError, RequestSendFailed, defer.TimeoutError) as e:
            raise InvalidResponse(f"/state_ids failed: {e!r}") from None
        pdu_ids = resp.get("pdu_ids") if isinstance(resp, dict) else None
        chain_ids = resp.get("auth_chain_ids") if isinstance(resp, dict) else None
        if not isinstance(pdu_ids, list) or not isinstance(chain_ids, list):
            raise InvalidResponse("/state_ids answer lacks pdu_ids or auth_chain_ids")
        if not all(isinstance(eid, str) for eid in pdu_ids + chain_ids):
            raise InvalidResponse("/state_ids answer has a non-string event ID")
        await self._load(batch, pdu_ids + chain_ids)
        if any(eid not in batch.events for eid in pdu_ids + chain_ids):
            await self._fetch_state(batch, ev, set(pdu_ids + chain_ids) - set(batch.events))
        state: StateMap = {}
        for eid in pdu_ids:
            state_ev = batch.events.get(eid)
            if state_ev is None:
                raise InvalidResponse(f"state event {eid} could not be had")
            if state_ev.state_key is not None and state_ev.rejected_reason is None:
                state[(state_ev.type, state_ev.state_key)] = eid
        return GroupedState(state, None)

    async def _fetch_state(self, batch: _Batch, ev: Event, missing: set[str]) -> None:
        room = batch.room
        try:
            resp = await self._get(
                batch.server, f"{F1}/state/{quote(room.room_id, safe='')}", {"event_id": ev.event_id}
            )
        except (FederationError, RequestSendFailed, defer.TimeoutError) as e:
            raise InvalidResponse(f"/state failed: {e!r}") from None
        raws = [*(resp.get("pdus") or []), *(resp.get("auth_chain") or [])] if isinstance(resp, dict) else []
        fetched: dict[str, Event] = {}
        for raw in raws:
            checked = await self._check_pdu(raw, room.version, room.room_id)
            if checked.event_id in missing:
                fetched[checked.event_id] = checked
        batch.events.update(fetched)
        for state_ev in _auth_first(fetched, room):
            state_ev.rejected_reason = await self._auth_failure(batch, state_ev, None)
            batch.outliers.append(
                BackfilledEvent(
                    event_id=state_ev.event_id,
                    json=state_ev.get_dict(),
                    prev_event_ids=state_ev.prev_event_ids,
                    auth_event_ids=state_ev.auth_event_ids,
                    rejected_reason=state_ev.rejected_reason,
                    outlier=True,
                )
            )

    async def _load(self, batch: _Batch, event_ids: list[str]) -> None:
        """Make the stored ones of ``event_ids`` available in ``batch.events``."""
        wanted = [eid for eid in dict.fromkeys(event_ids) if eid not in batch.events]
        if wanted:
            batch.events.update(await self.engine.get_event_objects(wanted, batch.room.version))

    async def _with_auth_chains(self, batch: _Batch, event_ids: set[str]) -> dict[str, Event]:
        """The events and their auth chains (what state resolution needs), from the batch and the store."""
        seen: set[str] = set()
        frontier = set(event_ids)
        while frontier:
            await self._load(batch, list(frontier))
            seen |= frontier
            next_ids: set[str] = set()
            for eid in frontier:
                ev = batch.events.get(eid)
                if ev is not None:
                    next_ids.update(_auth_ids(ev, batch.room))
            frontier = next_ids - seen
        return {eid: batch.events[eid] for eid in seen if eid in batch.events}

    # -- auth and redactions -----------------------------------------------------------------------------------
    async def _auth_failure(self, batch: _Batch, ev: Event, state_before: Optional[StateMap]) -> Optional[str]:
        """Why ``ev`` is rejected (None: it passes): the auth rules against its auth events, and against the
        state before it when known."""
        if ev.type == "m.room.create" and ev.state_key == "":
            try:
                check_auth_rules(ev, {})
            except AuthError as e:
                return e.reason
            return None
        await self._load(batch, _auth_ids(ev, batch.room))
        own: list[Event] = []
        for auth_id in ev.auth_event_ids:
            auth_ev = batch.events.get(auth_id)
            if auth_ev is None:
                return f"auth event {auth_id} is missing"
            if auth_ev.rejected_reason is not None:
                return f"auth event {auth_id} was rejected"
            own.append(auth_ev)
        create = batch.events.get(_create_id(batch.room) or "")
        if create is None:
            return "the room's create event is missing"
        try:
            check_auth_events_list(ev, own)
            check_auth_rules(ev, {CREATE_KEY: create} | {(a.type, a.state_key or ""): a for a in own})
            if state_before is not None:
                keys = auth_types_for_event(ev) | {CREATE_KEY}
                await self._load(batch, [state_before[k] for k in keys if k in state_before])
                check_auth_rules(
                    ev, {k: batch.events[state_before[k]] for k in keys if state_before.get(k) in batch.events}
                )
        except AuthError as e:
            return e.reason
        return None

    async def _apply_redactions(
        self, batch: _Batch, ev: Event, item: BackfilledEvent, state_before: StateMap, redactions: list[str]
    ) -> None:
        """A stored redaction of ``ev`` makes it stored redacted; a redaction ``ev`` makes of a stored (or
        earlier backfilled) event redacts that one. Either only when the redaction may apply (spec: rooms
        v3+ "Handling redactions")."""
        version = batch.room.version
        for redaction_id in redactions:
            await self._load(batch, [redaction_id])
            redaction = batch.events.get(redaction_id)
            if redaction is None or redaction.rejected_reason is not None:
                continue
            at_redaction = await self.store.get_state_ids_at_event(redaction_id) or {}
            if await self._may_redact(batch, redaction, ev, at_redaction):
                item.json = redact_event(item.json, version)
                item.redacted_by = redaction_id
                break
        if ev.type != "m.room.redaction" or not ev.redacts:
            return
        item.redacts = ev.redacts
        pending = next((t for t in batch.timeline if t.event_id == ev.redacts), None)
        if pending is not None:
            if pending.redacted_by is None and await self._may_redact(batch, ev, batch.events[pending.event_id], state_before):
                pending.json = redact_event(pending.json, version)
                pending.redacted_by = ev.event_id
            return
        target = await self.store.get_event(ev.redacts)
        if target is None or target.room_id != batch.room.room_id or target.redacted_by is not None:
            return
        target_ev = Event(target.json, version, event_id=target.event_id)
        if await self._may_redact(batch, ev, target_ev, state_before):
            item.redacted_target_json = redact_event(target.json, version)

    async def _may_redact(self, batch: _Batch, redaction: Event, target: Event, state: StateMap) -> bool:
        keys = [CREATE_KEY, ("m.room.power_levels", "")]
        await self._load(batch, [state[k] for k in keys if k in state])
        auth = {k: batch.events[state[k]] for k in keys if state.get(k) in batch.events}
        if CREATE_KEY not in auth:
            create = batch.events.get(_create_id(batch.room) or "")
            if create is not None:
                auth[CREATE_KEY] = create
        try:
            return can_apply_redaction(redaction, target, auth)
        except AuthError:
            return False


def _create_id(room: RoomCache) -> Optional[str]:
    if room.version.room_id_from_create_event:
        return "$" + room.room_id[1:]
    return room.state.get(CREATE_KEY)


def _auth_ids(ev: Event, room: RoomCache) -> list[str]:
    """The auth events of ``ev``; from room v12 the create event (named by the room ID) is one of them."""
    ids = list(ev.auth_event_ids)
    create_id = _create_id(room)
    if ev.type != "m.room.create" and create_id is not None and create_id not in ids:
        ids.append(create_id)
    return ids


def _topological(events: dict[str, Event], parents: Callable[[Event], list[str]]) -> list[Event]:
    """``events`` with each one after its parents among them; ties go to the lower depth. A cycle (which a
    valid DAG cannot have) is broken arbitrarily."""
    done: dict[str, None] = {}
    for start in sorted(events, key=lambda eid: (events[eid].depth, eid)):
        stack: list[tuple[str, bool]] = [(start, False)]
        visiting: set[str] = set()
        while stack:
            eid, expanded = stack.pop()
            if eid in done:
                continue
            if expanded:
                done[eid] = None
                continue
            if eid in visiting:
                continue
            visiting.add(eid)
            stack.append((eid, True))
            for parent in sorted(parents(events[eid]), key=lambda p: (-events[p].depth, p) if p in events else (0, p)):
                if parent in events and parent not in done and parent not in visiting:
                    stack.append((parent, False))
    return [events[eid] for eid in done]


def _oldest_first(events: dict[str, Event]) -> list[Event]:
    """The backfilled events with each after its prev_events (those in the batch)."""
    return _topological(events, lambda ev: ev.prev_event_ids)


def _auth_first(events: dict[str, Event], room: RoomCache) -> list[Event]:
    """Fetched state events with each after its auth events (those fetched)."""
    return _topological(events, lambda ev: _auth_ids(ev, room))


__all__ = ["BACKFILL_LIMIT", "Backfiller", "PduChecker"]
