"""Registration over real HTTP: ``POST /register``, ``GET /register/available`` and the registration-token validity
check (spec: Client-Server API, "Account registration", "Token-authenticated registration", "Guest Access").

Success responses and the UIA 401 are also checked against the spec's OpenAPI schema when the bundle is present.
"""

from __future__ import annotations

import json
from typing import Any

import treq
from twisted.trial.unittest import TestCase

from tests.support.homeserver import RunningHomeserver, postgres_database, start_homeserver
from tests.support.spec import SpecCheckedCalls, spec_problems

V3 = "/_matrix/client/v3"
R0 = "/_matrix/client/r0"
REGISTER = V3 + "/register"
AVAILABLE = V3 + "/register/available"
VALIDITY = "/_matrix/client/v1/register/m.login.registration_token/validity"

UNLIMITED = {"per_second": 0, "burst_count": 0}
#: Fast hashing, no registration rate limit unless a test sets one.
FAST: dict[str, Any] = {
    "bcrypt_rounds": 4,
    "rc_registration": UNLIMITED,
    "rc_registration_token_validity": UNLIMITED,
}
OPEN: dict[str, Any] = {"enable_registration": True, "enable_registration_without_verification": True}
TOKENS: dict[str, Any] = {"registration_requires_token": True, "enable_registration": True}

def dummy(session: str) -> dict[str, Any]:
    return {"type": "m.login.dummy", "session": session}


def token_auth(token: str, session: str | None = None) -> dict[str, Any]:
    auth = {"type": "m.login.registration_token", "token": token}
    if session is not None:
        auth["session"] = session
    return auth


class RegisterTestCase(SpecCheckedCalls, TestCase):
    hs: RunningHomeserver

    def database(self) -> Any:
        return None  # the default SQLite database

    async def start(self, **overrides: Any) -> RunningHomeserver:
        config = {**FAST, **overrides}
        database = self.database()
        if database is not None:
            config["database"] = database
        self.hs = await start_homeserver(self, **config)
        return self.hs

    async def start_session(self, body: dict[str, Any], path: str = REGISTER) -> dict[str, Any]:
        """The first request of a registration: the UIA 401 with flows, params and session."""
        return await self.call("POST", path, body, expect=401)

    async def register_dummy(self, **body: Any) -> dict[str, Any]:
        first = await self.start_session(body)
        return await self.call("POST", REGISTER, {**body, "auth": dummy(first["session"])}, expect=200)

    async def assert_token_works(self, access_token: str, user_id: str, device_id: str) -> None:
        requester = await self.hs.components.auth.requester_for_token(access_token)
        self.assertEqual((requester.user_id, requester.device_id), (user_id, device_id))

    async def assert_password(self, user_id: str, password: str) -> None:
        user = await self.hs.storage.users.get_user(user_id)
        self.assertIsNotNone(user.password_hash)
        self.assertTrue(await self.hs.components.hasher.check(password, user.password_hash))


class ClosedRegistrationTests(RegisterTestCase):
    async def test_registration_is_closed_by_default(self):
        await self.start()
        await self.call("POST", REGISTER, {"username": "alice", "password": "pw"}, expect=403, errcode="M_FORBIDDEN")
        await self.call("POST", REGISTER, {}, expect=403, errcode="M_FORBIDDEN")
        await self.call("GET", AVAILABLE + "?username=alice", expect=403, errcode="M_FORBIDDEN", spec=False)
        await self.call("GET", VALIDITY + "?token=abc", expect=403, errcode="M_FORBIDDEN")

    async def test_enable_registration_alone_offers_no_flow(self):
        # Without email or captcha verification, open registration needs enable_registration_without_verification.
        await self.start(enable_registration=True)
        await self.call("POST", REGISTER, {"username": "alice", "password": "pw"}, expect=403, errcode="M_FORBIDDEN")

    async def test_without_verification_alone_does_not_open_registration(self):
        await self.start(enable_registration_without_verification=True)
        await self.call("POST", REGISTER, {"username": "alice", "password": "pw"}, expect=403, errcode="M_FORBIDDEN")

    async def test_unknown_kind(self):
        await self.start(**OPEN)
        await self.call("POST", REGISTER + "?kind=admin", {}, expect=400, errcode="M_INVALID_PARAM", spec=False)

    async def test_request_with_access_token_is_refused(self):
        hs = await self.start(**OPEN)
        alice = await hs.register_user("alice", "pw")
        await self.call(
            "POST", REGISTER, {"username": "bob", "password": "pw"}, token=alice["access_token"], expect=400, spec=False
        )
        self.assertIsNone(await hs.storage.users.get_user("@bob:test.local"))

    async def test_body_must_be_a_json_object(self):
        await self.start(**OPEN)
        await self.call("POST", REGISTER, raw=b"[1, 2]", expect=400, errcode="M_BAD_JSON", spec=False)
        await self.call("POST", REGISTER, raw=b"{not json", expect=400, errcode="M_NOT_JSON", spec=False)


