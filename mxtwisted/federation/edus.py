"""Typing notifications, receipts and presence over federation (EDUs), both directions.

Spec: Server-Server API, "EDUs", "Typing Notifications", "Presence", "Receipts"
and "Server Access Control Lists (ACLs)".

Outgoing (:class:`EduSender`): the ephemeral handlers tell their listeners of
every change; the changes of *local* users become EDUs queued on the
:class:`~mxtwisted.federation.sender.FederationSender`:

* ``m.typing`` to every other server with a joined member in the room. Remote
  servers forget a typing user after a while (Synapse: one minute), so while a
  local user keeps typing it is sent again every :data:`TYPING_PING_INTERVAL`.
* ``m.receipt`` for ``m.read`` receipts only: ``m.read.private`` never leaves
  this server. A threaded receipt carries ``thread_id`` in its ``data``.
* ``m.presence`` to every server sharing a room with the user, when presence is
  enabled; again every :data:`PRESENCE_PING_INTERVAL` for users who are not
  offline (remote servers time presence out), and the presence of the room's
  local members to a server whose user just joined one of our rooms.

Incoming (:class:`EduHandler`, the receiver's ``edu_handler``): every claim is
checked before it reaches the handlers, as the spec asks: the user must belong
to the sending server, and for room-scoped EDUs the room must be known here
(with local members), the user joined to it, and the room's server ACL must
let the sender in (typing dropped, receipts of that room dropped). Malformed
entries are dropped one by one; nothing here fails a transaction. Other EDU
types (to-device, device lists, signing keys) are not handled yet and are
ignored.
"""

from __future__ import annotations

from typing import Any, Awaitable, Callable, Optional

from twisted.application.service import Service
from twisted.internet import defer
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from mxtwisted.events.event import Event
from mxtwisted.federation.room_acl import origin_allowed
from mxtwisted.federation.server_visibility import server_of
from mxtwisted.http.errors import MatrixError
from mxtwisted.rooms.engine import RoomCache
from mxtwisted.storage.presence import OFFLINE, PRESENCE_STATES, UserPresence

log = Logger()

TYPING = "m.typing"
RECEIPT = "m.receipt"
PRESENCE = "m.presence"
#: The only receipt type that travels: private receipts stay on their user's server.
READ = "m.read"

#: How long a remote user counts as typing after their server said so, unless it says "stopped"
#: first. Synapse's value: it re-sends every 40 s while its user types, so anything shorter would
#: make its users flicker.
REMOTE_TYPING_TIMEOUT_MS = 60_000
#: While a local user keeps typing, the EDU is sent again this often (seconds; Synapse's value).
TYPING_PING_INTERVAL = 40.0
#: The presence of local users who are not offline is sent again this often (seconds; Synapse's
#: value, well within the 30 minutes after which servers take a silent remote user to be offline).
PRESENCE_PING_INTERVAL = 25 * 60.0


