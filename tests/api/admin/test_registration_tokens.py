"""The registration tokens admin API over real HTTP (``/_synapse/admin/v1/registration_tokens``, Synapse's)."""

from __future__ import annotations

import re
from typing import Any

from twisted.trial.unittest import TestCase

from mxtwisted.api.admin.registration_tokens import TOKEN_CHARACTERS
from tests.support.homeserver import RunningHomeserver, postgres_database, start_homeserver

TOKENS = "/_synapse/admin/v1/registration_tokens"
REGISTER = "/_matrix/client/v3/register"
DAY_MS = 86_400_000


class RegistrationTokensAdminTests(TestCase):
    hs: RunningHomeserver
    admin: str

    def database(self) -> Any:
        return None  # the default SQLite database

    async def start(self, **overrides: Any) -> RunningHomeserver:
        database = self.database()
        if database is not None:
            overrides["database"] = database
        self.hs = await start_homeserver(self, bcrypt_rounds=4, rc_registration={"per_second": 0, "burst_count": 0},
                                         **overrides)
        self.admin = (await self.hs.register_user("root", "pw", admin=True))["access_token"]
        return self.hs

    def now_ms(self) -> int:
        return int(self.hs.service.reactor.seconds() * 1000)

    async def call(self, method: str, path: str, body: Any = None, token: Any = "admin", expect: int = 200,
                   errcode: str | None = None) -> Any:
        status, response = await self.hs.request(method, path, body, token=self.admin if token == "admin" else token)
        self.assertEqual(status, expect, response)
        if errcode is not None:
            self.assertEqual(response["errcode"], errcode, response)
        return response

    async def test_only_admins(self):
        hs = await self.start()
        user = (await hs.register_user("alice", "pw"))["access_token"]
        for method, path, body in (
            ("GET", TOKENS, None),
            ("POST", TOKENS + "/new", {}),
            ("GET", TOKENS + "/abc", None),
            ("PUT", TOKENS + "/abc", {}),
            ("DELETE", TOKENS + "/abc", None),
        ):
            await self.call(method, path, body, token=user, expect=403, errcode="M_FORBIDDEN")
            await self.call(method, path, body, token=None, expect=401, errcode="M_MISSING_TOKEN")
            await self.call(method, path, body, token="nonsense", expect=401, errcode="M_UNKNOWN_TOKEN")
        self.assertEqual(await hs.storage.registration_tokens.list(), [])

    async def test_create_with_defaults(self):
        await self.start()
        token = await self.call("POST", TOKENS + "/new", {})
        self.assertRegex(token["token"], "^[" + re.escape(TOKEN_CHARACTERS) + "]{16}$")
        self.assertEqual(
            {k: v for k, v in token.items() if k != "token"},
            {"uses_allowed": None, "pending": 0, "completed": 0, "expiry_time": None},
        )
        short = await self.call("POST", TOKENS + "/new", {"length": 5})
        self.assertEqual(len(short["token"]), 5)

    async def test_create_named_token(self):
        await self.start()
        expiry = self.now_ms() + DAY_MS
        token = await self.call("POST", TOKENS + "/new", {"token": "defg", "uses_allowed": 1, "expiry_time": expiry})
        self.assertEqual(token, {"token": "defg", "uses_allowed": 1, "pending": 0, "completed": 0, "expiry_time": expiry})
        await self.call("POST", TOKENS + "/new", {"token": "defg"}, expect=400, errcode="M_INVALID_PARAM")
        self.assertEqual(await self.call("GET", TOKENS + "/defg"), token)

    async def test_create_validation(self):
        await self.start()
        for body in (
            {"token": 5},
            {"token": ""},
            {"token": "x" * 65},
            {"token": "white space"},
            {"token": "slash/"},
            {"length": 0},
            {"length": 65},
            {"length": "16"},
            {"length": True},
            {"uses_allowed": -1},
            {"uses_allowed": 1.5},
            {"uses_allowed": "3"},
            {"expiry_time": "tomorrow"},
            {"expiry_time": 1000},  # in the past
        ):
            await self.call("POST", TOKENS + "/new", body, expect=400, errcode="M_INVALID_PARAM")
        await self.call("POST", TOKENS + "/new", {"token": "A-z_0.9~", "uses_allowed": 0})

    async def test_list_and_valid_filter(self):
        hs = await self.start()
        now = self.now_ms()
        await self.call("POST", TOKENS + "/new", {"token": "good", "uses_allowed": 2})
        await self.call("POST", TOKENS + "/new", {"token": "used", "uses_allowed": 0})
        await hs.storage.registration_tokens.create("old", None, now - 1)
        listed = await self.call("GET", TOKENS)
        self.assertEqual(sorted(t["token"] for t in listed["registration_tokens"]), ["good", "old", "used"])
        valid = await self.call("GET", TOKENS + "?valid=true")
        self.assertEqual([t["token"] for t in valid["registration_tokens"]], ["good"])
        invalid = await self.call("GET", TOKENS + "?valid=false")
        self.assertEqual(sorted(t["token"] for t in invalid["registration_tokens"]), ["old", "used"])
        await self.call("GET", TOKENS + "?valid=maybe", expect=400, errcode="M_INVALID_PARAM")

    async def test_get_update_delete(self):
        await self.start()
        await self.call("POST", TOKENS + "/new", {"token": "abcd", "uses_allowed": 3})
        expiry = self.now_ms() + DAY_MS
        updated = await self.call("PUT", TOKENS + "/abcd", {"uses_allowed": 5, "expiry_time": expiry})
        self.assertEqual(updated, {"token": "abcd", "uses_allowed": 5, "pending": 0, "completed": 0, "expiry_time": expiry})
        updated = await self.call("PUT", TOKENS + "/abcd", {"uses_allowed": None})
        self.assertEqual((updated["uses_allowed"], updated["expiry_time"]), (None, expiry))
        unchanged = await self.call("PUT", TOKENS + "/abcd", {})
        self.assertEqual(unchanged, updated)
        for body in ({"uses_allowed": -2}, {"expiry_time": 5}, {"expiry_time": "soon"}):
            await self.call("PUT", TOKENS + "/abcd", body, expect=400, errcode="M_INVALID_PARAM")
        self.assertEqual(await self.call("DELETE", TOKENS + "/abcd"), {})
        await self.call("GET", TOKENS + "/abcd", expect=404, errcode="M_NOT_FOUND")
        await self.call("PUT", TOKENS + "/abcd", {"uses_allowed": 1}, expect=404, errcode="M_NOT_FOUND")
        await self.call("DELETE", TOKENS + "/abcd", expect=404, errcode="M_NOT_FOUND")

    async def test_token_named_new(self):
        await self.start()
        await self.call("POST", TOKENS + "/new", {"token": "new"})
        self.assertEqual((await self.call("GET", TOKENS + "/new"))["token"], "new")
        self.assertEqual((await self.call("PUT", TOKENS + "/new", {"uses_allowed": 1}))["uses_allowed"], 1)
        await self.call("DELETE", TOKENS + "/new")

    async def test_counts_follow_registrations(self):
        hs = await self.start(registration_requires_token=True, enable_registration=True)
        await self.call("POST", TOKENS + "/new", {"token": "invite", "uses_allowed": 2})
        status, first = await hs.request("POST", REGISTER, {"username": "alice"})
        self.assertEqual(status, 401)
        auth = {"type": "m.login.registration_token", "token": "invite", "session": first["session"]}
        status, _ = await hs.request("POST", REGISTER, {"auth": auth})
        self.assertEqual(status, 400)  # no password yet: the use is pending
        self.assertEqual((await self.call("GET", TOKENS + "/invite"))["pending"], 1)
        status, _ = await hs.request("POST", REGISTER, {"username": "alice", "password": "pw", "auth": auth})
        self.assertEqual(status, 200)
        token = await self.call("GET", TOKENS + "/invite")
        self.assertEqual((token["pending"], token["completed"]), (0, 1))


class RegistrationTokensAdminTestsPostgres(RegistrationTokensAdminTests):
    """The same, with the server on PostgreSQL."""

    def database(self) -> Any:
        return postgres_database(self)