class DummyFlowTests(RegisterTestCase):
    async def test_uia_401_shape(self):
        await self.start(**OPEN)
        body = await self.start_session({"username": "alice", "password": "pw"})
        self.assertEqual(body["flows"], [{"stages": ["m.login.dummy"]}])
        self.assertEqual(body["params"], {})
        self.assertIsInstance(body["session"], str)
        self.assertNotIn("completed", body)
        self.assertNotIn("errcode", body)

    async def test_dummy_flow_registers_and_logs_in(self):
        hs = await self.start(**OPEN)
        first = await self.start_session({"username": "alice", "password": "correct horse"})
        body = await self.call(
            "POST", REGISTER, {"username": "alice", "password": "correct horse", "auth": dummy(first["session"])}, expect=200
        )
        self.assertEqual(body["user_id"], "@alice:test.local")
        self.assertEqual(body["home_server"], "test.local")
        self.assertNotIn("refresh_token", body)
        await self.assert_token_works(body["access_token"], "@alice:test.local", body["device_id"])
        await self.assert_password("@alice:test.local", "correct horse")
        user = await hs.storage.users.get_user("@alice:test.local")
        self.assertFalse(user.is_guest)
        self.assertFalse(user.admin)
        self.assertEqual(await hs.storage.profiles.get_profile("@alice:test.local"), {"displayname": "alice"})

    async def test_auth_on_the_first_request(self):
        await self.start(**OPEN)
        body = await self.call(
            "POST", REGISTER, {"username": "alice", "password": "pw", "auth": {"type": "m.login.dummy"}}, expect=200
        )
        self.assertEqual(body["user_id"], "@alice:test.local")

    async def test_r0_path(self):
        await self.start(**OPEN)
        first = await self.start_session({"username": "alice", "password": "pw"}, path=R0 + "/register")
        body = await self.call(
            "POST", R0 + "/register", {"username": "alice", "password": "pw", "auth": dummy(first["session"])}, expect=200
        )
        self.assertEqual(body["user_id"], "@alice:test.local")

    async def test_password_sent_only_on_the_first_request_is_kept_hashed(self):
        hs = await self.start(**OPEN)
        first = await self.start_session({"username": "alice", "password": "s3cret pass"})
        session = await hs.storage.uia.get_session(first["session"])
        self.assertNotIn("password", session.clientdict)
        self.assertNotIn("s3cret pass", json.dumps(session.clientdict) + json.dumps(session.serverdict))
        self.assertTrue(session.serverdict["password_hash"].startswith("$2"))
        body = await self.call("POST", REGISTER, {"auth": dummy(first["session"])}, expect=200)
        self.assertEqual(body["user_id"], "@alice:test.local")
        await self.assert_password("@alice:test.local", "s3cret pass")

    async def test_password_is_required(self):
        hs = await self.start(**OPEN)
        first = await self.start_session({"username": "alice"})
        await self.call(
            "POST", REGISTER, {"username": "alice", "auth": dummy(first["session"])}, expect=400, errcode="M_MISSING_PARAM",
            spec=False,
        )
        self.assertIsNone(await hs.storage.users.get_user("@alice:test.local"))
        # The same session can still finish once the password comes.
        body = await self.call(
            "POST", REGISTER, {"username": "alice", "password": "pw", "auth": dummy(first["session"])}, expect=200
        )
        self.assertEqual(body["user_id"], "@alice:test.local")

    async def test_bad_passwords(self):
        await self.start(**OPEN)
        for password in (12345, ["pw"], {"a": 1}, True):
            await self.call(
                "POST", REGISTER, {"username": "alice", "password": password}, expect=400, errcode="M_INVALID_PARAM",
                spec=False,
            )
        await self.call(
            "POST", REGISTER, {"username": "alice", "password": "x" * 513}, expect=400, errcode="M_INVALID_PARAM",
            spec=False,
        )
        # Longer than bcrypt's 72 bytes but within the limit: accepted, and the whole password is what logs in.
        long_password = "\u00e9" * 100 + "x" * 312
        body = await self.register_dummy(username="alice", password=long_password)
        await self.assert_password(body["user_id"], long_password)

    async def test_server_generates_a_username(self):
        hs = await self.start(**OPEN)
        body = await self.register_dummy(password="pw")
        localpart = body["user_id"][1:].split(":")[0]
        self.assertFalse(localpart.isdigit())
        self.assertRegex(localpart, r"^[a-z0-9._=\-/+]+$")
        await self.assert_password(body["user_id"], "pw")
        self.assertFalse((await hs.storage.users.get_user(body["user_id"])).is_guest)

    async def test_username_is_lowercased(self):
        await self.start(**OPEN)
        body = await self.register_dummy(username="Alice", password="pw")
        self.assertEqual(body["user_id"], "@alice:test.local")

    async def test_invalid_usernames_are_refused_before_uia(self):
        hs = await self.start(**OPEN)
        for username in ("bad name", "caf\u00e9", "_reserved", "12345", "a:b", "", "x" * 300):
            await self.call(
                "POST", REGISTER, {"username": username, "password": "pw"}, expect=400, errcode="M_INVALID_USERNAME"
            )
        for username in (42, ["alice"], "x" * 513):
            await self.call(
                "POST", REGISTER, {"username": username, "password": "pw"}, expect=400, errcode="M_INVALID_USERNAME"
            )
        self.assertEqual(await hs.storage.users.count_users(), 0)

    async def test_taken_username_is_refused_before_uia_case_insensitively(self):
        hs = await self.start(**OPEN)
        await hs.register_user("alice", "pw")
        await hs.storage.users.create_user("@Carol:test.local", None, 0)  # a historical mixed-case user ID
        for username in ("alice", "ALICE", "carol"):
            await self.call("POST", REGISTER, {"username": username, "password": "pw"}, expect=400, errcode="M_USER_IN_USE")

    async def test_username_taken_during_uia(self):
        hs = await self.start(**OPEN)
        first = await self.start_session({"username": "alice", "password": "pw"})
        await hs.register_user("alice", "other")
        await self.call(
            "POST", REGISTER, {"auth": dummy(first["session"])}, expect=400, errcode="M_USER_IN_USE"
        )

    async def test_retrying_a_finished_session_returns_the_same_account(self):
        hs = await self.start(**OPEN)
        first = await self.start_session({"username": "alice", "password": "pw"})
        done = await self.call(
            "POST", REGISTER, {"username": "alice", "password": "pw", "auth": dummy(first["session"])}, expect=200
        )
        again = await self.call(
            "POST", REGISTER, {"username": "alice", "password": "pw", "auth": dummy(first["session"])}, expect=200
        )
        self.assertEqual(again["user_id"], done["user_id"])
        self.assertEqual(await hs.storage.users.count_users(), 1)
        # A new session for the same name is refused as usual.
        await self.call("POST", REGISTER, {"username": "alice", "password": "pw"}, expect=400, errcode="M_USER_IN_USE")

    async def test_inhibit_login(self):
        hs = await self.start(**OPEN)
        body = await self.register_dummy(username="alice", password="pw", inhibit_login=True)
        self.assertEqual(body, {"user_id": "@alice:test.local", "home_server": "test.local"})
        self.assertEqual(await hs.storage.devices.get_devices("@alice:test.local"), [])

    async def test_inhibit_login_must_be_a_boolean(self):
        await self.start(**OPEN)
        await self.call(
            "POST", REGISTER, {"username": "alice", "password": "pw", "inhibit_login": "yes"}, expect=400,
            errcode="M_INVALID_PARAM", spec=False,
        )

    async def test_refresh_token(self):
        await self.start(**OPEN, refreshable_access_token_lifetime="5m")
        body = await self.register_dummy(username="alice", password="pw", refresh_token=True)
        self.assertIsInstance(body["refresh_token"], str)
        self.assertEqual(body["expires_in_ms"], 300_000)
        await self.assert_token_works(body["access_token"], "@alice:test.local", body["device_id"])
        await self.call(
            "POST", REGISTER, {"username": "bob", "password": "pw", "refresh_token": "yes"}, expect=400,
            errcode="M_INVALID_PARAM", spec=False,
        )

    async def test_device_id_and_display_name(self):
        hs = await self.start(**OPEN)
        body = await self.register_dummy(
            username="alice", password="pw", device_id="GHTYAJCE", initial_device_display_name="Jungle Phone"
        )
        self.assertEqual(body["device_id"], "GHTYAJCE")
        device = await hs.storage.devices.get_device("@alice:test.local", "GHTYAJCE")
        self.assertEqual(device.display_name, "Jungle Phone")
        await self.call(
            "POST", REGISTER, {"username": "bob", "password": "pw", "device_id": 7}, expect=400, errcode="M_INVALID_PARAM",
            spec=False,
        )

    async def test_display_name_sent_alone_does_not_wipe_the_session(self):
        hs = await self.start(**OPEN)
        first = await self.start_session({"username": "alice", "password": "pw", "device_id": "DEV"})
        await self.call(
            "POST", REGISTER, {"initial_device_display_name": "Phone", "auth": dummy(first["session"])}, expect=200
        )
        self.assertIsNotNone(await hs.storage.devices.get_device("@alice:test.local", "DEV"))


