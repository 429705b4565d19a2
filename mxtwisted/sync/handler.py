"""Building ``/sync`` responses (Client-Server API, "Syncing", ``GET /sync``).

:meth:`SyncHandler.sync` answers one request:

* **Initial sync** (no ``since``, or ``full_state``): every room the user is
  joined to with its state at the start of the timeline and the newest
  events; invites and knocks with their stripped state; left rooms only with
  ``include_leave``; global and room account data; ephemeral data and
  presence from the ephemeral stream sources.
* **Incremental sync**: only what changed in ``(since, now]``. First the
  token's positions are compared with the current position of every stream:
  if none moved there is nothing to read, and the request waits on the
  notifier without touching the database. If the events stream moved, one
  query finds the user's rooms with new events and the user's own membership
  changes in the range (its cost depends on the events in the range, not on
  the number of rooms). A room joined since the token gets its full state, a
  room left since the token its timeline up to the leave; a ``limited``
  timeline comes with the state changes of the gap.
* **Long-polling**: with a ``timeout``, an empty incremental result waits for
  the notifier to wake this user (events in their rooms, their account data,
  ephemeral streams), then looks again, until something is there or the time
  is up; then it returns an empty response whose ``next_batch`` is the current
  position. Traffic that turns out to be irrelevant (filtered out) does not
  end the wait.

Every room section is built for all rooms together: the events of all rooms
in one transaction, their visibility in a few, the state at the needed
points of the stream through state groups read in one go, the events of all
sections serialised in one call. So an initial sync costs a fixed number of
database round trips, not a number per room.

Lazy-loading members (spec "Lazy-loading room members"): with
``lazy_load_members`` on the ``state`` filter, ``state`` only has the member
events of the timeline's senders, of the heroes of unnamed rooms, and (for
full state) of the user, plus in a ``limited`` incremental sync every member
change of the gap. Member events a device has already been sent are left
out ("redundant") unless ``include_redundant_members`` is set; what was sent
is remembered per device and per ``next_batch``, so a retried request (whose
``since`` is not the last ``next_batch``) gets them all again.
"""

from __future__ import annotations

import inspect
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Optional, Sequence

from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from mxtwisted.notifier import Notifier
from mxtwisted.rooms.reader import RoomReader, stream_token
from mxtwisted.rooms.serialize import STRIPPED_STATE_TYPES, stripped_state
from mxtwisted.rooms.visibility import filter_room_events_for_user
from mxtwisted.storage.account_data import GLOBAL, AccountDataStore
from mxtwisted.storage.events import EventStore, StateMap, StoredEvent
from mxtwisted.storage.sync import MembershipInfo, SummaryInfo, SyncStore
from mxtwisted.sync.filters import Filter
from mxtwisted.sync.tokens import SyncToken

log = Logger()

JOIN = "join"
INVITE = "invite"
LEAVE = "leave"
BAN = "ban"
KNOCK = "knock"


#: ``set_presence(user_id, state)`` with state ``online``/``unavailable``/``offline`` or None (not given).
PresenceSetter = Callable[[str, Optional[str]], Any]

#: ``push_rules(user_id)`` -> the user's ``m.push_rules`` content (mxtwisted.push.handler).
PushRulesSource = Callable[[str], Awaitable[dict[str, Any]]]


@dataclass(frozen=True)
class SyncRequest:
    user_id: str
    device_id: Optional[str]
    filter: Filter
    since: Optional[SyncToken] = None
    timeout_ms: int = 0
    full_state: bool = False
    use_state_after: bool = False
    set_presence: Optional[str] = None


@dataclass
class _RoomJob:
    """One room of the response being built."""

    room_id: str
    #: "join" or "leave" (the section).
    section: str
    #: Timeline range: stream orderings in (after, upto].
    after: int
    upto: int
    #: Full state (initial sync, newly joined, full_state) rather than a delta since ``after``.
    full: bool
    #: Whether the user is joined now (for history visibility).
    joined: bool
    #: False for rooms left without ever being joined (rejected invites): no state is given.
    may_see_state: bool = True
    #: Whether to read a timeline at all (rooms only there for account data or ephemeral need not).
    fetch: bool = True
    timeline: list[StoredEvent] = field(default_factory=list)
    limited: bool = False
    state_ids: list[str] = field(default_factory=list)
    summary: Optional[SummaryInfo] = None


