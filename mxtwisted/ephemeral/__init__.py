"""Ephemeral data for /sync: typing notifications, receipts, presence.

Spec: Client-Server API, "Typing Notifications", "Receipts", "Read and unread
markers", "Presence". Each area has a handler (the use cases the API exposes)
and a *stream source* that /sync reads from. A source has:

* ``name``: the stream's name (``"typing"``, ``"receipts"``, ``"presence"``),
  also the name it advances under in :meth:`mxtwisted.notifier.Notifier.notify_users`;
* ``current_position() -> int``: every change up to it is readable;
* ``async get_updates(user_id, room_ids, from_pos, to_pos)`` returning
  ``(per_room, global_events)``: the events for ``rooms.join.{id}.ephemeral``
  keyed by room ID and the events for ``presence.events``, for the changes in
  ``(from_pos, to_pos]`` that ``user_id`` may see in the rooms ``room_ids``
  (the rooms the user is joined to). ``from_pos`` 0 means an initial sync: the
  current state rather than the changes.

See docs/ephemeral.md.
"""

from __future__ import annotations

import inspect
from typing import Any, Protocol

#: ``(per-room ephemeral events, global events)``, the result of ``get_updates``.
Updates = tuple[dict[str, list[dict]], list[dict]]


class EphemeralStreamSource(Protocol):
    name: str

    def current_position(self) -> int: ...

    async def get_updates(self, user_id: str, room_ids: set[str], from_pos: int, to_pos: int) -> Updates: ...


class HandlerStreamSource:
    """The stream source of a handler that has ``current_position()`` and ``get_updates(...)`` itself (its
    ``get_updates`` may be a coroutine or return the updates directly), under the stream's ``name``."""

    def __init__(self, name: str, handler: Any) -> None:
        self.name = name
        self._handler = handler

    def current_position(self) -> int:
        return self._handler.current_position()

    async def get_updates(self, user_id: str, room_ids: set[str], from_pos: int, to_pos: int) -> Updates:
        updates = self._handler.get_updates(user_id, room_ids, from_pos, to_pos)
        return await updates if inspect.isawaitable(updates) else updates
