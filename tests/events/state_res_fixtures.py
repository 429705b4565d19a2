"""Helpers for the state resolution tests: a small room/DAG builder and a scenario player."""

from __future__ import annotations

from itertools import pairwise
from typing import Any, Iterable, Mapping, Optional, Sequence

from mxtwisted.events.auth import auth_types_for_event
from mxtwisted.events.event import Event
from mxtwisted.events.room_versions import KNOWN_ROOM_VERSIONS, RoomVersion
from mxtwisted.events.state_res import resolve_state_groups

# ---------------------------------------------------------------------------
# Room builder
# ---------------------------------------------------------------------------

ALICE = "@alice:example.org"
BOB = "@bob:example.org"
CAROL = "@carol:example.org"
EVE = "@eve:example.org"
ZED = "@zed:example.org"

JOIN = {"membership": "join"}
LEAVE = {"membership": "leave"}
BAN = {"membership": "ban"}
INVITE = {"membership": "invite"}

CREATE = ("m.room.create", "")
PL = ("m.room.power_levels", "")
JR = ("m.room.join_rules", "")
TOPIC = ("m.room.topic", "")


def member(user: str) -> tuple[str, str]:
    return ("m.room.member", user)


class Room:
    """Builds the events of one test room, with explicit short event IDs.

    ``add`` creates an event named ``name`` (event ID ``$name``) citing the named
    auth and prev events. Timestamps increase by one per event unless given;
    ``depth`` defaults to one more than the deepest prev event.
    """

    def __init__(self, version: str = "10", room_id: str = "!room:example.org") -> None:
        self.version: RoomVersion = KNOWN_ROOM_VERSIONS[version]
        self.room_id = room_id
        self.events: dict[str, Event] = {}
        self._ts = 0

    @staticmethod
    def eid(name: str) -> str:
        return name if name.startswith("$") else "$" + name

    def add(
        self,
        name: str,
        etype: str,
        sender: str,
        content: Optional[Mapping[str, Any]] = None,
        state_key: Optional[str] = None,
        auth: Iterable[str] = (),
        prev: Iterable[str] = (),
        ts: Optional[int] = None,
        depth: Optional[int] = None,
        rejected: Optional[str] = None,
    ) -> Event:
        event_id = self.eid(name)
        auth_ids = [self.eid(a) for a in auth]
        if self.version.room_id_from_create_event:
            # v12: the create event is implied by the room ID, never listed.
            create_id = "$" + self.room_id[1:]
            auth_ids = [a for a in auth_ids if a != create_id]
        prev_ids = [self.eid(p) for p in prev]
        if ts is None:
            self._ts += 1
            ts = self._ts
        if depth is None:
            depth = 1 + max((self.events[p].depth for p in prev_ids if p in self.events), default=0)
        d: dict[str, Any] = {
            "type": etype,
            "sender": sender,
            "content": dict(content or {}),
            "origin_server_ts": ts,
            "depth": depth,
        }
        if self.version.event_id_in_event:
            d["event_id"] = event_id
            d["auth_events"] = [[a, {}] for a in auth_ids]
            d["prev_events"] = [[p, {}] for p in prev_ids]
        else:
            d["auth_events"] = auth_ids
            d["prev_events"] = prev_ids
        if state_key is not None:
            d["state_key"] = state_key
        is_create = etype == "m.room.create" and state_key == ""
        if self.version.room_id_from_create_event and is_create:
            self.room_id = "!" + event_id[1:]
        else:
            d["room_id"] = self.room_id
        ev = Event(d, self.version, event_id=event_id, rejected_reason=rejected)
        self.events[event_id] = ev
        return ev

    def state(self, *names: str) -> dict[tuple[str, str], str]:
        """A state map of the named events."""
        out = {}
        for n in names:
            ev = self.events[self.eid(n)]
            out[(ev.type, ev.state_key)] = ev.event_id
        return out


# ---------------------------------------------------------------------------
# Scenario player
# ---------------------------------------------------------------------------

#: A node of a scenario: (name, type, sender, state_key or None, content).
Node = tuple[str, str, str, Optional[str], Mapping[str, Any]]

