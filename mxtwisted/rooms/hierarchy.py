"""Space hierarchies: the rooms a space leads to, through its ``m.space.child`` state events.

Spec: Client-Server API "Spaces" (``GET /_matrix/client/v1/rooms/{roomId}/hierarchy``)
and Server-Server API "Spaces" (``GET /_matrix/federation/v1/hierarchy/{roomId}``).
Behaviour follows Synapse where the spec leaves room:

- **Who sees a room.** A user sees a room they are joined to or invited to;
  one whose join rule is ``public``, or ``knock`` / ``knock_restricted`` where
  the room version has them; a ``world_readable`` one; a ``restricted`` one when
  they are joined to one of the rooms its ``allow`` names. Over federation the
  same holds for the asking *server*, with "a user of that server" for "the
  user". Rooms nobody may see are left out; their children are not explored.
- **Which rooms are local.** A room this server knows and has a joined user in
  is summarised from its current state. Any other room is asked of the servers
  in the ``via`` of the ``m.space.child`` event that names it (three at most);
  the answer's ``children`` summaries are reused for children that are not
  spaces themselves, and its ``inaccessible_children`` are not asked again.
- **Children**: only a room whose create event says ``type: m.space`` has
  children; ``m.space.child`` events without a non-empty list of strings as
  ``via`` do not count (that is how a child is removed, or a redaction leaves
  it); with ``suggested_only`` only ``suggested: true`` ones. They are ordered
  by ``order`` (a string of at most 50 printable ASCII characters; children
  without one last), then ``origin_server_ts``, then room ID.
- **Client pagination** walks the tree depth-first from the requested room,
  each room once, at most ``limit`` (default and maximum 50) per page and
  ``max_depth`` levels deep. ``next_batch`` names a session kept in memory for
  5 minutes holding the rest of the walk; it is only valid for the same user,
  room, ``suggested_only`` and ``max_depth`` (``400 M_INVALID_PARAM``).
- **Errors.** A requested room the user may not see, or that no server could
  describe, is ``403 M_FORBIDDEN`` for the client (the spec lists "the room does
  not exist" under 403); over federation an unknown room, or one the asking
  server may not see, is ``404 M_NOT_FOUND``.
"""

from __future__ import annotations

import re
import secrets
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Optional

from twisted.logger import Logger

from mxtwisted.federation.server_visibility import server_of
from mxtwisted.http.errors import Codes, MatrixError
from mxtwisted.rooms.directory import RoomDirectory
from mxtwisted.rooms.engine import RoomCache, RoomEngine
from mxtwisted.rooms.restricted import allowed_room_ids, is_restricted
from mxtwisted.rooms.visibility import WORLD_READABLE

log = Logger()

SPACE_CHILD = "m.space.child"
SPACE = "m.space"
#: Rooms in one page of the client hierarchy: the default and the maximum (as Synapse).
MAX_ROOMS_PER_PAGE = 50
#: Children considered in one federation answer (as Synapse).
MAX_CHILDREN_PER_SPACE = 50
#: Rooms looked at (shown or not) for one page of the client hierarchy.
MAX_LOOKUPS_PER_PAGE = 100
#: How long a ``next_batch`` token stays valid, and how many may be pending at once.
SESSION_LIFETIME_MS = 5 * 60 * 1000
MAX_SESSIONS = 1000

_JOIN_RULES = ("m.room.join_rules", "")
_HISTORY_VISIBILITY = ("m.room.history_visibility", "")
_ENCRYPTION = ("m.room.encryption", "")
_CREATE = ("m.room.create", "")
#: Spec ("m.space.child"): ``order`` is at most 50 characters of \x20 to \x7E.
_INVALID_ORDER = re.compile(r"[^\x20-\x7E]")


@dataclass
class _QueueEntry:
    room_id: str
    via: list[str]
    depth: int = 0
    #: The room's summary from a parent's federation answer, used when the room is not a space.
    remote_room: Optional[dict[str, Any]] = None


@dataclass
class _Session:
    """Where a client's walk stopped: what ``next_batch`` continues."""

    created_ms: int
    user_id: str
    room_id: str
    suggested_only: bool
    max_depth: Optional[int]
    queue: list[_QueueEntry]
    processed: set[str] = field(default_factory=set)


