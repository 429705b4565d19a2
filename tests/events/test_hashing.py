"""Tests for mxtwisted.events.hashing (content hash, reference hash, event and room IDs)."""

from __future__ import annotations

import base64
import hashlib
import json
import random

from twisted.trial.unittest import SynchronousTestCase

from mxtwisted.events.event import Event
from mxtwisted.events.hashing import (
    ContentHashError,
    add_content_hash,
    check_content_hash,
    compute_content_hash,
    compute_event_id,
    compute_reference_hash,
    compute_room_id_v12,
    generate_v1_event_id,
)
from mxtwisted.events.room_versions import KNOWN_ROOM_VERSIONS
from mxtwisted.events.validation import is_valid_event_id, is_valid_room_id


def rv(identifier):
    return KNOWN_ROOM_VERSIONS[identifier]


def spec_reference_canonical_json(value):
    """The reference implementation printed in the spec appendix "Canonical JSON"."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), sort_keys=True).encode("UTF-8")


def unpadded_b64(data, urlsafe=False):
    enc = base64.urlsafe_b64encode if urlsafe else base64.b64encode
    return enc(data).decode("ascii").rstrip("=")


# Appendices, "Cryptographic Test Vectors" > "Event Signing": the two input events.
SPEC_MINIMAL_EVENT = {
    "room_id": "!x:domain",
    "sender": "@a:domain",
    "origin": "domain",
    "origin_server_ts": 1000000,
    "signatures": {},
    "hashes": {},
    "type": "X",
    "content": {},
    "prev_events": [],
    "auth_events": [],
    "depth": 3,
    "unsigned": {"age_ts": 1000000},
}
SPEC_REDACTABLE_EVENT = {
    "content": {"body": "Here is the message content"},
    "event_id": "$0:domain",
    "origin": "domain",
    "origin_server_ts": 1000000,
    "type": "m.room.message",
    "room_id": "!r:domain",
    "sender": "@u:domain",
    "signatures": {},
    "unsigned": {"age_ts": 1000000},
}


def message_event(**overrides):
    event = {
        "auth_events": ["$create", "$power", "$member"],
        "prev_events": ["$prev"],
        "type": "m.room.message",
        "room_id": "!room:example.org",
        "sender": "@alice:example.org",
        "content": {"msgtype": "m.text", "body": "hello"},
        "depth": 12,
        "origin_server_ts": 1700000000000,
        "hashes": {"sha256": "placeholder"},
        "signatures": {"example.org": {"ed25519:a_1": "sig"}},
        "unsigned": {"age_ts": 1700000000000},
    }
    event.update(overrides)
    return event


class UnpaddedBase64Tests(SynchronousTestCase):
    def test_spec_examples(self):
        # Appendices, "Unpadded Base64", via the library the hashing module uses.
        from unpaddedbase64 import decode_base64, encode_base64

        examples = {
            b"": "",
            b"f": "Zg",
            b"fo": "Zm8",
            b"foo": "Zm9v",
            b"foob": "Zm9vYg",
            b"fooba": "Zm9vYmE",
            b"foobar": "Zm9vYmFy",
        }
        for raw, encoded in examples.items():
            self.assertEqual(encode_base64(raw), encoded)
            self.assertEqual(decode_base64(encoded), raw)
            # "implementations SHOULD accept input with or without padding"
            self.assertEqual(decode_base64(base64.b64encode(raw).decode()), raw)
        # URL-safe: '-' and '_' for values 62 and 63.
        self.assertEqual(encode_base64(b"\xfb\xff", urlsafe=True), "-_8")
        self.assertEqual(encode_base64(b"\xfb\xff"), "+/8")


class ContentHashTests(SynchronousTestCase):
    def test_spec_vectors(self):
        """The ``hashes.sha256`` values of the appendix's "Event Signing" outputs."""
        self.assertEqual(
            add_content_hash(SPEC_MINIMAL_EVENT)["hashes"], {"sha256": "5jM4wQpv6lnBo7CLIghJuHdW+s2CMBJPUOGOC89ncos"}
        )
        self.assertEqual(
            add_content_hash(SPEC_REDACTABLE_EVENT)["hashes"], {"sha256": "onLKD1bGljeBWQhWZ1kaP9SorVmRQNdN5aM2JYU2n/g"}
        )

    def test_independent_computation(self):
        event = message_event()
        stripped = {k: v for k, v in event.items() if k not in ("unsigned", "signatures", "hashes")}
        self.assertEqual(compute_content_hash(event), hashlib.sha256(spec_reference_canonical_json(stripped)).digest())
        self.assertEqual(len(compute_content_hash(event)), 32)

    def test_covers_everything_but_unsigned_signatures_hashes(self):
        base = compute_content_hash(message_event())
        self.assertEqual(compute_content_hash(message_event(unsigned={"age": 5})), base)
        self.assertEqual(compute_content_hash(message_event(signatures={})), base)
        self.assertEqual(compute_content_hash(message_event(hashes={"sha256": "other", "blake": "x"})), base)
        ev = message_event()
        del ev["unsigned"], ev["signatures"], ev["hashes"]
        self.assertEqual(compute_content_hash(ev), base)
        self.assertNotEqual(compute_content_hash(message_event(content={"body": "hellO"})), base)
        self.assertNotEqual(compute_content_hash(message_event(custom=1)), base)
        self.assertNotEqual(compute_content_hash(message_event(depth=13)), base)

    def test_add_and_check(self):
        event = message_event(hashes={"sha256": "stale", "sha512": "kept"})
        before = json.dumps(event, sort_keys=True)
        hashed = add_content_hash(event)
        self.assertEqual(json.dumps(event, sort_keys=True), before)  # input untouched
        self.assertEqual(hashed["hashes"]["sha512"], "kept")
        self.assertEqual(hashed["hashes"]["sha256"], unpadded_b64(compute_content_hash(event)))
        self.assertTrue(check_content_hash(hashed))
        tampered = dict(hashed, content={"body": "evil"})
        self.assertFalse(check_content_hash(tampered))
        # A padded hash is accepted too.
        padded = dict(hashed, hashes={"sha256": hashed["hashes"]["sha256"] + "="})
        self.assertTrue(check_content_hash(padded))

    def test_check_malformed_hashes(self):
        for hashes in (None, "abc", [], {}, {"sha256": 5}, {"sha512": "x"}, {"sha256": "é"}, {"sha256": "abcde"}):
            event = message_event(hashes=hashes)
            if hashes is None:
                del event["hashes"]
            self.assertRaises(ContentHashError, check_content_hash, event)
        self.assertTrue(issubclass(ContentHashError, ValueError))

    def test_legacy_numbers_still_hash(self):
        # Rooms v1-v5 may carry floats or big integers; the content hash is defined for them.
        ev = message_event(content={"n": 2**60, "f": 1.5})
        self.assertEqual(
            compute_content_hash(ev),
            hashlib.sha256(
                spec_reference_canonical_json(
                    {k: v for k, v in ev.items() if k not in ("unsigned", "signatures", "hashes")}
                )
            ).digest(),
        )


