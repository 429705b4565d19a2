"""The push rules use cases behind ``/pushrules`` (Client-Server API, "Push Rules: API", "Push Rules: Events").

Every change of one user is serialised (in this process) and, once committed, published as the user's
``m.push_rules`` global account data, whose content is the whole merged ruleset (``{"global": ...}``). That
puts the change on the account data stream and wakes the user's waiting ``/sync`` requests. ``/sync`` itself
reads the ruleset through :meth:`PushRulesHandler.get_ruleset_json` (so an initial sync carries it even for a
user who never changed anything, and always with the current server-default rules).
"""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import Any, AsyncIterator, Optional

from twisted.internet import defer
from twisted.logger import Logger

from mxtwisted.push.rules import PushRule, Ruleset, build_ruleset, is_default_rule
from mxtwisted.storage.account_data import GLOBAL, AccountDataStore
from mxtwisted.storage.push_rules import PushRuleStore

log = Logger()

#: The account data type that carries the ruleset to clients.
PUSH_RULES_TYPE = "m.push_rules"


class PushRulesHandler:
    def __init__(self, store: PushRuleStore, account_data: AccountDataStore) -> None:
        self._store = store
        self._account_data = account_data
        self._locks: dict[str, defer.DeferredLock] = {}

    # -- reading --------------------------------------------------------------------------------
    async def get_ruleset(self, user_id: str) -> Ruleset:
        """The user's merged ruleset: their rules and the server-default rules with their settings."""
        rules, settings = await self._store.get_rules(user_id)
        return build_ruleset(user_id, rules, settings)

    async def get_ruleset_json(self, user_id: str) -> dict[str, Any]:
        """``{"global": {override, content, room, sender, underride}}`` (``GET /pushrules/``, ``m.push_rules``)."""
        return (await self.get_ruleset(user_id)).to_json()

    async def get_rule(self, user_id: str, kind: str, rule_id: str) -> Optional[PushRule]:
        return (await self.get_ruleset(user_id)).get(kind, rule_id)

    # -- changes ---------------------------------------------------------------------------------
    async def put_rule(self, user_id: str, rule: PushRule, before: Optional[str], after: Optional[str]) -> bool:
        """Create or replace a user rule (see :meth:`PushRuleStore.add_rule`); returns whether it was created.

        Raises :class:`~mxtwisted.storage.push_rules.RuleNotFound` when ``before``/``after`` name no rule.
        """
        async with self._user_lock(user_id):
            created = await self._store.add_rule(user_id, rule, before=before, after=after)
            await self._publish(user_id)
        return created

    async def delete_rule(self, user_id: str, kind: str, rule_id: str) -> bool:
        """Delete a user rule; returns whether it existed (server-default rules cannot be deleted)."""
        async with self._user_lock(user_id):
            deleted = await self._store.delete_rule(user_id, kind, rule_id)
            if deleted:
                await self._publish(user_id)
        return deleted

    async def set_enabled(self, user_id: str, kind: str, rule_id: str, enabled: bool) -> bool:
        """Enable or disable a rule, a server-default one included; returns whether the rule exists."""
        async with self._user_lock(user_id):
            if is_default_rule(kind, rule_id):
                await self._store.set_default_enabled(user_id, kind, rule_id, enabled)
            elif not await self._store.set_rule_enabled(user_id, kind, rule_id, enabled):
                return False
            await self._publish(user_id)
        return True

    async def set_actions(self, user_id: str, kind: str, rule_id: str, actions: list[Any]) -> bool:
        """Replace the actions of a rule, a server-default one included; returns whether the rule exists."""
        async with self._user_lock(user_id):
            if is_default_rule(kind, rule_id):
                await self._store.set_default_actions(user_id, kind, rule_id, actions)
            elif not await self._store.set_rule_actions(user_id, kind, rule_id, actions):
                return False
            await self._publish(user_id)
        return True

    async def delete_user(self, user_id: str) -> None:
        """Forget the user's rules and settings (account erasure; the account data is erased separately)."""
        async with self._user_lock(user_id):
            await self._store.delete_user(user_id)

    # -- internals --------------------------------------------------------------------------------
    async def _publish(self, user_id: str) -> None:
        """Record the new ruleset as ``m.push_rules`` account data: the change reaches /sync."""
        await self._account_data.put(user_id, PUSH_RULES_TYPE, await self.get_ruleset_json(user_id), GLOBAL)

    @asynccontextmanager
    async def _user_lock(self, user_id: str) -> AsyncIterator[None]:
        """Serialise one user's changes, so rules are ordered and published in the order they were made."""
        lock = self._locks.setdefault(user_id, defer.DeferredLock())
        await lock.acquire()
        try:
            yield
        finally:
            lock.release()
            if not lock.locked:
                self._locks.pop(user_id, None)
