"""Sending our events to other servers: one queue per destination, transactions, backoff, catch-up.

Spec: Server-Server API, "Transactions" (``PUT /_matrix/federation/v1/send/{txnId}``). Each new event of a
local user goes to every other server with a joined member in its room (and, for a membership event, to the
server of its target). A destination has at most one transaction in flight; a transaction carries at most
:data:`MAX_PDUS` PDUs and :data:`MAX_EDUS` EDUs; its ID is unique per destination (the sender's start time
and a counter, so IDs are not reused after a restart). When a transaction fails the destination is retried
after :data:`MIN_RETRY` seconds, doubling up to :data:`MAX_RETRY`; the queue keeps growing meanwhile (past
:data:`MAX_PENDING` events it is dropped and read back from the database when the destination returns).

Nothing is lost on a restart: table ``federation_destinations`` keeps, per destination, the stream ordering
up to which every event was delivered; at start-up each known destination is sent the local events after
it, in the rooms it shares with us now (:meth:`FederationQueueStore.get_catch_up_events`).
"""

from __future__ import annotations

import itertools
from typing import Any, Callable, Optional

from twisted.application.service import Service
from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure

from mxtwisted.events.event import Event
from mxtwisted.federation.server_visibility import pdu_json, server_of

log = Logger()

SEND_PATH = "/_matrix/federation/v1/send/"
MAX_PDUS = 50
MAX_EDUS = 100
#: First retry delay after a failure, and the most it doubles to (seconds).
MIN_RETRY = 5.0
MAX_RETRY = 3600.0
#: Past this many events waiting in memory for one destination, they are dropped and read back from the
#: database (catch-up) when the destination answers again.
MAX_PENDING = 1000


class DestinationQueue:
    """What is waiting for one destination."""

    def __init__(self, destination: str) -> None:
        self.destination = destination
        #: stream ordering → PDU, for events that arrived while running.
        self.pending: dict[int, dict[str, Any]] = {}
        self.edus: list[dict[str, Any]] = []
        #: Every event for this destination up to here has been delivered (None: not loaded yet).
        self.position: Optional[int] = None
        #: Read the events after ``position`` from the database before the pending ones.
        self.catching_up = False
        #: Stream orderings sent by the current catch-up (dropped from ``pending`` when it ends).
        self.caught_up: set[int] = set()
        #: The Deferred of the running send loop (at most one per destination).
        self.loop: Optional[defer.Deferred] = None
        #: Current backoff (seconds, 0 when the destination answers) and the call retrying it.
        self.retry_interval = 0.0
        self.retry_call: Any = None
        #: The transaction request in flight.
        self.request: Optional[defer.Deferred] = None


