"""A small declarative schema for homeserver.yaml.

Why not a generic JSON-schema validator: an administrator needs one line that
names the key (``listeners[0].port``) and says what was expected, and the same
declarations drive the defaults and the generated documentation. Each node
validates a value and returns it normalised (defaults filled in).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterable, Optional

_MISSING = object()

#: Called with the dotted path of each tolerated (ignored) Synapse key.
Report = Optional[Callable[[str], None]]


class ConfigError(Exception):
    """A configuration problem, rendered as one line naming the key."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}" if path else message)
        self.path = path
        self.message = message


def _join(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string", list: "a list", dict: "a mapping"}.get(
        type(value), type(value).__name__
    )


class Node:
    """One type in the schema."""

    description = "a value"

    def validate(self, value: Any, path: str, report: Report = None) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError


class Str(Node):
    description = "a string"

    def __init__(
        self,
        choices: Optional[Iterable[str]] = None,
        check: Optional[Callable[[str], Optional[str]]] = None,
        numbers: bool = False,
    ):
        self.choices = tuple(choices) if choices is not None else None
        self.check = check
        #: Numbers are read as their text (YAML reads ``1.2`` as a number; Synapse takes ``str()`` of it).
        self.numbers = numbers
        if self.choices:
            self.description = "one of " + ", ".join(repr(c) for c in self.choices)

    def validate(self, value: Any, path: str, report: Report = None) -> str:
        if self.numbers and isinstance(value, (int, float)) and not isinstance(value, bool):
            value = str(value)
        if not isinstance(value, str):
            raise ConfigError(path, f"expected {self.description}, got {_type_name(value)}")
        if self.choices is not None and value not in self.choices:
            raise ConfigError(path, f"expected {self.description}, got {value!r}")
        if self.check is not None:
            problem = self.check(value)
            if problem:
                raise ConfigError(path, problem)
        return value


class Int(Node):
    def __init__(self, minimum: Optional[int] = None, maximum: Optional[int] = None):
        self.minimum = minimum
        self.maximum = maximum
        self.description = "an integer"
        if minimum is not None and maximum is not None:
            self.description = f"an integer from {minimum} to {maximum}"
        elif minimum is not None:
            self.description = f"an integer >= {minimum}"

    def validate(self, value: Any, path: str, report: Report = None) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(path, f"expected {self.description}, got {_type_name(value)}")
        if (self.minimum is not None and value < self.minimum) or (self.maximum is not None and value > self.maximum):
            raise ConfigError(path, f"expected {self.description}, got {value}")
        return value


class Float(Node):
    description = "a number"

    def __init__(self, minimum: Optional[float] = None):
        self.minimum = minimum

    def validate(self, value: Any, path: str, report: Report = None) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(path, f"expected a number, got {_type_name(value)}")
        if self.minimum is not None and value < self.minimum:
            raise ConfigError(path, f"expected a number >= {self.minimum}, got {value}")
        return float(value)


class Bool(Node):
    description = "a boolean (true or false)"

    def validate(self, value: Any, path: str, report: Report = None) -> bool:
        if not isinstance(value, bool):
            raise ConfigError(path, f"expected {self.description}, got {_type_name(value)}")
        return value


class Size(Node):
    """A byte size: an integer or a string such as ``50M`` / ``10K`` (Synapse's format)."""

    description = "a size in bytes such as 1048576 or '1M'"
    _UNITS = {"K": 1024, "M": 1024**2, "G": 1024**3}

    def validate(self, value: Any, path: str, report: Report = None) -> int:
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            return value
        if isinstance(value, str):
            text = value.strip().upper()
            unit = self._UNITS.get(text[-1:], None)
            number = text[:-1] if unit else text
            if number.isdigit():
                return int(number) * (unit or 1)
        raise ConfigError(path, f"expected {self.description}, got {value!r}")


class Nullable(Node):
    def __init__(self, inner: Node):
        self.inner = inner
        self.description = f"{inner.description} or null"

    def validate(self, value: Any, path: str, report: Report = None) -> Any:
        return None if value is None else self.inner.validate(value, path, report)


class ListOf(Node):
    def __init__(self, item: Node, min_items: int = 0):
        self.item = item
        self.min_items = min_items
        self.description = f"a list of {item.description}"

    def validate(self, value: Any, path: str, report: Report = None) -> list:
        if not isinstance(value, list):
            raise ConfigError(path, f"expected {self.description}, got {_type_name(value)}")
        if len(value) < self.min_items:
            raise ConfigError(path, f"expected at least {self.min_items} item(s)")
        return [self.item.validate(v, _join(path, i), report) for i, v in enumerate(value)]


class AnyMapping(Node):
    """A free-form mapping (module config, extra well-known content...)."""

    description = "a mapping"

    def validate(self, value: Any, path: str, report: Report = None) -> dict:
        if not isinstance(value, dict):
            raise ConfigError(path, f"expected a mapping, got {_type_name(value)}")
        return value


@dataclass
class Key:
    """A key of a :class:`Mapping`: its type, default and documentation."""

    node: Node
    default: Any = _MISSING
    required: bool = False
    doc: str = ""
    example: Any = _MISSING

    @property
    def has_default(self) -> bool:
        return self.default is not _MISSING


@dataclass
class Mapping(Node):
    """A mapping with known keys.

    ``tolerated`` names keys that Synapse knows here but matrixhs does not
    implement: they are reported through ``on_ignored`` instead of refused.
    """

    keys: dict[str, Key]
    tolerated: frozenset[str] = frozenset()
    description: str = "a mapping"

    def validate(self, value: Any, path: str, report: Report = None) -> dict:
        if value is None:
            value = {}
        if not isinstance(value, dict):
            raise ConfigError(path, f"expected a mapping, got {_type_name(value)}")
        result: dict[str, Any] = {}
        for name in value:
            if not isinstance(name, str):
                raise ConfigError(path, f"keys must be strings, got {name!r}")
            if name not in self.keys:
                if name in self.tolerated:
                    if report is not None:
                        report(_join(path, name))
                    continue
                raise ConfigError(_join(path, name), "unknown key")
        for name, key in self.keys.items():
            sub = _join(path, name)
            if name in value:
                item = value[name]
                result[name] = key.node.validate(item, sub, report)
            elif key.required:
                raise ConfigError(sub, "required key is missing")
            elif key.has_default:
                default = key.default() if callable(key.default) else key.default
                # Defaults go through the schema too, so nested defaults get filled in.
                result[name] = default if default is None else key.node.validate(default, sub, report)
        return result
