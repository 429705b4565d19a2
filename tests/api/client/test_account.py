"""Password change, deactivation and 3PID endpoints over real HTTP.

Spec: Client-Server API, "Account registration and management" and "Adding
Account Administrative Contact Information".
"""

from __future__ import annotations

from typing import Any

from twisted.trial import unittest

from tests.api.client.test_devices import PASSWORD, R0, V3, assert_conforms, password_auth, with_uia
from tests.support.homeserver import start_homeserver


class PasswordChangeTest(unittest.TestCase):
    async def _setup(self, **overrides: Any) -> None:
        self.hs = await start_homeserver(self, bcrypt_rounds=4, **overrides)
        self.alice = await self.hs.register_user("alice", PASSWORD, device_id="ALICE1")
        self.alice2 = await self.hs.components.sessions.create_session(self.alice["user_id"], "ALICE2")
        self.token = self.alice["access_token"]

    async def _token_status(self, token: str) -> int:
        status, _ = await self.hs.request("GET", f"{V3}/devices", token=token)
        return status

    async def _password_is(self, password: str) -> bool:
        user = await self.hs.storage.users.get_user(self.alice["user_id"])
        return bool(user.password_hash) and await self.hs.components.hasher.check(password, user.password_hash)

    async def test_needs_access_token(self) -> None:
        await self._setup()
        status, body = await self.hs.request("POST", f"{V3}/account/password", {"new_password": "new one"})
        self.assertEqual((status, body["errcode"]), (401, "M_MISSING_TOKEN"))

    async def test_uia_challenge_and_wrong_password(self) -> None:
        await self._setup()
        path = f"{V3}/account/password"
        status, challenge = await self.hs.request("POST", path, {"new_password": "new one"}, self.token)
        self.assertEqual(status, 401)
        self.assertEqual(challenge["flows"], [{"stages": ["m.login.password"]}])
        self.assertIn("session", challenge)
        assert_conforms(self, "POST", path, 401, challenge)
        status, body = await self.hs.request(
            "POST",
            path,
            {"new_password": "new one", "auth": password_auth("alice", challenge["session"], "wrong")},
            self.token,
        )
        self.assertEqual((status, body["errcode"], body["session"]), (401, "M_FORBIDDEN", challenge["session"]))
        assert_conforms(self, "POST", path, 401, body)
        self.assertTrue(await self._password_is(PASSWORD))

    async def test_change_password_logs_out_other_devices(self) -> None:
        await self._setup()
        # A second token of the requesting device is revoked too; only the requesting token survives.
        extra = await self.hs.components.sessions.issue_tokens(self.alice["user_id"], "ALICE1", refreshable=False)
        status, body = await with_uia(
            self, self.hs, "POST", f"{V3}/account/password", {"new_password": "new one"}, self.token, "alice"
        )
        self.assertEqual((status, body), (200, {}))
        assert_conforms(self, "POST", f"{V3}/account/password", 200, body)
        self.assertTrue(await self._password_is("new one"))
        self.assertFalse(await self._password_is(PASSWORD))
        self.assertEqual(await self._token_status(self.token), 200)
        self.assertEqual(await self._token_status(self.alice2["access_token"]), 401)
        self.assertEqual(await self._token_status(extra["access_token"]), 401)
        status, listing = await self.hs.request("GET", f"{V3}/devices", token=self.token)
        self.assertEqual([d["device_id"] for d in listing["devices"]], ["ALICE1"])
        # The old password no longer passes UIA; the new one does.
        status, challenge = await self.hs.request("POST", f"{V3}/delete_devices", {"devices": []}, self.token)
        status, body = await self.hs.request(
            "POST",
            f"{V3}/delete_devices",
            {"devices": [], "auth": password_auth("alice", challenge["session"])},
            self.token,
        )
        self.assertEqual((status, body["errcode"]), (401, "M_FORBIDDEN"))
        status, body = await self.hs.request(
            "POST",
            f"{V3}/delete_devices",
            {"devices": [], "auth": password_auth("alice", challenge["session"], "new one")},
            self.token,
        )
        self.assertEqual(status, 200)

    async def test_logout_devices_false_keeps_other_devices(self) -> None:
        await self._setup()
        status, body = await with_uia(
            self,
            self.hs,
            "POST",
            f"{R0}/account/password",
            {"new_password": "new one", "logout_devices": False},
            self.token,
            "alice",
        )
        self.assertEqual((status, body), (200, {}))
        self.assertTrue(await self._password_is("new one"))
        self.assertEqual(await self._token_status(self.token), 200)
        self.assertEqual(await self._token_status(self.alice2["access_token"]), 200)

    async def test_new_password_only_in_first_request(self) -> None:
        await self._setup()
        path = f"{V3}/account/password"
        status, challenge = await self.hs.request(
            "POST", path, {"new_password": "sent once", "logout_devices": False}, self.token
        )
        self.assertEqual(status, 401)
        session = await self.hs.storage.uia.get_session(challenge["session"])
        self.assertNotIn("new_password", session.clientdict)
        self.assertNotIn("sent once", repr(session.clientdict) + repr(session.serverdict))
        status, body = await self.hs.request(
            "POST", path, {"auth": password_auth("alice", challenge["session"])}, self.token
        )
        self.assertEqual((status, body), (200, {}))
        self.assertTrue(await self._password_is("sent once"))
        # logout_devices from the first request applies.
        self.assertEqual(await self._token_status(self.alice2["access_token"]), 200)
        # The completed session cannot be replayed.
        status, body = await self.hs.request(
            "POST", path, {"new_password": "replayed", "auth": {"session": challenge["session"]}}, self.token
        )
        self.assertEqual(status, 400)
        self.assertTrue(await self._password_is("sent once"))

    async def test_missing_new_password(self) -> None:
        await self._setup()
        status, body = await with_uia(self, self.hs, "POST", f"{V3}/account/password", {}, self.token, "alice")
        self.assertEqual((status, body["errcode"]), (400, "M_MISSING_PARAM"))
        self.assertTrue(await self._password_is(PASSWORD))

    async def test_invalid_fields(self) -> None:
        await self._setup()
        path = f"{V3}/account/password"
        for body, errcode in (
            ({"new_password": 5}, "M_BAD_JSON"),
            ({"new_password": "x", "logout_devices": "yes"}, "M_BAD_JSON"),
            ({"new_password": "x" * 513}, "M_TOO_LARGE"),
        ):
            status, result = await self.hs.request("POST", path, body, self.token)
            self.assertEqual((status, result["errcode"]), (400, errcode), body)
        status, result = await self.hs.request("POST", path, token=self.token, raw=b"{")
        self.assertEqual((status, result["errcode"]), (400, "M_NOT_JSON"))

    async def test_disabled_when_password_login_is_disabled(self) -> None:
        await self._setup(password_config={"enabled": False})
        status, body = await self.hs.request("POST", f"{V3}/account/password", {"new_password": "x"}, self.token)
        self.assertEqual((status, body["errcode"]), (403, "M_FORBIDDEN"))


