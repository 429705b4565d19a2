"""Dot-separated property paths (spec appendix "Dot-separated property paths").

Used by push rule conditions (``event_match`` keys) and by filters' ``event_fields``: one parser for both.
"""

from __future__ import annotations


def split_property_path(path: str) -> list[str]:
    """``content.m\\.relates_to`` → ``["content", "m.relates_to"]``.

    ``\\.`` is a literal dot and ``\\\\`` a literal backslash; any other backslash stays as it is.
    """
    segments: list[str] = []
    current: list[str] = []
    i = 0
    while i < len(path):
        char = path[i]
        if char == "\\" and i + 1 < len(path) and path[i + 1] in ".\\":
            current.append(path[i + 1])
            i += 2
            continue
        if char == ".":
            segments.append("".join(current))
            current = []
        else:
            current.append(char)
        i += 1
    segments.append("".join(current))
    return segments
