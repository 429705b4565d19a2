"""Spam checkers and room policies loaded through ``modules:``, over real HTTP.

Uses the first-party module ``mxhs_spam_patterns`` (``modules/mxhs_spam_patterns``):
CI installs it into the venv (``.ci/run``); when it is not installed, its
source directory is put on ``sys.path`` so this test still runs from a bare
checkout. The other modules here are small test doubles that exercise each
hook, modules answering through Deferreds and coroutines, and modules that
fail (which must refuse the action, never crash the request).
"""

from __future__ import annotations

import os
import sys

from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase, TestCase

from mxtwisted.config import ModuleConfig
from mxtwisted.http.errors import MatrixError
from mxtwisted.interfaces import IRoomPolicy, ISpamChecker, Refusal, RoomPolicyBase, SpamCheckerBase
from mxtwisted.modules import ModuleLoadError, load_modules
from tests.support.homeserver import start_homeserver

try:
    import mxhs_spam_patterns  # noqa: F401
except ImportError:  # not installed: use the module's source tree
    # Appended, not prepended: the module's own ``tests`` package must never shadow ours (trial -j passes
    # this process's sys.path to its workers).
    sys.path.append(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "modules", "mxhs_spam_patterns"))

V3 = "/_matrix/client/v3"
SPAM_PATTERNS = {
    "module": "mxhs_spam_patterns.SpamPatterns",
    "config": {"patterns": [r"buy cheap \w+", r"bit\.ly/"], "message": "No spam, please"},
}


class Gatekeeper(SpamCheckerBase):
    """Refuses what its config names; answers through coroutines and Deferreds; records what it was asked."""

    def __init__(self, config, api):
        self.config = config
        self.asked: list[tuple] = []

    async def user_may_create_room(self, user_id):
        self.asked.append(("create", user_id))
        return Refusal("M_FORBIDDEN", "No rooms for you") if user_id in self.config.get("no_create", []) else None

    def user_may_invite(self, inviter, invitee, room_id):
        self.asked.append(("invite", inviter, invitee))
        refused = invitee in self.config.get("no_invite", [])
        return defer.succeed(Refusal("M_FORBIDDEN", "Not that one") if refused else None)

    async def user_may_join_room(self, user_id, room_id, is_invited):
        self.asked.append(("join", user_id, is_invited))
        return Refusal("M_FORBIDDEN", "Stay out") if user_id in self.config.get("no_join", []) else None

    def user_may_publish_room(self, user_id, room_id):
        self.asked.append(("publish", user_id))
        return Refusal("M_FORBIDDEN", "Keep it private") if user_id in self.config.get("no_publish", []) else None

    def check_media_file_for_spam(self, user_id, file_info):
        return Refusal("M_FORBIDDEN", "No GIFs") if file_info.get("content_type") == "image/gif" else None


class Exploding(SpamCheckerBase):
    """Every check raises."""

    def __init__(self, config, api):
        pass

    def _boom(self, *args):
        raise RuntimeError("spam checker bug")

    check_event_for_spam = user_may_create_room = user_may_invite = user_may_join_room = _boom
    user_may_publish_room = check_media_file_for_spam = _boom


class Confused(SpamCheckerBase):
    """Answers with something that is neither None nor a Refusal."""

    def __init__(self, config, api):
        pass

    def check_event_for_spam(self, event):
        return "NOT_SPAM?"


class Policy(RoomPolicyBase):
    """A room policy: manages new rooms' topics, forbids an event type, records what it sees."""

    def __init__(self, config, api):
        self.seen_events: list[str] = []
        self.seen_state_keys: list[set] = []

    def on_create_room(self, user_id, request_body, is_public):
        if request_body.get("name") == "forbidden":
            return Refusal("M_FORBIDDEN", "Not that name")
        request_body["topic"] = f"Managed for {user_id} ({'public' if is_public else 'private'})"
        return request_body

    async def check_event_allowed(self, event, state_events):
        self.seen_state_keys.append(set(state_events))
        if event["type"] == "com.example.forbidden":
            return Refusal("M_FORBIDDEN", "That event type is not allowed here")
        return None

    def on_new_event(self, event):
        self.seen_events.append(event["event_id"])


class BrokenPolicy(RoomPolicyBase):
    def __init__(self, config, api):
        pass

    def on_create_room(self, user_id, request_body, is_public):
        return ["not", "a", "body"]

    def on_new_event(self, event):
        raise RuntimeError("policy bug")


def module(name, **config):
    return {"module": f"tests.test_spam_checker.{name}", "config": config}


