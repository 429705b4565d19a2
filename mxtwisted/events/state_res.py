"""State resolution for every room version: v1 (room v1), v2 (rooms v2-v11), v2.1 (room v12).

Spec:

* "Room Versions: Room version 1 / State resolution" (``rooms/v1``) for :func:`resolve_state_v1`;
* "Room Versions: Room version 2 / State resolution" (``rooms/v2``, shared by v2-v11)
  for :func:`resolve_state_v2`, with its *Definitions* (power events, unconflicted
  state map and conflicted state set, auth chain, auth difference, full conflicted
  set, reverse topological power ordering, mainline ordering, iterative auth
  checks), its *Algorithm* steps 1-5 and its *Rejected events* section;
* "Room Versions: Room version 12 / State resolution" (``rooms/v12``, MSC4297,
  state resolution v2.1): the *conflicted state subgraph* joins the full
  conflicted set, and step 2 starts the iterative auth checks from an *empty*
  state map instead of the unconflicted state map.

Everything here is pure and synchronous: the caller passes every event the
resolution can touch (the events of the state maps and their whole auth chains)
in ``event_map``; a missing one raises :class:`StateResolutionError` naming it.
The authorisation rules are those of :mod:`mxtwisted.events.auth`; nothing here
re-implements them.

State maps are ``{(event_type, state_key): event_id}``. Events are looked up in
``event_map`` by ID; per-call caches (auth event IDs, sender power levels,
mainline positions) live in a :class:`_Graph` so that each is computed once.
See ``docs/state-resolution.md`` for the complexity analysis.
"""

from __future__ import annotations

import hashlib
import heapq
import math
from typing import Iterable, Mapping, Optional, Sequence

from mxtwisted.events.auth import (
    AuthError,
    auth_types_for_event,
    check_auth_rules,
    get_power_level,
)
from mxtwisted.events.event import Event
from mxtwisted.events.room_versions import RoomVersion, StateResAlgorithm

__all__ = [
    "StateKey",
    "StateMap",
    "StateResolutionError",
    "resolve_state_groups",
    "resolve_state_v1",
    "resolve_state_v2",
    "separate",
    "is_power_event",
    "auth_chain",
    "auth_difference",
    "conflicted_state_subgraph",
    "full_conflicted_set",
    "sender_power_level",
    "reverse_topological_power_ordering",
    "mainline",
    "mainline_ordering",
    "iterative_auth_checks",
]

#: A state key: ``(event_type, state_key)``.
StateKey = tuple[str, str]
#: A state map: state key to event ID.
StateMap = Mapping[StateKey, str]

CREATE_KEY: StateKey = ("m.room.create", "")
POWER_KEY: StateKey = ("m.room.power_levels", "")
_PL = "m.room.power_levels"
_JR = "m.room.join_rules"
_MEMBER = "m.room.member"
_CREATE = "m.room.create"

_INF = math.inf


class StateResolutionError(KeyError):
    """State resolution could not run: an event it needs is not in ``event_map``,
    or the auth graph is not a DAG.

    ``event_id`` names the offending event when there is one. A :class:`KeyError`
    so that callers treating "event not found" uniformly can catch it, but with a
    readable ``str()``.
    """

    def __init__(self, message: str, event_id: Optional[str] = None) -> None:
        super().__init__(message)
        self.message = message
        self.event_id = event_id

    def __str__(self) -> str:
        return self.message


# ---------------------------------------------------------------------------
# Shared plumbing
# ---------------------------------------------------------------------------


def _int_or_zero(value: object) -> int:
    """``origin_server_ts``/``depth`` for sorting; anything that is not an int sorts as 0.

    Event validation happens before events reach state resolution; this only
    stops a malformed value from making two sort keys incomparable.
    """
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    return 0


