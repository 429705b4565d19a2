"""Room aliases and the published room directory.

Spec: Client-Server API "Room aliases" (``/directory/room/{roomAlias}``,
``/rooms/{roomId}/aliases``) and "Published room directory"
(``/directory/list/room/{roomId}``, ``/publicRooms``). Who may do what where
the spec leaves it to the server follows Synapse:

- creating an alias needs the creator to be joined to the room; a taken alias
  is ``409 M_UNKNOWN``;
- deleting one needs to be its creator, or a joined member able to send
  ``m.room.canonical_alias``; a deleted alias also leaves the room's
  canonical alias event (``alias`` / ``alt_aliases``) when the user may change it;
- publishing a room (or hiding it) needs a joined member able to send
  ``m.room.canonical_alias``, or the room's creator, and the spam checkers' consent;
- the list is ordered by joined members (most first), then room ID, with
  keyset pagination tokens, so a page never repeats or skips a room when
  others are published meanwhile.

Aliases of other servers are resolved by asking their server (``resolve_remote_alias``, the federation
``/query/directory``); they cannot be created here (``400 M_INVALID_PARAM``) and deleting one is ``404``
(this server holds no such alias; as Synapse, and the only error the spec lists).
"""

from __future__ import annotations

import base64
import binascii
import bisect
import json
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Optional

from twisted.logger import Logger

from mxtwisted.events.auth import get_send_level
from mxtwisted.events.validation import is_valid_room_alias
from mxtwisted.http.errors import Codes, MatrixError
from mxtwisted.rooms.engine import RoomCache, RoomEngine
from mxtwisted.rooms.policy import ModulePolicies
from mxtwisted.rooms.visibility import WORLD_READABLE

log = Logger()

CANONICAL_ALIAS = "m.room.canonical_alias"
#: At most this many rooms in one page of the published room directory (as Synapse).
MAX_PUBLIC_ROOMS_PAGE = 100

#: The state a directory entry is made of.
_ENTRY_STATE = [
    ("m.room.create", ""),
    ("m.room.name", ""),
    ("m.room.topic", ""),
    (CANONICAL_ALIAS, ""),
    ("m.room.avatar", ""),
    ("m.room.history_visibility", ""),
    ("m.room.guest_access", ""),
    ("m.room.join_rules", ""),
]


def _server_of(identifier: str) -> str:
    return identifier.split(":", 1)[1] if ":" in identifier else ""


def _string(content: dict[str, Any], key: str) -> Optional[str]:
    value = content.get(key)
    return value if isinstance(value, str) and value else None


