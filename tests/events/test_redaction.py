"""Tests for mxtwisted.events.redaction (the "Redactions" section of every room version)."""

from __future__ import annotations

import copy

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from mxtwisted.events.redaction import prune_unsigned_for_redaction, redact_event, redaction_keeps
from mxtwisted.events.room_versions import KNOWN_ROOM_VERSIONS, RedactionRules

ALL_VERSIONS = [str(n) for n in range(1, 13)]
V1_GROUP = ["1", "2", "3", "4", "5"]
V6_GROUP = ["6", "7"]
V8_GROUP = ["8"]
V9_GROUP = ["9", "10"]
V11_GROUP = ["11", "12"]


def rv(identifier):
    return KNOWN_ROOM_VERSIONS[identifier]


def full_event(event_type, content, **extra):
    """An event carrying every top-level key any version keeps, and some no version keeps."""
    event = {
        "event_id": "$ev:example.org",
        "type": event_type,
        "room_id": "!room:example.org",
        "sender": "@alice:example.org",
        "state_key": "",
        "content": content,
        "hashes": {"sha256": "aGFzaA"},
        "signatures": {"example.org": {"ed25519:1": "c2ln"}},
        "depth": 7,
        "prev_events": ["$prev"],
        "prev_state": [],
        "auth_events": ["$auth"],
        "origin": "example.org",
        "origin_server_ts": 1234,
        "membership": "join",
        # never kept:
        "unsigned": {"age_ts": 1, "prev_content": {"x": 1}},
        "age_ts": 1,
        "redacts": "$other",
        "custom": {"a": 1},
        "outlier": True,
    }
    event.update(extra)
    return event


OLD_TOP = {
    "event_id",
    "type",
    "room_id",
    "sender",
    "state_key",
    "content",
    "hashes",
    "signatures",
    "depth",
    "prev_events",
    "prev_state",
    "auth_events",
    "origin",
    "origin_server_ts",
    "membership",
}
V11_TOP = OLD_TOP - {"prev_state", "origin", "membership"}

POWER_LEVELS_CONTENT = {
    "ban": 50,
    "events": {"m.room.name": 50},
    "events_default": 0,
    "invite": 0,
    "kick": 50,
    "redact": 50,
    "state_default": 50,
    "users": {"@alice:example.org": 100},
    "users_default": 0,
    "notifications": {"room": 50},
    "historical": 100,
}
POWER_LEVELS_KEPT_OLD = {
    k: POWER_LEVELS_CONTENT[k]
    for k in ("ban", "events", "events_default", "kick", "redact", "state_default", "users", "users_default")
}


class RuleGroupTests(SynchronousTestCase):
    def test_room_version_groups(self):
        """Each room version uses the redaction rules its spec page lists (v12: "unchanged from v11")."""
        expected = {
            **{v: RedactionRules.V1 for v in V1_GROUP},
            **{v: RedactionRules.V6 for v in V6_GROUP},
            **{v: RedactionRules.V8 for v in V8_GROUP},
            **{v: RedactionRules.V9 for v in V9_GROUP},
            **{v: RedactionRules.V11 for v in V11_GROUP},
        }
        for v in ALL_VERSIONS:
            self.assertIs(rv(v).redaction_rules, expected[v], v)


