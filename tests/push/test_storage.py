"""PushRuleStore on SQLite and PostgreSQL: ordering (top, before, after, moves), updates, enabled flags and
actions of user rules and of server-default rules, deletion."""

from __future__ import annotations

from typing import Any

from mxtwisted.push.rules import DefaultRuleSetting, PushRule
from mxtwisted.storage.push_rules import PushRuleStore, RuleNotFound
from tests.storage.engines import EngineTestMixin, inlined, on_both_engines

ALICE = "@alice:test.local"
BOB = "@bob:test.local"


def override(rule_id: str, actions: Any = None, conditions: Any = None) -> PushRule:
    return PushRule("override", rule_id, actions if actions is not None else [], conditions=conditions or [])


@on_both_engines
class PushRuleStoreTests(EngineTestMixin):
    async def store(self) -> PushRuleStore:
        return PushRuleStore(await self.open_db())

    async def order(self, store: PushRuleStore, kind: str = "override", user_id: str = ALICE) -> list[str]:
        rules, _ = await store.get_rules(user_id)
        return [r.rule_id for r in rules if r.kind == kind]

    @inlined
    async def test_empty(self) -> None:
        store = await self.store()
        self.assertEqual(await store.get_rules(ALICE), ([], {}))

    @inlined
    async def test_round_trip_of_every_kind(self) -> None:
        store = await self.store()
        conditions = [{"kind": "event_match", "key": "content.body", "pattern": "bière*"}, {"kind": "x", "n": [1]}]
        stored = [
            PushRule("override", "o", ["notify", {"set_tweak": "sound", "value": "ü"}], conditions=conditions),
            PushRule("content", "c", ["notify"], pattern="cake*lie"),
            PushRule("room", "!r:test.local", []),
            PushRule("sender", "@s:test.local", []),
            PushRule("underride", "u", ["notify"], conditions=[]),
        ]
        for rule in stored:
            self.assertTrue(await store.add_rule(ALICE, rule))
        rules, settings = await store.get_rules(ALICE)
        self.assertEqual(settings, {})
        self.assertEqual(sorted(rules, key=lambda r: r.kind), sorted(stored, key=lambda r: r.kind))
        self.assertEqual(await store.get_rules(BOB), ([], {}))

    @inlined
    async def test_new_rules_go_on_top(self) -> None:
        store = await self.store()
        for rule_id in ("a", "b", "c"):
            await store.add_rule(ALICE, override(rule_id))
        self.assertEqual(await self.order(store), ["c", "b", "a"])
        # Kinds and users are ordered separately.
        await store.add_rule(ALICE, PushRule("underride", "u", [], conditions=[]))
        await store.add_rule(BOB, override("z"))
        self.assertEqual(await self.order(store), ["c", "b", "a"])
        self.assertEqual(await self.order(store, "underride"), ["u"])

    @inlined
    async def test_before_and_after(self) -> None:
        store = await self.store()
        for rule_id in ("a", "b", "c"):
            await store.add_rule(ALICE, override(rule_id))  # c, b, a
        await store.add_rule(ALICE, override("x"), before="b")
        self.assertEqual(await self.order(store), ["c", "x", "b", "a"])
        await store.add_rule(ALICE, override("y"), after="b")
        self.assertEqual(await self.order(store), ["c", "x", "b", "y", "a"])
        await store.add_rule(ALICE, override("z"), after="a")
        self.assertEqual(await self.order(store), ["c", "x", "b", "y", "a", "z"])
        await store.add_rule(ALICE, override("w"), before="c")
        self.assertEqual(await self.order(store), ["w", "c", "x", "b", "y", "a", "z"])

    @inlined
    async def test_moving_an_existing_rule(self) -> None:
        store = await self.store()
        for rule_id in ("a", "b", "c", "d"):
            await store.add_rule(ALICE, override(rule_id))  # d, c, b, a
        self.assertFalse(await store.add_rule(ALICE, override("d", ["notify"]), after="a"))
        self.assertEqual(await self.order(store), ["c", "b", "a", "d"])
        await store.add_rule(ALICE, override("a"), before="c")
        self.assertEqual(await self.order(store), ["a", "c", "b", "d"])
        rules, _ = await store.get_rules(ALICE)
        self.assertEqual([r.actions for r in rules if r.rule_id == "d"], [["notify"]])

    @inlined
    async def test_update_keeps_place_and_enabled_flag(self) -> None:
        store = await self.store()
        for rule_id in ("a", "b", "c"):
            await store.add_rule(ALICE, override(rule_id))
        self.assertTrue(await store.set_rule_enabled(ALICE, "override", "b", False))
        created = await store.add_rule(ALICE, override("b", ["notify"], [{"kind": "event_match", "key": "type", "pattern": "t"}]))
        self.assertFalse(created)
        self.assertEqual(await self.order(store), ["c", "b", "a"])
        rules, _ = await store.get_rules(ALICE)
        b = next(r for r in rules if r.rule_id == "b")
        self.assertEqual((b.enabled, b.actions, b.conditions), (False, ["notify"], [{"kind": "event_match", "key": "type", "pattern": "t"}]))
        # Deleted and created again: enabled.
        self.assertTrue(await store.delete_rule(ALICE, "override", "b"))
        self.assertTrue(await store.add_rule(ALICE, override("b")))
        rules, _ = await store.get_rules(ALICE)
        self.assertTrue(next(r for r in rules if r.rule_id == "b").enabled)
        self.assertEqual(await self.order(store), ["b", "c", "a"])

    @inlined
    async def test_relative_rule_must_exist_in_the_kind(self) -> None:
        store = await self.store()
        await store.add_rule(ALICE, override("a"))
        await store.add_rule(ALICE, PushRule("underride", "u", [], conditions=[]))
        await store.add_rule(BOB, override("bobs"))
        for relative in ("nothing", "u", "bobs", ".m.rule.master"):
            with self.assertRaises(RuleNotFound):
                await store.add_rule(ALICE, override("x"), before=relative)
            with self.assertRaises(RuleNotFound):
                await store.add_rule(ALICE, override("x"), after=relative)
        with self.assertRaises(RuleNotFound):
            await store.add_rule(ALICE, override("a"), before="a")
        # Nothing was written by the refused changes.
        self.assertEqual(await self.order(store), ["a"])

    @inlined
    async def test_delete_enabled_actions_of_missing_rules(self) -> None:
        store = await self.store()
        self.assertFalse(await store.delete_rule(ALICE, "override", "nope"))
        self.assertFalse(await store.set_rule_enabled(ALICE, "override", "nope", True))
        self.assertFalse(await store.set_rule_actions(ALICE, "override", "nope", []))
        await store.add_rule(ALICE, PushRule("room", "!r:test.local", []))
        # Same ID, another kind: not found.
        self.assertFalse(await store.delete_rule(ALICE, "sender", "!r:test.local"))
        self.assertTrue(await store.set_rule_actions(ALICE, "room", "!r:test.local", ["notify"]))
        rules, _ = await store.get_rules(ALICE)
        self.assertEqual(rules[0].actions, ["notify"])

    @inlined
    async def test_default_rule_settings(self) -> None:
        store = await self.store()
        await store.set_default_enabled(ALICE, "override", ".m.rule.master", True)
        await store.set_default_actions(ALICE, "underride", ".m.rule.message", [])
        _, settings = await store.get_rules(ALICE)
        self.assertEqual(settings, {
            ("override", ".m.rule.master"): DefaultRuleSetting(enabled=True, actions=None),
            ("underride", ".m.rule.message"): DefaultRuleSetting(enabled=None, actions=[]),
        })
        await store.set_default_actions(ALICE, "override", ".m.rule.master", ["notify"])
        await store.set_default_enabled(ALICE, "override", ".m.rule.master", False)
        await store.set_default_enabled(ALICE, "underride", ".m.rule.message", True)
        _, settings = await store.get_rules(ALICE)
        self.assertEqual(settings[("override", ".m.rule.master")], DefaultRuleSetting(enabled=False, actions=["notify"]))
        self.assertEqual(settings[("underride", ".m.rule.message")], DefaultRuleSetting(enabled=True, actions=[]))
        self.assertEqual(await store.get_rules(BOB), ([], {}))

    @inlined
    async def test_delete_user(self) -> None:
        store = await self.store()
        await store.add_rule(ALICE, override("a"))
        await store.set_default_enabled(ALICE, "override", ".m.rule.master", True)
        await store.add_rule(BOB, override("b"))
        await store.delete_user(ALICE)
        self.assertEqual(await store.get_rules(ALICE), ([], {}))
        self.assertEqual(await self.order(store, user_id=BOB), ["b"])
