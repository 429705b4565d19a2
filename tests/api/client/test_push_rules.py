"""Push rules over real HTTP: every endpoint and refusal, the ``m.push_rules`` account data and its /sync
delivery. Success responses are checked against the spec's OpenAPI schema.

Spec: Client-Server API, "Push Rules: API" (pushrules.yaml) and "Push Rules: Events".
"""

from __future__ import annotations

import json
import time
import urllib.parse
from typing import Any, Optional
from urllib.parse import quote

from twisted.internet import defer
from twisted.internet.defer import ensureDeferred
from twisted.trial.unittest import TestCase

from tests.api.client.test_devices import with_uia
from tests.api.client.test_profile import SpecMixin
from tests.api.client.test_sync import sleep, spec_problems
from tests.support.homeserver import postgres_database, start_homeserver

V3 = "/_matrix/client/v3"
R0 = "/_matrix/client/r0"

ALL = V3 + "/pushrules/"
GLOBAL = V3 + "/pushrules/global/"
RULE = V3 + "/pushrules/global/{kind}/{ruleId}"
ENABLED = RULE + "/enabled"
ACTIONS = RULE + "/actions"

DEFAULT_OVERRIDE = [
    ".m.rule.master", ".m.rule.suppress_notices", ".m.rule.invite_for_me", ".m.rule.member_event",
    ".m.rule.is_user_mention", ".m.rule.is_room_mention", ".m.rule.tombstone", ".m.rule.reaction",
    ".m.rule.room.server_acl", ".m.rule.suppress_edits",
]
DEFAULT_UNDERRIDE = [
    ".m.rule.call", ".m.rule.encrypted_room_one_to_one", ".m.rule.room_one_to_one", ".m.rule.message",
    ".m.rule.encrypted",
]


def q(s: str) -> str:
    return quote(s, safe="")


def ids(rules: list[dict]) -> list[str]:
    return [r["rule_id"] for r in rules]


def rule_path(kind: str, rule_id: str, attr: Optional[str] = None, query: Optional[dict] = None) -> str:
    path = f"/pushrules/global/{q(kind)}/{q(rule_id)}" + (f"/{attr}" if attr else "")
    return path + ("?" + urllib.parse.urlencode(query) if query else "")


class _Base(SpecMixin, TestCase):
    database: Any = None

    async def setUp(self) -> None:
        extra = {"database": postgres_database(self)} if self.database == "postgres" else {}
        self.hs = await start_homeserver(self, bcrypt_rounds=4, **extra)
        self.alice = await self.hs.register_user("alice")
        self.bob = await self.hs.register_user("bob")
        self.me = self.alice["user_id"]

    async def req(self, method: str, path: str, body: Any = None, who: Any = None, raw: Optional[bytes] = None,
                  prefix: str = V3) -> tuple[int, Any]:
        token = (who or self.alice)["access_token"]
        return await self.hs.request(method, prefix + path, body, token=token, raw=raw)

    async def ok(self, method: str, path: str, body: Any = None, who: Any = None, template: Optional[str] = None) -> Any:
        code, resp = await self.req(method, path, body, who)
        self.assertEqual(code, 200, (method, path, resp))
        if template is not None:
            self.assertMatchesSpec(method, template, 200, resp)
        return resp

    async def assertError(self, status: int, errcode: str, method: str, path: str, body: Any = None,
                          raw: Optional[bytes] = None) -> None:
        code, resp = await self.req(method, path, body, raw=raw)
        self.assertEqual((code, (resp or {}).get("errcode")), (status, errcode), (method, path, resp))

    async def ruleset(self, who: Any = None) -> dict:
        return (await self.ok("GET", "/pushrules/", who=who, template=ALL))["global"]

    async def sync(self, who: Any = None, **params: Any) -> dict:
        query = {k: (json.dumps(v) if isinstance(v, dict) else str(v).lower() if isinstance(v, bool) else str(v))
                 for k, v in params.items() if v is not None}
        path = V3 + "/sync" + ("?" + urllib.parse.urlencode(query) if query else "")
        code, resp = await self.hs.request("GET", path, token=(who or self.alice)["access_token"])
        self.assertEqual(code, 200, resp)
        self.assertEqual(spec_problems("GET", path, code, resp), [])
        return resp


