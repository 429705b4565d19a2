"""Receiving transactions from other servers (``PUT /_matrix/federation/v1/send/{txnId}``).

Spec: Server-Server API, "Transactions" and "Checks performed on receipt of a PDU". A transaction holds at
most :data:`MAX_PDUS` PDUs and :data:`MAX_EDUS` EDUs (400 otherwise). The answer to a transaction is kept
per (origin, txnId): the same transaction sent again gets the same answer without being processed again.
The PDUs of one room are handled in the order they came, different rooms concurrently. Each PDU gets an
entry in the answer's ``pdus`` map: ``{}`` when it was accepted (or was already known), ``{"error": ...}``
when it was refused; a bad PDU never fails the whole transaction.

For each PDU (spec "Checks performed on receipt of a PDU"): the room must be known here and the origin
allowed by its server ACL; the event ID is computed per the room version; a content hash that does not
match makes us use the redacted event; the signatures of every server that must sign it are checked through
the keyring. What it needs is fetched from the origin: missing prev_events with ``/get_missing_events`` (a
few rounds), missing auth events with ``/event_auth``, and, when we are too far behind, the state at its
prev events with ``/state``. :meth:`RoomEngine.persist_remote_event` then checks the auth rules against its
auth events, the state before it and the current state (rejecting or soft-failing it) and persists it,
resolving the room's state at forks. A transaction fails as a whole (5xx, so that it is sent again) only
when this server cannot store anything (a closed database).

EDUs are handed to ``edu_handler`` (mxtwisted.federation.edus) after the PDUs.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, Awaitable, Callable, Optional
from urllib.parse import quote

from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure

from mxtwisted.events.event import Event
from mxtwisted.events.room_versions import RoomVersion
from mxtwisted.federation.pdu_checks import PduCheckError, auth_order, check_against_auth_events, check_pdu
from mxtwisted.federation.room_acl import DENIED, origin_allowed
from mxtwisted.federation.server_visibility import server_of
from mxtwisted.http.errors import Codes, MatrixError
from mxtwisted.rooms.engine import RoomCache, RoomEngine
from mxtwisted.rooms.room_state import StateUnknown
from mxtwisted.storage.database import DatabaseClosedError
from mxtwisted.storage.events import StateMap, StoredEvent

log = Logger()

MAX_PDUS = 50
MAX_EDUS = 100
#: Answers kept for repeated transactions.
TXN_CACHE_SIZE = 1000
#: get_missing_events rounds per PDU, and events asked per round.
MISSING_EVENTS_ROUNDS = 3
MISSING_EVENTS_LIMIT = 10


class PduError(Exception):
    """A PDU was refused (its message goes into the ``pdus`` map)."""


class TransactionReceiver:
    """``keyring``: ``await verify_json_for_server(server, obj, minimum_valid_until_ts=ms)``;
    ``client``: ``post_json(destination, path, body)`` for ``/get_missing_events`` (None: never asks)."""

    def __init__(self, engine: RoomEngine, keyring: Any, client: Any = None) -> None:
        self.engine = engine
        self.store = engine.store
        self.server_name = engine.server_name
        self.keyring = keyring
        self.client = client
        #: ``await edu_handler(origin, edu)`` for each EDU of a transaction (mxtwisted.federation.edus);
        #: None: EDUs are acknowledged and dropped. Its errors are logged, never answered.
        self.edu_handler: Optional[Callable[[str, dict[str, Any]], Awaitable[None]]] = None
        self._answers: OrderedDict[tuple[str, str], defer.Deferred] = OrderedDict()

    # -- transactions ----------------------------------------------------------------------------
    async def on_transaction(self, origin: str, txn_id: str, body: dict[str, Any]) -> dict[str, Any]:
        """The answer to a transaction (``{"pdus": {event_id: {} | {"error": ...}}}``)."""
        pdus = body.get("pdus")
        edus = body.get("edus", [])
        if not isinstance(pdus, list):
            raise MatrixError(400, Codes.BAD_JSON, "'pdus' must be a list")
        if edus is None:
            edus = []
        if not isinstance(edus, list):
            raise MatrixError(400, Codes.BAD_JSON, "'edus' must be a list")
        if len(pdus) > MAX_PDUS or len(edus) > MAX_EDUS:
            raise MatrixError(
                400, Codes.BAD_JSON, f"A transaction holds at most {MAX_PDUS} PDUs and {MAX_EDUS} EDUs"
            )
        key = (origin, txn_id)
        known = self._answers.get(key)
        if known is not None:
            self._answers.move_to_end(key)
            return await _shared(known)
        d = defer.ensureDeferred(self._process(origin, pdus, edus))
        self._answers[key] = d

        def forget(failure: Any) -> Any:
            # Not answered: the origin may send it again and have it processed.
            self._answers.pop(key, None)
            return failure

        d.addErrback(forget)
        while len(self._answers) > TXN_CACHE_SIZE:
            self._answers.popitem(last=False)
        return await _shared(d)

    async def _process(self, origin: str, pdus: list[Any], edus: list[Any]) -> dict[str, Any]:
        by_room: dict[str, list[dict[str, Any]]] = {}
        for pdu in pdus:
            if isinstance(pdu, dict) and isinstance(pdu.get("room_id"), str):
                by_room.setdefault(pdu["room_id"], []).append(pdu)
            else:
                log.info("Dropping a PDU without a room from {origin}", origin=origin)
        results: dict[str, dict[str, Any]] = {}
        try:
            await defer.gatherResults(
                [
                    defer.ensureDeferred(self._process_room(origin, room_id, room_pdus, results))
                    for room_id, room_pdus in by_room.items()
                ],
                consumeErrors=True,
            )
        except defer.FirstError as e:
            e.subFailure.raiseException()  # the transaction fails with the error itself (a closed database)
        await self._process_edus(origin, edus)
        return {"pdus": results}

    async def _process_edus(self, origin: str, edus: list[Any]) -> None:
        """EDUs after the PDUs (a receipt may name an event of the same transaction); each on its own:
        a bad EDU is logged and dropped, it never fails the transaction."""
        if self.edu_handler is None:
            return
        for edu in edus:
            if not isinstance(edu, dict) or not isinstance(edu.get("edu_type"), str):
                continue
            try:
                await self.edu_handler(origin, edu)
            except Exception:
                log.failure("Handling a {edu_type} EDU from {origin} failed", edu_type=edu.get("edu_type"), origin=origin)

    async def _process_room(self, origin: str, room_id: str, pdus: list[dict[str, Any]], results: dict[str, Any]) -> None:
        try:
            room = await self.engine.get_room_cache(room_id)
        except MatrixError:
            room = None
        for pdu in pdus:
            if room is None:
                event_id = _guess_event_id(pdu)
                if event_id is not None:
                    results[event_id] = {"error": "Unknown room"}
                continue
            try:
                event_id = Event(pdu, room.version).event_id
            except Exception:
                log.info("Dropping an unreadable PDU from {origin}", origin=origin)
                continue
            try:
                await self.handle_pdu(origin, room, pdu, event_id)
                results[event_id] = {}
            except PduError as e:
                results[event_id] = {"error": str(e)}
            except MatrixError as e:
                results[event_id] = {"error": e.message}
            except DatabaseClosedError:
                # Not the PDU's fault: the whole transaction fails (5xx), so the origin sends it again.
                raise
            except Exception as e:
                log.failure("Handling {event_id} from {origin} failed", event_id=event_id, origin=origin)
                results[event_id] = {"error": f"Internal error: {type(e).__name__}"}

    # -- one PDU ------------------------------------------------------------------------------------------
    async def handle_pdu(self, origin: str, room: RoomCache, pdu: dict[str, Any], event_id: str) -> None:
        if not await origin_allowed(self.engine, room, origin):
            raise PduError(DENIED)  # spec: ACLs apply per PDU, an error entry for its event ID
        if _settled(await self.store.get_event(event_id)):
            return
        pdu = await self._checked(pdu, room.version)
        ev = Event(pdu, room.version)
        missing = await self._missing_prevs(ev)
        if missing:
            await self._fetch_missing(origin, room, ev)
        await self._persist(origin, room, pdu)

    async def _persist(self, origin: str, room: RoomCache, pdu: dict[str, Any]) -> None:
        """Persist a checked PDU (spec checks 4-6 are the engine's). What it needs first is fetched from
        ``origin``: its auth events (``/event_auth``), and, for prev_events we do not have or whose state we
        do not know (we were too far behind for ``/get_missing_events``), the state at each (``/state``)."""
        ev = Event(pdu, room.version)
        await self._fetch_auth_events(origin, room, ev)
        missing = sorted(await self._missing_prevs(ev))
        try:
            for prev_id in missing:
                await self._fetch_state_at(origin, room, prev_id)
        except PduError as e:
            raise PduError(f"Missing prev_events: {', '.join(missing)} ({e})") from None
        try:
            # The sender's server signed it (checked); it may be another server than the origin.
            await self.engine.persist_remote_event(pdu, server_of(pdu.get("sender") or ""), from_transaction=True)
        except StateUnknown as e:
            for prev_id in e.event_ids:
                await self._fetch_state_at(origin, room, prev_id)
            try:
                await self.engine.persist_remote_event(pdu, server_of(pdu.get("sender") or ""), from_transaction=True)
            except StateUnknown as again:
                raise PduError(str(again)) from None

    # -- fetching what an event needs ---------------------------------------------------------------
    async def _fetch_auth_events(self, origin: str, room: RoomCache, ev: Event) -> None:
        """Spec: an event whose auth events are unknown here gets them from ``GET /event_auth``."""
        known = await self.store.get_events(ev.auth_event_ids)
        if all(a in known for a in ev.auth_event_ids) or self.client is None:
            return
        path = f"/_matrix/federation/v1/event_auth/{quote(room.room_id, safe='')}/{quote(ev.event_id, safe='')}"
        response = await self._fetch(origin, path)
        chain = response.get("auth_chain") if isinstance(response, dict) else None
        if isinstance(chain, list):
            await self._store_fetched(room, chain)

    async def _fetch_state_at(self, origin: str, room: RoomCache, event_id: str) -> None:
        """Learn the state after ``event_id`` from ``origin``: ``GET /state?event_id=`` (the state before it,
        with the auth chain) and, if we do not have it, the event itself (``GET /event``); all checked and
        stored as outliers, the event with the state after it."""
        if self.client is None:
            raise PduError(f"Missing prev_event {event_id}")
        room_part = quote(room.room_id, safe="")
        response = await self._fetch(origin, f"/_matrix/federation/v1/state/{room_part}", {"event_id": event_id})
        state_pdus = response.get("pdus") if isinstance(response, dict) else None
        chain = response.get("auth_chain") if isinstance(response, dict) else None
        if not isinstance(state_pdus, list) or not isinstance(chain, list):
            raise PduError(f"{origin} gave no state at {event_id}")
        stored = await self.store.get_events([event_id])
        raw_event: list[Any] = []
        if event_id not in stored:
            answer = await self._fetch(origin, f"/_matrix/federation/v1/event/{quote(event_id, safe='')}")
            pdus = answer.get("pdus") if isinstance(answer, dict) else None
            if not isinstance(pdus, list) or len(pdus) != 1:
                raise PduError(f"{origin} did not give event {event_id}")
            raw_event = pdus
        events = await self._store_fetched(room, [*chain, *state_pdus], extra=raw_event)
        state: StateMap = {}
        for raw in state_pdus:
            if not isinstance(raw, dict):
                continue
            state_ev = events.get(Event(raw, room.version).event_id)
            if state_ev is None or state_ev.state_key is None:
                raise PduError(f"{origin} gave a bad state at {event_id}")
            if state_ev.rejected_reason is None:
                state[(state_ev.type, state_ev.state_key)] = state_ev.event_id
        target = events.get(event_id)
        if target is None:
            objects = await self.engine.get_event_objects([event_id], room.version)
            target = objects.get(event_id)
        if target is None:
            raise PduError(f"{origin} did not give event {event_id}")
        await self.engine.persist_with_state(target, state)

    async def _store_fetched(self, room: RoomCache, raws: list[Any], extra: list[Any] = ()) -> dict[str, Event]:
        return await store_fetched_events(self.engine, self.keyring, room, raws, extra)

    async def _fetch(self, origin: str, path: str, args: Optional[dict[str, Any]] = None) -> Any:
        try:
            return await self.client.get_json(origin, path, args)
        except defer.CancelledError:
            raise
        except Exception as e:
            raise PduError(f"Fetching {path} from {origin} failed: {e}") from None

    async def _missing_prevs(self, ev: Event) -> set[str]:
        known = await self.store.get_events(ev.prev_event_ids)
        return set(ev.prev_event_ids) - set(known)

    async def _checked(self, pdu: dict[str, Any], version: RoomVersion) -> dict[str, Any]:
        """The PDU to use (redacted when its content hash does not match) once its format and every required
        signature check out (:func:`~mxtwisted.federation.pdu_checks.check_pdu`). Raises PduError."""
        try:
            return (await check_pdu(self.keyring, pdu, version)).get_dict()
        except PduCheckError as e:
            raise PduError(str(e)) from None

    async def _fetch_missing(self, origin: str, room: RoomCache, ev: Event) -> None:
        """Ask ``origin`` for the events between what we know (the room's forward extremities) and ``ev``,
        and persist those whose prev_events are known, oldest first; a few rounds at most (each round asks
        for the ancestors of the events still waiting)."""
        if self.client is None:
            return
        extremities = await self.engine.get_event_objects(room.extremities, room.version)
        min_depth = min((e.depth for e in extremities.values()), default=0)
        waiting: dict[str, dict[str, Any]] = {}
        refused: set[str] = set()
        path = f"/_matrix/federation/v1/get_missing_events/{quote(room.room_id, safe='')}"
        for _ in range(MISSING_EVENTS_ROUNDS):
            body = {
                "earliest_events": list(room.extremities),
                "latest_events": [ev.event_id, *waiting],
                "limit": MISSING_EVENTS_LIMIT,
                "min_depth": min_depth,
            }
            try:
                response = await self.client.post_json(origin, path, body)
            except defer.CancelledError:
                raise
            except Exception as e:
                log.info("get_missing_events from {origin} failed: {error}", origin=origin, error=e)
                return
            events = response.get("events") if isinstance(response, dict) else None
            if not isinstance(events, list) or not events:
                return
            # No more than asked for: each one costs signature checks and possibly more requests.
            events = events[:MISSING_EVENTS_LIMIT]
            for missing in events:
                if not isinstance(missing, dict) or missing.get("room_id") != room.room_id:
                    continue
                try:
                    missing_id = Event(missing, room.version).event_id
                except Exception:
                    continue
                if missing_id in waiting or missing_id in refused or _settled(await self.store.get_event(missing_id)):
                    continue
                try:
                    waiting[missing_id] = await self._checked(missing, room.version)
                except PduError as e:
                    refused.add(missing_id)
                    log.info("Missing event {event_id} refused: {error}", event_id=missing_id, error=e)
            # Persist what can be, oldest first, until nothing more can.
            progress = True
            while progress:
                progress = False
                for missing_id, checked in sorted(waiting.items(), key=lambda item: item[1].get("depth", 0)):
                    if await self._missing_prevs(Event(checked, room.version)):
                        continue
                    del waiting[missing_id]
                    try:
                        await self._persist(origin, room, checked)
                        progress = True
                    except (MatrixError, PduError) as e:
                        refused.add(missing_id)
                        log.info("Missing event {event_id} refused: {error}", event_id=missing_id, error=e.message)
            if not await self._missing_prevs(ev) or not waiting:
                return


async def store_fetched_events(
    engine: RoomEngine, keyring: Any, room: RoomCache, raws: list[Any], extra: list[Any] = ()
) -> dict[str, Event]:
    """Check PDUs fetched from another server (format, room, signatures, hashes: bad ones are dropped), check
    each against its auth events in auth order (rejected ones are marked), and store the new ones as outliers
    except ``extra`` (returned checked, not stored). Returns every checked event by ID, the ones we already
    had included (as stored). Used for gaps, missing auth events and the full state of a partial join."""
    version = room.version
    fetched: dict[str, dict[str, Any]] = {}
    for raw in [*raws, *extra]:
        try:
            if not isinstance(raw, dict) or Event(raw, version).room_id != room.room_id:
                continue
        except Exception:
            continue
        try:
            fetched[Event(raw, version).event_id] = (await check_pdu(keyring, raw, version)).get_dict()
        except PduCheckError as e:
            log.info("Dropping a fetched event: {error}", error=e)
    known = await engine.get_event_objects(fetched, version)
    events: dict[str, Event] = dict(known)
    for event_id, checked in fetched.items():
        events.setdefault(event_id, Event(checked, version))
    # Auth events outside the answer that we have (and the room's create event): needed to check the new.
    create_id = room.state.get(("m.room.create", ""))
    wanted = {a for ev in events.values() for a in ev.auth_event_ids} | {create_id} - {None}
    known.update(await engine.get_event_objects(wanted - set(events), version))
    events.update(known)
    new = [ev for ev in auth_order(events, version, room.room_id) if ev.event_id not in known]
    for ev in new:
        if create_id is not None and create_id in events:
            check_against_auth_events(ev, events, create_id)
        else:
            ev.rejected_reason = "the room's create event is unknown"
    extra_ids = {Event(raw, version).event_id for raw in extra if isinstance(raw, dict)}
    await engine.persist_outliers(room.room_id, [ev for ev in new if ev.event_id not in extra_ids])
    return events


def _settled(stored: Optional[StoredEvent]) -> bool:
    """Whether a received event needs no more work: stored in the timeline, or rejected. One known only as
    an outlier (an auth or state event fetched earlier, a soft-failed one) is checked again and may take
    its place in the timeline."""
    return stored is not None and (not stored.outlier or stored.rejected_reason is not None)


def _guess_event_id(pdu: dict[str, Any]) -> Optional[str]:
    """The event ID of a PDU of an unknown room, for the error entry: only known when it carries one
    (rooms v1/v2)."""
    event_id = pdu.get("event_id")
    return event_id if isinstance(event_id, str) else None


async def _shared(d: defer.Deferred) -> Any:
    """Await a Deferred that several callers share, without taking its result from the others."""
    waiter: defer.Deferred = defer.Deferred()

    def relay(result: Any) -> Any:
        if isinstance(result, Failure):
            waiter.errback(result)
            return None
        waiter.callback(result)
        return result

    d.addBoth(relay)
    return await waiter
