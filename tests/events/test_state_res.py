"""Tests for mxtwisted.events.state_res (state resolution v1, v2, v2.1)."""

from __future__ import annotations

import math
import random
from typing import Any, Optional

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from mxtwisted.events import state_res
from mxtwisted.events.auth import AuthError, check_auth_rules
from mxtwisted.events.room_versions import KNOWN_ROOM_VERSIONS
from mxtwisted.events.state_res import (
    StateResolutionError,
    auth_chain,
    auth_difference,
    conflicted_state_subgraph,
    full_conflicted_set,
    is_power_event,
    iterative_auth_checks,
    mainline,
    mainline_ordering,
    resolve_state_groups,
    resolve_state_v1,
    resolve_state_v2,
    reverse_topological_power_ordering,
    sender_power_level,
    separate,
)
from tests.events.state_res_fixtures import (
    ALICE,
    BAN,
    BOB,
    CAROL,
    CREATE,
    EVE,
    INVITE,
    JOIN,
    JR,
    LEAVE,
    PL,
    TOPIC,
    ZED,
    Room,
    changed_state,
    member,
    play,
)

V1 = KNOWN_ROOM_VERSIONS["1"]
V10 = KNOWN_ROOM_VERSIONS["10"]
V11 = KNOWN_ROOM_VERSIONS["11"]
V12 = KNOWN_ROOM_VERSIONS["12"]


def _ids(*names: str) -> list[str]:
    return [Room.eid(n) for n in names]


# ---------------------------------------------------------------------------
# The well-known v2 scenarios, played as DAGs from a shared base room
# ---------------------------------------------------------------------------


class WellKnownScenarioTests(SynchronousTestCase):
    """Forks of a room where alice (PL 100) created it, with bob, carol and zed
    joined; each scenario's branches meet at ``merge`` and the test compares the
    state there with the expected events (keys unchanged since the fork are
    ignored unless expected)."""

    versions = ("2", "10", "11")

    def check(self, nodes: list, chains: list, expected: list[str]) -> None:
        for version in self.versions:
            room, states = play(version, nodes, chains)
            want, got = changed_state(room, states, expected)
            self.assertEqual(want, got, f"room version {version}")

    def test_ban_vs_power_levels(self) -> None:
        # alice bans bob on one branch while bob (PL 50) sends power levels on
        # the other: the ban wins because alice's events sort first.
        self.check(
            [
                ("pl_a", "m.room.power_levels", ALICE, "", {"users": {ALICE: 100, BOB: 50}}),
                ("alice_rejoin", "m.room.member", ALICE, ALICE, JOIN),
                ("ban_bob", "m.room.member", ALICE, BOB, BAN),
                ("pl_b", "m.room.power_levels", BOB, "", {"users": {ALICE: 100, BOB: 50}}),
            ],
            [["merge", "ban_bob", "alice_rejoin", "pl_a", "fork"], ["merge", "pl_b", "pl_a"]],
            ["pl_a", "alice_rejoin", "ban_bob"],
        )

    def test_join_rule_evasion(self) -> None:
        # eve joins on a branch that has not seen the room go private.
        self.check(
            [
                ("jr_private", "m.room.join_rules", ALICE, "", {"join_rule": "private"}),
                ("eve_join", "m.room.member", EVE, EVE, JOIN),
            ],
            [["merge", "jr_private", "fork"], ["merge", "eve_join", "fork"]],
            ["jr_private"],
        )

    def test_offtopic_power_levels(self) -> None:
        # A chain of power levels changes against its own ancestor: the chain wins.
        self.check(
            [
                ("pl_a", "m.room.power_levels", ALICE, "", {"users": {ALICE: 100, BOB: 50}}),
                ("pl_b", "m.room.power_levels", BOB, "", {"users": {ALICE: 100, BOB: 50, CAROL: 50}}),
                ("pl_c", "m.room.power_levels", CAROL, "", {"users": {ALICE: 100, BOB: 50, CAROL: 0}}),
            ],
            [["merge", "pl_c", "pl_b", "pl_a", "fork"], ["merge", "pl_a"]],
            ["pl_c"],
        )

    def test_topic_basic(self) -> None:
        # bob's topic is based on power levels alice has since superseded.
        self.check(
            [
                ("topic1", "m.room.topic", ALICE, "", {"topic": "1"}),
                ("pl_a1", "m.room.power_levels", ALICE, "", {"users": {ALICE: 100, BOB: 50}}),
                ("topic2", "m.room.topic", ALICE, "", {"topic": "2"}),
                ("pl_a2", "m.room.power_levels", ALICE, "", {"users": {ALICE: 100, BOB: 0}}),
                ("pl_b", "m.room.power_levels", BOB, "", {"users": {ALICE: 100, BOB: 50}}),
                ("topic3", "m.room.topic", BOB, "", {"topic": "3"}),
            ],
            [["merge", "pl_a2", "topic2", "pl_a1", "topic1", "fork"], ["merge", "topic3", "pl_b", "pl_a1"]],
            ["pl_a2", "topic2"],
        )

    def test_topic_reset(self) -> None:
        # bob is banned after his topic: the topic goes back to alice's.
        self.check(
            [
                ("topic1", "m.room.topic", ALICE, "", {"topic": "1"}),
                ("pl_a", "m.room.power_levels", ALICE, "", {"users": {ALICE: 100, BOB: 50}}),
                ("topic2", "m.room.topic", BOB, "", {"topic": "2"}),
                ("ban_bob", "m.room.member", ALICE, BOB, BAN),
            ],
            [["merge", "ban_bob", "topic2", "pl_a", "topic1", "fork"], ["merge", "topic1"]],
            ["topic1", "ban_bob", "pl_a"],
        )

    def test_topic(self) -> None:
        # As topic_basic, plus a later topic by alice after a message that saw both.
        self.check(
            [
                ("topic1", "m.room.topic", ALICE, "", {"topic": "1"}),
                ("pl_a1", "m.room.power_levels", ALICE, "", {"users": {ALICE: 100, BOB: 50}}),
                ("topic2", "m.room.topic", ALICE, "", {"topic": "2"}),
                ("pl_a2", "m.room.power_levels", ALICE, "", {"users": {ALICE: 100, BOB: 0}}),
                ("pl_b", "m.room.power_levels", BOB, "", {"users": {ALICE: 100, BOB: 50}}),
                ("topic3", "m.room.topic", BOB, "", {"topic": "3"}),
                ("msg", "m.room.message", ZED, None, {}),
                ("topic4", "m.room.topic", ALICE, "", {"topic": "4"}),
            ],
            [
                ["merge", "topic4", "msg", "pl_a2", "topic2", "pl_a1", "topic1", "fork"],
                ["merge", "msg", "topic3", "pl_b", "pl_a1"],
            ],
            ["topic4", "pl_a2"],
        )

    def test_mainline_beats_timestamp(self) -> None:
        # topic4 is newer than topic3, but topic3 is based on a later point of
        # the resolved power levels' mainline.
        self.check(
            [
                ("topic1", "m.room.topic", ALICE, "", {"topic": "1"}),
                ("pl_a1", "m.room.power_levels", ALICE, "", {"users": {ALICE: 100, BOB: 50}}),
                ("topic2", "m.room.topic", ALICE, "", {"topic": "2"}),
                (
                    "pl_a2",
                    "m.room.power_levels",
                    ALICE,
                    "",
                    {"users": {ALICE: 100, BOB: 50}, "events": {"m.room.power_levels": 100}},
                ),
                ("pl_b", "m.room.power_levels", BOB, "", {"users": {ALICE: 100, BOB: 50}}),
                ("topic3", "m.room.topic", BOB, "", {"topic": "3"}),
                ("topic4", "m.room.topic", ALICE, "", {"topic": "4"}),
            ],
            [
                ["merge", "topic3", "pl_a2", "topic2", "pl_a1", "topic1", "fork"],
                ["merge", "topic4", "pl_b", "pl_a1"],
            ],
            ["topic3", "pl_a2"],
        )

    def test_same_results_with_state_events_in_their_own_chains(self) -> None:
        # Synapse's reading of the auth difference (each state map's chain also
        # holds the map's own events) gives the same answers on every scenario.
        original = state_res._auth_difference
        self.patch(state_res, "_auth_difference", lambda graph, sets, _inc: original(graph, sets, True))
        for name in dir(self):
            if name.startswith("test_") and name != "test_same_results_with_state_events_in_their_own_chains":
                getattr(self, name)()

    def test_malicious_power_levels_change(self) -> None:
        # bob, demoted by alice on one branch, keeps acting on another branch
        # with the power he had before: he raises carol, bans zed, and backdates
        # his events to sort first by timestamp. None of it survives.
        nodes = [
            ("pl_a", "m.room.power_levels", ALICE, "", {"users": {ALICE: 100, BOB: 50}}),
            ("demote_bob", "m.room.power_levels", ALICE, "", {"users": {ALICE: 100, BOB: 0}}),
            ("pl_bob", "m.room.power_levels", BOB, "", {"users": {ALICE: 100, BOB: 50, CAROL: 50}}),
            ("ban_zed", "m.room.member", BOB, ZED, BAN),
            ("topic_bob", "m.room.topic", BOB, "", {"topic": "mine"}),
        ]
        chains = [["merge", "demote_bob", "pl_a", "fork"], ["merge", "topic_bob", "ban_zed", "pl_bob", "pl_a"]]
        for version in self.versions:
            room, states = play(version, nodes, chains, timestamps={"pl_bob": 0, "ban_zed": 0, "topic_bob": 0})
            want, got = changed_state(room, states, ["demote_bob"])
            self.assertEqual(want, got, f"room version {version}")
            self.assertEqual(states["merge"][member(ZED)], Room.eid("zed_join"))