class DeactivateTest(unittest.TestCase):
    async def _setup(self) -> None:
        self.hs = await start_homeserver(self, bcrypt_rounds=4)
        self.alice = await self.hs.register_user("alice", PASSWORD, device_id="ALICE1")
        self.alice2 = await self.hs.components.sessions.create_session(self.alice["user_id"], "ALICE2")
        self.token = self.alice["access_token"]
        self.user_id = self.alice["user_id"]
        await self.hs.storage.profiles.set_field(self.user_id, "displayname", "Alice")
        await self.hs.storage.account_data.put(self.user_id, "m.example", {"a": 1})

    async def test_needs_access_token(self) -> None:
        await self._setup()
        status, body = await self.hs.request("POST", f"{V3}/account/deactivate", {})
        self.assertEqual((status, body["errcode"]), (401, "M_MISSING_TOKEN"))

    async def test_wrong_password_keeps_account(self) -> None:
        await self._setup()
        path = f"{V3}/account/deactivate"
        status, challenge = await self.hs.request("POST", path, {}, self.token)
        self.assertEqual(status, 401)
        self.assertEqual(challenge["flows"], [{"stages": ["m.login.password"]}])
        assert_conforms(self, "POST", path, 401, challenge)
        status, body = await self.hs.request(
            "POST", path, {"auth": password_auth("alice", challenge["session"], "no")}, self.token
        )
        self.assertEqual((status, body["errcode"]), (401, "M_FORBIDDEN"))
        user = await self.hs.storage.users.get_user(self.user_id)
        self.assertFalse(user.deactivated)
        status, _ = await self.hs.request("GET", f"{V3}/devices", token=self.token)
        self.assertEqual(status, 200)

    async def test_deactivate(self) -> None:
        await self._setup()
        calls: list[tuple[str, bool]] = []
        self.hs.components.account.add_deactivation_hook(lambda user_id, erase: calls.append((user_id, erase)))
        status, body = await with_uia(
            self, self.hs, "POST", f"{V3}/account/deactivate", {"id_server": "id.example.org"}, self.token, "alice"
        )
        self.assertEqual((status, body), (200, {"id_server_unbind_result": "success"}))
        assert_conforms(self, "POST", f"{V3}/account/deactivate", 200, body)
        for token in (self.token, self.alice2["access_token"]):
            status, err = await self.hs.request("GET", f"{V3}/devices", token=token)
            self.assertEqual((status, err["errcode"]), (401, "M_UNKNOWN_TOKEN"))
        user = await self.hs.storage.users.get_user(self.user_id)
        self.assertTrue(user.deactivated)
        self.assertIsNone(user.password_hash)
        self.assertEqual(await self.hs.storage.devices.get_devices(self.user_id), [])
        # Without erase the profile and account data stay.
        self.assertEqual(await self.hs.storage.profiles.get_field(self.user_id, "displayname"), "Alice")
        self.assertEqual(await self.hs.storage.account_data.get(self.user_id, "m.example"), {"a": 1})
        self.assertEqual(calls, [(self.user_id, False)])
        # The password no longer logs in anywhere.
        self.assertIsNone(
            await self.hs.components.providers.check_login(self.user_id, "m.login.password", {"password": PASSWORD})
        )

    async def test_deactivate_with_erase(self) -> None:
        await self._setup()
        calls: list[tuple[str, bool]] = []

        async def hook(user_id: str, erase: bool) -> None:
            calls.append((user_id, erase))

        self.hs.components.account.add_deactivation_hook(hook)
        status, body = await with_uia(
            self, self.hs, "POST", f"{R0}/account/deactivate", {"erase": True}, self.token, "alice"
        )
        self.assertEqual((status, body), (200, {"id_server_unbind_result": "success"}))
        self.assertEqual(await self.hs.storage.profiles.get_profile(self.user_id), {})
        self.assertIsNone(await self.hs.storage.account_data.get(self.user_id, "m.example"))
        self.assertEqual(calls, [(self.user_id, True)])

    async def test_erase_from_first_request_applies(self) -> None:
        await self._setup()
        path = f"{V3}/account/deactivate"
        status, challenge = await self.hs.request("POST", path, {"erase": True}, self.token)
        status, body = await self.hs.request(
            "POST", path, {"auth": password_auth("alice", challenge["session"])}, self.token
        )
        self.assertEqual(status, 200)
        self.assertEqual(await self.hs.storage.profiles.get_profile(self.user_id), {})

    async def test_failing_hook_does_not_fail_deactivation(self) -> None:
        await self._setup()
        calls: list[str] = []

        def broken(user_id: str, erase: bool) -> None:
            raise RuntimeError("hook broke")

        self.hs.components.account.add_deactivation_hook(broken)
        self.hs.components.account.add_deactivation_hook(lambda user_id, erase: calls.append(user_id))
        status, body = await with_uia(self, self.hs, "POST", f"{V3}/account/deactivate", {}, self.token, "alice")
        self.assertEqual(status, 200)
        self.assertEqual(calls, [self.user_id])
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    async def test_invalid_fields(self) -> None:
        await self._setup()
        for body in ({"erase": "yes"}, {"id_server": 5}):
            status, result = await self.hs.request("POST", f"{V3}/account/deactivate", body, self.token)
            self.assertEqual((status, result["errcode"]), (400, "M_BAD_JSON"), body)
        user = await self.hs.storage.users.get_user(self.user_id)
        self.assertFalse(user.deactivated)


