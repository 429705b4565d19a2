"""Tests for mxtwisted.events.validation (event format and identifier grammar)."""

from __future__ import annotations

import copy

from twisted.trial.unittest import SynchronousTestCase

from mxtwisted.events.canonical_json import encode_canonical_json
from mxtwisted.events.room_versions import KNOWN_ROOM_VERSIONS
from mxtwisted.events.validation import (
    MAX_PDU_SIZE,
    EventValidationError,
    is_compliant_user_id,
    is_valid_event_id,
    is_valid_room_alias,
    is_valid_room_id,
    is_valid_server_name,
    is_valid_user_id,
    parse_user_id,
    validate_event,
)


def rv(identifier):
    return KNOWN_ROOM_VERSIONS[identifier]


ALL_VERSIONS = [str(n) for n in range(1, 13)]
V12_ROOM_ID = "!" + "A" * 42 + "w"


def pdu(version, **overrides):
    """A valid message event in the format of ``version``."""
    v = rv(version)
    event = {
        "type": "m.room.message",
        "sender": "@alice:example.org",
        "room_id": V12_ROOM_ID if v.room_id_from_create_event else "!room:example.org",
        "content": {"msgtype": "m.text", "body": "hi"},
        "depth": 10,
        "origin_server_ts": 1700000000000,
        "hashes": {"sha256": "aGFzaA"},
        "signatures": {"example.org": {"ed25519:a_1": "c2ln"}},
        "unsigned": {"age": 5},
    }
    if v.event_id_in_event:
        event["event_id"] = "$abc:example.org"
        event["prev_events"] = [["$p:example.org", {"sha256": "aGFzaA"}]]
        event["auth_events"] = [["$a:example.org", {"sha256": "aGFzaA"}]]
    else:
        event["prev_events"] = ["$" + "P" * 43]
        event["auth_events"] = ["$" + "A" * 43]
    for k, val in overrides.items():
        if val is _DELETE:
            event.pop(k, None)
        else:
            event[k] = val
    return event


_DELETE = object()


class ValidEventTests(SynchronousTestCase):
    def test_valid_in_every_version(self):
        for v in ALL_VERSIONS:
            validate_event(pdu(v), rv(v))
            validate_event(pdu(v, state_key="", type="m.room.topic", unsigned=_DELETE), rv(v))

    def test_v12_create_event_has_no_room_id(self):
        create = pdu("12", type="m.room.create", state_key="", room_id=_DELETE, prev_events=[], auth_events=[])
        validate_event(create, rv("12"))
        # Other v12 events need a room_id of the hash form.
        self.assertRaises(EventValidationError, validate_event, pdu("12", room_id=_DELETE), rv("12"))
        self.assertRaises(EventValidationError, validate_event, pdu("12", room_id="!room:example.org"), rv("12"))
        # Before v12 the create event needs one too.
        create11 = pdu("11", type="m.room.create", state_key="", room_id=_DELETE)
        self.assertRaises(EventValidationError, validate_event, create11, rv("11"))

    def test_error_is_a_value_error_with_reason(self):
        e = self.assertRaises(EventValidationError, validate_event, pdu("10", depth="1"), rv("10"))
        self.assertIsInstance(e, ValueError)
        self.assertIn("depth", e.reason)
        self.assertFalse(e.persist_as_rejected)


class RequiredKeysTests(SynchronousTestCase):
    def test_each_required_key(self):
        common = [
            "type",
            "sender",
            "room_id",
            "content",
            "depth",
            "origin_server_ts",
            "hashes",
            "signatures",
            "prev_events",
            "auth_events",
        ]
        for v in ALL_VERSIONS:
            required = common + (["event_id"] if v in ("1", "2") else [])
            for key in required:
                e = self.assertRaises(EventValidationError, validate_event, pdu(v, **{key: _DELETE}), rv(v))
                self.assertIn(key, e.reason, (v, key))
            # Not required: state_key, unsigned, redacts, origin.
            validate_event(pdu(v, unsigned=_DELETE), rv(v))

    def test_event_id_not_part_of_later_formats(self):
        validate_event(pdu("4", event_id=12), rv("4"))

    def test_not_an_object(self):
        for bad in ([], "x", None):
            self.assertRaises(EventValidationError, validate_event, bad, rv("10"))


