"""Events of another server that do not build on our current state (spec "Checks performed on receipt of a
PDU", "Soft failure", state resolution): over real HTTP with X-Matrix signed transactions from a fake remote
server whose user joined a local room. Concurrent events fork the DAG and merge; conflicting state is resolved
with the room version's algorithm; an event allowed before it but not by the current state is soft-failed;
one refused by the state before it is rejected; when we are too far behind, the state is fetched."""

from __future__ import annotations

import time
from typing import Any, Optional
from urllib.parse import quote

from twisted.trial import unittest

from tests.federation import test_receiver as receiver_tests
from tests.federation.test_served_rooms import F1, REMOTE

BOB = receiver_tests.BOB


class FakeFetchingClient:
    """A remote server as the receiver's client sees it: ``/get_missing_events`` finds nothing, ``/state``,
    ``/event`` and ``/event_auth`` answer what the test gives; every call is recorded."""

    def __init__(self, answers: dict[str, Any]) -> None:
        self.answers = answers
        self.calls: list[tuple[str, Optional[dict]]] = []

    async def post_json(self, destination: str, path: str, body: Any) -> Any:
        self.calls.append((path, body))
        return {"events": []}

    async def get_json(self, destination: str, path: str, args: Any = None) -> Any:
        self.calls.append((path, args))
        for prefix, answer in self.answers.items():
            if path.startswith(prefix):
                return answer
        raise AssertionError(f"unexpected request {path}")