def push_rules_events(sync_response: dict) -> list[dict]:
    return [e["content"] for e in sync_response["account_data"]["events"] if e["type"] == "m.push_rules"]


class GetRulesetTests(_Base):
    async def test_defaults_for_a_new_user(self) -> None:
        body = await self.ok("GET", "/pushrules/", template=ALL)
        self.assertEqual(set(body), {"global"})
        g = body["global"]
        self.assertEqual(set(g), {"override", "content", "room", "sender", "underride"})
        self.assertEqual(ids(g["override"]), DEFAULT_OVERRIDE)
        self.assertEqual(ids(g["underride"]), DEFAULT_UNDERRIDE)
        self.assertEqual((g["content"], g["room"], g["sender"]), ([], [], []))
        for rule in g["override"] + g["underride"]:
            self.assertIs(rule["default"], True)
            self.assertIs(rule["enabled"], rule["rule_id"] != ".m.rule.master")
            self.assertIn("conditions", rule)
        invite = next(r for r in g["override"] if r["rule_id"] == ".m.rule.invite_for_me")
        self.assertIn({"kind": "event_match", "key": "state_key", "pattern": self.me}, invite["conditions"])
        mention = next(r for r in g["override"] if r["rule_id"] == ".m.rule.is_user_mention")
        self.assertEqual(mention["conditions"][0]["value"], self.me)
        # Each user gets their own ID.
        bobs = await self.ruleset(self.bob)
        invite = next(r for r in bobs["override"] if r["rule_id"] == ".m.rule.invite_for_me")
        self.assertEqual(invite["conditions"][2]["pattern"], self.bob["user_id"])

    async def test_global_and_r0(self) -> None:
        everything = await self.ok("GET", "/pushrules/")
        self.assertEqual(await self.ok("GET", "/pushrules/global/", template=GLOBAL), everything["global"])
        code, body = await self.req("GET", "/pushrules/", prefix=R0)
        self.assertEqual((code, body), (200, everything))

    async def test_needs_a_token(self) -> None:
        for path in ("/pushrules/", "/pushrules/global/", rule_path("override", ".m.rule.master")):
            code, body = await self.hs.request("GET", V3 + path)
            self.assertEqual((code, body["errcode"]), (401, "M_MISSING_TOKEN"))
        code, body = await self.hs.request("PUT", V3 + rule_path("room", "!r:test.local"), {"actions": []})
        self.assertEqual((code, body["errcode"]), (401, "M_MISSING_TOKEN"))

    async def test_account_data_reads_the_ruleset(self) -> None:
        path = f"/user/{q(self.me)}/account_data/m.push_rules"
        self.assertEqual(await self.ok("GET", path), await self.ok("GET", "/pushrules/"))
        await self.ok("PUT", rule_path("room", "!r:test.local"), {"actions": []})
        self.assertEqual(await self.ok("GET", path), await self.ok("GET", "/pushrules/"))
        # Still not settable through account data.
        code, body = await self.req("PUT", path, {"global": {}})
        self.assertEqual((code, body["errcode"]), (405, "M_BAD_JSON"))


