"""Account data and room tags over real HTTP, with every refusal.

Spec: Client-Server API, "Client Config" (account data) and "Room Tagging".
Success responses are checked against the spec's OpenAPI schema.
"""

from __future__ import annotations

from typing import Any, Optional
from urllib.parse import quote

from twisted.trial.unittest import TestCase

from tests.api.client.test_profile import SpecMixin
from tests.support.homeserver import start_homeserver

V3 = "/_matrix/client/v3"
R0 = "/_matrix/client/r0"

GLOBAL_DATA = V3 + "/user/{userId}/account_data/{type}"
ROOM_DATA = V3 + "/user/{userId}/rooms/{roomId}/account_data/{type}"
TAGS = V3 + "/user/{userId}/rooms/{roomId}/tags"
TAG = V3 + "/user/{userId}/rooms/{roomId}/tags/{tag}"

ROOM = "!room:test.local"
#: A room ID of room version 12 (no server name).
ROOM_V12 = "!" + "A" * 43


def q(s: str) -> str:
    return quote(s, safe="")


class _Base(SpecMixin, TestCase):
    async def setUp(self) -> None:
        self.hs = await start_homeserver(self, bcrypt_rounds=4)
        self.alice = await self.hs.register_user("alice")
        self.bob = await self.hs.register_user("bob")
        self.me = self.alice["user_id"]

    async def req(self, method: str, path: str, body: Any = None, who: Any = "alice", raw: Optional[bytes] = None,
                  prefix: str = V3) -> tuple[int, Any]:
        token = None if who is None else (self.alice if who == "alice" else who)["access_token"]
        return await self.hs.request(method, prefix + path, body, token=token, raw=raw)

    async def assertError(self, status: int, errcode: str, method: str, path: str, body: Any = None,
                          who: Any = "alice", raw: Optional[bytes] = None) -> None:
        code, resp = await self.req(method, path, body, who, raw)
        self.assertEqual((code, (resp or {}).get("errcode")), (status, errcode), resp)

    def data(self, data_type: str, room_id: Optional[str] = None, user_id: Optional[str] = None) -> str:
        user = q(user_id or self.me)
        if room_id is None:
            return f"/user/{user}/account_data/{q(data_type)}"
        return f"/user/{user}/rooms/{q(room_id)}/account_data/{q(data_type)}"

    def tag(self, tag: Optional[str] = None, room_id: str = ROOM, user_id: Optional[str] = None) -> str:
        base = f"/user/{q(user_id or self.me)}/rooms/{q(room_id)}/tags"
        return base if tag is None else f"{base}/{q(tag)}"