# ---------------------------------------------------------------------------
# Direct resolutions
# ---------------------------------------------------------------------------


def _v2_base(version: str) -> Room:
    """create, alice join, power levels (alice 100 / creator), public join rules, bob join."""
    room = Room(version, room_id="!create" if version == "12" else "!room:example.org")
    v12 = room.version.privileged_creators
    room.add("create", "m.room.create", ALICE, {} if v12 else {"creator": ALICE}, "")
    room.add("alice_join", "m.room.member", ALICE, JOIN, ALICE, auth=["create"], prev=["create"])
    users: dict[str, int] = {} if v12 else {ALICE: 100}
    room.add(
        "pl", "m.room.power_levels", ALICE, {"users": users}, "", auth=["create", "alice_join"], prev=["alice_join"]
    )
    room.add(
        "jr", "m.room.join_rules", ALICE, {"join_rule": "public"}, "", auth=["create", "alice_join", "pl"], prev=["pl"]
    )
    room.add("bob_join", "m.room.member", BOB, JOIN, BOB, auth=["create", "pl", "jr"], prev=["jr"])
    return room


class ResolveTests(SynchronousTestCase):
    def test_no_state_sets(self) -> None:
        self.assertEqual(resolve_state_groups(V10, [], {}), {})

    def test_single_state_set_is_returned(self) -> None:
        room = _v2_base("10")
        state = room.state("create", "alice_join", "pl", "jr", "bob_join")
        result = resolve_state_groups(V10, [state], {})
        self.assertEqual(result, state)
        self.assertIsNot(result, state)

    def test_unconflicted_passthrough(self) -> None:
        # Identical maps pass through untouched, in every algorithm, without
        # even looking at events (the event map is empty).
        room = _v2_base("10")
        state = room.state("create", "alice_join", "pl", "jr", "bob_join")
        for version in ("1", "10", "12"):
            rv = KNOWN_ROOM_VERSIONS[version]
            self.assertEqual(resolve_state_groups(rv, [state, dict(state), dict(state)], {}), state)

    def test_unconflicted_state_wins_over_replayed_events(self) -> None:
        # carol joins on one branch only; the key is conflicted (missing from
        # one map) and resolves to her join, everything else passes through.
        room = _v2_base("10")
        room.add("carol_join", "m.room.member", CAROL, JOIN, CAROL, auth=["create", "pl", "jr"], prev=["bob_join"])
        base = room.state("create", "alice_join", "pl", "jr", "bob_join")
        with_carol = {**base, member(CAROL): "$carol_join"}
        self.assertEqual(resolve_state_groups(V10, [base, with_carol], room.events), with_carol)

    def test_conflicted_event_failing_auth_is_dropped(self) -> None:
        # An unauthorised topic (bob has PL 0, topics need 50) in one branch.
        room = _v2_base("10")
        room.add("topic_bob", "m.room.topic", BOB, {"topic": "x"}, "", auth=["create", "pl", "bob_join"])
        base = room.state("create", "alice_join", "pl", "jr", "bob_join")
        result = resolve_state_groups(V10, [base, {**base, TOPIC: "$topic_bob"}], room.events)
        self.assertNotIn(TOPIC, result)

    def test_missing_event_is_named(self) -> None:
        room = _v2_base("10")
        events = dict(room.events)
        del events["$pl"]  # in the auth chain of everything
        room.add("topic", "m.room.topic", ALICE, {"topic": "t"}, "", auth=["create", "pl", "alice_join"])
        events["$topic"] = room.events["$topic"]
        base = room.state("create", "alice_join", "jr", "bob_join")
        with self.assertRaises(StateResolutionError) as cm:
            resolve_state_groups(V10, [base, {**base, TOPIC: "$topic"}], events)
        self.assertIsInstance(cm.exception, KeyError)
        self.assertEqual(cm.exception.event_id, "$pl")
        self.assertIn("$pl", str(cm.exception))

    def test_missing_conflicted_event_is_named(self) -> None:
        room = _v2_base("10")
        base = room.state("create", "alice_join", "pl", "jr", "bob_join")
        with self.assertRaises(StateResolutionError) as cm:
            resolve_state_groups(V10, [base, {**base, TOPIC: "$nowhere"}], room.events)
        self.assertEqual(cm.exception.event_id, "$nowhere")

    def test_resolve_state_v2_refuses_v1_rooms(self) -> None:
        with self.assertRaises(ValueError):
            resolve_state_v2(V1, [{}, {}], {})

    def test_inputs_are_not_modified(self) -> None:
        room = _v2_base("10")
        room.add("topic", "m.room.topic", ALICE, {"topic": "t"}, "", auth=["create", "pl", "alice_join"])
        a = room.state("create", "alice_join", "pl", "jr", "bob_join")
        b = {**a, TOPIC: "$topic"}
        a_copy, b_copy, events_copy = dict(a), dict(b), dict(room.events)
        resolve_state_groups(V10, [a, b], room.events)
        self.assertEqual((a, b, room.events), (a_copy, b_copy, events_copy))