class _Graph:
    """Per-call view of ``event_map`` with the caches the algorithms share.

    Not part of the API: every public function builds one (or receives one from
    :func:`resolve_state_groups`) and throws it away afterwards, so cached
    answers never outlive the ``event_map`` they were computed from.
    """

    __slots__ = ("event_map", "_auth_ids", "_power", "_pl_parent", "_mainline_pos_cache")

    def __init__(self, event_map: Mapping[str, Event]) -> None:
        self.event_map = event_map
        self._auth_ids: dict[str, tuple[str, ...]] = {}
        self._power: dict[str, float] = {}
        self._pl_parent: dict[str, Optional[str]] = {}
        self._mainline_pos_cache: dict[str, float] = {}

    def event(self, event_id: str) -> Event:
        try:
            return self.event_map[event_id]
        except KeyError:
            raise StateResolutionError(
                f"state resolution needs event {event_id} but it is not in event_map "
                "(event_map must hold every event of the state maps and of their auth chains)",
                event_id,
            ) from None

    def auth_ids(self, event_id: str) -> tuple[str, ...]:
        """The event's ``auth_events`` IDs (as listed; v12 create not added)."""
        ids = self._auth_ids.get(event_id)
        if ids is None:
            ids = tuple(self.event(event_id).auth_event_ids)
            self._auth_ids[event_id] = ids
        return ids

    def create_event_for(self, event: Event) -> Optional[Event]:
        """Room v12: the create event named by a non-create event's ``room_id``.

        In rooms whose ID is the create event's reference hash the create event
        is never listed in ``auth_events``; the auth rules still need it, so it
        is derived here (``!x`` -> ``$x``). ``None`` for other room versions and
        for the create event itself.
        """
        if not event.room_version.room_id_from_create_event:
            return None
        if event.type == _CREATE and event.state_key == "":
            return None
        room_id = event.room_id
        if not isinstance(room_id, str) or not room_id.startswith("!"):
            raise StateResolutionError(
                f"event {event.event_id} has no usable room_id to find its create event from",
                event.event_id,
            )
        return self.event("$" + room_id[1:])

    def power(self, event_id: str) -> float:
        """Power level of the event's sender according to the event's own auth events.

        Spec: rooms/v2 "Reverse topological power ordering", rule 1 ("when looking
        at their respective auth_events"). Cached per event.
        """
        pl = self._power.get(event_id)
        if pl is None:
            ev = self.event(event_id)
            auth_map: dict[StateKey, Event] = {}
            for aid in self.auth_ids(event_id):
                aev = self.event(aid)
                auth_map[(aev.type, aev.state_key)] = aev  # type: ignore[index]
            create = self.create_event_for(ev)
            if create is not None:
                auth_map[CREATE_KEY] = create
            try:
                pl = get_power_level(ev.sender, auth_map)
            except AuthError:
                # Malformed power levels (possible in v1-v9, whose rules only
                # validate ``users``): no power can be shown, so none is assumed.
                pl = 0
            self._power[event_id] = pl
        return pl

    def pl_parent(self, event_id: str) -> Optional[str]:
        """The ``m.room.power_levels`` event among the event's auth events, if any.

        Spec: rooms/v2 "Mainline ordering" ("the m.room.power_levels event in the
        auth_events"). The first one listed wins should there be several.
        """
        try:
            return self._pl_parent[event_id]
        except KeyError:
            pass
        found = None
        for aid in self.auth_ids(event_id):
            aev = self.event(aid)
            if aev.type == _PL and aev.state_key == "":
                found = aid
                break
        self._pl_parent[event_id] = found
        return found


def _descendants_first(graph: _Graph, roots: Iterable[str]) -> list[str]:
    """Every event reachable from ``roots`` through ``auth_events`` (roots included),
    ordered so that each event comes before all of its auth events.

    Iterative DFS post-order, reversed: O(V + E) over the reachable auth graph.
    Raises :class:`StateResolutionError` for an event missing from the map.
    Terminates on a (malformed) cyclic graph, though the order is then only
    approximately topological.
    """
    visited: set[str] = set()
    post: list[str] = []
    auth_ids = graph.auth_ids
    for root in roots:
        if root in visited:
            continue
        visited.add(root)
        stack = [(root, iter(auth_ids(root)))]
        while stack:
            node, it = stack[-1]
            for aid in it:
                if aid not in visited:
                    visited.add(aid)
                    stack.append((aid, iter(auth_ids(aid))))
                    break
            else:
                stack.pop()
                post.append(node)
    post.reverse()
    return post


