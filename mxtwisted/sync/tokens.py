"""Sync tokens (``next_batch`` / ``since``): one position per stream, compact and opaque to clients.

A token is ``s`` followed by the positions of the known streams, in the fixed
order of :data:`STREAMS`, joined with ``_``: ``s12_4_0_3`` is events 12,
account data 4, typing 0, receipts 3, everything else 0. Trailing zeros are
left out, so ``s12`` (also a ``/messages`` token) is a valid sync token.
Streams that are not in :data:`STREAMS` are appended as ``name.position``
(``s12_4_myext.7``).

Compatibility: new streams are only ever appended to :data:`STREAMS`. A token
made before a stream existed decodes with position 0 for it, which is right,
since everything on that stream happened after the token. The first part is
always the events position, so ``/messages`` accepts a sync token as ``from``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Mapping

#: The known streams, in token order. Only ever append to this.
STREAMS: tuple[str, ...] = (
    "events",
    "account_data",
    "typing",
    "receipts",
    "presence",
    "to_device",
    "device_lists",
)

_EXTRA_NAME = re.compile(r"^[a-z][a-z0-9]*$")
_MAX_POSITION = 2**63 - 1


class InvalidToken(ValueError):
    """A ``since`` token this server did not make."""


@dataclass(frozen=True)
class SyncToken:
    """Per-stream positions; a stream not listed is at 0."""

    positions: Mapping[str, int] = field(default_factory=dict)

    def get(self, stream: str) -> int:
        return self.positions.get(stream, 0)

    @property
    def events(self) -> int:
        return self.get("events")

    def encode(self) -> str:
        parts = [str(self.get(name)) for name in STREAMS]
        while len(parts) > 1 and parts[-1] == "0":
            parts.pop()
        for name in sorted(self.positions):
            if name in STREAMS or not self.positions[name]:
                continue
            if not _EXTRA_NAME.match(name):
                raise ValueError(f"stream name {name!r} cannot be put in a token")
            parts.append(f"{name}.{self.positions[name]}")
        return "s" + "_".join(parts)

    @classmethod
    def decode(cls, token: str) -> SyncToken:
        if not token.startswith("s"):
            raise InvalidToken(f"Invalid sync token {token!r}")
        positions: dict[str, int] = {}
        parts = token[1:].split("_")
        index = 0
        for part in parts:
            name, dot, value = part.partition(".")
            if dot:
                if not _EXTRA_NAME.match(name) or name in STREAMS:
                    raise InvalidToken(f"Invalid sync token {token!r}")
            else:
                if index >= len(STREAMS):
                    raise InvalidToken(f"Invalid sync token {token!r}")
                name, value = STREAMS[index], part
                index += 1
            if not value.isascii() or not value.isdigit() or int(value) > _MAX_POSITION:
                raise InvalidToken(f"Invalid sync token {token!r}")
            positions[name] = int(value)
        return cls({k: v for k, v in positions.items() if v})

    def advanced(self, other: SyncToken) -> bool:
        """Whether any stream of ``self`` is ahead of ``other``."""
        return any(pos > other.get(name) for name, pos in self.positions.items())

    def __str__(self) -> str:
        return self.encode()