class V21Tests(SynchronousTestCase):
    """Room v12 (state resolution v2.1, MSC4297) against the same DAGs in room v11."""

    def _join_rules_reset(self, version: str) -> tuple[Room, list[dict]]:
        # alice makes bob an admin, opens the room, bob joins, alice switches the
        # join rules to invite and leaves. A server hands us a fork citing the old
        # public join rules. The only sender of the join rules has left, so v2,
        # which re-checks them against the unconflicted state (alice: leave),
        # rejects both and the join rules vanish; v2.1 checks them from an empty
        # state, using their own auth events, and keeps the newer one.
        room = Room(version, room_id="!create" if version == "12" else "!room:example.org")
        v12 = room.version.privileged_creators
        room.add("create", "m.room.create", ALICE, {} if v12 else {"creator": ALICE}, "")
        room.add("alice_join", "m.room.member", ALICE, JOIN, ALICE, auth=["create"], prev=["create"])
        users = {BOB: 100} if v12 else {ALICE: 100, BOB: 100}
        room.add("pl", "m.room.power_levels", ALICE, {"users": users}, "", auth=["create", "alice_join"])
        room.add(
            "jr_public", "m.room.join_rules", ALICE, {"join_rule": "public"}, "", auth=["create", "alice_join", "pl"]
        )
        room.add("bob_join", "m.room.member", BOB, JOIN, BOB, auth=["create", "pl", "jr_public"])
        room.add(
            "jr_invite", "m.room.join_rules", ALICE, {"join_rule": "invite"}, "", auth=["create", "alice_join", "pl"]
        )
        room.add("alice_leave", "m.room.member", ALICE, LEAVE, ALICE, auth=["create", "alice_join", "pl"])
        good = room.state("create", "alice_leave", "bob_join", "pl", "jr_invite")
        forged = room.state("create", "alice_leave", "bob_join", "pl", "jr_public")
        return room, [good, forged]

    def test_join_rules_reset_v2_vs_v21(self) -> None:
        room, sets = self._join_rules_reset("11")
        self.assertNotIn(JR, resolve_state_groups(V11, sets, room.events))
        room, sets = self._join_rules_reset("12")
        result = resolve_state_groups(V12, sets, room.events)
        self.assertEqual(result[JR], "$jr_invite")
        self.assertEqual(result, sets[0])

    def _dodgy_rename(self, version: str) -> tuple[Room, list[dict]]:
        # Power levels pl1 -> pl2 (alice raises bob) -> pl3 (bob raises carol).
        # eve joins under pl3, then renames herself citing the old pl1. One
        # state map (after the rename) claims pl1 is current, the other (after
        # zed joins) has pl3.
        room = Room(version, room_id="!create" if version == "12" else "!room:example.org")
        v12 = room.version.privileged_creators

        def pl(users: dict[str, int]) -> dict[str, Any]:
            return {"users": users if v12 else {ALICE: 100, **users}}

        room.add("create", "m.room.create", ALICE, {} if v12 else {"creator": ALICE}, "")
        room.add("alice_join", "m.room.member", ALICE, JOIN, ALICE, auth=["create"], prev=["create"])
        room.add("pl1", "m.room.power_levels", ALICE, pl({}), "", auth=["create", "alice_join"])
        room.add("jr", "m.room.join_rules", ALICE, {"join_rule": "public"}, "", auth=["create", "alice_join", "pl1"])
        room.add("bob_join", "m.room.member", BOB, JOIN, BOB, auth=["create", "pl1", "jr"])
        room.add("carol_join", "m.room.member", CAROL, JOIN, CAROL, auth=["create", "pl1", "jr"])
        room.add("pl2", "m.room.power_levels", ALICE, pl({BOB: 50}), "", auth=["create", "alice_join", "pl1"])
        room.add("pl3", "m.room.power_levels", BOB, pl({BOB: 50, CAROL: 50}), "", auth=["create", "bob_join", "pl2"])
        room.add("eve_join", "m.room.member", EVE, JOIN, EVE, auth=["create", "pl3", "jr"])
        room.add(
            "eve_rename",
            "m.room.member",
            EVE,
            {"membership": "join", "displayname": "E"},
            EVE,
            auth=["create", "pl1", "jr", "eve_join"],
        )
        room.add("zed_join", "m.room.member", ZED, JOIN, ZED, auth=["create", "pl3", "jr"])
        dodgy = room.state("create", "alice_join", "bob_join", "carol_join", "eve_rename", "pl1", "jr")
        sensible = room.state("create", "alice_join", "bob_join", "carol_join", "zed_join", "pl3", "jr")
        return room, [dodgy, sensible]

    def test_conflicted_subgraph_prevents_power_levels_reset(self) -> None:
        # v2: pl2 is in neither the conflicted set nor the auth difference, so
        # pl3 is checked against pl1 (bob has no power there) and the power
        # levels reset to pl1. v2.1: pl2 lies on the path pl3 -> pl2 -> pl1
        # between two conflicted events, is replayed, and pl3 stands.
        room, sets = self._dodgy_rename("11")
        v2 = resolve_state_groups(V11, sets, room.events)
        self.assertEqual(v2[PL], "$pl1")
        room, sets = self._dodgy_rename("12")
        v21 = resolve_state_groups(V12, sets, room.events)
        self.assertEqual(v21[PL], "$pl3")
        self.assertEqual(v21[member(EVE)], "$eve_join")
        self.assertEqual(v21[member(ZED)], "$zed_join")

    def test_subgraph_in_full_conflicted_set(self) -> None:
        room, sets = self._dodgy_rename("12")
        full = full_conflicted_set(V12, sets, room.events)
        self.assertIn("$pl2", full)
        self.assertNotIn("$create", full)
        room, sets = self._dodgy_rename("11")
        self.assertNotIn("$pl2", full_conflicted_set(V11, sets, room.events))

    def test_v12_creator_power_is_infinite(self) -> None:
        room = _v2_base("12")
        room.add("topic", "m.room.topic", ALICE, {"topic": "t"}, "", auth=["pl", "alice_join"])
        room.add("topic_bob", "m.room.topic", BOB, {"topic": "b"}, "", auth=["pl", "bob_join"])
        self.assertEqual(sender_power_level("$topic", room.events), math.inf)
        self.assertEqual(sender_power_level("$topic_bob", room.events), 0)
        self.assertEqual(room.events["$topic"].auth_event_ids, ["$pl", "$alice_join"])

    def test_v12_missing_create_event_is_named(self) -> None:
        room, sets = self._join_rules_reset("12")
        events = dict(room.events)
        del events["$create"]
        with self.assertRaises(StateResolutionError) as cm:
            resolve_state_groups(V12, sets, events)
        self.assertEqual(cm.exception.event_id, "$create")