class _LazyMembers:
    """Which member events each device has been sent, per ``next_batch`` (for redundant members)."""

    def __init__(self, max_devices: int = 10_000) -> None:
        self._entries: OrderedDict[tuple[str, str], tuple[str, dict[str, dict[str, str]]]] = OrderedDict()
        self._max = max_devices

    def known(self, user_id: str, device_id: Optional[str], since: Optional[str]) -> dict[str, dict[str, str]]:
        """room_id → {member: event_id} the device has, if ``since`` is the last ``next_batch`` it was given."""
        entry = self._entries.get((user_id, device_id or ""))
        if since is None or entry is None or entry[0] != since:
            return {}
        return entry[1]

    def remember(
        self, user_id: str, device_id: Optional[str], next_batch: str, known: dict[str, dict[str, str]],
        sent: dict[str, dict[str, str]], reset_rooms: set[str],
    ) -> None:
        rooms = dict(known)
        for room_id in reset_rooms:
            rooms.pop(room_id, None)
        for room_id, members in sent.items():
            merged = dict(rooms.get(room_id, {}))
            merged.update(members)
            rooms[room_id] = merged
        key = (user_id, device_id or "")
        self._entries[key] = (next_batch, rooms)
        self._entries.move_to_end(key)
        while len(self._entries) > self._max:
            self._entries.popitem(last=False)