class TypeTests(SynchronousTestCase):
    def test_wrong_types(self):
        bad_values = {
            "type": [5, None, ["m.room.message"]],
            "sender": [5, None],
            "room_id": [5, None],
            "state_key": [5, None, True],
            "content": ["x", [], None],
            "unsigned": ["x", []],
            "origin_server_ts": ["1", True, None],
            "depth": ["1", True, None, -1],
            "hashes": [{}, {"sha256": 5}, "x", {"sha512": "x"}],
            "signatures": [[], "x", {"example.org": "sig"}, {"example.org": {"ed25519:1": 5}}],
            "prev_events": ["$x", {"$x": 1}],
            "auth_events": ["$x", None],
        }
        for v in ("1", "3", "5", "6", "10", "11", "12"):
            for key, values in bad_values.items():
                for value in values:
                    self.assertRaises(EventValidationError, validate_event, pdu(v, **{key: value}), rv(v))

    def test_floats_only_refused_from_v6(self):
        for key, value in (("depth", 10.0), ("origin_server_ts", 1.5)):
            for v in ALL_VERSIONS:
                self.assertRaises(EventValidationError, validate_event, pdu(v, **{key: value}), rv(v))
        for v in ("1", "2", "3", "4", "5"):
            validate_event(pdu(v, content={"n": 1.5, "big": 2**60}), rv(v))
        for v in ("6", "7", "8", "9", "10", "11", "12"):
            self.assertRaises(EventValidationError, validate_event, pdu(v, content={"n": 1.5}), rv(v))
            self.assertRaises(EventValidationError, validate_event, pdu(v, content={"big": 2**53}), rv(v))
            self.assertRaises(EventValidationError, validate_event, pdu(v, origin_server_ts=2**53), rv(v))
            validate_event(pdu(v, content={"big": 2**53 - 1, "small": -(2**53) + 1}), rv(v))

    def test_never_encodable(self):
        for v in ("1", "10"):
            self.assertRaises(EventValidationError, validate_event, pdu(v, content={"n": float("nan")}), rv(v))
            self.assertRaises(EventValidationError, validate_event, pdu(v, content={"s": "\ud800"}), rv(v))

    def test_redacts(self):
        redaction = {"type": "m.room.redaction", "content": {}}
        for v in ("1", "3", "10"):
            validate_event(pdu(v, redacts="$x:example.org", **redaction), rv(v))
            self.assertRaises(EventValidationError, validate_event, pdu(v, redacts=5, **redaction), rv(v))
        # From v11 "redacts" is in content; a stray top-level key is just an unknown key.
        validate_event(pdu("11", redacts=5, **redaction), rv("11"))


class DepthAndReferenceTests(SynchronousTestCase):
    def test_depth_limits(self):
        for v in ALL_VERSIONS:
            validate_event(pdu(v, depth=0), rv(v))
            self.assertRaises(EventValidationError, validate_event, pdu(v, depth=-1), rv(v))
            validate_event(pdu(v, depth=2**53 - 1), rv(v))
        for v in ("1", "2", "3", "4", "5"):
            validate_event(pdu(v, depth=2**63 - 1), rv(v))
            self.assertRaises(EventValidationError, validate_event, pdu(v, depth=2**63), rv(v))
        for v in ("6", "10", "12"):
            self.assertRaises(EventValidationError, validate_event, pdu(v, depth=2**53), rv(v))

    def test_reference_counts(self):
        for v in ALL_VERSIONS:
            ref = pdu(v)["prev_events"][0]
            validate_event(pdu(v, prev_events=[ref] * 20, auth_events=[ref] * 10), rv(v))
            validate_event(pdu(v, prev_events=[], auth_events=[]), rv(v))
            e = self.assertRaises(EventValidationError, validate_event, pdu(v, prev_events=[ref] * 21), rv(v))
            self.assertIn("prev_events", e.reason)
            e = self.assertRaises(EventValidationError, validate_event, pdu(v, auth_events=[ref] * 11), rv(v))
            self.assertIn("auth_events", e.reason)

    def test_reference_formats(self):
        for v in ("1", "2"):
            for bad in (
                ["$p:example.org"],
                [["$p:example.org"]],
                [["$p:example.org", {}, 1]],
                [[5, {}]],
                [["$p", "hash"]],
            ):
                self.assertRaises(EventValidationError, validate_event, pdu(v, prev_events=bad), rv(v))
                self.assertRaises(EventValidationError, validate_event, pdu(v, auth_events=bad), rv(v))
        for v in ("3", "4", "11", "12"):
            for bad in ([["$p", {"sha256": "x"}]], [5], [None]):
                self.assertRaises(EventValidationError, validate_event, pdu(v, prev_events=bad), rv(v))
                self.assertRaises(EventValidationError, validate_event, pdu(v, auth_events=bad), rv(v))