class AccountDataTests(_Base):
    async def test_global_round_trip(self) -> None:
        content = {"custom_account_data_key": "custom_config_value", "n": [1, {"x": None}]}
        code, resp = await self.req("PUT", self.data("org.example.custom.config"), content)
        self.assertEqual((code, resp), (200, {}))
        self.assertMatchesSpec("PUT", GLOBAL_DATA, 200, resp)
        code, resp = await self.req("GET", self.data("org.example.custom.config"))
        self.assertEqual((code, resp), (200, content))
        self.assertMatchesSpec("GET", GLOBAL_DATA, 200, resp)
        # Replacing, not merging.
        await self.req("PUT", self.data("org.example.custom.config"), {"other": 1})
        _, resp = await self.req("GET", self.data("org.example.custom.config"))
        self.assertEqual(resp, {"other": 1})

    async def test_m_direct(self) -> None:
        direct = {"@bob:test.local": ["!abc:test.local", "!def:test.local"], "@carol:elsewhere.example": [ROOM_V12]}
        code, _ = await self.req("PUT", self.data("m.direct"), direct)
        self.assertEqual(code, 200)
        code, resp = await self.req("GET", self.data("m.direct"))
        self.assertEqual((code, resp), (200, direct))

    async def test_r0_prefix(self) -> None:
        code, _ = await self.req("PUT", self.data("org.example.r0"), {"a": 1}, prefix=R0)
        self.assertEqual(code, 200)
        code, resp = await self.req("GET", self.data("org.example.r0"), prefix=R0)
        self.assertEqual((code, resp), (200, {"a": 1}))

    async def test_unknown_type_is_404(self) -> None:
        await self.assertError(404, "M_NOT_FOUND", "GET", self.data("org.example.nothing"))
        await self.assertError(404, "M_NOT_FOUND", "GET", self.data("org.example.nothing", ROOM))

    async def test_empty_object_is_the_deletion_form(self) -> None:
        await self.req("PUT", self.data("org.example.gone"), {"a": 1})
        code, _ = await self.req("PUT", self.data("org.example.gone"), {})
        self.assertEqual(code, 200)
        code, resp = await self.req("GET", self.data("org.example.gone"))
        self.assertEqual((code, resp), (200, {}))

    async def test_no_delete_method(self) -> None:
        await self.assertError(405, "M_UNRECOGNIZED", "DELETE", self.data("org.example.x"))

    async def test_room_round_trip_and_no_inheritance(self) -> None:
        await self.req("PUT", self.data("org.example.cfg"), {"scope": "global"})
        code, resp = await self.req("PUT", self.data("org.example.cfg", ROOM), {"scope": "room"})
        self.assertEqual((code, resp), (200, {}))
        self.assertMatchesSpec("PUT", ROOM_DATA, 200, resp)
        code, resp = await self.req("GET", self.data("org.example.cfg", ROOM))
        self.assertEqual((code, resp), (200, {"scope": "room"}))
        self.assertMatchesSpec("GET", ROOM_DATA, 200, resp)
        _, resp = await self.req("GET", self.data("org.example.cfg"))
        self.assertEqual(resp, {"scope": "global"})
        # A room without its own entry does not fall back to the global one.
        await self.assertError(404, "M_NOT_FOUND", "GET", self.data("org.example.cfg", "!other:test.local"))
        # Room version 12 room IDs have no server name.
        code, _ = await self.req("PUT", self.data("org.example.cfg", ROOM_V12), {"v": 12})
        self.assertEqual(code, 200)
        _, resp = await self.req("GET", self.data("org.example.cfg", ROOM_V12))
        self.assertEqual(resp, {"v": 12})

    async def test_invalid_room_id_is_400(self) -> None:
        for room_id in ("@notaroomid:test.local", "room:test.local", "!nohost", "!x:bad host"):
            await self.assertError(400, "M_INVALID_PARAM", "GET", self.data("org.example.cfg", room_id))
            await self.assertError(400, "M_INVALID_PARAM", "PUT", self.data("org.example.cfg", room_id), {"a": 1})

    async def test_server_managed_types_are_405(self) -> None:
        for data_type in ("m.fully_read", "m.push_rules"):
            await self.assertError(405, "M_BAD_JSON", "PUT", self.data(data_type), {"event_id": "$x"})
            await self.assertError(405, "M_BAD_JSON", "PUT", self.data(data_type, ROOM), {"event_id": "$x"})

    async def test_server_managed_types_are_readable(self) -> None:
        await self.hs.storage.account_data.put(self.me, "m.fully_read", {"event_id": "$ev"}, ROOM)
        code, resp = await self.req("GET", self.data("m.fully_read", ROOM))
        self.assertEqual((code, resp), (200, {"event_id": "$ev"}))

    async def test_type_limits(self) -> None:
        await self.assertError(400, "M_INVALID_PARAM", "PUT", self.data(""), {"a": 1})
        await self.assertError(400, "M_INVALID_PARAM", "GET", self.data("", ROOM))
        long_type = "org.example." + "x" * 244
        await self.assertError(400, "M_INVALID_PARAM", "PUT", self.data(long_type), {"a": 1})
        code, _ = await self.req("PUT", self.data(long_type[:-1]), {"a": 1})
        self.assertEqual(code, 200)

    async def test_bodies_must_be_json_objects(self) -> None:
        for path in (self.data("org.example.x"), self.data("org.example.x", ROOM)):
            await self.assertError(400, "M_NOT_JSON", "PUT", path, raw=b"{nope")
            await self.assertError(400, "M_NOT_JSON", "PUT", path, raw=b"")
            await self.assertError(400, "M_NOT_JSON", "PUT", path, raw=b'{"a": NaN}')
            await self.assertError(400, "M_BAD_JSON", "PUT", path, raw=b"[1, 2]")
            await self.assertError(400, "M_BAD_JSON", "PUT", path, raw=b'"string"')
            # Lone surrogates are valid JSON text but not Unicode: refused, never a 500.
            await self.assertError(400, "M_BAD_JSON", "PUT", path, raw=b'{"a": "\\ud800"}')

    async def test_only_own_account_data(self) -> None:
        await self.req("PUT", self.data("org.example.secret"), {"s": 1})
        for path in (self.data("org.example.secret"), self.data("org.example.secret", ROOM)):
            await self.assertError(403, "M_FORBIDDEN", "GET", path, who=self.bob)
            await self.assertError(403, "M_FORBIDDEN", "PUT", path, {"evil": 1}, who=self.bob)
        _, resp = await self.req("GET", self.data("org.example.secret"))
        self.assertEqual(resp, {"s": 1})

    async def test_authentication(self) -> None:
        for path in (self.data("org.example.x"), self.data("org.example.x", ROOM)):
            await self.assertError(401, "M_MISSING_TOKEN", "GET", path, who=None)
            await self.assertError(401, "M_MISSING_TOKEN", "PUT", path, {"a": 1}, who=None)
            await self.assertError(401, "M_UNKNOWN_TOKEN", "GET", path, who={"access_token": "nope"})

    async def test_guests_are_refused(self) -> None:
        guest_id = await self.hs.components.registration.register_guest()
        guest = await self.hs.components.sessions.create_session(guest_id)
        path = self.data("org.example.x", user_id=guest_id)
        await self.assertError(403, "M_GUEST_ACCESS_FORBIDDEN", "PUT", path, {"a": 1}, who=guest)
        await self.assertError(403, "M_GUEST_ACCESS_FORBIDDEN", "GET", path, who=guest)
        await self.assertError(403, "M_GUEST_ACCESS_FORBIDDEN", "GET", self.tag(user_id=guest_id), who=guest)

    async def test_changes_advance_the_stream_for_sync(self) -> None:
        store = self.hs.storage.account_data
        before = store.stream.current
        await self.req("PUT", self.data("org.example.a"), {"a": 1})
        await self.req("PUT", self.data("org.example.b", ROOM), {"b": 2})
        after = store.stream.current
        self.assertEqual(after, before + 2)
        changed = await store.get_changed(self.me, before, after)
        self.assertCountEqual(changed, [("", "org.example.a", {"a": 1}), (ROOM, "org.example.b", {"b": 2})])
        # Bob sees none of it.
        self.assertEqual(await store.get_changed(self.bob["user_id"], before, after), [])