class SyncHandler:
    def __init__(
        self,
        clock: IReactorTime,
        reader: RoomReader,
        events: EventStore,
        sync_store: SyncStore,
        account_data: AccountDataStore,
        notifier: Notifier,
        sources: Sequence[Any],
        presence_setter: Optional[PresenceSetter] = None,
        push_rules: Optional[PushRulesSource] = None,
    ) -> None:
        self._clock = clock
        self._reader = reader
        self._events = events
        self._store = sync_store
        self._account_data = account_data
        self._notifier = notifier
        #: Ephemeral stream sources (typing, receipts, presence...); others append to this list.
        self.sources = sources
        self._presence_setter = presence_setter
        #: Spec "Push Rules: Events": clients read the ruleset from the m.push_rules account data.
        self._push_rules = push_rules
        self._lazy = _LazyMembers()

    def now_ms(self) -> int:
        return int(self._clock.seconds() * 1000)

    def current_token(self) -> SyncToken:
        """The current position of every stream."""
        positions = {"events": self._events.stream.current, "account_data": self._account_data.stream.current}
        for source in self.sources:
            positions[source.name] = source.current_position()
        return SyncToken({k: v for k, v in positions.items() if v})

    # -- the request --------------------------------------------------------------------------
    async def sync(self, request: SyncRequest, disconnected: Optional[defer.Deferred] = None) -> dict[str, Any]:
        """The response to one ``GET /sync``; waits up to ``timeout_ms`` for something to return."""
        await self._mark_presence(request)
        since = request.since
        now = self.current_token()
        if since is not None:
            since = _clamp(since, now)
        if since is None or request.full_state:
            return await self._build(request, since, now)
        deadline = self.now_ms() + max(0, request.timeout_ms)
        while True:
            if now.advanced(since):
                response = await self._build(request, since, now)
                if not _is_empty(response):
                    return response
                # Nothing for this user up to `now`: carry on from there.
                since = now
            remaining = deadline - self.now_ms()
            if remaining <= 0 or (disconnected is not None and disconnected.called):
                return _empty_response(since)
            waiter = self._notifier.wait_for_user(request.user_id, remaining)
            now = self.current_token()
            if now.advanced(since):
                # Something arrived while we were reading: no need to wait.
                waiter.addErrback(lambda _: None)
                waiter.cancel()
                continue
            if disconnected is not None:
                await defer.DeferredList([waiter, disconnected], fireOnOneCallback=True, consumeErrors=True)
                if not waiter.called:
                    waiter.addErrback(lambda _: None)
                    waiter.cancel()
            else:
                await waiter
            now = self.current_token()

    async def _mark_presence(self, request: SyncRequest) -> None:
        """Spec ``set_presence``: tell the presence handler this user is syncing (before the token is
        taken, so the change is not sent back to the user as news in the next sync)."""
        if self._presence_setter is None:
            return
        try:
            result = self._presence_setter(request.user_id, request.set_presence)
            if inspect.isawaitable(result):
                await result
        except Exception:
            log.failure("Setting presence from /sync failed")

    # -- building a response ---------------------------------------------------------------------
    async def _build(self, request: SyncRequest, since: Optional[SyncToken], now: SyncToken) -> dict[str, Any]:
        user_id = request.user_id
        filt = request.filter
        full_state = since is None or request.full_state
        response = _empty_response(now)
        upto = now.events
        ev_since = since.events if since is not None else 0

        # Account data (global and per room).
        ad_since = since.get("account_data") if since is not None and not full_state else 0
        global_ad: list[dict] = []
        room_ad: dict[str, list[dict]] = {}
        if now.get("account_data") > ad_since:
            for room_id, data_type, content in await self._account_data.get_changed(
                user_id, ad_since, now.get("account_data")
            ):
                entry = {"type": data_type, "content": content}
                if room_id == GLOBAL:
                    global_ad.append(entry)
                else:
                    room_ad.setdefault(room_id, []).append(entry)
        if self._push_rules is not None and (full_state or any(e["type"] == "m.push_rules" for e in global_ad)):
            # The stored m.push_rules marks a change on the stream; the content is always the current ruleset
            # (with the current server-default rules), and an initial sync has it even if nothing is stored.
            global_ad = [e for e in global_ad if e["type"] != "m.push_rules"]
            global_ad.append({"type": "m.push_rules", "content": await self._push_rules(user_id)})
        response["account_data"]["events"] = filt.account_data.filter(global_ad)

        # Which rooms, in which section.
        ephemeral_moved = any(now.get(s.name) > (since.get(s.name) if since is not None else 0) for s in self.sources)
        changed_rooms: set[str] = set()
        member_changes: list[MembershipInfo] = []
        completed_rooms: set[str] = set()
        if not full_state and upto > ev_since:
            changed_rooms, member_changes, completed_rooms = await self._store.get_changes(
                user_id, ev_since, upto, completions=self._events.partial_completed_upto > ev_since
            )
        if not (full_state or member_changes or changed_rooms or completed_rooms or room_ad or ephemeral_moved):
            return response
        memberships = await self._store.get_memberships(user_id)
        # A membership newer than this response's position is for the next one.
        memberships = {r: m for r, m in memberships.items() if m.stream_ordering <= upto}
        joined_now = {r for r, m in memberships.items() if m.membership == JOIN}
        room_filter = filt.room

        jobs: dict[str, _RoomJob] = {}
        invites: list[MembershipInfo] = []
        knocks: list[MembershipInfo] = []
        newly_joined: set[str] = set()
        ignored = await self._ignored_users(user_id)
        limit = filt.timeline_limit

        if full_state:
            for room_id, m in memberships.items():
                if not room_filter.matches_room(room_id):
                    continue
                if m.membership == JOIN:
                    jobs[room_id] = _RoomJob(room_id, JOIN, ev_since if since is not None else 0, upto, True, True)
                elif m.membership == INVITE and m.sender not in ignored:
                    invites.append(m)
                elif m.membership == KNOCK:
                    knocks.append(m)
                elif m.membership in (LEAVE, BAN) and room_filter.include_leave and not m.forgotten:
                    jobs[room_id] = _RoomJob(room_id, LEAVE, 0, m.stream_ordering, True, False)
            left = [j.room_id for j in jobs.values() if j.section == LEAVE]
            if left:
                # Rooms only ever invited to (rejected invites) show no state.
                seen = await self._store.get_rooms_ever_joined(user_id, left)
                for room_id in left:
                    jobs[room_id].may_see_state = room_id in seen
        else:
            by_room: dict[str, list[MembershipInfo]] = {}
            for change in member_changes:
                by_room.setdefault(change.room_id, []).append(change)
            before = await self._store.get_memberships_at(user_id, by_room, ev_since) if by_room else {}
            for room_id, changes in by_room.items():
                m = memberships.get(room_id)
                if m is None or not room_filter.matches_room(room_id):
                    continue
                was_joined = before.get(room_id) == JOIN
                joined_in_range = any(c.membership == JOIN for c in changes)
                left_in_range = any(c.membership != JOIN for c in changes)
                if m.membership == JOIN:
                    if left_in_range or not was_joined:
                        # Newly joined: as in an initial sync (full state, the newest events of the room).
                        newly_joined.add(room_id)
                        jobs[room_id] = _RoomJob(room_id, JOIN, 0, upto, True, True)
                elif m.membership in (LEAVE, BAN):
                    seen = was_joined or joined_in_range
                    jobs[room_id] = _RoomJob(
                        room_id, LEAVE, ev_since, m.stream_ordering, full=joined_in_range and not was_joined,
                        joined=False, may_see_state=seen,
                    )
                elif m.membership == INVITE and m.sender not in ignored:
                    invites.append(m)
                elif m.membership == KNOCK:
                    knocks.append(m)
            # Rooms joined with partial state whose full state came since: their whole state again (as for a
            # newly joined room), or clients that do not lazy-load members would never get the members.
            for room_id in sorted(completed_rooms & joined_now - set(jobs)):
                if room_filter.matches_room(room_id):
                    newly_joined.add(room_id)
                    jobs[room_id] = _RoomJob(room_id, JOIN, 0, upto, True, True)
            for room_id in changed_rooms:
                if room_id in joined_now and room_id not in jobs and room_filter.matches_room(room_id):
                    jobs[room_id] = _RoomJob(room_id, JOIN, ev_since, upto, False, True)

        # Ephemeral data of the joined rooms, and presence.
        ephemeral: dict[str, list[dict]] = {}
        presence: list[dict] = []
        ephemeral_rooms = {r for r in joined_now if room_filter.matches_room(r)}
        if ephemeral_rooms and self.sources:
            for source in self.sources:
                source_since = since.get(source.name) if since is not None and not request.full_state else 0
                source_now = now.get(source.name)
                ranges = []
                if source_now > source_since:
                    ranges.append((ephemeral_rooms, source_since))
                fresh = newly_joined & ephemeral_rooms
                if fresh and source_since > 0:
                    ranges.append((fresh, 0))
                for rooms, start in ranges:
                    per_room, global_events = await source.get_updates(user_id, set(rooms), start, source_now)
                    for room_id, events in per_room.items():
                        if room_id in rooms and events:
                            ephemeral.setdefault(room_id, []).extend(events)
                    presence.extend(global_events)
        latest: dict[Any, dict] = {}
        for event in presence:
            latest.pop((event.get("type"), event.get("sender")), None)
            latest[(event.get("type"), event.get("sender"))] = event
        response["presence"]["events"] = filt.presence.filter(latest.values())
        ephemeral = {
            r: filt.room.ephemeral.filter_room(r, evs) for r, evs in ephemeral.items() if not filt.room.ephemeral.blocks_all()
        }
        ephemeral = {r: evs for r, evs in ephemeral.items() if evs}
        room_ad = {r: filt.room.account_data.filter_room(r, evs) for r, evs in room_ad.items()}
        room_ad = {r: evs for r, evs in room_ad.items() if evs}
        for room_id in set(ephemeral) | set(room_ad):
            if room_id in joined_now and room_id not in jobs and room_filter.matches_room(room_id):
                jobs[room_id] = _RoomJob(room_id, JOIN, ev_since, upto, False, True, fetch=False)

        # Timelines, summaries, state.
        await self._load_timelines(user_id, list(jobs.values()), filt, limit, ignored)
        join_jobs = [j for j in jobs.values() if j.section == JOIN]
        summaries = await self._store.get_summaries([j.room_id for j in join_jobs], user_id) if join_jobs else {}
        for job in join_jobs:
            job.summary = summaries.get(job.room_id)
        lazy_known = self._lazy.known(user_id, request.device_id, since.encode() if since is not None else None)
        sent_members: dict[str, dict[str, str]] = {}
        await self._compute_state(request, since, list(jobs.values()), lazy_known, sent_members)

        # Serialise everything in one go.
        wanted = [eid for job in jobs.values() for eid in job.state_ids]
        state_events = await self._events.get_events(wanted) if wanted else {}
        all_events = [e for job in jobs.values() for e in job.timeline]
        for job in jobs.values():
            all_events.extend(state_events[eid] for eid in job.state_ids if eid in state_events)
        serialised = await self._serialise(all_events, request)

        state_key = "state_after" if request.use_state_after else "state"
        for job in jobs.values():
            timeline = [serialised[e.event_id] for e in job.timeline]
            state = [
                serialised[eid] for eid in job.state_ids
                if eid in serialised and filt.room.state.matches(state_events[eid].json, job.room_id)
            ]
            first = job.timeline[0].stream_ordering - 1 if job.timeline else job.upto
            entry: dict[str, Any] = {
                state_key: {"events": state},
                "timeline": {"events": timeline, "limited": job.limited, "prev_batch": stream_token(max(first, 0))},
                "account_data": {"events": room_ad.get(job.room_id, [])},
            }
            if job.section == JOIN:
                if not (
                    job.full or timeline or state or job.room_id in ephemeral or job.room_id in room_ad or job.limited
                ):
                    continue  # everything new here was filtered out
                entry["summary"] = _summary(job.summary)
                entry["ephemeral"] = {"events": ephemeral.get(job.room_id, [])}
                entry["unread_notifications"] = {"highlight_count": 0, "notification_count": 0}
                if filt.unread_thread_notifications:
                    entry["unread_thread_notifications"] = {}
                response["rooms"]["join"][job.room_id] = entry
            else:
                response["rooms"]["leave"][job.room_id] = entry

        # Invites and knocks: stripped state.
        if invites or knocks:
            stripped = await self._stripped_state([m.event_id for m in invites + knocks])
            for m in invites:
                response["rooms"]["invite"][m.room_id] = {"invite_state": {"events": stripped.get(m.event_id, [])}}
            for m in knocks:
                response["rooms"]["knock"][m.room_id] = {"knock_state": {"events": stripped.get(m.event_id, [])}}

        if filt.lazy_load_members:
            self._lazy.remember(
                user_id, request.device_id, response["next_batch"], lazy_known, sent_members,
                reset_rooms={j.room_id for j in jobs.values() if j.full},
            )
        return response

    async def _ignored_users(self, user_id: str) -> set[str]:
        """Spec "Ignoring Users": events and invites from these users are not sent."""
        content = await self._account_data.get(user_id, "m.ignored_user_list") or {}
        ignored = content.get("ignored_users") if isinstance(content, dict) else None
        return set(ignored) if isinstance(ignored, dict) else set()

    async def _load_timelines(
        self, user_id: str, jobs: list[_RoomJob], filt: Filter, limit: int, ignored: set[str]
    ) -> None:
        """For each job: its newest ``limit`` events in range that pass the timeline filter and that the
        user may see, and whether there were more (``limited``)."""
        timeline_filter = filt.room.timeline
        pending = {j.room_id: j for j in jobs if j.fetch and j.upto > j.after}
        if timeline_filter.blocks_all():
            # Nothing can pass; still tell the client whether it missed anything.
            if pending:
                found = await self._store.get_recent_events([(j.room_id, j.after, j.upto, 1) for j in pending.values()])
                for room_id, events in found.items():
                    pending[room_id].limited = bool(events)
            return
        cursors = {room_id: job.upto for room_id, job in pending.items()}
        collected: dict[str, list[StoredEvent]] = {room_id: [] for room_id in pending}
        # limit + 1 events tell whether the timeline is limited when nothing is filtered out (the usual
        # case); rooms where the filter or visibility dropped some read on, in growing batches.
        batch = limit + 1
        while pending:
            fetched = await self._store.get_recent_events(
                [(room_id, job.after, cursors[room_id], batch) for room_id, job in pending.items()]
            )
            candidates: list[tuple[str, list[StoredEvent]]] = []
            for room_id, events in fetched.items():
                keep = [
                    e for e in events
                    if e.sender not in ignored and timeline_filter.matches(e.json, room_id)
                ]
                candidates.append((room_id, keep))
                if events:
                    cursors[room_id] = events[-1].stream_ordering - 1
            visible = await filter_room_events_for_user(
                self._events, user_id, [(evs, pending[room_id].joined) for room_id, evs in candidates]
            )
            done = []
            for (room_id, _), shown in zip(candidates, visible, strict=True):
                collected[room_id].extend(shown)
                exhausted = len(fetched.get(room_id, [])) < batch or cursors[room_id] <= pending[room_id].after
                if len(collected[room_id]) > limit or exhausted:
                    done.append(room_id)
            for room_id in done:
                job = pending.pop(room_id)
                events = collected[room_id]
                job.limited = len(events) > limit
                job.timeline = list(reversed(events[:limit]))
            batch = min(batch * 2, 500)

    async def _compute_state(
        self,
        request: SyncRequest,
        since: Optional[SyncToken],
        jobs: list[_RoomJob],
        lazy_known: dict[str, dict[str, str]],
        sent_members: dict[str, dict[str, str]],
    ) -> None:
        """The ``state`` (or ``state_after``) event IDs of every job."""
        filt = request.filter
        after_mode = request.use_state_after
        lazy = filt.lazy_load_members
        redundant_ok = filt.include_redundant_members
        user_id = request.user_id
        positions: list[tuple[str, int]] = []
        todo = [j for j in jobs if j.may_see_state and (j.full or (j.fetch and j.upto > j.after))]
        for job in todo:
            start = job.timeline[0].stream_ordering - 1 if job.timeline else job.upto
            positions.append((job.room_id, job.upto if after_mode else start))
            if not job.full:
                positions.append((job.room_id, job.after))
            elif job.timeline:
                # See the fallback below.
                positions.append((job.room_id, job.timeline[0].stream_ordering))
        groups = await self._store.get_state_groups_at(positions)
        states = await self._events.get_state_ids_for_groups({g for g in groups.values() if g is not None})

        def state_at(room_id: str, position: int) -> StateMap:
            group = groups.get((room_id, position))
            return states.get(group, {}) if group is not None else {}

        for job in todo:
            start = job.timeline[0].stream_ordering - 1 if job.timeline else job.upto
            base = state_at(job.room_id, job.upto if after_mode else start)
            if not base and job.full and job.timeline:
                # A room joined over federation has no event before the join (its earlier state is stored as
                # outliers): use the state after the first timeline event (timeline events are left out below).
                base = state_at(job.room_id, job.timeline[0].stream_ordering)
            timeline_ids = {e.event_id for e in job.timeline}
            if job.full:
                chosen = {k: v for k, v in base.items() if not (lazy and k[0] == "m.room.member")}
            else:
                previous = state_at(job.room_id, job.after)
                # The changes since the token (in a limited sync, those of the gap): all of them, members too.
                chosen = {k: v for k, v in base.items() if previous.get(k) != v}
            if lazy:
                wanted = {e.sender for e in job.timeline}
                if job.full:
                    wanted.add(user_id)
                if job.summary is not None and not job.summary.named:
                    wanted.update(job.summary.heroes)
                known = {} if job.full else lazy_known.get(job.room_id, {})
                for member in wanted:
                    event_id = base.get(("m.room.member", member))
                    if event_id is None or ("m.room.member", member) in chosen:
                        continue
                    if not redundant_ok and not job.full and known.get(member) == event_id:
                        continue
                    chosen[("m.room.member", member)] = event_id
            if not after_mode:
                chosen = {k: v for k, v in chosen.items() if v not in timeline_ids}
            job.state_ids = list(chosen.values())
            if lazy:
                members = {k[1]: v for k, v in chosen.items() if k[0] == "m.room.member"}
                for e in job.timeline:
                    if e.type == "m.room.member" and e.state_key is not None:
                        members[e.state_key] = e.event_id
                sent_members[job.room_id] = members

    async def _serialise(self, events: list[StoredEvent], request: SyncRequest) -> dict[str, dict[str, Any]]:
        """event_id → the event as this request wants it (client format without room_id, or federation)."""
        unique = list({e.event_id: e for e in events}.values())
        if not unique:
            return {}
        client = await self._reader.serialize(unique, request.user_id, request.device_id)
        filt = request.filter
        out = {}
        for stored, event in zip(unique, client, strict=True):
            if filt.event_format == "federation":
                raw = dict(stored.json)
                unsigned = dict(raw.get("unsigned") or {})
                unsigned.update(event.get("unsigned") or {})
                if unsigned:
                    raw["unsigned"] = unsigned
                event = raw
            else:
                event.pop("room_id", None)
                because = (event.get("unsigned") or {}).get("redacted_because")
                if isinstance(because, dict):
                    because.pop("room_id", None)
            out[stored.event_id] = filt.shape_event(event)
        return out

    async def _stripped_state(self, member_event_ids: list[str]) -> dict[str, list[dict]]:
        """invite_state / knock_state for membership events: the room's stripped state at the event, and the
        event itself (spec "Stripped state"; m.room.create is required since v1.16)."""
        members = await self._events.get_events(member_event_ids)
        groups = await self._events.get_state_groups_of_events(member_event_ids)
        states = await self._events.get_state_ids_for_groups(set(groups.values()))
        needed: dict[str, list[str]] = {}
        for event_id in member_event_ids:
            state = states.get(groups.get(event_id, -1), {})
            needed[event_id] = [state[(t, "")] for t in STRIPPED_STATE_TYPES if (t, "") in state]
        state_events = await self._events.get_events({eid for ids in needed.values() for eid in ids})
        out = {}
        for event_id in member_event_ids:
            member = members.get(event_id)
            given = ((member.json.get("unsigned") or {}) if member else {}).get(
                "invite_room_state" if member and member.json.get("content", {}).get("membership") == INVITE
                else "knock_room_state"
            )
            if isinstance(given, list) and given:
                events = [e for e in given if isinstance(e, dict)]
            else:
                events = [stripped_state(state_events[eid].json) for eid in needed[event_id] if eid in state_events]
            if member is not None:
                events.append(stripped_state(member.json))
            out[event_id] = events
        return out