class GuestTests(RegisterTestCase):
    async def test_guests_refused_unless_allowed(self):
        await self.start(**OPEN)
        await self.call("POST", REGISTER + "?kind=guest", {}, expect=403, errcode="M_GUEST_ACCESS_FORBIDDEN")

    async def test_guest_registration(self):
        # Guest access does not depend on registration being open.
        hs = await self.start(allow_guest_access=True)
        body = await self.call(
            "POST", REGISTER + "?kind=guest",
            {"username": "alice", "password": "pw", "device_id": "MINE", "initial_device_display_name": "Guest phone"},
            expect=200,
        )
        localpart = body["user_id"][1:].split(":")[0]
        self.assertTrue(localpart.isdigit())
        self.assertNotEqual(body["device_id"], "MINE")
        user = await hs.storage.users.get_user(body["user_id"])
        self.assertTrue(user.is_guest)
        self.assertIsNone(user.password_hash)
        requester = await hs.components.auth.requester_for_token(body["access_token"])
        self.assertTrue(requester.is_guest)
        device = await hs.storage.devices.get_device(body["user_id"], body["device_id"])
        self.assertEqual(device.display_name, "Guest phone")
        second = await self.call("POST", R0 + "/register?kind=guest", {}, expect=200)
        self.assertNotEqual(second["user_id"], body["user_id"])

    async def test_guest_with_empty_body(self):
        await self.start(allow_guest_access=True)
        body = await self.call("POST", REGISTER + "?kind=guest", raw=b"", expect=200)
        self.assertIn("access_token", body)


