"""Room life between a real Synapse and matrixhs: state changes and power levels both ways, kicks and bans
across servers, and filling the gap left while one of the two servers was down.

Needs ``MATRIXHS_SYNAPSE_PYTHON`` (see ``tests.interop.synapse_peer``); skipped otherwise. Both servers run on
loopback with real federation (HTTPS with the test CA); every action goes through the client APIs of both
servers, so each check proves that the other server accepted (authorised) the event it received.
"""

from __future__ import annotations

from typing import Any, Awaitable, Callable, Optional
from urllib.parse import quote

from twisted.internet import reactor
from twisted.internet.task import deferLater
from twisted.trial import unittest

from mxtwisted.federation import sender as sender_module
from mxtwisted.service import make_homeserver
from tests.interop import test_synapse as base
from tests.support.homeserver import RunningHomeserver

V3 = base.V3

#: How long a missing stretch of history may take to be filled in after a restart (seconds).
GAP_WAIT = 60.0

Call = Callable[..., Awaitable[Any]]


def doing(call: Call, method: str, path: str, body: Any = None) -> Callable[[], Awaitable[Any]]:
    """A request to make later (the action of ``sees_state`` and ``leaves_in_sync``)."""
    return lambda: call(method, path, body)


class SynapseScenarioTests(unittest.TestCase):
    timeout = 300
    # The Synapse and matrixhs set-up and helpers of the interop tests (through their module, so that trial
    # does not run those tests a second time from here).
    setUp = base.SynapseInteropTests.setUp
    on_ours = base.SynapseInteropTests.on_ours
    on_synapse = base.SynapseInteropTests.on_synapse
    eventually = base.SynapseInteropTests.eventually
    wait_for_message = base.SynapseInteropTests.wait_for_message
    send = base.SynapseInteropTests.send
    joined_members = base.SynapseInteropTests.joined_members

    # -- helpers ------------------------------------------------------------------------------------
    async def raw_ours(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        """A client request of Mia's to matrixhs, whatever the status."""
        return await self.ours.request(method, V3 + path, body, token=self.mia["access_token"])

    async def raw_synapse(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        """A client request of Sally's to Synapse, whatever the status."""
        return await self.synapse.request(method, V3 + path, body, token=self.sally["access_token"])

    async def eventually_long(self, check: Callable[[], Awaitable[Optional[Any]]], what: str,
                              wait: float = GAP_WAIT) -> Any:
        deadline = reactor.seconds() + wait
        while True:
            result = await check()
            if result is not None:
                return result
            if reactor.seconds() > deadline:
                self.fail(f"timed out after {wait}s waiting for {what}\n{self.synapse.tail(80)}")
            await deferLater(reactor, 0.5, lambda: None)

    async def synapse_room(self, **body: Any) -> str:
        """A public room of Sally's (on Synapse) that Mia (matrixhs) joined."""
        body.setdefault("preset", "public_chat")
        room_id = (await self.on_synapse("POST", "/createRoom", body))["room_id"]
        await self.on_ours("POST", f"/join/{quote(room_id)}?server_name={quote(self.syn_name)}", {})
        both = {self.mia["user_id"], self.sally["user_id"]}
        await self.joined_members(self.on_synapse, room_id, both)
        await self.joined_members(self.on_ours, room_id, both)
        return room_id

    async def our_room(self, **body: Any) -> str:
        """A public room of Mia's (on matrixhs) that Sally (Synapse) joined."""
        body.setdefault("preset", "public_chat")
        room_id = (await self.on_ours("POST", "/createRoom", body))["room_id"]
        await self.on_synapse("POST", f"/join/{quote(room_id)}?server_name={quote(self.ours_name)}", {})
        both = {self.mia["user_id"], self.sally["user_id"]}
        await self.joined_members(self.on_ours, room_id, both)
        await self.joined_members(self.on_synapse, room_id, both)
        return room_id

    async def sync_poller(
        self, call: Call, check: Callable[[dict], Any]
    ) -> Callable[[], Awaitable[Any]]:
        """A poll for ``eventually``: one incremental /sync on one side (from now on, then from the last
        answer), giving ``check(response)``. As ``SynapseEduTests.sync_poller``, except that "now" comes from
        an incremental /sync continuing the previous poll on the same side, not from a new full /sync: Synapse
        answers a repeated identical /sync from its cache (``sync_response_cache_duration``, 2 minutes), so a
        second full /sync would give an old ``next_batch``."""
        tokens = self.__dict__.setdefault("_sync_tokens", {})
        side = call.__name__
        since = tokens.get(side)
        path = "/sync" if since is None else f"/sync?timeout=0&since={quote(since)}"
        tokens[side] = (await call("GET", path))["next_batch"]

        async def poll() -> Any:
            sync = await call("GET", f"/sync?timeout=500&since={quote(tokens[side])}")
            tokens[side] = sync["next_batch"]
            return check(sync)

        return poll

    @staticmethod
    def room_events(sync: dict, section: str, room_id: str) -> list[dict]:
        """The state and timeline events of ``room_id`` under ``rooms.<section>`` of a /sync response."""
        room = sync.get("rooms", {}).get(section, {}).get(room_id, {})
        return room.get("state", {}).get("events", []) + room.get("timeline", {}).get("events", [])

    async def sees_state(self, call: Call, raw: Call, room_id: str, event_type: str, field: str, value: Any,
                         action: Callable[[], Awaitable[Any]], state_key: str = "") -> None:
        """After ``action``, ``(event_type, state_key)`` has ``content[field] == value`` on one server: its
        incremental /sync (from before the action) brings the event, and ``GET /rooms/{id}/state/{type}/{key}``
        answers the new value."""

        def check(sync: dict) -> Optional[bool]:
            for event in self.room_events(sync, "join", room_id):
                if (event["type"], event.get("state_key")) == (event_type, state_key) \
                        and event["content"].get(field) == value:
                    return True
            return None

        poll = await self.sync_poller(call, check)
        await action()
        await self.eventually(poll, f"{event_type} {field}={value!r} in /sync of {room_id}")
        code, content = await raw("GET", f"/rooms/{quote(room_id)}/state/{event_type}/{quote(state_key)}")
        self.assertEqual(code, 200, content)
        self.assertEqual(content.get(field), value)

    async def set_power_level(self, call: Call, room_id: str, user_id: str, level: int) -> None:
        path = f"/rooms/{quote(room_id)}/state/m.room.power_levels/"
        levels = await call("GET", path)
        levels.setdefault("users", {})[user_id] = level
        await call("PUT", path, levels)

    async def has_power_level(self, raw: Call, room_id: str, user_id: str, level: int) -> None:
        async def check() -> Optional[bool]:
            code, levels = await raw("GET", f"/rooms/{quote(room_id)}/state/m.room.power_levels/")
            return True if code == 200 and levels.get("users", {}).get(user_id) == level else None

        await self.eventually(check, f"{user_id} at PL {level} in {room_id}")

    async def leaves_in_sync(self, call: Call, room_id: str, user_id: str, membership: str, sender: str,
                             action: Callable[[], Awaitable[Any]]) -> dict:
        """After ``action``, the user's incremental /sync (from before it) moves ``room_id`` to
        ``rooms.leave`` with the user's membership ``membership`` (``leave`` for a kick, ``ban``) sent by
        ``sender``; returns that event."""

        def check(sync: dict) -> Optional[dict]:
            members = [e for e in self.room_events(sync, "leave", room_id)
                       if e["type"] == "m.room.member" and e.get("state_key") == user_id]
            return members[-1] if members else None

        poll = await self.sync_poller(call, check)
        await action()
        event = await self.eventually(poll, f"{room_id} under rooms.leave of {user_id}")
        self.assertEqual(event["content"]["membership"], membership)
        self.assertEqual(event["sender"], sender)
        return event

    async def member_is(self, raw: Call, room_id: str, user_id: str, membership: str) -> None:
        async def check() -> Optional[bool]:
            code, content = await raw("GET", f"/rooms/{quote(room_id)}/state/m.room.member/{quote(user_id)}")
            return True if code == 200 and content.get("membership") == membership else None

        await self.eventually(check, f"{user_id} {membership} in {room_id}")

    async def bodies(self, call: Call, room_id: str) -> list[tuple[str, str]]:
        """(body, event_id) of the room's messages, oldest first (one /messages page)."""
        resp = await call("GET", f"/rooms/{quote(room_id)}/messages?dir=b&limit=100")
        return [(e["content"].get("body"), e["event_id"]) for e in reversed(resp["chunk"]) if e["type"] == "m.room.message"]

    # -- restarts -----------------------------------------------------------------------------------
    def track_connections(self) -> list:
        """From now on, record the transport of every connection accepted by matrixhs's listeners (the
        returned list), so that :meth:`stop_ours` can close them as the end of the process would."""
        transports: list = []
        for site in self.ours.service.sites:
            def build(addr: Any, original: Any = site.buildProtocol) -> Any:
                protocol = original(addr)
                if protocol is not None:
                    connect = protocol.makeConnection

                    def make_connection(transport: Any) -> Any:
                        transports.append(transport)
                        return connect(transport)

                    protocol.makeConnection = make_connection
                return protocol

            site.buildProtocol = build
        return transports

    async def stop_ours(self, transports: Optional[list] = None) -> None:
        """Stop the matrixhs service cleanly (listeners, federation sender, database); its directory and
        SQLite database stay. With ``transports`` (from :meth:`track_connections`), then close the connections
        still open, as the exit of a real process does after the service stopped."""
        await self.ours.service.stopService()
        for transport in transports or ():
            transport.abortConnection()

    async def start_ours_again(self) -> None:
        """A new matrixhs service from the same configuration (same name, federation port, signing key and
        database); the client listener gets a new port."""
        service = make_homeserver(reactor, self.ours.config)
        service.startService()
        self.addCleanup(service.stopService)
        await service.ready
        port = service.ports[0].getHost().port
        self.ours = RunningHomeserver(service, f"http://127.0.0.1:{port}", self.ours.directory)

    # -- 1. state and power levels ------------------------------------------------------------------
    async def test_state_changes_and_power_levels_in_synapse_room(self) -> None:
        """In Sally's Synapse room: her name change reaches matrixhs (GET state and /sync); Mia at PL 0 is
        refused a topic change by matrixhs itself (403 M_FORBIDDEN, nothing sent); once Sally gives Mia PL 50,
        matrixhs applies Synapse's power levels, lets Mia set topic and name, and Synapse accepts both (its
        GET state and /sync show them)."""
        room_id = await self.synapse_room(name="Before")
        room = quote(room_id)
        mia = self.mia["user_id"]

        await self.sees_state(self.on_ours, self.raw_ours, room_id, "m.room.name", "name", "Renamed by Sally",
                              doing(self.on_synapse, "PUT", f"/rooms/{room}/state/m.room.name/", {"name": "Renamed by Sally"}))

        code, resp = await self.raw_ours("PUT", f"/rooms/{room}/state/m.room.topic/", {"topic": "too early"})
        self.assertEqual(code, 403, resp)
        self.assertEqual(resp["errcode"], "M_FORBIDDEN")

        await self.set_power_level(self.on_synapse, room_id, mia, 50)
        await self.has_power_level(self.raw_ours, room_id, mia, 50)
        await self.sees_state(self.on_synapse, self.raw_synapse, room_id, "m.room.topic", "topic", "Topic by Mia",
                              doing(self.on_ours, "PUT", f"/rooms/{room}/state/m.room.topic/", {"topic": "Topic by Mia"}))
        await self.sees_state(self.on_synapse, self.raw_synapse, room_id, "m.room.name", "name", "Renamed by Mia",
                              doing(self.on_ours, "PUT", f"/rooms/{room}/state/m.room.name/", {"name": "Renamed by Mia"}))
        # The refused topic never existed anywhere.
        theirs = await self.on_synapse("GET", f"/rooms/{room}/messages?dir=b&limit=100")
        self.assertNotIn("too early", [e["content"].get("topic") for e in theirs["chunk"]])

    async def test_state_changes_and_power_levels_in_our_room(self) -> None:
        """In Mia's matrixhs room: her name and topic changes reach Synapse; Sally at PL 0 is refused a topic
        change by Synapse (403); once Mia gives Sally PL 50, Synapse applies matrixhs's power levels and Sally's
        topic and name changes are accepted by matrixhs (GET state and /sync)."""
        room_id = await self.our_room(name="Ours")
        room = quote(room_id)
        sally = self.sally["user_id"]

        await self.sees_state(self.on_synapse, self.raw_synapse, room_id, "m.room.name", "name", "Renamed by Mia",
                              doing(self.on_ours, "PUT", f"/rooms/{room}/state/m.room.name/", {"name": "Renamed by Mia"}))
        await self.sees_state(self.on_synapse, self.raw_synapse, room_id, "m.room.topic", "topic", "Topic by Mia",
                              doing(self.on_ours, "PUT", f"/rooms/{room}/state/m.room.topic/", {"topic": "Topic by Mia"}))

        code, resp = await self.raw_synapse("PUT", f"/rooms/{room}/state/m.room.topic/", {"topic": "too early"})
        self.assertEqual(code, 403, resp)

        await self.set_power_level(self.on_ours, room_id, sally, 50)
        await self.has_power_level(self.raw_synapse, room_id, sally, 50)
        await self.sees_state(self.on_ours, self.raw_ours, room_id, "m.room.topic", "topic", "Topic by Sally",
                              doing(self.on_synapse, "PUT", f"/rooms/{room}/state/m.room.topic/", {"topic": "Topic by Sally"}))
        await self.sees_state(self.on_ours, self.raw_ours, room_id, "m.room.name", "name", "Renamed by Sally",
                              doing(self.on_synapse, "PUT", f"/rooms/{room}/state/m.room.name/", {"name": "Renamed by Sally"}))

    # -- 2. kicks and bans --------------------------------------------------------------------------
    async def test_synapse_admin_kicks_and_bans_our_user(self) -> None:
        """Sally (Synapse, room creator) kicks Mia: Mia's /sync moves the room to ``leave`` with Sally's kick,
        and matrixhs refuses Mia's message (403). Mia re-joins through Synapse and talks again. Sally bans
        her: matrixhs learns the ban and Mia's ``POST /join`` fails with 403, and Synapse still has her
        banned."""
        room_id = await self.synapse_room()
        room = quote(room_id)
        mia, sally = self.mia["user_id"], self.sally["user_id"]

        kick = await self.leaves_in_sync(self.on_ours, room_id, mia, "leave", sally,
                                         doing(self.on_synapse, "POST", f"/rooms/{room}/kick", {"user_id": mia, "reason": "out"}))
        self.assertEqual(kick["content"].get("reason"), "out")
        code, resp = await self.raw_ours("PUT", f"/rooms/{room}/send/m.room.message/k1",
                                         {"msgtype": "m.text", "body": "after the kick"})
        self.assertEqual(code, 403, resp)
        joined = await self.on_ours("GET", "/joined_rooms")
        self.assertNotIn(room_id, joined["joined_rooms"])

        await self.on_ours("POST", f"/join/{room}?server_name={quote(self.syn_name)}", {})
        await self.joined_members(self.on_synapse, room_id, {mia, sally})
        event_id = await self.send(self.on_ours, room_id, "back again", "r1")
        self.assertEqual((await self.wait_for_message(self.on_synapse, room_id, "back again"))["event_id"], event_id)

        await self.leaves_in_sync(self.on_ours, room_id, mia, "ban", sally,
                                  doing(self.on_synapse, "POST", f"/rooms/{room}/ban", {"user_id": mia, "reason": "for good"}))
        code, resp = await self.raw_ours("POST", f"/join/{room}?server_name={quote(self.syn_name)}", {})
        self.assertEqual(code, 403, resp)
        code, resp = await self.raw_ours("POST", f"/rooms/{room}/join", {})
        self.assertEqual(code, 403, resp)
        await self.member_is(self.raw_synapse, room_id, mia, "ban")

    async def test_our_admin_kicks_and_bans_synapse_user(self) -> None:
        """Mia (matrixhs, room creator) kicks Sally: Sally's Synapse /sync moves the room to ``leave`` with
        Mia's kick, and Synapse refuses Sally's message (403). Sally re-joins through matrixhs and talks again.
        Mia bans her: Synapse learns the ban and Sally's join fails with 403 (Synapse asks matrixhs, which
        refuses the make_join), and matrixhs still has her banned."""
        room_id = await self.our_room()
        room = quote(room_id)
        mia, sally = self.mia["user_id"], self.sally["user_id"]

        kick = await self.leaves_in_sync(self.on_synapse, room_id, sally, "leave", mia,
                                         doing(self.on_ours, "POST", f"/rooms/{room}/kick", {"user_id": sally, "reason": "out"}))
        self.assertEqual(kick["content"].get("reason"), "out")
        code, resp = await self.raw_synapse("PUT", f"/rooms/{room}/send/m.room.message/k1",
                                            {"msgtype": "m.text", "body": "after the kick"})
        self.assertEqual(code, 403, resp)

        await self.on_synapse("POST", f"/join/{room}?server_name={quote(self.ours_name)}", {})
        await self.joined_members(self.on_ours, room_id, {mia, sally})
        event_id = await self.send(self.on_synapse, room_id, "back again", "r1")
        self.assertEqual((await self.wait_for_message(self.on_ours, room_id, "back again"))["event_id"], event_id)

        await self.leaves_in_sync(self.on_synapse, room_id, sally, "ban", mia,
                                  doing(self.on_ours, "POST", f"/rooms/{room}/ban", {"user_id": sally, "reason": "for good"}))
        code, resp = await self.raw_synapse("POST", f"/join/{room}?server_name={quote(self.ours_name)}", {})
        self.assertEqual(code, 403, resp)
        await self.member_is(self.raw_ours, room_id, sally, "ban")

    # -- 3. gaps while one server is down -----------------------------------------------------------
    async def gap_while_matrixhs_was_down(self, close_connections: bool) -> None:
        # (Synapse has not connected to matrixhs yet: it does for the join below.)
        transports = self.track_connections() if close_connections else None
        room_id = await self.synapse_room()
        before = await self.send(self.on_synapse, room_id, "before", "b0")
        await self.wait_for_message(self.on_ours, room_id, "before")

        await self.stop_ours(transports)
        gap = [await self.send(self.on_synapse, room_id, f"g{i}", f"g{i}") for i in range(1, 6)]
        # Give Synapse the time to try (and fail) to deliver them.
        await deferLater(reactor, 2, lambda: None)
        await self.start_ours_again()

        after = await self.send(self.on_ours, room_id, "after the restart", "a1")
        self.assertEqual((await self.wait_for_message(self.on_synapse, room_id, "after the restart"))["event_id"], after)

        async def filled() -> Optional[list]:
            seen = await self.bodies(self.on_ours, room_id)
            return seen if set(gap) <= {event_id for _, event_id in seen} else None

        seen = await self.eventually_long(filled, "g1..g5 on matrixhs after the restart")
        self.assertEqual([body for body, event_id in seen if event_id in {before, *gap}],
                         ["before", "g1", "g2", "g3", "g4", "g5"])
        self.assertEqual([event_id for _, event_id in seen if event_id in gap], gap)
        sync = await self.on_ours("GET", "/sync")
        self.assertIn(gap[-1], [e["event_id"] for e in sync["rooms"]["join"][room_id]["timeline"]["events"]])

    async def test_messages_sent_while_matrixhs_was_down(self) -> None:
        """matrixhs stops cleanly (data kept) and its open connections close, as at the end of its process;
        Sally sends g1..g5, which Synapse cannot deliver (connection refused). matrixhs starts again from the
        same configuration, federation port and database; Mia's token still works and her message reaches
        Synapse. All five then show in matrixhs's /messages, with Synapse's event IDs, in order after the
        message from before, and g5 in Mia's /sync. (Synapse's HTTP client retries the refused transaction
        after a few seconds, which delivers them; had it given up and backed off, Mia's message would tell it
        matrixhs is back and it would send its latest event, with ``/get_missing_events`` filling the rest.)"""
        await self.gap_while_matrixhs_was_down(close_connections=True)

    async def test_messages_sent_while_matrixhs_service_was_stopped(self) -> None:
        """The same as ``test_messages_sent_while_matrixhs_was_down``, except that the test leaves the
        connections Synapse opened before the stop to the service (as when it is stopped inside a running
        process): it answers requests arriving on them during shutdown with 503 and closes them, so Synapse
        resends its transactions instead of taking per-PDU errors for events matrixhs never stored."""
        await self.gap_while_matrixhs_was_down(close_connections=False)


    async def test_messages_sent_while_synapse_was_down(self) -> None:
        """Synapse stops (SIGTERM, data kept); Mia sends m1..m5, which matrixhs's FederationSender fails to
        deliver and backs off from (its retry state shows it). Synapse starts again with the same
        configuration and database; matrixhs's retry delivers the five to Synapse, which shows them in its
        /messages, with matrixhs's event IDs, in order. The test shortens the sender's backoff through
        ``mxtwisted.federation.sender.MIN_RETRY``/``MAX_RETRY`` (5 s doubling by default) to at most 1 s, so
        the delivery does not depend on where in the doubling the restart happens."""
        self.patch(sender_module, "MIN_RETRY", 0.5)
        self.patch(sender_module, "MAX_RETRY", 1.0)
        room_id = await self.our_room()
        before = await self.send(self.on_ours, room_id, "before", "b0")
        await self.wait_for_message(self.on_synapse, room_id, "before")

        self.synapse.stop()
        sent = [await self.send(self.on_ours, room_id, f"m{i}", f"m{i}") for i in range(1, 6)]
        sender = self.ours.components.federation_sender

        async def backing_off() -> Optional[bool]:
            queue = sender.queue_state(self.syn_name)
            return True if queue is not None and queue.retry_interval > 0 else None

        await self.eventually(backing_off, "matrixhs to back off from the stopped Synapse")
        await self.synapse.start()

        async def delivered() -> Optional[list]:
            seen = await self.bodies(self.on_synapse, room_id)
            return seen if set(sent) <= {event_id for _, event_id in seen} else None

        seen = await self.eventually_long(delivered, "m1..m5 on Synapse after its restart")
        order = [body for body, event_id in seen if event_id in {before, *sent}]
        self.assertEqual(order, ["before", "m1", "m2", "m3", "m4", "m5"])

        async def recovered() -> Optional[bool]:
            queue = sender.queue_state(self.syn_name)
            return True if queue is not None and queue.retry_interval == 0 else None

        await self.eventually(recovered, "matrixhs to end its backoff")
        # Synapse talks back after its restart.
        event_id = await self.send(self.on_synapse, room_id, "I am back", "s-back")
        self.assertEqual((await self.wait_for_message(self.on_ours, room_id, "I am back"))["event_id"], event_id)
