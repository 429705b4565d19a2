"""The filter model: validation (errcodes), matching, wildcards, event_fields (pure, no I/O)."""

from twisted.trial.unittest import TestCase

from mxtwisted.sync.filters import (
    BAD_JSON,
    DEFAULT_TIMELINE_LIMIT,
    INVALID_PARAM,
    MAX_TIMELINE_LIMIT,
    EventFilter,
    InvalidFilter,
    RoomEventFilter,
    apply_event_fields,
    parse_filter,
    parse_room_event_filter,
    split_property_path,
    type_matches,
)

MSG = {"type": "m.room.message", "sender": "@a:x", "content": {"body": "hi"}}
IMG = {"type": "m.room.message", "sender": "@b:x", "content": {"url": "mxc://x/y", "msgtype": "m.image"}}
MEMBER = {"type": "m.room.member", "sender": "@a:x", "state_key": "@a:x", "content": {"membership": "join"}}


class WildcardTests(TestCase):
    def test_star_matches_any_sequence_anywhere(self):
        self.assertTrue(type_matches("m.room.*", "m.room.message"))
        self.assertTrue(type_matches("*.member", "m.room.member"))
        self.assertTrue(type_matches("m.*.name", "m.room.name"))
        self.assertTrue(type_matches("*", "anything"))
        self.assertTrue(type_matches("m.room.*", "m.room."))
        self.assertFalse(type_matches("m.room.*", "m.roomy"))
        self.assertFalse(type_matches("m.room.message", "m.room.message.extra"))

    def test_other_glob_characters_are_literal(self):
        self.assertFalse(type_matches("m.room.?essage", "m.room.message"))
        self.assertTrue(type_matches("m.[x]*", "m.[x]y"))
        self.assertFalse(type_matches("m.[x]*", "m.xy"))


class MatchingTests(TestCase):
    def test_absent_lists_include_everything_empty_lists_nothing(self):
        self.assertTrue(EventFilter().matches(MSG))
        self.assertFalse(EventFilter(types=()).matches(MSG))
        self.assertFalse(EventFilter(senders=()).matches(MSG))
        self.assertTrue(EventFilter(types=()).blocks_all())
        self.assertTrue(EventFilter(not_types=("*",)).blocks_all())
        self.assertFalse(EventFilter(types=("m.*",)).blocks_all())

    def test_not_lists_win(self):
        f = EventFilter(types=("m.room.*",), not_types=("m.room.member",))
        self.assertTrue(f.matches(MSG))
        self.assertFalse(f.matches(MEMBER))
        f = EventFilter(senders=("@a:x", "@b:x"), not_senders=("@a:x",))
        self.assertFalse(f.matches(MSG))
        self.assertTrue(f.matches(IMG))

    def test_senders_are_exact(self):
        self.assertFalse(EventFilter(senders=("@*:x",)).matches(MSG))

    def test_room_event_filter_rooms_and_contains_url(self):
        f = RoomEventFilter(rooms=("!a:x", "!b:x"), not_rooms=("!b:x",))
        self.assertTrue(f.matches(MSG, "!a:x"))
        self.assertFalse(f.matches(MSG, "!b:x"))
        self.assertFalse(f.matches(MSG, "!c:x"))
        self.assertTrue(RoomEventFilter(contains_url=True).matches(IMG, "!a:x"))
        self.assertFalse(RoomEventFilter(contains_url=True).matches(MSG, "!a:x"))
        self.assertTrue(RoomEventFilter(contains_url=False).matches(MSG, "!a:x"))
        self.assertFalse(RoomEventFilter(contains_url=False).matches(IMG, "!a:x"))
        # A non-string url is not a url.
        self.assertFalse(RoomEventFilter(contains_url=True).matches({"type": "t", "content": {"url": 3}}, "!a:x"))

    def test_limit(self):
        f = EventFilter(limit=1)
        self.assertEqual(f.filter([MSG, IMG]), [MSG])


