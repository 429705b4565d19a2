"""Login, refresh, logout, whoami and /login/get_token over real HTTP (spec: Client-Server API, "Legacy API").

Every success response, and every refusal the spec documents for the
operation, is checked against the spec's OpenAPI schema as well.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import reactor
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase

from tests.support.homeserver import RunningHomeserver, start_homeserver
from tests.support.spec import SpecCheckedCalls

V3 = "/_matrix/client/v3"
R0 = "/_matrix/client/r0"
LOGIN = V3 + "/login"
REFRESH = V3 + "/refresh"
LOGOUT = V3 + "/logout"
LOGOUT_ALL = V3 + "/logout/all"
WHOAMI = V3 + "/account/whoami"
GET_TOKEN = "/_matrix/client/v1/login/get_token"

UNLIMITED = {"per_second": 0, "burst_count": 0}
#: Fast hashing, and no login rate limits unless a test sets them.
FAST: dict[str, Any] = {
    "bcrypt_rounds": 4,
    "rc_login": {"address": UNLIMITED, "account": UNLIMITED, "failed_attempts": UNLIMITED},
}

def sleep(seconds: float) -> Any:
    return deferLater(reactor, seconds, lambda: None)


def password_login(user: str, password: str, **extra: Any) -> dict[str, Any]:
    return {"type": "m.login.password", "identifier": {"type": "m.id.user", "user": user}, "password": password, **extra}


class LoginTestCase(SpecCheckedCalls, TestCase):
    hs: RunningHomeserver

    async def start(self, **overrides: Any) -> RunningHomeserver:
        config = dict(FAST)
        config["rc_login"] = {**FAST["rc_login"], **overrides.pop("rc_login", {})}
        config.update(overrides)
        self.hs = await start_homeserver(self, **config)
        return self.hs

    async def login(self, user: str = "alice", password: str = "pw", **extra: Any) -> dict[str, Any]:
        return await self.call("POST", LOGIN, password_login(user, password, **extra), expect=200)

    async def assert_token_dead(self, token: str, soft_logout: bool = False) -> None:
        body = await self.call("GET", WHOAMI, token=token, expect=401, errcode="M_UNKNOWN_TOKEN")
        self.assertEqual(body.get("soft_logout", False), soft_logout)


class GetLoginFlowsTests(LoginTestCase):
    async def test_password_and_token_flows(self):
        await self.start()
        for prefix in (V3, R0):
            body = await self.call("GET", prefix + "/login", expect=200)
            self.assertEqual(body, {"flows": [{"type": "m.login.password"}, {"type": "m.login.token"}]})

    async def test_no_password_flow_when_passwords_are_disabled(self):
        await self.start(password_config={"enabled": False})
        body = await self.call("GET", LOGIN, expect=200)
        self.assertEqual(body, {"flows": [{"type": "m.login.token"}]})
        await self.hs.register_user("alice", "pw")
        await self.call("POST", LOGIN, password_login("alice", "pw"), expect=400, errcode="M_UNKNOWN")

    async def test_get_login_token_is_advertised_when_enabled(self):
        await self.start(login_via_existing_session={"enabled": True})
        body = await self.call("GET", LOGIN, expect=200)
        self.assertIn({"type": "m.login.token", "get_login_token": True}, body["flows"])


class PasswordLoginTests(LoginTestCase):
    async def test_login_with_localpart(self):
        hs = await self.start()
        await hs.register_user("alice", "pw")
        body = await self.login("alice", "pw", initial_device_display_name="Jungle Phone")
        self.assertEqual(body["user_id"], "@alice:test.local")
        self.assertEqual(body["home_server"], "test.local")
        self.assertEqual(body["well_known"], {"m.homeserver": {"base_url": hs.config.public_baseurl.rstrip("/") + "/"}})
        self.assertNotIn("refresh_token", body)
        self.assertNotIn("expires_in_ms", body)
        me = await self.call("GET", WHOAMI, token=body["access_token"], expect=200)
        self.assertEqual(me, {"user_id": "@alice:test.local", "device_id": body["device_id"], "is_guest": False})
        device = await hs.storage.devices.get_device("@alice:test.local", body["device_id"])
        self.assertEqual(device.display_name, "Jungle Phone")

    async def test_login_on_r0(self):
        hs = await self.start()
        await hs.register_user("alice", "pw")
        body = await self.call("POST", R0 + "/login", password_login("alice", "pw"), expect=200)
        self.assertEqual(body["user_id"], "@alice:test.local")

    async def test_full_user_id_legacy_user_field_and_case_insensitive_match(self):
        hs = await self.start()
        await hs.register_user("alice", "pw")
        for who in ("@alice:test.local", "ALICE", "@Alice:test.local"):
            body = await self.login(who, "pw")
            self.assertEqual(body["user_id"], "@alice:test.local")
        body = await self.call("POST", LOGIN, {"type": "m.login.password", "user": "Alice", "password": "pw"}, expect=200)
        self.assertEqual(body["user_id"], "@alice:test.local")

    async def test_wrong_password_and_unknown_user_look_the_same(self):
        hs = await self.start()
        await hs.register_user("alice", "pw")
        wrong = await self.call("POST", LOGIN, password_login("alice", "nope"), expect=403, errcode="M_FORBIDDEN")
        unknown = await self.call("POST", LOGIN, password_login("bob", "pw"), expect=403, errcode="M_FORBIDDEN")
        remote = await self.call("POST", LOGIN, password_login("@alice:elsewhere.org", "pw"), expect=403)
        self.assertEqual(wrong["error"], "Invalid username or password")
        self.assertEqual(wrong, unknown)
        self.assertEqual(wrong, remote)

    async def test_deactivated_user_with_wiped_password_is_forbidden(self):
        hs = await self.start()
        await hs.register_user("alice", "pw")
        await hs.storage.tokens.deactivate_user("@alice:test.local")
        # The spec allows M_FORBIDDEN when the server can no longer authenticate the user (password wiped).
        await self.call("POST", LOGIN, password_login("alice", "pw"), expect=403, errcode="M_FORBIDDEN")

    async def test_malformed_requests(self):
        hs = await self.start()
        await hs.register_user("alice", "pw")
        cases = [
            ({"identifier": {"type": "m.id.user", "user": "alice"}, "password": "pw"}, "M_MISSING_PARAM"),
            ({"type": 1, "password": "pw"}, "M_INVALID_PARAM"),
            ({"type": "m.login.magic", "user": "alice"}, "M_UNKNOWN"),
            ({"type": "m.login.password", "identifier": {"type": "m.id.user", "user": "alice"}}, "M_MISSING_PARAM"),
            (password_login("alice", 1234), "M_INVALID_PARAM"),
            ({"type": "m.login.password", "password": "pw"}, "M_MISSING_PARAM"),
            ({"type": "m.login.password", "identifier": {"user": "alice"}, "password": "pw"}, "M_MISSING_PARAM"),
            ({"type": "m.login.password", "identifier": "alice", "password": "pw"}, "M_BAD_JSON"),
            ({"type": "m.login.password", "identifier": {"type": "m.id.user", "user": ""}, "password": "pw"},
             "M_INVALID_PARAM"),
            ({"type": "m.login.password", "identifier": {"type": "m.id.carrier_pigeon"}, "password": "pw"},
             "M_UNRECOGNIZED"),
            (password_login("alice", "pw", refresh_token="yes"), "M_INVALID_PARAM"),
            (password_login("alice", "pw", device_id=12), "M_INVALID_PARAM"),
            (password_login("alice", "pw", device_id=""), "M_INVALID_PARAM"),
            (password_login("alice", "pw", device_id="D" * 256), "M_INVALID_PARAM"),
            (password_login("alice", "pw", initial_device_display_name=["x"]), "M_INVALID_PARAM"),
        ]
        for body, errcode in cases:
            with self.subTest(body=body):
                await self.call("POST", LOGIN, body, expect=400, errcode=errcode)
        await self.call("POST", LOGIN, raw=b"{not json", expect=400, errcode="M_NOT_JSON")
        await self.call("POST", LOGIN, raw=b"[]", expect=400, errcode="M_BAD_JSON")

    async def test_third_party_identifiers_are_unknown(self):
        """Spec: "In the case that the homeserver does not know about the supplied 3PID ... 403 Forbidden"."""
        await self.start()
        for body in (
            {"type": "m.login.password", "password": "pw",
             "identifier": {"type": "m.id.thirdparty", "medium": "email", "address": "a@example.org"}},
            {"type": "m.login.password", "password": "pw",
             "identifier": {"type": "m.id.phone", "country": "GB", "phone": "07700 900123"}},
            {"type": "m.login.password", "password": "pw", "identifier": {"medium": "email", "address": "a@example.org"}},
            {"type": "m.login.password", "password": "pw", "medium": "email", "address": "a@example.org"},
        ):
            with self.subTest(body=body):
                await self.call("POST", LOGIN, body, expect=403, errcode="M_FORBIDDEN")
        for identifier in ({"type": "m.id.thirdparty", "medium": "email"}, {"type": "m.id.phone", "phone": 7}):
            body = {"type": "m.login.password", "password": "pw", "identifier": identifier}
            await self.call("POST", LOGIN, body, expect=400, errcode="M_INVALID_PARAM")

    async def test_chosen_device_id_and_relogin_replaces_its_tokens(self):
        """Spec: "If the client sets the device_id, the server will invalidate any access and refresh tokens
        previously assigned to that device"; initial_device_display_name is ignored for a known device."""
        hs = await self.start()
        await hs.register_user("alice", "pw")
        first = await self.login(device_id="PHONE", initial_device_display_name="Phone", refresh_token=True)
        self.assertEqual(first["device_id"], "PHONE")
        second = await self.login(device_id="PHONE", initial_device_display_name="Renamed")
        self.assertEqual(second["device_id"], "PHONE")
        await self.assert_token_dead(first["access_token"])
        await self.call("POST", REFRESH, {"refresh_token": first["refresh_token"]}, expect=401, errcode="M_UNKNOWN_TOKEN")
        await self.call("GET", WHOAMI, token=second["access_token"], expect=200)
        device = await hs.storage.devices.get_device("@alice:test.local", "PHONE")
        self.assertEqual(device.display_name, "Phone")
        devices = [d.device_id for d in await hs.storage.devices.get_devices("@alice:test.local")]
        self.assertEqual(devices.count("PHONE"), 1)

    async def test_new_device_per_login(self):
        hs = await self.start()
        await hs.register_user("alice", "pw")
        a = await self.login()
        b = await self.login()
        self.assertNotEqual(a["device_id"], b["device_id"])
        await self.call("GET", WHOAMI, token=a["access_token"], expect=200)
        await self.call("GET", WHOAMI, token=b["access_token"], expect=200)

    async def test_refresh_token_requested(self):
        hs = await self.start(refreshable_access_token_lifetime="10m")
        await hs.register_user("alice", "pw")
        body = await self.login(refresh_token=True)
        self.assertIsInstance(body["refresh_token"], str)
        self.assertEqual(body["expires_in_ms"], 600_000)
        body = await self.login(refresh_token=False)
        self.assertNotIn("refresh_token", body)

    async def test_nonrefreshable_tokens_can_expire(self):
        hs = await self.start(nonrefreshable_access_token_lifetime="1h")
        await hs.register_user("alice", "pw")
        body = await self.login()
        self.assertEqual(body["expires_in_ms"], 3_600_000)
        self.assertNotIn("refresh_token", body)

    async def test_no_well_known_without_public_baseurl(self):
        hs = await self.start(public_baseurl=None)
        await hs.register_user("alice", "pw")
        self.assertNotIn("well_known", await self.login())

    async def test_well_known_carries_extra_content(self):
        hs = await self.start(public_baseurl="https://matrix.example.org",
                              extra_well_known_client_content={"org.example.help": "https://example.org/help"})
        await hs.register_user("alice", "pw")
        body = await self.login()
        self.assertEqual(body["well_known"], {"m.homeserver": {"base_url": "https://matrix.example.org/"},
                                              "org.example.help": "https://example.org/help"})


