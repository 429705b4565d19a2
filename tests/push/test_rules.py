"""The predefined push rules, the merge with user rules, and validation (pure, no I/O).

Spec: Client-Server API, "Push Rules", "Predefined Rules" (v1.17+: no legacy body-mention rules).
"""

from __future__ import annotations

from twisted.trial.unittest import TestCase

from mxtwisted.push.rules import (
    KINDS,
    DefaultRuleSetting,
    InvalidRule,
    PushRule,
    build_ruleset,
    check_actions,
    check_conditions,
    default_rules,
    is_default_rule,
    localpart,
    rule_from_request,
)

ALICE = "@alice:example.org"

SPEC_OVERRIDE_ORDER = [
    ".m.rule.master",
    ".m.rule.suppress_notices",
    ".m.rule.invite_for_me",
    ".m.rule.member_event",
    ".m.rule.is_user_mention",
    ".m.rule.is_room_mention",
    ".m.rule.tombstone",
    ".m.rule.reaction",
    ".m.rule.room.server_acl",
    ".m.rule.suppress_edits",
]
SPEC_UNDERRIDE_ORDER = [
    ".m.rule.call",
    ".m.rule.encrypted_room_one_to_one",
    ".m.rule.room_one_to_one",
    ".m.rule.message",
    ".m.rule.encrypted",
]


def ids(rules) -> list[str]:
    return [r["rule_id"] if isinstance(r, dict) else r.rule_id for r in rules]


class DefaultRulesTests(TestCase):
    def test_order_of_the_spec(self) -> None:
        rules = default_rules(ALICE)
        self.assertEqual(ids(rules["override"]), SPEC_OVERRIDE_ORDER)
        self.assertEqual(ids(rules["underride"]), SPEC_UNDERRIDE_ORDER)
        self.assertEqual(rules["content"], [])
        self.assertEqual(rules["room"], [])
        self.assertEqual(rules["sender"], [])

    def test_legacy_mention_rules_are_gone(self) -> None:
        every = {r.rule_id for rs in default_rules(ALICE).values() for r in rs}
        for legacy in (".m.rule.contains_display_name", ".m.rule.roomnotif", ".m.rule.contains_user_name"):
            self.assertNotIn(legacy, every)

    def test_all_default_and_dotted(self) -> None:
        for kind, rules in default_rules(ALICE).items():
            for rule in rules:
                self.assertTrue(rule.default)
                self.assertTrue(rule.rule_id.startswith("."))
                self.assertTrue(is_default_rule(kind, rule.rule_id))
        self.assertFalse(is_default_rule("underride", ".m.rule.master"))
        self.assertFalse(is_default_rule("override", ".m.rule.nothing"))

    def test_master_is_disabled_the_rest_enabled(self) -> None:
        for rules in default_rules(ALICE).values():
            for rule in rules:
                self.assertEqual(rule.enabled, rule.rule_id != ".m.rule.master", rule.rule_id)

    def test_user_id_substituted(self) -> None:
        rules = {r.rule_id: r.to_json() for r in default_rules(ALICE)["override"]}
        self.assertEqual(
            rules[".m.rule.invite_for_me"],
            {
                "rule_id": ".m.rule.invite_for_me",
                "default": True,
                "enabled": True,
                "conditions": [
                    {"kind": "event_match", "key": "type", "pattern": "m.room.member"},
                    {"kind": "event_match", "key": "content.membership", "pattern": "invite"},
                    {"kind": "event_match", "key": "state_key", "pattern": ALICE},
                ],
                "actions": ["notify", {"set_tweak": "sound", "value": "default"}],
            },
        )
        self.assertEqual(
            rules[".m.rule.is_user_mention"]["conditions"],
            [{"kind": "event_property_contains", "key": "content.m\\.mentions.user_ids", "value": ALICE}],
        )
        other = {r.rule_id: r.to_json() for r in default_rules("@bob:other.example")["override"]}
        self.assertEqual(other[".m.rule.invite_for_me"]["conditions"][2]["pattern"], "@bob:other.example")
        self.assertEqual(localpart(ALICE), "alice")

    def test_definitions_as_in_the_spec(self) -> None:
        o = {r.rule_id: r.to_json() for r in default_rules(ALICE)["override"]}
        u = {r.rule_id: r.to_json() for r in default_rules(ALICE)["underride"]}
        self.assertEqual(o[".m.rule.master"], {
            "rule_id": ".m.rule.master", "default": True, "enabled": False, "conditions": [], "actions": [],
        })
        self.assertEqual(o[".m.rule.is_room_mention"]["conditions"], [
            {"kind": "event_property_is", "key": "content.m\\.mentions.room", "value": True},
            {"kind": "sender_notification_permission", "key": "room"},
        ])
        self.assertEqual(o[".m.rule.is_room_mention"]["actions"], ["notify", {"set_tweak": "highlight"}])
        self.assertEqual(o[".m.rule.tombstone"]["conditions"], [
            {"kind": "event_match", "key": "type", "pattern": "m.room.tombstone"},
            {"kind": "event_match", "key": "state_key", "pattern": ""},
        ])
        self.assertEqual(o[".m.rule.suppress_edits"]["conditions"], [
            {"kind": "event_property_is", "key": "content.m\\.relates_to.rel_type", "value": "m.replace"},
        ])
        self.assertEqual(o[".m.rule.room.server_acl"]["actions"], [])
        self.assertEqual(u[".m.rule.call"]["actions"], ["notify", {"set_tweak": "sound", "value": "ring"}])
        self.assertEqual(u[".m.rule.encrypted_room_one_to_one"]["conditions"], [
            {"kind": "room_member_count", "is": "2"},
            {"kind": "event_match", "key": "type", "pattern": "m.room.encrypted"},
        ])
        self.assertEqual(u[".m.rule.message"]["actions"], ["notify"])
        self.assertEqual(u[".m.rule.encrypted"]["actions"], ["notify"])

    def test_each_user_gets_fresh_copies(self) -> None:
        a = default_rules(ALICE)["override"][2]
        assert a.conditions is not None
        a.conditions[0]["pattern"] = "changed"
        self.assertEqual(default_rules(ALICE)["override"][2].to_json()["conditions"][0]["pattern"], "m.room.member")