class RateLimitTests(RegisterTestCase):
    async def test_registrations_per_address_are_limited(self):
        hs = await self.start(**OPEN, allow_guest_access=True, rc_registration={"per_second": 0.001, "burst_count": 2})
        await self.register_dummy(username="alice", password="pw")
        await self.call("POST", REGISTER + "?kind=guest", {}, expect=200)
        body = await self.call("POST", REGISTER, {"username": "carol", "password": "pw"}, expect=429, errcode="M_LIMIT_EXCEEDED")
        self.assertIsInstance(body["retry_after_ms"], int)
        self.assertGreater(body["retry_after_ms"], 0)
        response = await treq.post(
            hs.base_url + REGISTER + "?kind=guest", json.dumps({}).encode(), persistent=False
        )
        self.assertEqual(response.code, 429)
        self.assertGreaterEqual(int(response.headers.getRawHeaders(b"retry-after")[0]), 1)
        await response.content()
        self.assertEqual(await hs.storage.users.count_users(), 2)

    async def test_unfinished_attempts_do_not_use_the_budget(self):
        await self.start(**OPEN, rc_registration={"per_second": 0.001, "burst_count": 1})
        for _ in range(5):
            await self.start_session({"username": "alice", "password": "pw"})
        await self.register_dummy(username="alice", password="pw")