class ForkTests(unittest.TestCase):
    # The set-up and helpers of the receiver tests (a local room with alice, bob of REMOTE joined), borrowed
    # through the module so that trial does not run ReceiverTests a second time from here.
    setUp = receiver_tests.ReceiverTests.setUp
    client = receiver_tests.ReceiverTests.client
    fed = receiver_tests.ReceiverTests.fed
    send_txn = receiver_tests.ReceiverTests.send_txn
    timeline = receiver_tests.ReceiverTests.timeline

    async def state_ids(self) -> dict[tuple[str, str], str]:
        state = await self.client("GET", f"/rooms/{self.room_id}/state")
        return {(e["type"], e["state_key"]): e["event_id"] for e in state}

    async def remote_event(
        self,
        event_type: str,
        content: dict,
        prev: str,
        depth: int,
        state_key: Optional[str] = None,
        auth: Optional[list[str]] = None,
        ts: Optional[int] = None,
    ) -> tuple[dict, str]:
        """An event of bob signed by the remote server on top of ``prev``; auth events: the power levels,
        bob's join (and the create event before v12) unless given."""
        if auth is None:
            ids = await self.state_ids()
            auth = [ids[("m.room.power_levels", "")], self.join_id]
            if not self.version.room_id_from_create_event:
                auth.append(ids[("m.room.create", "")])
        template: dict[str, Any] = {
            "type": event_type, "room_id": self.room_id, "sender": BOB, "content": content,
            "origin_server_ts": ts if ts is not None else int(time.time() * 1000),
            "depth": depth, "prev_events": [prev], "auth_events": auth,
        }
        if state_key is not None:
            template["state_key"] = state_key
        return self.remote.sign(template, self.version.identifier)

    async def extremities(self) -> set[str]:
        return set(await self.hs.service.storage.events.get_forward_extremities(self.room_id))

    async def local_message(self, text: str) -> str:
        resp = await self.client("PUT", f"/rooms/{self.room_id}/send/m.room.message/{text}", {"msgtype": "m.text", "body": text})
        return resp["event_id"]

    async def depth_of(self, event_id: str) -> int:
        return (await self.hs.service.storage.events.get_event(event_id)).json["depth"]

    # -- tests --------------------------------------------------------------------------------------------
    async def test_concurrent_messages_fork_and_the_next_local_event_merges(self) -> None:
        local_id = await self.local_message("from alice")
        join_depth = await self.depth_of(self.join_id)
        event, event_id = await self.remote_event("m.room.message", {"msgtype": "m.text", "body": "from bob"}, self.join_id, join_depth + 1)
        self.assertEqual((await self.send_txn("fork", [event]))["pdus"], {event_id: {}})
        self.assertEqual(await self.extremities(), {local_id, event_id})
        self.assertEqual(sorted(await self.timeline()), ["from alice", "from bob"])
        merge_id = await self.local_message("merge")
        merge = (await self.hs.service.storage.events.get_event(merge_id)).json
        self.assertEqual(sorted(merge["prev_events"]), sorted([local_id, event_id]))
        self.assertEqual(await self.extremities(), {merge_id})

    async def test_event_allowed_before_but_not_now_is_soft_failed(self) -> None:
        # alice makes messages need power 50; bob's server, not knowing yet, sends one on top of his join.
        pl = await self.client("GET", f"/rooms/{self.room_id}/state/m.room.power_levels")
        pl["events_default"] = 50
        pl_id = (await self.client("PUT", f"/rooms/{self.room_id}/state/m.room.power_levels", pl))["event_id"]
        before = await self.extremities()
        join_depth = await self.depth_of(self.join_id)
        ids = await self.state_ids()
        create_auth = [] if self.version.room_id_from_create_event else [ids[("m.room.create", "")]]
        old_pl_id = (await self.hs.service.storage.events.get_event(pl_id)).replaces_state
        event, event_id = await self.remote_event(
            "m.room.message", {"msgtype": "m.text", "body": "late"}, self.join_id, join_depth + 1,
            auth=[old_pl_id, self.join_id, *create_auth],
        )
        resp = await self.send_txn("soft", [event])
        # Soft failure is not an error for the sending server, but the event is nowhere for our users.
        self.assertEqual(resp["pdus"], {event_id: {}})
        self.assertEqual(await self.timeline(), [])
        self.assertEqual(await self.extremities(), before)
        stored = await self.hs.service.storage.events.get_event(event_id)
        self.assertTrue(stored.outlier)
        self.assertIsNone(stored.rejected_reason)
        # The state after it is known: events built on it can be checked.
        self.assertIsNotNone(await self.hs.service.storage.events.get_state_group_of_event(event_id))
        # Built on the new power levels, bob's message fails the auth rules against its own auth events and
        # the state before it: rejected, an error for the sender.
        pl_depth = await self.depth_of(pl_id)
        rejected, rejected_id = await self.remote_event(
            "m.room.message", {"msgtype": "m.text", "body": "refused"}, pl_id, pl_depth + 1,
            auth=[pl_id, self.join_id, *create_auth],
        )
        resp = await self.send_txn("rejected", [rejected])
        self.assertIn("error", resp["pdus"][rejected_id])
        stored = await self.hs.service.storage.events.get_event(rejected_id)
        self.assertIsNotNone(stored.rejected_reason)
        self.assertEqual(await self.timeline(), [])
        self.assertEqual(await self.extremities(), before)

    async def test_conflicting_state_is_resolved(self) -> None:
        # bob may change the topic; alice and bob then change it concurrently.
        pl = (await self.client("GET", f"/rooms/{self.room_id}/state/m.room.power_levels"))
        pl["users"][BOB] = 50
        pl_id = (await self.client("PUT", f"/rooms/{self.room_id}/state/m.room.power_levels", pl))["event_id"]
        pl_depth = await self.depth_of(pl_id)
        await self.client("PUT", f"/rooms/{self.room_id}/state/m.room.topic", {"topic": "alice's"})
        # Same mainline position (the same power levels): the later origin_server_ts is applied last and wins.
        later = int(time.time() * 1000) + 600_000
        topic, topic_id = await self.remote_event(
            "m.room.topic", {"topic": "bob's"}, pl_id, pl_depth + 1, state_key="", ts=later
        )
        self.assertEqual((await self.send_txn("t1", [topic]))["pdus"], {topic_id: {}})
        current = await self.client("GET", f"/rooms/{self.room_id}/state/m.room.topic")
        self.assertEqual(current, {"topic": "bob's"})
        # An older concurrent topic loses against both.
        old, old_id = await self.remote_event("m.room.topic", {"topic": "old"}, pl_id, pl_depth + 1, state_key="", ts=1000)
        self.assertEqual((await self.send_txn("t2", [old]))["pdus"], {old_id: {}})
        self.assertEqual(await self.client("GET", f"/rooms/{self.room_id}/state/m.room.topic"), {"topic": "bob's"})
        self.assertEqual(len(await self.extremities()), 3)
        # The resolved state is what the room has after a restart of its cache, and what new events use.
        self.hs.service.components.rooms._rooms.clear()
        self.assertEqual(await self.client("GET", f"/rooms/{self.room_id}/state/m.room.topic"), {"topic": "bob's"})
        merge_id = await self.local_message("merge")
        state_after = await self.hs.service.storage.events.get_state_ids_at_event(merge_id)
        self.assertEqual(state_after[("m.room.topic", "")], topic_id)

    async def test_state_is_fetched_when_too_far_behind(self) -> None:
        # bob changes his display name in an event we never get, then sends a message on top of it; the
        # gap cannot be filled by /get_missing_events, so the receiver asks for the state at the gap.
        self.keyring.add(self.hs.config.server_name, self.hs.service.signing_keys[0])
        join_depth = await self.depth_of(self.join_id)
        ids = await self.state_ids()
        rename, rename_id = await self.remote_event(
            "m.room.member", {"membership": "join", "displayname": "Robert"}, self.join_id, join_depth + 1, state_key=BOB
        )
        message, message_id = await self.remote_event(
            "m.room.message", {"msgtype": "m.text", "body": "after the gap"}, rename_id, join_depth + 2
        )
        state_events = await self.hs.service.storage.events.get_events(ids.values())
        fake = FakeFetchingClient({
            f"{F1}/state/": {"pdus": [s.json for s in state_events.values()], "auth_chain": []},
            f"{F1}/event/": {"origin": REMOTE, "origin_server_ts": 0, "pdus": [rename]},
        })
        self.patch(self.hs.service.components.federation_receiver, "client", fake)
        self.assertEqual((await self.send_txn("gap", [message]))["pdus"], {message_id: {}})
        paths = [path for path, _ in fake.calls]
        self.assertIn(f"{F1}/state/{quote(self.room_id, safe='')}", paths)
        self.assertIn({"event_id": rename_id}, [args for _, args in fake.calls])
        self.assertEqual(await self.timeline(), ["after the gap"])
        # The rename is known with the state after it, and is part of the room's state now.
        member = await self.client("GET", f"/rooms/{self.room_id}/state/m.room.member/{quote(BOB)}")
        self.assertEqual(member.get("displayname"), "Robert")
        stored = await self.hs.service.storage.events.get_event(rename_id)
        self.assertTrue(stored.outlier)

    async def test_missing_auth_events_are_fetched(self) -> None:
        # bob's message is authorised by a power levels event we never received (the remote's own, which is
        # an event of bob: given PL 100 by alice first so that he may send it).
        self.keyring.add(self.hs.config.server_name, self.hs.service.signing_keys[0])
        pl = await self.client("GET", f"/rooms/{self.room_id}/state/m.room.power_levels")
        pl["users"][BOB] = 100
        pl_id = (await self.client("PUT", f"/rooms/{self.room_id}/state/m.room.power_levels", pl))["event_id"]
        pl_depth = await self.depth_of(pl_id)
        ids = await self.state_ids()
        create_auth = [] if self.version.room_id_from_create_event else [ids[("m.room.create", "")]]
        pl["events_default"] = 10
        new_pl, new_pl_id = await self.remote_event(
            "m.room.power_levels", pl, pl_id, pl_depth + 1, state_key="", auth=[pl_id, self.join_id, *create_auth]
        )
        message, message_id = await self.remote_event(
            "m.room.message", {"msgtype": "m.text", "body": "authorised"}, pl_id, pl_depth + 1,
            auth=[new_pl_id, self.join_id, *create_auth],
        )
        fake = FakeFetchingClient({f"{F1}/event_auth/": {"auth_chain": [new_pl]}})
        self.patch(self.hs.service.components.federation_receiver, "client", fake)
        self.assertEqual((await self.send_txn("auth", [message]))["pdus"], {message_id: {}})
        self.assertIn(f"{F1}/event_auth/{quote(self.room_id, safe='')}/{quote(message_id, safe='')}", [p for p, _ in fake.calls])
        self.assertTrue((await self.hs.service.storage.events.get_event(new_pl_id)).outlier)
        self.assertEqual(await self.timeline(), ["authorised"])
        # The power levels event itself arrives later: known so far only as an outlier, it is checked and
        # takes its place in the room (timeline, state) rather than being ignored as known.
        self.assertEqual((await self.send_txn("late", [new_pl]))["pdus"], {new_pl_id: {}})
        stored = await self.hs.service.storage.events.get_event(new_pl_id)
        self.assertFalse(stored.outlier)
        current = await self.client("GET", f"/rooms/{self.room_id}/state/m.room.power_levels")
        self.assertEqual(current["events_default"], 10)
        sync = await self.client("GET", "/sync")
        timeline = sync["rooms"]["join"][self.room_id]["timeline"]["events"]
        self.assertIn(new_pl_id, [e["event_id"] for e in timeline])

    async def test_a_closed_database_fails_the_transaction_so_it_is_sent_again(self) -> None:
        # Not the PDU's fault: a per-PDU error would tell the origin not to resend it, and the event would
        # be lost. The whole transaction fails instead, and the same transaction later is processed anew.
        from mxtwisted.storage.database import DatabaseClosedError

        engine = self.hs.service.components.rooms
        original = engine.persist_remote_event

        async def closed(*args: Any, **kwargs: Any) -> Any:
            raise DatabaseClosedError("database is closed")

        self.patch(engine, "persist_remote_event", closed)
        join_depth = await self.depth_of(self.join_id)
        event, event_id = await self.remote_event("m.room.message", {"msgtype": "m.text", "body": "retry me"}, self.join_id, join_depth + 1)
        body = {"origin": REMOTE, "origin_server_ts": 1, "pdus": [event]}
        code, _ = await self.remote.request("PUT", f"{F1}/send/closed", body)
        self.assertEqual(code, 500)
        self.patch(engine, "persist_remote_event", original)
        self.assertEqual((await self.send_txn("closed", [event]))["pdus"], {event_id: {}})
        self.assertEqual(await self.timeline(), ["retry me"])
        self.flushLoggedErrors(DatabaseClosedError)

    async def test_many_forks_are_merged_ten_at_a_time(self) -> None:
        # A remote server leaves 25 forward extremities (25 messages on the same prev event): local events
        # still go out (the PDU format allows 20 prev_events), naming the 10 deepest, until merged.
        join_depth = await self.depth_of(self.join_id)
        forks = [
            await self.remote_event("m.room.message", {"msgtype": "m.text", "body": f"f{i}"}, self.join_id, join_depth + 1)
            for i in range(25)
        ]
        resp = await self.send_txn("forks", [event for event, _ in forks])
        self.assertEqual(set(resp["pdus"]), {event_id for _, event_id in forks})
        self.assertEqual([r for r in resp["pdus"].values() if r], [])
        self.assertEqual(len(await self.extremities()), 25)
        sizes = []
        for i in range(3):
            event_id = await self.local_message(f"merge{i}")
            sizes.append(len((await self.hs.service.storage.events.get_event(event_id)).json["prev_events"]))
        self.assertEqual(sizes, [10, 10, 7])
        self.assertEqual(len(await self.extremities()), 1)
