"""Which push rule applies to an event (Client-Server API, "Push Rules", "Conditions"). Pure: no I/O.

:func:`evaluate` walks a :class:`~mxtwisted.push.rules.Ruleset` in order (override, content, room, sender,
underride; within a kind as listed) and returns the actions of the first enabled rule whose conditions all
hold, or ``None`` when no rule matches (then the server must not notify). What the event alone does not tell
-- the room's member count, the user's display name there, the sender's power level -- comes in an
:class:`EvaluationContext`. The caller skips events the user sent themselves (spec: never notify for those).

Conditions:

* ``event_match``: a glob (``*``, ``?``) matched case-insensitively against the whole string value at a
  dot-separated path; for ``content.body`` against any substring bounded by word boundaries (anything but
  ``[A-Za-z0-9_]``, or either end). Absent or non-string values never match.
* ``event_property_is``: exact equality with a string, integer, boolean or ``null`` (no casting: ``1`` is not
  ``true``).
* ``event_property_contains``: the value at the path is an array holding such a value.
* ``contains_display_name``: ``content.body`` holds the user's display name between word boundaries.
* ``room_member_count``: ``is`` is ``N``, ``==N``, ``<N``, ``>N``, ``<=N`` or ``>=N``.
* ``sender_notification_permission``: the sender's power level is at least ``notifications[key]`` of the
  power levels (default 50).

Unknown condition kinds, and known ones with bad parameters, never match.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Iterable, Mapping, Optional

from mxtwisted.events.property_paths import split_property_path as split_path
from mxtwisted.push.rules import HISTORICAL_ACTIONS, MAX_SAFE_INTEGER, MEMBER_COUNT_RE, PushRule

#: Spec: word boundaries are the ends of the value and any character outside ``[A-Za-z0-9_]``. A substring
#: starts at one when the character before it, or its own first character, is such a boundary (or it starts
#: the value); it ends at one likewise. So ``@room`` is found in ``hi @room!`` and also in ``hi@room``.
_WORD = "[A-Za-z0-9_]"
_BOUNDARY_START = f"(?:(?<!{_WORD})|(?!{_WORD}))"
_BOUNDARY_END = f"(?:(?!{_WORD})|(?<!{_WORD}))"

#: Spec "sender_notification_permission": the default level of a notification key.
DEFAULT_NOTIFICATION_LEVEL = 50

_ABSENT = object()


@dataclass(frozen=True)
class EvaluationContext:
    """What the conditions need besides the event, for one user and one room."""

    user_id: str
    #: The number of joined members of the room.
    member_count: int = 0
    #: The user's display name in the room, if any.
    display_name: Optional[str] = None
    #: The sender's power level in the room.
    sender_power_level: int = 0
    #: ``notifications`` of the room's power levels (key -> level).
    notification_levels: Mapping[str, Any] = field(default_factory=dict)


def lookup(event: Mapping[str, Any], path: str) -> Any:
    """The value at ``path`` in ``event``, or :data:`_ABSENT`."""
    value: Any = event
    for name in split_path(path):
        if not isinstance(value, Mapping) or name not in value:
            return _ABSENT
        value = value[name]
    return value


def _segment(segment: str) -> str:
    """A piece of a glob without ``*`` as a regex (``?`` is any one character)."""
    return "".join("." if c == "?" else re.escape(c) for c in segment)


_FLAGS = re.IGNORECASE | re.DOTALL


@lru_cache(maxsize=2048)
def _glob_parts(pattern: str, word_boundary: bool) -> tuple[re.Pattern[str], ...]:
    """Regexes for a glob split at its ``*``: (first, middle..., last); each matches a fixed length, so no
    regex here can backtrack more than the length of its piece."""
    pieces = pattern.split("*")
    if len(pieces) == 1:
        if word_boundary:
            return (re.compile(_BOUNDARY_START + _segment(pattern) + _BOUNDARY_END, _FLAGS),)
        return (re.compile(_segment(pattern), _FLAGS),)
    first = (_BOUNDARY_START if word_boundary else "") + _segment(pieces[0])
    last = _segment(pieces[-1]) + (_BOUNDARY_END if word_boundary else "")
    middle = [_segment(p) for p in pieces[1:-1] if p]
    return tuple(re.compile(r, _FLAGS) for r in [first, *middle, last])


def glob_matches(pattern: str, value: str, word_boundary: bool = False) -> bool:
    """Spec "Glob-style matching", case-insensitively: the whole value, or (``word_boundary``) any substring
    that starts and ends at a word boundary.

    The glob is matched piece by piece (the pieces between its ``*``), each at its leftmost possible place,
    which finds a match whenever there is one; the time is linear in the value times the pattern, whatever
    the number of ``*`` (a single regex of ``.*`` runs can take exponential time on long values).
    """
    parts = _glob_parts(pattern, word_boundary)
    if len(parts) == 1:
        if word_boundary:
            return parts[0].search(value) is not None
        return parts[0].fullmatch(value) is not None
    first, *middle, last = parts
    m = first.search(value) if word_boundary else first.match(value)
    if m is None:
        return False
    pos = m.end()
    for piece in middle:
        m = piece.search(value, pos)
        if m is None:
            return False
        pos = m.end()
    if word_boundary:
        return last.search(value, pos) is not None
    # The last piece has a fixed length (one character per glob character), so its place is fixed.
    start = len(value) - len(pattern.rsplit("*", 1)[1])
    return start >= pos and last.fullmatch(value, start) is not None


@lru_cache(maxsize=1024)
def _display_name_regex(name: str) -> re.Pattern[str]:
    return re.compile(_BOUNDARY_START + re.escape(name) + _BOUNDARY_END, re.IGNORECASE)


def _is_comparable(value: Any) -> bool:
    if value is None or isinstance(value, (bool, str)):
        return True
    return isinstance(value, int) and -MAX_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER


def _same_value(a: Any, b: Any) -> bool:
    """Exact equality of two non-compound values, without casting (``True`` is not ``1``)."""
    if not (_is_comparable(a) and _is_comparable(b)):
        return False
    return type(a) is type(b) and a == b


def _member_count_matches(spec: Any, count: int) -> bool:
    if not isinstance(spec, str):
        return False
    m = MEMBER_COUNT_RE.match(spec)
    if m is None:
        return False
    op, number = m.group(1) or "==", int(m.group(2))
    return {
        "==": count == number,
        "<": count < number,
        ">": count > number,
        "<=": count <= number,
        ">=": count >= number,
    }[op]


def _level(value: Any, default: int) -> int:
    """A power level as an integer (levels may be strings in old rooms)."""
    if isinstance(value, bool):
        return default
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            return default
    return default


def condition_matches(condition: Mapping[str, Any], event: Mapping[str, Any], ctx: EvaluationContext) -> bool:
    """Whether one condition holds for ``event``."""
    kind = condition.get("kind")
    if kind == "event_match":
        key, pattern = condition.get("key"), condition.get("pattern")
        if not isinstance(key, str) or not isinstance(pattern, str):
            return False
        value = lookup(event, key)
        if not isinstance(value, str):
            return False
        return glob_matches(pattern, value, word_boundary=key == "content.body")
    if kind == "event_property_is":
        key = condition.get("key")
        if not isinstance(key, str) or "value" not in condition:
            return False
        value = lookup(event, key)
        return value is not _ABSENT and _same_value(value, condition["value"])
    if kind == "event_property_contains":
        key = condition.get("key")
        if not isinstance(key, str) or "value" not in condition:
            return False
        value = lookup(event, key)
        if not isinstance(value, list):
            return False
        wanted = condition["value"]
        return any(_same_value(item, wanted) for item in value)
    if kind == "contains_display_name":
        name = ctx.display_name
        body = lookup(event, "content.body")
        if not name or not isinstance(body, str):
            return False
        return _display_name_regex(name).search(body) is not None
    if kind == "room_member_count":
        return _member_count_matches(condition.get("is"), ctx.member_count)
    if kind == "sender_notification_permission":
        key = condition.get("key")
        if not isinstance(key, str):
            return False
        required = _level(ctx.notification_levels.get(key, DEFAULT_NOTIFICATION_LEVEL), DEFAULT_NOTIFICATION_LEVEL)
        return ctx.sender_power_level >= required
    return False


def rule_matches(rule: PushRule, event: Mapping[str, Any], ctx: EvaluationContext) -> bool:
    """Whether an enabled ``rule`` applies to ``event`` (room and sender rules compare IDs exactly)."""
    if not rule.enabled:
        return False
    if rule.kind == "content":
        body = lookup(event, "content.body")
        return rule.pattern is not None and isinstance(body, str) and glob_matches(rule.pattern, body, True)
    if rule.kind == "room":
        return event.get("room_id") == rule.rule_id
    if rule.kind == "sender":
        return event.get("sender") == rule.rule_id
    return all(condition_matches(c, event, ctx) for c in (rule.conditions or []))


def evaluate(rules: Iterable[PushRule], event: Mapping[str, Any], ctx: EvaluationContext) -> Optional[list[Any]]:
    """The actions of the first rule (in order) that applies to ``event``, historical actions left out;
    ``None`` when no rule applies."""
    for rule in rules:
        if rule_matches(rule, event, ctx):
            return [a for a in rule.actions if not (isinstance(a, str) and a in HISTORICAL_ACTIONS)]
    return None


def find_matching_rule(rules: Iterable[PushRule], event: Mapping[str, Any], ctx: EvaluationContext) -> Optional[PushRule]:
    """The first rule (in order) that applies to ``event``, or ``None``."""
    for rule in rules:
        if rule_matches(rule, event, ctx):
            return rule
    return None


def notifies(actions: Optional[list[Any]]) -> bool:
    """Whether the actions produce a notification."""
    return bool(actions) and "notify" in actions  # type: ignore[operator]


def tweaks(actions: Optional[list[Any]]) -> dict[str, Any]:
    """The tweaks the actions set; ``highlight`` without a value is ``true`` (spec "Actions")."""
    result: dict[str, Any] = {}
    for action in actions or []:
        if isinstance(action, dict) and isinstance(action.get("set_tweak"), str):
            name = action["set_tweak"]
            if "value" in action:
                result[name] = action["value"]
            elif name == "highlight":
                result[name] = True
    return result


def highlights(actions: Optional[list[Any]]) -> bool:
    """Whether the actions highlight (spec: no ``highlight`` tweak means false)."""
    return tweaks(actions).get("highlight", False) is True
