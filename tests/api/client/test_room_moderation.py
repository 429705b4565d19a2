"""Kick, ban, unban, forget, knock and restricted joins over real HTTP, with every refusal.

Responses are checked against the spec's OpenAPI (when the bundle is present)
by :class:`RoomsTestCase`, which the other room test modules share.
"""

from __future__ import annotations

from typing import Any, Optional

from twisted.trial.unittest import TestCase

from mxtwisted.http.errors import MatrixError
from tests.support.homeserver import RunningHomeserver, start_homeserver
from tests.support.spec import spec_problems as _spec_problems

V3 = "/_matrix/client/v3"
V1 = "/_matrix/client/v1"

def spec_problems(method: str, path: str, status: int, body: Any) -> list[str]:
    """What the spec's OpenAPI says is wrong with a response.

    Error statuses an operation does not document are not counted (the spec lists only some).
    """
    problems = _spec_problems(method, path, status, body)
    if status >= 400:
        problems = [p for p in problems if "is not documented" not in p]
    return problems


class RoomsTestCase(TestCase):
    """A homeserver with alice, bob and carol, and request helpers that check the spec."""

    hs: RunningHomeserver
    config: dict[str, Any] = {}

    async def setUp(self) -> None:
        overrides = {"bcrypt_rounds": 4, "rc_message": {"per_second": 1000, "burst_count": 1000}}
        overrides.update(self.config)
        self.hs = await start_homeserver(self, **overrides)
        self.alice = await self.hs.register_user("alice")
        self.bob = await self.hs.register_user("bob")
        self.carol = await self.hs.register_user("carol")

    async def req(self, method: str, path: str, body: Any = None, who: Optional[dict] = None, *,
                  raw: Optional[bytes] = None, prefix: str = V3, token: Any = "default",
                  spec: bool = True) -> tuple[int, Any]:
        if token == "default":
            token = (who or self.alice)["access_token"]
        code, resp = await self.hs.request(method, prefix + path, body, token=token, raw=raw)
        if spec:
            problems = spec_problems(method, prefix + path, code, resp)
            self.assertEqual(problems, [], (method, path, code, resp))
        return code, resp

    async def ok(self, method: str, path: str, body: Any = None, who: Optional[dict] = None, **kw: Any) -> Any:
        code, resp = await self.req(method, path, body, who, **kw)
        self.assertEqual(code, 200, (method, path, resp))
        return resp

    async def refused(self, status: int, errcode: str, method: str, path: str, body: Any = None,
                      who: Optional[dict] = None, **kw: Any) -> Any:
        code, resp = await self.req(method, path, body, who, **kw)
        self.assertEqual((code, (resp or {}).get("errcode")), (status, errcode), (method, path, resp))
        return resp

    async def create(self, body: Optional[dict] = None, who: Optional[dict] = None) -> str:
        return (await self.ok("POST", "/createRoom", body or {}, who))["room_id"]

    async def send(self, room_id: str, body: str, who: Optional[dict] = None, txn: Optional[str] = None) -> str:
        self._txn = getattr(self, "_txn", 0) + 1
        path = f"/rooms/{room_id}/send/m.room.message/{txn or f't{self._txn}'}"
        return (await self.ok("PUT", path, {"msgtype": "m.text", "body": body}, who))["event_id"]

    async def membership(self, room_id: str, user: dict) -> Optional[str]:
        code, resp = await self.req("GET", f"/rooms/{room_id}/state/m.room.member/{user['user_id']}")
        return resp.get("membership") if code == 200 else None

    async def member_event(self, room_id: str, user: dict) -> dict:
        # (?format=event is not in the spec's schema of this response: not checked against it)
        return await self.ok("GET", f"/rooms/{room_id}/state/m.room.member/{user['user_id']}?format=event", spec=False)