class SpamCheckerCase(TestCase):
    modules: list = []

    async def setUp(self):
        self.hs = await start_homeserver(self, bcrypt_rounds=4, modules=self.modules,
                                         rc_message={"per_second": 1000, "burst_count": 1000})
        self.alice = await self.hs.register_user("alice")
        self.bob = await self.hs.register_user("bob")
        self.carol = await self.hs.register_user("carol")

    def instance(self, cls):
        return next(m.instance for m in self.hs.service.modules if isinstance(m.instance, cls))

    async def req(self, method, path, body=None, who=None):
        return await self.hs.request(method, V3 + path, body, token=(who or self.alice)["access_token"])

    async def create(self, body=None, who=None):
        code, resp = await self.req("POST", "/createRoom", body or {}, who)
        self.assertEqual(code, 200, resp)
        return resp["room_id"]

    async def send(self, room_id, body, txn, who=None):
        return await self.req("PUT", f"/rooms/{room_id}/send/m.room.message/{txn}", {"msgtype": "m.text", "body": body}, who)

    async def bodies(self, room_id):
        _, resp = await self.req("GET", f"/rooms/{room_id}/messages?dir=b&limit=50")
        return [e["content"].get("body") for e in resp["chunk"] if e["type"] == "m.room.message"]


class SpamPatternsModuleTests(SpamCheckerCase):
    modules = [SPAM_PATTERNS]

    async def test_matching_messages_are_refused(self):
        room_id = await self.create()
        code, resp = await self.send(room_id, "Buy cheap watches here", "t1")
        self.assertEqual((code, resp), (403, {"errcode": "M_FORBIDDEN", "error": "No spam, please"}))
        code, resp = await self.send(room_id, "see https://bit.ly/abc", "t2")
        self.assertEqual(code, 403)
        code, resp = await self.send(room_id, "a perfectly fine message", "t3")
        self.assertEqual(code, 200, resp)
        self.assertEqual(await self.bodies(room_id), ["a perfectly fine message"])

    async def test_other_event_types_and_edits(self):
        room_id = await self.create({"topic": "buy cheap topics"})  # topics are not checked (event_types)
        code, resp = await self.req("PUT", f"/rooms/{room_id}/send/m.room.message/e1", {
            "msgtype": "m.text", "body": "* fixed",
            "m.new_content": {"msgtype": "m.text", "body": "buy cheap stuff"},
        })
        self.assertEqual(code, 403, resp)

    async def test_the_module_is_loaded_and_verified(self):
        from mxhs_spam_patterns import SpamPatterns

        loaded = self.hs.service.modules[0]
        self.assertIsInstance(loaded.instance, SpamPatterns)
        self.assertEqual(loaded.provides, [ISpamChecker])


class SpamCheckerHookTests(SpamCheckerCase):
    modules = [module("Gatekeeper", no_create=["@carol:test.local"], no_invite=["@carol:test.local"],
                      no_join=["@carol:test.local"], no_publish=["@bob:test.local"])]

    async def test_create_room(self):
        code, resp = await self.req("POST", "/createRoom", {}, self.carol)
        self.assertEqual((code, resp), (403, {"errcode": "M_FORBIDDEN", "error": "No rooms for you"}))
        await self.create(who=self.bob)
        gate = self.instance(Gatekeeper)
        self.assertIn(("create", "@bob:test.local"), gate.asked)
        # The creator's own first join is not asked about: creating the room was.
        self.assertNotIn(("join", "@bob:test.local", False), gate.asked)

    async def test_invite_and_join(self):
        room_id = await self.create({"preset": "public_chat"})
        code, resp = await self.req("POST", f"/rooms/{room_id}/invite", {"user_id": "@carol:test.local"})
        self.assertEqual((code, resp["error"]), (403, "Not that one"))
        code, resp = await self.req("POST", f"/rooms/{room_id}/join", {}, self.carol)
        self.assertEqual((code, resp["error"]), (403, "Stay out"))
        code, resp = await self.req("POST", f"/rooms/{room_id}/invite", {"user_id": self.bob["user_id"]})
        self.assertEqual(code, 200, resp)
        code, resp = await self.req("POST", f"/rooms/{room_id}/join", {}, self.bob)
        self.assertEqual(code, 200, resp)
        gate = self.instance(Gatekeeper)
        self.assertIn(("join", "@bob:test.local", True), gate.asked)
        _, members = await self.req("GET", f"/rooms/{room_id}/joined_members")
        self.assertNotIn("@carol:test.local", members["joined"])

    async def test_publish(self):
        room_id = await self.create({"preset": "public_chat"})
        await self.req("POST", f"/rooms/{room_id}/join", {}, self.bob)
        code, resp = await self.req("PUT", f"/directory/list/room/{room_id}", {"visibility": "public"}, self.bob)
        self.assertEqual((code, resp["error"]), (403, "Keep it private"))
        code, resp = await self.req("PUT", f"/directory/list/room/{room_id}", {"visibility": "public"})
        self.assertEqual(code, 200, resp)

    async def test_media_check_for_the_media_repository(self):
        policies = self.hs.components.policies
        await policies.check_media_file("@alice:test.local", {"media_id": "a", "content_type": "image/png"})
        with self.assertRaises(MatrixError) as ctx:
            await policies.check_media_file("@alice:test.local", {"media_id": "b", "content_type": "image/gif"})
        self.assertEqual((ctx.exception.status, ctx.exception.errcode), (403, "M_FORBIDDEN"))