class PutRuleTests(_Base):
    async def test_spec_examples(self) -> None:
        room = "!dj234r78wl45Gh4D:matrix.org"
        await self.ok("PUT", rule_path("room", room), {"actions": []}, template=RULE)
        await self.ok("PUT", rule_path("sender", "@spambot:matrix.org"), {"actions": []})
        cake = ["notify", {"set_tweak": "sound", "value": "cakealarm.wav"}]
        await self.ok("PUT", rule_path("content", "SSByZWFsbHkgbGlrZSBjYWtl"), {"pattern": "cake", "actions": cake})
        await self.ok("PUT", rule_path("content", "U3BvbmdlIGNha2UgaXMgYmVzdA", query={"before": "SSByZWFsbHkgbGlrZSBjYWtl"}),
                      {"pattern": "cake*lie", "actions": ["notify"]})
        beer = {
            "conditions": [
                {"kind": "event_match", "key": "content.body", "pattern": "beer"},
                {"kind": "room_member_count", "is": "<=10"},
            ],
            "actions": ["notify", {"set_tweak": "sound", "value": "beeroclock.wav"}],
        }
        await self.ok("PUT", rule_path("override", "U2VlIHlvdSBpbiBUaGUgRHVrZQ"), beer)
        g = await self.ruleset()
        self.assertEqual(g["room"], [{"rule_id": room, "default": False, "enabled": True, "actions": []}])
        self.assertEqual(ids(g["sender"]), ["@spambot:matrix.org"])
        self.assertEqual(g["content"], [
            {"rule_id": "U3BvbmdlIGNha2UgaXMgYmVzdA", "default": False, "enabled": True, "actions": ["notify"],
             "pattern": "cake*lie"},
            {"rule_id": "SSByZWFsbHkgbGlrZSBjYWtl", "default": False, "enabled": True, "actions": cake, "pattern": "cake"},
        ])
        # User override rules come after .m.rule.master, before the other default override rules.
        self.assertEqual(ids(g["override"]), [DEFAULT_OVERRIDE[0], "U2VlIHlvdSBpbiBUaGUgRHVrZQ"] + DEFAULT_OVERRIDE[1:])
        self.assertEqual(g["override"][1], {"rule_id": "U2VlIHlvdSBpbiBUaGUgRHVrZQ", "default": False, "enabled": True,
                                            **beer})
        got = await self.ok("GET", rule_path("content", "U3BvbmdlIGNha2UgaXMgYmVzdA"), template=RULE)
        self.assertEqual(got, {"rule_id": "U3BvbmdlIGNha2UgaXMgYmVzdA", "default": False, "enabled": True,
                               "actions": ["notify"], "pattern": "cake*lie"})

    async def test_order_new_on_top_before_after_update(self) -> None:
        for rule_id in ("a", "b", "c"):
            await self.ok("PUT", rule_path("underride", rule_id), {"conditions": [], "actions": ["notify"]})
        self.assertEqual(ids((await self.ruleset())["underride"]), ["c", "b", "a"] + DEFAULT_UNDERRIDE)
        await self.ok("PUT", rule_path("underride", "x", query={"after": "c"}), {"conditions": [], "actions": []})
        await self.ok("PUT", rule_path("underride", "y", query={"before": "a"}), {"conditions": [], "actions": []})
        self.assertEqual(ids((await self.ruleset())["underride"])[:5], ["c", "x", "b", "y", "a"])
        # Both given: before wins.
        await self.ok("PUT", rule_path("underride", "z", query={"before": "c", "after": "a"}), {"actions": []})
        self.assertEqual(ids((await self.ruleset())["underride"])[:6], ["z", "c", "x", "b", "y", "a"])
        # Updating without a position keeps the place; with one, moves.
        await self.ok("PUT", rule_path("underride", "b"), {"conditions": [{"kind": "event_match", "key": "type",
                                                                             "pattern": "m.room.message"}], "actions": []})
        g = await self.ruleset()
        self.assertEqual(ids(g["underride"])[:6], ["z", "c", "x", "b", "y", "a"])
        self.assertEqual(g["underride"][3]["conditions"], [{"kind": "event_match", "key": "type", "pattern": "m.room.message"}])
        await self.ok("PUT", rule_path("underride", "b", query={"after": "a"}), {"actions": ["notify"]})
        self.assertEqual(ids((await self.ruleset())["underride"])[:6], ["z", "c", "x", "y", "a", "b"])

    async def test_update_keeps_enabled_flag(self) -> None:
        await self.ok("PUT", rule_path("sender", "@s:test.local"), {"actions": []})
        await self.ok("PUT", rule_path("sender", "@s:test.local", "enabled"), {"enabled": False})
        await self.ok("PUT", rule_path("sender", "@s:test.local"), {"actions": ["notify"]})
        rule = await self.ok("GET", rule_path("sender", "@s:test.local"))
        self.assertEqual((rule["enabled"], rule["actions"]), (False, ["notify"]))

    async def test_historical_actions_are_stripped(self) -> None:
        await self.ok("PUT", rule_path("room", "!r:test.local"), {"actions": ["dont_notify"]})
        self.assertEqual(await self.ok("GET", rule_path("room", "!r:test.local", "actions"), template=ACTIONS),
                         {"actions": []})

    async def test_conditions_default_to_none_and_unknown_kinds_are_kept(self) -> None:
        await self.ok("PUT", rule_path("override", "all"), {"actions": []})
        self.assertEqual((await self.ok("GET", rule_path("override", "all")))["conditions"], [])
        future = [{"kind": "org.example.future", "param": [1, 2]}]
        await self.ok("PUT", rule_path("override", "future"), {"actions": ["notify"], "conditions": future})
        self.assertEqual((await self.ok("GET", rule_path("override", "future")))["conditions"], future)

    async def test_non_ascii_rule_ids_and_patterns(self) -> None:
        await self.ok("PUT", rule_path("content", "bière"), {"pattern": "bière*", "actions": ["notify"]})
        rule = await self.ok("GET", rule_path("content", "bière"))
        self.assertEqual((rule["rule_id"], rule["pattern"]), ("bière", "bière*"))

    async def test_refusals(self) -> None:
        ok_body = {"actions": ["notify"], "pattern": "p"}
        await self.assertError(400, "M_INVALID_PARAM", "PUT", rule_path("override", ".m.rule.master"), {"actions": []})
        await self.assertError(400, "M_INVALID_PARAM", "PUT", rule_path("content", ".mine"), ok_body)
        await self.assertError(400, "M_INVALID_PARAM", "PUT", rule_path("content", "a/b"), ok_body)
        await self.assertError(400, "M_INVALID_PARAM", "PUT", rule_path("content", "a\\b"), ok_body)
        await self.assertError(400, "M_INVALID_PARAM", "PUT", rule_path("content", "x" * 1025), ok_body)
        await self.assertError(400, "M_INVALID_PARAM", "PUT", "/pushrules/global/content/", ok_body)
        await self.assertError(400, "M_INVALID_PARAM", "PUT", rule_path("postcontent", "p"), ok_body)
        await self.assertError(400, "M_INVALID_PARAM", "PUT", rule_path("content", "c"), {"actions": ["notify"]})
        await self.assertError(400, "M_INVALID_PARAM", "PUT", rule_path("content", "c"), {"pattern": "p"})
        await self.assertError(400, "M_INVALID_PARAM", "PUT", rule_path("room", "!r:x"), {"actions": "notify"})
        await self.assertError(400, "M_INVALID_PARAM", "PUT", rule_path("room", "!r:x"), {"actions": ["shout"]})
        await self.assertError(400, "M_INVALID_PARAM", "PUT", rule_path("room", "!r:x"), {"actions": [{"sound": 1}]})
        await self.assertError(400, "M_INVALID_PARAM", "PUT", rule_path("override", "o"),
                               {"actions": [], "conditions": [{"key": "type", "pattern": "x"}]})
        await self.assertError(400, "M_INVALID_PARAM", "PUT", rule_path("override", "o"),
                               {"actions": [], "conditions": [{"kind": "room_member_count", "is": "lots"}]})
        await self.assertError(400, "M_INVALID_PARAM", "PUT", rule_path("override", "o"),
                               {"actions": [], "conditions": "none"})
        await self.assertError(400, "M_NOT_JSON", "PUT", rule_path("room", "!r:x"), raw=b"{nope")
        await self.assertError(400, "M_BAD_JSON", "PUT", rule_path("room", "!r:x"), raw=b"[]")
        # Nothing was stored by any of these.
        g = await self.ruleset()
        self.assertEqual(ids(g["override"]), DEFAULT_OVERRIDE)
        self.assertEqual((g["content"], g["room"]), ([], []))

    async def test_before_after_refusals(self) -> None:
        await self.ok("PUT", rule_path("override", "mine"), {"actions": []})
        await self.ok("PUT", rule_path("underride", "other_kind"), {"actions": []})
        for query in ({"before": "nothing"}, {"after": "nothing"}, {"before": "other_kind"}):
            code, body = await self.req("PUT", rule_path("override", "new", query=query), {"actions": []})
            self.assertEqual((code, body["errcode"]), (400, "M_UNKNOWN"), query)
            self.assertIn("before/after rule not found", body["error"])
        # Not relative to a server-default rule, nor to itself.
        await self.assertError(400, "M_INVALID_PARAM", "PUT",
                               rule_path("override", "new", query={"after": ".m.rule.master"}), {"actions": []})
        await self.assertError(400, "M_INVALID_PARAM", "PUT",
                               rule_path("override", "mine", query={"before": "mine"}), {"actions": []})
        self.assertEqual(ids((await self.ruleset())["override"]), [DEFAULT_OVERRIDE[0], "mine"] + DEFAULT_OVERRIDE[1:])