def _summary(info: Optional[SummaryInfo]) -> dict[str, Any]:
    if info is None:
        return {}
    summary: dict[str, Any] = {"m.joined_member_count": info.joined, "m.invited_member_count": info.invited}
    if not info.named:
        summary["m.heroes"] = list(info.heroes)
    return summary


def _clamp(since: SyncToken, now: SyncToken) -> SyncToken:
    """A token ahead of the server (streams kept in memory restart at 0) is taken as the current position."""
    return SyncToken({k: min(v, now.get(k)) for k, v in since.positions.items() if min(v, now.get(k))})


def _empty_response(token: SyncToken) -> dict[str, Any]:
    return {
        "next_batch": token.encode(),
        "rooms": {"join": {}, "invite": {}, "leave": {}, "knock": {}},
        "presence": {"events": []},
        "account_data": {"events": []},
        "to_device": {"events": []},
        "device_lists": {"changed": [], "left": []},
        "device_one_time_keys_count": {},
        "device_unused_fallback_key_types": [],
    }


def _is_empty(response: dict[str, Any]) -> bool:
    rooms = response["rooms"]
    return not (
        any(rooms.values())
        or response["presence"]["events"]
        or response["account_data"]["events"]
        or response["to_device"]["events"]
        or response["device_lists"]["changed"]
        or response["device_lists"]["left"]
    )
