"""Evaluating push rules against events (pure): every condition kind, the spec's examples, the default rules.

Spec: Client-Server API, "Push Rules" ("Conditions", "Predefined Rules"), appendices "Glob-style matching"
and "Dot-separated property paths".
"""

from __future__ import annotations

import time
from typing import Any

from twisted.trial.unittest import TestCase

from mxtwisted.push.evaluator import (
    EvaluationContext,
    condition_matches,
    evaluate,
    find_matching_rule,
    glob_matches,
    highlights,
    lookup,
    notifies,
    split_path,
    tweaks,
)
from mxtwisted.push.rules import DefaultRuleSetting, PushRule, build_ruleset

ALICE = "@alice:example.org"
BOB = "@bob:example.org"
ROOM = "!room:example.org"


def ctx(**kw: Any) -> EvaluationContext:
    return EvaluationContext(user_id=ALICE, **{"member_count": 5, **kw})


def message(body: str = "hi", **content: Any) -> dict[str, Any]:
    return {
        "type": "m.room.message",
        "sender": BOB,
        "room_id": ROOM,
        "event_id": "$e",
        "content": {"msgtype": "m.text", "body": body, **content},
    }


def em(key: str, pattern: str) -> dict[str, Any]:
    return {"kind": "event_match", "key": key, "pattern": pattern}


class PathTests(TestCase):
    def test_split(self) -> None:
        self.assertEqual(split_path("content.body"), ["content", "body"])
        self.assertEqual(split_path("content.m\\.relates_to"), ["content", "m.relates_to"])
        self.assertEqual(split_path("content.m\\\\foo"), ["content", "m\\foo"])
        # Other escapes are literal.
        self.assertEqual(split_path("content.\\x"), ["content", "\\x"])
        self.assertEqual(split_path("a\\"), ["a\\"])
        self.assertEqual(split_path("type"), ["type"])

    def test_lookup(self) -> None:
        event = {"content": {"m.relates_to": {"rel_type": "m.replace"}, "a": {"b": 1}}}
        self.assertEqual(lookup(event, "content.m\\.relates_to.rel_type"), "m.replace")
        self.assertEqual(lookup(event, "content.a.b"), 1)
        self.assertNotIn(lookup(event, "content.a.c"), (None, 1))
        self.assertNotIn(lookup(event, "content.a.b.c"), (None, 1))


class GlobTests(TestCase):
    def test_spec_topic_example(self) -> None:
        # Spec event_match example: key content.topic, pattern lunc?*
        for value in ("Lunch plans", "LUNCH"):
            self.assertTrue(glob_matches("lunc?*", value), value)
        for value in (" lunch", "lunc"):
            self.assertFalse(glob_matches("lunc?*", value), value)

    def test_spec_body_example(self) -> None:
        for value in ("An example event.", "exple", "An exciting triple-whammy"):
            self.assertTrue(glob_matches("ex*ple", value, word_boundary=True), value)
        for value in ("An exampled event", "Anexample", "ex ple_"):
            self.assertFalse(glob_matches("ex*ple", value, word_boundary=True), value)

    def test_whole_value(self) -> None:
        self.assertTrue(glob_matches("m.room.*", "m.room.message"))
        self.assertFalse(glob_matches("m.room.*", "xm.room.message"))
        self.assertFalse(glob_matches("m.room", "m.room.message"))
        self.assertTrue(glob_matches("*", ""))
        self.assertTrue(glob_matches("", ""))
        self.assertFalse(glob_matches("", "x"))
        self.assertFalse(glob_matches("a*a", "a"))
        self.assertTrue(glob_matches("a*a", "aa"))
        self.assertTrue(glob_matches("a?c", "A\nC"))
        # Regex characters are literal.
        self.assertTrue(glob_matches("a.b(c)", "a.b(c)"))
        self.assertFalse(glob_matches("a.b", "axb"))

    def test_word_boundaries(self) -> None:
        self.assertTrue(glob_matches("cake", "I like CAKE.", True))
        self.assertFalse(glob_matches("cake", "cakes", True))
        self.assertFalse(glob_matches("cake", "cup_cake", True))
        self.assertTrue(glob_matches("cake", "cup-cake", True))
        self.assertTrue(glob_matches("@room", "hi @room!", True))
        self.assertTrue(glob_matches("cake*lie", "the cake is a lie", True))
        self.assertTrue(glob_matches("*", "anything", True))

    def test_many_stars_stay_fast(self) -> None:
        started = time.monotonic()
        value = "a" * 65536
        self.assertFalse(glob_matches("a*a*a*a*a*a*a*a*c", value))
        self.assertFalse(glob_matches("a*a*a*a*a*a*a*a*c", value, True))
        self.assertTrue(glob_matches("a*a*a*a*a*a*a*a*a", value))
        self.assertLess(time.monotonic() - started, 2)