class V1Tests(SynchronousTestCase):
    """Room v1: passes over power levels, join rules, members, then the rest."""

    def _room(self) -> Room:
        room = Room("1")
        room.add("create", "m.room.create", ALICE, {"creator": ALICE}, "", depth=1)
        room.add("alice_join", "m.room.member", ALICE, JOIN, ALICE, auth=["create"], prev=["create"])
        room.add(
            "pl",
            "m.room.power_levels",
            ALICE,
            {"users": {ALICE: 100, BOB: 50}},
            "",
            auth=["create", "alice_join"],
            prev=["alice_join"],
        )
        room.add(
            "jr",
            "m.room.join_rules",
            ALICE,
            {"join_rule": "public"},
            "",
            auth=["create", "alice_join", "pl"],
            prev=["pl"],
        )
        room.add("bob_join", "m.room.member", BOB, JOIN, BOB, auth=["create", "pl", "jr"], prev=["jr"])
        return room

    def test_power_levels_chain_and_topic_depth(self) -> None:
        room = self._room()
        base = ["create", "alice_join", "jr", "bob_join"]
        # Branch A: alice demotes bob (depth 6), then sets a topic (depth 7).
        room.add(
            "demote",
            "m.room.power_levels",
            ALICE,
            {"users": {ALICE: 100}},
            "",
            auth=["create", "alice_join", "pl"],
            prev=["bob_join"],
        )
        room.add(
            "topic_a",
            "m.room.topic",
            ALICE,
            {"topic": "a"},
            "",
            auth=["create", "alice_join", "demote"],
            prev=["demote"],
        )
        # Branch B: bob sets two topics (depths 6, 7, 8) under the old levels.
        room.add(
            "topic_b1", "m.room.topic", BOB, {"topic": "b1"}, "", auth=["create", "bob_join", "pl"], prev=["bob_join"]
        )
        room.add(
            "topic_b2", "m.room.topic", BOB, {"topic": "b2"}, "", auth=["create", "bob_join", "pl"], prev=["topic_b1"]
        )
        room.add(
            "topic_b3", "m.room.topic", BOB, {"topic": "b3"}, "", auth=["create", "bob_join", "pl"], prev=["topic_b2"]
        )
        a = room.state(*base, "demote", "topic_a")
        b = room.state(*base, "pl", "topic_b3")
        result = resolve_state_groups(V1, [a, b], room.events)
        # Power levels: pl (depth 3) first, then demote (depth 6) is allowed.
        self.assertEqual(result[PL], "$demote")
        # Topics: the deepest, topic_b3 (depth 8), fails against the resolved
        # power levels (bob has 0, topics need 50), so topic_a is taken.
        self.assertEqual(result[TOPIC], "$topic_a")
        self.assertEqual(result, resolve_state_v1([b, a], room.events))

    def test_power_levels_stop_at_first_failure(self) -> None:
        # v1 takes power levels events in ascending depth and stops at the first
        # one the auth rules refuse, even if a later one would pass.
        room = self._room()
        base = ["create", "alice_join", "jr", "bob_join"]
        room.add(
            "pl_bob",
            "m.room.power_levels",
            BOB,
            {"users": {ALICE: 100, BOB: 50}, "ban": 100},
            "",
            auth=["create", "bob_join", "pl"],
            prev=["bob_join"],
        )
        room.add(
            "pl_alice",
            "m.room.power_levels",
            ALICE,
            {"users": {ALICE: 100, BOB: 50, CAROL: 10}},
            "",
            auth=["create", "alice_join", "pl"],
            prev=["bob_join"],
            depth=9,
        )
        a = room.state(*base, "pl_alice")
        b = room.state(*base, "pl_bob")
        # pl_bob (depth 6) first, then pl_alice (depth 9) passes against it.
        self.assertEqual(resolve_state_groups(V1, [a, b], room.events)[PL], "$pl_alice")
        # Make pl_alice older than pl_bob: pl_alice is added first, and pl_bob
        # (raising the ban level above bob's own power) is refused.
        room.add(
            "pl_alice_old",
            "m.room.power_levels",
            ALICE,
            {"users": {ALICE: 100, BOB: 50, CAROL: 10}},
            "",
            auth=["create", "alice_join", "pl"],
            prev=["bob_join"],
            depth=5,
        )
        a = room.state(*base, "pl_alice_old")
        self.assertEqual(resolve_state_groups(V1, [a, b], room.events)[PL], "$pl_alice_old")

    def test_member_conflict_and_sha1_tiebreak(self) -> None:
        room = self._room()
        base = ["create", "alice_join", "pl", "jr"]
        # Two topics of equal depth by alice: the lowest sha1(event_id) wins.
        room.add(
            "topic_x", "m.room.topic", ALICE, {"topic": "x"}, "", auth=["create", "alice_join", "pl"], prev=["bob_join"]
        )
        room.add(
            "topic_y", "m.room.topic", ALICE, {"topic": "y"}, "", auth=["create", "alice_join", "pl"], prev=["bob_join"]
        )
        # bob leaves in one branch.
        room.add("bob_leave", "m.room.member", BOB, LEAVE, BOB, auth=["create", "pl", "bob_join"], prev=["topic_x"])
        a = room.state(*base, "bob_join", "topic_x")
        b = room.state(*base, "bob_leave", "topic_y")
        result = resolve_state_groups(V1, [a, b], room.events)
        import hashlib

        lowest = min(["$topic_x", "$topic_y"], key=lambda e: hashlib.sha1(e.encode()).hexdigest())
        self.assertEqual(result[TOPIC], lowest)
        self.assertEqual(result[member(BOB)], "$bob_leave")
        # A key present in only one map is not a conflict in v1.
        c = {**a, ("m.room.name", ""): "$topic_x"}
        self.assertEqual(resolve_state_groups(V1, [c, a], room.events)[("m.room.name", "")], "$topic_x")


