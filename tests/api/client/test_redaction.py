"""``PUT /rooms/{roomId}/redact/{eventId}/{txnId}`` over real HTTP, in every room version."""

from __future__ import annotations

import json
from urllib.parse import quote

from tests.api.client.test_room_moderation import RoomsTestCase


class RedactionTests(RoomsTestCase):
    async def room_with_bob(self, **extra) -> str:
        room_id = await self.create({"preset": "public_chat", **extra})
        await self.ok("POST", f"/rooms/{room_id}/join", {}, self.bob)
        return room_id

    async def get_event(self, room_id: str, event_id: str, who=None) -> dict:
        return await self.ok("GET", f"/rooms/{room_id}/event/{quote(event_id, safe='')}", who=who)

    async def test_redact_own_message(self):
        room_id = await self.room_with_bob()
        target = await self.send(room_id, "oops, my password is hunter2", self.bob)
        resp = await self.ok("PUT", f"/rooms/{room_id}/redact/{quote(target, safe='')}/r1", {"reason": "Indecent material"}, self.bob)
        redaction_id = resp["event_id"]
        event = await self.get_event(room_id, target)
        self.assertEqual(event["content"], {})
        because = event["unsigned"]["redacted_because"]
        self.assertEqual(because["event_id"], redaction_id)
        self.assertEqual(because["type"], "m.room.redaction")
        self.assertEqual(because["content"]["reason"], "Indecent material")
        self.assertEqual(because["sender"], self.bob["user_id"])
        # The redaction itself is in the timeline, naming its target.
        redaction = await self.get_event(room_id, redaction_id)
        self.assertEqual(redaction["redacts"], target)
        # The content is gone from the database, not only hidden.
        stored = await self.hs.storage.events.get_event(target)
        self.assertNotIn("hunter2", json.dumps(stored.json))
        # And /messages shows the redacted form too.
        resp = await self.ok("GET", f"/rooms/{room_id}/messages?dir=b&limit=10")
        shown = next(e for e in resp["chunk"] if e["event_id"] == target)
        self.assertEqual(shown["content"], {})
        self.assertEqual(shown["unsigned"]["redacted_because"]["event_id"], redaction_id)

    async def test_every_room_version(self):
        for version in [str(n) for n in range(1, 13)]:
            room_id = await self.room_with_bob(room_version=version)
            target = await self.send(room_id, f"in v{version}", self.bob)
            resp = await self.ok("PUT", f"/rooms/{room_id}/redact/{quote(target, safe='')}/v{version}", {"reason": "bye"})
            event = await self.get_event(room_id, target, self.bob)
            self.assertEqual(event["content"], {}, version)
            self.assertEqual(event["unsigned"]["redacted_because"]["event_id"], resp["event_id"], version)
            redaction = await self.get_event(room_id, resp["event_id"])
            self.assertEqual(redaction["redacts"], target, version)
            if int(version) >= 11:
                self.assertEqual(redaction["content"]["redacts"], target, version)

    async def test_state_event_keeps_protected_keys(self):
        room_id = await self.create({"preset": "public_chat", "room_version": "11"})
        await self.ok("POST", f"/rooms/{room_id}/join", {}, self.bob)
        event_id = (await self.ok("PUT", f"/rooms/{room_id}/state/m.room.join_rules/",
                                  {"join_rule": "public", "extra": "dropped"}))["event_id"]
        await self.ok("PUT", f"/rooms/{room_id}/redact/{quote(event_id, safe='')}/jr", {})
        event = await self.get_event(room_id, event_id)
        self.assertEqual(event["content"], {"join_rule": "public"})
        # A redacted join rule still rules: Bob can still leave and come back.
        await self.ok("POST", f"/rooms/{room_id}/leave", {}, self.bob)
        await self.ok("POST", f"/rooms/{room_id}/join", {}, self.bob)

    async def test_txn_is_idempotent(self):
        room_id = await self.room_with_bob()
        target = await self.send(room_id, "x", self.bob)
        first = await self.ok("PUT", f"/rooms/{room_id}/redact/{quote(target, safe='')}/same", {}, self.bob)
        again = await self.ok("PUT", f"/rooms/{room_id}/redact/{quote(target, safe='')}/same", {}, self.bob)
        self.assertEqual(first, again)
        resp = await self.ok("GET", f"/rooms/{room_id}/messages?dir=b&limit=50")
        self.assertEqual(sum(1 for e in resp["chunk"] if e["type"] == "m.room.redaction"), 1)
        mine = next(e for e in (await self.ok("GET", f"/rooms/{room_id}/messages?dir=b&limit=50", who=self.bob))["chunk"]
                    if e["type"] == "m.room.redaction")
        self.assertEqual(mine["unsigned"]["transaction_id"], "same")
        # The same transaction ID from another device is another request.
        other_device = await self.hs.components.sessions.create_session(self.bob["user_id"], None)
        other = await self.ok("PUT", f"/rooms/{room_id}/redact/{quote(target, safe='')}/same", {}, other_device)
        self.assertNotEqual(other["event_id"], first["event_id"])

    async def test_moderator_redacts_others(self):
        room_id = await self.room_with_bob()
        target = await self.send(room_id, "spam", self.bob)
        await self.ok("PUT", f"/rooms/{room_id}/redact/{quote(target, safe='')}/mod", {"reason": "spam"})
        self.assertEqual((await self.get_event(room_id, target))["content"], {})

    async def test_redacting_others_needs_redact_power(self):
        room_id = await self.room_with_bob()
        target = await self.send(room_id, "alice's words")
        await self.refused(403, "M_FORBIDDEN", "PUT", f"/rooms/{room_id}/redact/{quote(target, safe='')}/t", {}, self.bob)
        self.assertEqual((await self.get_event(room_id, target))["content"]["body"], "alice's words")

    async def test_redaction_power_level(self):
        """Sending a redaction at all needs the m.room.redaction event level."""
        room_id = await self.room_with_bob(power_level_content_override={"events": {"m.room.redaction": 50}})
        target = await self.send(room_id, "mine", self.bob)
        await self.refused(403, "M_FORBIDDEN", "PUT", f"/rooms/{room_id}/redact/{quote(target, safe='')}/t", {}, self.bob)

    async def test_unknown_event_and_room(self):
        room_id = await self.room_with_bob()
        await self.refused(404, "M_NOT_FOUND", "PUT", f"/rooms/{room_id}/redact/$nope/t", {})
        await self.refused(404, "M_NOT_FOUND", "PUT", "/rooms/!nope:test.local/redact/$nope/t", {})
        # An event of another room is unknown in this one.
        other = await self.create()
        elsewhere = await self.send(other, "elsewhere")
        await self.refused(404, "M_NOT_FOUND", "PUT", f"/rooms/{room_id}/redact/{quote(elsewhere, safe='')}/t2", {})

    async def test_non_member_gets_403_not_404(self):
        room_id = await self.create({"preset": "private_chat"})
        target = await self.send(room_id, "private")
        await self.refused(403, "M_FORBIDDEN", "PUT", f"/rooms/{room_id}/redact/{quote(target, safe='')}/t", {}, self.carol)
        await self.refused(403, "M_FORBIDDEN", "PUT", f"/rooms/{room_id}/redact/$nope/t", {}, self.carol)

    async def test_bad_requests(self):
        room_id = await self.room_with_bob()
        target = await self.send(room_id, "x", self.bob)
        await self.refused(400, "M_BAD_JSON", "PUT", f"/rooms/{room_id}/redact/{quote(target, safe='')}/a", {"reason": 1}, self.bob)
        await self.refused(400, "M_BAD_JSON", "PUT", f"/rooms/{room_id}/redact/{quote(target, safe='')}/b", raw=b"[1]", who=self.bob)
        await self.refused(400, "M_NOT_JSON", "PUT", f"/rooms/{room_id}/redact/{quote(target, safe='')}/c", raw=b"{", who=self.bob)
        await self.refused(401, "M_MISSING_TOKEN", "PUT", f"/rooms/{room_id}/redact/{quote(target, safe='')}/d", {}, token=None)
        # An empty body is a redaction without a reason.
        await self.ok("PUT", f"/rooms/{room_id}/redact/{quote(target, safe='')}/e", raw=b"", who=self.bob)

    async def test_client_cannot_choose_redacts(self):
        room_id = await self.room_with_bob(room_version="11")
        target = await self.send(room_id, "target", self.bob)
        decoy = await self.send(room_id, "decoy", self.bob)
        resp = await self.ok("PUT", f"/rooms/{room_id}/redact/{quote(target, safe='')}/t", {"redacts": decoy}, self.bob)
        redaction = await self.get_event(room_id, resp["event_id"])
        self.assertEqual(redaction["content"]["redacts"], target)
        self.assertEqual((await self.get_event(room_id, decoy))["content"]["body"], "decoy")