class AvailabilityTests(RegisterTestCase):
    async def test_available(self):
        hs = await self.start(**OPEN)
        for path in (AVAILABLE, R0 + "/register/available"):
            body = await self.call("GET", path + "?username=alice", expect=200)
            self.assertEqual(body, {"available": True})
        await hs.register_user("alice", "pw")
        await self.call("GET", AVAILABLE + "?username=alice", expect=400, errcode="M_USER_IN_USE")
        await self.call("GET", AVAILABLE + "?username=ALICE", expect=400, errcode="M_USER_IN_USE")
        for bad in ("bad%20name", "_x", "12345", "a%3Ab"):
            await self.call("GET", AVAILABLE + "?username=" + bad, expect=400, errcode="M_INVALID_USERNAME")
        await self.call("GET", AVAILABLE, expect=400, errcode="M_MISSING_PARAM", spec=False)

    async def test_available_with_token_registration(self):
        await self.start(**TOKENS)
        await self.call("GET", AVAILABLE + "?username=alice", expect=200)

    async def test_available_is_rate_limited(self):
        await self.start(**OPEN)
        statuses = []
        for i in range(12):
            status, body = await self.hs.request("GET", AVAILABLE + f"?username=user{i}")
            statuses.append(status)
            if status == 429:
                self.assertEqual(body["errcode"], "M_LIMIT_EXCEEDED")
                self.assertEqual(spec_problems("GET", AVAILABLE, status, body), [])
        self.assertEqual(statuses[0], 200)
        self.assertEqual(statuses[-1], 429)


