"""Profiles over real HTTP: reading, setting and deleting fields, custom fields, limits, refusals, listeners.

Spec: Client-Server API, "Profiles" (incl. custom profile fields, v1.16).
Success responses are checked against the spec's OpenAPI schema.
"""

from __future__ import annotations

import json
import os
from typing import Any, Optional
from urllib.parse import quote

from twisted.internet import defer, reactor
from twisted.internet.task import deferLater
from twisted.trial.unittest import SkipTest, TestCase

from mxtwisted.handlers.profile import (
    MAX_PROFILE_SIZE,
    ProfileHandler,
    check_profile_key,
    is_valid_mxc_uri,
)
from mxtwisted.http.errors import MatrixError
from tests.support.homeserver import start_homeserver
from tests.support.spec import SPEC_DIR

V3 = "/_matrix/client/v3"
R0 = "/_matrix/client/r0"

#: The bundled OpenAPI document of the Client-Server API (spec v1.16+).
SPEC_PATH = os.path.join(SPEC_DIR, "client-server.json")
_spec_cache: dict[str, Any] = {}


def _load_spec() -> Optional[dict]:
    if "doc" not in _spec_cache:
        try:
            with open(SPEC_PATH, encoding="utf-8") as f:
                _spec_cache["doc"] = json.load(f)
        except OSError:
            _spec_cache["doc"] = None
    return _spec_cache["doc"]


def spec_problems(method: str, template: str, status: int, body: Any) -> list[str]:
    """Violations of the spec's response schema for ``method template`` (a spec path such as
    ``/_matrix/client/v3/profile/{userId}``) answering ``status`` with ``body``."""
    import jsonschema

    doc = _load_spec()
    if doc is None:
        raise SkipTest(f"the Client-Server OpenAPI document is not at {SPEC_PATH} (set MATRIX_SPEC_DIR)")
    op = doc["paths"][template][method.lower()]
    response = op["responses"].get(str(status))
    if response is None:
        return [f"status {status} is not documented for {method} {template}"]
    schema = response.get("content", {}).get("application/json", {}).get("schema")
    if schema is None:
        return []
    validator = jsonschema.Draft202012Validator(schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER)
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(body)]


class SpecMixin:
    def assertMatchesSpec(self, method: str, template: str, status: int, body: Any) -> None:
        problems = spec_problems(method, template, status, body)
        self.assertEqual(problems, [], f"{method} {template} {status} {body!r}")  # type: ignore[attr-defined]


PROFILE = V3 + "/profile/{userId}"
PROFILE_FIELD = V3 + "/profile/{userId}/{keyName}"