class ConditionTests(TestCase):
    def test_event_match(self) -> None:
        event = {"type": "m.room.topic", "state_key": "", "content": {"topic": "Lunch plans", "n": None}}
        self.assertTrue(condition_matches(em("content.topic", "lunc?*"), event, ctx()))
        self.assertTrue(condition_matches(em("state_key", ""), event, ctx()))
        # Absent or not a string: no match, even for *.
        self.assertFalse(condition_matches(em("content.n", "*"), event, ctx()))
        self.assertFalse(condition_matches(em("content.missing", "*"), event, ctx()))
        self.assertFalse(condition_matches(em("state_key", ""), {"type": "m.room.message"}, ctx()))
        self.assertFalse(condition_matches({"kind": "event_match", "key": "type"}, event, ctx()))

    def test_event_property_is(self) -> None:
        create = {"type": "m.room.create", "content": {"m.federate": True, "v": 1, "s": "true", "n": None, "f": 1.0}}

        def is_(key: str, value: Any) -> bool:
            return condition_matches({"kind": "event_property_is", "key": key, "value": value}, create, ctx())

        self.assertTrue(is_("content.m\\.federate", True))
        self.assertFalse(is_("content.m\\.federate", "true"))
        self.assertFalse(is_("content.m\\.federate", 1))
        self.assertTrue(is_("content.v", 1))
        self.assertFalse(is_("content.v", True))
        self.assertTrue(is_("content.s", "true"))
        self.assertTrue(is_("content.n", None))
        self.assertFalse(is_("content.missing", None))
        self.assertFalse(is_("content.f", 1))
        self.assertFalse(is_("content", None))

    def test_event_property_contains(self) -> None:
        event = {"content": {"alt_aliases": ["#somewhere:example.org", "#myroom:example.com", {"x": 1}, 7, True]}}

        def contains(value: Any, key: str = "content.alt_aliases") -> bool:
            return condition_matches({"kind": "event_property_contains", "key": key, "value": value}, event, ctx())

        self.assertTrue(contains("#myroom:example.com"))
        self.assertFalse(contains(":example.com"))
        self.assertTrue(contains(7))
        self.assertTrue(contains(True))
        self.assertFalse(contains(1))
        self.assertFalse(contains("x", key="content.alt_aliases.0"))
        self.assertFalse(contains("#myroom:example.com", key="content.missing"))

    def test_contains_display_name(self) -> None:
        cond = {"kind": "contains_display_name"}
        self.assertTrue(condition_matches(cond, message("hey Alice Smith!"), ctx(display_name="alice smith")))
        self.assertFalse(condition_matches(cond, message("hey AliceSmithers"), ctx(display_name="Alice Smith")))
        self.assertFalse(condition_matches(cond, message("hey alice"), ctx(display_name=None)))
        self.assertFalse(condition_matches(cond, message("hey alice"), ctx(display_name="")))
        # Regex characters in names are literal.
        self.assertTrue(condition_matches(cond, message("ping a.b*"), ctx(display_name="a.b*")))
        self.assertFalse(condition_matches(cond, message("ping axbbb"), ctx(display_name="a.b*")))

    def test_room_member_count(self) -> None:
        cases = [("2", 2, True), ("2", 3, False), ("==2", 2, True), ("<10", 9, True), ("<10", 10, False),
                 (">2", 3, True), (">2", 2, False), (">=2", 2, True), ("<=2", 3, False), ("two", 2, False),
                 ("=2", 2, False), ("", 0, False)]
        for is_, count, expected in cases:
            got = condition_matches({"kind": "room_member_count", "is": is_}, message(), ctx(member_count=count))
            self.assertEqual(got, expected, (is_, count))

    def test_sender_notification_permission(self) -> None:
        cond = {"kind": "sender_notification_permission", "key": "room"}
        self.assertTrue(condition_matches(cond, message(), ctx(sender_power_level=50)))
        self.assertFalse(condition_matches(cond, message(), ctx(sender_power_level=49)))
        self.assertTrue(condition_matches(cond, message(), ctx(sender_power_level=10, notification_levels={"room": 10})))
        self.assertTrue(condition_matches(cond, message(), ctx(sender_power_level=10, notification_levels={"room": "5"})))
        self.assertFalse(condition_matches({"kind": "sender_notification_permission"}, message(), ctx(sender_power_level=100)))

    def test_unknown_condition_never_matches(self) -> None:
        self.assertFalse(condition_matches({"kind": "org.example.always"}, message(), ctx()))