# ---------------------------------------------------------------------------
# Building blocks
# ---------------------------------------------------------------------------


class DefinitionsTests(SynchronousTestCase):
    def test_separate(self) -> None:
        a = {("t", "1"): "$a", ("t", "2"): "$b", ("t", "3"): "$c"}
        b = {("t", "1"): "$a", ("t", "2"): "$x", ("t", "4"): "$d"}
        unconflicted, conflicted = separate([a, b])
        self.assertEqual(unconflicted, {("t", "1"): "$a"})
        self.assertEqual(conflicted, {("t", "2"): {"$b", "$x"}, ("t", "3"): {"$c"}, ("t", "4"): {"$d"}})
        self.assertEqual(separate([]), ({}, {}))

    def test_is_power_event(self) -> None:
        room = _v2_base("10")
        cases = [
            ("m.room.power_levels", ALICE, "", {}, True),
            ("m.room.join_rules", ALICE, "", {"join_rule": "public"}, True),
            ("m.room.member", ALICE, BOB, LEAVE, True),  # kick
            ("m.room.member", ALICE, BOB, BAN, True),
            ("m.room.member", BOB, BOB, LEAVE, False),  # leaving yourself
            ("m.room.member", BOB, BOB, BAN, False),
            ("m.room.member", ALICE, BOB, INVITE, False),
            ("m.room.member", BOB, BOB, JOIN, False),
            ("m.room.create", ALICE, "", {}, False),
            ("m.room.topic", ALICE, "", {}, False),
        ]
        for i, (etype, sender, state_key, content, expected) in enumerate(cases):
            ev = room.add(f"p{i}", etype, sender, content, state_key)
            self.assertEqual(is_power_event(ev), expected, (etype, sender, state_key, content))
        message = room.add("msg", "m.room.power_levels", ALICE, {})  # no state_key: not state
        self.assertFalse(is_power_event(message))

    def test_auth_chain(self) -> None:
        room = _v2_base("10")
        self.assertEqual(auth_chain(["$bob_join"], room.events), {"$create", "$pl", "$jr", "$alice_join"})
        self.assertEqual(auth_chain(["$pl", "$alice_join"], room.events), {"$create", "$alice_join"})
        self.assertEqual(auth_chain([], room.events), set())

    def test_auth_difference(self) -> None:
        # c -> b -> a, with states {a, b} and {c}.
        room = Room("10")
        room.add("a", "m.room.create", ALICE, {"creator": ALICE}, "")
        room.add("b", "m.room.member", ALICE, JOIN, ALICE, auth=["a"])
        room.add("c", "m.room.member", ALICE, JOIN, "x", auth=["b"])
        sets = [{("k", "a"): "$a", ("k", "b"): "$b"}, {("k", "c"): "$c"}]
        # Spec: C1 = chain(a) ∪ chain(b) = {a}; C2 = chain(c) = {a, b}.
        self.assertEqual(auth_difference(sets, room.events), {"$b"})
        # Counting the state events themselves (Synapse): {a, b} vs {a, b, c}.
        self.assertEqual(auth_difference(sets, room.events, include_state_events=True), {"$c"})
        self.assertEqual(auth_difference([sets[0]], room.events), set())
        self.assertEqual(auth_difference([], room.events), set())

    def test_auth_difference_three_branches(self) -> None:
        room = _v2_base("10")
        room.add("t1", "m.room.topic", ALICE, {}, "", auth=["create", "pl", "alice_join"])
        room.add("t2", "m.room.topic", ALICE, {}, "", auth=["create", "pl", "alice_join", "t1"])
        room.add("n1", "m.room.name", BOB, {}, "", auth=["create", "pl", "bob_join"])
        sets = [{TOPIC: "$t2"}, {TOPIC: "$t1", ("m.room.name", ""): "$n1"}, {("m.room.name", ""): "$n1"}]
        # chains: {t1, create, pl, alice_join}, {create, pl, alice_join, jr, bob_join}, same as 2nd
        self.assertEqual(auth_difference(sets, room.events), {"$t1", "$jr", "$bob_join"})

    def test_conflicted_state_subgraph(self) -> None:
        # a <- b <- c <- d, and e -> b; conflicted {d, b}: subgraph {d, c, b}.
        room = Room("10")
        room.add("a", "m.room.create", ALICE, {}, "")
        room.add("b", "x", ALICE, {}, "", auth=["a"])
        room.add("c", "x", ALICE, {}, "1", auth=["b"])
        room.add("d", "x", ALICE, {}, "2", auth=["c", "a"])
        room.add("e", "x", ALICE, {}, "3", auth=["b"])
        self.assertEqual(conflicted_state_subgraph(["$d", "$b"], room.events), {"$d", "$c", "$b"})
        self.assertEqual(conflicted_state_subgraph(["$d", "$e"], room.events), {"$d", "$e"})
        self.assertEqual(conflicted_state_subgraph(["$d", "$e", "$a"], room.events), {"$a", "$b", "$c", "$d", "$e"})
        self.assertEqual(conflicted_state_subgraph([], room.events), set())

    def test_sender_power_level_from_auth_events(self) -> None:
        room = _v2_base("10")
        room.add(
            "pl2",
            "m.room.power_levels",
            ALICE,
            {"users": {ALICE: 100, BOB: 40}, "users_default": 7},
            "",
            auth=["create", "pl", "alice_join"],
        )
        room.add("e1", "m.room.topic", BOB, {}, "", auth=["create", "pl2", "bob_join"])
        room.add("e2", "m.room.topic", BOB, {}, "", auth=["create", "pl", "bob_join"])
        room.add("e3", "m.room.topic", CAROL, {}, "", auth=["create", "pl2"])
        room.add("e4", "m.room.topic", ALICE, {}, "", auth=["create", "alice_join"])  # no power levels: creator
        room.add("e5", "m.room.topic", BOB, {}, "", auth=["create", "bob_join"])
        self.assertEqual(sender_power_level("$e1", room.events), 40)
        self.assertEqual(sender_power_level("$e2", room.events), 0)
        self.assertEqual(sender_power_level("$e3", room.events), 7)
        self.assertEqual(sender_power_level("$e4", room.events), 100)
        self.assertEqual(sender_power_level("$e5", room.events), 0)

    def test_sender_power_level_with_malformed_power_levels(self) -> None:
        # v1-v9 only validate `users`, so a first power levels event can carry
        # a users_default that is no number; such a sender counts as 0.
        room = _v2_base("9")
        room.add(
            "odd_pl",
            "m.room.power_levels",
            ALICE,
            {"users": {ALICE: 100}, "users_default": "lots"},
            "",
            auth=["create", "pl", "alice_join"],
        )
        room.add("t_bob", "m.room.join_rules", BOB, {}, "", auth=["create", "odd_pl", "bob_join"])
        room.add("t_alice", "m.room.join_rules", ALICE, {}, "", auth=["create", "odd_pl", "alice_join"])
        self.assertEqual(sender_power_level("$t_bob", room.events), 0)
        self.assertEqual(sender_power_level("$t_alice", room.events), 100)
        self.assertEqual(
            reverse_topological_power_ordering(["$t_bob", "$t_alice"], room.events), ["$t_alice", "$t_bob"]
        )