# ---------------------------------------------------------------------------
# Definitions (rooms/v2 "Definitions", rooms/v12 additions)
# ---------------------------------------------------------------------------


def separate(state_sets: Sequence[StateMap]) -> tuple[dict[StateKey, str], dict[StateKey, set[str]]]:
    """Split state maps into the unconflicted state map and the conflicted state.

    Spec: rooms/v2 "Unconflicted state map and conflicted state set": ``(K, V)`` is
    unconflicted when ``K`` is in *every* state map with the same ``V``; otherwise
    every ``V`` found for ``K`` is conflicted (a key missing from some map is
    therefore conflicted). Returns ``(unconflicted, {K: {V, ...}})``; the
    conflicted state *set* is the union of the returned sets.
    """
    unconflicted: dict[StateKey, str] = {}
    conflicted: dict[StateKey, set[str]] = {}
    if not state_sets:
        return unconflicted, conflicted
    first = state_sets[0]
    rest = state_sets[1:]
    keys: set[StateKey] = set(first)
    for s in rest:
        keys.update(s)
    for key in keys:
        v0 = first.get(key)
        if v0 is not None and all(s.get(key) == v0 for s in rest):
            unconflicted[key] = v0
        else:
            conflicted[key] = {s[key] for s in state_sets if key in s}
    return unconflicted, conflicted


def is_power_event(event: Event) -> bool:
    """Spec: rooms/v2 "Power events".

    A state event of type ``m.room.power_levels`` or ``m.room.join_rules``, or an
    ``m.room.member`` state event with ``membership`` ``leave`` or ``ban`` whose
    ``sender`` is not its ``state_key`` (a kick or a ban). ``m.room.create`` is
    not a power event by this definition (Synapse counts it as one; the two only
    differ if the create event itself is conflicted).
    """
    state_key = event.state_key
    if state_key is None:
        return False
    etype = event.type
    if etype == _PL or etype == _JR:
        return True
    if etype == _MEMBER:
        return event.membership in ("leave", "ban") and event.sender != state_key
    return False


def auth_chain(event_ids: Iterable[str], event_map: Mapping[str, Event]) -> set[str]:
    """Union of the auth chains of ``event_ids``.

    Spec: rooms/v2 "Auth chain": all of E's auth events, their auth events, and so
    on recursively. The events of ``event_ids`` themselves are only included
    when one is in the auth chain of another. O(V + E) of the reachable graph.
    """
    graph = _Graph(event_map)
    seen: set[str] = set()
    stack: list[str] = []
    for eid in event_ids:
        stack.extend(graph.auth_ids(eid))
    while stack:
        eid = stack.pop()
        if eid in seen:
            continue
        seen.add(eid)
        stack.extend(graph.auth_ids(eid))
    return seen


def _auth_difference(
    graph: _Graph,
    state_sets: Sequence[StateMap],
    include_state_events: bool,
) -> set[str]:
    n = len(state_sets)
    if n == 0:
        return set()
    seed: dict[str, int] = {}
    for i, state_set in enumerate(state_sets):
        bit = 1 << i
        for eid in state_set.values():
            seed[eid] = seed.get(eid, 0) | bit
    # reach[e] = bit mask of the state sets whose full auth chain C_i holds e.
    # One pass over the reachable auth graph, citing events before cited ones,
    # so each mask is final before it is pushed further down.
    reach: dict[str, int] = {}
    auth_ids = graph.auth_ids
    for eid in _descendants_first(graph, seed):
        mask = reach.get(eid, 0) | seed.get(eid, 0)
        if mask:
            for aid in auth_ids(eid):
                reach[aid] = reach.get(aid, 0) | mask
    if include_state_events:
        for eid, mask in seed.items():
            reach[eid] = reach.get(eid, 0) | mask
    full = (1 << n) - 1
    return {eid for eid, mask in reach.items() if mask != full}