class DefaultRulesetTests(TestCase):
    def setUp(self) -> None:
        self.rules = build_ruleset(ALICE, [])

    def rule_for(self, event: dict[str, Any], **kw: Any) -> str | None:
        rule = find_matching_rule(self.rules, event, ctx(**kw))
        return rule.rule_id if rule else None

    def test_messages(self) -> None:
        self.assertEqual(self.rule_for(message()), ".m.rule.message")
        self.assertEqual(evaluate(self.rules, message(), ctx()), ["notify"])
        self.assertEqual(self.rule_for(message(), member_count=2), ".m.rule.room_one_to_one")
        self.assertEqual(self.rule_for(message(msgtype="m.notice")), ".m.rule.suppress_notices")
        self.assertEqual(evaluate(self.rules, message(msgtype="m.notice"), ctx()), [])
        encrypted = {"type": "m.room.encrypted", "sender": BOB, "room_id": ROOM, "content": {"ciphertext": "x"}}
        self.assertEqual(self.rule_for(encrypted), ".m.rule.encrypted")
        self.assertEqual(self.rule_for(encrypted, member_count=2), ".m.rule.encrypted_room_one_to_one")
        self.assertIsNone(evaluate(self.rules, {"type": "m.room.topic", "state_key": "", "content": {}}, ctx()))

    def test_mentions(self) -> None:
        mention = message("hey", **{"m.mentions": {"user_ids": [ALICE]}})
        self.assertEqual(self.rule_for(mention), ".m.rule.is_user_mention")
        actions = evaluate(self.rules, mention, ctx())
        self.assertTrue(notifies(actions) and highlights(actions))
        self.assertEqual(tweaks(actions), {"sound": "default", "highlight": True})
        other = message("hey", **{"m.mentions": {"user_ids": ["@carol:example.org"]}})
        self.assertEqual(self.rule_for(other), ".m.rule.message")
        # A display name in the body is no longer a mention (legacy rules removed in v1.17).
        self.assertEqual(self.rule_for(message("alice: hi"), display_name="alice"), ".m.rule.message")
        room = message("everyone", **{"m.mentions": {"room": True}})
        self.assertEqual(self.rule_for(room, sender_power_level=50), ".m.rule.is_room_mention")
        self.assertEqual(self.rule_for(room, sender_power_level=0), ".m.rule.message")

    def test_state_and_other_events(self) -> None:
        invite = {"type": "m.room.member", "state_key": ALICE, "sender": BOB, "content": {"membership": "invite"}}
        self.assertEqual(self.rule_for(invite), ".m.rule.invite_for_me")
        self.assertEqual(self.rule_for({**invite, "state_key": "@carol:example.org"}), ".m.rule.member_event")
        tomb = {"type": "m.room.tombstone", "state_key": "", "sender": BOB, "content": {"body": "moved"}}
        self.assertEqual(self.rule_for(tomb), ".m.rule.tombstone")
        self.assertTrue(highlights(evaluate(self.rules, tomb, ctx())))
        self.assertIsNone(self.rule_for({**tomb, "state_key": "x"}))
        self.assertIsNone(self.rule_for({"type": "m.room.tombstone", "content": {}}))
        self.assertEqual(self.rule_for({"type": "m.reaction", "content": {}}), ".m.rule.reaction")
        self.assertEqual(self.rule_for({"type": "m.room.server_acl", "state_key": "", "content": {}}),
                         ".m.rule.room.server_acl")
        edit = message("* fixed", **{"m.relates_to": {"rel_type": "m.replace", "event_id": "$x"}})
        self.assertEqual(self.rule_for(edit), ".m.rule.suppress_edits")
        call = {"type": "m.call.invite", "sender": BOB, "content": {}}
        self.assertEqual(evaluate(self.rules, call, ctx()), ["notify", {"set_tweak": "sound", "value": "ring"}])

    def test_master_silences_everything(self) -> None:
        rules = build_ruleset(ALICE, [], {("override", ".m.rule.master"): DefaultRuleSetting(enabled=True)})
        mention = message("hey", **{"m.mentions": {"user_ids": [ALICE]}})
        self.assertEqual(evaluate(rules, mention, ctx()), [])
        self.assertFalse(notifies(evaluate(rules, mention, ctx())))


