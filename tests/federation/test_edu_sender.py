"""EduSender on a controlled clock (which changes become EDUs, for whom, and the typing keep-alive), and the
parsing of incoming presence updates. The two-server tests (test_edus) cover the rest end to end."""

from __future__ import annotations

from typing import Any

from twisted.internet.task import Clock
from twisted.trial.unittest import TestCase

from mxtwisted.ephemeral.typing import TypingHandler
from mxtwisted.federation.edus import (
    PRESENCE_PING_INTERVAL,
    TYPING_PING_INTERVAL,
    EduSender,
    parse_presence_update,
)
from mxtwisted.storage.presence import UserPresence
from tests.ephemeral.fakes import FakeRooms, RecordingNotifier

HERE = "here.example"
ALICE = f"@alice:{HERE}"
REMOTE_BOB = "@bob:there.example"
REMOTE_CAROL = "@carol:elsewhere.example"
ROOM = "!room:here.example"
START = 1_700_000_000.0


class FakeStore:
    """``get_members`` / ``get_rooms_for_user`` of the EventStore, from a fixed membership."""

    def __init__(self, members: dict[str, list[str]]) -> None:
        self.members = members

    async def get_members(self, room_id: str, memberships: Any = None) -> dict[str, str]:
        return {user: "$member" for user in self.members.get(room_id, [])}

    async def get_rooms_for_user(self, user_id: str) -> dict[str, str]:
        return {room_id: "join" for room_id, users in self.members.items() if user_id in users}


class RecordingSender:
    def __init__(self) -> None:
        self.sent: list[tuple[str, str, dict]] = []

    def send_edu(self, destination: str, edu_type: str, content: dict) -> None:
        self.sent.append((destination, edu_type, content))


class Listened:
    """A handler stand-in that only takes listeners (receipts, presence)."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self.listeners: list[Any] = []

    def add_listener(self, listener: Any) -> None:
        self.listeners.append(listener)

    def live_states(self) -> list[UserPresence]:
        return []


class EduSenderTests(TestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(START)
        self.rooms = FakeRooms()
        self.rooms.add_room(ROOM, ALICE)
        self.typing = TypingHandler(self.clock, RecordingNotifier(self.clock), self.rooms)
        self.receipts = Listened()
        self.presence = Listened()
        self.sender = RecordingSender()
        store = FakeStore({ROOM: [ALICE, REMOTE_BOB, REMOTE_CAROL]})
        self.edus = EduSender(self.clock, HERE, self.sender, store, self.rooms, self.typing, self.receipts,
                              self.presence)
        self.edus.startService()
        self.addCleanup(self.edus.stopService)
        self.addCleanup(self.typing.stopService)

    def sent(self, edu_type: str) -> list[tuple[str, dict]]:
        return [(dest, content) for dest, t, content in self.sender.sent if t == edu_type]

    def test_typing_goes_to_the_other_servers_and_is_kept_alive(self) -> None:
        self.typing.started_typing(ROOM, ALICE, 100_000)
        on = {"room_id": ROOM, "user_id": ALICE, "typing": True}
        self.assertEqual(self.sent("m.typing"), [("elsewhere.example", on), ("there.example", on)])
        # Still typing past the keep-alive interval: sent again (remote servers forget after a minute).
        self.clock.advance(TYPING_PING_INTERVAL)
        self.assertEqual(len(self.sent("m.typing")), 4)
        # The notification ends on its own (after one more ping at 80 s): the others hear it stopped, and
        # the pings stop.
        self.clock.advance(100.0 - TYPING_PING_INTERVAL)
        off = {"room_id": ROOM, "user_id": ALICE, "typing": False}
        self.assertEqual(self.sent("m.typing")[-2:], [("elsewhere.example", off), ("there.example", off)])
        self.assertEqual(len(self.sent("m.typing")), 8)
        self.clock.advance(TYPING_PING_INTERVAL * 3)
        self.assertEqual(len(self.sent("m.typing")), 8)
        # Only the presence keep-alive loop is left on the clock.
        self.assertEqual([c.getTime() for c in self.clock.getDelayedCalls()], [START + PRESENCE_PING_INTERVAL])

    def test_remote_typing_is_not_echoed(self) -> None:
        self.typing.started_typing(ROOM, REMOTE_BOB, 60_000)
        self.typing.stopped_typing(ROOM, REMOTE_BOB)
        self.assertEqual(self.sender.sent, [])

    def test_receipts(self) -> None:
        (listener,) = self.receipts.listeners
        listener(ROOM, "m.read.private", ALICE, "$e1", None, {"ts": 5})
        listener(ROOM, "m.read", REMOTE_BOB, "$e1", None, {"ts": 5})
        self.assertEqual(self.sender.sent, [])
        listener(ROOM, "m.read", ALICE, "$e2", "$root", {"ts": 7})
        content = {ROOM: {"m.read": {ALICE: {"event_ids": ["$e2"], "data": {"ts": 7, "thread_id": "$root"}}}}}
        self.assertEqual(self.sent("m.receipt"), [("elsewhere.example", content), ("there.example", content)])

    def test_presence(self) -> None:
        (listener,) = self.presence.listeners
        now = int(START * 1000)
        listener(UserPresence(ALICE, "online", "hi", last_active_ts=now - 1500, currently_active=True))
        update = {"user_id": ALICE, "presence": "online", "last_active_ago": 1500, "currently_active": True,
                  "status_msg": "hi"}
        self.assertEqual(self.sent("m.presence"), [("elsewhere.example", {"push": [update]}),
                                                   ("there.example", {"push": [update]})])
        listener(UserPresence(REMOTE_BOB, "online"))
        self.assertEqual(len(self.sender.sent), 2)

    def test_presence_disabled_sends_nothing(self) -> None:
        self.presence.enabled = False
        (listener,) = self.presence.listeners
        listener(UserPresence(ALICE, "online"))
        self.assertEqual(self.sender.sent, [])


class ParsePresenceUpdateTests(TestCase):
    NOW = 1_700_000_000_000

    def test_valid(self) -> None:
        state = parse_presence_update(
            {"user_id": REMOTE_BOB, "presence": "unavailable", "last_active_ago": 2000, "status_msg": "away",
             "currently_active": False}, "there.example", self.NOW)
        self.assertEqual(state, UserPresence(REMOTE_BOB, "unavailable", "away", last_active_ts=self.NOW - 2000))
        state = parse_presence_update({"user_id": REMOTE_BOB, "presence": "online", "last_active_ago": 0,
                                       "currently_active": True}, "there.example", self.NOW)
        self.assertEqual((state.status_msg, state.currently_active, state.last_active_ts), (None, True, self.NOW))

    def test_refused(self) -> None:
        for update in (
            {"user_id": REMOTE_BOB, "presence": "online", "last_active_ago": 0},  # not the origin's user
            {"user_id": "@x:origin.example", "presence": "busy", "last_active_ago": 0},
            {"presence": "online", "last_active_ago": 0},
            "online",
        ):
            self.assertIsNone(parse_presence_update(update, "origin.example", self.NOW), update)

    def test_lenient_fields(self) -> None:
        # A missing or bad last_active_ago counts as "just now"; odd types are dropped, not fatal.
        state = parse_presence_update({"user_id": REMOTE_BOB, "presence": "online", "last_active_ago": "x",
                                       "status_msg": 5, "currently_active": "yes"}, "there.example", self.NOW)
        self.assertEqual(state, UserPresence(REMOTE_BOB, "online", None, last_active_ts=self.NOW))