class SizeLimitTests(SynchronousTestCase):
    def sized(self, version, size):
        event = pdu(version, content={"body": ""})
        overhead = len(encode_canonical_json(event))
        event["content"]["body"] = "x" * (size - overhead)
        self.assertEqual(len(encode_canonical_json(event)), size)
        return event

    def test_pdu_size(self):
        for v in ("1", "10", "12"):
            validate_event(self.sized(v, MAX_PDU_SIZE), rv(v))
            e = self.assertRaises(EventValidationError, validate_event, self.sized(v, MAX_PDU_SIZE + 1), rv(v))
            self.assertFalse(e.persist_as_rejected)
        self.assertEqual(MAX_PDU_SIZE, 65536)

    def test_size_counts_signatures_and_unsigned(self):
        event = self.sized("10", MAX_PDU_SIZE)
        self.assertRaises(EventValidationError, validate_event, dict(event, unsigned={"age": 123456}), rv("10"))
        sigs = copy.deepcopy(event["signatures"])
        sigs["other.org"] = {"ed25519:x": "y"}
        self.assertRaises(EventValidationError, validate_event, dict(event, signatures=sigs), rv("10"))

    def test_field_limits_in_bytes(self):
        ascii_255 = "a" * 255
        for v in ALL_VERSIONS:
            validate_event(pdu(v, type=ascii_255, state_key=ascii_255), rv(v))
            for key in ("type", "state_key"):
                e = self.assertRaises(EventValidationError, validate_event, pdu(v, **{key: "a" * 256}), rv(v))
                self.assertFalse(e.persist_as_rejected, (v, key))
        sender_255 = "@" + "a" * (254 - len(":example.org")) + ":example.org"
        self.assertEqual(len(sender_255), 255)
        validate_event(pdu("10", sender=sender_255), rv("10"))
        self.assertRaises(EventValidationError, validate_event, pdu("10", sender="@a" + sender_255[1:]), rv("10"))
        room_256 = "!" + "r" * (255 - len(":example.org")) + ":example.org"
        self.assertRaises(EventValidationError, validate_event, pdu("10", room_id=room_256), rv("10"))
        event_id_256 = "$" + "e" * (255 - len(":example.org")) + ":example.org"
        self.assertRaises(EventValidationError, validate_event, pdu("1", event_id=event_id_256), rv("1"))

    def test_bytes_over_code_points_within(self):
        # 128 two-byte characters: 128 code points, 256 bytes.
        wide = "é" * 128
        historical_sender = "@" + "é" * 121 + ":example.org"  # 134 code points, 255 bytes
        validate_event(pdu("10", sender=historical_sender), rv("10"))
        for v in ALL_VERSIONS:
            for key, value in (("state_key", wide), ("type", wide), ("sender", "@é" + historical_sender[1:])):
                e = self.assertRaises(EventValidationError, validate_event, pdu(v, **{key: value}), rv(v))
                # Dropped from v11; kept as rejected before (older servers counted code points).
                self.assertEqual(e.persist_as_rejected, v not in ("11", "12"), (v, key))

    def test_hard_failure_wins_over_lenient_one(self):
        e = self.assertRaises(
            EventValidationError, validate_event, pdu("10", state_key="é" * 128, type="a" * 256), rv("10")
        )
        self.assertFalse(e.persist_as_rejected)
        e = self.assertRaises(EventValidationError, validate_event, pdu("10", state_key="é" * 128, depth=-1), rv("10"))
        self.assertFalse(e.persist_as_rejected)