def auth_difference(
    state_sets: Sequence[StateMap],
    event_map: Mapping[str, Event],
    *,
    include_state_events: bool = False,
) -> set[str]:
    """Spec: rooms/v2 "Auth difference": ``∪ C_i − ∩ C_i``.

    ``C_i``, the full auth chain of state map ``S_i``, is the union of the auth
    chains of the events in ``S_i``. By the spec's definition of an auth chain
    this does not contain the events of ``S_i`` themselves (unless one is an
    auth event of another), which is the default here.

    ``include_state_events=True`` adds every event of ``S_i`` to ``C_i``, as
    Synapse and Ruma do. The two readings differ only for unconflicted state
    events that are an auth event in some state maps' chains and not others:
    the literal reading puts those into the auth difference, so they are
    replayed by the iterative auth checks (step 5 re-applies them at the end
    either way). See docs/state-resolution.md.

    O(V + E) over the auth graph reachable from the state maps, using one bit
    mask per event instead of one chain set per state map.
    """
    return _auth_difference(_Graph(event_map), state_sets, include_state_events)


def _conflicted_state_subgraph(graph: _Graph, conflicted_ids: set[str]) -> set[str]:
    order = _descendants_first(graph, conflicted_ids)
    # Every event in `order` is reachable from a conflicted event; keep those
    # from which a conflicted event is reachable, walking auth events first.
    on_path: set[str] = set()
    auth_ids = graph.auth_ids
    for eid in reversed(order):
        if eid in conflicted_ids:
            on_path.add(eid)
        else:
            for aid in auth_ids(eid):
                if aid in on_path:
                    on_path.add(eid)
                    break
    return on_path


def conflicted_state_subgraph(conflicted_event_ids: Iterable[str], event_map: Mapping[str, Event]) -> set[str]:
    """Spec: rooms/v12 "Conflicted state subgraph" (MSC4297).

    Every event lying on an ``auth_events`` path from one conflicted event to
    another (endpoints included): the events that are both reachable from the
    conflicted state set and from which the conflicted state set is reachable.
    The conflicted events themselves are always part of the result. O(V + E)
    over the auth graph reachable from the conflicted events.
    """
    return _conflicted_state_subgraph(_Graph(event_map), set(conflicted_event_ids))


def _full_conflicted_set(
    graph: _Graph,
    algorithm: StateResAlgorithm,
    state_sets: Sequence[StateMap],
    conflicted: Mapping[StateKey, set[str]],
) -> set[str]:
    conflicted_ids: set[str] = set()
    for ids in conflicted.values():
        conflicted_ids.update(ids)
    # The state events themselves count as part of their state set's auth
    # chain, as Synapse and the other deployed servers compute it: resolving
    # like the rest of the network matters more than the narrower reading.
    full = conflicted_ids | _auth_difference(graph, state_sets, True)
    if algorithm is StateResAlgorithm.V2_1:
        full |= _conflicted_state_subgraph(graph, conflicted_ids)
    return full


def full_conflicted_set(
    room_version: RoomVersion,
    state_sets: Sequence[StateMap],
    event_map: Mapping[str, Event],
) -> set[str]:
    """Spec: rooms/v2 "Full conflicted set" (conflicted state set ∪ auth difference);
    for v2.1 (rooms/v12) also ∪ the conflicted state subgraph."""
    _, conflicted = separate(state_sets)
    return _full_conflicted_set(_Graph(event_map), room_version.state_res, state_sets, conflicted)


def sender_power_level(event_id: str, event_map: Mapping[str, Event]) -> float:
    """Power level of an event's sender, read from the event's own ``auth_events``
    (plus, in room v12, the create event named by its ``room_id``, which makes the
    room creators infinitely powerful). Spec: rooms/v2 "Reverse topological power
    ordering", comparison rule 1. Uses :func:`mxtwisted.events.auth.get_power_level`;
    0 when that finds the power levels malformed (v1-v9 only)."""
    return _Graph(event_map).power(event_id)


