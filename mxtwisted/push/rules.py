"""Push rules as data (Client-Server API, "Push Rules", "Predefined Rules"). Pure: no I/O, no Twisted.

A ruleset has five kinds of rules, checked in this order: ``override``, ``content``, ``room``, ``sender``,
``underride``. Within a kind the user's own rules come first (most important first), then the server-default
rules, except ``.m.rule.master``, which always comes before every other rule, the user's override rules
included.

The server-default rules are those of the spec (v1.17 and later: the legacy rules that looked for mentions in
``content.body`` -- ``.m.rule.contains_display_name``, ``.m.rule.roomnotif``, ``.m.rule.contains_user_name``
-- were removed from the spec and are not served). A user cannot add, move or delete them, but can enable or
disable them and change their actions; those settings are kept per user and applied by :func:`build_ruleset`.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator, Mapping, Optional

#: The kinds of rules, in the order they are checked.
KINDS = ("override", "content", "room", "sender", "underride")

#: Kinds whose rules have explicit conditions; ``content`` has a pattern, ``room``/``sender`` use the rule ID.
CONDITION_KINDS = frozenset({"override", "underride"})

#: The rule that is always checked first (spec "Predefined Rules").
MASTER_RULE_ID = ".m.rule.master"

#: Spec "Historical Actions": actions that MUST be ignored; they are stripped when a rule is stored.
HISTORICAL_ACTIONS = frozenset({"dont_notify", "coalesce"})

#: Condition kinds this server knows (others are kept, and never match).
KNOWN_CONDITION_KINDS = frozenset({
    "event_match",
    "event_property_is",
    "event_property_contains",
    "contains_display_name",
    "room_member_count",
    "sender_notification_permission",
})

#: Spec "Canonical JSON": integers that can be compared exactly.
MAX_SAFE_INTEGER = 2**53 - 1

#: ``room_member_count``'s ``is``: a decimal integer with an optional comparison prefix.
MEMBER_COUNT_RE = re.compile(r"^(==|<=|>=|<|>)?([0-9]+)$")


class InvalidRule(ValueError):
    """A rule, its actions or its conditions do not follow the spec."""


@dataclass(frozen=True)
class PushRule:
    """One rule of a ruleset, as the spec's ``PushRule`` (definitions/push_rule.yaml) plus its kind."""

    kind: str
    rule_id: str
    actions: list[Any]
    #: Override and underride rules only.
    conditions: Optional[list[dict[str, Any]]] = None
    #: Content rules only.
    pattern: Optional[str] = None
    enabled: bool = True
    default: bool = False

    def to_json(self) -> dict[str, Any]:
        """The rule as clients see it: ``rule_id``, ``default``, ``enabled``, ``actions`` and, by kind,
        ``conditions`` or ``pattern``."""
        body: dict[str, Any] = {
            "rule_id": self.rule_id,
            "default": self.default,
            "enabled": self.enabled,
            "actions": copy.deepcopy(self.actions),
        }
        if self.kind in CONDITION_KINDS:
            body["conditions"] = copy.deepcopy(self.conditions or [])
        elif self.kind == "content":
            body["pattern"] = self.pattern if self.pattern is not None else ""
        return body


@dataclass(frozen=True)
class DefaultRuleSetting:
    """A user's settings for one server-default rule; ``None`` keeps the server's value."""

    enabled: Optional[bool] = None
    actions: Optional[list[Any]] = None


@dataclass
class Ruleset:
    """A user's rules, every kind in the order they are checked."""

    rules: dict[str, list[PushRule]] = field(default_factory=lambda: {kind: [] for kind in KINDS})

    def __iter__(self) -> Iterator[PushRule]:
        """Every rule in evaluation order."""
        for kind in KINDS:
            yield from self.rules.get(kind, [])

    def get(self, kind: str, rule_id: str) -> Optional[PushRule]:
        for rule in self.rules.get(kind, []):
            if rule.rule_id == rule_id:
                return rule
        return None

    def kind_json(self, kind: str) -> list[dict[str, Any]]:
        return [rule.to_json() for rule in self.rules.get(kind, [])]

    def global_json(self) -> dict[str, list[dict[str, Any]]]:
        """The ``global`` ruleset (spec definitions/push_ruleset.yaml): every kind, even when empty."""
        return {kind: self.kind_json(kind) for kind in KINDS}

    def to_json(self) -> dict[str, Any]:
        """``GET /pushrules/``'s body and the ``m.push_rules`` account data content."""
        return {"global": self.global_json()}