class TagTests(_Base):
    async def test_put_get_delete(self) -> None:
        code, resp = await self.req("GET", self.tag())
        self.assertEqual((code, resp), (200, {"tags": {}}))
        self.assertMatchesSpec("GET", TAGS, 200, resp)
        for tag, content in (("m.favourite", {"order": 0.1}), ("u.Work", {"order": 0.7}), ("u.Customers", {})):
            code, resp = await self.req("PUT", self.tag(tag), content)
            self.assertEqual((code, resp), (200, {}))
            self.assertMatchesSpec("PUT", TAG, 200, resp)
        code, resp = await self.req("GET", self.tag())
        expected = {"m.favourite": {"order": 0.1}, "u.Work": {"order": 0.7}, "u.Customers": {}}
        self.assertEqual((code, resp), (200, {"tags": expected}))
        self.assertMatchesSpec("GET", TAGS, 200, resp)
        # Tags are also the room's m.tag account data, which /sync delivers.
        code, resp = await self.req("GET", self.data("m.tag", ROOM))
        self.assertEqual((code, resp), (200, {"tags": expected}))
        code, resp = await self.req("DELETE", self.tag("u.Work"))
        self.assertEqual((code, resp), (200, {}))
        self.assertMatchesSpec("DELETE", TAG, 200, resp)
        del expected["u.Work"]
        _, resp = await self.req("GET", self.tag())
        self.assertEqual(resp, {"tags": expected})
        _, resp = await self.req("GET", self.data("m.tag", ROOM))
        self.assertEqual(resp, {"tags": expected})
        # Other rooms have their own tags.
        _, resp = await self.req("GET", self.tag(room_id="!other:test.local"))
        self.assertEqual(resp, {"tags": {}})

    async def test_replacing_a_tag(self) -> None:
        await self.req("PUT", self.tag("u.x"), {"order": 0.2, "org.example.extra": "kept"})
        await self.req("PUT", self.tag("u.x"), {"order": 0.3})
        _, resp = await self.req("GET", self.tag())
        self.assertEqual(resp, {"tags": {"u.x": {"order": 0.3}}})

    async def test_deleting_an_absent_tag_is_fine(self) -> None:
        store = self.hs.storage.account_data
        before = store.stream.current
        code, resp = await self.req("DELETE", self.tag("u.never"))
        self.assertEqual((code, resp), (200, {}))
        self.assertEqual(store.stream.current, before)

    async def test_tag_changes_advance_the_stream(self) -> None:
        store = self.hs.storage.account_data
        before = store.stream.current
        await self.req("PUT", self.tag("m.lowpriority"), {})
        self.assertEqual(store.stream.current, before + 1)
        changed = await store.get_changed(self.me, before, store.stream.current)
        self.assertEqual(changed, [(ROOM, "m.tag", {"tags": {"m.lowpriority": {}}})])

    async def test_order(self) -> None:
        for order in (0, 1, 0.5, 1.0, 0.0):
            code, resp = await self.req("PUT", self.tag("u.ok"), {"order": order})
            self.assertEqual(code, 200, (order, resp))
        for order in ("0.5", True, None, [0.5], {"v": 0.5}):
            await self.assertError(400, "M_BAD_JSON", "PUT", self.tag("u.bad"), {"order": order})
        for order in (-0.1, 1.01, 2, -1):
            await self.assertError(400, "M_BAD_JSON", "PUT", self.tag("u.bad"), {"order": order})
        _, resp = await self.req("GET", self.tag())
        self.assertEqual(list(resp["tags"]), ["u.ok"])

    async def test_tag_name_limits(self) -> None:
        fits = "u." + "ü" * 126 + "x"  # 2 + 252 + 1 = 255 bytes
        code, resp = await self.req("PUT", self.tag(fits), {})
        self.assertEqual(code, 200, resp)
        _, resp = await self.req("GET", self.tag())
        self.assertIn(fits, resp["tags"])
        too_long = "u." + "ü" * 127  # 256 bytes
        await self.assertError(400, "M_INVALID_PARAM", "PUT", self.tag(too_long), {})
        await self.assertError(400, "M_INVALID_PARAM", "DELETE", self.tag(too_long))
        await self.assertError(400, "M_INVALID_PARAM", "PUT", self.tag(""), {})

    async def test_bodies(self) -> None:
        await self.assertError(400, "M_NOT_JSON", "PUT", self.tag("u.x"), raw=b"nope")
        await self.assertError(400, "M_BAD_JSON", "PUT", self.tag("u.x"), raw=b"[]")
        await self.assertError(400, "M_BAD_JSON", "PUT", self.tag("u.x"), raw=b'{"org.example": "\\udc00"}')

    async def test_invalid_room_id(self) -> None:
        await self.assertError(400, "M_INVALID_PARAM", "GET", self.tag(room_id="not-a-room"))
        await self.assertError(400, "M_INVALID_PARAM", "PUT", self.tag("u.x", room_id="not-a-room"), {})
        await self.assertError(400, "M_INVALID_PARAM", "DELETE", self.tag("u.x", room_id="not-a-room"))

    async def test_only_own_tags(self) -> None:
        await self.req("PUT", self.tag("u.mine"), {})
        await self.assertError(403, "M_FORBIDDEN", "GET", self.tag(), who=self.bob)
        await self.assertError(403, "M_FORBIDDEN", "PUT", self.tag("u.evil"), {}, who=self.bob)
        await self.assertError(403, "M_FORBIDDEN", "DELETE", self.tag("u.mine"), who=self.bob)
        _, resp = await self.req("GET", self.tag())
        self.assertEqual(resp, {"tags": {"u.mine": {}}})

    async def test_authentication(self) -> None:
        await self.assertError(401, "M_MISSING_TOKEN", "GET", self.tag(), who=None)
        await self.assertError(401, "M_MISSING_TOKEN", "PUT", self.tag("u.x"), {}, who=None)
        await self.assertError(401, "M_MISSING_TOKEN", "DELETE", self.tag("u.x"), who=None)

    async def test_r0_prefix(self) -> None:
        code, _ = await self.req("PUT", self.tag("u.r0"), {"order": 0.5}, prefix=R0)
        self.assertEqual(code, 200)
        code, resp = await self.req("GET", self.tag(), prefix=R0)
        self.assertEqual((code, resp), (200, {"tags": {"u.r0": {"order": 0.5}}}))