class EduSender(Service):
    """Turns changes of local users into EDUs for the servers that should hear of them.

    ``sender``: ``send_edu(destination, edu_type, content)`` (the FederationSender); ``store``: the
    EventStore (``get_members``, ``get_rooms_for_user``); ``typing``, ``receipts``, ``presence``: the
    ephemeral handlers (their ``add_listener``); ``rooms``: the room engine (``add_listener``,
    ``get_room_cache``), for joins of remote users.
    """

    def __init__(
        self,
        clock: IReactorTime,
        server_name: str,
        sender: Any,
        store: Any,
        rooms: Any,
        typing: Any,
        receipts: Any,
        presence: Any,
    ) -> None:
        self._clock = clock
        self.server_name = server_name
        self._sender = sender
        self._store = store
        self._rooms = rooms
        self._typing = typing
        self._presence = presence
        #: (room_id, user_id) → the call re-sending a local user's typing notification.
        self._typing_pings: dict[tuple[str, str], IDelayedCall] = {}
        self._presence_loop: Optional[LoopingCall] = None
        #: Destination look-ups in flight (waited for on stop, before the database closes).
        self._pending: set[defer.Deferred] = set()
        self._stopping = False
        typing.add_listener(self.on_typing)
        receipts.add_listener(self.on_receipt)
        presence.add_listener(self.on_presence)
        rooms.add_listener(self.on_event)

    def _is_mine(self, user_id: str) -> bool:
        return server_of(user_id) == self.server_name

    # -- lifecycle -------------------------------------------------------------------------------
    def startService(self) -> None:
        super().startService()
        self._stopping = False
        if self._presence.enabled:
            self._presence_loop = LoopingCall(self.ping_presence)
            self._presence_loop.clock = self._clock
            self._presence_loop.start(PRESENCE_PING_INTERVAL, now=False).addErrback(
                lambda f: log.failure("Presence keep-alives failed", f)
            )

    def stopService(self) -> defer.Deferred:
        super().stopService()
        self._stopping = True
        if self._presence_loop is not None and self._presence_loop.running:
            self._presence_loop.stop()
        self._presence_loop = None
        for call in self._typing_pings.values():
            if call.active():
                call.cancel()
        self._typing_pings.clear()
        return defer.DeferredList(list(self._pending), consumeErrors=True).addCallback(lambda _: None)

    def _spawn(self, work: Callable[[], Awaitable[None]], what: str) -> None:
        if self._stopping:
            return
        d = defer.ensureDeferred(work())
        d.addErrback(lambda f: log.failure("Sending {what} over federation failed", f, what=what))
        self._pending.add(d)
        d.addBoth(lambda _: self._pending.discard(d))

    # -- destinations ------------------------------------------------------------------------------
    async def servers_in_room(self, room_id: str) -> set[str]:
        """The other servers with a joined member in ``room_id``."""
        members = await self._store.get_members(room_id, ("join",))
        return {server_of(user) for user in members} - {self.server_name, ""}

    async def servers_sharing_room(self, user_id: str) -> set[str]:
        """The other servers with a joined member in a room ``user_id`` is joined to."""
        servers: set[str] = set()
        for room_id in await self._store.get_rooms_for_user(user_id):
            servers |= await self.servers_in_room(room_id)
        return servers

    async def _send_to_room(self, room_id: str, edu_type: str, content: dict[str, Any]) -> None:
        for destination in sorted(await self.servers_in_room(room_id)):
            self._sender.send_edu(destination, edu_type, content)

    # -- typing ------------------------------------------------------------------------------------
    def on_typing(self, room_id: str, user_id: str, typing: bool) -> None:
        """TypingHandler listener."""
        if not self._is_mine(user_id):
            return  # a remote user's typing: their own server tells the others
        key = (room_id, user_id)
        ping = self._typing_pings.pop(key, None)
        if ping is not None and ping.active():
            ping.cancel()
        if typing and not self._stopping:
            self._typing_pings[key] = self._clock.callLater(TYPING_PING_INTERVAL, self._ping_typing, room_id, user_id)
        self._send_typing(room_id, user_id, typing)

    def _send_typing(self, room_id: str, user_id: str, typing: bool) -> None:
        content = {"room_id": room_id, "user_id": user_id, "typing": typing}
        self._spawn(lambda: self._send_to_room(room_id, TYPING, content), TYPING)

    def _ping_typing(self, room_id: str, user_id: str) -> None:
        self._typing_pings.pop((room_id, user_id), None)
        if user_id in self._typing.get_typing(room_id):
            self._typing_pings[(room_id, user_id)] = self._clock.callLater(
                TYPING_PING_INTERVAL, self._ping_typing, room_id, user_id
            )
            self._send_typing(room_id, user_id, True)

    # -- receipts ----------------------------------------------------------------------------------
    def on_receipt(
        self, room_id: str, receipt_type: str, user_id: str, event_id: str, thread_id: Optional[str], data: dict
    ) -> None:
        """ReceiptsHandler listener: public receipts of local users."""
        if receipt_type != READ or not self._is_mine(user_id):
            return
        edu_data = dict(data)
        if thread_id is not None:
            edu_data["thread_id"] = thread_id
        content = {room_id: {READ: {user_id: {"event_ids": [event_id], "data": edu_data}}}}
        self._spawn(lambda: self._send_to_room(room_id, RECEIPT, content), RECEIPT)

    # -- presence ----------------------------------------------------------------------------------
    def on_presence(self, state: UserPresence) -> None:
        """PresenceHandler listener: a local user's presence changed."""
        if not self._presence.enabled or not self._is_mine(state.user_id):
            return
        self._spawn(lambda: self._send_presence(state), PRESENCE)

    async def _send_presence(self, state: UserPresence, destinations: Optional[set[str]] = None) -> None:
        if destinations is None:
            destinations = await self.servers_sharing_room(state.user_id)
        if not destinations:
            return
        content = {"push": [self.presence_update(state)]}
        for destination in sorted(destinations):
            self._sender.send_edu(destination, PRESENCE, content)

    def presence_update(self, state: UserPresence) -> dict[str, Any]:
        """One entry of an ``m.presence`` EDU's ``push`` list."""
        now = int(self._clock.seconds() * 1000)
        update: dict[str, Any] = {
            "user_id": state.user_id,
            "presence": state.state,
            "last_active_ago": max(0, now - state.last_active_ts),
            "currently_active": bool(state.currently_active),
        }
        if state.status_msg:
            update["status_msg"] = state.status_msg
        return update

    def ping_presence(self) -> None:
        """Send the presence of every local user who is not offline again (keep-alive)."""
        for state in self._presence.live_states():
            self.on_presence(state)

    def on_event(self, event: Event, stream_ordering: int) -> None:
        """RoomEngine listener: a remote user joined one of our rooms, so their server learns the presence
        of the room's local members (nobody's presence changed, nothing else would tell it)."""
        if (
            not self._presence.enabled
            or event.type != "m.room.member"
            or event.membership != "join"
            or not event.state_key
            or self._is_mine(event.state_key)
        ):
            return
        destination = server_of(event.state_key)
        self._spawn(lambda: self._send_room_presence(event.room_id, destination), PRESENCE)

    async def _send_room_presence(self, room_id: str, destination: str) -> None:
        room = await self._rooms.get_room_cache(room_id)
        updates = []
        for user_id in sorted(room.members_joined_local):
            state = await self._presence.current_state(user_id)
            if state.state != OFFLINE:
                updates.append(self.presence_update(state))
        if updates:
            self._sender.send_edu(destination, PRESENCE, {"push": updates})


