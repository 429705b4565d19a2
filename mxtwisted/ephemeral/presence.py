"""Presence of local users, its timers, and the ``presence`` stream for /sync.

Spec: Client-Server API, "Presence" (``GET``/``PUT
/presence/{userId}/status``, the ``m.presence`` event). The state machine
follows the spec and Synapse's defaults (``presence`` section of
homeserver.yaml):

* ``PUT .../status`` sets ``online``, ``unavailable`` or ``offline`` and the
  status message (a ``PUT`` without ``status_msg`` clears it). Setting
  ``online`` is a pro-active event: it updates the last active time.
* A /sync request (``set_presence``, default ``online``) brings an offline
  user online and counts as the client being connected; ``set_presence=offline``
  leaves presence alone (as Synapse). A user who was idle stays
  ``unavailable`` until they do something.
* Pro-active events (sending an event, a receipt, a typing notification, a
  read marker) update the last active time and bring an ``unavailable``
  user back ``online``.
* ``idle_timeout`` (5 min) after the last pro-active event an ``online`` user
  becomes ``unavailable``; ``sync_online_timeout`` (30 s) after their client
  stopped syncing (and was last active) a user becomes ``offline``.
* ``currently_active`` is true while the user was active in the last
  ``last_active_granularity`` (1 min); while it stays true, further activity
  is not announced again (the spec's way of keeping presence cheap).
* Presence is only visible to users who share a joined room with the user
  (and to the user): ``GET`` of anyone else is ``403``, of a local user who
  does not exist ``404``.

The live state of users who are not offline is kept in memory and checked
by one :class:`~twisted.internet.task.LoopingCall` on the injected clock; a
row is written (and a stream position taken) only when something others see
changes. With ``presence.enabled: false`` nothing is tracked or delivered,
``PUT`` is accepted and ignored, and ``GET`` answers ``offline`` (as Synapse).

Presence of remote users arrives over federation (:meth:`PresenceHandler.update_remote`,
checked by :mod:`mxtwisted.federation.edus`): it is stored like a local user's and
delivered to the local users who share a room with them. A remote user not heard
of for :data:`REMOTE_PRESENCE_TIMEOUT_MS` is taken to be offline (their server
re-sends the presence of online users well within it, as Synapse does every
25 minutes). Listeners (:meth:`PresenceHandler.add_listener`) hear of every change
of a local user's presence that is announced, so federation can send it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Optional

from twisted.application.service import Service
from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from mxtwisted.ephemeral import HandlerStreamSource, Updates
from mxtwisted.events.event import Event
from mxtwisted.http.errors import Codes, MatrixError
from mxtwisted.notifier import Notifier
from mxtwisted.storage.presence import OFFLINE, ONLINE, PRESENCE_STATES, UNAVAILABLE, PresenceStore, UserPresence

log = Logger()

#: Stream name (notifier and sync tokens).
PRESENCE_STREAM = "presence"

#: Defaults of the ``presence`` configuration section (Synapse's), in milliseconds.
DEFAULT_IDLE_TIMEOUT_MS = 5 * 60_000
DEFAULT_SYNC_ONLINE_TIMEOUT_MS = 30_000
DEFAULT_LAST_ACTIVE_GRANULARITY_MS = 60_000

#: How often the timers are checked, in seconds.
CHECK_INTERVAL_SECONDS = 5.0
#: When /sync only reports that a request started (``set_presence``), the request is
#: taken to be in flight for this long: longer than the usual 30 s long-poll.
SYNC_REQUEST_HOLD_MS = 60_000
#: Rooms joined recently, remembered per user so the next sync brings the presence of
#: the room's members.
MAX_REMEMBERED_JOINS = 50
#: A remote user whose server sent nothing for this long is set offline (Synapse's value).
REMOTE_PRESENCE_TIMEOUT_MS = 30 * 60_000

#: ``listener(state)``: a local user's presence as just stored and announced.
PresenceListener = Callable[[UserPresence], None]


def format_presence(state: UserPresence, now_ms: int) -> dict[str, Any]:
    """The content of ``m.presence`` / the body of ``GET .../status``."""
    content: dict[str, Any] = {"presence": state.state}
    if state.last_active_ts:
        content["last_active_ago"] = max(0, now_ms - state.last_active_ts)
    if state.status_msg:
        content["status_msg"] = state.status_msg
    if state.state == ONLINE:
        content["currently_active"] = state.currently_active
    return content


class PresenceHandler(Service):
    """Presence of this server's users.

    ``rooms`` is the room engine (local joined members of rooms, its event
    store for the rooms of a user, ``add_listener`` for activity and joins);
    ``users`` answers ``get_user`` (does a local user exist).
    """

    def __init__(
        self,
        clock: IReactorTime,
        notifier: Notifier,
        rooms: Any,
        store: PresenceStore,
        users: Any,
        server_name: str,
        *,
        enabled: bool = True,
        idle_timeout_ms: int = DEFAULT_IDLE_TIMEOUT_MS,
        sync_online_timeout_ms: int = DEFAULT_SYNC_ONLINE_TIMEOUT_MS,
        last_active_granularity_ms: int = DEFAULT_LAST_ACTIVE_GRANULARITY_MS,
        include_offline_users_on_sync: bool = False,
    ) -> None:
        self._clock = clock
        self._notifier = notifier
        self._rooms = rooms
        self._events = rooms.store
        self.store = store
        self._users = users
        self._server_name = server_name
        self.enabled = enabled
        self.idle_timeout_ms = idle_timeout_ms
        self.sync_online_timeout_ms = sync_online_timeout_ms
        self.last_active_granularity_ms = last_active_granularity_ms
        self.include_offline_users_on_sync = include_offline_users_on_sync
        #: Live state of local users who are (or were until the last check) not offline.
        self._states: dict[str, UserPresence] = {}
        #: user_id → number of /sync requests in flight (reported with :meth:`user_syncing`).
        self._syncs_in_flight: dict[str, int] = {}
        #: user_id → ms until which a /sync reported only by ``set_presence`` counts as in flight.
        self._sync_hold_until: dict[str, int] = {}
        #: Users made unavailable by a /sync with ``set_presence=unavailable`` (a later
        #: ``set_presence=online`` undoes it; idleness and an explicit PUT are undone by activity).
        self._unavailable_by_sync: set[str] = set()
        #: user_id → [(presence stream position, room_id)] of rooms they joined recently.
        self._joins: dict[str, list[tuple[int, str]]] = {}
        self._loop: Optional[LoopingCall] = None
        self._loaded: Optional[defer.Deferred] = None
        #: Writes in flight (waited for on stop, before the database closes).
        self._writes: set[defer.Deferred] = set()
        self._last_write: dict[str, defer.Deferred] = {}
        #: Remote users who are not offline → ms when their server last told us about them.
        self._remote_seen: dict[str, int] = {}
        self._listeners: list[PresenceListener] = []
        #: While the start-up read of stored states runs: the users whose presence changed meanwhile.
        self._changed_while_loading: Optional[set[str]] = None
        self.source = HandlerStreamSource(PRESENCE_STREAM, self)
        if enabled:
            rooms.add_listener(self._on_event)

    def now_ms(self) -> int:
        return int(self._clock.seconds() * 1000)

    def _is_mine(self, user_id: str) -> bool:
        return user_id.endswith(":" + self._server_name)

    def add_listener(self, listener: PresenceListener) -> None:
        """Hear of each announced change of a local user's presence (never of remote users)."""
        self._listeners.append(listener)

    def live_states(self) -> list[UserPresence]:
        """The live state of the local users who are not offline (for federation keep-alives)."""
        return [state for state in self._states.values() if state.state != OFFLINE]

    # -- lifecycle ---------------------------------------------------------------------
    def startService(self) -> None:
        super().startService()
        if not self.enabled:
            return
        self._loaded = defer.ensureDeferred(self._load())
        self._loaded.addErrback(lambda f: log.failure("Loading presence failed", f))
        self._loop = LoopingCall(self.check_timeouts)
        self._loop.clock = self._clock
        self._loop.start(CHECK_INTERVAL_SECONDS, now=False).addErrback(
            lambda f: log.failure("Presence timers failed", f)
        )

    def stopService(self) -> Any:
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        self._loop = None
        super().stopService()
        return self.wait_for_writes()

    def wait_for_writes(self) -> defer.Deferred:
        """Fires once the presence writes in flight now are stored (and announced)."""
        pending = list(self._writes)
        if self._loaded is not None and not self._loaded.called:
            pending.append(self._loaded)
        return defer.DeferredList(pending).addCallback(lambda _: None)

    async def _load(self) -> None:
        """Resume the timers of users who were not offline when the server last stopped. A user whose
        presence changed while this read was running keeps that newer state (the read may predate it: a
        user set offline meanwhile must not come back online from it)."""
        now = self.now_ms()
        self._changed_while_loading = set()
        try:
            stored_states = await self.store.get_not_offline()
        finally:
            changed, self._changed_while_loading = self._changed_while_loading, None
        for state in stored_states:
            if state.user_id in changed:
                continue
            if self._is_mine(state.user_id):
                self._states.setdefault(state.user_id, state)
            else:
                # Their server may have gone: they get the full timeout to say otherwise.
                self._remote_seen.setdefault(state.user_id, now)

    # -- reading --------------------------------------------------------------------------
    async def current_state(self, user_id: str) -> UserPresence:
        """The live state, else the stored one, else offline."""
        state = self._states.get(user_id)
        if state is not None:
            return state
        stored = await self.store.get(user_id)
        live = self._states.get(user_id)  # it may have changed while we read
        return live or stored or UserPresence(user_id)

    async def get_presence(self, requester_id: str, user_id: str) -> dict[str, Any]:
        """``GET /presence/{userId}/status``."""
        if not self.enabled:
            return {"presence": OFFLINE}
        if user_id != requester_id:
            if self._is_mine(user_id) and await self._users.get_user(user_id) is None:
                raise MatrixError(404, Codes.NOT_FOUND, "Unknown user")
            if not await self.is_visible(user_id, requester_id):
                raise MatrixError(403, Codes.FORBIDDEN, "You are not allowed to see their presence")
        return format_presence(await self.current_state(user_id), self.now_ms())

    async def is_visible(self, observed_id: str, observer_id: str) -> bool:
        """Whether the two users share a joined room."""
        if observed_id == observer_id:
            return True
        observer_rooms = await self._events.get_rooms_for_user(observer_id)
        if not observer_rooms:
            return False
        observed_rooms = await self._events.get_rooms_for_user(observed_id)
        return not observer_rooms.keys().isdisjoint(observed_rooms.keys())

    # -- changes ----------------------------------------------------------------------------
    async def set_state(self, user_id: str, presence: str, status_msg: Optional[str] = None) -> None:
        """``PUT /presence/{userId}/status`` (checks done by the caller)."""
        if presence not in PRESENCE_STATES:
            raise MatrixError(400, Codes.INVALID_PARAM, f"presence must be one of {', '.join(PRESENCE_STATES)}")
        if not self.enabled:
            return
        now = self.now_ms()

        def change(state: UserPresence) -> UserPresence:
            self._unavailable_by_sync.discard(user_id)
            if presence == ONLINE:
                return state.replace(state=ONLINE, status_msg=status_msg, last_active_ts=now)
            return state.replace(state=presence, status_msg=status_msg)

        await self._modify(user_id, change)

    def set_presence(self, user_id: str, state: Optional[str]) -> defer.Deferred:
        """For /sync's ``set_presence`` (default ``online``), called when a sync request starts.

        Without :meth:`user_syncing` the request is taken to be in flight for
        :data:`SYNC_REQUEST_HOLD_MS`. The returned Deferred fires once the change is
        stored; it need not be awaited (failures are logged).
        """
        if self.enabled and state != OFFLINE:
            self._sync_hold_until[user_id] = self.now_ms() + SYNC_REQUEST_HOLD_MS
        return self._sync_update(user_id, state)

    def user_syncing(self, user_id: str, state: Optional[str]) -> Callable[[], None]:
        """A /sync request started; call the returned function when it ends (the precise variant
        of :meth:`set_presence`: the user counts as connected exactly while requests are open)."""
        if not self.enabled or state == OFFLINE:
            return lambda: None
        self._syncs_in_flight[user_id] = self._syncs_in_flight.get(user_id, 0) + 1
        self._sync_update(user_id, state)
        done = False

        def finished() -> None:
            nonlocal done
            if done:
                return
            done = True
            count = self._syncs_in_flight.get(user_id, 1) - 1
            if count > 0:
                self._syncs_in_flight[user_id] = count
            else:
                self._syncs_in_flight.pop(user_id, None)
            live = self._states.get(user_id)
            if live is not None:
                self._states[user_id] = live.replace(last_user_sync_ts=self.now_ms())

        return finished

    def _sync_update(self, user_id: str, state: Optional[str]) -> defer.Deferred:
        if not self.enabled or state == OFFLINE:
            return defer.succeed(None)
        wanted = state or ONLINE
        if wanted not in (ONLINE, UNAVAILABLE):
            wanted = ONLINE
        now = self.now_ms()

        def change(current: UserPresence) -> UserPresence:
            current = current.replace(last_user_sync_ts=now)
            if wanted == UNAVAILABLE:
                if current.state != UNAVAILABLE:
                    self._unavailable_by_sync.add(user_id)
                    return current.replace(state=UNAVAILABLE)
                return current
            if current.state == OFFLINE or (current.state == UNAVAILABLE and user_id in self._unavailable_by_sync):
                self._unavailable_by_sync.discard(user_id)
                return current.replace(state=ONLINE, last_active_ts=now)
            return current

        d = defer.ensureDeferred(self._modify(user_id, change))
        d.addErrback(lambda f: log.failure("Presence update from /sync failed for {user_id}", f, user_id=user_id))
        self._writes.add(d)
        d.addBoth(lambda result: (self._writes.discard(d), result)[1])
        return d

    def bump_active(self, user_id: str) -> None:
        """A pro-active event of ``user_id``: update the last active time, leave idleness.

        Only users who are not offline are affected (an offline user doing something
        without syncing, such as a bot, stays offline, as in Synapse).
        """
        if not self.enabled:
            return
        state = self._states.get(user_id)
        if state is None or state.state == OFFLINE:
            return
        self._unavailable_by_sync.discard(user_id)
        new = state.replace(state=ONLINE, last_active_ts=self.now_ms())
        self._commit(state, new)

    async def on_deactivated(self, user_id: str, erase: bool) -> None:
        """Account deactivation hook: the user goes offline without a status message."""
        if not self.enabled:
            return
        self._syncs_in_flight.pop(user_id, None)
        self._sync_hold_until.pop(user_id, None)
        await self._modify(user_id, lambda state: state.replace(state=OFFLINE, status_msg=None))

    def _on_event(self, event: Event, stream_ordering: int) -> None:
        """Room events of local users: activity, and joins (presence becomes visible both ways)."""
        sender = event.sender
        if not self._is_mine(sender):
            return
        if event.type == "m.room.member" and event.membership == "join" and event.state_key:
            d = defer.ensureDeferred(self._joined(event.state_key, event.room_id))
            d.addErrback(lambda f: log.failure("Presence on join failed", f))
        self.bump_active(sender)

    async def _joined(self, user_id: str, room_id: str) -> None:
        """``user_id`` joined ``room_id``: they should learn the members' presence, and the
        members theirs, even though nobody's presence changed."""
        if not self._is_mine(user_id):
            return
        position = self.store.stream.allocate()
        self.store.stream.finish(position)
        joins = self._joins.setdefault(user_id, [])
        joins.append((position, room_id))
        del joins[:-MAX_REMEMBERED_JOINS]
        self._notifier.notify_users(PRESENCE_STREAM, self.store.stream.current, [user_id])
        state = self._states.get(user_id)
        if state is not None and state.state != OFFLINE:
            await self._write(state)

    # -- the state machine ------------------------------------------------------------------
    async def _modify(self, user_id: str, change: Callable[[UserPresence], UserPresence]) -> None:
        state = self._states.get(user_id)
        if state is None:
            state = await self.current_state(user_id)
            state = self._states.setdefault(user_id, state)
        new = change(state)
        await self._commit(state, new)

    def _is_syncing(self, user_id: str, now: int) -> bool:
        return self._syncs_in_flight.get(user_id, 0) > 0 or self._sync_hold_until.get(user_id, 0) > now

    def _commit(self, prev: UserPresence, new: UserPresence) -> defer.Deferred:
        """Make ``new`` the live state; store and announce it if others would see a difference."""
        now = self.now_ms()
        new = new.replace(
            currently_active=new.state == ONLINE and now - new.last_active_ts < self.last_active_granularity_ms
        )
        if self._changed_while_loading is not None:
            self._changed_while_loading.add(new.user_id)
        self._states[new.user_id] = new
        if new.state == OFFLINE and not self._is_syncing(new.user_id, now):
            # Offline users have no timers; the stored row is their state.
            self._states.pop(new.user_id, None)
            self._unavailable_by_sync.discard(new.user_id)
        visible = (prev.state, prev.status_msg, prev.currently_active) != (
            new.state,
            new.status_msg,
            new.currently_active,
        )
        if not visible:
            return defer.succeed(None)
        return self._write(new)

    def _write(self, state: UserPresence) -> defer.Deferred:
        # One user's writes are stored in the order they were made: a later state must never be
        # overwritten by an earlier write that happened to commit after it.
        previous = self._last_write.get(state.user_id)

        async def persist_in_order() -> None:
            if previous is not None and not previous.called:
                await defer.DeferredList([previous])
            await self._persist(state)

        d = defer.ensureDeferred(persist_in_order())
        self._last_write[state.user_id] = d

        def forget(result: Any) -> Any:
            if self._last_write.get(state.user_id) is d:
                del self._last_write[state.user_id]
            return result

        d.addBoth(forget)
        d.addErrback(lambda f: log.failure("Storing presence of {user_id} failed", f, user_id=state.user_id))
        self._writes.add(d)
        d.addBoth(lambda result: (self._writes.discard(d), result)[1])
        return d

    async def _persist(self, state: UserPresence) -> None:
        stored = await self.store.put(state)
        live = self._states.get(state.user_id)
        if live is not None and live.stream_id < stored.stream_id:
            self._states[state.user_id] = live.replace(stream_id=stored.stream_id)
        users = await self.interested_users(state.user_id)
        self._notifier.notify_users(PRESENCE_STREAM, self.store.stream.current, users)
        for listener in self._listeners:
            try:
                listener(stored)
            except Exception:
                log.failure("Presence listener failed")

    # -- remote users -------------------------------------------------------------------------
    async def update_remote(self, state: UserPresence) -> bool:
        """The presence of a remote user, sent by their server (checked by the caller). Stored and
        announced only when a local user shares a room with them; True then."""
        user_id = state.user_id
        if not self.enabled or self._is_mine(user_id):
            return False
        users = await self.interested_users(user_id)
        if not users - {user_id}:
            return False
        if state.state == OFFLINE:
            self._remote_seen.pop(user_id, None)
        else:
            self._remote_seen[user_id] = self.now_ms()
        await self.store.put(state)
        self._notifier.notify_users(PRESENCE_STREAM, self.store.stream.current, users)
        return True

    def _expire_remote(self, now: int) -> None:
        """Remote users not heard of for :data:`REMOTE_PRESENCE_TIMEOUT_MS` go offline."""
        for user_id, seen in list(self._remote_seen.items()):
            if now - seen <= REMOTE_PRESENCE_TIMEOUT_MS:
                continue
            del self._remote_seen[user_id]
            d = defer.ensureDeferred(self._set_remote_offline(user_id))
            d.addErrback(lambda f: log.failure("Remote presence timeout failed", f))
            self._writes.add(d)
            d.addBoth(lambda result, d=d: (self._writes.discard(d), result)[1])

    async def _set_remote_offline(self, user_id: str) -> None:
        stored = await self.store.get(user_id)
        if stored is None or stored.state == OFFLINE or user_id in self._remote_seen:
            return
        await self.store.put(stored.replace(state=OFFLINE, currently_active=False))
        users = await self.interested_users(user_id)
        self._notifier.notify_users(PRESENCE_STREAM, self.store.stream.current, users)

    async def interested_users(self, user_id: str) -> set[str]:
        """Local users who share a joined room with ``user_id``, and the user."""
        users = {user_id}
        for room_id in await self._events.get_rooms_for_user(user_id):
            room = await self._rooms.get_room_cache(room_id)
            users |= room.members_joined_local
        return users

    def check_timeouts(self) -> None:
        """Idle and offline timeouts, and the end of ``currently_active`` (run periodically)."""
        now = self.now_ms()
        for user_id, until in list(self._sync_hold_until.items()):
            if until <= now:
                # The request reported by set_presence is taken to have ended now.
                del self._sync_hold_until[user_id]
                live = self._states.get(user_id)
                if live is not None and live.last_user_sync_ts < until:
                    self._states[user_id] = live.replace(last_user_sync_ts=until)
        for user_id, state in list(self._states.items()):
            new = state
            if new.state == ONLINE and now - new.last_active_ts > self.idle_timeout_ms:
                new = new.replace(state=UNAVAILABLE)
            if new.state != OFFLINE and not self._is_syncing(user_id, now):
                last_seen = max(new.last_user_sync_ts, new.last_active_ts)
                if now - last_seen > self.sync_online_timeout_ms:
                    new = new.replace(state=OFFLINE)
            ends_activity = state.currently_active and now - state.last_active_ts >= self.last_active_granularity_ms
            if new != state or ends_activity or new.state == OFFLINE:
                self._commit(state, new)
        self._expire_remote(now)

    # -- the stream ------------------------------------------------------------------------
    def current_position(self) -> int:
        return self.store.stream.current

    async def _members(self, room_ids: set[str]) -> set[str]:
        members: set[str] = set()
        for room_id in room_ids:
            try:
                room = await self._rooms.get_room_cache(room_id)
            except MatrixError:
                continue
            members |= room.members_joined_local
        return members

    async def _remote_members(self, room_ids: set[str]) -> set[str]:
        """The remote users joined to ``room_ids`` (read from the database: only for initial syncs and
        newly joined rooms)."""
        members: set[str] = set()
        for room_id in room_ids:
            members.update(u for u in await self._events.get_members(room_id, ("join",)) if not self._is_mine(u))
        return members

    async def _shares_room(self, user_id: str, room_ids: set[str]) -> bool:
        return not room_ids.isdisjoint((await self._events.get_rooms_for_user(user_id)).keys())

    async def get_updates(self, user_id: str, room_ids: set[str], from_pos: int, to_pos: int) -> Updates:
        if not self.enabled or from_pos >= to_pos:
            return {}, []
        now = self.now_ms()
        if from_pos == 0:
            users = await self._members(room_ids) | await self._remote_members(room_ids) | {user_id}
            states = await self.store.get_many(users)
            for uid in users:
                live = self._states.get(uid)
                if live is not None:
                    states[uid] = live
                elif uid not in states and self.include_offline_users_on_sync:
                    states[uid] = UserPresence(uid)
            chosen = [
                states[uid]
                for uid in sorted(states)
                if self.include_offline_users_on_sync or states[uid].state != OFFLINE
            ]
        else:
            changed = {s.user_id: s for s in await self.store.get_changed(from_pos, to_pos)}
            new_rooms = {
                room_id for position, room_id in self._joins.get(user_id, ()) if from_pos < position <= to_pos
            } & room_ids
            if not changed and not new_rooms:
                return {}, []
            shared = await self._members(room_ids) | {user_id}
            wanted = {uid for uid in changed if uid in shared}
            for uid in changed.keys() - shared:
                if not self._is_mine(uid) and await self._shares_room(uid, room_ids):
                    wanted.add(uid)
            newly_visible = (
                (await self._members(new_rooms) | await self._remote_members(new_rooms)) - wanted if new_rooms else set()
            )
            states = {uid: changed[uid] for uid in wanted}
            if newly_visible:
                states.update(await self.store.get_many(newly_visible))
            for uid in states:
                live = self._states.get(uid)
                if live is not None:
                    states[uid] = live
            chosen = [
                states[uid]
                for uid in sorted(states)
                if uid in wanted or self.include_offline_users_on_sync or states[uid].state != OFFLINE
            ]
        events = [{"type": "m.presence", "sender": s.user_id, "content": format_presence(s, now)} for s in chosen]
        return {}, events
