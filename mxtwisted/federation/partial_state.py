"""Completing rooms joined with partial state ("faster joins"; spec send_join ``omit_members``).

A big room's state is mostly member events. Joining with ``omit_members`` the resident server answers without
them, so the join returns as soon as the rest (create, power levels, join rules, our own membership…) is
checked and stored. Meanwhile the room is *partial* (table ``partial_state_rooms``):

- remote events are checked against the state with the keys it lacks taken from their own auth events
  (:meth:`RoomEngine.persist_remote_event`), as Synapse does;
- our events go to the resident servers the answer listed (``servers_in_room``) as well as to the servers of
  the members we know (:class:`~mxtwisted.federation.sender.FederationSender`).

Right after the join, :class:`PartialStateSyncer` asks a resident server for the full state at our join
(``GET /state?event_id=<join>``: the state before it and its auth chain), checks every event as any fetched
event (signatures, hashes, auth rules in auth order), stores them, and has the engine put the full state in
place (:meth:`RoomEngine.complete_partial_state`). It tries each resident server in turn and, when none
answers, tries again later (doubling from 5 s to 10 min); rooms still partial at start-up are resumed.
"""

from __future__ import annotations

from typing import Any, Optional
from urllib.parse import quote

from twisted.application.service import Service
from twisted.internet import defer
from twisted.logger import Logger

from mxtwisted.events.event import Event
from mxtwisted.federation.receiver import store_fetched_events
from mxtwisted.rooms.engine import RoomEngine
from mxtwisted.storage.events import StateMap
from mxtwisted.storage.partial_state import get_partial_room, list_partial_rooms

log = Logger()

MIN_RETRY = 5.0
MAX_RETRY = 600.0


class PartialStateSyncer(Service):
    """``client``: ``get_json(destination, path, args)``; ``keyring``: ``verify_json_for_server``."""

    def __init__(self, clock: Any, engine: RoomEngine, client: Any, keyring: Any) -> None:
        self._clock = clock
        self.engine = engine
        self._client = client
        self._keyring = keyring
        self._running: dict[str, defer.Deferred] = {}
        self._retries: dict[str, Any] = {}
        self._intervals: dict[str, float] = {}
        self._stopping = False

    # -- service ---------------------------------------------------------------------------------------------
    def startService(self) -> None:
        super().startService()
        self._stopping = False
        d = defer.ensureDeferred(self._resume())
        d.addErrback(lambda f: log.failure("Resuming partial-state rooms failed", f))

    async def _resume(self) -> None:
        for room in await list_partial_rooms(self.engine.store):
            self.complete(room.room_id)

    def stopService(self) -> defer.Deferred:
        super().stopService()
        self._stopping = True
        for call in self._retries.values():
            if call.active():
                call.cancel()
        self._retries.clear()
        for d in list(self._running.values()):
            d.cancel()
        return defer.DeferredList(list(self._running.values()), consumeErrors=True)

    # -- completing a room --------------------------------------------------------------------------------------
    def complete(self, room_id: str) -> Optional[defer.Deferred]:
        """Start fetching the full state of ``room_id`` (once at a time); the Deferred fires when done."""
        if self._stopping:
            return None
        running = self._running.get(room_id)
        if running is not None:
            return running
        d = defer.ensureDeferred(self._complete(room_id))
        self._running[room_id] = d

        def done(result: Any) -> Any:
            self._running.pop(room_id, None)
            return result

        d.addBoth(done)
        d.addErrback(self._failed, room_id)
        return d

    def _failed(self, failure: Any, room_id: str) -> None:
        if failure.check(defer.CancelledError) or self._stopping:
            return None
        interval = min(MAX_RETRY, self._intervals.get(room_id, MIN_RETRY / 2) * 2)
        self._intervals[room_id] = interval
        log.info(
            "Full state of {room_id} not had yet ({error}); trying again in {delay}s",
            room_id=room_id, error=failure.getErrorMessage(), delay=interval,
        )

        def retry() -> None:
            self._retries.pop(room_id, None)
            self.complete(room_id)

        self._retries[room_id] = self._clock.callLater(interval, retry)
        return None

    async def _complete(self, room_id: str) -> None:
        partial = await get_partial_room(self.engine.store, room_id)
        if partial is None:
            return
        room = await self.engine.get_room_cache(room_id)
        servers = [s for s in partial.servers if s != self.engine.server_name]
        errors = []
        for server in servers:
            try:
                full = await self._fetch_state(server, room, partial.join_event_id)
            except defer.CancelledError:
                raise
            except Exception as e:
                errors.append(f"{server}: {e}")
                continue
            await self.engine.complete_partial_state(room_id, partial.join_event_id, full)
            self._intervals.pop(room_id, None)
            return
        raise RuntimeError("; ".join(errors) or "no resident server to ask")

    async def _fetch_state(self, server: str, room: Any, join_event_id: str) -> StateMap:
        """The full state before our join, from ``server``: checked, stored, as a state map."""
        path = f"/_matrix/federation/v1/state/{quote(room.room_id, safe='')}"
        response = await self._client.get_json(server, path, {"event_id": join_event_id})
        pdus = response.get("pdus") if isinstance(response, dict) else None
        chain = response.get("auth_chain") if isinstance(response, dict) else None
        if not isinstance(pdus, list) or not isinstance(chain, list):
            raise ValueError("the /state answer lacks pdus or auth_chain")
        events = await store_fetched_events(self.engine, self._keyring, room, [*chain, *pdus])
        state: StateMap = {}
        for raw in pdus:
            if not isinstance(raw, dict):
                continue
            try:
                ev: Optional[Event] = events.get(Event(raw, room.version).event_id)
            except Exception:
                ev = None
            if ev is None or ev.state_key is None:
                continue  # dropped (bad signature, other room) or not state: the rest still counts
            if ev.rejected_reason is None:
                state[(ev.type, ev.state_key)] = ev.event_id
        if ("m.room.create", "") not in state:
            raise ValueError("the /state answer has no create event")
        return state


__all__ = ["PartialStateSyncer"]