def _valid_via(content: dict[str, Any]) -> bool:
    via = content.get("via")
    return isinstance(via, list) and bool(via) and all(isinstance(v, str) for v in via)


def _child_order(child: dict[str, Any]) -> tuple[bool, str, int, str]:
    order = child["content"].get("order")
    if not isinstance(order, str) or len(order) > 50 or _INVALID_ORDER.search(order):
        order = None
    ts = child.get("origin_server_ts")
    return (order is None, order or "", ts if isinstance(ts, int) else 0, child["state_key"])


def _is_suggested(child: dict[str, Any]) -> bool:
    return child["content"].get("suggested") is True


class RoomHierarchy:
    def __init__(self, engine: RoomEngine, directory: RoomDirectory, remote: Any = None) -> None:
        """``remote``: the FederationQueries that ask other servers about rooms we are not in (None: such
        rooms are left out)."""
        self.engine = engine
        self.store = engine.store
        self.server_name = engine.server_name
        self.directory = directory
        self.remote = remote
        self._sessions: OrderedDict[str, _Session] = OrderedDict()

    # -- the client walk --------------------------------------------------------------------------------------
    async def get_hierarchy(
        self,
        user_id: str,
        room_id: str,
        suggested_only: bool = False,
        max_depth: Optional[int] = None,
        limit: Optional[int] = None,
        from_token: Optional[str] = None,
    ) -> dict[str, Any]:
        """One page of ``GET /rooms/{roomId}/hierarchy`` for ``user_id`` (a local user)."""
        page = MAX_ROOMS_PER_PAGE if limit is None else min(limit, MAX_ROOMS_PER_PAGE)
        root = await self._local_room(room_id)
        if root is not None:
            if not await self._accessible_to_user(root, user_id):
                raise MatrixError(403, Codes.FORBIDDEN, "You are not allowed to view this room")
        elif from_token is None:
            # Not a room of ours: the first page needs some server to describe it.
            raise MatrixError(403, Codes.FORBIDDEN, "You are not allowed to view this room, or it is unknown")
        if from_token is not None:
            session = self._take_session(from_token, user_id, room_id, suggested_only, max_depth)
            queue, processed = session.queue, session.processed
        else:
            queue, processed = [_QueueEntry(room_id, [])], set()
        rooms: list[dict[str, Any]] = []
        # Rooms that turn out inaccessible or unreachable count too: a space of thousands of dead children
        # must not make one request walk all of them (each may ask other servers).
        looked_at = 0
        while queue and len(rooms) < page and looked_at < MAX_LOOKUPS_PER_PAGE:
            entry = queue.pop()
            if entry.room_id in processed:
                continue
            processed.add(entry.room_id)
            looked_at += 1
            summary, children_state, known_children, inaccessible = await self._describe(
                entry, user_id, suggested_only, max_depth
            )
            if summary is None:
                continue
            rooms.append(dict(summary, children_state=children_state))
            if max_depth is None or entry.depth < max_depth:
                # Reversed: the first child is popped next (depth-first, in order).
                queue.extend(
                    _QueueEntry(child["state_key"], list(child["content"]["via"]), entry.depth + 1,
                                known_children.get(child["state_key"]))
                    for child in reversed(children_state)
                    if child["state_key"] not in inaccessible
                )
        result: dict[str, Any] = {"rooms": rooms}
        if queue:
            result["next_batch"] = self._save_session(
                _Session(self.engine.now_ms(), user_id, room_id, suggested_only, max_depth, queue, processed)
            )
        return result

    async def _describe(
        self, entry: _QueueEntry, user_id: str, suggested_only: bool, max_depth: Optional[int]
    ) -> tuple[Optional[dict[str, Any]], list[dict[str, Any]], dict[str, dict[str, Any]], set[str]]:
        """(the room's summary or None when the user may not see it, its children_state, summaries of its
        children given by a remote server, its children the remote said we may not see)."""
        room = await self._local_room(entry.room_id)
        if room is not None:
            if not await self._accessible_to_user(room, user_id):
                return None, [], {}, set()
            return await self._summary(room), await self._children_state(room, suggested_only), {}, set()
        remote = entry.remote_room
        at_max_depth = max_depth is not None and entry.depth >= max_depth
        if remote is not None and (remote.get("room_type") != SPACE or at_max_depth):
            summary, children_state, known, inaccessible = remote, [], {}, set()
        else:
            if self.remote is None:
                return None, [], {}, set()
            try:
                answer = await self.remote.hierarchy(entry.via, entry.room_id, suggested_only)
            except Exception as e:  # HierarchyUnavailable, or anything unexpected: leave the room out
                log.info("No hierarchy for {room}: {e!r}", room=entry.room_id, e=e)
                return None, [], {}, set()
            room_json = dict(answer["room"])
            children_state = room_json.pop("children_state", [])
            if suggested_only:
                children_state = [c for c in children_state if _is_suggested(c)]
            children_state = sorted(children_state, key=_child_order)[:MAX_CHILDREN_PER_SPACE]
            summary = room_json
            known = {c["room_id"]: c for c in answer["children"]}
            inaccessible = set(answer["inaccessible_children"])
        if not await self._remote_accessible_to_user(summary, user_id):
            return None, [], {}, set()
        summary = {k: v for k, v in summary.items() if k != "children_state"}
        return summary, sorted(children_state, key=_child_order), known, inaccessible

    def _save_session(self, session: _Session) -> str:
        self._expire_sessions()
        token = secrets.token_urlsafe(16)
        self._sessions[token] = session
        while len(self._sessions) > MAX_SESSIONS:
            self._sessions.popitem(last=False)
        return token

    def _take_session(
        self, token: str, user_id: str, room_id: str, suggested_only: bool, max_depth: Optional[int]
    ) -> _Session:
        self._expire_sessions()
        session = self._sessions.get(token)
        if session is None or (session.user_id, session.room_id, session.suggested_only, session.max_depth) != (
            user_id, room_id, suggested_only, max_depth
        ):
            raise MatrixError(400, Codes.INVALID_PARAM, "Unknown pagination token")
        del self._sessions[token]
        return session

    def _expire_sessions(self) -> None:
        cutoff = self.engine.now_ms() - SESSION_LIFETIME_MS
        while self._sessions:
            token, oldest = next(iter(self._sessions.items()))
            if oldest.created_ms > cutoff:
                break
            del self._sessions[token]

    # -- the federation answer ---------------------------------------------------------------------------
    async def get_federation_hierarchy(self, origin: str, room_id: str, suggested_only: bool) -> dict[str, Any]:
        """``GET /_matrix/federation/v1/hierarchy/{roomId}`` for the server ``origin``: the room, and the
        summaries of its children that this server is in (not their children)."""
        room = await self._local_room(room_id)
        if room is None or not await self._accessible_to_server(room, origin):
            raise MatrixError(404, Codes.NOT_FOUND, "Unknown room")
        children_state = await self._children_state(room, suggested_only)
        children: list[dict[str, Any]] = []
        inaccessible: list[str] = []
        for child in children_state[:MAX_CHILDREN_PER_SPACE]:
            child_room = await self._local_room(child["state_key"])
            if child_room is None:
                continue  # not ours to describe: the asking server will try the child's via servers
            if await self._accessible_to_server(child_room, origin):
                children.append(await self._summary(child_room))
            else:
                inaccessible.append(child_room.room_id)
        return {
            "room": dict(await self._summary(room), children_state=children_state),
            "children": children,
            "inaccessible_children": inaccessible,
        }

    # -- local rooms -----------------------------------------------------------------------------------------
    async def _local_room(self, room_id: str) -> Optional[RoomCache]:
        """The room if this server knows it and has a joined user in it (its state is then current)."""
        if not room_id.startswith("!") or await self.store.get_room(room_id) is None:
            return None
        try:
            room = await self.engine.get_room_cache(room_id)
        except MatrixError:
            return None
        return room if room.members_joined_local else None

    async def _summary(self, room: RoomCache) -> dict[str, Any]:
        """The room's RoomSummary: the directory entry plus ``room_version``, ``encryption`` and, for a
        restricted room, ``allowed_room_ids``."""
        summary = await self.directory.room_entry(room.room_id)
        summary["room_version"] = room.version.identifier
        state = await self.engine.get_state_events(room, [_JOIN_RULES, _ENCRYPTION])
        encryption = state.get(_ENCRYPTION)
        algorithm = encryption.content.get("algorithm") if encryption is not None else None
        if isinstance(algorithm, str):
            summary["encryption"] = algorithm
        join_rules = state.get(_JOIN_RULES)
        if join_rules is not None and is_restricted(join_rules.content.get("join_rule"), room.version):
            allowed = allowed_room_ids(join_rules.content)
            if allowed:
                summary["allowed_room_ids"] = allowed
        return summary

    async def _children_state(self, room: RoomCache, suggested_only: bool) -> list[dict[str, Any]]:
        """The room's ``m.space.child`` events that name a child, stripped, with ``origin_server_ts``, in
        order (none unless the room is a space)."""
        create = (await self.engine.get_state_events(room, [_CREATE])).get(_CREATE)
        if create is None or create.content.get("type") != SPACE:
            return []
        keys = [key for key in room.state if key[0] == SPACE_CHILD]
        events = await self.engine.get_state_events(room, keys)
        children = []
        for ev in events.values():
            if not _valid_via(ev.content) or (suggested_only and ev.content.get("suggested") is not True):
                continue
            children.append({
                "type": ev.type,
                "state_key": ev.state_key,
                "content": ev.content,
                "sender": ev.sender,
                "origin_server_ts": ev.origin_server_ts,
            })
        return sorted(children, key=_child_order)

    async def _open_to_all(self, room: RoomCache) -> tuple[bool, Optional[dict[str, Any]]]:
        """(whether anyone may see the room: public or knockable join rule, or world readable; the join
        rules content)."""
        state = await self.engine.get_state_events(room, [_JOIN_RULES, _HISTORY_VISIBILITY])
        join_rules = state.get(_JOIN_RULES)
        content = join_rules.content if join_rules is not None else None
        rule = content.get("join_rule") if content is not None else None
        version = room.version
        if rule == "public" or (rule == "knock" and version.knock_join_rule) or (
            rule == "knock_restricted" and version.knock_restricted_join_rule
        ):
            return True, content
        hv = state.get(_HISTORY_VISIBILITY)
        if hv is not None and hv.content.get("history_visibility") == WORLD_READABLE:
            return True, content
        return False, content

    async def _accessible_to_user(self, room: RoomCache, user_id: str) -> bool:
        open_to_all, join_rules = await self._open_to_all(room)
        if open_to_all:
            return True
        member = (await self.engine.get_state_events(room, [("m.room.member", user_id)])).get(("m.room.member", user_id))
        if member is not None and member.membership in ("join", "invite"):
            return True
        if join_rules is not None and is_restricted(join_rules.get("join_rule"), room.version):
            joined = await self.store.get_rooms_for_user(user_id, ("join",))
            return any(allowed in joined for allowed in allowed_room_ids(join_rules))
        return False

    async def _accessible_to_server(self, room: RoomCache, origin: str) -> bool:
        open_to_all, join_rules = await self._open_to_all(room)
        if open_to_all:
            return True
        members = await self.store.get_members(room.room_id, ("join", "invite"))
        if any(server_of(user) == origin for user in members):
            return True
        if join_rules is not None and is_restricted(join_rules.get("join_rule"), room.version):
            for allowed in allowed_room_ids(join_rules):
                joined = await self.store.get_members(allowed, ("join",))
                if any(server_of(user) == origin for user in joined):
                    return True
        return False

    async def _remote_accessible_to_user(self, summary: dict[str, Any], user_id: str) -> bool:
        """Whether the user may see a room described by another server (that server let *us* see it)."""
        if summary.get("join_rule", "public") in ("public", "knock", "knock_restricted"):
            return True
        if summary.get("world_readable") is True:
            return True
        allowed = summary.get("allowed_room_ids")
        if isinstance(allowed, list) and allowed:
            joined = await self.store.get_rooms_for_user(user_id, ("join",))
            if any(room_id in joined for room_id in allowed if isinstance(room_id, str)):
                return True
        # Known here (an invite, say) though no local user is joined: ask the local state.
        if await self.store.get_room(summary["room_id"]) is not None:
            try:
                room = await self.engine.get_room_cache(summary["room_id"])
            except MatrixError:
                return False
            member = (await self.engine.get_state_events(room, [("m.room.member", user_id)])).get(
                ("m.room.member", user_id)
            )
            return member is not None and member.membership in ("join", "invite")
        return False


__all__ = ["RoomHierarchy"]
