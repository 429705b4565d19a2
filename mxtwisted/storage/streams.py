"""Stream IDs: monotonically increasing positions of changes, for /sync.

Writers take the next ID before their transaction and mark it done after it
commits; readers only ever see :attr:`StreamIdGenerator.current`, the highest
ID below which every ID has committed. So a sync token never jumps past a
change that is still being written, even when transactions commit out of
order. (One process for now; with several writers this becomes a shared
sequence plus per-writer positions.)
"""

from __future__ import annotations

from typing import Callable

from mxtwisted.storage.database import Database, Txn


class StreamIdGenerator:
    def __init__(self, start: int) -> None:
        self._last_allocated = start
        self._current = start
        self._in_flight: set[int] = set()
        self._done: set[int] = set()
        self._listeners: list[Callable[[int], None]] = []

    @classmethod
    async def load(cls, db: Database, table: str, column: str = "stream_id") -> StreamIdGenerator:
        """Start after the highest ID already stored in ``table.column``."""

        async def txn_fn(txn: Txn) -> int:
            row = await txn.select_one(f"SELECT MAX({column}) FROM {table}")
            return int(row[0]) if row and row[0] is not None else 0

        return cls(await db.run_interaction(f"load_stream_{table}", txn_fn, readonly=True))

    @property
    def current(self) -> int:
        """Every change up to this position has committed."""
        return self._current

    def allocate(self) -> int:
        self._last_allocated += 1
        self._in_flight.add(self._last_allocated)
        return self._last_allocated

    def finish(self, stream_id: int) -> None:
        """Mark ``stream_id`` as committed (or abandoned) and advance :attr:`current`."""
        self._in_flight.discard(stream_id)
        self._done.add(stream_id)
        advanced = False
        while self._current + 1 in self._done:
            self._current += 1
            self._done.discard(self._current)
            advanced = True
        if not self._in_flight and self._current < self._last_allocated:
            self._current = self._last_allocated
            self._done.clear()
            advanced = True
        if advanced:
            for listener in list(self._listeners):
                listener(self._current)

    def add_listener(self, listener: Callable[[int], None]) -> None:
        """Called with the new position whenever :attr:`current` advances."""
        self._listeners.append(listener)