class FailingSpamCheckerTests(SpamCheckerCase):
    modules = [module("Exploding")]

    async def test_a_failing_module_refuses_and_is_logged(self):
        code, resp = await self.req("POST", "/createRoom", {})
        self.assertEqual((code, resp["errcode"]), (403, "M_FORBIDDEN"))
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        with self.assertRaises(MatrixError):
            await self.hs.components.policies.user_may_publish_room("@alice:test.local", "!r:test.local")
        self.flushLoggedErrors(RuntimeError)
        # The server is fine: requests that ask no module still work.
        code, resp = await self.req("GET", "/joined_rooms")
        self.assertEqual((code, resp), (200, {"joined_rooms": []}))


class ConfusedSpamCheckerTests(SpamCheckerCase):
    modules = [module("Confused")]

    async def test_an_unexpected_answer_refuses(self):
        code, resp = await self.req("POST", "/createRoom", {})
        # createRoom sends state events (checked), the first of them is refused.
        self.assertEqual((code, resp["errcode"]), (403, "M_FORBIDDEN"))


class RoomPolicyTests(SpamCheckerCase):
    modules = [module("Policy"), SPAM_PATTERNS]

    async def test_on_create_room_amends_the_request(self):
        room_id = await self.create({"visibility": "public", "preset": "public_chat"})
        code, resp = await self.req("GET", f"/rooms/{room_id}/state/m.room.topic/")
        self.assertEqual((code, resp), (200, {"topic": "Managed for @alice:test.local (public)"}))
        code, resp = await self.req("POST", "/createRoom", {"name": "forbidden"})
        self.assertEqual((code, resp), (403, {"errcode": "M_FORBIDDEN", "error": "Not that name"}))

    async def test_check_event_allowed_and_on_new_event(self):
        room_id = await self.create({"preset": "public_chat"})
        await self.req("POST", f"/rooms/{room_id}/join", {}, self.bob)
        policy = self.instance(Policy)
        policy.seen_state_keys.clear()
        code, resp = await self.req("PUT", f"/rooms/{room_id}/send/com.example.forbidden/f1", {"x": 1})
        self.assertEqual((code, resp["error"]), (403, "That event type is not allowed here"))
        # The policy saw the room's state, without other users' member events.
        seen = policy.seen_state_keys[-1]
        self.assertIn(("m.room.create", ""), seen)
        self.assertIn(("m.room.member", "@alice:test.local"), seen)
        self.assertNotIn(("m.room.member", "@bob:test.local"), seen)
        code, resp = await self.send(room_id, "allowed", "ok1")
        self.assertEqual(code, 200, resp)
        self.assertIn(resp["event_id"], policy.seen_events)
        # Modules of both kinds work together: the spam checker still refuses.
        code, _ = await self.send(room_id, "buy cheap things", "no1")
        self.assertEqual(code, 403)
        # A refused event is never announced.
        self.assertEqual(await self.bodies(room_id), ["allowed"])

    async def test_membership_events_are_checked_by_policies(self):
        room_id = await self.create({"preset": "public_chat"})
        policy = self.instance(Policy)
        policy.seen_state_keys.clear()
        code, _ = await self.req("POST", f"/rooms/{room_id}/join", {}, self.bob)
        self.assertEqual(code, 200)
        [seen] = policy.seen_state_keys
        self.assertIn(("m.room.join_rules", ""), seen)
        self.assertNotIn(("m.room.member", "@alice:test.local"), seen)


class BrokenPolicyTests(SpamCheckerCase):
    modules = [module("BrokenPolicy")]

    async def test_bad_on_create_room_answer_refuses(self):
        code, resp = await self.req("POST", "/createRoom", {})
        self.assertEqual((code, resp["errcode"]), (403, "M_FORBIDDEN"))

    async def test_failing_on_new_event_does_not_fail_the_send(self):
        from mxtwisted.rooms.creation import RoomCreator

        # This policy refuses every createRoom: make the room with a creator that asks no module.
        plain = RoomCreator(self.hs.components.rooms, self.hs.components.membership, "10")
        room_id, _ = await plain.create_room("@alice:test.local", {})
        self.flushLoggedErrors(RuntimeError)
        code, resp = await self.send(room_id, "still delivered", "s1")
        self.assertEqual(code, 200, resp)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        self.assertEqual(await self.bodies(room_id), ["still delivered"])


class LoaderTests(SynchronousTestCase):
    def test_bad_pattern_stops_start_up_naming_the_module(self):
        with self.assertRaises(ModuleLoadError) as ctx:
            load_modules([ModuleConfig("mxhs_spam_patterns.SpamPatterns", {"patterns": ["("]})], "test.local", None, Clock())
        self.assertIn("mxhs_spam_patterns.SpamPatterns", str(ctx.exception))
        self.assertIn("invalid pattern", str(ctx.exception))

    def test_interfaces_are_extension_points(self):
        loaded = load_modules([ModuleConfig("tests.test_spam_checker.Policy", {}),
                               ModuleConfig("tests.test_spam_checker.Gatekeeper", {})], "test.local", None, Clock())
        self.assertEqual([m.provides for m in loaded], [[IRoomPolicy], [ISpamChecker]])