class ThreepidTest(unittest.TestCase):
    async def _setup(self) -> None:
        self.hs = await start_homeserver(self, bcrypt_rounds=4)
        self.alice = await self.hs.register_user("alice", PASSWORD)
        self.token = self.alice["access_token"]

    async def test_list_threepids(self) -> None:
        await self._setup()
        for prefix in (V3, R0):
            status, body = await self.hs.request("GET", f"{prefix}/account/3pid", token=self.token)
            self.assertEqual((status, body), (200, {"threepids": []}))
        assert_conforms(self, "GET", f"{V3}/account/3pid", 200, body)
        status, body = await self.hs.request("GET", f"{V3}/account/3pid")
        self.assertEqual((status, body["errcode"]), (401, "M_MISSING_TOKEN"))

    async def test_adding_is_refused(self) -> None:
        await self._setup()
        creds = {
            "client_secret": "d0nt-T3ll",
            "sid": "abc123987",
            "id_server": "id.example.org",
            "id_access_token": "t",
        }
        for prefix in (V3, R0):
            status, body = await self.hs.request(
                "POST", f"{prefix}/account/3pid", {"three_pid_creds": creds}, self.token
            )
            self.assertEqual((status, body["errcode"]), (403, "M_THREEPID_AUTH_FAILED"))
            assert_conforms(self, "POST", f"{V3}/account/3pid", 403, body)
            status, body = await self.hs.request(
                "POST", f"{prefix}/account/3pid/add", {"client_secret": "s", "sid": "1"}, self.token
            )
            self.assertEqual((status, body["errcode"]), (403, "M_THREEPID_AUTH_FAILED"))
            status, body = await self.hs.request("POST", f"{prefix}/account/3pid/bind", creds, self.token)
            self.assertEqual((status, body["errcode"]), (400, "M_SERVER_NOT_TRUSTED"))

    async def test_adding_validates_the_request_first(self) -> None:
        await self._setup()
        status, body = await self.hs.request("POST", f"{V3}/account/3pid", {}, self.token)
        self.assertEqual((status, body["errcode"]), (400, "M_MISSING_PARAM"))
        status, body = await self.hs.request("POST", f"{V3}/account/3pid/add", {"client_secret": "s"}, self.token)
        self.assertEqual((status, body["errcode"]), (400, "M_MISSING_PARAM"))
        status, body = await self.hs.request(
            "POST", f"{V3}/account/3pid/bind", {"client_secret": "s", "sid": 1}, self.token
        )
        self.assertEqual(status, 400)
        for path in (
            "account/3pid",
            "account/3pid/add",
            "account/3pid/bind",
            "account/3pid/delete",
            "account/3pid/unbind",
        ):
            status, body = await self.hs.request("POST", f"{V3}/{path}", {})
            self.assertEqual((status, body["errcode"]), (401, "M_MISSING_TOKEN"), path)

    async def test_delete_and_unbind(self) -> None:
        await self._setup()
        for name in ("delete", "unbind"):
            path = f"{V3}/account/3pid/{name}"
            status, body = await self.hs.request(
                "POST", path, {"medium": "email", "address": "a@example.org"}, self.token
            )
            self.assertEqual((status, body), (200, {"id_server_unbind_result": "no-support"}))
            assert_conforms(self, "POST", path, 200, body)
            status, body = await self.hs.request(
                "POST",
                f"{R0}/account/3pid/{name}",
                {"medium": "msisdn", "address": "447700900000", "id_server": "x"},
                self.token,
            )
            self.assertEqual(status, 200)
            status, body = await self.hs.request("POST", path, {"medium": "fax", "address": "1"}, self.token)
            self.assertEqual((status, body["errcode"]), (400, "M_INVALID_PARAM"))
            status, body = await self.hs.request("POST", path, {"medium": "email"}, self.token)
            self.assertEqual((status, body["errcode"]), (400, "M_MISSING_PARAM"))

    async def test_request_token_endpoints(self) -> None:
        await self._setup()
        email = {"client_secret": "monkeys_are_GREAT", "email": "alice@example.org", "send_attempt": 1}
        msisdn = {
            "client_secret": "monkeys_are_GREAT",
            "country": "GB",
            "phone_number": "07700900001",
            "send_attempt": 1,
        }
        expected = {
            "account/3pid/email/requestToken": (email, 400, "M_THREEPID_MEDIUM_NOT_SUPPORTED"),
            "account/3pid/msisdn/requestToken": (msisdn, 400, "M_THREEPID_MEDIUM_NOT_SUPPORTED"),
            "account/password/email/requestToken": (email, 400, "M_THREEPID_NOT_FOUND"),
            "account/password/msisdn/requestToken": (msisdn, 400, "M_THREEPID_NOT_FOUND"),
            "register/email/requestToken": (email, 403, "M_THREEPID_DENIED"),
            "register/msisdn/requestToken": (msisdn, 403, "M_THREEPID_DENIED"),
        }
        for path, (body, status_expected, errcode) in expected.items():
            for prefix in (V3, R0):
                status, result = await self.hs.request("POST", f"{prefix}/{path}", body)
                self.assertEqual((status, result["errcode"]), (status_expected, errcode), path)
            assert_conforms(self, "POST", f"{V3}/{path}", status, result)
            status, result = await self.hs.request("POST", f"{V3}/{path}", raw=b"nope")
            self.assertEqual((status, result["errcode"]), (400, "M_NOT_JSON"), path)