class GetDeleteRuleTests(_Base):
    async def test_get_default_rule(self) -> None:
        rule = await self.ok("GET", rule_path("override", ".m.rule.master"), template=RULE)
        self.assertEqual(rule, {"rule_id": ".m.rule.master", "default": True, "enabled": False, "conditions": [],
                                "actions": []})

    async def test_not_found(self) -> None:
        for method, attr, body in (("GET", None, None), ("DELETE", None, None), ("GET", "enabled", None),
                                   ("PUT", "enabled", {"enabled": True}), ("GET", "actions", None),
                                   ("PUT", "actions", {"actions": []})):
            for kind, rule_id in (("override", "nothing"), ("override", ".m.rule.nothing"),
                                  ("underride", ".m.rule.master"), ("room", "!r:test.local")):
                await self.assertError(404, "M_NOT_FOUND", method, rule_path(kind, rule_id, attr), body)
        # Another user's rule is not found either.
        await self.ok("PUT", rule_path("room", "!r:test.local"), {"actions": []}, who=self.bob)
        await self.assertError(404, "M_NOT_FOUND", "GET", rule_path("room", "!r:test.local"))

    async def test_invalid_kind(self) -> None:
        for method, attr, body in (("GET", None, None), ("PUT", None, {"actions": []}), ("DELETE", None, None),
                                   ("GET", "enabled", None), ("PUT", "enabled", {"enabled": True}),
                                   ("GET", "actions", None), ("PUT", "actions", {"actions": []})):
            await self.assertError(400, "M_INVALID_PARAM", method, rule_path("global", "r", attr), body)

    async def test_unknown_paths(self) -> None:
        await self.assertError(404, "M_UNRECOGNIZED", "GET", rule_path("override", ".m.rule.master", "pattern"))
        await self.assertError(404, "M_UNRECOGNIZED", "GET", "/pushrules/device/x/override/r")
        await self.assertError(405, "M_UNRECOGNIZED", "POST", rule_path("override", "r"), {})

    async def test_delete(self) -> None:
        await self.ok("PUT", rule_path("sender", "@s:test.local"), {"actions": []})
        self.assertEqual(await self.ok("DELETE", rule_path("sender", "@s:test.local"), template=RULE), {})
        await self.assertError(404, "M_NOT_FOUND", "GET", rule_path("sender", "@s:test.local"))
        await self.assertError(404, "M_NOT_FOUND", "DELETE", rule_path("sender", "@s:test.local"))
        self.assertEqual((await self.ruleset())["sender"], [])

    async def test_default_rules_cannot_be_deleted(self) -> None:
        await self.assertError(400, "M_INVALID_PARAM", "DELETE", rule_path("underride", ".m.rule.message"))
        self.assertEqual(ids((await self.ruleset())["underride"]), DEFAULT_UNDERRIDE)


