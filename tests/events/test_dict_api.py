"""The plain-dict public API: check and resolve real (hashed) v10 and v12 events."""

from twisted.trial.unittest import SynchronousTestCase

from mxtwisted.events import (
    add_content_hash,
    check_event_auth,
    compute_event_id,
    get_room_version,
    resolve_state,
)

ALICE = "@alice:a.example"
BOB = "@bob:b.example"


def make(rv, room_id, etype, sender, content, auth, prev, depth, state_key=None):
    ev = {
        "type": etype,
        "sender": sender,
        "content": content,
        "auth_events": auth,
        "prev_events": prev,
        "depth": depth,
        "origin_server_ts": 1000 + depth,
        "hashes": {},
        "signatures": {},
    }
    if room_id is not None:
        ev["room_id"] = room_id
    if state_key is not None:
        ev["state_key"] = state_key
    ev = add_content_hash(ev)
    return ev, compute_event_id(ev, rv)


class DictApiTests(SynchronousTestCase):
    def build_v10(self):
        rv = get_room_version("10")
        room = "!room:a.example"
        create, create_id = make(rv, room, "m.room.create", ALICE, {"creator": ALICE, "room_version": "10"}, [], [], 1, "")
        join, join_id = make(rv, room, "m.room.member", ALICE, {"membership": "join"}, [create_id], [create_id], 2, ALICE)
        return rv, room, create, create_id, join, join_id

    def test_allowed_and_refused_with_reason(self):
        rv, room, create, create_id, join, join_id = self.build_v10()
        self.assertIsNone(check_event_auth(join, [create], "10"))
        msg, _ = make(rv, room, "m.room.message", BOB, {"body": "hi"}, [create_id], [join_id], 3)
        reason = check_event_auth(msg, {("m.room.create", ""): create, ("m.room.member", ALICE): join}, "10")
        self.assertIsNotNone(reason)
        self.assertIn("auth rule", reason)

    def test_listed_auth_events_checked(self):
        rv, room, create, create_id, join, join_id = self.build_v10()
        msg, _ = make(rv, room, "m.room.message", ALICE, {"body": "hi"}, [create_id, join_id, join_id], [join_id], 3)
        self.assertIsNotNone(check_event_auth(msg, [create, join], "10"))

    def test_resolve_unconflicted(self):
        rv, room, create, create_id, join, join_id = self.build_v10()
        state = {("m.room.create", ""): create_id, ("m.room.member", ALICE): join_id}
        self.assertEqual(resolve_state("10", [state, state], [create, join]), state)

    def test_v12_room_id_from_create(self):
        rv = get_room_version("12")
        create, create_id = make(rv, None, "m.room.create", ALICE, {"room_version": "12"}, [], [], 1, "")
        room_id = "!" + create_id[1:]
        join, _ = make(rv, room_id, "m.room.member", ALICE, {"membership": "join"}, [], [create_id], 2, ALICE)
        self.assertIsNone(check_event_auth(join, {("m.room.create", ""): create}, rv))