# ---------------------------------------------------------------------------
# Orderings
# ---------------------------------------------------------------------------


def _reverse_topological_power_ordering(graph: _Graph, event_ids: Iterable[str]) -> list[str]:
    nodes = set(event_ids)
    if not nodes:
        return []
    auth_ids = graph.auth_ids
    # The DAG formed by auth events, restricted to `nodes`: x must come after
    # every node reachable from it. Paths may pass through events outside
    # `nodes`, so each x gets an edge to its *nearest* nodes below it:
    # near[v] = the nodes reachable from v through non-nodes only.
    order = _descendants_first(graph, nodes)
    empty: frozenset[str] = frozenset()
    near: dict[str, frozenset[str]] = {}
    edges: dict[str, frozenset[str]] = {}
    for eid in reversed(order):  # auth events before the events citing them
        acc: Optional[set[str]] = None
        single: frozenset[str] = empty
        for aid in auth_ids(eid):
            below = frozenset((aid,)) if aid in nodes else near.get(aid, empty)
            if not below:
                continue
            if acc is None and not single:
                single = below
            else:
                if acc is None:
                    acc = set(single)
                acc.update(below)
        nearest = frozenset(acc) if acc is not None else single
        if eid in nodes:
            edges[eid] = nearest
        else:
            near[eid] = nearest

    # Kahn's algorithm, always taking the smallest available event by the
    # spec's comparison: higher sender power first, then older
    # origin_server_ts, then smaller event ID.
    def key(eid: str) -> tuple[float, int, str]:
        return (-graph.power(eid), _int_or_zero(graph.event(eid).origin_server_ts), eid)

    remaining: dict[str, int] = {}
    cited_by: dict[str, list[str]] = {}
    heap: list[tuple[tuple[float, int, str], str]] = []
    for eid in nodes:
        below = edges[eid]
        remaining[eid] = len(below)
        for aid in below:
            cited_by.setdefault(aid, []).append(eid)
        if not below:
            heap.append((key(eid), eid))
    heapq.heapify(heap)
    result: list[str] = []
    while heap:
        _, eid = heapq.heappop(heap)
        result.append(eid)
        for parent in cited_by.get(eid, ()):
            remaining[parent] -= 1
            if remaining[parent] == 0:
                heapq.heappush(heap, (key(parent), parent))
    if len(result) != len(nodes):
        stuck = sorted(nodes.difference(result))
        raise StateResolutionError(f"auth events form a cycle through {stuck[0]}", stuck[0])
    return result


def reverse_topological_power_ordering(event_ids: Iterable[str], event_map: Mapping[str, Event]) -> list[str]:
    """Spec: rooms/v2 "Reverse topological power ordering".

    The lexicographically smallest topological ordering of ``event_ids`` by the
    DAG of auth events, earliest first: an event comes after every event of the
    set in its auth chain (also through events outside the set). Ties are broken
    by Kahn's algorithm taking, among the events whose auth events are all
    placed, the smallest by: greater sender power level (from the event's own
    auth events, see :func:`sender_power_level`), then smaller
    ``origin_server_ts``, then smaller ``event_id``.

    O((V + E) + n log n) with a heap; one power-level computation per event.
    """
    return _reverse_topological_power_ordering(_Graph(event_map), event_ids)


def _mainline(graph: _Graph, power_levels_event_id: Optional[str]) -> list[str]:
    result: list[str] = []
    seen: set[str] = set()
    pl = power_levels_event_id
    while pl is not None and pl not in seen:
        seen.add(pl)
        result.append(pl)
        pl = graph.pl_parent(pl)
    return result


def mainline(power_levels_event_id: Optional[str], event_map: Mapping[str, Event]) -> list[str]:
    """Spec: rooms/v2 "Mainline ordering": the mainline ``[P0, P1, ..., Pn]`` of P0,
    each ``P(i+1)`` the power levels event in the auth events of ``Pi``."""
    return _mainline(_Graph(event_map), power_levels_event_id)


