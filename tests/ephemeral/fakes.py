"""Small stand-ins for the room engine and the notifier, for handler tests on a controlled clock."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Optional

from mxtwisted.http.errors import Codes, MatrixError
from mxtwisted.notifier import Notifier


@dataclass
class FakeRoom:
    room_id: str
    members_joined_local: set[str] = field(default_factory=set)


class FakeRooms:
    """The parts of RoomEngine the ephemeral handlers use: room caches and event listeners."""

    def __init__(self, store: Any = None) -> None:
        self.rooms: dict[str, FakeRoom] = {}
        self.listeners: list[Callable[[Any, int], Any]] = []
        self.store = store

    def add_room(self, room_id: str, *members: str) -> FakeRoom:
        room = self.rooms[room_id] = FakeRoom(room_id, set(members))
        return room

    async def get_room_cache(self, room_id: str) -> FakeRoom:
        room = self.rooms.get(room_id)
        if room is None:
            raise MatrixError(404, Codes.NOT_FOUND, "Unknown room")
        return room

    def add_listener(self, listener: Callable[[Any, int], Any]) -> None:
        self.listeners.append(listener)

    def emit(self, event: Any) -> None:
        for listener in self.listeners:
            listener(event, 0)


@dataclass
class FakeEvent:
    type: str
    room_id: str
    sender: str
    state_key: Optional[str] = None
    membership: Optional[str] = None


class RecordingNotifier(Notifier):
    """A Notifier that remembers every notification: (stream, position, sorted users)."""

    def __init__(self, clock: Any) -> None:
        super().__init__(clock)
        self.calls: list[tuple[str, int, list[str]]] = []

    def notify_users(self, stream: str, position: int, user_ids: Iterable[str]) -> None:
        user_ids = sorted(set(user_ids))
        self.calls.append((stream, position, user_ids))
        super().notify_users(stream, position, user_ids)
