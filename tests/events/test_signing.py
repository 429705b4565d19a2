"""Tests for mxtwisted.events.signing (Appendices "Signing JSON", S-S API "Signing Events")."""

from __future__ import annotations

import copy
import io

from twisted.trial.unittest import SynchronousTestCase

from mxtwisted.events.hashing import check_content_hash
from mxtwisted.events.redaction import redact_event
from mxtwisted.events.room_versions import KNOWN_ROOM_VERSIONS
from mxtwisted.events.signing import (
    MAX_KEY_VALIDITY_PERIOD_MS,
    SignatureVerifyError,
    cap_key_valid_until_ts,
    compute_event_signature,
    cosign_event,
    decode_signing_key_base64,
    decode_verify_key_base64,
    encode_signing_key_base64,
    encode_verify_key_base64,
    generate_signing_key,
    get_verify_key,
    key_valid_for_event,
    make_key_id,
    read_signing_keys,
    required_signers,
    sign_event,
    sign_json,
    signature_key_ids,
    verify_event_signature,
    verify_json,
    write_signing_keys,
)


def rv(identifier):
    return KNOWN_ROOM_VERSIONS[identifier]


# Appendices, "Cryptographic Test Vectors".
SPEC_SEED = "YJDBA9Xnr2sVqXD9Vj7XVUnmFZcZrlw8Md7kMW+3XA1"
SPEC_SERVER = "domain"