class TopLevelTests(SynchronousTestCase):
    def test_top_level_keys(self):
        event = full_event("m.room.message", {"body": "hello", "msgtype": "m.text"})
        for v in ALL_VERSIONS:
            redacted = redact_event(event, rv(v))
            want = V11_TOP if v in V11_GROUP else OLD_TOP
            self.assertEqual(set(redacted), want, v)
            self.assertEqual(redacted["content"], {}, v)
            for k in want - {"content"}:
                self.assertEqual(redacted[k], event[k])

    def test_missing_keys_stay_missing(self):
        event = {"type": "m.room.message", "sender": "@a:b", "content": {"body": "x"}}
        for v in ALL_VERSIONS:
            self.assertEqual(redact_event(event, rv(v)), {"type": "m.room.message", "sender": "@a:b", "content": {}})

    def test_content_always_an_object(self):
        for v in ALL_VERSIONS:
            self.assertEqual(redact_event({"type": "m.room.member"}, rv(v)), {"type": "m.room.member", "content": {}})
            self.assertEqual(redact_event({"type": "m.room.member", "content": ["membership"]}, rv(v))["content"], {})
            self.assertEqual(redact_event({"type": "m.room.member", "content": None}, rv(v))["content"], {})

    def test_does_not_modify_or_alias_input(self):
        event = full_event("m.room.power_levels", copy.deepcopy(POWER_LEVELS_CONTENT))
        before = copy.deepcopy(event)
        for v in ALL_VERSIONS:
            redacted = redact_event(event, rv(v))
            redacted["content"]["users"]["@mallory:example.org"] = 100
            redacted["signatures"]["evil.org"] = {}
            redacted["prev_events"].append("$x")
            self.assertEqual(event, before)


class ContentTests(SynchronousTestCase):
    def check(self, event_type, content, expected_by_version):
        for v in ALL_VERSIONS:
            got = redact_event(full_event(event_type, copy.deepcopy(content)), rv(v))["content"]
            self.assertEqual(got, expected_by_version(v), f"{event_type} in v{v}")

    def test_member(self):
        content = {
            "membership": "join",
            "displayname": "Alice",
            "avatar_url": "mxc://example.org/a",
            "join_authorised_via_users_server": "@bob:example.org",
            "reason": "hi",
            "third_party_invite": {"display_name": "alice", "signed": {"mxid": "@alice:example.org", "token": "t"}},
        }

        def expected(v):
            if v in V11_GROUP:
                return {
                    "membership": "join",
                    "join_authorised_via_users_server": "@bob:example.org",
                    "third_party_invite": {"signed": {"mxid": "@alice:example.org", "token": "t"}},
                }
            if v in V9_GROUP:
                return {"membership": "join", "join_authorised_via_users_server": "@bob:example.org"}
            return {"membership": "join"}

        self.check("m.room.member", content, expected)

    def test_member_third_party_invite_edge_cases(self):
        # Without "signed", v11 keeps an empty third_party_invite; a non-object is dropped.
        self.check(
            "m.room.member",
            {"membership": "invite", "third_party_invite": {"display_name": "x"}},
            lambda v: (
                {"membership": "invite", "third_party_invite": {}} if v in V11_GROUP else {"membership": "invite"}
            ),
        )
        self.check(
            "m.room.member",
            {"membership": "invite", "third_party_invite": "nope"},
            lambda v: {"membership": "invite"},
        )

    def test_create(self):
        content = {"creator": "@alice:example.org", "room_version": "9", "m.federate": False, "predecessor": {}}
        self.check(
            "m.room.create",
            content,
            lambda v: content if v in V11_GROUP else {"creator": "@alice:example.org"},
        )
        # v12 create events: everything kept, including additional_creators.
        v12_content = {"room_version": "12", "additional_creators": ["@bob:example.org"], "type": "m.space"}
        self.check(
            "m.room.create",
            v12_content,
            lambda v: v12_content if v in V11_GROUP else {},
        )

    def test_join_rules(self):
        content = {
            "join_rule": "restricted",
            "allow": [{"type": "m.room_membership", "room_id": "!space:example.org"}],
            "other": 1,
        }
        self.check(
            "m.room.join_rules",
            content,
            lambda v: (
                {"join_rule": "restricted"}
                if v in V1_GROUP + V6_GROUP
                else {"join_rule": "restricted", "allow": content["allow"]}
            ),
        )

    def test_power_levels(self):
        self.check(
            "m.room.power_levels",
            POWER_LEVELS_CONTENT,
            lambda v: dict(POWER_LEVELS_KEPT_OLD, invite=0) if v in V11_GROUP else POWER_LEVELS_KEPT_OLD,
        )

    def test_aliases(self):
        content = {"aliases": ["#a:example.org"], "other": 1}
        self.check(
            "m.room.aliases",
            content,
            lambda v: {"aliases": ["#a:example.org"]} if v in V1_GROUP else {},
        )

    def test_history_visibility(self):
        self.check(
            "m.room.history_visibility",
            {"history_visibility": "shared", "other": 1},
            lambda v: {"history_visibility": "shared"},
        )

    def test_redaction(self):
        self.check(
            "m.room.redaction",
            {"redacts": "$target", "reason": "spam"},
            lambda v: {"redacts": "$target"} if v in V11_GROUP else {},
        )
        # The top-level "redacts" of v1-v10 redaction events is not kept by any version.
        for v in ALL_VERSIONS:
            self.assertNotIn("redacts", redact_event(full_event("m.room.redaction", {}), rv(v)))

    def test_other_types_lose_all_content(self):
        for event_type in (
            "m.room.message",
            "m.room.name",
            "m.room.topic",
            "m.room.encryption",
            "m.room.third_party_invite",
        ):
            self.check(
                event_type, {"body": "x", "name": "y", "membership": "join", "join_rule": "public"}, lambda v: {}
            )

    def test_keeps_only_present_keys(self):
        self.check("m.room.power_levels", {"ban": 50}, lambda v: {"ban": 50})
        self.check("m.room.join_rules", {}, lambda v: {})

    def test_redaction_keeps_helper(self):
        top, content = redaction_keeps("m.room.power_levels", rv("11"))
        self.assertEqual(top, V11_TOP)
        self.assertIn("invite", content)
        top, content = redaction_keeps("m.room.member", rv("8"))
        self.assertEqual(top, OLD_TOP)
        self.assertEqual(content, {"membership"})