def _mainline_position(graph: _Graph, event_id: str, index: Mapping[str, int]) -> float:
    """Index in the mainline of the first ``e_j`` (j >= 1) on the event's own chain
    of power levels auth events that is on the mainline; ``inf`` when none is."""
    cache = graph._mainline_pos_cache
    path: list[str] = []
    cur = graph.pl_parent(event_id)
    position: float = _INF
    while cur is not None:
        if cur in index:
            position = index[cur]
            break
        cached = cache.get(cur)
        if cached is not None:
            position = cached
            break
        if cur in path:  # malformed cyclic chain: nothing further is on the mainline
            break
        path.append(cur)
        cur = graph.pl_parent(cur)
    for p in path:
        cache[p] = position
    return position


def _mainline_ordering(graph: _Graph, event_ids: Iterable[str], power_levels_event_id: Optional[str]) -> list[str]:
    index = {pl: i for i, pl in enumerate(_mainline(graph, power_levels_event_id))}
    graph._mainline_pos_cache = {}  # positions depend on the mainline

    def key(eid: str) -> tuple[float, int, str]:
        return (
            -_mainline_position(graph, eid, index),
            _int_or_zero(graph.event(eid).origin_server_ts),
            eid,
        )

    return sorted(event_ids, key=key)


def mainline_ordering(
    event_ids: Iterable[str],
    power_levels_event_id: Optional[str],
    event_map: Mapping[str, Event],
) -> list[str]:
    """Spec: rooms/v2 "Mainline ordering", based on the power levels event P.

    Each event's *mainline position* is the index ``i`` of the first event of its
    own power levels chain ``[e1, e2, ...]`` (the event itself excluded) that is
    in the mainline of P, or infinity when there is none (``P`` may be ``None``:
    an empty mainline). Sorted so that x < y when x's position is greater, then
    when x's ``origin_server_ts`` is smaller, then when x's ``event_id`` is
    smaller. O(n log n) plus one walk per power levels event (memoised).
    """
    return _mainline_ordering(_Graph(event_map), event_ids, power_levels_event_id)


# ---------------------------------------------------------------------------
# Iterative auth checks
# ---------------------------------------------------------------------------


def _iterative_auth_checks(
    graph: _Graph,
    event_ids: Iterable[str],
    base_state: StateMap,
) -> dict[StateKey, str]:
    state: dict[StateKey, str] = dict(base_state)
    event = graph.event
    for eid in event_ids:
        ev = event(eid)
        state_key = ev.state_key
        if state_key is None:  # only state events can be applied to a state
            continue
        own: Optional[dict[StateKey, Event]] = None
        auth_map: dict[StateKey, Event] = {}
        try:
            needed = auth_types_for_event(ev)
        except AuthError:
            continue
        for key in needed:
            sid = state.get(key)
            if sid is not None:
                auth_map[key] = event(sid)
                continue
            # Not in the state: fall back to the event's own auth event of that
            # key, unless that auth event was rejected.
            if own is None:
                own = {}
                for aid in graph.auth_ids(eid):
                    aev = event(aid)
                    if aev.rejected_reason is None:
                        own[(aev.type, aev.state_key)] = aev  # type: ignore[index]
            aev = own.get(key)
            if aev is not None:
                auth_map[key] = aev
        create = graph.create_event_for(ev)
        if create is not None:
            auth_map[CREATE_KEY] = create
        try:
            check_auth_rules(ev, auth_map)
        except AuthError:
            continue
        state[(ev.type, state_key)] = eid
    return state


