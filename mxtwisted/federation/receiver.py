"""Receiving transactions from other servers (``PUT /_matrix/federation/v1/send/{txnId}``).

Spec: Server-Server API, "Transactions" and "Checks performed on receipt of a PDU". A transaction holds at
most :data:`MAX_PDUS` PDUs and :data:`MAX_EDUS` EDUs (400 otherwise). The answer to a transaction is kept
per (origin, txnId): the same transaction sent again gets the same answer without being processed again.
The PDUs of one room are handled in the order they came, different rooms concurrently. Each PDU gets an
entry in the answer's ``pdus`` map: ``{}`` when it was accepted (or was already known), ``{"error": ...}``
when it was refused; a bad PDU never fails the whole transaction.

For each PDU: the room must be known here and the origin must have a joined member in it; the event ID is
computed per the room version; a content hash that does not match makes us use the redacted event (spec);
the signatures of every server that must sign it are checked through the keyring; when its prev_events are
not known, the missing ones are asked from the origin with ``POST /get_missing_events`` (a few rounds at
most) and handled first; then :meth:`RoomEngine.persist_remote_event` checks its format, its auth events and
the auth rules (against its own auth events and the current state) and persists it.

EDUs (typing, receipts, presence, to-device, device lists) are acknowledged and ignored for now.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, Optional
from urllib.parse import quote

from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure

from mxtwisted.events.event import Event
from mxtwisted.events.hashing import ContentHashError, check_content_hash
from mxtwisted.events.redaction import redact_event
from mxtwisted.events.room_versions import RoomVersion
from mxtwisted.events.signing import SignatureVerifyError, required_signers
from mxtwisted.federation.server_visibility import server_of
from mxtwisted.http.errors import Codes, MatrixError
from mxtwisted.rooms.engine import RoomCache, RoomEngine

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
        d = defer.ensureDeferred(self._process(origin, pdus))
        self._answers[key] = d

        def forget(failure: Any) -> Any:
            # Not answered: the origin may send it again and have it processed.
            self._answers.pop(key, None)
            return failure

        d.addErrback(forget)
        while len(self._answers) > TXN_CACHE_SIZE:
            self._answers.popitem(last=False)
        return await _shared(d)

    async def _process(self, origin: str, pdus: list[Any]) -> dict[str, Any]:
        by_room: dict[str, list[dict[str, Any]]] = {}
        for pdu in pdus:
            if isinstance(pdu, dict) and isinstance(pdu.get("room_id"), str):
                by_room.setdefault(pdu["room_id"], []).append(pdu)
            else:
                log.info("Dropping a PDU without a room from {origin}", origin=origin)
        results: dict[str, dict[str, Any]] = {}
        await defer.gatherResults(
            [defer.ensureDeferred(self._process_room(origin, room_id, room_pdus, results)) for room_id, room_pdus in by_room.items()],
            consumeErrors=True,
        )
        return {"pdus": results}

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
            except Exception as e:
                log.failure("Handling {event_id} from {origin} failed", event_id=event_id, origin=origin)
                results[event_id] = {"error": f"Internal error: {type(e).__name__}"}

    # -- one PDU ------------------------------------------------------------------------------------------
    async def handle_pdu(self, origin: str, room: RoomCache, pdu: dict[str, Any], event_id: str) -> None:
        if await self.store.get_event(event_id) is not None:
            return
        members = await self.store.get_members(room.room_id, ("join",))
        if not any(server_of(user) == origin for user in members):
            raise PduError("Your server has no user in this room")
        pdu = await self._checked(pdu, room.version)
        ev = Event(pdu, room.version)
        missing = await self._missing_prevs(ev)
        if missing:
            await self._fetch_missing(origin, room, ev)
            missing = await self._missing_prevs(ev)
            if missing:
                raise PduError(f"Missing prev_events: {', '.join(sorted(missing))}")
        await self._persist(pdu)

    async def _persist(self, pdu: dict[str, Any]) -> None:
        # The sender's server signed it (checked above); it may be another server than the origin.
        await self.engine.persist_remote_event(pdu, server_of(pdu.get("sender") or ""))

    async def _missing_prevs(self, ev: Event) -> set[str]:
        known = await self.store.get_events(ev.prev_event_ids)
        return set(ev.prev_event_ids) - set(known)

    async def _checked(self, pdu: dict[str, Any], version: RoomVersion) -> dict[str, Any]:
        """Spec "Validating hashes and signatures on received events": the event to use (redacted when its
        content hash does not match) once every required signature verifies. Raises PduError."""
        try:
            if not check_content_hash(pdu):
                log.info("Content hash mismatch: using the redacted event")
                pdu = redact_event(pdu, version)
        except ContentHashError as e:
            raise PduError(f"Invalid event: {e}") from None
        if self.keyring is None:
            raise PduError("This server cannot verify signatures")
        try:
            signers = required_signers(pdu, version)
        except SignatureVerifyError as e:
            raise PduError(str(e)) from None
        redacted = redact_event(pdu, version)
        signatures = redacted.get("signatures")
        ts = pdu.get("origin_server_ts")
        minimum = ts if version.enforce_key_validity and isinstance(ts, int) else 0
        for server in sorted(signers):
            theirs = signatures.get(server) if isinstance(signatures, dict) else None
            if not isinstance(theirs, dict) or not theirs:
                raise PduError(f"The event is not signed by {server}")
            try:
                await self.keyring.verify_json_for_server(
                    server, dict(redacted, signatures={server: theirs}), minimum_valid_until_ts=minimum
                )
            except SignatureVerifyError as e:
                raise PduError(f"Invalid signature of {server}: {e}") from None
        return pdu

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
            for missing in events:
                if not isinstance(missing, dict) or missing.get("room_id") != room.room_id:
                    continue
                try:
                    missing_id = Event(missing, room.version).event_id
                except Exception:
                    continue
                if missing_id in waiting or missing_id in refused or await self.store.get_event(missing_id) is not None:
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
                        await self._persist(checked)
                        progress = True
                    except MatrixError as e:
                        refused.add(missing_id)
                        log.info("Missing event {event_id} refused: {error}", event_id=missing_id, error=e.message)
            if not await self._missing_prevs(ev) or not waiting:
                return


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