class RoomDirectory:
    def __init__(
        self,
        engine: RoomEngine,
        policies: Optional[ModulePolicies] = None,
        resolve_remote_alias: Optional[Callable[[str], Awaitable[tuple[str, list[str]]]]] = None,
    ) -> None:
        """``resolve_remote_alias(alias)`` → (room_id, servers) asks the alias's server (RemoteJoiner.resolve_alias);
        without it, aliases of other servers are 404."""
        self.engine = engine
        self._resolve_remote_alias = resolve_remote_alias
        self.store = engine.store
        self.server_name = engine.server_name
        self.policies = policies or ModulePolicies()

    # -- helpers ------------------------------------------------------------------------------------------
    def _check_alias(self, alias: str) -> None:
        if not is_valid_room_alias(alias):
            raise MatrixError(400, Codes.INVALID_PARAM, "Room alias invalid")

    async def _membership(self, room: RoomCache, user_id: str) -> Optional[str]:
        state = await self.engine.get_state_events(room, [("m.room.member", user_id)])
        member = state.get(("m.room.member", user_id))
        return member.membership if member else None

    async def _can_change_canonical_alias(self, room: RoomCache, user_id: str) -> bool:
        """Joined, with the power to send m.room.canonical_alias (Synapse's "moderator" test for the directory)."""
        if await self._membership(room, user_id) != "join":
            return False
        power_levels = (await self.engine.get_state_events(room, [("m.room.power_levels", "")])).get(
            ("m.room.power_levels", "")
        )
        return await self.engine.get_power_level(room, user_id) >= get_send_level(CANONICAL_ALIAS, "", power_levels)

    # -- aliases -----------------------------------------------------------------------------------------------
    async def create_alias(self, user_id: str, alias: str, room_id: Any) -> None:
        """``PUT /directory/room/{roomAlias}``."""
        self._check_alias(alias)
        if _server_of(alias) != self.server_name:
            raise MatrixError(400, Codes.INVALID_PARAM, "Room alias must be on this server")
        if not isinstance(room_id, str) or not room_id.startswith("!"):
            raise MatrixError(400, Codes.BAD_JSON, "'room_id' must be a room ID")
        room = await self.engine.get_room_cache(room_id)
        if await self._membership(room, user_id) != "join":
            raise MatrixError(403, Codes.FORBIDDEN, "You must be in the room to create an alias for it")
        if not await self.store.create_alias(alias, room_id, user_id):
            raise MatrixError(409, Codes.UNKNOWN, f"Room alias {alias} already exists")

    async def resolve_alias(self, alias: str) -> dict[str, Any]:
        """``GET /directory/room/{roomAlias}``: the room ID and servers that can be joined through."""
        self._check_alias(alias)
        if _server_of(alias) != self.server_name and self._resolve_remote_alias is not None:
            room_id, servers = await self._resolve_remote_alias(alias)
            return {"room_id": room_id, "servers": servers}
        found = await self.store.get_alias(alias) if _server_of(alias) == self.server_name else None
        if found is None:
            raise MatrixError(404, Codes.NOT_FOUND, f"Room alias {alias} not found")
        room_id = found[0]
        members = await self.store.get_members(room_id, ("join",))
        others = sorted({_server_of(user) for user in members} - {self.server_name, ""})
        return {"room_id": room_id, "servers": [self.server_name, *others]}

    async def delete_alias(self, user_id: str, alias: str) -> None:
        """``DELETE /directory/room/{roomAlias}``."""
        self._check_alias(alias)
        found = await self.store.get_alias(alias) if _server_of(alias) == self.server_name else None
        if found is None:
            raise MatrixError(404, Codes.NOT_FOUND, f"Room alias {alias} not found")
        room_id, creator = found
        room = await self.engine.get_room_cache(room_id)
        if creator != user_id and not await self._can_change_canonical_alias(room, user_id):
            raise MatrixError(403, Codes.FORBIDDEN, "You don't have permission to delete the alias")
        if not await self.store.delete_alias(alias):
            raise MatrixError(404, Codes.NOT_FOUND, f"Room alias {alias} not found")
        await self._drop_from_canonical_alias(room, user_id, alias)

    async def _drop_from_canonical_alias(self, room: RoomCache, user_id: str, alias: str) -> None:
        """A deleted alias leaves m.room.canonical_alias too, if the user may change it (spec: "Room aliases")."""
        current = (await self.engine.get_state_events(room, [(CANONICAL_ALIAS, "")])).get((CANONICAL_ALIAS, ""))
        if current is None:
            return
        content = dict(current.content)
        changed = False
        if content.get("alias") == alias:
            del content["alias"]
            changed = True
        alt = content.get("alt_aliases")
        if isinstance(alt, list) and alias in alt:
            remaining = [a for a in alt if a != alias]
            if remaining:
                content["alt_aliases"] = remaining
            else:
                del content["alt_aliases"]
            changed = True
        if not changed:
            return
        try:
            await self.engine.send_event(user_id, room.room_id, CANONICAL_ALIAS, content, state_key="")
        except MatrixError as e:
            log.info("Alias {alias} deleted; the canonical alias event was left as is: {error}", alias=alias, error=e)

    async def local_aliases(self, user_id: str, room_id: str) -> list[str]:
        """``GET /rooms/{roomId}/aliases``: for joined members, or anyone if the room is world-readable."""
        room = await self.engine.get_room_cache(room_id)
        if await self._membership(room, user_id) != "join":
            hv = (await self.engine.get_state_events(room, [("m.room.history_visibility", "")])).get(
                ("m.room.history_visibility", "")
            )
            if hv is None or hv.content.get("history_visibility") != WORLD_READABLE:
                raise MatrixError(403, Codes.FORBIDDEN, "You are not a member of the room")
        return await self.store.get_aliases_for_room(room_id)

    # -- published room directory -------------------------------------------------------------------------------
    async def get_visibility(self, room_id: str) -> str:
        info = await self.store.get_room(room_id)
        if info is None:
            raise MatrixError(404, Codes.NOT_FOUND, "Room not found")
        return "public" if info.is_public else "private"

    async def set_visibility(self, user_id: str, room_id: str, visibility: str, is_guest: bool = False) -> None:
        """``PUT /directory/list/room/{roomId}``."""
        info = await self.store.get_room(room_id)
        if info is None:
            raise MatrixError(404, Codes.NOT_FOUND, "Room not found")
        await self.policies.user_may_publish_room(user_id, room_id)
        if is_guest:
            raise MatrixError(403, Codes.FORBIDDEN, "Guests cannot edit the published room directory")
        room = await self.engine.get_room_cache(room_id)
        allowed = await self._can_change_canonical_alias(room, user_id) or (
            info.creator == user_id and await self._membership(room, user_id) == "join"
        )
        if not allowed:
            raise MatrixError(
                403, Codes.FORBIDDEN, "You need to be the room's creator or a moderator to change its directory entry"
            )
        await self.store.set_room_public(room_id, visibility == "public")

    async def room_entry(self, room_id: str) -> dict[str, Any]:
        """One PublishedRoomsChunk: what the directory shows of a room."""
        room = await self.engine.get_room_cache(room_id)
        state = await self.engine.get_state_events(room, _ENTRY_STATE)

        def content(event_type: str) -> dict[str, Any]:
            ev = state.get((event_type, ""))
            return ev.content if ev is not None else {}

        members = await self.store.get_members(room_id, ("join",))
        entry: dict[str, Any] = {
            "room_id": room_id,
            "num_joined_members": len(members),
            "world_readable": content("m.room.history_visibility").get("history_visibility") == WORLD_READABLE,
            "guest_can_join": content("m.room.guest_access").get("guest_access") == "can_join",
        }
        optional = {
            "name": _string(content("m.room.name"), "name"),
            "topic": _string(content("m.room.topic"), "topic"),
            "canonical_alias": _string(content(CANONICAL_ALIAS), "alias"),
            "avatar_url": _string(content("m.room.avatar"), "url"),
            "join_rule": _string(content("m.room.join_rules"), "join_rule"),
            "room_type": _string(content("m.room.create"), "type"),
        }
        entry.update({key: value for key, value in optional.items() if value is not None})
        return entry

    async def public_rooms(
        self,
        limit: Optional[int] = None,
        since: Optional[str] = None,
        search_term: Optional[str] = None,
        room_types: Optional[list[Optional[str]]] = None,
    ) -> dict[str, Any]:
        """``GET``/``POST /publicRooms`` for this server's directory."""
        page = MAX_PUBLIC_ROOMS_PAGE if limit is None else max(0, min(limit, MAX_PUBLIC_ROOMS_PAGE))
        direction, bound = _parse_since(since)
        published = await self.store.get_public_rooms()
        entries = []
        for room_id in published:
            try:
                entry = await self.room_entry(room_id)
            except MatrixError:
                continue  # a published room this server no longer knows
            if matches_search(entry, search_term, room_types):
                entries.append(entry)
        entries.sort(key=_order)
        keys = [_order(e) for e in entries]
        if direction == "f":
            start = 0 if bound is None else bisect.bisect_right(keys, bound)
            end = min(start + page, len(entries))
        else:
            end = len(entries) if bound is None else bisect.bisect_left(keys, bound)
            start = max(0, end - page)
        chunk = entries[start:end]
        result: dict[str, Any] = {"chunk": chunk, "total_room_count_estimate": len(published)}
        # next_batch: the rooms after this page; prev_batch: those before it (absent at either end).
        if end < len(entries):
            result["next_batch"] = _token("f", keys[end - 1] if end > start else (keys[start - 1] if start else None))
        if start > 0:
            result["prev_batch"] = _token("b", keys[start] if start < len(keys) else None)
        return result