class OrderingTests(SynchronousTestCase):
    def test_power_beats_timestamp_and_id(self) -> None:
        room = _v2_base("10")
        room.add(
            "pl2",
            "m.room.power_levels",
            ALICE,
            {"users": {ALICE: 100, BOB: 50}},
            "",
            auth=["create", "pl", "alice_join"],
        )
        # All three cite pl2; power: alice 100, bob 50, carol 0.
        room.add("z_alice", "m.room.join_rules", ALICE, {}, "", auth=["create", "pl2", "alice_join"], ts=300)
        room.add("y_bob", "m.room.join_rules", BOB, {}, "", auth=["create", "pl2", "bob_join"], ts=100)
        room.add("x_carol", "m.room.join_rules", CAROL, {}, "", auth=["create", "pl2"], ts=50)
        order = reverse_topological_power_ordering(["$x_carol", "$y_bob", "$z_alice"], room.events)
        self.assertEqual(order, ["$z_alice", "$y_bob", "$x_carol"])

    def test_timestamp_then_event_id(self) -> None:
        room = _v2_base("10")
        room.add("b", "m.room.join_rules", ALICE, {}, "", auth=["create", "pl", "alice_join"], ts=5)
        room.add("a", "m.room.join_rules", ALICE, {}, "", auth=["create", "pl", "alice_join"], ts=5)
        room.add("c", "m.room.join_rules", ALICE, {}, "", auth=["create", "pl", "alice_join"], ts=4)
        order = reverse_topological_power_ordering(["$a", "$b", "$c"], room.events)
        self.assertEqual(order, ["$c", "$a", "$b"])

    def test_topology_beats_power(self) -> None:
        # carol's (PL 0) event is an auth event of alice's, so it comes first,
        # even through an intermediate event outside the sorted set.
        room = _v2_base("10")
        room.add("carol_join", "m.room.member", CAROL, JOIN, CAROL, auth=["create", "pl", "jr"], ts=900)
        room.add(
            "mid",
            "m.room.member",
            CAROL,
            {"membership": "join", "displayname": "c"},
            CAROL,
            auth=["create", "pl", "jr", "carol_join"],
            ts=901,
        )
        room.add("kick", "m.room.member", ALICE, LEAVE, CAROL, auth=["create", "pl", "alice_join", "mid"], ts=1)
        room.add("other", "m.room.join_rules", ALICE, {}, "", auth=["create", "pl", "alice_join"], ts=2)
        order = reverse_topological_power_ordering(["$kick", "$carol_join", "$other"], room.events)
        self.assertEqual(order, ["$other", "$carol_join", "$kick"])
        self.assertEqual(reverse_topological_power_ordering([], room.events), [])

    def test_cycle_is_an_error(self) -> None:
        room = Room("10")
        room.add("a", "m.room.join_rules", ALICE, {}, "", auth=["b"])
        room.add("b", "m.room.join_rules", ALICE, {}, "", auth=["a"])
        with self.assertRaises(StateResolutionError):
            reverse_topological_power_ordering(["$a", "$b"], room.events)

    def _mainline_room(self) -> Room:
        room = _v2_base("10")
        room.add(
            "pl2",
            "m.room.power_levels",
            ALICE,
            {"users": {ALICE: 100, BOB: 50}},
            "",
            auth=["create", "pl", "alice_join"],
        )
        room.add(
            "pl3",
            "m.room.power_levels",
            ALICE,
            {"users": {ALICE: 100, BOB: 60}},
            "",
            auth=["create", "pl2", "alice_join"],
        )
        room.add(
            "pl_side",
            "m.room.power_levels",
            BOB,
            {"users": {ALICE: 100, BOB: 50}},
            "",
            auth=["create", "pl2", "bob_join"],
        )
        room.add(
            "pl_side2",
            "m.room.power_levels",
            BOB,
            {"users": {ALICE: 100, BOB: 50}},
            "",
            auth=["create", "pl_side", "bob_join"],
        )
        return room

    def test_mainline(self) -> None:
        room = self._mainline_room()
        self.assertEqual(mainline("$pl3", room.events), ["$pl3", "$pl2", "$pl"])
        self.assertEqual(mainline(None, room.events), [])

    def test_mainline_ordering(self) -> None:
        room = self._mainline_room()
        # Positions against the mainline [pl3 (0), pl2 (1), pl (2)]:
        room.add("on_pl3", "m.room.topic", ALICE, {}, "", auth=["create", "pl3", "alice_join"], ts=1)  # 0
        room.add("on_pl", "m.room.topic", ALICE, {}, "", auth=["create", "pl", "alice_join"], ts=9)  # 2
        room.add(
            "on_side2", "m.room.topic", BOB, {}, "", auth=["create", "pl_side2", "bob_join"], ts=5
        )  # via pl_side -> pl2: 1
        room.add("on_pl2_b", "m.room.topic", BOB, {}, "", auth=["create", "pl2", "bob_join"], ts=3)  # 1
        room.add("on_pl2_a", "m.room.topic", BOB, {}, "", auth=["create", "pl2", "bob_join"], ts=3)  # 1
        room.add("on_none", "m.room.topic", ALICE, {}, "", auth=["create", "alice_join"], ts=100)  # infinity
        ids = _ids("on_pl3", "on_pl", "on_side2", "on_pl2_b", "on_pl2_a", "on_none")
        order = mainline_ordering(ids, "$pl3", room.events)
        self.assertEqual(order, _ids("on_none", "on_pl", "on_pl2_a", "on_pl2_b", "on_side2", "on_pl3"))
        # The event itself is not part of its own chain: pl3 is placed by pl2.
        self.assertEqual(mainline_ordering(["$pl3", "$on_pl3"], "$pl3", room.events), ["$pl3", "$on_pl3"])
        # No power levels at all: every position is infinite; by ts then ID.
        self.assertEqual(mainline_ordering(ids, None, room.events)[0], "$on_pl3")