class EnabledActionsTests(_Base):
    async def test_enable_the_master_rule(self) -> None:
        path = rule_path("override", ".m.rule.master", "enabled")
        self.assertEqual(await self.ok("GET", path, template=ENABLED), {"enabled": False})
        self.assertEqual(await self.ok("PUT", path, {"enabled": True}, template=ENABLED), {})
        self.assertEqual(await self.ok("GET", path), {"enabled": True})
        master = (await self.ruleset())["override"][0]
        self.assertEqual((master["rule_id"], master["enabled"], master["default"]), (".m.rule.master", True, True))
        await self.ok("PUT", path, {"enabled": False})
        self.assertEqual(await self.ok("GET", path), {"enabled": False})
        # Only for this user.
        self.assertFalse((await self.ruleset(self.bob))["override"][0]["enabled"])

    async def test_user_rule_enabled(self) -> None:
        await self.ok("PUT", rule_path("room", "!r:test.local"), {"actions": []})
        path = rule_path("room", "!r:test.local", "enabled")
        self.assertEqual(await self.ok("GET", path), {"enabled": True})
        await self.ok("PUT", path, {"enabled": False})
        self.assertEqual(await self.ok("GET", path), {"enabled": False})
        self.assertFalse((await self.ruleset())["room"][0]["enabled"])

    async def test_enabled_refusals(self) -> None:
        path = rule_path("override", ".m.rule.master", "enabled")
        for body in ({}, {"enabled": "true"}, {"enabled": 1}, {"enabled": None}):
            await self.assertError(400, "M_INVALID_PARAM", "PUT", path, body)
        await self.assertError(400, "M_NOT_JSON", "PUT", path, raw=b"{true")
        await self.assertError(400, "M_BAD_JSON", "PUT", path, raw=b"true")

    async def test_default_rule_actions(self) -> None:
        path = rule_path("underride", ".m.rule.message", "actions")
        self.assertEqual(await self.ok("GET", path, template=ACTIONS), {"actions": ["notify"]})
        new = ["notify", {"set_tweak": "sound", "value": "bing"}]
        self.assertEqual(await self.ok("PUT", path, {"actions": new}, template=ACTIONS), {})
        self.assertEqual(await self.ok("GET", path), {"actions": new})
        rule = await self.ok("GET", rule_path("underride", ".m.rule.message"))
        self.assertEqual((rule["actions"], rule["default"], rule["enabled"]), (new, True, True))
        # Enabling or disabling keeps the actions.
        await self.ok("PUT", rule_path("underride", ".m.rule.message", "enabled"), {"enabled": False})
        rule = await self.ok("GET", rule_path("underride", ".m.rule.message"))
        self.assertEqual((rule["actions"], rule["enabled"]), (new, False))

    async def test_user_rule_actions(self) -> None:
        await self.ok("PUT", rule_path("content", "c"), {"pattern": "x", "actions": []})
        await self.ok("PUT", rule_path("content", "c", "actions"), {"actions": ["notify", "coalesce"]})
        rule = await self.ok("GET", rule_path("content", "c"))
        self.assertEqual((rule["actions"], rule["pattern"]), (["notify"], "x"))

    async def test_actions_refusals(self) -> None:
        path = rule_path("underride", ".m.rule.message", "actions")
        for body in ({}, {"actions": "notify"}, {"actions": ["loud"]}, {"actions": [{"set_tweak": 1}]}):
            await self.assertError(400, "M_INVALID_PARAM", "PUT", path, body)
        self.assertEqual(await self.ok("GET", path), {"actions": ["notify"]})