def _order(entry: dict[str, Any]) -> tuple[int, str]:
    """The directory's order: most joined members first, then by room ID."""
    return (-entry["num_joined_members"], entry["room_id"])


def matches_search(entry: dict[str, Any], search_term: Optional[str], room_types: Optional[list[Optional[str]]]) -> bool:
    """Whether a directory entry passes a ``/publicRooms`` filter (also used on other servers' entries)."""
    if room_types is not None and entry.get("room_type") not in room_types:
        return False
    if search_term:
        needle = search_term.casefold()
        haystack = [entry.get("name"), entry.get("topic"), entry.get("canonical_alias")]
        if not any(isinstance(h, str) and needle in h.casefold() for h in haystack) and search_term != entry["room_id"]:
            return False
    return True


def _token(direction: str, key: Optional[tuple[int, str]]) -> str:
    """An opaque pagination token: a direction and the (order) key of the room it continues from."""
    raw = json.dumps([direction, list(key) if key is not None else None], separators=(",", ":")).encode("utf-8")
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def _parse_since(since: Optional[str]) -> tuple[str, Optional[tuple[int, str]]]:
    """``("f" | "b", key or None)``: page after (or before) that key; None: from the start (or the end)."""
    if not since:
        return "f", None
    try:
        raw = base64.urlsafe_b64decode(since + "=" * (-len(since) % 4))
        direction, key = json.loads(raw)
        if direction not in ("f", "b"):
            raise ValueError(direction)
        if key is None:
            return direction, None
        members, room_id = key
        if not isinstance(members, int) or not isinstance(room_id, str):
            raise ValueError(key)
        return direction, (members, room_id)
    except (ValueError, TypeError, binascii.Error, UnicodeDecodeError):
        raise MatrixError(400, Codes.INVALID_PARAM, "Invalid 'since' token") from None


