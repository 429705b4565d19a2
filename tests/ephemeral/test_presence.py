"""PresenceHandler on a controlled clock: the state machine, visibility, and the presence stream source.

The handler under test runs over a real homeserver's storage and room engine
(rooms made through the engine), with its own ``Clock`` and a recording
notifier; the server's own presence handler is disabled so it stays out of the way.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.trial.unittest import TestCase

from mxtwisted.ephemeral.presence import (
    CHECK_INTERVAL_SECONDS,
    DEFAULT_IDLE_TIMEOUT_MS,
    SYNC_REQUEST_HOLD_MS,
    PresenceHandler,
)
from mxtwisted.http.errors import MatrixError
from mxtwisted.storage.presence import OFFLINE, ONLINE, UNAVAILABLE, UserPresence
from tests.ephemeral.fakes import RecordingNotifier
from tests.support.homeserver import start_homeserver

START = 1_700_000_000.0


class PresenceHandlerTests(TestCase):
    async def setUp(self) -> None:
        self.hs = await start_homeserver(
            self, bcrypt_rounds=4, presence={"enabled": False}, rc_message={"per_second": 1000, "burst_count": 1000}
        )
        c = self.hs.components
        self.alice = (await self.hs.register_user("alice"))["user_id"]
        self.bob = (await self.hs.register_user("bob"))["user_id"]
        self.carol = (await self.hs.register_user("carol"))["user_id"]
        self.room, _ = await c.room_creator.create_room(self.alice, {"preset": "public_chat"})
        await c.membership.update(self.bob, self.room, self.bob, "join")
        self.carol_room, _ = await c.room_creator.create_room(self.carol, {"preset": "public_chat"})
        self.clock = Clock()
        self.clock.advance(START)
        self.notifier = RecordingNotifier(self.clock)
        self.presence = self.make_handler()
        self.source = self.presence.source

    def make_handler(self, **options: Any) -> PresenceHandler:
        handler = PresenceHandler(
            self.clock,
            self.notifier,
            self.hs.components.rooms,
            self.hs.storage.presence,
            self.hs.storage.users,
            "test.local",
            **options,
        )
        handler.startService()
        self.addCleanup(handler.stopService)
        return handler

    def now_ms(self) -> int:
        return int(self.clock.seconds() * 1000)

    async def advance(self, seconds: float, syncing: tuple[str, ...] = (), every: float = 30.0) -> None:
        """Let time pass (timers run every few seconds); the users in ``syncing`` sync every ``every`` s."""
        elapsed = 0.0
        next_sync = 0.0
        while elapsed < seconds:
            if syncing and elapsed >= next_sync:
                for user in syncing:
                    await self.presence.set_presence(user, ONLINE)
                next_sync += every
            step = min(CHECK_INTERVAL_SECONDS, seconds - elapsed)
            self.clock.advance(step)
            elapsed += step
        await self.presence.wait_for_writes()

    async def state(self, user: str) -> UserPresence:
        return await self.presence.current_state(user)

    async def updates(self, user: str, since: int, upto: int | None = None, rooms: set | None = None) -> dict:
        if rooms is None:
            rooms = set(await self.hs.storage.events.get_rooms_for_user(user))
        upto = self.source.current_position() if upto is None else upto
        per_room, events = await self.source.get_updates(user, rooms, since, upto)
        self.assertEqual(per_room, {})
        for event in events:
            self.assertEqual(event["type"], "m.presence")
        return {e["sender"]: e["content"] for e in events}

    # -- the state machine --------------------------------------------------------------
    async def test_put_online_is_stored_and_announced(self) -> None:
        await self.presence.set_state(self.alice, ONLINE, "at work")
        self.assertEqual(
            await self.presence.get_presence(self.alice, self.alice),
            {"presence": ONLINE, "last_active_ago": 0, "status_msg": "at work", "currently_active": True},
        )
        stored = await self.hs.storage.presence.get(self.alice)
        assert stored is not None
        self.assertEqual((stored.state, stored.status_msg, stored.last_active_ts), (ONLINE, "at work", self.now_ms()))
        self.assertEqual(self.notifier.calls[-1], ("presence", self.source.current_position(), [self.alice, self.bob]))
        self.clock.advance(2)
        self.assertEqual((await self.presence.get_presence(self.bob, self.alice))["last_active_ago"], 2000)
        # A PUT without status_msg clears it.
        await self.presence.set_state(self.alice, UNAVAILABLE)
        self.assertEqual(
            await self.presence.get_presence(self.alice, self.alice), {"presence": UNAVAILABLE, "last_active_ago": 2000}
        )

    async def test_invalid_state(self) -> None:
        with self.assertRaises(MatrixError) as cm:
            await self.presence.set_state(self.alice, "busy")
        self.assertEqual((cm.exception.status, cm.exception.errcode), (400, "M_INVALID_PARAM"))

    async def test_idle_timeout_while_syncing(self) -> None:
        await self.presence.set_presence(self.alice, ONLINE)
        self.assertEqual((await self.state(self.alice)).state, ONLINE)
        await self.advance(DEFAULT_IDLE_TIMEOUT_MS / 1000 - 10, syncing=(self.alice,))
        self.assertEqual((await self.state(self.alice)).state, ONLINE)
        await self.advance(20, syncing=(self.alice,))
        state = await self.state(self.alice)
        self.assertEqual((state.state, state.currently_active), (UNAVAILABLE, False))
        stored = await self.hs.storage.presence.get(self.alice)
        assert stored is not None
        self.assertEqual(stored.state, UNAVAILABLE)
        # Syncing does not end idleness; activity does.
        await self.advance(30, syncing=(self.alice,))
        self.assertEqual((await self.state(self.alice)).state, UNAVAILABLE)
        self.presence.bump_active(self.alice)
        await self.presence.wait_for_writes()
        state = await self.state(self.alice)
        self.assertEqual((state.state, state.last_active_ts, state.currently_active), (ONLINE, self.now_ms(), True))

    async def test_offline_when_syncing_stops(self) -> None:
        await self.presence.set_presence(self.alice, ONLINE)
        await self.advance(SYNC_REQUEST_HOLD_MS / 1000 + 25)
        self.assertEqual((await self.state(self.alice)).state, ONLINE)
        await self.advance(10)
        self.assertEqual((await self.state(self.alice)).state, OFFLINE)
        stored = await self.hs.storage.presence.get(self.alice)
        assert stored is not None
        self.assertEqual(stored.state, OFFLINE)
        # Offline users leave the live set; the next sync brings them back.
        self.assertNotIn(self.alice, self.presence._states)
        await self.presence.set_presence(self.alice, ONLINE)
        self.assertEqual((await self.state(self.alice)).state, ONLINE)

    async def test_syncs_in_flight_keep_the_user_connected(self) -> None:
        done = self.presence.user_syncing(self.alice, ONLINE)
        await self.presence.wait_for_writes()
        await self.advance(600)
        self.assertEqual((await self.state(self.alice)).state, UNAVAILABLE)  # idle, but connected
        done()
        done()  # twice is harmless
        await self.advance(25)
        self.assertEqual((await self.state(self.alice)).state, UNAVAILABLE)
        await self.advance(10)
        self.assertEqual((await self.state(self.alice)).state, OFFLINE)

    async def test_currently_active_ends_with_an_announcement(self) -> None:
        await self.presence.set_presence(self.alice, ONLINE)
        position = self.source.current_position()
        await self.advance(50, syncing=(self.alice,))
        self.presence.bump_active(self.alice)  # still currently active: nothing to announce
        await self.advance(0)
        self.assertEqual(self.source.current_position(), position)
        await self.advance(65, syncing=(self.alice,))
        self.assertGreater(self.source.current_position(), position)
        seen = await self.updates(self.bob, position)
        self.assertEqual(seen[self.alice]["currently_active"], False)
        self.assertEqual(seen[self.alice]["presence"], ONLINE)

    async def test_set_presence_from_sync(self) -> None:
        await self.presence.set_presence(self.alice, UNAVAILABLE)
        self.assertEqual((await self.state(self.alice)).state, UNAVAILABLE)
        await self.presence.set_presence(self.alice, ONLINE)
        self.assertEqual((await self.state(self.alice)).state, ONLINE)
        # set_presence=offline leaves presence alone (as Synapse).
        await self.presence.set_presence(self.alice, OFFLINE)
        self.assertEqual((await self.state(self.alice)).state, ONLINE)
        # An explicit PUT unavailable is not undone by syncing, only by activity.
        await self.presence.set_state(self.alice, UNAVAILABLE)
        await self.presence.set_presence(self.alice, ONLINE)
        self.assertEqual((await self.state(self.alice)).state, UNAVAILABLE)
        # An offline user doing something (a bot that does not sync) stays offline.
        self.presence.bump_active(self.bob)
        self.assertEqual((await self.state(self.bob)).state, OFFLINE)

    async def test_deactivation_goes_offline(self) -> None:
        await self.presence.set_state(self.alice, ONLINE, "here")
        await self.presence.on_deactivated(self.alice, False)
        self.assertEqual(await self.presence.get_presence(self.alice, self.alice), {"presence": OFFLINE, "last_active_ago": 0})

    async def test_a_slow_start_up_read_does_not_undo_newer_changes(self) -> None:
        # The start-up read of stored states is slow (a loaded machine); alice, online when it was taken,
        # is deactivated before it returns: she stays offline.
        await self.presence.set_state(self.alice, ONLINE, "here")
        store = self.hs.storage.presence
        stale = await store.get_not_offline()
        read: defer.Deferred = defer.Deferred()
        self.patch(store, "get_not_offline", lambda: read)
        restarted = self.make_handler()
        await restarted.on_deactivated(self.alice, False)
        read.callback(stale)
        self.assertEqual(await restarted.get_presence(self.alice, self.alice), {"presence": OFFLINE, "last_active_ago": 0})

    async def test_timers_resume_after_a_restart(self) -> None:
        await self.presence.set_presence(self.alice, ONLINE)
        await self.presence.stopService()
        restarted = self.make_handler()
        await restarted.wait_for_writes()
        self.assertEqual((await restarted.current_state(self.alice)).state, ONLINE)
        self.clock.advance(SYNC_REQUEST_HOLD_MS / 1000 + 60)
        await restarted.wait_for_writes()
        self.assertEqual((await restarted.current_state(self.alice)).state, OFFLINE)

    # -- visibility ------------------------------------------------------------------------
    async def test_get_presence_visibility(self) -> None:
        self.assertEqual(await self.presence.get_presence(self.bob, self.alice), {"presence": OFFLINE})
        for requester, user, status in (
            (self.carol, self.alice, 403),
            (self.alice, "@nobody:test.local", 404),
            (self.alice, "@someone:elsewhere.example", 403),
        ):
            with self.assertRaises(MatrixError) as cm:
                await self.presence.get_presence(requester, user)
            self.assertEqual(cm.exception.status, status, (requester, user))

    # -- the stream ------------------------------------------------------------------------
    async def test_updates_only_for_users_sharing_a_room(self) -> None:
        self.assertEqual(self.source.name, "presence")
        await self.presence.set_state(self.carol, UNAVAILABLE)
        start = self.source.current_position()  # not 0: that would be an initial sync
        await self.presence.set_state(self.alice, ONLINE, "hello")
        p1 = self.source.current_position()
        await self.presence.set_state(self.carol, ONLINE)
        p2 = self.source.current_position()
        await self.presence.set_state(self.bob, UNAVAILABLE)
        p3 = self.source.current_position()

        # Bob shares a room with Alice, not with Carol; he sees his own presence too.
        self.assertEqual(set(await self.updates(self.bob, start)), {self.alice, self.bob})
        self.assertEqual(await self.updates(self.bob, start, p1), {
            self.alice: {"presence": ONLINE, "last_active_ago": 0, "status_msg": "hello", "currently_active": True}})
        self.assertEqual(await self.updates(self.bob, p1, p2), {})
        self.assertEqual(set(await self.updates(self.bob, p2, p3)), {self.bob})
        self.assertEqual(await self.updates(self.bob, p3, p3), {})
        # Carol shares no room: only her own.
        self.assertEqual(set(await self.updates(self.carol, 0)), {self.carol})
        self.assertEqual(set(await self.updates(self.carol, start)), {self.carol})
        # Initial sync (from 0): everyone visible who is not offline.
        self.assertEqual(set(await self.updates(self.alice, 0)), {self.alice, self.bob})
        await self.presence.set_state(self.bob, OFFLINE)
        self.assertEqual(set(await self.updates(self.alice, 0)), {self.alice})
        # ...and the change to offline is an update like any other.
        self.assertEqual(await self.updates(self.alice, p3), {self.bob: {"presence": OFFLINE}})

    async def test_include_offline_users_on_sync(self) -> None:
        handler = self.make_handler(include_offline_users_on_sync=True)
        await handler.set_state(self.alice, ONLINE)
        per_room, events = await handler.source.get_updates(self.alice, {self.room}, 0, handler.current_position())
        self.assertEqual({e["sender"]: e["content"]["presence"] for e in events}, {self.alice: ONLINE, self.bob: OFFLINE})

    async def test_joining_a_room_shares_presence_both_ways(self) -> None:
        await self.presence.set_state(self.alice, ONLINE)
        await self.presence.set_state(self.carol, UNAVAILABLE, "away")
        position = self.source.current_position()
        await self.hs.components.membership.update(self.carol, self.room, self.carol, "join")
        await self.presence.wait_for_writes()
        self.assertGreater(self.source.current_position(), position)
        # Carol learns Alice's presence (Bob is offline); Alice and Bob learn Carol's.
        self.assertEqual(set(await self.updates(self.carol, position)), {self.alice, self.carol})
        self.assertEqual(set(await self.updates(self.alice, position)), {self.carol})
        self.assertEqual((await self.updates(self.bob, position))[self.carol]["status_msg"], "away")

    async def test_disabled(self) -> None:
        handler = self.make_handler(enabled=False)
        await handler.set_state(self.alice, ONLINE, "ignored")
        await handler.set_presence(self.alice, ONLINE)
        handler.bump_active(self.alice)
        self.assertEqual(await handler.get_presence(self.carol, self.alice), {"presence": OFFLINE})
        self.assertEqual(await handler.source.get_updates(self.alice, {self.room}, 0, 10), ({}, []))
        self.assertIsNone(await self.hs.storage.presence.get(self.alice))
        with self.assertRaises(MatrixError):
            await handler.set_state(self.alice, "nonsense")