class ProfileTests(SpecMixin, TestCase):
    async def setUp(self) -> None:
        self.hs = await start_homeserver(self, bcrypt_rounds=4)
        self.alice = await self.hs.register_user("alice")
        self.bob = await self.hs.register_user("bob")
        self.alice_id = self.alice["user_id"]

    async def req(self, method: str, path: str, body: Any = None, who: Any = "alice", raw: Optional[bytes] = None,
                  prefix: str = V3) -> tuple[int, Any]:
        token = None if who is None else (self.alice if who == "alice" else who)["access_token"]
        return await self.hs.request(method, prefix + path, body, token=token, raw=raw)

    def field(self, key: str, user_id: Optional[str] = None) -> str:
        return f"/profile/{quote(user_id or self.alice_id, safe='')}/{quote(key, safe='')}"

    async def assertError(self, status: int, errcode: str, method: str, path: str, body: Any = None,
                          who: Any = "alice", raw: Optional[bytes] = None) -> None:
        code, resp = await self.req(method, path, body, who, raw)
        self.assertEqual((code, (resp or {}).get("errcode")), (status, errcode), resp)

    # -- reading ------------------------------------------------------------------
    async def test_new_user_has_localpart_as_displayname(self) -> None:
        code, resp = await self.req("GET", f"/profile/{self.alice_id}", who=None)
        self.assertEqual((code, resp), (200, {"displayname": "alice"}))
        self.assertMatchesSpec("GET", PROFILE, 200, resp)
        code, resp = await self.req("GET", self.field("displayname"), who=None)
        self.assertEqual((code, resp), (200, {"displayname": "alice"}))
        self.assertMatchesSpec("GET", PROFILE_FIELD, 200, resp)

    async def test_percent_encoded_user_id(self) -> None:
        code, resp = await self.req("GET", f"/profile/{quote(self.alice_id, safe='')}")
        self.assertEqual((code, resp), (200, {"displayname": "alice"}))

    async def test_r0_prefix(self) -> None:
        code, resp = await self.req("GET", f"/profile/{self.alice_id}/displayname", prefix=R0)
        self.assertEqual((code, resp), (200, {"displayname": "alice"}))
        code, resp = await self.req("PUT", f"/profile/{self.alice_id}/displayname", {"displayname": "A"}, prefix=R0)
        self.assertEqual((code, resp), (200, {}))

    async def test_unknown_local_user_is_404(self) -> None:
        await self.assertError(404, "M_NOT_FOUND", "GET", "/profile/@nobody:test.local")
        await self.assertError(404, "M_NOT_FOUND", "GET", "/profile/@nobody:test.local/displayname")

    async def test_remote_user_is_asked_of_their_server(self) -> None:
        from mxtwisted.federation.client import FederationError, RequestSendFailed

        answers = {
            "elsewhere.example": FederationError(404, "M_NOT_FOUND", {"errcode": "M_NOT_FOUND", "error": "Nobody"}),
            "down.example": RequestSendFailed("down.example", ConnectionRefusedError()),
            "odd.example": FederationError(401, "M_UNAUTHORIZED", {"errcode": "M_UNAUTHORIZED", "error": "?"}),
        }

        async def get_json(destination: str, path: str, args: Any = None) -> Any:
            self.assertEqual(path, "/_matrix/federation/v1/query/profile")
            raise answers[destination]

        self.patch(self.hs.components.federation.client, "get_json", get_json)
        await self.assertError(404, "M_NOT_FOUND", "GET", "/profile/@someone:elsewhere.example")
        await self.assertError(404, "M_NOT_FOUND", "GET", "/profile/@someone:elsewhere.example/displayname")
        # Unreachable, or a refusal of our request (not the client's): 502.
        await self.assertError(502, "M_UNKNOWN", "GET", "/profile/@someone:down.example")
        await self.assertError(502, "M_UNKNOWN", "GET", "/profile/@someone:odd.example/displayname")

    async def test_remote_profile_query_hook(self) -> None:
        asked = []

        async def query(user_id: str, field: Optional[str]) -> dict:
            asked.append((user_id, field))
            return {"displayname": "Remote", "avatar_url": "mxc://elsewhere.example/abc"}

        self.hs.components.profile.set_remote_profile_query(query)
        code, resp = await self.req("GET", "/profile/@someone:elsewhere.example")
        self.assertEqual((code, resp["displayname"]), (200, "Remote"))
        code, resp = await self.req("GET", "/profile/@someone:elsewhere.example/avatar_url")
        self.assertEqual((code, resp), (200, {"avatar_url": "mxc://elsewhere.example/abc"}))
        await self.assertError(404, "M_NOT_FOUND", "GET", "/profile/@someone:elsewhere.example/m.tz")
        self.assertEqual(asked[0], ("@someone:elsewhere.example", None))
        self.assertEqual(asked[1], ("@someone:elsewhere.example", "avatar_url"))

    async def test_invalid_user_id_is_400(self) -> None:
        await self.assertError(400, "M_INVALID_PARAM", "GET", "/profile/alice")
        await self.assertError(400, "M_INVALID_PARAM", "GET", "/profile/@alice")
        await self.assertError(400, "M_INVALID_PARAM", "GET", "/profile/alice/displayname")

    async def test_unset_field_is_404(self) -> None:
        await self.assertError(404, "M_NOT_FOUND", "GET", self.field("avatar_url"))
        await self.assertError(404, "M_NOT_FOUND", "GET", self.field("m.tz"))
        await self.assertError(404, "M_NOT_FOUND", "GET", self.field("com.example.nothing"))

    async def test_empty_profile_is_404(self) -> None:
        code, _ = await self.req("DELETE", self.field("displayname"))
        self.assertEqual(code, 200)
        await self.assertError(404, "M_NOT_FOUND", "GET", f"/profile/{self.alice_id}")

    async def test_reading_needs_no_token_by_default(self) -> None:
        code, _ = await self.req("GET", f"/profile/{self.alice_id}", who=None)
        self.assertEqual(code, 200)

    # -- displayname ----------------------------------------------------------------
    async def test_set_displayname(self) -> None:
        code, resp = await self.req("PUT", self.field("displayname"), {"displayname": "Alice Liddell"})
        self.assertEqual((code, resp), (200, {}))
        self.assertMatchesSpec("PUT", PROFILE_FIELD, 200, resp)
        code, resp = await self.req("GET", self.field("displayname"))
        self.assertEqual((code, resp), (200, {"displayname": "Alice Liddell"}))
        code, resp = await self.req("GET", f"/profile/{self.alice_id}", who=self.bob)
        self.assertEqual((code, resp), (200, {"displayname": "Alice Liddell"}))

    async def test_displayname_is_trimmed_and_unicode(self) -> None:
        await self.req("PUT", self.field("displayname"), {"displayname": "  Ålice 🐇  "})
        _, resp = await self.req("GET", self.field("displayname"))
        self.assertEqual(resp, {"displayname": "Ålice 🐇"})

    async def test_displayname_length_limit(self) -> None:
        code, _ = await self.req("PUT", self.field("displayname"), {"displayname": "é" * 256})
        self.assertEqual(code, 200)
        await self.assertError(400, "M_INVALID_PARAM", "PUT", self.field("displayname"), {"displayname": "é" * 257})
        _, resp = await self.req("GET", self.field("displayname"))
        self.assertEqual(resp, {"displayname": "é" * 256})

    async def test_displayname_must_be_a_string(self) -> None:
        for value in (None, 42, ["x"], {"a": 1}, True):
            await self.assertError(400, "M_INVALID_PARAM", "PUT", self.field("displayname"), {"displayname": value})

    async def test_empty_displayname_clears_it(self) -> None:
        code, _ = await self.req("PUT", self.field("displayname"), {"displayname": ""})
        self.assertEqual(code, 200)
        await self.assertError(404, "M_NOT_FOUND", "GET", self.field("displayname"))

    async def test_delete_displayname(self) -> None:
        code, resp = await self.req("DELETE", self.field("displayname"))
        self.assertEqual((code, resp), (200, {}))
        self.assertMatchesSpec("DELETE", PROFILE_FIELD, 200, resp)
        await self.assertError(404, "M_NOT_FOUND", "GET", self.field("displayname"))

    # -- avatar_url --------------------------------------------------------------------
    async def test_set_avatar_url(self) -> None:
        url = "mxc://test.local/AbC_123-xyz"
        code, _ = await self.req("PUT", self.field("avatar_url"), {"avatar_url": url})
        self.assertEqual(code, 200)
        code, resp = await self.req("GET", self.field("avatar_url"))
        self.assertEqual((code, resp), (200, {"avatar_url": url}))
        code, resp = await self.req("GET", f"/profile/{self.alice_id}")
        self.assertEqual(resp, {"displayname": "alice", "avatar_url": url})
        self.assertMatchesSpec("GET", PROFILE, 200, resp)
        # An empty string clears it.
        code, _ = await self.req("PUT", self.field("avatar_url"), {"avatar_url": ""})
        self.assertEqual(code, 200)
        await self.assertError(404, "M_NOT_FOUND", "GET", self.field("avatar_url"))

    async def test_avatar_url_must_be_an_mxc_uri(self) -> None:
        for value in ("http://example.com/a.png", "mxc://test.local/", "mxc://bad host/abc", "mxc://test.local/a/b",
                      "mxc://test.local/a.png", 5, None, {"url": "mxc://a/b"}):
            await self.assertError(400, "M_INVALID_PARAM", "PUT", self.field("avatar_url"), {"avatar_url": value})

    # -- custom fields (v1.16) ------------------------------------------------------------
    async def test_custom_field_round_trip(self) -> None:
        value = {"nested": [1, 2.5, "three", None, True], "ü": "✓"}
        code, _ = await self.req("PUT", self.field("com.example.things"), {"com.example.things": value})
        self.assertEqual(code, 200)
        code, resp = await self.req("GET", self.field("com.example.things"), who=None)
        self.assertEqual((code, resp), (200, {"com.example.things": value}))
        self.assertMatchesSpec("GET", PROFILE_FIELD, 200, resp)
        code, resp = await self.req("GET", f"/profile/{self.alice_id}")
        self.assertEqual(resp, {"displayname": "alice", "com.example.things": value})
        self.assertMatchesSpec("GET", PROFILE, 200, resp)
        code, resp = await self.req("DELETE", self.field("com.example.things"))
        self.assertEqual((code, resp), (200, {}))
        await self.assertError(404, "M_NOT_FOUND", "GET", self.field("com.example.things"))
        # Deleting a field that is not there is fine.
        code, resp = await self.req("DELETE", self.field("com.example.things"))
        self.assertEqual((code, resp), (200, {}))

    async def test_custom_field_values_of_any_json_type(self) -> None:
        for value in ("s", 0, -1.5, False, [], {}):
            code, resp = await self.req("PUT", self.field("org.example.v"), {"org.example.v": value})
            self.assertEqual(code, 200, resp)
            _, resp = await self.req("GET", self.field("org.example.v"))
            self.assertEqual(resp, {"org.example.v": value})

    async def test_null_values_are_refused(self) -> None:
        await self.assertError(400, "M_INVALID_PARAM", "PUT", self.field("org.example.v"), {"org.example.v": None})

    async def test_time_zone_must_be_a_string(self) -> None:
        code, _ = await self.req("PUT", self.field("m.tz"), {"m.tz": "Europe/London"})
        self.assertEqual(code, 200)
        _, resp = await self.req("GET", f"/profile/{self.alice_id}")
        self.assertEqual(resp["m.tz"], "Europe/London")
        self.assertMatchesSpec("GET", PROFILE, 200, resp)
        await self.assertError(400, "M_INVALID_PARAM", "PUT", self.field("m.tz"), {"m.tz": 1})

    async def test_other_properties_in_the_body_are_ignored(self) -> None:
        code, _ = await self.req("PUT", self.field("displayname"), {"displayname": "A", "avatar_url": "mxc://x/y"})
        self.assertEqual(code, 200)
        _, resp = await self.req("GET", f"/profile/{self.alice_id}")
        self.assertEqual(resp, {"displayname": "A"})

    async def test_key_name_grammar(self) -> None:
        for key in ("Com.Example", "1abc", "com.example!", "_x", "dé.jà", " x"):
            for method, body in (("PUT", {key: "v"}), ("GET", None), ("DELETE", None)):
                await self.assertError(400, "M_INVALID_PARAM", method, self.field(key), body)
        # The Common Namespaced Identifier Grammar allows '-' and un-namespaced names.
        for key in ("com.example-thing", "plain"):
            code, resp = await self.req("PUT", self.field(key), {key: "v"})
            self.assertEqual(code, 200, (key, resp))

    async def test_key_too_large(self) -> None:
        key = "a" + "b" * 254
        code, _ = await self.req("PUT", self.field(key), {key: 1})
        self.assertEqual(code, 200)
        key += "c"
        for method, body in (("PUT", {key: 1}), ("GET", None), ("DELETE", None)):
            await self.assertError(400, "M_KEY_TOO_LARGE", method, self.field(key), body)

    async def test_profile_too_large(self) -> None:
        # A field that alone would exceed 64 KiB.
        await self.assertError(
            400, "M_PROFILE_TOO_LARGE", "PUT", self.field("com.example.big"),
            {"com.example.big": "x" * MAX_PROFILE_SIZE},
        )
        # Fields that together reach the limit exactly are fine; one byte more is not.
        _, profile = await self.req("GET", f"/profile/{self.alice_id}")
        # {"com.example.big":"...","displayname":"alice"}
        overhead = len(json.dumps({"com.example.big": "", **profile}, separators=(",", ":")))
        fits = "x" * (MAX_PROFILE_SIZE - overhead)
        code, resp = await self.req("PUT", self.field("com.example.big"), {"com.example.big": fits})
        self.assertEqual(code, 200, resp)
        # Growing another field now overflows.
        await self.assertError(400, "M_PROFILE_TOO_LARGE", "PUT", self.field("displayname"), {"displayname": "alice!"})
        # Replacing the big field is measured without its old value.
        code, _ = await self.req("PUT", self.field("com.example.big"), {"com.example.big": fits[:-1]})
        self.assertEqual(code, 200)
        code, _ = await self.req("PUT", self.field("displayname"), {"displayname": "alice!"})
        self.assertEqual(code, 200)
        # Deleting is always possible.
        code, _ = await self.req("DELETE", self.field("com.example.big"))
        self.assertEqual(code, 200)

    # -- refusals -----------------------------------------------------------------------------
    async def test_changing_needs_a_token(self) -> None:
        await self.assertError(401, "M_MISSING_TOKEN", "PUT", self.field("displayname"), {"displayname": "x"}, who=None)
        await self.assertError(401, "M_MISSING_TOKEN", "DELETE", self.field("displayname"), who=None)
        await self.assertError(401, "M_UNKNOWN_TOKEN", "PUT", self.field("displayname"), {"displayname": "x"},
                               who={"access_token": "nonsense"})

    async def test_only_own_profile_can_change(self) -> None:
        for key, body in (("displayname", {"displayname": "evil"}), ("com.example.x", {"com.example.x": 1})):
            await self.assertError(403, "M_FORBIDDEN", "PUT", self.field(key), body, who=self.bob)
            await self.assertError(403, "M_FORBIDDEN", "DELETE", self.field(key), who=self.bob)
        await self.assertError(403, "M_FORBIDDEN", "PUT", self.field("displayname", "@x:elsewhere.example"),
                               {"displayname": "x"})
        _, resp = await self.req("GET", f"/profile/{self.alice_id}")
        self.assertEqual(resp, {"displayname": "alice"})

    async def test_bad_bodies(self) -> None:
        await self.assertError(400, "M_MISSING_PARAM", "PUT", self.field("displayname"), {})
        await self.assertError(400, "M_MISSING_PARAM", "PUT", self.field("displayname"), {"avatar_url": "mxc://a/b"})
        await self.assertError(400, "M_NOT_JSON", "PUT", self.field("displayname"), raw=b"{not json")
        await self.assertError(400, "M_NOT_JSON", "PUT", self.field("displayname"), raw=b"")
        await self.assertError(400, "M_BAD_JSON", "PUT", self.field("displayname"), raw=b'["displayname"]')
        await self.assertError(400, "M_BAD_JSON", "PUT", self.field("displayname"), raw=b'{"displayname": "\\ud800"}')
        await self.assertError(400, "M_BAD_JSON", "PUT", self.field("org.example.v"),
                               raw=b'{"org.example.v": {"\\udfff": 1}}')

    async def test_guests_may_only_change_their_displayname(self) -> None:
        guest_id = await self.hs.components.registration.register_guest()
        guest = await self.hs.components.sessions.create_session(guest_id)
        path = self.field("displayname", guest_id)
        code, resp = await self.req("PUT", path, {"displayname": "Visitor"}, who=guest)
        self.assertEqual((code, resp), (200, {}))
        _, resp = await self.req("GET", path)
        self.assertEqual(resp, {"displayname": "Visitor"})
        code, _ = await self.req("DELETE", path, who=guest)
        self.assertEqual(code, 200)
        await self.assertError(403, "M_GUEST_ACCESS_FORBIDDEN", "PUT", self.field("avatar_url", guest_id),
                               {"avatar_url": "mxc://test.local/abc"}, who=guest)
        await self.assertError(403, "M_GUEST_ACCESS_FORBIDDEN", "PUT", self.field("com.example.x", guest_id),
                               {"com.example.x": 1}, who=guest)
        await self.assertError(403, "M_GUEST_ACCESS_FORBIDDEN", "DELETE", self.field("m.tz", guest_id), who=guest)

    # -- change listeners ---------------------------------------------------------------------
    async def test_listeners_hear_displayname_and_avatar_changes(self) -> None:
        heard: list[tuple[str, dict]] = []
        slow_done = []

        def plain(user_id: str, profile: dict) -> None:
            heard.append((user_id, profile))

        async def slow(user_id: str, profile: dict) -> None:
            await deferLater(reactor, 0.01, lambda: None)
            slow_done.append(user_id)

        def broken(user_id: str, profile: dict) -> None:
            raise RuntimeError("listener failure")

        handler: ProfileHandler = self.hs.components.profile
        handler.add_profile_change_listener(broken)
        handler.add_profile_change_listener(plain)
        handler.add_profile_change_listener(slow)

        code, _ = await self.req("PUT", self.field("displayname"), {"displayname": "Al"})
        self.assertEqual(code, 200)  # a failing listener does not fail the change
        self.assertEqual(heard, [(self.alice_id, {"displayname": "Al"})])
        self.assertEqual(slow_done, [self.alice_id])  # awaited before the response
        await self.req("PUT", self.field("avatar_url"), {"avatar_url": "mxc://test.local/pic"})
        self.assertEqual(heard[-1], (self.alice_id, {"displayname": "Al", "avatar_url": "mxc://test.local/pic"}))
        await self.req("DELETE", self.field("avatar_url"))
        self.assertEqual(heard[-1], (self.alice_id, {"displayname": "Al"}))
        self.assertEqual(len(heard), 3)
        # Custom fields and time zones are not propagated into rooms.
        await self.req("PUT", self.field("m.tz"), {"m.tz": "UTC"})
        await self.req("PUT", self.field("com.example.x"), {"com.example.x": 1})
        self.assertEqual(len(heard), 3)
        # Refused changes are not announced.
        await self.req("PUT", self.field("displayname"), {"displayname": 1})
        await self.req("PUT", self.field("displayname"), {"displayname": "x"}, who=self.bob)
        self.assertEqual(len(heard), 3)
        self.flushLoggedErrors(RuntimeError)

    async def test_listeners_see_concurrent_changes_in_order(self) -> None:
        heard: list[str] = []

        async def slow(user_id: str, profile: dict) -> None:
            await deferLater(reactor, 0.01, lambda: None)
            heard.append(profile["displayname"])

        handler: ProfileHandler = self.hs.components.profile
        handler.add_profile_change_listener(slow)
        await defer.gatherResults([
            defer.ensureDeferred(self.req("PUT", self.field("displayname"), {"displayname": f"name {i}"}))
            for i in range(5)
        ])
        _, resp = await self.req("GET", self.field("displayname"))
        self.assertEqual(len(heard), 5)
        self.assertEqual(heard[-1], resp["displayname"])  # the rooms end up with the stored name
        self.assertEqual(handler._locks, {})  # no lock left behind

    async def test_concurrent_changes_respect_the_size_limit(self) -> None:
        half = "x" * (MAX_PROFILE_SIZE // 2)
        results = await defer.gatherResults([
            defer.ensureDeferred(self.req("PUT", self.field(f"com.example.f{i}"), {f"com.example.f{i}": half}))
            for i in range(3)
        ])
        self.assertEqual(sorted(code for code, _ in results), [200, 400, 400])
        profile = await self.hs.storage.profiles.get_profile(self.alice_id)
        self.assertLessEqual(len(json.dumps(profile, separators=(",", ":"))), MAX_PROFILE_SIZE)


class RequireAuthForProfileTests(TestCase):
    async def test_token_required_when_configured(self) -> None:
        hs = await start_homeserver(self, bcrypt_rounds=4, require_auth_for_profile_requests=True)
        alice = await hs.register_user("alice")
        for path in ("/profile/@alice:test.local", "/profile/@alice:test.local/displayname"):
            code, resp = await hs.request("GET", V3 + path)
            self.assertEqual((code, resp["errcode"]), (401, "M_MISSING_TOKEN"))
            code, resp = await hs.request("GET", V3 + path, token="bogus")
            self.assertEqual((code, resp["errcode"]), (401, "M_UNKNOWN_TOKEN"))
            code, resp = await hs.request("GET", V3 + path, token=alice["access_token"])
            self.assertEqual((code, resp), (200, {"displayname": "alice"}))
        guest_id = await hs.components.registration.register_guest()
        guest = await hs.components.sessions.create_session(guest_id)
        code, resp = await hs.request("GET", V3 + "/profile/@alice:test.local", token=guest["access_token"])
        self.assertEqual((code, resp["errcode"]), (403, "M_GUEST_ACCESS_FORBIDDEN"))


class ProfileRulesTests(TestCase):
    """The pure checks, without a server."""

    def test_key_names(self) -> None:
        for key in ("displayname", "avatar_url", "m.tz", "com.example.field", "a", "a-b_c.d9"):
            check_profile_key(key)
        for key, errcode in (("", "M_INVALID_PARAM"), ("A", "M_INVALID_PARAM"), ("9a", "M_INVALID_PARAM"),
                             ("a" * 256, "M_KEY_TOO_LARGE"), ("ä" * 128, "M_KEY_TOO_LARGE"),
                             ("ä", "M_INVALID_PARAM")):
            with self.assertRaises(MatrixError) as cm:
                check_profile_key(key)
            self.assertEqual((cm.exception.status, cm.exception.errcode), (400, errcode), key)

    def test_mxc_uris(self) -> None:
        for uri in ("mxc://example.org/abc", "mxc://example.org:8448/A-b_c", "mxc://[::1]/x", "mxc://1.2.3.4/x"):
            self.assertTrue(is_valid_mxc_uri(uri), uri)
        for uri in ("mxc://example.org", "mxc:///abc", "https://example.org/abc", "mxc://ex ample/abc",
                    "mxc://example.org/a/b", "mxc://example.org/a%20b", None, 3):
            self.assertFalse(is_valid_mxc_uri(uri), uri)

    def test_is_mine(self) -> None:
        handler = ProfileHandler("example.org:8448", None, None)  # type: ignore[arg-type]
        self.assertTrue(handler.is_mine("@a:example.org:8448"))
        self.assertFalse(handler.is_mine("@a:example.org"))
        self.assertFalse(handler.is_mine("@a:8448"))