class EventIdentifierTests(SynchronousTestCase):
    def test_sender(self):
        for sender in ("@Alice:example.org", "@:example.org", "@a b\x01:example.org", "@ü:[::1]:8448"):
            validate_event(pdu("10", sender=sender), rv("10"))
        for sender in ("alice:example.org", "@alice", "@alice:", "@alice:bad host", "@a\x00:example.org"):
            self.assertRaises(EventValidationError, validate_event, pdu("10", sender=sender), rv("10"))

    def test_room_id(self):
        for room_id in ("!abc", "abc:example.org", "!abc:", "!abc:exa mple.org", "$abc:example.org"):
            self.assertRaises(EventValidationError, validate_event, pdu("10", room_id=room_id), rv("10"))
        self.assertRaises(EventValidationError, validate_event, pdu("12", room_id="!" + "A" * 42), rv("12"))

    def test_event_id_v1(self):
        for event_id in ("abc:example.org", "$abc", "$abc:", "$" + "A" * 43):
            self.assertRaises(EventValidationError, validate_event, pdu("1", event_id=event_id), rv("1"))


class ServerNameTests(SynchronousTestCase):
    def test_spec_examples(self):
        # Appendices, "Server Name".
        for name in (
            "matrix.org",
            "matrix.org:8888",
            "1.2.3.4",
            "1.2.3.4:1234",
            "[1234:5678::abcd]",
            "[1234:5678::abcd]:5678",
        ):
            self.assertTrue(is_valid_server_name(name), name)

    def test_valid(self):
        for name in (
            "localhost",
            "MATRIX.ORG",
            "a",
            "x-y.example",
            "[::1]",
            "[::1]:8448",
            "[::ffff:1.2.3.4]",
            "[2001:DB8::1]",
            "255.255.255.255",
            "0.0.0.0:0",
            "example.org:99999",
            "1.2.3",  # not a dotted quad: a DNS name by the grammar
            "a" * 255,
        ):
            self.assertTrue(is_valid_server_name(name), name)

    def test_invalid(self):
        for name in (
            "",
            ":8448",
            "matrix.org:",
            "matrix.org:123456",
            "matrix.org:8a",
            "matrix.org:-1",
            "matrix.org:+80",
            "matrix.org:８０",  # non-ASCII digits
            "matrix.org:80:80",
            "1.2.3.256",
            "999.1.1.1",
            "exa mple.org",
            "ex_ample.org",
            "example.org/",
            "user@example.org",
            "éxample.org",
            "[1234:5678::abcd",
            "1234:5678::abcd",
            "[::1]x",
            "[::1]:",
            "[::1]:8448:1",
            "[gggg::1]",
            "[1.2.3.4]",
            "[:]",
            "[]",
            "[::1%eth0]",
            "[" + "1:" * 22 + "1]",
            "a" * 256,
            "example.org\n",
            None,
            5,
        ):
            self.assertFalse(is_valid_server_name(name), repr(name))


class UserIdTests(SynchronousTestCase):
    def test_strict(self):
        for uid in ("@alice:example.org", "@a.b_c=d-e/f+g:example.org:8448", "@0:[::1]", "@x:1.2.3.4"):
            self.assertTrue(is_valid_user_id(uid), uid)
            self.assertTrue(is_valid_user_id(uid, historical=True), uid)
            self.assertTrue(is_compliant_user_id(uid), uid)
        for uid in (
            "@Alice:example.org",
            "@:example.org",
            "@al ice:example.org",
            "@alice!:example.org",
            "@é:example.org",
        ):
            self.assertFalse(is_valid_user_id(uid), uid)

    def test_historical_and_compliant(self):
        # printable ASCII other than ':' (0x21-0x39, 0x3B-0x7E): compliant historical IDs
        printable = "".join(chr(c) for c in range(0x21, 0x7F) if c != 0x3A)
        uid = "@" + printable + ":example.org"
        self.assertFalse(is_valid_user_id(uid))
        self.assertTrue(is_valid_user_id(uid, historical=True))
        self.assertTrue(is_compliant_user_id(uid))
        # Accepted (MUST) but non-compliant: empty, spaces, controls, non-ASCII.
        for uid in ("@:example.org", "@a b:example.org", "@a\x01:example.org", "@é:example.org", "@\x7f:example.org"):
            self.assertTrue(is_valid_user_id(uid, historical=True), repr(uid))
            self.assertFalse(is_compliant_user_id(uid), repr(uid))
        # Never: NUL, lone surrogates.
        for uid in ("@a\x00:example.org", "@\ud800:example.org"):
            self.assertFalse(is_valid_user_id(uid, historical=True), repr(uid))
            self.assertFalse(is_compliant_user_id(uid), repr(uid))

    def test_structure_and_length(self):
        for uid in ("alice:example.org", "@alice", "@alice:", "@alice:bad host", "#alice:example.org", "", None, 5):
            self.assertFalse(is_valid_user_id(uid, historical=True), repr(uid))
        at_255 = "@" + "a" * (254 - len(":example.org")) + ":example.org"
        self.assertEqual(len(at_255), 255)
        self.assertTrue(is_valid_user_id(at_255))
        self.assertFalse(is_valid_user_id("@a" + at_255[1:]))
        # bytes, not code points
        self.assertFalse(is_valid_user_id("@" + "é" * 122 + ":example.org", historical=True))
        self.assertTrue(is_valid_user_id("@" + "é" * 121 + ":example.org", historical=True))

    def test_parse(self):
        self.assertEqual(parse_user_id("@alice:example.org"), ("alice", "example.org"))
        self.assertEqual(parse_user_id("@alice:[::1]:8448"), ("alice", "[::1]:8448"))
        self.assertEqual(parse_user_id("@Ali ce:example.org"), ("Ali ce", "example.org"))
        for bad in ("alice:example.org", "@alice", "@a:bad host", None):
            self.assertRaises(ValueError, parse_user_id, bad)


