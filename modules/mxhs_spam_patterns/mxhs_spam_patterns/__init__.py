"""A matrixhs spam checker that refuses messages whose body matches configured regular expressions.

Enable it in ``homeserver.yaml``::

    modules:
      - module: mxhs_spam_patterns.SpamPatterns
        config:
          patterns: ["buy cheap .*pills", "https?://bit\\.ly/"]
          # optional:
          event_types: ["m.room.message"]   # which events are checked (default: m.room.message)
          case_sensitive: false             # default: false
          errcode: M_FORBIDDEN              # what the sender gets back
          message: "Message refused: it looks like spam"
          exempt_users: ["@moderator:example.org"]

The ``body`` of the event's content is checked, and for an edit also
``m.new_content.body``. Only ``check_event_for_spam`` is implemented; every
other check of :class:`mxtwisted.interfaces.ISpamChecker` allows.
"""

from __future__ import annotations

import re
from typing import Any, Optional

from mxtwisted.interfaces import ISpamChecker, Refusal, SpamCheckerBase
from zope.interface import implementer

__version__ = "1.0.0"
__all__ = ["SpamPatterns"]

DEFAULT_MESSAGE = "Message refused: it matches a spam pattern"


def _string_list(config: dict[str, Any], key: str, default: list[str]) -> list[str]:
    value = config.get(key, default)
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"'{key}' must be a list of strings")
    return list(value)


@implementer(ISpamChecker)
class SpamPatterns(SpamCheckerBase):
    """Refuses events of the configured types whose ``body`` matches one of the patterns."""

    @staticmethod
    def parse_config(config: Any) -> dict[str, Any]:
        """Validate the module's config; compile the patterns (a bad one stops start-up, naming it)."""
        if not isinstance(config, dict):
            raise ValueError("the config must be a mapping")
        known = {"patterns", "event_types", "case_sensitive", "errcode", "message", "exempt_users"}
        unknown = sorted(set(config) - known)
        if unknown:
            raise ValueError(f"unknown option(s) {', '.join(map(repr, unknown))} (known: {', '.join(sorted(known))})")
        patterns = _string_list(config, "patterns", [])
        if not patterns:
            raise ValueError("'patterns' must list at least one regular expression")
        case_sensitive = config.get("case_sensitive", False)
        if not isinstance(case_sensitive, bool):
            raise ValueError("'case_sensitive' must be true or false")
        flags = 0 if case_sensitive else re.IGNORECASE
        compiled = []
        for pattern in patterns:
            try:
                compiled.append(re.compile(pattern, flags))
            except re.error as e:
                raise ValueError(f"invalid pattern {pattern!r}: {e}") from None
        errcode = config.get("errcode", "M_FORBIDDEN")
        if not isinstance(errcode, str) or not errcode.startswith("M_"):
            raise ValueError("'errcode' must be a Matrix error code such as 'M_FORBIDDEN'")
        message = config.get("message", DEFAULT_MESSAGE)
        if not isinstance(message, str):
            raise ValueError("'message' must be a string")
        return {
            "patterns": compiled,
            "event_types": frozenset(_string_list(config, "event_types", ["m.room.message"])),
            "errcode": errcode,
            "message": message,
            "exempt_users": frozenset(_string_list(config, "exempt_users", [])),
        }

    def __init__(self, config: dict[str, Any], api: Any) -> None:
        if not isinstance(config.get("patterns"), list) or not all(isinstance(p, re.Pattern) for p in config["patterns"]):
            config = self.parse_config(config)  # constructed directly, without the loader
        self._patterns: list[re.Pattern] = config["patterns"]
        self._event_types: frozenset[str] = config["event_types"]
        self._refusal = Refusal(config["errcode"], config["message"])
        self._exempt: frozenset[str] = config["exempt_users"]
        self._log = api.get_logger()

    def _match(self, text: Any) -> Optional[re.Pattern]:
        if not isinstance(text, str):
            return None
        for pattern in self._patterns:
            if pattern.search(text):
                return pattern
        return None

    def check_event_for_spam(self, event: dict[str, Any]) -> Optional[Refusal]:
        if event.get("type") not in self._event_types or event.get("sender") in self._exempt:
            return None
        content = event.get("content") or {}
        new_content = content.get("m.new_content")
        texts = [content.get("body"), new_content.get("body") if isinstance(new_content, dict) else None]
        for text in texts:
            pattern = self._match(text)
            if pattern is not None:
                self._log.info(
                    "Refused {event_type} from {sender} in {room_id}: matches {pattern!r}",
                    event_type=event.get("type"), sender=event.get("sender"), room_id=event.get("room_id"),
                    pattern=pattern.pattern,
                )
                return self._refusal
        return None