class MergeTests(TestCase):
    def test_only_defaults(self) -> None:
        body = build_ruleset(ALICE, []).to_json()
        self.assertEqual(set(body), {"global"})
        self.assertEqual(set(body["global"]), set(KINDS))
        self.assertEqual(ids(body["global"]["override"]), SPEC_OVERRIDE_ORDER)
        self.assertEqual(ids(body["global"]["underride"]), SPEC_UNDERRIDE_ORDER)

    def test_user_rules_before_defaults_master_first(self) -> None:
        user = [
            PushRule("override", "o1", [], conditions=[]),
            PushRule("override", "o2", ["notify"], conditions=[{"kind": "event_match", "key": "type", "pattern": "x"}]),
            PushRule("underride", "u1", ["notify"], conditions=[]),
            PushRule("content", "c1", ["notify"], pattern="cake"),
            PushRule("room", "!r:example.org", []),
            PushRule("sender", "@spam:example.org", [], enabled=False),
        ]
        g = build_ruleset(ALICE, user).global_json()
        self.assertEqual(ids(g["override"]), [".m.rule.master", "o1", "o2"] + SPEC_OVERRIDE_ORDER[1:])
        self.assertEqual(ids(g["underride"]), ["u1"] + SPEC_UNDERRIDE_ORDER)
        self.assertEqual(g["content"], [
            {"rule_id": "c1", "default": False, "enabled": True, "actions": ["notify"], "pattern": "cake"},
        ])
        # Room and sender rules have neither conditions nor pattern: the rule ID says it all.
        self.assertEqual(g["room"], [{"rule_id": "!r:example.org", "default": False, "enabled": True, "actions": []}])
        self.assertEqual(g["sender"], [
            {"rule_id": "@spam:example.org", "default": False, "enabled": False, "actions": []},
        ])
        self.assertEqual(g["override"][2]["conditions"], [{"kind": "event_match", "key": "type", "pattern": "x"}])

    def test_evaluation_order_follows_the_kinds(self) -> None:
        user = [PushRule(k, f"r-{k}", [], conditions=[] if k in ("override", "underride") else None,
                         pattern="p" if k == "content" else None) for k in reversed(KINDS)]
        order = [r.rule_id for r in build_ruleset(ALICE, user)]
        positions = [order.index(f"r-{k}") for k in KINDS]
        self.assertEqual(positions, sorted(positions))
        self.assertEqual(order[0], ".m.rule.master")
        self.assertEqual(order[-1], ".m.rule.encrypted")

    def test_default_settings_apply(self) -> None:
        settings = {
            ("override", ".m.rule.master"): DefaultRuleSetting(enabled=True),
            ("underride", ".m.rule.message"): DefaultRuleSetting(actions=[]),
            ("override", ".m.rule.member_event"): DefaultRuleSetting(enabled=False, actions=["notify"]),
            ("override", ".m.rule.not_a_rule"): DefaultRuleSetting(enabled=True),
        }
        ruleset = build_ruleset(ALICE, [], settings)
        master = ruleset.get("override", ".m.rule.master")
        assert master is not None
        self.assertTrue(master.enabled)
        self.assertEqual(master.actions, [])
        message = ruleset.get("underride", ".m.rule.message")
        assert message is not None
        self.assertEqual((message.enabled, message.actions, message.default), (True, [], True))
        member = ruleset.get("override", ".m.rule.member_event")
        assert member is not None
        self.assertEqual((member.enabled, member.actions), (False, ["notify"]))
        self.assertIsNone(ruleset.get("override", ".m.rule.not_a_rule"))

    def test_dotted_user_rules_are_ignored(self) -> None:
        ruleset = build_ruleset(ALICE, [PushRule("override", ".m.rule.sneaky", ["notify"], conditions=[])])
        self.assertIsNone(ruleset.get("override", ".m.rule.sneaky"))

    def test_json_is_a_copy(self) -> None:
        rule = PushRule("override", "o", ["notify"], conditions=[{"kind": "x"}])
        body = rule.to_json()
        body["actions"].append("more")
        body["conditions"][0]["kind"] = "y"
        self.assertEqual(rule.actions, ["notify"])
        self.assertEqual(rule.conditions, [{"kind": "x"}])


