"""Users' push rules: their own rules in order, and their settings of the server-default rules.

The server-default rules themselves are data (:mod:`mxtwisted.push.rules`), never stored. Within one user
and kind, a higher ``priority`` is a more important rule. Adding a rule without a position makes it the most
important of its kind; ``before``/``after`` another rule of the same kind place it next to that rule,
shifting the less important rules down in the same transaction.
"""

from __future__ import annotations

import json
from typing import Any, Optional

from mxtwisted.push.rules import DefaultRuleSetting, PushRule
from mxtwisted.storage.database import Database, Txn


class RuleNotFound(Exception):
    """The rule (or the rule named by ``before``/``after``) does not exist."""


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


class PushRuleStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    # -- reading ----------------------------------------------------------------------------------
    async def get_rules(self, user_id: str) -> tuple[list[PushRule], dict[tuple[str, str], DefaultRuleSetting]]:
        """The user's own rules (by kind, most important first) and their default-rule settings."""

        async def txn_fn(txn: Txn) -> tuple[list, list]:
            rules = await txn.select(
                "SELECT kind, rule_id, conditions, pattern, actions, enabled FROM push_rules"
                " WHERE user_id = ? ORDER BY kind, priority DESC, rule_id",
                (user_id,),
            )
            defaults = await txn.select(
                "SELECT kind, rule_id, enabled, actions FROM push_rule_defaults WHERE user_id = ?", (user_id,)
            )
            return rules, defaults

        rule_rows, default_rows = await self.db.run_interaction("get_push_rules", txn_fn, readonly=True)
        rules = [
            PushRule(
                kind=kind,
                rule_id=rule_id,
                actions=json.loads(actions),
                conditions=json.loads(conditions) if conditions is not None else None,
                pattern=pattern,
                enabled=bool(enabled),
            )
            for kind, rule_id, conditions, pattern, actions, enabled in rule_rows
        ]
        settings = {
            (kind, rule_id): DefaultRuleSetting(
                enabled=bool(enabled) if enabled is not None else None,
                actions=json.loads(actions) if actions is not None else None,
            )
            for kind, rule_id, enabled, actions in default_rows
        }
        return rules, settings

    # -- the user's own rules -------------------------------------------------------------------------
    async def add_rule(
        self, user_id: str, rule: PushRule, before: Optional[str] = None, after: Optional[str] = None
    ) -> bool:
        """Create or replace one of the user's rules; returns whether it was created.

        Without ``before``/``after`` a new rule becomes the most important of its kind and an existing one
        keeps its place. ``before`` (which wins over ``after``) makes it the next more important rule than the
        named one, ``after`` the next less important. Raises :class:`RuleNotFound` when the named rule is not
        one of the user's rules of that kind (or is the rule itself). A new rule is enabled; an existing one
        keeps its enabled flag.
        """
        relative = before or after
        conditions = _dumps(rule.conditions) if rule.conditions is not None else None
        actions = _dumps(rule.actions)

        async def txn_fn(txn: Txn) -> bool:
            row = await txn.select_one(
                "SELECT priority, enabled FROM push_rules WHERE user_id = ? AND kind = ? AND rule_id = ?",
                (user_id, rule.kind, rule.rule_id),
            )
            created = row is None
            enabled = 1 if row is None else row[1]
            if relative:
                if relative == rule.rule_id:
                    raise RuleNotFound(relative)
                anchor = await txn.select_one(
                    "SELECT priority FROM push_rules WHERE user_id = ? AND kind = ? AND rule_id = ?",
                    (user_id, rule.kind, relative),
                )
                if anchor is None:
                    raise RuleNotFound(relative)
                if row is not None:
                    await txn.execute(
                        "DELETE FROM push_rules WHERE user_id = ? AND kind = ? AND rule_id = ?",
                        (user_id, rule.kind, rule.rule_id),
                    )
                # Make room: the new rule takes `priority`, everything from there up moves up by one.
                priority = anchor[0] + 1 if before else anchor[0]
                await txn.execute(
                    "UPDATE push_rules SET priority = priority + 1 WHERE user_id = ? AND kind = ? AND priority >= ?",
                    (user_id, rule.kind, priority),
                )
            elif row is not None:
                priority = row[0]
                await txn.execute(
                    "DELETE FROM push_rules WHERE user_id = ? AND kind = ? AND rule_id = ?",
                    (user_id, rule.kind, rule.rule_id),
                )
            else:
                top = await txn.select_one(
                    "SELECT MAX(priority) FROM push_rules WHERE user_id = ? AND kind = ?", (user_id, rule.kind)
                )
                priority = top[0] + 1 if top and top[0] is not None else 0
            await txn.execute(
                "INSERT INTO push_rules (user_id, kind, rule_id, priority, conditions, pattern, actions, enabled)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (user_id, rule.kind, rule.rule_id, priority, conditions, rule.pattern, actions, enabled),
            )
            return created

        return await self.db.run_interaction("add_push_rule", txn_fn)

    async def delete_rule(self, user_id: str, kind: str, rule_id: str) -> bool:
        """Delete one of the user's rules; returns whether it existed."""

        async def txn_fn(txn: Txn) -> int:
            return await txn.execute(
                "DELETE FROM push_rules WHERE user_id = ? AND kind = ? AND rule_id = ?", (user_id, kind, rule_id)
            )

        return bool(await self.db.run_interaction("delete_push_rule", txn_fn))

    async def set_rule_enabled(self, user_id: str, kind: str, rule_id: str, enabled: bool) -> bool:
        """Enable or disable one of the user's rules; returns whether it exists."""

        async def txn_fn(txn: Txn) -> int:
            return await txn.execute(
                "UPDATE push_rules SET enabled = ? WHERE user_id = ? AND kind = ? AND rule_id = ?",
                (1 if enabled else 0, user_id, kind, rule_id),
            )

        return bool(await self.db.run_interaction("set_push_rule_enabled", txn_fn))

    async def set_rule_actions(self, user_id: str, kind: str, rule_id: str, actions: list[Any]) -> bool:
        """Replace the actions of one of the user's rules; returns whether it exists."""

        async def txn_fn(txn: Txn) -> int:
            return await txn.execute(
                "UPDATE push_rules SET actions = ? WHERE user_id = ? AND kind = ? AND rule_id = ?",
                (_dumps(actions), user_id, kind, rule_id),
            )

        return bool(await self.db.run_interaction("set_push_rule_actions", txn_fn))

    # -- settings of the server-default rules ----------------------------------------------------------
    async def set_default_enabled(self, user_id: str, kind: str, rule_id: str, enabled: bool) -> None:
        async def txn_fn(txn: Txn) -> None:
            await txn.execute(
                "INSERT INTO push_rule_defaults (user_id, kind, rule_id, enabled) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (user_id, kind, rule_id) DO UPDATE SET enabled = excluded.enabled",
                (user_id, kind, rule_id, 1 if enabled else 0),
            )

        await self.db.run_interaction("set_default_push_rule_enabled", txn_fn)

    async def set_default_actions(self, user_id: str, kind: str, rule_id: str, actions: list[Any]) -> None:
        async def txn_fn(txn: Txn) -> None:
            await txn.execute(
                "INSERT INTO push_rule_defaults (user_id, kind, rule_id, actions) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (user_id, kind, rule_id) DO UPDATE SET actions = excluded.actions",
                (user_id, kind, rule_id, _dumps(actions)),
            )

        await self.db.run_interaction("set_default_push_rule_actions", txn_fn)

    # -- accounts ---------------------------------------------------------------------------------------
    async def delete_user(self, user_id: str) -> None:
        """Forget every rule and setting of the user (account erasure)."""

        async def txn_fn(txn: Txn) -> None:
            await txn.execute("DELETE FROM push_rules WHERE user_id = ?", (user_id,))
            await txn.execute("DELETE FROM push_rule_defaults WHERE user_id = ?", (user_id,))

        await self.db.run_interaction("delete_user_push_rules", txn_fn)