class ParseTests(TestCase):
    def assertInvalid(self, value, errcode):
        with self.assertRaises(InvalidFilter) as cm:
            parse_filter(value)
        self.assertEqual(cm.exception.errcode, errcode, cm.exception.message)

    def test_every_field(self):
        f = parse_filter({
            "event_fields": ["type", "content.body"],
            "event_format": "federation",
            "presence": {"limit": 3, "types": ["m.presence"], "not_senders": ["@spam:x"]},
            "account_data": {"not_types": ["m.secret*"]},
            "room": {
                "rooms": ["!a:x"],
                "not_rooms": ["!b:x"],
                "include_leave": True,
                "ephemeral": {"types": ["m.typing"]},
                "state": {"lazy_load_members": True, "include_redundant_members": True},
                "timeline": {"limit": 5, "contains_url": False, "unread_thread_notifications": True},
                "account_data": {"types": ["m.tag"]},
            },
            "org.example.future": {"anything": 1},
        })
        self.assertEqual(f.event_fields, ("type", "content.body"))
        self.assertEqual(f.event_format, "federation")
        self.assertEqual(f.presence.limit, 3)
        self.assertEqual(f.presence.not_senders, ("@spam:x",))
        self.assertEqual(f.account_data.not_types, ("m.secret*",))
        self.assertEqual(f.room.rooms, ("!a:x",))
        self.assertTrue(f.room.include_leave)
        self.assertEqual(f.room.ephemeral.types, ("m.typing",))
        self.assertTrue(f.lazy_load_members)
        self.assertTrue(f.include_redundant_members)
        self.assertEqual(f.timeline_limit, 5)
        self.assertIs(f.room.timeline.contains_url, False)
        self.assertTrue(f.unread_thread_notifications)
        self.assertEqual(f.room.account_data.types, ("m.tag",))

    def test_defaults(self):
        f = parse_filter({})
        self.assertEqual(f.timeline_limit, DEFAULT_TIMELINE_LIMIT)
        self.assertEqual(f.event_format, "client")
        self.assertIsNone(f.event_fields)
        self.assertFalse(f.lazy_load_members)
        self.assertFalse(f.room.include_leave)
        # include_redundant_members means nothing without lazy_load_members.
        self.assertFalse(parse_filter({"room": {"state": {"include_redundant_members": True}}}).include_redundant_members)

    def test_timeline_limit_is_capped(self):
        self.assertEqual(parse_filter({"room": {"timeline": {"limit": 10**6}}}).timeline_limit, MAX_TIMELINE_LIMIT)
        self.assertEqual(parse_filter({"room": {"timeline": {"limit": 7.0}}}).timeline_limit, 7)
        self.assertEqual(parse_filter({"room": {"timeline": {"limit": 0}}}).timeline_limit, 0)

    def test_wrong_types_are_bad_json(self):
        for value in (
            [],
            {"event_fields": "type"},
            {"event_fields": [1]},
            {"event_format": 1},
            {"presence": []},
            {"presence": {"limit": "10"}},
            {"presence": {"limit": True}},
            {"presence": {"limit": 1.5}},
            {"account_data": {"types": "m.tag"}},
            {"room": "all"},
            {"room": {"include_leave": "yes"}},
            {"room": {"rooms": "!a:x"}},
            {"room": {"timeline": {"not_types": [None]}}},
            {"room": {"state": {"lazy_load_members": 1}}},
            {"room": {"timeline": {"contains_url": "true"}}},
            {"room": {"ephemeral": {"senders": {}}}},
        ):
            self.assertInvalid(value, BAD_JSON)

    def test_invalid_values_are_invalid_param(self):
        for value in (
            {"event_format": "xml"},
            {"presence": {"limit": -1}},
            {"presence": {"senders": ["alice"]}},
            {"room": {"rooms": ["#alias:x"]}},
            {"room": {"timeline": {"not_senders": ["@"]}}},
            {"room": {"state": {"not_rooms": [""]}}},
        ):
            self.assertInvalid(value, INVALID_PARAM)

    def test_room_event_filter_alone(self):
        f = parse_room_event_filter({"types": ["m.room.message"], "lazy_load_members": True})
        self.assertTrue(f.lazy_load_members)
        self.assertTrue(f.matches(MSG, "!a:x"))
        with self.assertRaises(InvalidFilter):
            parse_room_event_filter({"types": "x"})


class EventFieldsTests(TestCase):
    def test_split_property_path(self):
        self.assertEqual(split_property_path("content.body"), ["content", "body"])
        self.assertEqual(split_property_path(r"content.m\.relates_to"), ["content", "m.relates_to"])
        self.assertEqual(split_property_path(r"content.m\\foo"), ["content", "m\\foo"])
        self.assertEqual(split_property_path(r"content.a\xb"), ["content", "a\\xb"])
        self.assertEqual(split_property_path("type"), ["type"])

    def test_apply_event_fields(self):
        event = {
            "type": "m.room.message",
            "event_id": "$e",
            "content": {"body": "hi", "m.relates_to": {"rel_type": "m.thread"}, "msgtype": "m.text"},
            "unsigned": {"age": 1},
        }
        self.assertEqual(
            apply_event_fields(event, ["type", "content.body", r"content.m\.relates_to.rel_type", "nope.x"]),
            {"type": "m.room.message", "content": {"body": "hi", "m.relates_to": {"rel_type": "m.thread"}}},
        )
        whole = apply_event_fields(event, ["content", "content.body"])
        self.assertEqual(whole, {"content": event["content"]})
        whole["content"]["body"] = "changed"
        self.assertEqual(event["content"]["body"], "hi")
        self.assertEqual(apply_event_fields(event, []), {})