class UnsignedTests(SynchronousTestCase):
    def test_prune_unsigned(self):
        unsigned = {
            "age_ts": 5,
            "age": 10,
            "replaces_state": "$old",
            "prev_content": {"body": "secret"},
            "invite_room_state": [],
            "redacted_because": {},
            "transaction_id": "t",
        }
        self.assertEqual(prune_unsigned_for_redaction(unsigned), {"age_ts": 5, "age": 10, "replaces_state": "$old"})
        self.assertEqual(prune_unsigned_for_redaction(None), {})
        self.assertEqual(prune_unsigned_for_redaction([]), {})


json_leaf = st.none() | st.booleans() | st.integers() | st.text(max_size=5)
json_value = st.recursive(
    json_leaf, lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=5), c, max_size=3), max_leaves=8
)
interesting_keys = st.sampled_from(
    sorted(
        OLD_TOP | {"unsigned", "redacts", "custom", "allow", "join_rule", "membership", "third_party_invite", "signed"}
    )
)
event_types = st.sampled_from(
    [
        "m.room.member",
        "m.room.create",
        "m.room.join_rules",
        "m.room.power_levels",
        "m.room.aliases",
        "m.room.history_visibility",
        "m.room.redaction",
        "m.room.message",
    ]
)


class PropertyTests(SynchronousTestCase):
    @given(
        event_types,
        st.dictionaries(interesting_keys, json_value, max_size=8),
        st.dictionaries(interesting_keys | st.text(max_size=4), json_value, max_size=8),
        st.sampled_from(ALL_VERSIONS),
    )
    def test_idempotent_and_shrinking(self, event_type, top, content, version):
        event = dict(top, type=event_type, content=content)
        once = redact_event(event, rv(version))
        self.assertEqual(redact_event(once, rv(version)), once)
        self.assertLessEqual(set(once), set(event) | {"content"})
        self.assertLessEqual(set(once["content"]), set(content) if isinstance(content, dict) else set())