class ReferenceHashTests(SynchronousTestCase):
    def test_independent_computation(self):
        event = message_event(origin="example.org")
        # Hand-redacted per the v1-v10 rules, minus signatures and unsigned.
        expected_pre_v11 = {
            "auth_events": event["auth_events"],
            "prev_events": event["prev_events"],
            "type": "m.room.message",
            "room_id": "!room:example.org",
            "sender": "@alice:example.org",
            "content": {},
            "depth": 12,
            "origin": "example.org",
            "origin_server_ts": 1700000000000,
            "hashes": {"sha256": "placeholder"},
        }
        expected_v11 = dict(expected_pre_v11)
        del expected_v11["origin"]
        for v in ("1", "3", "4", "10"):
            self.assertEqual(
                compute_reference_hash(event, rv(v)),
                hashlib.sha256(spec_reference_canonical_json(expected_pre_v11)).digest(),
                v,
            )
        for v in ("11", "12"):
            self.assertEqual(
                compute_reference_hash(event, rv(v)),
                hashlib.sha256(spec_reference_canonical_json(expected_v11)).digest(),
                v,
            )

    def test_same_for_redacted_copy(self):
        event = message_event()
        redacted = dict(event, content={})
        del redacted["unsigned"]
        for v in ("3", "4", "11"):
            self.assertEqual(compute_reference_hash(event, rv(v)), compute_reference_hash(redacted, rv(v)))

    def test_not_covered_and_covered(self):
        base = compute_reference_hash(message_event(), rv("10"))
        # signatures, unsigned, stray age_ts, and non-kept content do not count
        self.assertEqual(compute_reference_hash(message_event(signatures={"x": {}}), rv("10")), base)
        self.assertEqual(compute_reference_hash(message_event(unsigned={"age": 1}), rv("10")), base)
        self.assertEqual(compute_reference_hash(message_event(age_ts=5), rv("10")), base)
        self.assertEqual(compute_reference_hash(message_event(content={"body": "other"}), rv("10")), base)
        # hashes (hence the full content), depth, prev_events do
        self.assertNotEqual(compute_reference_hash(message_event(hashes={"sha256": "x"}), rv("10")), base)
        self.assertNotEqual(compute_reference_hash(message_event(depth=1), rv("10")), base)
        self.assertNotEqual(compute_reference_hash(message_event(prev_events=[]), rv("10")), base)