# -- the predefined rules ----------------------------------------------------------------------------

#: Placeholders in the definitions below, replaced per user by :func:`default_rules`.
USER_ID = "[the user's Matrix ID]"
USER_LOCALPART = "[the local part of the user's Matrix ID]"

_SOUND_DEFAULT = {"set_tweak": "sound", "value": "default"}
_HIGHLIGHT = {"set_tweak": "highlight"}


def _match(key: str, pattern: str) -> dict[str, Any]:
    return {"kind": "event_match", "key": key, "pattern": pattern}


#: Spec "Default Override Rules", in the spec's order. ``.m.rule.master`` is first and stays first.
DEFAULT_OVERRIDE_RULES: tuple[dict[str, Any], ...] = (
    {"rule_id": MASTER_RULE_ID, "enabled": False, "conditions": [], "actions": []},
    {
        "rule_id": ".m.rule.suppress_notices",
        "conditions": [_match("content.msgtype", "m.notice")],
        "actions": [],
    },
    {
        "rule_id": ".m.rule.invite_for_me",
        "conditions": [
            _match("type", "m.room.member"),
            _match("content.membership", "invite"),
            _match("state_key", USER_ID),
        ],
        "actions": ["notify", _SOUND_DEFAULT],
    },
    {
        "rule_id": ".m.rule.member_event",
        "conditions": [_match("type", "m.room.member")],
        "actions": [],
    },
    {
        "rule_id": ".m.rule.is_user_mention",
        "conditions": [{"kind": "event_property_contains", "key": "content.m\\.mentions.user_ids", "value": USER_ID}],
        "actions": ["notify", _SOUND_DEFAULT, _HIGHLIGHT],
    },
    {
        "rule_id": ".m.rule.is_room_mention",
        "conditions": [
            {"kind": "event_property_is", "key": "content.m\\.mentions.room", "value": True},
            {"kind": "sender_notification_permission", "key": "room"},
        ],
        "actions": ["notify", _HIGHLIGHT],
    },
    {
        "rule_id": ".m.rule.tombstone",
        "conditions": [_match("type", "m.room.tombstone"), _match("state_key", "")],
        "actions": ["notify", _HIGHLIGHT],
    },
    {
        "rule_id": ".m.rule.reaction",
        "conditions": [_match("type", "m.reaction")],
        "actions": [],
    },
    {
        "rule_id": ".m.rule.room.server_acl",
        "conditions": [_match("type", "m.room.server_acl"), _match("state_key", "")],
        "actions": [],
    },
    {
        "rule_id": ".m.rule.suppress_edits",
        "conditions": [{"kind": "event_property_is", "key": "content.m\\.relates_to.rel_type", "value": "m.replace"}],
        "actions": [],
    },
)

#: Spec "Predefined Rules": no default content rules since v1.17.
DEFAULT_CONTENT_RULES: tuple[dict[str, Any], ...] = ()

#: Spec "Default Underride Rules", in the spec's order.
DEFAULT_UNDERRIDE_RULES: tuple[dict[str, Any], ...] = (
    {
        "rule_id": ".m.rule.call",
        "conditions": [_match("type", "m.call.invite")],
        "actions": ["notify", {"set_tweak": "sound", "value": "ring"}],
    },
    {
        "rule_id": ".m.rule.encrypted_room_one_to_one",
        "conditions": [{"kind": "room_member_count", "is": "2"}, _match("type", "m.room.encrypted")],
        "actions": ["notify", _SOUND_DEFAULT],
    },
    {
        "rule_id": ".m.rule.room_one_to_one",
        "conditions": [{"kind": "room_member_count", "is": "2"}, _match("type", "m.room.message")],
        "actions": ["notify", _SOUND_DEFAULT],
    },
    {
        "rule_id": ".m.rule.message",
        "conditions": [_match("type", "m.room.message")],
        "actions": ["notify"],
    },
    {
        "rule_id": ".m.rule.encrypted",
        "conditions": [_match("type", "m.room.encrypted")],
        "actions": ["notify"],
    },
)