def iterative_auth_checks(
    event_ids: Iterable[str],
    base_state: StateMap,
    event_map: Mapping[str, Event],
) -> dict[StateKey, str]:
    """Spec: rooms/v2 "Iterative auth checks" and "Rejected events".

    Starting from ``base_state``, take each state event of ``event_ids`` in order,
    check it against the authorisation rules (:func:`mxtwisted.events.auth.check_auth_rules`)
    and, if allowed, put it into the state; if not, skip it. The auth events used
    are, for each ``(type, state_key)`` of :func:`auth_types_for_event`, the event
    in the state being built, or when the state has none, the event's own auth
    event of that key unless that one is rejected. In room v12 the create event
    named by the ``room_id`` is added under ``("m.room.create", "")``.

    An event that was itself rejected (``rejected_reason``) is checked like any
    other: the spec handles events rejected against the state at the event "as
    usual" (Synapse instead never admits them). Returns the new state.
    """
    return _iterative_auth_checks(_Graph(event_map), event_ids, base_state)


# ---------------------------------------------------------------------------
# The algorithms
# ---------------------------------------------------------------------------


def _resolve_v2(
    graph: _Graph,
    algorithm: StateResAlgorithm,
    state_sets: Sequence[StateMap],
) -> dict[StateKey, str]:
    unconflicted, conflicted = separate(state_sets)
    if not conflicted:
        return unconflicted
    full = _full_conflicted_set(graph, algorithm, state_sets, conflicted)

    # Step 1: power events of the full conflicted set, plus the events of their
    # auth chains that are also in the full conflicted set.
    power = [eid for eid in full if is_power_event(graph.event(eid))]
    selected = set(power)
    if power:
        selected.update(eid for eid in _descendants_first(graph, power) if eid in full)
    sorted_power = _reverse_topological_power_ordering(graph, selected)

    # Step 2: v2 starts from the unconflicted state map, v2.1 from an empty one.
    base: StateMap = {} if algorithm is StateResAlgorithm.V2_1 else unconflicted
    partial = _iterative_auth_checks(graph, sorted_power, base)

    # Step 3: everything else by mainline ordering of the partial power levels.
    leftover = [eid for eid in full if eid not in selected]
    sorted_leftover = _mainline_ordering(graph, leftover, partial.get(POWER_KEY))

    # Step 4.
    resolved = _iterative_auth_checks(graph, sorted_leftover, partial)

    # Step 5: the unconflicted state map has the last word.
    resolved.update(unconflicted)
    return resolved


def resolve_state_v2(
    room_version: RoomVersion,
    state_sets: Sequence[StateMap],
    event_map: Mapping[str, Event],
) -> dict[StateKey, str]:
    """Spec: rooms/v2 "State resolution / Algorithm" steps 1-5; with the rooms/v12
    (v2.1) changes when ``room_version.state_res`` is ``V2_1``: the conflicted
    state subgraph is part of the full conflicted set and step 2 starts from an
    empty state map.

    1. The power events of the full conflicted set, enlarged with the events of
       their auth chains that are in the full conflicted set, sorted by
       :func:`reverse_topological_power_ordering`;
    2. :func:`iterative_auth_checks` over them from the unconflicted state map
       (v2) or from an empty map (v2.1);
    3. the rest of the full conflicted set sorted by :func:`mainline_ordering`
       on the power levels event of that partial state;
    4. :func:`iterative_auth_checks` over them from the partial state;
    5. the unconflicted state map laid over the result.
    """
    algorithm = room_version.state_res
    if algorithm is StateResAlgorithm.V1:
        raise ValueError(f"room version {room_version.identifier} uses state resolution v1")
    return _resolve_v2(_Graph(event_map), algorithm, state_sets)


def _sha1_hex(event_id: str) -> str:
    return hashlib.sha1(event_id.encode("utf-8")).hexdigest()


def _newest_first(events: Iterable[Event]) -> list[Event]:
    """Descending ``depth``, then ascending ``sha1(event_id)``."""
    return sorted(events, key=lambda e: (-_int_or_zero(e.depth), _sha1_hex(e.event_id)))


def _v1_allowed(graph: _Graph, ev: Event, state: StateMap) -> bool:
    try:
        needed = auth_types_for_event(ev)
    except AuthError:
        return False
    auth_map = {key: graph.event(state[key]) for key in needed if key in state}
    try:
        check_auth_rules(ev, auth_map)
    except AuthError:
        return False
    return True