#: The room every scenario grows from, in the order the events happen.
BASE_NODES: list[Node] = [
    ("create", "m.room.create", ALICE, "", {"creator": ALICE}),
    ("alice_join", "m.room.member", ALICE, ALICE, JOIN),
    ("pl0", "m.room.power_levels", ALICE, "", {"users": {ALICE: 100}}),
    ("jr0", "m.room.join_rules", ALICE, "", {"join_rule": "public"}),
    ("bob_join", "m.room.member", BOB, BOB, JOIN),
    ("carol_join", "m.room.member", CAROL, CAROL, JOIN),
    ("zed_join", "m.room.member", ZED, ZED, JOIN),
    ("fork", "m.room.message", ZED, None, {}),
    ("merge", "m.room.message", ZED, None, {}),
]
#: prev_events chain of the base room (each cites the next as its prev event).
BASE_CHAIN = ["fork", "zed_join", "carol_join", "bob_join", "jr0", "pl0", "alice_join", "create"]


def play(
    version: str,
    nodes: Sequence[Node],
    chains: Sequence[Sequence[str]],
    *,
    base_nodes: Sequence[Node] = BASE_NODES,
    base_chain: Sequence[str] = BASE_CHAIN,
    timestamps: Optional[Mapping[str, int]] = None,
) -> tuple[Room, dict[str, dict[tuple[str, str], str]]]:
    """Grow a room from ``base_nodes`` plus ``nodes``, as a DAG of prev events.

    ``chains`` are lists of node names where each one's prev events include the
    next one (``["merge", "b", "a"]``: merge -> b -> a). Events are created in a
    topological order that follows declaration order (so timestamps follow the
    order the nodes are declared); the state before each event is the resolution
    (by ``resolve_state_groups``) of the states after its prev events, and its
    auth events are picked from that state by ``auth_types_for_event``.
    ``timestamps`` overrides the ``origin_server_ts`` of named nodes.
    Returns the room and the state *after* every node, by name.
    """
    timestamps = timestamps or {}
    all_nodes = list(base_nodes) + list(nodes)
    order_of = {n[0]: i for i, n in enumerate(all_nodes)}
    spec = {n[0]: n for n in all_nodes}
    prevs: dict[str, set[str]] = {n: set() for n in spec}
    for chain in [base_chain, *chains]:
        for a, b in pairwise(chain):
            prevs[a].add(b)
    room = Room(version)
    if room.version.room_id_from_create_event:
        room.room_id = "!create"
    state_after: dict[str, dict[tuple[str, str], str]] = {}
    done: set[str] = set()
    while len(done) < len(spec):
        ready = [n for n in spec if n not in done and prevs[n] <= done]
        if not ready:
            raise ValueError("scenario graph has a cycle")
        name = min(ready, key=order_of.__getitem__)
        _, etype, sender, state_key, content = spec[name]
        prev_states = [state_after[p] for p in sorted(prevs[name])]
        if not prev_states:
            before: dict[tuple[str, str], str] = {}
        elif len(prev_states) == 1:
            before = dict(prev_states[0])
        else:
            before = resolve_state_groups(room.version, prev_states, room.events)
        # Work out the auth events from the state before the event.
        saved_room_id = room.room_id
        probe = room.add("probe", etype, sender, content, state_key, ts=0)
        del room.events[probe.event_id]
        room.room_id = saved_room_id
        auth = [before[k] for k in sorted(auth_types_for_event(probe)) if k in before]
        ev = room.add(
            name, etype, sender, content, state_key, auth=auth, prev=sorted(prevs[name]), ts=timestamps.get(name)
        )
        after = dict(before)
        if state_key is not None:
            after[(etype, state_key)] = ev.event_id
        state_after[name] = after
        done.add(name)
    return room, state_after


def changed_state(
    room: Room,
    states: Mapping[str, Mapping[tuple[str, str], str]],
    expected: Iterable[str],
    at: str = "merge",
    since: str = "fork",
) -> tuple[dict[tuple[str, str], str], dict[tuple[str, str], str]]:
    """(expected, actual) restricted to the keys that changed between ``since``
    and ``at`` or are named by ``expected`` (node names)."""
    want = room.state(*expected)
    start, end = states[since], states[at]
    got = {k: v for k, v in end.items() if k in want or start.get(k) != v}
    return want, got