class KickBanTests(RoomsTestCase):
    async def public_room_with_bob(self, **extra: Any) -> str:
        room_id = await self.create({"preset": "public_chat", **extra})
        await self.ok("POST", f"/rooms/{room_id}/join", {}, self.bob)
        return room_id

    async def test_kick_with_reason(self):
        room_id = await self.public_room_with_bob()
        self.assertEqual(await self.ok("POST", f"/rooms/{room_id}/kick",
                                       {"user_id": self.bob["user_id"], "reason": "Telling unfunny jokes"}), {})
        event = await self.member_event(room_id, self.bob)
        self.assertEqual(event["content"]["membership"], "leave")
        self.assertEqual(event["content"]["reason"], "Telling unfunny jokes")
        self.assertEqual(event["sender"], self.alice["user_id"])
        # Kicked from a public room: free to come back.
        await self.ok("POST", f"/rooms/{room_id}/join", {}, self.bob)

    async def test_kick_needs_power(self):
        room_id = await self.public_room_with_bob()
        await self.ok("POST", f"/rooms/{room_id}/join", {}, self.carol)
        await self.refused(403, "M_FORBIDDEN", "POST", f"/rooms/{room_id}/kick", {"user_id": self.carol["user_id"]}, self.bob)
        # Nor can a moderator kick someone at their own level or above.
        await self.refused(403, "M_FORBIDDEN", "POST", f"/rooms/{room_id}/kick", {"user_id": self.alice["user_id"]}, self.bob)
        self.assertEqual(await self.membership(room_id, self.carol), "join")

    async def test_kick_someone_not_in_the_room(self):
        room_id = await self.public_room_with_bob()
        await self.refused(403, "M_FORBIDDEN", "POST", f"/rooms/{room_id}/kick", {"user_id": self.carol["user_id"]})

    async def test_kick_retracts_a_knock_and_rejects_an_invite(self):
        room_id = await self.create({"preset": "private_chat"})
        await self.ok("POST", f"/rooms/{room_id}/invite", {"user_id": self.bob["user_id"]})
        await self.ok("POST", f"/rooms/{room_id}/kick", {"user_id": self.bob["user_id"]})
        self.assertEqual(await self.membership(room_id, self.bob), "leave")

    async def test_ban_and_unban(self):
        room_id = await self.public_room_with_bob()
        self.assertEqual(await self.ok("POST", f"/rooms/{room_id}/ban", {"user_id": self.bob["user_id"], "reason": "spam"}), {})
        event = await self.member_event(room_id, self.bob)
        self.assertEqual((event["content"]["membership"], event["content"]["reason"]), ("ban", "spam"))
        await self.refused(403, "M_FORBIDDEN", "POST", f"/rooms/{room_id}/join", {}, self.bob)
        await self.refused(403, "M_FORBIDDEN", "POST", f"/rooms/{room_id}/invite", {"user_id": self.bob["user_id"]})
        self.assertEqual(await self.ok("POST", f"/rooms/{room_id}/unban",
                                       {"user_id": self.bob["user_id"], "reason": "served their time"}), {})
        event = await self.member_event(room_id, self.bob)
        self.assertEqual((event["content"]["membership"], event["content"]["reason"]), ("leave", "served their time"))
        await self.ok("POST", f"/rooms/{room_id}/join", {}, self.bob)

    async def test_ban_someone_who_never_joined(self):
        room_id = await self.create({"preset": "public_chat"})
        await self.ok("POST", f"/rooms/{room_id}/ban", {"user_id": self.carol["user_id"]})
        await self.refused(403, "M_FORBIDDEN", "POST", f"/rooms/{room_id}/join", {}, self.carol)

    async def test_ban_and_unban_need_power(self):
        room_id = await self.public_room_with_bob()
        await self.ok("POST", f"/rooms/{room_id}/join", {}, self.carol)
        await self.refused(403, "M_FORBIDDEN", "POST", f"/rooms/{room_id}/ban", {"user_id": self.carol["user_id"]}, self.bob)
        await self.ok("POST", f"/rooms/{room_id}/ban", {"user_id": self.carol["user_id"]})
        await self.refused(403, "M_FORBIDDEN", "POST", f"/rooms/{room_id}/unban", {"user_id": self.carol["user_id"]}, self.bob)
        self.assertEqual(await self.membership(room_id, self.carol), "ban")

    async def test_unban_someone_not_banned(self):
        room_id = await self.public_room_with_bob()
        await self.refused(403, "M_BAD_STATE", "POST", f"/rooms/{room_id}/unban", {"user_id": self.bob["user_id"]})

    async def test_moderator_power_from_power_levels(self):
        room_id = await self.public_room_with_bob(power_level_content_override={"users": {self.bob["user_id"]: 50}})
        await self.ok("POST", f"/rooms/{room_id}/join", {}, self.carol)
        await self.ok("POST", f"/rooms/{room_id}/kick", {"user_id": self.carol["user_id"]}, self.bob)
        await self.ok("POST", f"/rooms/{room_id}/ban", {"user_id": self.carol["user_id"]}, self.bob)

    async def test_bad_requests(self):
        room_id = await self.public_room_with_bob()
        for path in ("kick", "ban", "unban"):
            await self.refused(400, "M_MISSING_PARAM", "POST", f"/rooms/{room_id}/{path}", {})
            await self.refused(400, "M_BAD_JSON", "POST", f"/rooms/{room_id}/{path}", {"user_id": 7})
            await self.refused(400, "M_BAD_JSON", "POST", f"/rooms/{room_id}/{path}",
                               {"user_id": self.bob["user_id"], "reason": ["no"]})
            await self.refused(400, "M_BAD_JSON", "POST", f"/rooms/{room_id}/{path}", raw=b"[]")
            await self.refused(400, "M_NOT_JSON", "POST", f"/rooms/{room_id}/{path}", raw=b"{nope")
            await self.refused(400, "M_INVALID_PARAM", "POST", f"/rooms/{room_id}/{path}", {"user_id": "bob"})
            await self.refused(404, "M_NOT_FOUND", "POST", f"/rooms/!nope:test.local/{path}", {"user_id": self.bob["user_id"]})
            await self.refused(401, "M_MISSING_TOKEN", "POST", f"/rooms/{room_id}/{path}",
                               {"user_id": self.bob["user_id"]}, token=None)

    async def test_state_api_cannot_forge_restricted_join_authorisation(self):
        """``join_authorised_via_users_server`` is the server's to set: a client-supplied one is dropped."""
        room_id = await self.create({"room_version": "10", "initial_state": [{
            "type": "m.room.join_rules", "state_key": "",
            "content": {"join_rule": "restricted", "allow": []}}]})
        await self.refused(403, "M_FORBIDDEN", "PUT", f"/rooms/{room_id}/state/m.room.member/{self.bob['user_id']}",
                           {"membership": "join", "join_authorised_via_users_server": self.alice["user_id"]}, self.bob)