class FederationSender(Service):
    """``client``: ``put_json(destination, path, body)`` (the signed FederationClient); ``store``:
    :class:`~mxtwisted.storage.federation_queue.FederationQueueStore`; ``events``: the EventStore (its
    ``get_members`` and ``stream``)."""

    def __init__(self, clock: Any, server_name: str, client: Any, store: Any, events: Any) -> None:
        self._clock = clock
        self.server_name = server_name
        self.client = client
        self._store = store
        self._events = events
        self._queues: dict[str, DestinationQueue] = {}
        self._txn_prefix = str(int(clock.seconds() * 1000))
        self._txn_counter = itertools.count(1)
        self._stopping = False
        self._loading: Optional[defer.Deferred] = None
        #: ``extra_destinations(room_id)``: servers to send a room's events to besides those of its known
        #: members (the resident servers of a room joined with partial state).
        self.extra_destinations: Optional[Callable[[str], list[str]]] = None

    # -- service ---------------------------------------------------------------------------
    def startService(self) -> None:
        super().startService()
        self._stopping = False
        self._loading = defer.ensureDeferred(self._load())
        self._loading.addErrback(
            lambda f: None if f.check(defer.CancelledError) else log.failure("Loading the federation queues failed", f)
        )

    async def _load(self) -> None:
        """Resume every known destination from its stored position (catch-up)."""
        for destination, row in (await self._store.get_destinations()).items():
            if self._stopping:
                return
            queue = self._queue(destination)
            queue.position = row.last_sent_stream_ordering
            queue.catching_up = True
            self._kick(queue)

    def stopService(self) -> defer.Deferred:
        super().stopService()
        self._stopping = True
        loops = []
        for queue in self._queues.values():
            if queue.retry_call is not None and queue.retry_call.active():
                queue.retry_call.cancel()
            queue.retry_call = None
            if queue.loop is not None:
                loops.append(queue.loop)
            if queue.request is not None:
                # Not acknowledged: the position did not move, so it is resent after the restart.
                queue.request.cancel()
        if self._loading is not None:
            loops.append(self._loading)
        # Database work in progress finishes (cancelling it would upset the driver).
        return defer.DeferredList(loops, consumeErrors=True)

    # -- input ------------------------------------------------------------------------------
    def on_new_event(self, event: Event, stream_ordering: int) -> Optional[defer.Deferred]:
        """RoomEngine listener: queue a local event for the servers in its room."""
        if self._stopping or event.rejected_reason is not None or server_of(event.sender) != self.server_name:
            return None
        return defer.ensureDeferred(self._enqueue_event(event, stream_ordering))

    async def _enqueue_event(self, event: Event, stream_ordering: int) -> None:
        members = await self._events.get_members(event.room_id, ("join",))
        destinations = {server_of(user) for user in members}
        if self.extra_destinations is not None:
            destinations.update(self.extra_destinations(event.room_id))
        if event.type == "m.room.member" and event.state_key:
            # A kicked, banned or invited user's server hears about it too.
            destinations.add(server_of(event.state_key))
        destinations.discard(self.server_name)
        destinations.discard("")
        pdu = event.get_pdu_json()
        for destination in sorted(destinations):
            self.send_pdu(destination, pdu, stream_ordering)

    def send_pdu(self, destination: str, pdu: dict[str, Any], stream_ordering: int) -> None:
        if destination == self.server_name:
            return
        queue = self._queue(destination)
        if queue.position is not None and stream_ordering <= queue.position and queue.catching_up:
            return  # the catch-up reads it from the database
        queue.pending[stream_ordering] = pdu
        if len(queue.pending) > MAX_PENDING and queue.position is not None:
            log.info("Federation queue for {dest} is too long: catching up from the database", dest=destination)
            queue.pending.clear()
            queue.catching_up = True
        self._kick(queue)

    def send_edu(self, destination: str, edu_type: str, content: dict[str, Any]) -> None:
        """Queue an EDU (not persisted: lost on a restart, as typing notifications may be)."""
        if destination == self.server_name:
            return
        queue = self._queue(destination)
        queue.edus.append({"edu_type": edu_type, "content": content})
        self._kick(queue)

    # -- sending ----------------------------------------------------------------------------
    def _queue(self, destination: str) -> DestinationQueue:
        queue = self._queues.get(destination)
        if queue is None:
            queue = self._queues[destination] = DestinationQueue(destination)
        return queue

    def _kick(self, queue: DestinationQueue) -> None:
        """Start the send loop of ``queue`` unless it runs or waits for a retry."""
        if self._stopping or queue.loop is not None or queue.retry_call is not None:
            return
        queue.loop = defer.ensureDeferred(self._run(queue))

        def done(result: Any) -> None:
            queue.loop = None
            if isinstance(result, Failure) and not result.check(defer.CancelledError):
                log.failure("Federation sender for {dest} failed", result, dest=queue.destination)
                # E.g. the database failed while storing the position: what is pending must not wait for
                # the next event to be sent; try again later.
                self._back_off(queue, result.value)

        queue.loop.addBoth(done)

    def _new_txn_id(self) -> str:
        return f"{self._txn_prefix}.{next(self._txn_counter)}"

    async def _run(self, queue: DestinationQueue) -> None:
        destination = queue.destination
        if queue.position is None:
            row = await self._store.get_destination(destination)
            if row is not None:
                queue.position = row.last_sent_stream_ordering
                queue.catching_up = True
            else:
                start = min(queue.pending) - 1 if queue.pending else self._events.stream.current
                await self._store.add_destination(destination, start)
                queue.position = start
        while not self._stopping:
            upto = self._events.stream.current
            if queue.catching_up:
                stored, reached = await self._store.get_catch_up_events(
                    destination, self.server_name, queue.position, upto, MAX_PDUS
                )
                batch = [(e.stream_ordering, pdu_json(e)) for e in stored]
                if not batch:
                    queue.catching_up = False
                    # Pending events the catch-up already sent.
                    for so in queue.caught_up:
                        queue.pending.pop(so, None)
                    queue.caught_up.clear()
                    await self._advance(queue, max(queue.position, reached))
                    continue
                queue.caught_up.update(so for so, _ in batch)
            else:
                batch = sorted(queue.pending.items())[:MAX_PDUS]
                reached = batch[-1][0] if batch else queue.position
            edus = queue.edus[:MAX_EDUS]
            if not batch and not edus:
                return
            if not await self._send_transaction(queue, [pdu for _, pdu in batch], edus):
                return
            del queue.edus[: len(edus)]
            if not queue.catching_up:
                for so, _ in batch:
                    queue.pending.pop(so, None)
            if batch:
                await self._advance(queue, reached)

    async def _advance(self, queue: DestinationQueue, position: int) -> None:
        # Events still pending (a lower stream ordering may arrive late) keep the position below them.
        if queue.pending and not queue.catching_up:
            position = min(position, min(queue.pending) - 1)
        position = min(position, self._events.stream.current)
        if position != queue.position:
            queue.position = position
            await self._store.set_position(queue.destination, position)

    async def _send_transaction(
        self, queue: DestinationQueue, pdus: list[dict[str, Any]], edus: list[dict[str, Any]]
    ) -> bool:
        """Send one transaction; True when the destination accepted it (then backoff ends)."""
        from mxtwisted.federation.client import FederationDeniedError

        destination = queue.destination
        txn_id = self._new_txn_id()
        body = {
            "origin": self.server_name,
            "origin_server_ts": int(self._clock.seconds() * 1000),
            "pdus": pdus,
        }
        if edus:
            body["edus"] = edus
        try:
            queue.request = defer.ensureDeferred(self.client.put_json(destination, SEND_PATH + txn_id, body))
            response = await queue.request
        except defer.CancelledError:
            raise
        except FederationDeniedError:
            log.info("Not sending to {dest}: not in federation_domain_whitelist", dest=destination)
            queue.pending.clear()
            queue.edus.clear()
            queue.catching_up = False
            return False
        except Exception as e:
            self._back_off(queue, e)
            return False
        finally:
            queue.request = None
        if isinstance(response, dict) and isinstance(response.get("pdus"), dict):
            for event_id, result in response["pdus"].items():
                if isinstance(result, dict) and result.get("error"):
                    # The destination will not take this PDU; resending would not help (spec).
                    log.warn("{dest} refused {event_id}: {error}", dest=destination, event_id=event_id, error=result["error"])
        if queue.retry_interval:
            log.info("{dest} is reachable again", dest=destination)
            queue.retry_interval = 0.0
            await self._store.set_retry(destination, 0, 0)
        return True

    def _back_off(self, queue: DestinationQueue, error: Exception) -> None:
        if self._stopping:
            return  # the request failed because the server stops: no retry timer outlives the service
        queue.retry_interval = min(MAX_RETRY, queue.retry_interval * 2) if queue.retry_interval else MIN_RETRY
        log.info(
            "Sending to {dest} failed ({error}); retrying in {delay}s", dest=queue.destination, error=error,
            delay=queue.retry_interval,
        )
        now_ms = int(self._clock.seconds() * 1000)
        d = defer.ensureDeferred(self._store.set_retry(queue.destination, now_ms, int(queue.retry_interval * 1000)))
        d.addErrback(lambda f: log.failure("Storing the retry state failed", f))

        def retry() -> None:
            queue.retry_call = None
            self._kick(queue)

        queue.retry_call = self._clock.callLater(queue.retry_interval, retry)

    # -- inspection (tests, admin) ----------------------------------------------------------------
    def queue_state(self, destination: str) -> Optional[DestinationQueue]:
        return self._queues.get(destination)