class UserRulesTests(TestCase):
    def test_kinds_and_priority(self) -> None:
        user = [
            PushRule("room", ROOM, []),
            PushRule("sender", BOB, ["notify", {"set_tweak": "sound", "value": "bob"}]),
            PushRule("content", "cake", ["notify", {"set_tweak": "highlight"}], pattern="cake"),
        ]
        rules = build_ruleset(ALICE, user)
        # content before room before sender.
        self.assertEqual(find_matching_rule(rules, message("cake!"), ctx()).rule_id, "cake")  # type: ignore[union-attr]
        self.assertEqual(evaluate(rules, message("tea"), ctx()), [])
        elsewhere = {**message("tea"), "room_id": "!other:example.org"}
        self.assertEqual(tweaks(evaluate(rules, elsewhere, ctx())), {"sound": "bob"})
        carol = {**elsewhere, "sender": "@carol:example.org"}
        self.assertEqual(evaluate(rules, carol, ctx()), ["notify"])
        # Room/sender rule IDs are compared exactly, not as globs.
        star = build_ruleset(ALICE, [PushRule("sender", "@*:example.org", [])])
        self.assertEqual(evaluate(star, message(), ctx()), ["notify"])

    def test_disabled_rules_never_match(self) -> None:
        rules = build_ruleset(ALICE, [PushRule("override", "quiet", [], conditions=[], enabled=False)])
        self.assertEqual(evaluate(rules, message(), ctx()), ["notify"])
        rules = build_ruleset(ALICE, [PushRule("override", "quiet", [], conditions=[])])
        self.assertEqual(evaluate(rules, message(), ctx()), [])

    def test_unknown_condition_disables_the_rule(self) -> None:
        rule = PushRule("override", "odd", [], conditions=[em("type", "m.room.message"), {"kind": "org.example.x"}])
        self.assertEqual(evaluate(build_ruleset(ALICE, [rule]), message(), ctx()), ["notify"])

    def test_historical_actions_are_ignored(self) -> None:
        rule = PushRule("override", "old", ["dont_notify", "coalesce"], conditions=[])
        self.assertEqual(evaluate(build_ruleset(ALICE, [rule]), message(), ctx()), [])
        self.assertFalse(notifies(["dont_notify"]))
        self.assertEqual(tweaks([{"set_tweak": "highlight", "value": False}]), {"highlight": False})
        self.assertFalse(highlights([{"set_tweak": "highlight", "value": False}]))
        self.assertFalse(highlights(None))