class RoomAndEventIdTests(SynchronousTestCase):
    def test_room_ids_with_domain(self):
        for v in [str(n) for n in range(1, 12)]:
            for room_id in ("!abc:example.org", "!ABC123:example.org:8448", "!:example.org", "!ü é:[::1]"):
                self.assertTrue(is_valid_room_id(room_id, rv(v)), (v, room_id))
            for room_id in ("!abc", "abc:example.org", "!abc:", "!a\x00:example.org", "!" + "A" * 43, "", None):
                self.assertFalse(is_valid_room_id(room_id, rv(v)), (v, room_id))
        room_256 = "!" + "r" * (255 - len(":example.org")) + ":example.org"
        self.assertFalse(is_valid_room_id(room_256, rv("10")))
        self.assertTrue(is_valid_room_id(room_256[:1] + room_256[2:], rv("10")))

    def test_room_ids_v12(self):
        good = "!" + "Nhcu5BS-UMnFX7hBVfVSoXiD7OgH6iRT-xyIuqDnpYQ"  # the spec's PDU v12 example
        self.assertTrue(is_valid_room_id(good, rv("12")))
        for bad in (
            "!abc:example.org",
            good[:-1],
            good + "A",
            good[:-1] + "/",
            good[:-1] + "+",
            "$" + good[1:],
            good[:-1] + "=",
        ):
            self.assertFalse(is_valid_room_id(bad, rv("12")), bad)

    def test_event_ids(self):
        for v in ("1", "2"):
            self.assertTrue(is_valid_event_id("$a4ecee13e2accdadf56c1025:example.com", rv(v)))
            for bad in ("$abc", "abc:example.org", "$abc:bad host", "$" + "A" * 43):
                self.assertFalse(is_valid_event_id(bad, rv(v)), bad)
        v3_id = "$acR1l0raoZnm60CBwAVgqbZqoO/mYU81xysh1u7XcJk"  # room v3 page example
        v4_id = "$Rqnc-F-dvnEYJTyHq_iKxU2bZ1CI92-kuZq3a5lr5Zg"  # v4 event ID fragment example
        self.assertTrue(is_valid_event_id(v3_id, rv("3")))
        self.assertFalse(is_valid_event_id(v3_id, rv("4")))
        for v in ("4", "5", "10", "11", "12"):
            self.assertTrue(is_valid_event_id(v4_id, rv(v)))
            self.assertFalse(is_valid_event_id(v4_id, rv("3")))
            for bad in (v4_id[:-1], v4_id + "A", "!" + v4_id[1:], "$abc:example.org", None):
                self.assertFalse(is_valid_event_id(bad, rv(v)), bad)

    def test_room_aliases(self):
        for alias in ("#room:example.org", "#Räume ☃:example.org:8448", "#:example.org"):
            self.assertTrue(is_valid_room_alias(alias), alias)
        for alias in ("#room", "room:example.org", "#a\x00:example.org", "#a:bad host", "!a:example.org", None):
            self.assertFalse(is_valid_room_alias(alias), repr(alias))
        alias_256 = "#" + "r" * (255 - len(":example.org")) + ":example.org"
        self.assertFalse(is_valid_room_alias(alias_256))
