"""One router for every spec path.

Paths are written as in the spec, with ``{name}`` parameters:
``/_matrix/client/v3/rooms/{roomId}/send/{eventType}/{txnId}``. Matching walks a
trie of path segments, so its cost depends on the depth of the path, not on
the number of routes. Segments are matched still percent-encoded (so a
``%2F`` inside a room alias never splits a segment) and parameters are decoded
afterwards.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Optional
from urllib.parse import unquote

from mxtwisted.http.errors import Codes, MatrixError

Handler = Callable[..., Any]


@dataclass
class _Node:
    literal: dict[str, _Node] = field(default_factory=dict)
    param: Optional[tuple[str, _Node]] = None
    handlers: dict[bytes, Handler] = field(default_factory=dict)


def _split(path: str) -> list[str]:
    if not path.startswith("/"):
        raise ValueError(f"route paths start with '/': {path!r}")
    return path[1:].split("/")


class Router:
    """Maps (method, path) to a handler and its decoded path parameters."""

    def __init__(self) -> None:
        self._root = _Node()

    def add(self, method: str, path: str, handler: Handler) -> None:
        """Register ``handler`` for ``method`` (``GET``, ``PUT``...) on the templated ``path``."""
        node = self._root
        for segment in _split(path):
            if segment.startswith("{") and segment.endswith("}"):
                name = segment[1:-1]
                if node.param is None:
                    node.param = (name, _Node())
                elif node.param[0] != name:
                    raise ValueError(f"conflicting parameter names {node.param[0]!r} and {name!r} in {path!r}")
                node = node.param[1]
            else:
                node = node.literal.setdefault(segment, _Node())
        key = method.upper().encode("ascii")
        if key in node.handlers:
            raise ValueError(f"duplicate route {method} {path}")
        node.handlers[key] = handler

    def match(self, method: bytes, raw_path: bytes) -> tuple[Handler, dict[str, str]]:
        """Find the handler of a request.

        Raises 404 M_UNRECOGNIZED for an unknown path and 405 M_UNRECOGNIZED
        for a known path with another method (spec: "Unsupported endpoints").
        """
        try:
            path = raw_path.decode("ascii")
        except UnicodeDecodeError:
            raise MatrixError(404, Codes.UNRECOGNIZED, "Unrecognized request") from None
        if not path.startswith("/"):
            raise MatrixError(404, Codes.UNRECOGNIZED, "Unrecognized request")
        found = self._walk(self._root, path[1:].split("/"), 0, {})
        if found is None:
            raise MatrixError(404, Codes.UNRECOGNIZED, "Unrecognized request")
        node, params = found
        handler = node.handlers.get(method)
        if handler is None and method == b"HEAD":
            handler = node.handlers.get(b"GET")
        if handler is None:
            raise MatrixError(405, Codes.UNRECOGNIZED, "Unrecognized request")
        try:
            return handler, {name: unquote(value, errors="strict") for name, value in params.items()}
        except UnicodeDecodeError:
            raise MatrixError(400, Codes.INVALID_PARAM, "Path parameters must be percent-encoded UTF-8") from None

    def allowed_methods(self, raw_path: bytes) -> list[str]:
        """The methods registered for a path (for OPTIONS / Allow)."""
        try:
            found = self._walk(self._root, raw_path.decode("ascii")[1:].split("/"), 0, {})
        except UnicodeDecodeError:
            return []
        return sorted(m.decode() for m in found[0].handlers) if found else []

    def _walk(self, node: _Node, segments: list[str], i: int, params: dict[str, str]) -> Optional[tuple[_Node, dict]]:
        if i == len(segments):
            return (node, params) if node.handlers else None
        segment = segments[i]
        child = node.literal.get(segment)
        if child is not None:
            found = self._walk(child, segments, i + 1, params)
            if found is not None:
                return found
        if node.param is not None:
            name, child = node.param
            found = self._walk(child, segments, i + 1, {**params, name: segment})
            if found is not None:
                return found
        return None
