"""Push rules endpoints (Client-Server API, "Push Rules: API"; spec pushrules.yaml).

* ``GET /pushrules/``: ``{"global": {override, content, room, sender, underride}}``; ``GET /pushrules/global/``
  the ruleset alone. The server-default rules are merged in (``default: true``), with the user's enabled
  flags and actions.
* ``GET``/``PUT``/``DELETE /pushrules/global/{kind}/{ruleId}``: one rule. ``PUT`` creates or replaces a user
  rule (``before``/``after`` query parameters place it next to another user rule of the same kind; without
  them a new rule becomes the most important user rule of its kind, an existing one keeps its place).
* ``GET``/``PUT /pushrules/global/{kind}/{ruleId}/enabled`` and ``.../actions``, for default rules too.

Refusals: a kind other than the five ``400 M_INVALID_PARAM``; an unknown rule ``404 M_NOT_FOUND``; a ``PUT``
of a rule ID starting with ``.`` (reserved for server-default rules) or holding ``/`` or ``\\`` ``400
M_INVALID_PARAM``; a body whose actions or conditions do not follow the spec ``400 M_INVALID_PARAM``;
``before``/``after`` naming no user rule of that kind ``400 M_UNKNOWN`` (as the spec's example); a server-default
rule cannot be deleted (``400 M_INVALID_PARAM``). Guests are not allowed (``403 M_GUEST_ACCESS_FORBIDDEN``).
"""

from __future__ import annotations

from typing import Any

from mxtwisted.api.client.account_data import CLIENT_PREFIXES, parse_content
from mxtwisted.handlers.auth import Authenticator
from mxtwisted.http.errors import Codes, MatrixError
from mxtwisted.http.resource import query_arg
from mxtwisted.http.router import Router
from mxtwisted.push.handler import PushRulesHandler
from mxtwisted.push.rules import KINDS, InvalidRule, PushRule, check_actions, is_default_rule, rule_from_request
from mxtwisted.storage.push_rules import RuleNotFound

#: Longest rule ID accepted by PUT, in bytes of UTF-8 (room and user IDs are at most 255).
MAX_RULE_ID_LENGTH = 1024


def check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise MatrixError(400, Codes.INVALID_PARAM, f"Unknown push rule kind {kind!r}: one of {', '.join(KINDS)}")


def rule_not_found() -> MatrixError:
    return MatrixError(404, Codes.NOT_FOUND, "The push rule was not found.")


def check_new_rule_id(rule_id: str) -> None:
    """Spec setPushRule: IDs starting with a dot are reserved; slashes and backslashes are not allowed."""
    if not rule_id:
        raise MatrixError(400, Codes.INVALID_PARAM, "The rule ID may not be empty")
    if rule_id.startswith("."):
        raise MatrixError(400, Codes.INVALID_PARAM, "Rule IDs starting with '.' are reserved for server-default rules")
    if "/" in rule_id or "\\" in rule_id:
        raise MatrixError(400, Codes.INVALID_PARAM, "Rule IDs may not contain '/' or '\\'")
    if len(rule_id.encode("utf-8", "surrogatepass")) > MAX_RULE_ID_LENGTH:
        raise MatrixError(400, Codes.INVALID_PARAM, f"Rule IDs are limited to {MAX_RULE_ID_LENGTH} bytes")