class TokenLoginTests(LoginTestCase):
    async def add_login_token(self, token: str, user_id: str = "@alice:test.local", lifetime_ms: int = 60_000) -> None:
        await self.hs.storage.tokens.add_login_token(token, user_id, int(reactor.seconds() * 1000) + lifetime_ms)

    async def test_token_logs_in_once(self):
        hs = await self.start()
        await hs.register_user("alice", "pw")
        await self.add_login_token("tok1")
        body = await self.call("POST", LOGIN, {"type": "m.login.token", "token": "tok1"}, expect=200)
        self.assertEqual(body["user_id"], "@alice:test.local")
        await self.call("GET", WHOAMI, token=body["access_token"], expect=200)
        body = await self.call("POST", LOGIN, {"type": "m.login.token", "token": "tok1"}, expect=403, errcode="M_FORBIDDEN")

    async def test_invalid_and_expired_tokens(self):
        hs = await self.start()
        await hs.register_user("alice", "pw")
        await self.add_login_token("old", lifetime_ms=-1)
        for token in ("old", "never-issued"):
            await self.call("POST", LOGIN, {"type": "m.login.token", "token": token}, expect=403, errcode="M_FORBIDDEN")
        await self.call("POST", LOGIN, {"type": "m.login.token"}, expect=400, errcode="M_MISSING_PARAM")
        await self.call("POST", LOGIN, {"type": "m.login.token", "token": 5}, expect=400, errcode="M_INVALID_PARAM")

    async def test_token_of_a_deactivated_user(self):
        hs = await self.start()
        await hs.register_user("alice", "pw")
        await hs.storage.tokens.deactivate_user("@alice:test.local")
        await self.add_login_token("tok")
        await self.call("POST", LOGIN, {"type": "m.login.token", "token": "tok"}, expect=403,
                        errcode="M_USER_DEACTIVATED")


