#!/usr/bin/env python
"""Benchmark of mxtwisted.events.state_res on a large synthetic room.

Builds a room with about ``--state`` state events (default 10,000: members,
a history of power levels changes and custom state), forks it into two
branches that change ``--conflicts`` keys between them (default 1,000: leaves,
kicks, bans, new joins, join rules and power levels changes, custom state), and
times ``resolve_state_groups`` on the two branch states. Not a test: run it by
hand and read the numbers.

    .venv/bin/python contrib/bench/state_res_bench.py [--version 10] [--repeat 5] [--profile]
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import pstats
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Optional

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from mxtwisted.events.auth import auth_types_for_event, check_auth_rules  # noqa: E402
from mxtwisted.events.event import Event  # noqa: E402
from mxtwisted.events.room_versions import KNOWN_ROOM_VERSIONS, RoomVersion  # noqa: E402
from mxtwisted.events.state_res import full_conflicted_set, resolve_state_groups, separate  # noqa: E402

StateKey = tuple[str, str]
CREATE: StateKey = ("m.room.create", "")
PL: StateKey = ("m.room.power_levels", "")
JR: StateKey = ("m.room.join_rules", "")
ADMIN = "@admin:bench.example"


def user(i: int) -> str:
    return f"@user{i}:server{i % 50}.example"


class Builder:
    def __init__(self, version: RoomVersion) -> None:
        self.version = version
        self.events: dict[str, Event] = {}
        self.ts = 1_600_000_000_000
        self.n = 0
        self.room_id = "!bench:bench.example"

    def _refs(self, event_ids: list[str]) -> list[Any]:
        """Event references in the room version's format (v1, v2: ``[id, hashes]`` pairs)."""
        if self.version.event_id_in_event:
            return [[e, {}] for e in event_ids]
        return event_ids

    def add(
        self,
        state: dict[StateKey, str],
        etype: str,
        sender: str,
        content: dict[str, Any],
        state_key: str,
        prev: Optional[str],
    ) -> str:
        """Create a state event authorised by ``state``, check it, and apply it to ``state``."""
        self.n += 1
        self.ts += 7
        event_id = f"$e{self.n:06d}"
        d: dict[str, Any] = {
            "type": etype,
            "sender": sender,
            "content": content,
            "state_key": state_key,
            "origin_server_ts": self.ts,
            "depth": self.n,
            "auth_events": [],
            "prev_events": self._refs([prev] if prev else []),
        }
        if self.version.event_id_in_event:
            d["event_id"] = event_id
        if etype == "m.room.create" and self.version.room_id_from_create_event:
            self.room_id = "!" + event_id[1:]
        else:
            d["room_id"] = self.room_id
        keys = sorted(auth_types_for_event(Event(d, self.version, event_id=event_id)))
        d["auth_events"] = self._refs([state[k] for k in keys if k in state])
        event = Event(d, self.version, event_id=event_id)
        auth_map = {k: self.events[state[k]] for k in keys if k in state}
        if self.version.room_id_from_create_event and etype != "m.room.create":
            auth_map[CREATE] = self.events[state[CREATE]]
        check_auth_rules(event, auth_map)  # the synthetic room must be a valid one
        self.events[event_id] = event
        state[(etype, state_key)] = event_id
        return event_id