def _v1_resolve_auth_key(graph: _Graph, events: list[Event], state: StateMap) -> str:
    # Ascending depth, then descending sha1(event_id).
    ordered = _newest_first(events)[::-1]
    local = dict(state)
    chosen = ordered[0]
    for ev in ordered[1:]:
        local[(chosen.type, chosen.state_key)] = chosen.event_id  # type: ignore[index]
        if not _v1_allowed(graph, ev, local):
            break
        chosen = ev
    return chosen.event_id


def _v1_resolve_other_key(graph: _Graph, events: list[Event], state: StateMap) -> str:
    ordered = _newest_first(events)
    for ev in ordered:
        if _v1_allowed(graph, ev, state):
            return ev.event_id
    # None passes: keep the last one (lowest depth), as Synapse does; the
    # spec does not say.
    return ordered[-1].event_id


def resolve_state_v1(state_sets: Sequence[StateMap], event_map: Mapping[str, Event]) -> dict[StateKey, str]:
    """Spec: rooms/v1 "State resolution".

    A key is conflicted when the state maps that have it disagree on its event
    (a key present in only some maps, with one event, is not a conflict). ``R``
    starts as the non-conflicting state; then conflicts are resolved in passes:
    ``m.room.power_levels``, ``m.room.join_rules``, ``m.room.member``, each key by
    sorting its events by ascending ``depth`` then descending ``sha1(event_id)``,
    adding the first to ``R`` and each next one while it passes the auth rules in
    ``R``; all other keys take the event of highest ``depth`` and lowest
    ``sha1(event_id)`` that passes the auth rules in ``R``.

    Unspecified by the spec and done as Synapse does, so the result does not
    depend on the order of keys: within a pass, each key is checked against ``R``
    as it was when the pass began; when no event of an "other" key passes, the
    one with the lowest depth (the last tried) is kept.
    """
    graph = _Graph(event_map)
    unconflicted: dict[StateKey, str] = {}
    conflicted: dict[StateKey, set[str]] = {}
    for state_set in state_sets:
        for key, eid in state_set.items():
            ids = conflicted.get(key)
            if ids is not None:
                ids.add(eid)
                continue
            current = unconflicted.get(key)
            if current is None:
                unconflicted[key] = eid
            elif current != eid:
                conflicted[key] = {current, eid}
                del unconflicted[key]
    if not conflicted:
        return unconflicted

    resolved: dict[StateKey, str] = dict(unconflicted)
    auth_passes = (_PL, _JR, _MEMBER)
    for etype in auth_passes:
        snapshot = dict(resolved)
        for key, ids in conflicted.items():
            if key[0] == etype:
                resolved[key] = _v1_resolve_auth_key(graph, [graph.event(i) for i in ids], snapshot)
    snapshot = dict(resolved)
    for key, ids in conflicted.items():
        if key[0] not in auth_passes:
            resolved[key] = _v1_resolve_other_key(graph, [graph.event(i) for i in ids], snapshot)
    return resolved


def resolve_state_groups(
    room_version: RoomVersion,
    state_sets: Sequence[StateMap],
    event_map: Mapping[str, Event],
) -> dict[StateKey, str]:
    """Resolve state maps into one. Spec: the "State resolution" section of the
    room version's page (rooms/v1, rooms/v2, rooms/v12).

    ``state_sets``: the states to resolve, ``{(type, state_key): event_id}`` each.
    ``event_map``: every event those maps refer to and every event of their auth
    chains (rejected ones included, with ``rejected_reason`` set). A needed event
    that is missing raises :class:`StateResolutionError`. Dispatches on
    ``room_version.state_res``. Pure: inputs are not modified, and the result
    does not depend on the order of ``state_sets`` or of ``event_map``.
    """
    if not state_sets:
        return {}
    if len(state_sets) == 1:
        return dict(state_sets[0])
    algorithm = room_version.state_res
    if algorithm is StateResAlgorithm.V1:
        return resolve_state_v1(state_sets, event_map)
    return _resolve_v2(_Graph(event_map), algorithm, state_sets)