class ForgetTests(RoomsTestCase):
    async def test_forget_after_leaving(self):
        room_id = await self.create({"preset": "public_chat"})
        await self.ok("POST", f"/rooms/{room_id}/join", {}, self.bob)
        await self.refused(400, "M_UNKNOWN", "POST", f"/rooms/{room_id}/forget", {}, self.bob)
        await self.ok("POST", f"/rooms/{room_id}/leave", {}, self.bob)
        await self.ok("GET", f"/rooms/{room_id}/messages", who=self.bob)  # left, not yet forgotten: readable
        self.assertEqual(await self.ok("POST", f"/rooms/{room_id}/forget", {}, self.bob), {})
        self.assertTrue(await self.hs.storage.events.is_forgotten(self.bob["user_id"], room_id))
        # A forgotten room's history is no longer readable.
        await self.refused(403, "M_FORBIDDEN", "GET", f"/rooms/{room_id}/messages", who=self.bob)
        await self.refused(403, "M_FORBIDDEN", "GET", f"/rooms/{room_id}/state", who=self.bob)
        # Joining again un-forgets the room.
        await self.ok("POST", f"/rooms/{room_id}/join", {}, self.bob)
        self.assertFalse(await self.hs.storage.events.is_forgotten(self.bob["user_id"], room_id))

    async def test_forget_after_ban_and_without_body(self):
        room_id = await self.create({"preset": "public_chat"})
        await self.ok("POST", f"/rooms/{room_id}/join", {}, self.bob)
        await self.ok("POST", f"/rooms/{room_id}/ban", {"user_id": self.bob["user_id"]})
        await self.ok("POST", f"/rooms/{room_id}/forget", None, self.bob)

    async def test_forget_while_invited_or_joined(self):
        room_id = await self.create({"preset": "private_chat"})
        await self.ok("POST", f"/rooms/{room_id}/invite", {"user_id": self.bob["user_id"]})
        await self.refused(400, "M_UNKNOWN", "POST", f"/rooms/{room_id}/forget", {}, self.bob)
        await self.refused(400, "M_UNKNOWN", "POST", f"/rooms/{room_id}/forget", {})

    async def test_forget_unknown_room(self):
        await self.refused(404, "M_NOT_FOUND", "POST", "/rooms/!nope:test.local/forget", {})