def build(version: RoomVersion, n_state: int, n_conflicts: int) -> tuple[Builder, list[dict[StateKey, str]]]:
    b = Builder(version)
    v12 = version.privileged_creators
    state: dict[StateKey, str] = {}
    last = b.add(state, "m.room.create", ADMIN, {} if v12 else {"creator": ADMIN}, "", None)
    last = b.add(state, "m.room.member", ADMIN, {"membership": "join"}, ADMIN, last)
    mods = [user(i) for i in range(10)]
    users_pl: dict[str, int] = {} if v12 else {ADMIN: 100}
    last = b.add(state, "m.room.power_levels", ADMIN, {"users": dict(users_pl)}, "", last)
    last = b.add(state, "m.room.join_rules", ADMIN, {"join_rule": "public"}, "", last)

    n_custom = n_state // 10
    n_members = n_state - n_custom - len(state)
    # Members join; every 500 joins the admin changes the power levels, so the
    # power levels mainline is long and members cite different points of it.
    for i in range(n_members):
        u = user(i)
        last = b.add(state, "m.room.member", u, {"membership": "join"}, u, last)
        if i % 500 == 499:
            users_pl = dict(users_pl)
            for m in mods:
                users_pl[m] = 50
            users_pl[user(i)] = 10
            last = b.add(state, "m.room.power_levels", ADMIN, {"users": users_pl}, "", last)
    for i in range(n_custom):
        last = b.add(state, "org.example.setting", ADMIN, {"value": i}, f"key{i}", last)
    trunk = dict(state)
    fork = last

    # Branch A: a power levels change, then leaves, kicks by the admin, custom state edits.
    # Branch B: a join rules change by a moderator, then bans by that moderator,
    # new joins, custom state edits. Every event is checked against its branch.
    a, b_state = dict(trunk), dict(trunk)
    half = n_conflicts // 2
    tip = fork
    tip = b.add(a, "m.room.power_levels", ADMIN, {"users": {**users_pl, mods[1]: 60}}, "", tip)
    k = 0
    for i in range(half - 1):
        kind = i % 3
        if kind == 0:
            u = user(100 + i)
            tip = b.add(a, "m.room.member", u, {"membership": "leave"}, u, tip)
        elif kind == 1:
            u = user(100 + i)
            tip = b.add(a, "m.room.member", ADMIN, {"membership": "leave"}, u, tip)
        else:
            tip = b.add(a, "org.example.setting", ADMIN, {"value": -i}, f"key{k}", tip)
            k += 1
    tip = fork
    tip = b.add(b_state, "m.room.join_rules", mods[0], {"join_rule": "public", "note": "b"}, "", tip)
    for i in range(half - 1):
        kind = i % 3
        if kind == 0:
            u = user(100 + half + i)
            tip = b.add(b_state, "m.room.member", mods[0], {"membership": "ban"}, u, tip)
        elif kind == 1:
            u = user(n_members + i)
            tip = b.add(b_state, "m.room.member", u, {"membership": "join"}, u, tip)
        else:
            tip = b.add(b_state, "org.example.setting", ADMIN, {"value": i * 1000}, f"key{k}", tip)
            k += 1
    return b, [a, b_state]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--version", default="10", help="room version (default 10)")
    ap.add_argument("--state", type=int, default=10_000, help="state events in the room")
    ap.add_argument("--conflicts", type=int, default=1_000, help="conflicted keys between the branches")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--profile", action="store_true", help="print a cProfile of one run")
    args = ap.parse_args()

    version = KNOWN_ROOM_VERSIONS[args.version]
    t0 = time.perf_counter()
    builder, sets = build(version, args.state, args.conflicts)
    build_s = time.perf_counter() - t0
    unconflicted, conflicted = separate(sets)
    print(f"room version {version.identifier} ({version.state_res.value}); built in {build_s:.2f} s")
    print(
        f"state events per map: {len(sets[0])} / {len(sets[1])}; events in map: {len(builder.events)}; "
        f"conflicted keys: {len(conflicted)}; unconflicted: {len(unconflicted)}"
    )
    if version.state_res.value != "v1":
        print(f"full conflicted set: {len(full_conflicted_set(version, sets, builder.events))} events")

    if args.profile:
        prof = cProfile.Profile()
        prof.enable()
        resolve_state_groups(version, sets, builder.events)
        prof.disable()
        pstats.Stats(prof).sort_stats("cumulative").print_stats(25)

    times = []
    result: dict = {}
    for _ in range(args.repeat):
        gc.collect()
        t = time.perf_counter()
        result = resolve_state_groups(version, sets, builder.events)
        times.append(time.perf_counter() - t)
    changed = sum(1 for key in conflicted if key in result)
    print(f"resolved state: {len(result)} keys ({changed} of the conflicted keys kept)")
    print(
        f"resolve_state_groups: best {min(times):.3f} s, median {statistics.median(times):.3f} s over {len(times)} runs"
    )


if __name__ == "__main__":
    main()