_DEFAULTS_BY_KIND: dict[str, tuple[dict[str, Any], ...]] = {
    "override": DEFAULT_OVERRIDE_RULES,
    "content": DEFAULT_CONTENT_RULES,
    "room": (),
    "sender": (),
    "underride": DEFAULT_UNDERRIDE_RULES,
}

#: (kind, rule_id) of every server-default rule.
DEFAULT_RULE_IDS = frozenset((kind, r["rule_id"]) for kind, rules in _DEFAULTS_BY_KIND.items() for r in rules)


def localpart(user_id: str) -> str:
    """``alice`` of ``@alice:example.org``."""
    return user_id[1:].split(":", 1)[0] if user_id.startswith("@") else user_id.split(":", 1)[0]


def _substitute(value: Any, user_id: str) -> Any:
    if value == USER_ID:
        return user_id
    if value == USER_LOCALPART:
        return localpart(user_id)
    if isinstance(value, dict):
        return {k: _substitute(v, user_id) for k, v in value.items()}
    if isinstance(value, list):
        return [_substitute(v, user_id) for v in value]
    return value


def default_rules(user_id: str) -> dict[str, list[PushRule]]:
    """The server-default rules of each kind for ``user_id``, in order, with the user's ID substituted."""
    result: dict[str, list[PushRule]] = {}
    for kind in KINDS:
        rules = []
        for definition in _DEFAULTS_BY_KIND[kind]:
            d = _substitute(definition, user_id)
            rules.append(
                PushRule(
                    kind=kind,
                    rule_id=d["rule_id"],
                    actions=d["actions"],
                    conditions=d.get("conditions") if kind in CONDITION_KINDS else None,
                    pattern=d.get("pattern") if kind == "content" else None,
                    enabled=d.get("enabled", True),
                    default=True,
                )
            )
        result[kind] = rules
    return result


def is_default_rule(kind: str, rule_id: str) -> bool:
    """Whether ``rule_id`` is a server-default rule of ``kind``."""
    return (kind, rule_id) in DEFAULT_RULE_IDS


def build_ruleset(
    user_id: str,
    user_rules: Iterable[PushRule],
    default_settings: Optional[Mapping[tuple[str, str], DefaultRuleSetting]] = None,
) -> Ruleset:
    """Merge the user's own rules (per kind, most important first) with the server-default rules.

    ``default_settings`` maps ``(kind, rule_id)`` of a default rule to the user's enabled flag and actions.
    User rules whose ID starts with a dot are ignored (they are reserved for the server's rules).
    """
    settings = default_settings or {}
    own: dict[str, list[PushRule]] = {kind: [] for kind in KINDS}
    for rule in user_rules:
        if rule.kind in own and not rule.rule_id.startswith("."):
            own[rule.kind].append(rule)
    ruleset = Ruleset()
    for kind, defaults in default_rules(user_id).items():
        configured = []
        for rule in defaults:
            setting = settings.get((kind, rule.rule_id))
            if setting is not None:
                rule = PushRule(
                    kind=rule.kind,
                    rule_id=rule.rule_id,
                    actions=setting.actions if setting.actions is not None else rule.actions,
                    conditions=rule.conditions,
                    pattern=rule.pattern,
                    enabled=setting.enabled if setting.enabled is not None else rule.enabled,
                    default=True,
                )
            configured.append(rule)
        first = [r for r in configured if r.rule_id == MASTER_RULE_ID]
        rest = [r for r in configured if r.rule_id != MASTER_RULE_ID]
        ruleset.rules[kind] = first + own[kind] + rest
    return ruleset