class SyncDeliveryTests(_Base):
    async def test_initial_sync_has_the_defaults(self) -> None:
        resp = await self.sync()
        [content] = push_rules_events(resp)
        self.assertEqual(content, await self.ok("GET", "/pushrules/"))
        self.assertEqual(ids(content["global"]["override"]), DEFAULT_OVERRIDE)
        # Incremental syncs do not repeat it while nothing changes.
        await self.ok("PUT", f"/user/{q(self.me)}/account_data/org.example.x", {"a": 1})
        resp = await self.sync(since=resp["next_batch"])
        self.assertEqual(push_rules_events(resp), [])
        self.assertEqual([e["type"] for e in resp["account_data"]["events"]], ["org.example.x"])

    async def test_every_change_is_delivered(self) -> None:
        since = (await self.sync())["next_batch"]
        changes = [
            ("PUT", rule_path("room", "!r:test.local"), {"actions": []}),
            ("PUT", rule_path("override", ".m.rule.master", "enabled"), {"enabled": True}),
            ("PUT", rule_path("underride", ".m.rule.message", "actions"), {"actions": []}),
            ("PUT", rule_path("room", "!r:test.local", "actions"), {"actions": ["notify"]}),
            ("PUT", rule_path("room", "!r:test.local", "enabled"), {"enabled": False}),
            ("DELETE", rule_path("room", "!r:test.local"), None),
        ]
        for method, path, body in changes:
            await self.ok(method, path, body)
            resp = await self.sync(since=since)
            since = resp["next_batch"]
            [content] = push_rules_events(resp)
            self.assertEqual(content, await self.ok("GET", "/pushrules/"), path)
        self.assertEqual(content["global"]["room"], [])
        self.assertTrue(content["global"]["override"][0]["enabled"])
        # Refused changes and other users' changes are not news.
        await self.req("PUT", rule_path("room", ".bad"), {"actions": []})
        await self.req("DELETE", rule_path("room", "!nothing:test.local"))
        await self.ok("PUT", rule_path("room", "!r:test.local"), {"actions": []}, who=self.bob)
        resp = await self.sync(since=since)
        self.assertEqual(push_rules_events(resp), [])

    async def test_a_change_wakes_a_waiting_sync(self) -> None:
        since = (await self.sync())["next_batch"]
        started = time.monotonic()
        waiting = ensureDeferred(self.sync(since=since, timeout=10000))
        await sleep(0.2)
        self.assertFalse(waiting.called)
        await self.ok("PUT", rule_path("sender", "@noisy:test.local"), {"actions": []})
        resp = await waiting
        self.assertLess(time.monotonic() - started, 5)
        [content] = push_rules_events(resp)
        self.assertEqual(ids(content["global"]["sender"]), ["@noisy:test.local"])

    async def test_full_state_and_filters(self) -> None:
        first = await self.sync()
        resp = await self.sync(since=first["next_batch"], full_state=True)
        self.assertEqual(len(push_rules_events(resp)), 1)
        resp = await self.sync(filter={"account_data": {"not_types": ["m.push_rules"]}})
        self.assertEqual(push_rules_events(resp), [])
        resp = await self.sync(filter={"account_data": {"types": ["m.push_rules"]}})
        self.assertEqual(len(push_rules_events(resp)), 1)

    async def test_concurrent_changes_end_consistent(self) -> None:
        since = (await self.sync())["next_batch"]
        puts = [self.req("PUT", rule_path("content", f"k{i}"), {"pattern": f"w{i}", "actions": ["notify"]})
                for i in range(8)]
        results = await defer.gatherResults([ensureDeferred(p) for p in puts])
        self.assertEqual([code for code, _ in results], [200] * 8)
        g = await self.ruleset()
        self.assertEqual(sorted(ids(g["content"])), [f"k{i}" for i in range(8)])
        resp = await self.sync(since=since)
        [content] = push_rules_events(resp)
        self.assertEqual(content["global"], g)