class PushRulesResource:
    def __init__(self, auth: Authenticator, handler: PushRulesHandler) -> None:
        self._auth = auth
        self._handler = handler

    def register(self, router: Router) -> None:
        for prefix in CLIENT_PREFIXES:
            base = f"{prefix}/pushrules"
            router.add("GET", f"{base}/", self.get_all)
            router.add("GET", f"{base}/global/", self.get_global)
            rule = f"{base}/global/{{kind}}/{{ruleId}}"
            router.add("GET", rule, self.get_rule)
            router.add("PUT", rule, self.put_rule)
            router.add("DELETE", rule, self.delete_rule)
            router.add("GET", f"{rule}/enabled", self.get_enabled)
            router.add("PUT", f"{rule}/enabled", self.put_enabled)
            router.add("GET", f"{rule}/actions", self.get_actions)
            router.add("PUT", f"{rule}/actions", self.put_actions)

    # -- the whole ruleset -------------------------------------------------------------------------
    async def get_all(self, request: Any) -> dict[str, Any]:
        """``GET /pushrules/`` (spec: getPushRules)."""
        requester = await self._auth.get_requester(request)
        return await self._handler.get_ruleset_json(requester.user_id)

    async def get_global(self, request: Any) -> dict[str, Any]:
        """``GET /pushrules/global/`` (spec: getPushRulesGlobal)."""
        requester = await self._auth.get_requester(request)
        return (await self._handler.get_ruleset(requester.user_id)).global_json()

    # -- one rule ----------------------------------------------------------------------------------
    async def _rule(self, request: Any, kind: str, rule_id: str) -> tuple[str, PushRule]:
        requester = await self._auth.get_requester(request)
        check_kind(kind)
        rule = await self._handler.get_rule(requester.user_id, kind, rule_id)
        if rule is None:
            raise rule_not_found()
        return requester.user_id, rule

    async def get_rule(self, request: Any, kind: str, ruleId: str) -> dict[str, Any]:
        """``GET /pushrules/global/{kind}/{ruleId}`` (spec: getPushRule)."""
        _, rule = await self._rule(request, kind, ruleId)
        return rule.to_json()

    async def put_rule(self, request: Any, kind: str, ruleId: str) -> dict[str, Any]:
        """``PUT /pushrules/global/{kind}/{ruleId}`` (spec: setPushRule)."""
        requester = await self._auth.get_requester(request)
        check_kind(kind)
        check_new_rule_id(ruleId)
        body = parse_content(request)
        try:
            rule = rule_from_request(kind, ruleId, body)
        except InvalidRule as e:
            raise MatrixError(400, Codes.INVALID_PARAM, str(e)) from None
        before = query_arg(request, "before") or None
        after = query_arg(request, "after") or None
        # Spec: with both, the rule goes before `before`.
        relative = before or after
        if relative is not None:
            if relative.startswith("."):
                raise MatrixError(
                    400, Codes.INVALID_PARAM, "A rule cannot be placed relative to a server-default rule"
                )
            if relative == ruleId:
                raise MatrixError(400, Codes.INVALID_PARAM, "A rule cannot be placed relative to itself")
        try:
            await self._handler.put_rule(
                requester.user_id, rule, before=before, after=None if before else after
            )
        except RuleNotFound:
            raise MatrixError(400, Codes.UNKNOWN, f"before/after rule not found: {relative}") from None
        return {}

    async def delete_rule(self, request: Any, kind: str, ruleId: str) -> dict[str, Any]:
        """``DELETE /pushrules/global/{kind}/{ruleId}`` (spec: deletePushRule)."""
        requester = await self._auth.get_requester(request)
        check_kind(kind)
        if is_default_rule(kind, ruleId):
            raise MatrixError(400, Codes.INVALID_PARAM, "Server-default rules cannot be deleted; disable them instead")
        if not await self._handler.delete_rule(requester.user_id, kind, ruleId):
            raise rule_not_found()
        return {}

    # -- enabled ----------------------------------------------------------------------------------
    async def get_enabled(self, request: Any, kind: str, ruleId: str) -> dict[str, Any]:
        """``GET /pushrules/global/{kind}/{ruleId}/enabled`` (spec: isPushRuleEnabled)."""
        _, rule = await self._rule(request, kind, ruleId)
        return {"enabled": rule.enabled}

    async def put_enabled(self, request: Any, kind: str, ruleId: str) -> dict[str, Any]:
        """``PUT /pushrules/global/{kind}/{ruleId}/enabled`` (spec: setPushRuleEnabled)."""
        requester = await self._auth.get_requester(request)
        check_kind(kind)
        body = parse_content(request)
        enabled = body.get("enabled")
        if not isinstance(enabled, bool):
            raise MatrixError(400, Codes.INVALID_PARAM, "'enabled' must be a boolean")
        if not await self._handler.set_enabled(requester.user_id, kind, ruleId, enabled):
            raise rule_not_found()
        return {}

    # -- actions ----------------------------------------------------------------------------------
    async def get_actions(self, request: Any, kind: str, ruleId: str) -> dict[str, Any]:
        """``GET /pushrules/global/{kind}/{ruleId}/actions`` (spec: getPushRuleActions)."""
        _, rule = await self._rule(request, kind, ruleId)
        return {"actions": rule.to_json()["actions"]}

    async def put_actions(self, request: Any, kind: str, ruleId: str) -> dict[str, Any]:
        """``PUT /pushrules/global/{kind}/{ruleId}/actions`` (spec: setPushRuleActions)."""
        requester = await self._auth.get_requester(request)
        check_kind(kind)
        body = parse_content(request)
        if "actions" not in body:
            raise MatrixError(400, Codes.INVALID_PARAM, "Missing 'actions'")
        try:
            actions = check_actions(body["actions"])
        except InvalidRule as e:
            raise MatrixError(400, Codes.INVALID_PARAM, str(e)) from None
        if not await self._handler.set_actions(requester.user_id, kind, ruleId, actions):
            raise rule_not_found()
        return {}