# -- validation -------------------------------------------------------------------------------------------


def check_actions(actions: Any) -> list[Any]:
    """The actions of a rule as stored: a list of ``notify`` and ``set_tweak`` actions.

    The historical ``dont_notify`` and ``coalesce`` are accepted and stripped (spec "Historical Actions").
    Raises :class:`InvalidRule` for anything else.
    """
    if not isinstance(actions, list):
        raise InvalidRule("'actions' must be a list")
    result: list[Any] = []
    for action in actions:
        if action == "notify":
            result.append(action)
        elif isinstance(action, str) and action in HISTORICAL_ACTIONS:
            continue
        elif isinstance(action, dict) and "set_tweak" in action:
            if not isinstance(action["set_tweak"], str) or not action["set_tweak"]:
                raise InvalidRule("'set_tweak' must be a non-empty string")
            if action["set_tweak"] == "highlight" and "value" in action and not isinstance(action["value"], bool):
                raise InvalidRule("The value of the 'highlight' tweak must be a boolean")
            result.append(action)
        else:
            raise InvalidRule(f"Unrecognised action: {_short(action)}")
    return result


def _is_scalar(value: Any) -> bool:
    """Spec: a non-compound canonical JSON value (string, integer in range, boolean, null)."""
    if value is None or isinstance(value, (bool, str)):
        return True
    return isinstance(value, int) and -MAX_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER


def check_condition(condition: Any) -> dict[str, Any]:
    """One condition of an override or underride rule (spec definitions/push_condition.yaml).

    Conditions of a known kind must have their parameters; conditions of unknown kinds are kept as they are
    (the spec: they never match, which disables the rule).
    """
    if not isinstance(condition, dict):
        raise InvalidRule("Each condition must be an object")
    kind = condition.get("kind")
    if not isinstance(kind, str) or not kind:
        raise InvalidRule("Each condition needs a 'kind'")
    if kind in ("event_match", "event_property_is", "event_property_contains", "sender_notification_permission"):
        if not isinstance(condition.get("key"), str):
            raise InvalidRule(f"A '{kind}' condition needs a string 'key'")
    if kind == "event_match" and not isinstance(condition.get("pattern"), str):
        raise InvalidRule("An 'event_match' condition needs a string 'pattern'")
    if kind in ("event_property_is", "event_property_contains"):
        if "value" not in condition or not _is_scalar(condition["value"]):
            raise InvalidRule(
                f"A '{kind}' condition needs a 'value' that is a string, an integer, a boolean or null"
            )
    if kind == "room_member_count":
        is_ = condition.get("is")
        if not isinstance(is_, str) or not MEMBER_COUNT_RE.match(is_):
            raise InvalidRule("A 'room_member_count' condition needs 'is': a number, optionally after ==, <, >, <= or >=")
    return condition


def check_conditions(conditions: Any) -> list[dict[str, Any]]:
    if not isinstance(conditions, list):
        raise InvalidRule("'conditions' must be a list")
    return [check_condition(c) for c in conditions]


def rule_from_request(kind: str, rule_id: str, body: Mapping[str, Any]) -> PushRule:
    """A new user rule from a ``PUT /pushrules/global/{kind}/{ruleId}`` body (spec setPushRule).

    ``actions`` is required; ``conditions`` applies to override/underride rules (absent: none, the rule always
    matches) and ``pattern`` is required for content rules. Keys that do not apply to the kind are ignored.
    """
    if kind not in KINDS:
        raise InvalidRule(f"Unknown rule kind {kind!r}")
    if "actions" not in body:
        raise InvalidRule("Missing 'actions'")
    actions = check_actions(body["actions"])
    conditions = None
    pattern = None
    if kind in CONDITION_KINDS:
        conditions = check_conditions(body.get("conditions", []))
    elif kind == "content":
        pattern = body.get("pattern")
        if not isinstance(pattern, str):
            raise InvalidRule("A content rule needs a string 'pattern'")
    return PushRule(kind=kind, rule_id=rule_id, actions=actions, conditions=conditions, pattern=pattern)


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