class RateLimitTests(LoginTestCase):
    """Synapse's rc_login: per address on every attempt, per account on success, failures per account."""

    async def test_per_address(self):
        hs = await self.start(rc_login={"address": {"per_second": 0.001, "burst_count": 2}})
        await hs.register_user("alice", "pw")
        await self.login()
        await self.call("POST", LOGIN, password_login("bob", "pw"), expect=403)
        body = await self.call("POST", LOGIN, password_login("alice", "pw"), expect=429, errcode="M_LIMIT_EXCEEDED")
        self.assertGreater(body["retry_after_ms"], 0)
        await self.call("POST", LOGIN, {"type": "m.login.token", "token": "x"}, expect=429)

    async def test_failed_attempts_per_account(self):
        hs = await self.start(rc_login={"failed_attempts": {"per_second": 0.001, "burst_count": 2}})
        await hs.register_user("alice", "pw")
        await hs.register_user("bob", "pw")
        for _ in range(2):
            await self.call("POST", LOGIN, password_login("alice", "wrong"), expect=403)
        # Even the right password is refused now, and the check ignores case.
        body = await self.call("POST", LOGIN, password_login("ALICE", "pw"), expect=429, errcode="M_LIMIT_EXCEEDED")
        self.assertIn("retry_after_ms", body)
        await self.login("bob", "pw")

    async def test_successful_logins_per_account(self):
        hs = await self.start(rc_login={"account": {"per_second": 0.001, "burst_count": 2}})
        await hs.register_user("alice", "pw")
        for _ in range(3):  # failures do not count against the account limit
            await self.call("POST", LOGIN, password_login("alice", "wrong"), expect=403)
        await self.login()
        await self.login()
        await self.call("POST", LOGIN, password_login("alice", "pw"), expect=429, errcode="M_LIMIT_EXCEEDED")

    async def test_third_party_failures_are_limited(self):
        await self.start(rc_login={"failed_attempts": {"per_second": 0.001, "burst_count": 1}})
        body = {"type": "m.login.password", "password": "pw", "medium": "email", "address": "a@example.org"}
        await self.call("POST", LOGIN, body, expect=403)
        await self.call("POST", LOGIN, body, expect=429, errcode="M_LIMIT_EXCEEDED")