class GuestTests(TestCase):
    async def test_guests_are_refused(self) -> None:
        hs = await start_homeserver(self, bcrypt_rounds=4, allow_guest_access=True)
        code, guest = await hs.request("POST", V3 + "/register?kind=guest", {})
        self.assertEqual(code, 200, guest)
        for method, path, body in (("GET", "/pushrules/", None), ("GET", rule_path("override", ".m.rule.master"), None),
                                   ("PUT", rule_path("room", "!r:test.local"), {"actions": []})):
            code, resp = await hs.request(method, V3 + path, body, token=guest["access_token"])
            self.assertEqual((code, resp["errcode"]), (403, "M_GUEST_ACCESS_FORBIDDEN"))


class DeactivationTests(_Base):
    async def test_erase_forgets_the_rules(self) -> None:
        await self.ok("PUT", rule_path("room", "!r:test.local"), {"actions": []})
        await self.ok("PUT", rule_path("override", ".m.rule.master", "enabled"), {"enabled": True})
        status, _ = await with_uia(self, self.hs, "POST", f"{V3}/account/deactivate", {"erase": True},
                                   self.alice["access_token"], "alice", password="correct horse")
        self.assertEqual(status, 200)
        rules = await self.hs.components.push_rules.get_ruleset_json(self.me)
        self.assertEqual(rules["global"]["room"], [])
        self.assertFalse(rules["global"]["override"][0]["enabled"])


class PostgresTests(_Base):
    database = "postgres"

    async def test_rules_and_sync(self) -> None:
        await self.ok("PUT", rule_path("content", "a"), {"pattern": "a", "actions": []})
        await self.ok("PUT", rule_path("content", "b", query={"after": "a"}), {"pattern": "b", "actions": []})
        await self.ok("PUT", rule_path("override", ".m.rule.master", "enabled"), {"enabled": True})
        g = await self.ruleset()
        self.assertEqual(ids(g["content"]), ["a", "b"])
        self.assertTrue(g["override"][0]["enabled"])
        [content] = push_rules_events(await self.sync())
        self.assertEqual(content["global"], g)
