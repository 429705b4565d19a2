"""TypingHandler and its stream source on a controlled clock."""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.trial.unittest import TestCase

from mxtwisted.ephemeral.typing import FORGET_ROOM_AFTER_MS, MAX_TIMEOUT_MS, TypingHandler
from mxtwisted.http.errors import MatrixError
from tests.ephemeral.fakes import FakeEvent, FakeRooms, RecordingNotifier

ALICE = "@alice:test.local"
BOB = "@bob:test.local"
CAROL = "@carol:test.local"
ROOM = "!room:test.local"
OTHER = "!other:test.local"


def typing_event(*users: str) -> dict:
    return {"type": "m.typing", "content": {"user_ids": list(users)}}


class TypingHandlerTests(TestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.notifier = RecordingNotifier(self.clock)
        self.rooms = FakeRooms()
        self.rooms.add_room(ROOM, ALICE, BOB)
        self.rooms.add_room(OTHER, ALICE, CAROL)
        self.typing = TypingHandler(self.clock, self.notifier, self.rooms)
        self.typing.startService()
        self.addCleanup(self.typing.stopService)
        self.source = self.typing.source

    async def updates(self, user: str, rooms: set[str], since: int, upto: int | None = None) -> dict:
        upto = self.source.current_position() if upto is None else upto
        per_room, global_events = await self.source.get_updates(user, rooms, since, upto)
        self.assertEqual(global_events, [])
        return per_room

    async def test_typing_times_out_on_the_server_clock(self) -> None:
        self.assertEqual(self.source.name, "typing")
        await self.typing.set_typing(ALICE, ALICE, ROOM, True, 10_000)
        self.assertEqual(self.source.current_position(), 1)
        self.assertEqual(self.typing.get_typing(ROOM), [ALICE])
        self.assertEqual(self.notifier.calls, [("typing", 1, [ALICE, BOB])])
        self.assertEqual(await self.updates(BOB, {ROOM, OTHER}, 0), {ROOM: [typing_event(ALICE)]})

        self.clock.advance(9.9)
        self.assertEqual(self.typing.get_typing(ROOM), [ALICE])
        self.clock.advance(0.2)
        self.assertEqual(self.typing.get_typing(ROOM), [])
        self.assertEqual(self.source.current_position(), 2)
        self.assertEqual(self.notifier.calls[-1], ("typing", 2, [ALICE, BOB]))
        # An incremental sync learns that nobody types any more; an initial sync gets nothing.
        self.assertEqual(await self.updates(BOB, {ROOM}, 1), {ROOM: [typing_event()]})
        self.assertEqual(await self.updates(BOB, {ROOM}, 0), {})
        self.assertEqual(self.clock.getDelayedCalls(), [])

    async def test_renewing_moves_the_expiry_without_a_new_position(self) -> None:
        await self.typing.set_typing(ALICE, ALICE, ROOM, True, 10_000)
        self.clock.advance(8)
        await self.typing.set_typing(ALICE, ALICE, ROOM, True, 10_000)
        self.assertEqual(self.source.current_position(), 1)
        self.clock.advance(8)
        self.assertEqual(self.typing.get_typing(ROOM), [ALICE])
        self.clock.advance(2.1)
        self.assertEqual(self.typing.get_typing(ROOM), [])

    async def test_default_and_capped_timeouts(self) -> None:
        await self.typing.set_typing(ALICE, ALICE, ROOM, True)  # default 30 s
        await self.typing.set_typing(BOB, BOB, ROOM, True, 3_600_000)  # capped
        self.assertEqual(self.typing.get_typing(ROOM), [ALICE, BOB])
        self.clock.advance(30.1)
        self.assertEqual(self.typing.get_typing(ROOM), [BOB])
        self.clock.advance(MAX_TIMEOUT_MS / 1000 - 30)
        self.assertEqual(self.typing.get_typing(ROOM), [])

    async def test_stop_typing(self) -> None:
        await self.typing.set_typing(ALICE, ALICE, ROOM, True, 10_000)
        await self.typing.set_typing(ALICE, ALICE, ROOM, False)
        self.assertEqual(self.typing.get_typing(ROOM), [])
        self.assertEqual(self.source.current_position(), 2)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        # Stopping when not typing changes nothing.
        await self.typing.set_typing(ALICE, ALICE, ROOM, False)
        self.assertEqual(self.source.current_position(), 2)

    async def test_refusals(self) -> None:
        with self.assertRaises(MatrixError) as cm:
            await self.typing.set_typing(ALICE, BOB, ROOM, True, 1000)
        self.assertEqual((cm.exception.status, cm.exception.errcode), (403, "M_FORBIDDEN"))
        with self.assertRaises(MatrixError) as cm:
            await self.typing.set_typing(CAROL, CAROL, ROOM, True, 1000)
        self.assertEqual((cm.exception.status, cm.exception.errcode), (403, "M_FORBIDDEN"))
        with self.assertRaises(MatrixError) as cm:
            await self.typing.set_typing(ALICE, ALICE, "!nowhere:test.local", True, 1000)
        self.assertEqual((cm.exception.status, cm.exception.errcode), (404, "M_NOT_FOUND"))
        self.assertEqual(self.source.current_position(), 0)
        self.assertEqual(self.notifier.calls, [])

    async def test_updates_are_per_room_and_within_range(self) -> None:
        await self.typing.set_typing(ALICE, ALICE, ROOM, True, 10_000)  # position 1
        await self.typing.set_typing(CAROL, CAROL, OTHER, True, 10_000)  # position 2
        await self.typing.set_typing(BOB, BOB, ROOM, True, 10_000)  # position 3
        # Only the rooms asked for.
        self.assertEqual(await self.updates(BOB, {ROOM}, 0), {ROOM: [typing_event(ALICE, BOB)]})
        self.assertEqual(
            await self.updates(ALICE, {ROOM, OTHER}, 0),
            {ROOM: [typing_event(ALICE, BOB)], OTHER: [typing_event(CAROL)]},
        )
        # Only rooms that changed in (from, to]; the list is the room's whole current list.
        self.assertEqual(await self.updates(ALICE, {ROOM, OTHER}, 1, 2), {OTHER: [typing_event(CAROL)]})
        self.assertEqual(await self.updates(ALICE, {ROOM, OTHER}, 2, 3), {ROOM: [typing_event(ALICE, BOB)]})
        self.assertEqual(await self.updates(ALICE, {ROOM, OTHER}, 3, 3), {})
        self.assertEqual(await self.updates(ALICE, set(), 0, 3), {})

    async def test_token_from_before_a_restart_counts_as_initial(self) -> None:
        await self.typing.set_typing(ALICE, ALICE, ROOM, True, 10_000)
        self.assertEqual(await self.updates(BOB, {ROOM}, 500), {ROOM: [typing_event(ALICE)]})

    async def test_leaving_the_room_stops_typing(self) -> None:
        await self.typing.set_typing(BOB, BOB, ROOM, True, 10_000)
        self.rooms.emit(FakeEvent("m.room.message", ROOM, BOB))
        self.assertEqual(self.typing.get_typing(ROOM), [BOB])
        self.rooms.rooms[ROOM].members_joined_local.discard(BOB)
        self.rooms.emit(FakeEvent("m.room.member", ROOM, BOB, BOB, "leave"))
        self.assertEqual(self.typing.get_typing(ROOM), [])
        self.assertEqual(self.notifier.calls[-1], ("typing", 2, [ALICE]))

    async def test_idle_rooms_are_forgotten(self) -> None:
        await self.typing.set_typing(ALICE, ALICE, ROOM, True, 1000)
        self.clock.advance(2)
        self.assertEqual(await self.updates(BOB, {ROOM}, 1), {ROOM: [typing_event()]})
        self.clock.advance(FORGET_ROOM_AFTER_MS / 1000 + 1)
        await self.typing.set_typing(CAROL, CAROL, OTHER, True, 1000)  # the next change sweeps
        self.assertEqual(await self.updates(BOB, {ROOM}, 1), {})
        self.assertEqual(await self.updates(CAROL, {OTHER}, 0), {OTHER: [typing_event(CAROL)]})

    async def test_stopping_cancels_timers(self) -> None:
        await self.typing.set_typing(ALICE, ALICE, ROOM, True, 10_000)
        await self.typing.set_typing(CAROL, CAROL, OTHER, True, 10_000)
        self.assertEqual(len(self.clock.getDelayedCalls()), 2)
        self.typing.stopService()
        self.assertEqual(self.clock.getDelayedCalls(), [])