class IterativeAuthChecksTests(SynchronousTestCase):
    def test_skips_unauthorised_events(self) -> None:
        room = _v2_base("10")
        room.add("topic_bob", "m.room.topic", BOB, {}, "", auth=["create", "pl", "bob_join"])
        room.add("topic_alice", "m.room.topic", ALICE, {}, "", auth=["create", "pl", "alice_join"])
        base = room.state("create", "alice_join", "pl", "jr", "bob_join")
        result = iterative_auth_checks(["$topic_alice", "$topic_bob"], base, room.events)
        self.assertEqual(result, {**base, TOPIC: "$topic_alice"})

    def test_state_is_used_before_own_auth_events(self) -> None:
        # bob is banned in the state being built: his topic fails although its
        # own auth events say he is joined.
        room = _v2_base("10")
        room.add(
            "pl2",
            "m.room.power_levels",
            ALICE,
            {"users": {ALICE: 100, BOB: 50}},
            "",
            auth=["create", "pl", "alice_join"],
        )
        room.add("ban_bob", "m.room.member", ALICE, BAN, BOB, auth=["create", "pl2", "alice_join", "bob_join"])
        room.add("topic_bob", "m.room.topic", BOB, {}, "", auth=["create", "pl2", "bob_join"])
        base = room.state("create", "alice_join", "pl2", "jr", "bob_join")
        result = iterative_auth_checks(["$ban_bob", "$topic_bob"], base, room.events)
        self.assertEqual(result[member(BOB)], "$ban_bob")
        self.assertNotIn(TOPIC, result)

    def test_falls_back_to_own_auth_events(self) -> None:
        room = _v2_base("10")
        room.add("topic", "m.room.topic", ALICE, {}, "", auth=["create", "pl", "alice_join"])
        self.assertEqual(iterative_auth_checks(["$topic"], {}, room.events), {TOPIC: "$topic"})

    def test_rejected_auth_events_are_not_used(self) -> None:
        room = _v2_base("10")
        room.add(
            "alice_rejoin",
            "m.room.member",
            ALICE,
            JOIN,
            ALICE,
            auth=["create", "pl", "jr", "alice_join"],
            rejected="auth_error",
        )
        room.add("topic", "m.room.topic", ALICE, {}, "", auth=["create", "pl", "alice_rejoin"])
        # Without alice's membership (the only one cited is rejected) the topic fails.
        self.assertEqual(iterative_auth_checks(["$topic"], {}, room.events), {})
        # With it in the state being built it passes.
        self.assertEqual(
            iterative_auth_checks(["$topic"], {member(ALICE): "$alice_join"}, room.events),
            {member(ALICE): "$alice_join", TOPIC: "$topic"},
        )

    def test_rejected_event_is_checked_again(self) -> None:
        # Spec "Rejected events": an event rejected against the state at the
        # event is handled as usual, and is admitted if it now passes.
        room = _v2_base("10")
        room.add("topic", "m.room.topic", ALICE, {}, "", auth=["create", "pl", "alice_join"], rejected="soft")
        base = room.state("create", "alice_join", "pl", "jr")
        self.assertEqual(iterative_auth_checks(["$topic"], base, room.events)[TOPIC], "$topic")

    def test_message_events_are_ignored(self) -> None:
        room = _v2_base("10")
        room.add("msg", "m.room.message", ALICE, {}, None, auth=["create", "pl", "alice_join"])
        self.assertEqual(iterative_auth_checks(["$msg"], {}, room.events), {})

    def test_v12_create_event_comes_from_room_id(self) -> None:
        room = _v2_base("12")
        room.add("topic", "m.room.topic", ALICE, {}, "", auth=["pl", "alice_join"])
        self.assertEqual(iterative_auth_checks(["$topic"], {}, room.events), {TOPIC: "$topic"})