class EduHandler:
    """``await handler(origin, edu)`` for each EDU of a received transaction (the receiver's
    ``edu_handler``): checks it, then hands it to the ephemeral handlers."""

    def __init__(self, clock: IReactorTime, engine: Any, typing: Any, receipts: Any, presence: Any) -> None:
        self._clock = clock
        self._engine = engine
        self._typing = typing
        self._receipts = receipts
        self._presence = presence
        self._handlers: dict[str, Callable[[str, dict[str, Any]], Awaitable[None]]] = {
            TYPING: self.on_typing,
            RECEIPT: self.on_receipt,
            PRESENCE: self.on_presence,
        }

    def _now_ms(self) -> int:
        return int(self._clock.seconds() * 1000)

    async def __call__(self, origin: str, edu: dict[str, Any]) -> None:
        edu_type = edu.get("edu_type")
        content = edu.get("content")
        handler = self._handlers.get(edu_type) if isinstance(edu_type, str) else None
        if handler is None:
            log.debug("Ignoring a {edu_type} EDU from {origin}", edu_type=edu_type, origin=origin)
            return
        if not isinstance(content, dict):
            log.info("Dropping a {edu_type} EDU from {origin}: no content", edu_type=edu_type, origin=origin)
            return
        await handler(origin, content)

    # -- checks -------------------------------------------------------------------------------------
    async def _room(self, origin: str, room_id: Any, what: str) -> Optional[RoomCache]:
        """The room an EDU of ``origin`` is about, if we are in it and its ACL lets ``origin`` in."""
        if not isinstance(room_id, str):
            return None
        try:
            room = await self._engine.get_room_cache(room_id)
        except MatrixError:
            log.info("Dropping {what} from {origin}: unknown room {room_id}", what=what, origin=origin, room_id=room_id)
            return None
        if not room.members_joined_local:
            return None  # we left: nobody here to tell
        if not await origin_allowed(self._engine, room, origin):
            log.info("Dropping {what} from {origin}: denied by the server ACL of {room_id}", what=what,
                     origin=origin, room_id=room_id)
            return None
        return room

    async def _joined(self, room: RoomCache, user_id: str) -> bool:
        key = ("m.room.member", user_id)
        member = (await self._engine.get_state_events(room, [key])).get(key)
        return member is not None and member.membership == "join"

    async def _sender_ok(self, origin: str, room: RoomCache, user_id: Any, what: str) -> bool:
        """The user belongs to ``origin`` and is joined to the room (spec: "Receiving servers should
        verify that the user is in the room, and is a user belonging to the sending server")."""
        if not isinstance(user_id, str) or server_of(user_id) != origin:
            log.info("Dropping {what} from {origin}: {user_id} is not its user", what=what, origin=origin,
                     user_id=user_id)
            return False
        if not await self._joined(room, user_id):
            log.info("Dropping {what} from {origin}: {user_id} is not in {room_id}", what=what, origin=origin,
                     user_id=user_id, room_id=room.room_id)
            return False
        return True

    # -- the EDUs ---------------------------------------------------------------------------------------
    async def on_typing(self, origin: str, content: dict[str, Any]) -> None:
        typing = content.get("typing")
        if not isinstance(typing, bool):
            return
        room = await self._room(origin, content.get("room_id"), TYPING)
        user_id = content.get("user_id")
        if room is None or not await self._sender_ok(origin, room, user_id, TYPING):
            return
        if typing:
            self._typing.started_typing(room.room_id, user_id, REMOTE_TYPING_TIMEOUT_MS)
        else:
            self._typing.stopped_typing(room.room_id, user_id)

    async def on_receipt(self, origin: str, content: dict[str, Any]) -> None:
        for room_id, by_type in content.items():
            if not isinstance(by_type, dict):
                continue
            room = await self._room(origin, room_id, RECEIPT)
            if room is None:
                continue
            for receipt_type, by_user in by_type.items():
                if receipt_type != READ or not isinstance(by_user, dict):
                    log.debug("Ignoring {type} receipts from {origin}", type=receipt_type, origin=origin)
                    continue
                for user_id, receipt in by_user.items():
                    await self._receipt(origin, room, user_id, receipt)

    async def _receipt(self, origin: str, room: RoomCache, user_id: str, receipt: Any) -> None:
        if not isinstance(receipt, dict):
            return
        event_ids = receipt.get("event_ids")
        if not isinstance(event_ids, list) or not event_ids or not all(isinstance(e, str) for e in event_ids):
            return
        data = receipt.get("data")
        data = data if isinstance(data, dict) else {}
        ts = data.get("ts")
        if not isinstance(ts, int) or isinstance(ts, bool):
            ts = self._now_ms()
        thread_id = data.get("thread_id")
        if not isinstance(thread_id, str):
            thread_id = None
        if not await self._sender_ok(origin, room, user_id, RECEIPT):
            return
        await self._receipts.store_remote_receipt(user_id, room.room_id, READ, event_ids, thread_id, ts)

    async def on_presence(self, origin: str, content: dict[str, Any]) -> None:
        if not self._presence.enabled:
            return
        push = content.get("push")
        if not isinstance(push, list):
            return
        now = self._now_ms()
        for update in push:
            state = parse_presence_update(update, origin, now)
            if state is None:
                log.info("Dropping a presence update from {origin}: {update!r}", origin=origin, update=update)
                continue
            await self._presence.update_remote(state)


def parse_presence_update(update: Any, origin: str, now_ms: int) -> Optional[UserPresence]:
    """One ``push`` entry of an ``m.presence`` EDU as a stored state; None if it is malformed or about a
    user of another server than ``origin``."""
    if not isinstance(update, dict):
        return None
    user_id = update.get("user_id")
    presence = update.get("presence")
    if not isinstance(user_id, str) or server_of(user_id) != origin or presence not in PRESENCE_STATES:
        return None
    ago = update.get("last_active_ago")
    ago = ago if isinstance(ago, int) and not isinstance(ago, bool) and ago >= 0 else 0
    status_msg = update.get("status_msg")
    currently_active = update.get("currently_active")
    return UserPresence(
        user_id,
        presence,
        status_msg if isinstance(status_msg, str) and status_msg else None,
        last_active_ts=max(0, now_ms - ago),
        currently_active=currently_active is True,
    )