def spec_key():
    return decode_signing_key_base64("ed25519", "1", SPEC_SEED)


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
SPEC_MINIMAL_EVENT_SIGNED = {
    "auth_events": [],
    "content": {},
    "depth": 3,
    "hashes": {"sha256": "5jM4wQpv6lnBo7CLIghJuHdW+s2CMBJPUOGOC89ncos"},
    "origin": "domain",
    "origin_server_ts": 1000000,
    "prev_events": [],
    "room_id": "!x:domain",
    "sender": "@a:domain",
    "signatures": {
        "domain": {
            "ed25519:1": "KxwGjPSDEtvnFgU00fwFz+l6d2pJM6XBIaMEn81SXPTRl16AqLAYqfIReFGZlHi5KLjAWbOoMszkwsQma+lYAg"
        }
    },
    "type": "X",
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
SPEC_REDACTABLE_EVENT_SIGNED = {
    "content": {"body": "Here is the message content"},
    "event_id": "$0:domain",
    "hashes": {"sha256": "onLKD1bGljeBWQhWZ1kaP9SorVmRQNdN5aM2JYU2n/g"},
    "origin": "domain",
    "origin_server_ts": 1000000,
    "type": "m.room.message",
    "room_id": "!r:domain",
    "sender": "@u:domain",
    "signatures": {
        "domain": {
            "ed25519:1": "Wm+VzmOUOz08Ds+0NTWb1d4CZrVsJSikkeRxh6aCcUwu6pNC78FunoD7KNWzqFn241eYHYMGCA5McEiVPdhzBA"
        }
    },
    "unsigned": {"age_ts": 1000000},
}

PRE_V11 = [str(n) for n in range(1, 11)]


class SpecJsonSigningTests(SynchronousTestCase):
    def test_empty_object(self):
        self.assertEqual(
            sign_json({}, SPEC_SERVER, spec_key()),
            {
                "signatures": {
                    "domain": {
                        "ed25519:1": "K8280/U9SSy9IVtjBuVeLr+HpOB4BQFWbg+UZaADMtTdGYI7Geitb76LTrr5QV/7Xg4ahLwYGYZzuHGZKM5ZAQ"
                    }
                }
            },
        )

    def test_object_with_data(self):
        self.assertEqual(
            sign_json({"one": 1, "two": "Two"}, SPEC_SERVER, spec_key()),
            {
                "one": 1,
                "signatures": {
                    "domain": {
                        "ed25519:1": "KqmLSbO39/Bzb0QIYE82zqLwsA+PDzYIpIRA2sRQ4sL53+sN6/fpNSoqE7BP7vBZhG6kYdD13EIMJpvhJI+6Bw"
                    }
                },
                "two": "Two",
            },
        )

    def test_unsigned_and_existing_signatures_kept_and_not_covered(self):
        obj = {"one": 1, "two": "Two", "unsigned": {"age_ts": 5}, "signatures": {"other.org": {"ed25519:x": "abc"}}}
        before = copy.deepcopy(obj)
        signed = sign_json(obj, SPEC_SERVER, spec_key())
        self.assertEqual(obj, before)  # input untouched
        self.assertEqual(signed["unsigned"], {"age_ts": 5})
        self.assertEqual(signed["signatures"]["other.org"], {"ed25519:x": "abc"})
        # Same signature as the spec's vector for {"one": 1, "two": "Two"}.
        self.assertEqual(
            signed["signatures"]["domain"]["ed25519:1"],
            "KqmLSbO39/Bzb0QIYE82zqLwsA+PDzYIpIRA2sRQ4sL53+sN6/fpNSoqE7BP7vBZhG6kYdD13EIMJpvhJI+6Bw",
        )

    def test_signing_details_example_verifies_structure(self):
        # Appendices "Signing Details": a second key of the same server adds
        # to the same server's object.
        key2 = generate_signing_key("2")
        signed = sign_json(sign_json({"a": 1}, SPEC_SERVER, spec_key()), SPEC_SERVER, key2)
        self.assertEqual(sorted(signed["signatures"]["domain"]), ["ed25519:1", "ed25519:2"])
        verify_json(signed, SPEC_SERVER, get_verify_key(spec_key()))
        verify_json(signed, SPEC_SERVER, get_verify_key(key2))


class VerifyJsonTests(SynchronousTestCase):
    def setUp(self):
        self.key = spec_key()
        self.verify_key = get_verify_key(self.key)
        self.signed = sign_json({"one": 1, "two": "Two"}, SPEC_SERVER, self.key)

    def test_valid(self):
        verify_json(self.signed, SPEC_SERVER, self.verify_key)
        # unsigned is not covered: adding it keeps the signature valid.
        verify_json(dict(self.signed, unsigned={"anything": True}), SPEC_SERVER, self.verify_key)

    def test_invalid(self):
        vk = self.verify_key
        cases = [
            dict(self.signed, one=2),  # tampered
            dict(self.signed, three=3),  # key added
            {"one": 1, "two": "Two"},  # no signatures
            dict(self.signed, signatures={}),  # not signed by the server
            dict(self.signed, signatures="nope"),
            dict(self.signed, signatures={"domain": "nope"}),
            dict(self.signed, signatures={"domain": {"ed25519:1": 5}}),
            dict(self.signed, signatures={"domain": {"ed25519:2": self.signed["signatures"]["domain"]["ed25519:1"]}}),
            dict(self.signed, signatures={"domain": {"ed25519:1": "!!!not base64!!!"}}),
            dict(self.signed, signatures={"domain": {"ed25519:1": "AAAA"}}),
        ]
        for obj in cases:
            self.assertRaises(SignatureVerifyError, verify_json, obj, SPEC_SERVER, vk)
        self.assertRaises(SignatureVerifyError, verify_json, self.signed, "other", vk)
        # the right key ID but another key
        other = get_verify_key(generate_signing_key("1"))
        self.assertRaises(SignatureVerifyError, verify_json, self.signed, SPEC_SERVER, other)

    def test_signature_key_ids(self):
        obj = {"signatures": {"s": {"ed25519:a": "x", "curve25519:b": "y", "ed25519:c": "z"}}}
        self.assertEqual(sorted(signature_key_ids(obj, "s")), ["ed25519:a", "ed25519:c"])
        self.assertEqual(signature_key_ids(obj, "t"), [])
        self.assertEqual(signature_key_ids({"signatures": []}, "s"), [])


class SpecEventSigningTests(SynchronousTestCase):
    def test_minimal_event(self):
        for v in PRE_V11:
            self.assertEqual(
                sign_event(SPEC_MINIMAL_EVENT, SPEC_SERVER, spec_key(), rv(v)), SPEC_MINIMAL_EVENT_SIGNED, v
            )

    def test_redactable_event(self):
        for v in PRE_V11:
            self.assertEqual(
                sign_event(SPEC_REDACTABLE_EVENT, SPEC_SERVER, spec_key(), rv(v)), SPEC_REDACTABLE_EVENT_SIGNED, v
            )

    def test_v11_signs_a_different_redacted_form(self):
        # v11 redaction drops "origin", which these events carry.
        for v in ("11", "12"):
            signed = sign_event(SPEC_MINIMAL_EVENT, SPEC_SERVER, spec_key(), rv(v))
            self.assertEqual(signed["hashes"], SPEC_MINIMAL_EVENT_SIGNED["hashes"])
            self.assertNotEqual(signed["signatures"], SPEC_MINIMAL_EVENT_SIGNED["signatures"])
            verify_event_signature(signed, SPEC_SERVER, get_verify_key(spec_key()), rv(v))

    def test_spec_signed_events_verify(self):
        vk = get_verify_key(spec_key())
        for event in (SPEC_MINIMAL_EVENT_SIGNED, SPEC_REDACTABLE_EVENT_SIGNED):
            verify_event_signature(event, SPEC_SERVER, vk, rv("1"))
            self.assertTrue(check_content_hash(event))
            # A redacted copy still verifies ("should succeed whether we have
            # been sent the full event or a redacted copy").
            verify_event_signature(redact_event(event, rv("1")), SPEC_SERVER, vk, rv("1"))

    def test_content_change_keeps_signature_but_breaks_hash(self):
        vk = get_verify_key(spec_key())
        tampered = dict(SPEC_REDACTABLE_EVENT_SIGNED, content={"body": "something else"})
        verify_event_signature(tampered, SPEC_SERVER, vk, rv("1"))
        self.assertFalse(check_content_hash(tampered))

    def test_essential_change_breaks_signature(self):
        vk = get_verify_key(spec_key())
        for change in ({"origin_server_ts": 1000001}, {"sender": "@b:domain"}, {"hashes": {"sha256": "x"}}):
            self.assertRaises(
                SignatureVerifyError,
                verify_event_signature,
                dict(SPEC_REDACTABLE_EVENT_SIGNED, **change),
                SPEC_SERVER,
                vk,
                rv("1"),
            )


class EventSigningTests(SynchronousTestCase):
    def event(self):
        return {
            "type": "m.room.member",
            "state_key": "@alice:a.org",
            "sender": "@alice:a.org",
            "room_id": "!room:b.org",
            "content": {"membership": "join", "join_authorised_via_users_server": "@bob:b.org", "displayname": "A"},
            "depth": 5,
            "prev_events": ["$p"],
            "auth_events": ["$a"],
            "origin_server_ts": 1,
            "hashes": {},
            "signatures": {},
            "unsigned": {"age": 1},
        }

    def test_sign_does_not_modify_input(self):
        event = self.event()
        before = copy.deepcopy(event)
        sign_event(event, "a.org", generate_signing_key("k"), rv("10"))
        self.assertEqual(event, before)

    def test_cosign(self):
        a_key, b_key = generate_signing_key("a1"), generate_signing_key("b1")
        event = sign_event(self.event(), "a.org", a_key, rv("10"))
        cosigned = cosign_event(event, "b.org", b_key, rv("10"))
        self.assertEqual(cosigned["hashes"], event["hashes"])
        self.assertEqual(cosigned["signatures"]["a.org"], event["signatures"]["a.org"])
        self.assertNotIn("b.org", event["signatures"])  # input untouched
        verify_event_signature(cosigned, "a.org", get_verify_key(a_key), rv("10"))
        verify_event_signature(cosigned, "b.org", get_verify_key(b_key), rv("10"))
        self.assertEqual(
            cosigned["signatures"]["b.org"]["ed25519:b1"], compute_event_signature(event, "b.org", b_key, rv("10"))
        )

    def test_resigning_replaces_own_key_signature_only(self):
        key = generate_signing_key("k")
        event = sign_event(self.event(), "a.org", key, rv("10"))
        event["signatures"]["a.org"]["ed25519:old"] = "old"
        again = sign_event(event, "a.org", key, rv("10"))
        self.assertEqual(again["signatures"]["a.org"]["ed25519:old"], "old")
        self.assertEqual(again["signatures"]["a.org"]["ed25519:k"], event["signatures"]["a.org"]["ed25519:k"])


class RequiredSignersTests(SynchronousTestCase):
    def member(self, membership, **content):
        return {
            "type": "m.room.member",
            "sender": "@alice:a.org",
            "state_key": "@alice:a.org",
            "event_id": "$ev:c.org",
            "content": dict(content, membership=membership),
        }

    def test_sender_server(self):
        event = {"type": "m.room.message", "sender": "@alice:a.org:8448", "content": {}}
        for v in ("3", "4", "11", "12"):
            self.assertEqual(required_signers(event, rv(v)), {"a.org:8448"})

    def test_v1_v2_event_id_server(self):
        for v in ("1", "2"):
            self.assertEqual(required_signers(self.member("join"), rv(v)), {"a.org", "c.org"})
            same = dict(self.member("join"), event_id="$ev:a.org")
            self.assertEqual(required_signers(same, rv(v)), {"a.org"})
        # From v3 the event_id field means nothing.
        self.assertEqual(required_signers(self.member("join"), rv("3")), {"a.org"})

    def test_restricted_join(self):
        event = self.member("join", join_authorised_via_users_server="@bob:b.org")
        for v in ("8", "9", "10", "11", "12"):
            self.assertEqual(required_signers(event, rv(v)), {"a.org", "b.org"})
        for v in ("3", "7"):
            self.assertEqual(required_signers(event, rv(v)), {"a.org"})
        # Only for joins.
        leave = self.member("leave", join_authorised_via_users_server="@bob:b.org")
        self.assertEqual(required_signers(leave, rv("10")), {"a.org"})
        bad = self.member("join", join_authorised_via_users_server="bob")
        self.assertRaises(SignatureVerifyError, required_signers, bad, rv("10"))

    def test_third_party_invite(self):
        tpi = {"display_name": "b", "signed": {"mxid": "@b:x.org", "token": "t", "signatures": {"id.org": {}}}}
        invite = self.member("invite", third_party_invite=tpi)
        # The sender's server is not required, and the identity server's
        # signature in "signed" is never a server signature.
        self.assertEqual(required_signers(invite, rv("10")), set())
        self.assertEqual(required_signers(invite, rv("1")), {"c.org"})
        self.assertEqual(required_signers(dict(invite, event_id="$e:a.org"), rv("1")), set())
        plain_invite = self.member("invite")
        self.assertEqual(required_signers(plain_invite, rv("10")), {"a.org"})

    def test_malformed(self):
        self.assertRaises(SignatureVerifyError, required_signers, {"sender": "alice"}, rv("10"))
        self.assertRaises(SignatureVerifyError, required_signers, {}, rv("10"))
        self.assertRaises(SignatureVerifyError, required_signers, {"sender": "@a:b", "event_id": 5}, rv("1"))


class KeyValidityTests(SynchronousTestCase):
    def test_ignored_before_v5(self):
        for v in ("1", "2", "3", "4"):
            self.assertTrue(key_valid_for_event(0, 10**12, rv(v)))

    def test_enforced_from_v5(self):
        for v in ("5", "6", "10", "11", "12"):
            self.assertTrue(key_valid_for_event(1000, 1000, rv(v)))
            self.assertTrue(key_valid_for_event(1001, 1000, rv(v)))
            self.assertFalse(key_valid_for_event(999, 1000, rv(v)))

    def test_cap(self):
        self.assertEqual(MAX_KEY_VALIDITY_PERIOD_MS, 604800000)
        self.assertEqual(cap_key_valid_until_ts(10**15, 1000), 1000 + 604800000)
        self.assertEqual(cap_key_valid_until_ts(5000, 1000), 5000)


class KeyTests(SynchronousTestCase):
    def test_key_file_round_trip(self):
        content = f"ed25519 1 {SPEC_SEED}\n"
        keys = read_signing_keys(content)
        self.assertEqual(len(keys), 1)
        self.assertEqual(make_key_id(keys[0]), "ed25519:1")
        # The spec's seed string has non-zero trailing bits in its last
        # character; it decodes to the same 32 bytes as the canonical "...XA0",
        # which is what encoding gives back.
        canonical_seed = SPEC_SEED[:-1] + "0"
        self.assertEqual(encode_signing_key_base64(keys[0]), canonical_seed)
        self.assertEqual(write_signing_keys(keys), f"ed25519 1 {canonical_seed}\n")
        self.assertEqual(read_signing_keys(write_signing_keys(keys))[0].encode(), keys[0].encode())
        # The key read from the file produces the spec's signature.
        self.assertEqual(
            sign_json({}, SPEC_SERVER, keys[0])["signatures"]["domain"]["ed25519:1"],
            "K8280/U9SSy9IVtjBuVeLr+HpOB4BQFWbg+UZaADMtTdGYI7Geitb76LTrr5QV/7Xg4ahLwYGYZzuHGZKM5ZAQ",
        )

    def test_read_from_stream_with_blank_lines(self):
        k1, k2 = generate_signing_key("a_AAAA"), generate_signing_key("a_BBBB")
        text = "\n" + write_signing_keys([k1, k2]) + "\n"
        keys = read_signing_keys(io.StringIO(text))
        self.assertEqual([make_key_id(k) for k in keys], ["ed25519:a_AAAA", "ed25519:a_BBBB"])
        self.assertEqual(keys[1].encode(), k2.encode())

    def test_read_malformed(self):
        for bad in ("ed25519 1", "ed25519 1 abc def", "rsa 1 " + SPEC_SEED, "ed25519 1 !!!!"):
            self.assertRaises(ValueError, read_signing_keys, bad)

    def test_generate(self):
        key = generate_signing_key()
        self.assertEqual(key.alg, "ed25519")
        self.assertRegex(key.version, r"^a_[A-Za-z0-9]{4}$")
        self.assertEqual(make_key_id(generate_signing_key("xyz")), "ed25519:xyz")
        self.assertNotEqual(generate_signing_key().encode(), generate_signing_key().encode())

    def test_verify_key_base64(self):
        vk = get_verify_key(spec_key())
        self.assertEqual(make_key_id(vk), "ed25519:1")
        encoded = encode_verify_key_base64(vk)
        self.assertEqual(len(encoded), 43)
        decoded = decode_verify_key_base64("ed25519", "1", encoded)
        self.assertEqual(decoded.encode(), vk.encode())
        self.assertEqual(make_key_id(decoded), "ed25519:1")
        verify_json(sign_json({"x": 1}, "s", spec_key()), "s", decoded)
        for alg, b64 in (("rsa", encoded), ("ed25519", "AAAA"), ("ed25519", "é")):
            self.assertRaises(ValueError, decode_verify_key_base64, alg, "1", b64)


class DocsExampleTests(SynchronousTestCase):
    """The example of docs/protocol.md, with the values it shows."""

    def test_example(self):
        from mxtwisted.events import (
            check_content_hash,
            compute_event_id,
            get_room_version,
            validate_event,
        )

        room_version = get_room_version("10")
        signing_key = decode_signing_key_base64("ed25519", "1", SPEC_SEED)
        event = {
            "type": "m.room.message",
            "room_id": "!abc:example.org",
            "sender": "@alice:example.org",
            "content": {"msgtype": "m.text", "body": "hello"},
            "depth": 5,
            "prev_events": ["$Rqnc-F-dvnEYJTyHq_iKxU2bZ1CI92-kuZq3a5lr5Zg"],
            "auth_events": [],
            "origin_server_ts": 1700000000000,
        }
        signed = sign_event(event, "example.org", signing_key, room_version)
        self.assertEqual(signed["hashes"], {"sha256": "lfak4Fy5bxz9erqBCY0+rkVDkciTxusu2ioxm0MwxUU"})
        self.assertEqual(
            signed["signatures"],
            {
                "example.org": {
                    "ed25519:1": "385UD0j6i4LrDHO3MJpb/P6+XHomiAbeiXct5Yqu6RMJc+4KqpF+SwN+D8a0Nx7Z/r0zD0FxgU5P3+pT1601BQ"
                }
            },
        )
        self.assertEqual(compute_event_id(signed, room_version), "$dv9EODETsrzxxBUj_XxYx9-o5Jq_71zJ6SwRFqlk-qI")
        validate_event(signed, room_version)
        self.assertEqual(required_signers(signed, room_version), {"example.org"})
        for server in required_signers(signed, room_version):
            verify_event_signature(signed, server, get_verify_key(signing_key), room_version)
        self.assertTrue(check_content_hash(signed))
