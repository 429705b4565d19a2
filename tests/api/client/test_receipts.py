"""Receipts and read markers over real HTTP: every receipt type, threads, refusals, the fully read marker.

Spec: Client-Server API, "Receipts" and "Read and unread markers".
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from twisted.trial.unittest import TestCase

from tests.ephemeral.spec import SpecAssertions
from tests.support.homeserver import start_homeserver

V3 = "/_matrix/client/v3"
RECEIPT = V3 + "/rooms/{roomId}/receipt/{receiptType}/{eventId}"
READ_MARKERS = V3 + "/rooms/{roomId}/read_markers"


class ReceiptTests(SpecAssertions, TestCase):
    async def setUp(self) -> None:
        self.hs = await start_homeserver(self, bcrypt_rounds=4, rc_message={"per_second": 1000, "burst_count": 1000})
        self.alice = await self.hs.register_user("alice")
        self.bob = await self.hs.register_user("bob")
        self.carol = await self.hs.register_user("carol")
        self.room_id = await self.create_room()
        code, resp = await self.req("POST", f"/rooms/{self.room_id}/join", {}, who=self.bob)
        self.assertEqual(code, 200, resp)
        self.e1 = await self.send("one")
        self.e2 = await self.send("two")
        self.source = self.hs.components.receipts.source

    async def req(self, method: str, path: str, body: Any = None, who: Any = None, prefix: str = V3) -> tuple[int, Any]:
        token = (who or self.alice)["access_token"]
        return await self.hs.request(method, prefix + path, body, token=token)

    async def create_room(self, who: Any = None) -> str:
        code, resp = await self.req("POST", "/createRoom", {"preset": "public_chat"}, who=who)
        self.assertEqual(code, 200, resp)
        return resp["room_id"]

    async def send(self, body: str, room_id: str | None = None, content: Any = None) -> str:
        self._txn = getattr(self, "_txn", 0) + 1
        room = room_id or self.room_id
        code, resp = await self.req(
            "PUT", f"/rooms/{room}/send/m.room.message/t{self._txn}", content or {"msgtype": "m.text", "body": body}
        )
        self.assertEqual(code, 200, resp)
        return resp["event_id"]

    def receipt_path(self, receipt_type: str, event_id: str, room_id: str | None = None) -> str:
        room = quote(room_id or self.room_id, safe="")
        return f"/rooms/{room}/receipt/{quote(receipt_type, safe='')}/{quote(event_id, safe='')}"

    async def post_receipt(self, receipt_type: str, event_id: str, body: Any = None, who: Any = None,
                           room_id: str | None = None) -> tuple[int, Any]:
        return await self.req("POST", self.receipt_path(receipt_type, event_id, room_id), body or {}, who=who)

    async def receipts_seen_by(self, who: Any, since: int = 0) -> dict:
        per_room, _ = await self.source.get_updates(
            who["user_id"], {self.room_id}, since, self.source.current_position()
        )
        events = per_room.get(self.room_id, [])
        self.assertLessEqual(len(events), 1)
        for event in events:
            self.assertValidEvent("m.receipt", event)
        return events[0]["content"] if events else {}

    async def fully_read(self, who: Any = None) -> tuple[int, Any]:
        user_id = quote((who or self.alice)["user_id"], safe="")
        return await self.req("GET", f"/user/{user_id}/rooms/{self.room_id}/account_data/m.fully_read", who=who)

    # -- receipts ------------------------------------------------------------------------
    async def test_read_receipt(self) -> None:
        code, resp = await self.post_receipt("m.read", self.e1)
        self.assertEqual((code, resp), (200, {}))
        self.assertMatchesSpec("POST", RECEIPT, code, resp)
        content = await self.receipts_seen_by(self.bob)
        self.assertEqual(list(content), [self.e1])
        self.assertEqual(list(content[self.e1]["m.read"]), [self.alice["user_id"]])
        self.assertIsInstance(content[self.e1]["m.read"][self.alice["user_id"]]["ts"], int)
        self.assertNotIn("thread_id", content[self.e1]["m.read"][self.alice["user_id"]])

    async def test_private_receipt_is_only_for_its_user(self) -> None:
        code, _ = await self.post_receipt("m.read.private", self.e2)
        self.assertEqual(code, 200)
        mine = await self.receipts_seen_by(self.alice)
        self.assertEqual(list(mine[self.e2]), ["m.read.private"])
        self.assertEqual(await self.receipts_seen_by(self.bob), {})

    async def test_receipt_without_body_and_on_r0(self) -> None:
        code, resp = await self.hs.request(
            "POST", V3 + self.receipt_path("m.read", self.e1), token=self.alice["access_token"]
        )
        self.assertEqual((code, resp), (200, {}))
        code, resp = await self.req("POST", self.receipt_path("m.read", self.e2), {}, prefix="/_matrix/client/r0")
        self.assertEqual((code, resp), (200, {}))
        self.assertEqual(list(await self.receipts_seen_by(self.bob)), [self.e2])

    async def test_receipts_do_not_move_backwards(self) -> None:
        await self.post_receipt("m.read", self.e2)
        position = self.source.current_position()
        code, _ = await self.post_receipt("m.read", self.e1)
        self.assertEqual(code, 200)
        self.assertEqual(await self.receipts_seen_by(self.bob, position), {})
        self.assertEqual(list(await self.receipts_seen_by(self.bob)), [self.e2])

    async def test_threaded_receipts(self) -> None:
        root = self.e1
        in_thread = await self.send("", content={
            "msgtype": "m.text", "body": "in thread", "m.relates_to": {"rel_type": "m.thread", "event_id": root}})
        reaction = await self.send("", content={
            "msgtype": "m.text", "body": "+1", "m.relates_to": {"rel_type": "m.reference", "event_id": in_thread}})
        ok = [("main", self.e2), ("main", root), (root, root), (root, in_thread), (root, reaction)]
        for thread_id, event_id in ok:
            code, resp = await self.post_receipt("m.read", event_id, {"thread_id": thread_id})
            self.assertEqual((code, resp), (200, {}), (thread_id, event_id))
        bad = [("main", in_thread), ("main", reaction), (root, self.e2), ("$other:test.local", in_thread)]
        for thread_id, event_id in bad:
            code, resp = await self.post_receipt("m.read", event_id, {"thread_id": thread_id})
            self.assertEqual((code, resp["errcode"]), (400, "M_INVALID_PARAM"), (thread_id, event_id))
            self.assertMatchesSpec("POST", RECEIPT, code, resp)
        content = await self.receipts_seen_by(self.bob)
        alice = self.alice["user_id"]
        threads = {
            (event_id, data["thread_id"])
            for event_id, by_type in content.items()
            for user, data in by_type["m.read"].items()
            if user == alice
        }
        # The furthest receipt of each thread: main stays at e2 (the root is before it), the thread at the reference.
        self.assertEqual(threads, {(self.e2, "main"), (reaction, root)})

    async def test_thread_id_refusals(self) -> None:
        for body in ({"thread_id": ""}, {"thread_id": 5}, {"thread_id": None}):
            code, resp = await self.post_receipt("m.read", self.e1, body)
            self.assertEqual((code, resp["errcode"]), (400, "M_INVALID_PARAM"), body)
            self.assertMatchesSpec("POST", RECEIPT, code, resp)
        code, resp = await self.post_receipt("m.fully_read", self.e1, {"thread_id": "main"})
        self.assertEqual((code, resp["errcode"]), (400, "M_INVALID_PARAM"))

    async def test_refusals(self) -> None:
        code, resp = await self.post_receipt("m.unknown", self.e1)
        self.assertEqual((code, resp["errcode"]), (400, "M_INVALID_PARAM"))
        self.assertMatchesSpec("POST", RECEIPT, code, resp)
        code, resp = await self.post_receipt("m.read", "not-an-event-id")
        self.assertEqual((code, resp["errcode"]), (400, "M_INVALID_PARAM"))
        code, resp = await self.post_receipt("m.read", self.e1, room_id="not-a-room")
        self.assertEqual((code, resp["errcode"]), (400, "M_INVALID_PARAM"))
        # Not joined; unknown room; unknown event; an event of another room.
        code, resp = await self.post_receipt("m.read", self.e1, who=self.carol)
        self.assertEqual((code, resp["errcode"]), (403, "M_FORBIDDEN"))
        code, resp = await self.post_receipt("m.read", self.e1, room_id="!nowhere:test.local")
        self.assertEqual((code, resp["errcode"]), (404, "M_NOT_FOUND"))
        code, resp = await self.post_receipt("m.read", "$nope:test.local")
        self.assertEqual((code, resp["errcode"]), (404, "M_NOT_FOUND"))
        other_room = await self.create_room()
        other_event = await self.send("elsewhere", room_id=other_room)
        code, resp = await self.post_receipt("m.read", other_event)
        self.assertEqual((code, resp["errcode"]), (404, "M_NOT_FOUND"))
        # Not JSON; no token.
        code, resp = await self.hs.request(
            "POST", V3 + self.receipt_path("m.read", self.e1), raw=b"[", token=self.alice["access_token"]
        )
        self.assertEqual((code, resp["errcode"]), (400, "M_NOT_JSON"))
        code, resp = await self.hs.request("POST", V3 + self.receipt_path("m.read", self.e1), {})
        self.assertEqual((code, resp["errcode"]), (401, "M_MISSING_TOKEN"))
        self.assertEqual(self.source.current_position(), 0)

    async def test_event_not_visible_is_404(self) -> None:
        room_id = await self.create_room()
        code, resp = await self.req("PUT", f"/rooms/{room_id}/state/m.room.history_visibility", {
            "history_visibility": "joined"})
        self.assertEqual(code, 200, resp)
        before = await self.send("before bob", room_id=room_id)
        code, resp = await self.req("POST", f"/rooms/{room_id}/join", {}, who=self.bob)
        self.assertEqual(code, 200, resp)
        after = await self.send("after bob", room_id=room_id)
        code, resp = await self.post_receipt("m.read", before, who=self.bob, room_id=room_id)
        self.assertEqual((code, resp["errcode"]), (404, "M_NOT_FOUND"))
        code, _ = await self.post_receipt("m.read", after, who=self.bob, room_id=room_id)
        self.assertEqual(code, 200)

    # -- the fully read marker -------------------------------------------------------------
    async def test_fully_read_through_the_receipt_endpoint(self) -> None:
        code, resp = await self.post_receipt("m.fully_read", self.e1)
        self.assertEqual((code, resp), (200, {}))
        self.assertEqual(await self.fully_read(), (200, {"event_id": self.e1}))
        # Not a receipt: nothing on the receipts stream.
        self.assertEqual(await self.receipts_seen_by(self.alice), {})

    async def test_read_markers(self) -> None:
        notifier = self.hs.components.notifier
        waiting = notifier.wait_for_user(self.alice["user_id"], 5000)
        code, resp = await self.req("POST", f"/rooms/{self.room_id}/read_markers", {
            "m.fully_read": self.e1, "m.read": self.e2, "m.read.private": self.e2, "m.unknown": "$x"})
        self.assertEqual((code, resp), (200, {}))
        self.assertMatchesSpec("POST", READ_MARKERS, code, resp)
        self.assertEqual((await waiting)[0], "account_data")
        self.assertEqual(await self.fully_read(), (200, {"event_id": self.e1}))
        self.assertEqual(set((await self.receipts_seen_by(self.alice))[self.e2]), {"m.read", "m.read.private"})
        self.assertEqual(set((await self.receipts_seen_by(self.bob))[self.e2]), {"m.read"})
        # The marker only moves forward.
        code, _ = await self.req("POST", f"/rooms/{self.room_id}/read_markers", {"m.fully_read": self.e2})
        self.assertEqual(code, 200)
        code, _ = await self.req("POST", f"/rooms/{self.room_id}/read_markers", {"m.fully_read": self.e1})
        self.assertEqual(code, 200)
        self.assertEqual(await self.fully_read(), (200, {"event_id": self.e2}))
        # Each marker is optional (spec v1.4); an empty body changes nothing.
        code, resp = await self.req("POST", f"/rooms/{self.room_id}/read_markers", {})
        self.assertEqual((code, resp), (200, {}))
        # Setting m.fully_read as account data directly stays refused.
        code, resp = await self.req(
            "PUT", f"/user/{quote(self.alice['user_id'])}/rooms/{self.room_id}/account_data/m.fully_read",
            {"event_id": self.e1})
        self.assertEqual(code, 405, resp)

    async def test_read_markers_refusals(self) -> None:
        path = f"/rooms/{self.room_id}/read_markers"
        code, resp = await self.req("POST", path, {"m.fully_read": 5})
        self.assertEqual((code, resp["errcode"]), (400, "M_INVALID_PARAM"))
        code, resp = await self.req("POST", path, {"m.fully_read": self.e1}, who=self.carol)
        self.assertEqual((code, resp["errcode"]), (403, "M_FORBIDDEN"))
        # One unknown event: nothing at all is changed.
        code, resp = await self.req("POST", path, {"m.fully_read": self.e1, "m.read": "$nope:test.local"})
        self.assertEqual((code, resp["errcode"]), (404, "M_NOT_FOUND"))
        code, resp = await self.fully_read()
        self.assertEqual((code, resp["errcode"]), (404, "M_NOT_FOUND"))
        code, resp = await self.req("POST", "/rooms/!nowhere:test.local/read_markers", {"m.read": self.e1})
        self.assertEqual((code, resp["errcode"]), (404, "M_NOT_FOUND"))
        code, resp = await self.hs.request("POST", V3 + path, raw=b"", token=self.alice["access_token"])
        self.assertEqual((code, resp["errcode"]), (400, "M_NOT_JSON"))
        code, resp = await self.hs.request("POST", V3 + path, {"m.read": self.e1})
        self.assertEqual((code, resp["errcode"]), (401, "M_MISSING_TOKEN"))