@dataclass
class DirectorySearch:
    """The search of a ``POST /publicRooms`` body (client or federation API), checked."""

    since: Optional[str]
    term: Optional[str]
    room_types: Optional[list]
    #: The ``filter`` object as given (``{}`` when absent), to pass on to another server.
    filter: dict


def parse_directory_search(body: dict) -> DirectorySearch:
    """``since`` and ``filter`` (``generic_search_term``, ``room_types``) of a ``POST /publicRooms`` body;
    400 M_BAD_JSON when they have the wrong types."""
    since = body.get("since")
    if since is not None and not isinstance(since, str):
        raise MatrixError(400, Codes.BAD_JSON, "'since' must be a string")
    search_filter = body.get("filter")
    if search_filter is None:
        search_filter = {}
    if not isinstance(search_filter, dict):
        raise MatrixError(400, Codes.BAD_JSON, "'filter' must be an object")
    term = search_filter.get("generic_search_term")
    if term is not None and not isinstance(term, str):
        raise MatrixError(400, Codes.BAD_JSON, "'filter.generic_search_term' must be a string")
    room_types = search_filter.get("room_types")
    if room_types is not None and (
        not isinstance(room_types, list) or not all(t is None or isinstance(t, str) for t in room_types)
    ):
        raise MatrixError(400, Codes.BAD_JSON, "'filter.room_types' must be a list of strings or nulls")
    return DirectorySearch(since, term, room_types, search_filter)