class ValidationTests(TestCase):
    def test_actions(self) -> None:
        self.assertEqual(check_actions([]), [])
        self.assertEqual(
            check_actions(["notify", {"set_tweak": "sound", "value": "x"}, {"set_tweak": "highlight", "value": False}]),
            ["notify", {"set_tweak": "sound", "value": "x"}, {"set_tweak": "highlight", "value": False}],
        )
        # Spec "Historical Actions": ignored, i.e. stripped.
        self.assertEqual(check_actions(["dont_notify"]), [])
        self.assertEqual(check_actions(["notify", "coalesce"]), ["notify"])
        for bad in ("notify", None, {"actions": []}, ["notify_loudly"], [1], [None], [{"value": 1}],
                    [{"set_tweak": 5}], [{"set_tweak": ""}], [{"set_tweak": "highlight", "value": "yes"}]):
            self.assertRaises(InvalidRule, check_actions, bad)

    def test_conditions(self) -> None:
        ok = [
            {"kind": "event_match", "key": "content.body", "pattern": "x*"},
            {"kind": "event_property_is", "key": "content.n", "value": None},
            {"kind": "event_property_is", "key": "content.n", "value": 2**53 - 1},
            {"kind": "event_property_contains", "key": "content.l", "value": "v"},
            {"kind": "contains_display_name"},
            {"kind": "room_member_count", "is": "2"},
            {"kind": "room_member_count", "is": ">=10"},
            {"kind": "sender_notification_permission", "key": "room"},
            # Unknown kinds are kept: they never match.
            {"kind": "org.example.future", "whatever": [1]},
        ]
        self.assertEqual(check_conditions(ok), ok)
        for bad in (
            {"key": "type", "pattern": "x"},
            {"kind": 3},
            "event_match",
            {"kind": "event_match", "key": "type"},
            {"kind": "event_match", "pattern": "x"},
            {"kind": "event_property_is", "key": "content.n"},
            {"kind": "event_property_is", "key": "content.n", "value": 1.5},
            {"kind": "event_property_is", "key": "content.n", "value": 2**53},
            {"kind": "event_property_contains", "key": "content.n", "value": ["x"]},
            {"kind": "room_member_count", "is": "two"},
            {"kind": "room_member_count", "is": 2},
            {"kind": "room_member_count", "is": "=<2"},
            {"kind": "sender_notification_permission"},
        ):
            self.assertRaises(InvalidRule, check_conditions, [bad])
        self.assertRaises(InvalidRule, check_conditions, {"kind": "event_match"})

    def test_rule_from_request(self) -> None:
        rule = rule_from_request("content", "cake", {"pattern": "cake*lie", "actions": ["notify"], "conditions": [1]})
        self.assertEqual(rule.to_json(), {
            "rule_id": "cake", "default": False, "enabled": True, "actions": ["notify"], "pattern": "cake*lie",
        })
        rule = rule_from_request("override", "o", {"actions": [], "pattern": "ignored"})
        self.assertEqual((rule.conditions, rule.pattern), ([], None))
        rule = rule_from_request("room", "!r:x", {"actions": ["dont_notify"]})
        self.assertEqual(rule.to_json(), {"rule_id": "!r:x", "default": False, "enabled": True, "actions": []})
        self.assertRaises(InvalidRule, rule_from_request, "content", "c", {"actions": []})
        self.assertRaises(InvalidRule, rule_from_request, "content", "c", {"actions": [], "pattern": 5})
        self.assertRaises(InvalidRule, rule_from_request, "sender", "@s:x", {})
        self.assertRaises(InvalidRule, rule_from_request, "underride", "u", {"actions": [], "conditions": {}})
        self.assertRaises(InvalidRule, rule_from_request, "postcontent", "p", {"actions": []})