class KnockTests(RoomsTestCase):
    async def knock_room(self, version: str = "10", join_rule: str = "knock", **extra: Any) -> str:
        return await self.create({"room_version": version, "room_alias_name": extra.pop("alias", None) or "knockers",
                                  "initial_state": [{"type": "m.room.join_rules", "state_key": "",
                                                     "content": {"join_rule": join_rule, **extra}}]})

    async def test_knock_then_invite_then_join(self):
        room_id = await self.knock_room()
        resp = await self.ok("POST", f"/knock/{room_id}", {"reason": "Looking for support"}, self.bob)
        self.assertEqual(resp, {"room_id": room_id})
        event = await self.member_event(room_id, self.bob)
        self.assertEqual((event["content"]["membership"], event["content"]["reason"]), ("knock", "Looking for support"))
        # Knocking again, or joining without an invite, is refused.
        await self.refused(403, "M_FORBIDDEN", "POST", f"/rooms/{room_id}/join", {}, self.bob)
        await self.ok("POST", f"/rooms/{room_id}/invite", {"user_id": self.bob["user_id"]})
        await self.ok("POST", f"/rooms/{room_id}/join", {}, self.bob)

    async def test_knock_by_alias(self):
        room_id = await self.knock_room(alias="door")
        resp = await self.ok("POST", "/knock/%23door:test.local?via=test.local", {}, self.bob)
        self.assertEqual(resp, {"room_id": room_id})
        await self.refused(404, "M_NOT_FOUND", "POST", "/knock/%23nowhere:test.local", {}, self.bob)
        # A remote alias is asked of its server (here one that does not know it; no network in this test).
        asked: list[str] = []

        async def unknown_alias(alias: str) -> Any:
            asked.append(alias)
            raise MatrixError(404, "M_NOT_FOUND", "Room alias not found")

        self.patch(self.hs.components.remote_join, "resolve_alias", unknown_alias)
        await self.refused(404, "M_NOT_FOUND", "POST", "/knock/%23door:elsewhere.example", {}, self.bob)
        self.assertEqual(asked, ["#door:elsewhere.example"])
        await self.refused(404, "M_NOT_FOUND", "POST", "/knock/!nope:test.local", {}, self.bob)
        await self.refused(400, "M_INVALID_PARAM", "POST", "/knock/door", {}, self.bob)

    async def test_knock_can_be_denied_or_retracted(self):
        room_id = await self.knock_room()
        await self.ok("POST", f"/knock/{room_id}", {}, self.bob)
        await self.ok("POST", f"/rooms/{room_id}/kick", {"user_id": self.bob["user_id"], "reason": "no thanks"})
        self.assertEqual(await self.membership(room_id, self.bob), "leave")
        await self.ok("POST", f"/knock/{room_id}", {}, self.bob)
        await self.ok("POST", f"/rooms/{room_id}/leave", {}, self.bob)
        self.assertEqual(await self.membership(room_id, self.bob), "leave")

    async def test_knock_refused_when_the_join_rule_does_not_allow(self):
        public = await self.create({"preset": "public_chat", "room_version": "10"})
        await self.refused(403, "M_FORBIDDEN", "POST", f"/knock/{public}", {}, self.bob)
        invite_only = await self.create({"preset": "private_chat", "room_version": "10"})
        await self.refused(403, "M_FORBIDDEN", "POST", f"/knock/{invite_only}", {}, self.bob)
        # Room versions before 7 have no knocking at all.
        old = await self.create({"preset": "private_chat", "room_version": "6"})
        await self.refused(403, "M_FORBIDDEN", "POST", f"/knock/{old}", {}, self.bob)
        # Members, invitees and banned users cannot knock.
        knock = await self.knock_room()
        await self.refused(403, "M_FORBIDDEN", "POST", f"/knock/{knock}", {})
        await self.ok("POST", f"/rooms/{knock}/ban", {"user_id": self.carol["user_id"]})
        await self.refused(403, "M_FORBIDDEN", "POST", f"/knock/{knock}", {}, self.carol)

    async def test_knock_restricted_allows_knocking(self):
        room_id = await self.knock_room(join_rule="knock_restricted", allow=[])
        await self.ok("POST", f"/knock/{room_id}", {}, self.bob)

    async def test_bad_bodies(self):
        room_id = await self.knock_room()
        await self.refused(400, "M_BAD_JSON", "POST", f"/knock/{room_id}", {"reason": 3}, self.bob)
        await self.refused(400, "M_BAD_JSON", "POST", f"/knock/{room_id}", raw=b"[]", who=self.bob)