class RegistrationTokenTests(RegisterTestCase):
    async def new_token(self, token: str, uses_allowed: int | None = None, expiry_time: int | None = None) -> None:
        await self.hs.storage.registration_tokens.create(token, uses_allowed, expiry_time)

    async def counts(self, token: str) -> tuple[int, int]:
        found = await self.hs.storage.registration_tokens.get(token)
        return found.pending, found.completed

    async def test_token_flow_is_offered_even_when_registration_is_otherwise_closed(self):
        await self.start(**TOKENS)
        body = await self.start_session({"username": "alice", "password": "pw"})
        self.assertEqual(body["flows"], [{"stages": ["m.login.registration_token"]}])

    async def test_token_flow_replaces_the_dummy_flow(self):
        await self.start(**{**OPEN, **TOKENS})
        body = await self.start_session({"username": "alice", "password": "pw"})
        self.assertEqual(body["flows"], [{"stages": ["m.login.registration_token"]}])
        refused = await self.call(
            "POST", REGISTER, {"username": "alice", "password": "pw", "auth": dummy(body["session"])}, expect=401
        )
        self.assertEqual(refused["errcode"], "M_UNRECOGNIZED")
        self.assertIsNone(await self.hs.storage.users.get_user("@alice:test.local"))

    async def test_valid_token_registers_and_is_used_up(self):
        await self.start(**TOKENS)
        await self.new_token("fBVFdqVE", uses_allowed=1)
        first = await self.start_session({"username": "alice", "password": "pw"})
        body = await self.call(
            "POST", REGISTER, {"auth": token_auth("fBVFdqVE", first["session"])}, expect=200
        )
        self.assertEqual(body["user_id"], "@alice:test.local")
        self.assertEqual(await self.counts("fBVFdqVE"), (0, 1))
        # Exhausted now.
        second = await self.start_session({"username": "bob", "password": "pw"})
        refused = await self.call(
            "POST", REGISTER, {"auth": token_auth("fBVFdqVE", second["session"])}, expect=401
        )
        self.assertEqual(refused["errcode"], "M_UNAUTHORIZED")
        self.assertEqual(refused["flows"], [{"stages": ["m.login.registration_token"]}])
        self.assertNotIn("completed", refused)
        self.assertIsNone(await self.hs.storage.users.get_user("@bob:test.local"))
        self.assertEqual(await self.counts("fBVFdqVE"), (0, 1))

    async def test_pending_until_the_registration_finishes(self):
        await self.start(**TOKENS)
        await self.new_token("abc", uses_allowed=2)
        first = await self.start_session({"username": "alice"})
        # The token stage passes but there is no password yet: the use stays pending.
        await self.call(
            "POST", REGISTER, {"auth": token_auth("abc", first["session"])}, expect=400, errcode="M_MISSING_PARAM",
            spec=False,
        )
        self.assertEqual(await self.counts("abc"), (1, 0))
        body = await self.call(
            "POST", REGISTER, {"username": "alice", "password": "pw", "auth": token_auth("abc", first["session"])},
            expect=200,
        )
        self.assertEqual(body["user_id"], "@alice:test.local")
        self.assertEqual(await self.counts("abc"), (0, 1))
        # A retry of the finished session does not count the token twice.
        await self.call(
            "POST", REGISTER, {"username": "alice", "password": "pw", "auth": token_auth("abc", first["session"])},
            expect=200,
        )
        self.assertEqual(await self.counts("abc"), (0, 1))

    async def test_unknown_expired_and_exhausted_tokens(self):
        hs = await self.start(**TOKENS)
        now_ms = int(hs.service.reactor.seconds() * 1000)
        await self.new_token("expired", expiry_time=now_ms - 1000)
        await self.new_token("exhausted", uses_allowed=0)
        for token in ("unknown", "expired", "exhausted"):
            first = await self.start_session({"username": "alice", "password": "pw"})
            body = await self.call("POST", REGISTER, {"auth": token_auth(token, first["session"])}, expect=401)
            self.assertEqual(body["errcode"], "M_UNAUTHORIZED", token)
        self.assertIsNone(await hs.storage.users.get_user("@alice:test.local"))
        self.assertEqual(await self.counts("expired"), (0, 0))
        self.assertEqual(await self.counts("exhausted"), (0, 0))

    async def test_token_in_the_first_request(self):
        await self.start(**TOKENS)
        await self.new_token("abc")
        body = await self.call(
            "POST", REGISTER, {"username": "alice", "password": "pw", "auth": token_auth("abc")}, expect=200
        )
        self.assertEqual(body["user_id"], "@alice:test.local")
        self.assertEqual(await self.counts("abc"), (0, 1))

    async def test_validity(self):
        hs = await self.start(**TOKENS)
        now_ms = int(hs.service.reactor.seconds() * 1000)
        await self.new_token("good", uses_allowed=3)
        await self.new_token("later", expiry_time=now_ms + 3_600_000)
        await self.new_token("expired", expiry_time=now_ms - 1)
        await self.new_token("exhausted", uses_allowed=0)
        for token, valid in (("good", True), ("later", True), ("expired", False), ("exhausted", False), ("nope", False)):
            body = await self.call("GET", VALIDITY + "?token=" + token, expect=200)
            self.assertEqual(body, {"valid": valid}, token)
        await self.call("GET", VALIDITY, expect=400, errcode="M_MISSING_PARAM", spec=False)

    async def test_validity_is_rate_limited(self):
        await self.start(**TOKENS, rc_registration_token_validity={"per_second": 0.001, "burst_count": 2})
        await self.call("GET", VALIDITY + "?token=a", expect=200)
        await self.call("GET", VALIDITY + "?token=b", expect=200)
        body = await self.call("GET", VALIDITY + "?token=c", expect=429, errcode="M_LIMIT_EXCEEDED")
        self.assertGreater(body["retry_after_ms"], 0)

    async def test_validity_refused_when_tokens_are_not_used(self):
        await self.start(**OPEN)
        await self.call("GET", VALIDITY + "?token=abc", expect=403, errcode="M_FORBIDDEN")


class DummyFlowTestsPostgres(DummyFlowTests):
    """The same, with the server on PostgreSQL."""

    def database(self) -> Any:
        return postgres_database(self)


class RegistrationTokenTestsPostgres(RegistrationTokenTests):
    """The same, with the server on PostgreSQL."""

    def database(self) -> Any:
        return postgres_database(self)