class RefreshTests(LoginTestCase):
    async def test_refresh(self):
        hs = await self.start()
        await hs.register_user("alice", "pw")
        login = await self.login(refresh_token=True)
        device_id = login["device_id"]
        for prefix in (V3, R0):
            body = await self.call("POST", prefix + "/refresh", {"refresh_token": login["refresh_token"]}, expect=200)
            self.assertEqual(set(body), {"access_token", "refresh_token", "expires_in_ms"})
            self.assertNotEqual(body["refresh_token"], login["refresh_token"])
            me = await self.call("GET", WHOAMI, token=body["access_token"], expect=200)
            self.assertEqual(me["device_id"], device_id)
            await self.assert_token_dead(login["access_token"])
            login = body

    async def test_unknown_or_used_refresh_token(self):
        hs = await self.start()
        await hs.register_user("alice", "pw")
        login = await self.login(refresh_token=True)
        refreshed = await self.call("POST", REFRESH, {"refresh_token": login["refresh_token"]}, expect=200)
        # Spec: the old refresh token is revoked at the latest once the new access token is used.
        await self.call("GET", WHOAMI, token=refreshed["access_token"], expect=200)
        for token in (login["refresh_token"], "mxr_never_issued", login["access_token"]):
            body = await self.call("POST", REFRESH, {"refresh_token": token}, expect=401, errcode="M_UNKNOWN_TOKEN")
            self.assertIs(body["soft_logout"], False)

    async def test_old_refresh_token_valid_until_successor_is_used(self):
        """Spec: a client that lost the /refresh response can retry with the old token."""
        hs = await self.start()
        await hs.register_user("alice", "pw")
        login = await self.login(refresh_token=True)
        lost = await self.call("POST", REFRESH, {"refresh_token": login["refresh_token"]}, expect=200)
        retried = await self.call("POST", REFRESH, {"refresh_token": login["refresh_token"]}, expect=200)
        # The retry replaced the unused pair from the lost response.
        await self.assert_token_dead(lost["access_token"])
        await self.call("POST", REFRESH, {"refresh_token": lost["refresh_token"]}, expect=401, errcode="M_UNKNOWN_TOKEN")
        # First use of the new access token revokes the old refresh token.
        await self.call("GET", WHOAMI, token=retried["access_token"], expect=200)
        await self.call("POST", REFRESH, {"refresh_token": login["refresh_token"]}, expect=401, errcode="M_UNKNOWN_TOKEN")
        # Using the new refresh token (instead of the access token) also revokes its predecessor.
        nxt = await self.call("POST", REFRESH, {"refresh_token": retried["refresh_token"]}, expect=200)
        await self.call("POST", REFRESH, {"refresh_token": nxt["refresh_token"]}, expect=200)
        await self.call("POST", REFRESH, {"refresh_token": retried["refresh_token"]}, expect=401, errcode="M_UNKNOWN_TOKEN")

    async def test_malformed(self):
        await self.start()
        # The spec documents no 400 for /refresh; these are the API's standard malformed-request errors.
        await self.call("POST", REFRESH, {}, expect=400, errcode="M_MISSING_PARAM", spec=False)
        await self.call("POST", REFRESH, {"refresh_token": 1}, expect=400, errcode="M_INVALID_PARAM", spec=False)
        await self.call("POST", REFRESH, raw=b"nope", expect=400, errcode="M_NOT_JSON", spec=False)

    async def test_expired_access_token_is_soft_logged_out_and_refreshable(self):
        hs = await self.start(refreshable_access_token_lifetime=800)
        await hs.register_user("alice", "pw")
        login = await self.login(refresh_token=True)
        self.assertEqual(login["expires_in_ms"], 800)
        await sleep(1.0)
        await self.assert_token_dead(login["access_token"], soft_logout=True)
        body = await self.call("POST", REFRESH, {"refresh_token": login["refresh_token"]}, expect=200)
        await self.call("GET", WHOAMI, token=body["access_token"], expect=200)

    async def test_expired_refresh_token(self):
        hs = await self.start(refreshable_access_token_lifetime=400, refresh_token_lifetime=400)
        await hs.register_user("alice", "pw")
        login = await self.login(refresh_token=True)
        await sleep(0.6)
        body = await self.call("POST", REFRESH, {"refresh_token": login["refresh_token"]}, expect=401,
                               errcode="M_UNKNOWN_TOKEN")
        self.assertIs(body["soft_logout"], False)

    async def test_logout_with_an_expired_token(self):
        hs = await self.start(refreshable_access_token_lifetime=400)
        await hs.register_user("alice", "pw")
        login = await self.login(refresh_token=True)
        await sleep(0.6)
        await self.call("POST", LOGOUT, {}, token=login["access_token"], expect=200)
        await self.assert_token_dead(login["access_token"])
        await self.call("POST", REFRESH, {"refresh_token": login["refresh_token"]}, expect=401)