class EventIdTests(SynchronousTestCase):
    def _event_with_slash_or_plus(self):
        # Find (deterministically) an event whose hash encodes with '+' or '/'.
        for ts in range(1000):
            ev = message_event(origin_server_ts=1700000000000 + ts)
            eid = compute_event_id(ev, rv("3"))
            if "/" in eid and "+" in eid:
                return ev
        raise AssertionError("no suitable event found")

    def test_v3_standard_v4_urlsafe_alphabet(self):
        event = self._event_with_slash_or_plus()
        v3 = compute_event_id(event, rv("3"))
        digest = compute_reference_hash(event, rv("3"))
        self.assertEqual(v3, "$" + unpadded_b64(digest))
        self.assertEqual(len(v3), 44)
        self.assertNotIn("=", v3)
        for v in ("4", "5", "6", "7", "8", "9", "10"):
            eid = compute_event_id(event, rv(v))
            self.assertEqual(eid, "$" + unpadded_b64(digest, urlsafe=True))
            self.assertEqual(eid, v3.replace("+", "-").replace("/", "_"))
            self.assertNotIn("/", eid)
            self.assertNotIn("+", eid)
            self.assertTrue(is_valid_event_id(eid, rv(v)))
            self.assertFalse(is_valid_event_id(eid, rv("3")))
        self.assertTrue(is_valid_event_id(v3, rv("3")))
        self.assertFalse(is_valid_event_id(v3, rv("4")))

    def test_v11_rules_change_the_id_of_events_with_origin(self):
        with_origin = message_event(origin="example.org")
        without = message_event()
        self.assertNotEqual(compute_event_id(with_origin, rv("10")), compute_event_id(without, rv("10")))
        self.assertEqual(compute_event_id(with_origin, rv("11")), compute_event_id(without, rv("11")))
        self.assertEqual(compute_event_id(with_origin, rv("12")), compute_event_id(with_origin, rv("11")))

    def test_v1_v2_ids_are_not_computed(self):
        for v in ("1", "2"):
            self.assertRaises(ValueError, compute_event_id, message_event(), rv(v))

    def test_event_view_uses_it(self):
        event = message_event()
        self.assertEqual(Event(event, rv("10")).event_id, compute_event_id(event, rv("10")))
        self.assertEqual(Event(dict(event, event_id="$abc:example.org"), rv("1")).event_id, "$abc:example.org")

    def test_generate_v1_event_id(self):
        rnd = random.Random(42)

        def source(n):
            return bytes(rnd.getrandbits(8) for _ in range(n))

        eid = generate_v1_event_id("example.org:8448", source)
        self.assertRegex(eid, r"^\$[A-Za-z0-9]{18}:example\.org:8448$")
        self.assertTrue(is_valid_event_id(eid, rv("1")))
        self.assertTrue(is_valid_event_id(eid, rv("2")))
        # Bytes >= 248 are skipped rather than folded (no modulo bias).
        self.assertEqual(generate_v1_event_id("a.b", lambda n: bytes([255, 0, 61, 62] * n), length=3), "$a9a:a.b")
        self.assertRaises(ValueError, generate_v1_event_id, "a" * 240, source)


def v12_create_event(**overrides):
    event = {
        "type": "m.room.create",
        "state_key": "",
        "sender": "@alice:example.org",
        "content": {"room_version": "12", "additional_creators": ["@bob:example.org"]},
        "depth": 1,
        "prev_events": [],
        "auth_events": [],
        "origin_server_ts": 1700000000000,
        "hashes": {"sha256": "placeholder"},
        "signatures": {},
    }
    event.update(overrides)
    return event


class RoomIdV12Tests(SynchronousTestCase):
    def test_room_id_is_create_event_id_with_bang(self):
        create = v12_create_event()
        room_id = compute_room_id_v12(create)
        digest = compute_reference_hash(create, rv("12"))
        self.assertEqual(room_id, "!" + unpadded_b64(digest, urlsafe=True))
        self.assertEqual(room_id[1:], compute_event_id(create, rv("12"))[1:])
        self.assertEqual(len(room_id), 44)
        self.assertTrue(is_valid_room_id(room_id, rv("12")))
        self.assertFalse(is_valid_room_id(room_id, rv("11")))
        self.assertEqual(Event(create, rv("12")).room_id, room_id)

    def test_whole_create_content_counts(self):
        # v11+ redaction keeps all create content, so it changes the room ID.
        self.assertNotEqual(
            compute_room_id_v12(v12_create_event()),
            compute_room_id_v12(v12_create_event(content={"room_version": "12"})),
        )
        self.assertEqual(
            compute_room_id_v12(v12_create_event()),
            compute_room_id_v12(v12_create_event(unsigned={"age": 3}, signatures={"x": {}})),
        )

    def test_only_for_v12_style_versions(self):
        self.assertRaises(ValueError, compute_room_id_v12, v12_create_event(), rv("11"))
        self.assertEqual(compute_room_id_v12(v12_create_event(), rv("12")), compute_room_id_v12(v12_create_event()))