class RestrictedJoinTests(RoomsTestCase):
    async def restricted_room(self, version: str = "10", join_rule: str = "restricted", allow: Any = None,
                              space: Optional[str] = None, **extra: Any) -> str:
        if allow is None:
            allow = [{"type": "m.room_membership", "room_id": space}]
        return await self.create({"room_version": version, **extra, "initial_state": [{
            "type": "m.room.join_rules", "state_key": "", "content": {"join_rule": join_rule, "allow": allow}}]})

    async def test_member_of_an_allowed_room_may_join(self):
        for version, rule in (("8", "restricted"), ("9", "restricted"), ("10", "restricted"),
                              ("10", "knock_restricted"), ("11", "restricted"), ("12", "knock_restricted")):
            space = await self.create({"preset": "public_chat", "room_version": version})
            room_id = await self.restricted_room(version, rule, space=space)
            await self.refused(403, "M_FORBIDDEN", "POST", f"/rooms/{room_id}/join", {}, self.bob)
            await self.ok("POST", f"/rooms/{space}/join", {}, self.bob)
            await self.ok("POST", f"/rooms/{room_id}/join", {"reason": "via the space"}, self.bob)
            event = await self.member_event(room_id, self.bob)
            self.assertEqual(event["content"]["membership"], "join", (version, rule))
            self.assertEqual(event["content"]["join_authorised_via_users_server"], self.alice["user_id"], (version, rule))
            self.assertEqual(event["content"]["reason"], "via the space")

    async def test_authoriser_needs_invite_power(self):
        space = await self.create({"preset": "public_chat"})
        room_id = await self.restricted_room(
            "10", space=space, power_level_content_override={"invite": 50, "users": {self.alice["user_id"]: 100}})
        await self.ok("POST", f"/rooms/{space}/join", {}, self.bob)
        await self.ok("POST", f"/rooms/{space}/join", {}, self.carol)
        await self.ok("POST", f"/rooms/{room_id}/join", {}, self.bob)
        # Alice (the only one who may invite) leaves: nobody here can authorise Carol's join.
        await self.ok("POST", f"/rooms/{room_id}/leave", {})
        await self.refused(400, "M_UNABLE_TO_GRANT_JOIN", "POST", f"/rooms/{room_id}/join", {}, self.carol)

    async def test_invited_users_join_without_conditions(self):
        room_id = await self.restricted_room("10", allow=[])
        await self.ok("POST", f"/rooms/{room_id}/invite", {"user_id": self.bob["user_id"]})
        await self.ok("POST", f"/rooms/{room_id}/join", {}, self.bob)
        event = await self.member_event(room_id, self.bob)
        self.assertNotIn("join_authorised_via_users_server", event["content"])

    async def test_malformed_allow_lets_nobody_in(self):
        space = await self.create({"preset": "public_chat"})
        await self.ok("POST", f"/rooms/{space}/join", {}, self.bob)
        for allow in ("nope", [{"type": "m.other", "room_id": space}], [{"type": "m.room_membership"}]):
            room_id = await self.restricted_room("10", allow=allow)
            await self.refused(403, "M_FORBIDDEN", "POST", f"/rooms/{room_id}/join", {}, self.bob)

    async def test_restricted_rule_in_an_old_room_version_is_invite(self):
        space = await self.create({"preset": "public_chat", "room_version": "7"})
        await self.ok("POST", f"/rooms/{space}/join", {}, self.bob)
        room_id = await self.restricted_room("7", space=space)
        await self.refused(403, "M_FORBIDDEN", "POST", f"/rooms/{room_id}/join", {}, self.bob)