class LogoutTests(LoginTestCase):
    async def test_logout_deletes_device_and_tokens(self):
        hs = await self.start()
        await hs.register_user("alice", "pw")
        a = await self.login(refresh_token=True)
        b = await self.login()
        body = await self.call("POST", LOGOUT, {}, token=a["access_token"], expect=200)
        self.assertEqual(body, {})
        await self.assert_token_dead(a["access_token"])
        await self.call("POST", REFRESH, {"refresh_token": a["refresh_token"]}, expect=401, errcode="M_UNKNOWN_TOKEN")
        self.assertIsNone(await hs.storage.devices.get_device("@alice:test.local", a["device_id"]))
        await self.call("GET", WHOAMI, token=b["access_token"], expect=200)
        await self.call("POST", LOGOUT, {}, token=a["access_token"], expect=401, errcode="M_UNKNOWN_TOKEN", spec=False)

    async def test_logout_all(self):
        hs = await self.start()
        await hs.register_user("alice", "pw")
        await hs.register_user("bob", "pw")
        sessions = [await self.login() for _ in range(3)]
        bob = await self.login("bob", "pw")
        for prefix in (V3, R0):
            body = await self.call("POST", prefix + "/logout/all", {}, token=sessions[0]["access_token"], expect=200)
            self.assertEqual(body, {})
            for session in sessions:
                await self.assert_token_dead(session["access_token"])
            self.assertEqual(await hs.storage.devices.get_devices("@alice:test.local"), [])
            await self.call("GET", WHOAMI, token=bob["access_token"], expect=200)
            sessions = [await self.login()]

    async def test_logout_on_r0(self):
        hs = await self.start()
        await hs.register_user("alice", "pw")
        login = await self.login()
        await self.call("POST", R0 + "/logout", {}, token=login["access_token"], expect=200)
        await self.assert_token_dead(login["access_token"])

    async def test_logout_needs_a_valid_token(self):
        await self.start()
        for path in (LOGOUT, LOGOUT_ALL):
            await self.call("POST", path, {}, expect=401, errcode="M_MISSING_TOKEN", spec=False)
            await self.call("POST", path, {}, token="nope", expect=401, errcode="M_UNKNOWN_TOKEN", spec=False)

    async def test_guests_cannot_log_out(self):
        """Logout is not among the endpoints the spec opens to guests ("Guest Access"); as Synapse, 403."""
        hs = await self.start()
        guest = await hs.components.registration.register_guest()
        session = await hs.components.sessions.create_session(guest)
        await self.call("POST", LOGOUT, {}, token=session["access_token"], expect=403,
                        errcode="M_GUEST_ACCESS_FORBIDDEN", spec=False)


