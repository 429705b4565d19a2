"""Typing notifications: who is typing in which room, in memory, on the ``typing`` stream.

Spec: Client-Server API, "Typing Notifications" (``PUT
/rooms/{roomId}/typing/{userId}`` and the ``m.typing`` ephemeral event). A
user may only set their own typing state, and only in a room they are joined
to. A typing notification lasts ``timeout`` milliseconds on the server's clock
(capped at :data:`MAX_TIMEOUT_MS`, as Synapse does) unless renewed or
stopped; leaving the room stops it too.

Typing is not persisted: every change gives the room a new position on the
``typing`` stream, and a sync since an earlier position gets the room's
*complete* current list (clients replace their list with it). After a restart
positions start again from 0; a sync token from before then is treated as an
initial sync of typing.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Optional

from twisted.application.service import Service
from twisted.internet import defer
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from mxtwisted.ephemeral import HandlerStreamSource, Updates
from mxtwisted.events.event import Event
from mxtwisted.http.errors import Codes, MatrixError
from mxtwisted.notifier import Notifier

log = Logger()

#: Stream name (notifier and sync tokens).
TYPING_STREAM = "typing"
#: When the request has no ``timeout`` (as Synapse).
DEFAULT_TIMEOUT_MS = 30_000
#: Longest typing notification accepted (as Synapse); longer timeouts are shortened.
MAX_TIMEOUT_MS = 120_000
#: A room nobody has typed in for this long forgets its stream position.
FORGET_ROOM_AFTER_MS = 10 * 60_000

#: ``listener(room_id, user_id, typing)``: someone started (True) or stopped (False) typing.
TypingListener = Callable[[str, str, bool], None]


class TypingHandler(Service):
    """The typing state of every room, with expiry timers on the injected clock.

    ``rooms`` is the room engine (``get_room_cache`` for the local joined
    members, ``add_listener`` to see members leave).
    """

    def __init__(self, clock: IReactorTime, notifier: Notifier, rooms: Any) -> None:
        self._clock = clock
        self._notifier = notifier
        self._rooms = rooms
        #: room_id → user_id → the timer ending that user's typing.
        self._typing: dict[str, dict[str, IDelayedCall]] = {}
        #: room_id → the stream position of the room's last change.
        self._serials: dict[str, int] = {}
        #: room_id → clock seconds of the room's last change (to forget idle rooms).
        self._changed_at: dict[str, float] = {}
        self._position = 0
        self._next_forget = 0.0
        self._listeners: list[TypingListener] = []
        rooms.add_listener(self._on_event)
        self.source = HandlerStreamSource(TYPING_STREAM, self)

    def add_listener(self, listener: TypingListener) -> None:
        """Hear of every start and end of typing, local or remote (federation sends the local ones);
        renewing a notification while still typing is not a change."""
        self._listeners.append(listener)

    # -- the API ------------------------------------------------------------------
    async def set_typing(
        self, requester_id: str, user_id: str, room_id: str, typing: bool, timeout_ms: Optional[int] = None
    ) -> None:
        """``PUT /rooms/{roomId}/typing/{userId}``: start (for ``timeout_ms``) or stop typing."""
        if requester_id != user_id:
            raise MatrixError(403, Codes.FORBIDDEN, "Cannot set the typing state of another user")
        room = await self._rooms.get_room_cache(room_id)
        if user_id not in room.members_joined_local:
            raise MatrixError(403, Codes.FORBIDDEN, "You are not in this room")
        if typing:
            self.started_typing(room_id, user_id, DEFAULT_TIMEOUT_MS if timeout_ms is None else timeout_ms)
        else:
            self.stopped_typing(room_id, user_id)

    def started_typing(self, room_id: str, user_id: str, timeout_ms: int) -> None:
        """Mark ``user_id`` as typing for ``timeout_ms`` (no access checks)."""
        delay = min(max(timeout_ms, 0), MAX_TIMEOUT_MS) / 1000.0
        timers = self._typing.setdefault(room_id, {})
        timer = timers.get(user_id)
        if timer is not None and timer.active():
            # Still typing: only the expiry moves, nobody needs to hear about it.
            timer.reset(delay)
            return
        timers[user_id] = self._clock.callLater(delay, self._expire, room_id, user_id)
        self._changed(room_id, user_id, True)

    def stopped_typing(self, room_id: str, user_id: str) -> None:
        """``user_id`` stopped typing (a no-op if they were not)."""
        timers = self._typing.get(room_id)
        timer = timers.pop(user_id, None) if timers else None
        if timer is None:
            return
        if timer.active():
            timer.cancel()
        if not timers:
            del self._typing[room_id]
        self._changed(room_id, user_id, False)

    def get_typing(self, room_id: str) -> list[str]:
        """The users typing in ``room_id`` now, sorted."""
        return sorted(self._typing.get(room_id, ()))

    # -- internals -------------------------------------------------------------------
    def _expire(self, room_id: str, user_id: str) -> None:
        timers = self._typing.get(room_id)
        if timers is None or user_id not in timers:
            return
        log.debug("Typing of {user_id} in {room_id} timed out", user_id=user_id, room_id=room_id)
        del timers[user_id]
        if not timers:
            del self._typing[room_id]
        self._changed(room_id, user_id, False)

    def _on_event(self, event: Event, stream_ordering: int) -> None:
        """A member who leaves (or is kicked or banned) stops typing."""
        if event.type == "m.room.member" and event.membership != "join" and event.state_key:
            self.stopped_typing(event.room_id, event.state_key)

    def _changed(self, room_id: str, user_id: str, typing: bool) -> None:
        for listener in self._listeners:
            try:
                listener(room_id, user_id, typing)
            except Exception:
                log.failure("Typing listener failed")
        self._position += 1
        self._serials[room_id] = self._position
        now = self._clock.seconds()
        self._changed_at[room_id] = now
        self._forget_idle_rooms(now)
        d = defer.ensureDeferred(self._notify(room_id, self._position))
        d.addErrback(lambda f: log.failure("Typing notification for {room_id} failed", f, room_id=room_id))

    async def _notify(self, room_id: str, position: int) -> None:
        room = await self._rooms.get_room_cache(room_id)
        self._notifier.notify_users(TYPING_STREAM, position, room.members_joined_local)

    def _forget_idle_rooms(self, now: float) -> None:
        """Drop the positions of rooms without typers that have been quiet for a while (bounded memory)."""
        if now < self._next_forget:
            return
        self._next_forget = now + FORGET_ROOM_AFTER_MS / 1000.0
        horizon = now - FORGET_ROOM_AFTER_MS / 1000.0
        for room_id in [r for r, at in self._changed_at.items() if at < horizon and r not in self._typing]:
            del self._changed_at[room_id]
            del self._serials[room_id]

    def stopService(self) -> Any:
        """Cancel every expiry timer (nothing is persisted)."""
        for timers in self._typing.values():
            for timer in timers.values():
                if timer.active():
                    timer.cancel()
        self._typing.clear()
        return super().stopService()

    # -- the stream ------------------------------------------------------------------
    def current_position(self) -> int:
        return self._position

    def get_updates(self, user_id: str, room_ids: set[str], from_pos: int, to_pos: int) -> Updates:
        if from_pos > self._position:
            from_pos = 0  # a token from before a restart
        per_room: dict[str, list[dict]] = {}
        if from_pos >= to_pos:
            return per_room, []
        candidates = room_ids if len(room_ids) <= len(self._serials) else self._serials.keys()
        for room_id in candidates:
            serial = self._serials.get(room_id)
            if serial is None or not from_pos < serial <= to_pos or room_id not in room_ids:
                continue
            users = self.get_typing(room_id)
            if from_pos == 0 and not users:
                continue
            per_room[room_id] = [{"type": "m.typing", "content": {"user_ids": users}}]
        return per_room, []