# ---------------------------------------------------------------------------
# Properties
# ---------------------------------------------------------------------------

_USERS = [ALICE, BOB, CAROL, EVE, ZED]


def _random_room(seed: int, version: str, branches: int) -> tuple[Room, list[dict]]:
    """A room grown on ``branches`` forks of random actions. Each fork is linear
    and only keeps events that pass the auth rules against its own state."""
    rnd = random.Random(seed)
    v12 = version == "12"
    room = Room(version, room_id="!create" if v12 else "!room:example.org")
    room.add("create", "m.room.create", ALICE, {} if v12 else {"creator": ALICE}, "")
    room.add("alice_join", "m.room.member", ALICE, JOIN, ALICE, auth=["create"], prev=["create"])
    start_users = {BOB: 50} if v12 else {ALICE: 100, BOB: 50}
    room.add(
        "pl0",
        "m.room.power_levels",
        ALICE,
        {"users": start_users},
        "",
        auth=["create", "alice_join"],
        prev=["alice_join"],
    )
    room.add(
        "jr0",
        "m.room.join_rules",
        ALICE,
        {"join_rule": "public"},
        "",
        auth=["create", "alice_join", "pl0"],
        prev=["pl0"],
    )
    base = room.state("create", "alice_join", "pl0", "jr0")
    counter = [0]

    def try_add(
        state: dict, last: str, etype: str, sender: str, content: dict, state_key: Optional[str]
    ) -> Optional[str]:
        from mxtwisted.events.auth import auth_types_for_event

        counter[0] += 1
        name = f"e{counter[0]}"
        probe = room.add(name, etype, sender, content, state_key, prev=[last], ts=rnd.randint(1, 50))
        keys = sorted(auth_types_for_event(probe))
        auth = [state[k] for k in keys if k in state]
        ev = room.add(name, etype, sender, content, state_key, auth=auth, prev=[last], ts=probe.origin_server_ts)
        try:
            check_auth_rules(
                ev,
                {k: room.events[state[k]] for k in keys if k in state}
                | ({CREATE: room.events["$create"]} if v12 else {}),
            )
        except AuthError:
            del room.events[ev.event_id]
            return None
        state[(etype, state_key)] = ev.event_id  # type: ignore[index]
        return ev.event_id

    trunk = dict(base)
    last = "$jr0"
    for user in _USERS[1:]:
        last = try_add(trunk, last, "m.room.member", user, JOIN, user) or last
    sets = []
    for _ in range(branches):
        state = dict(trunk)
        tip = last
        for _ in range(rnd.randint(2, 12)):
            # Mostly the powerful users, so that most attempts are allowed.
            sender = rnd.choices(_USERS, weights=[5, 4, 1, 1, 1])[0]
            kind = rnd.randrange(6)
            if kind == 0:
                users = {u: rnd.choice([0, 50, 100]) for u in rnd.sample(_USERS, 3) if not (v12 and u == ALICE)}
                args: tuple = ("m.room.power_levels", sender, {"users": users}, "")
            elif kind == 1:
                args = ("m.room.join_rules", sender, {"join_rule": rnd.choice(["public", "invite"])}, "")
            elif kind == 2:
                target = rnd.choice(_USERS)
                args = ("m.room.member", sender, {"membership": rnd.choice(["leave", "ban", "invite"])}, target)
            elif kind == 3:
                args = ("m.room.member", sender, JOIN, sender)
            else:
                args = ("m.room.topic", sender, {"topic": str(rnd.random())}, "")
            tip = try_add(state, tip, *args) or tip
        sets.append(state)
    return room, sets


class PropertyTests(SynchronousTestCase):
    @settings(max_examples=60, deadline=None)
    @given(
        seed=st.integers(0, 2**32 - 1),
        version=st.sampled_from(["1", "2", "10", "11", "12"]),
        branches=st.integers(2, 4),
        data=st.data(),
    )
    def test_independent_of_input_order(self, seed: int, version: str, branches: int, data: st.DataObject) -> None:
        room, sets = _random_room(seed, version, branches)
        rv = room.version
        expected = resolve_state_groups(rv, sets, room.events)
        permuted = data.draw(st.permutations(sets))
        items = list(room.events.items())
        shuffled = dict(data.draw(st.permutations(items)))
        self.assertEqual(resolve_state_groups(rv, permuted, shuffled), expected)
        # Duplicating an input map changes nothing either.
        self.assertEqual(resolve_state_groups(rv, [*permuted, permuted[0]], room.events), expected)

    @settings(max_examples=30, deadline=None)
    @given(seed=st.integers(0, 2**32 - 1), version=st.sampled_from(["1", "10", "12"]))
    def test_identical_sets_resolve_to_themselves(self, seed: int, version: str) -> None:
        room, sets = _random_room(seed, version, 1)
        self.assertEqual(resolve_state_groups(room.version, [sets[0], dict(sets[0])], room.events), sets[0])

    @settings(max_examples=30, deadline=None)
    @given(seed=st.integers(0, 2**32 - 1), version=st.sampled_from(["10", "12"]), data=st.data())
    def test_orderings_independent_of_input_order(self, seed: int, version: str, data: st.DataObject) -> None:
        room, _ = _random_room(seed, version, 3)
        ids = [e for e, ev in room.events.items() if ev.state_key is not None]
        permuted = data.draw(st.permutations(ids))
        self.assertEqual(
            reverse_topological_power_ordering(ids, room.events),
            reverse_topological_power_ordering(permuted, room.events),
        )
        self.assertEqual(mainline_ordering(ids, "$pl0", room.events), mainline_ordering(permuted, "$pl0", room.events))

    @settings(max_examples=30, deadline=None)
    @given(seed=st.integers(0, 2**32 - 1), version=st.sampled_from(["10", "12"]))
    def test_power_ordering_is_topological(self, seed: int, version: str) -> None:
        room, _ = _random_room(seed, version, 3)
        ids = [e for e, ev in room.events.items() if ev.state_key is not None]
        order = reverse_topological_power_ordering(ids, room.events)
        position = {e: i for i, e in enumerate(order)}
        for eid in ids:
            for aid in auth_chain([eid], room.events):
                self.assertLess(position[aid], position[eid])