class WhoamiTests(LoginTestCase):
    async def test_whoami(self):
        hs = await self.start()
        login = await hs.register_user("alice", "pw", device_id="DEV")
        for prefix in (V3, R0):
            body = await self.call("GET", prefix + "/account/whoami", token=login["access_token"], expect=200)
            self.assertEqual(body, {"user_id": "@alice:test.local", "device_id": "DEV", "is_guest": False})

    async def test_guest(self):
        hs = await self.start()
        guest = await hs.components.registration.register_guest()
        session = await hs.components.sessions.create_session(guest)
        body = await self.call("GET", WHOAMI, token=session["access_token"], expect=200)
        self.assertEqual(body, {"user_id": guest, "device_id": session["device_id"], "is_guest": True})

    async def test_refusals(self):
        await self.start()
        await self.call("GET", WHOAMI, expect=401, errcode="M_MISSING_TOKEN")
        await self.call("GET", WHOAMI, token="nope", expect=401, errcode="M_UNKNOWN_TOKEN")


class GetLoginTokenTests(LoginTestCase):
    ENABLED = {"enabled": True}

    async def test_disabled_by_default(self):
        hs = await self.start()
        login = await hs.register_user("alice", "pw")
        await self.call("POST", GET_TOKEN, {}, token=login["access_token"], expect=404, errcode="M_UNRECOGNIZED",
                        spec=False)

    async def test_with_ui_auth(self):
        hs = await self.start(login_via_existing_session=self.ENABLED)
        login = await hs.register_user("alice", "pw")
        challenge = await self.call("POST", GET_TOKEN, {}, token=login["access_token"], expect=401)
        self.assertEqual(challenge["flows"], [{"stages": ["m.login.password"]}])
        auth = {"type": "m.login.password", "identifier": {"type": "m.id.user", "user": "alice"}, "password": "wrong",
                "session": challenge["session"]}
        failed = await self.call("POST", GET_TOKEN, {"auth": auth}, token=login["access_token"], expect=401,
                                 errcode="M_FORBIDDEN")
        self.assertEqual(failed["session"], challenge["session"])
        auth["password"] = "pw"
        body = await self.call("POST", GET_TOKEN, {"auth": auth}, token=login["access_token"], expect=200)
        self.assertEqual(body["expires_in_ms"], 300_000)
        # The spec: servers MUST re-prompt every time, so the completed session is gone.
        status, _ = await hs.request("POST", GET_TOKEN, {"auth": auth}, token=login["access_token"])
        self.assertIn(status, (400, 401))

        new = await self.call("POST", LOGIN, {"type": "m.login.token", "token": body["login_token"]}, expect=200)
        self.assertEqual(new["user_id"], "@alice:test.local")
        self.assertNotEqual(new["device_id"], login["device_id"])
        await self.call("POST", LOGIN, {"type": "m.login.token", "token": body["login_token"]}, expect=403,
                        errcode="M_FORBIDDEN")

    async def test_the_password_must_be_the_requesters(self):
        hs = await self.start(login_via_existing_session=self.ENABLED)
        login = await hs.register_user("alice", "pw")
        await hs.register_user("bob", "bobpw")
        auth = {"type": "m.login.password", "identifier": {"type": "m.id.user", "user": "bob"}, "password": "bobpw"}
        await self.call("POST", GET_TOKEN, {"auth": auth}, token=login["access_token"], expect=401,
                        errcode="M_FORBIDDEN")

    async def test_without_ui_auth_and_rate_limited(self):
        hs = await self.start(login_via_existing_session={"enabled": True, "require_ui_auth": False,
                                                          "token_timeout": "1s"})
        login = await hs.register_user("alice", "pw")
        body = await self.call("POST", GET_TOKEN, {}, token=login["access_token"], expect=200)
        self.assertEqual(body["expires_in_ms"], 1000)
        limited = await self.call("POST", GET_TOKEN, {}, token=login["access_token"], expect=429,
                                  errcode="M_LIMIT_EXCEEDED")
        self.assertIn("retry_after_ms", limited)
        await sleep(1.2)
        await self.call("POST", LOGIN, {"type": "m.login.token", "token": body["login_token"]}, expect=403,
                        errcode="M_FORBIDDEN")

    async def test_refusals(self):
        hs = await self.start(login_via_existing_session=self.ENABLED)
        await self.call("POST", GET_TOKEN, {}, expect=401, errcode="M_MISSING_TOKEN", spec=False)
        await self.call("POST", GET_TOKEN, {}, token="nope", expect=401, errcode="M_UNKNOWN_TOKEN", spec=False)
        login = await hs.register_user("alice", "pw")
        await self.call("POST", GET_TOKEN, raw=b"{", token=login["access_token"], expect=400, errcode="M_NOT_JSON")
        guest = await hs.components.registration.register_guest()
        session = await hs.components.sessions.create_session(guest)
        await self.call("POST", GET_TOKEN, {}, token=session["access_token"], expect=403,
                        errcode="M_GUEST_ACCESS_FORBIDDEN", spec=False)


class PasswordDisabledTests(LoginTestCase):
    async def test_password_config_disabled_turns_off_password_login(self):
        await self.start(password_config={"enabled": False})
        await self.hs.register_user("alice", "pw")
        flows = await self.call("GET", LOGIN, expect=200)
        self.assertNotIn("m.login.password", [f["type"] for f in flows["flows"]])
        await self.call("POST", LOGIN, password_login("alice", "pw"), expect=400, errcode="M_UNKNOWN", spec=False)
