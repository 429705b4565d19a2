"""Device management over real HTTP (Client-Server API, "Device Management")."""

from __future__ import annotations

from typing import Any, Optional

from twisted.trial import unittest

from tests.support.homeserver import RunningHomeserver, start_homeserver
from tests.support.spec import spec_problems

V3 = "/_matrix/client/v3"
R0 = "/_matrix/client/r0"
PASSWORD = "correct horse"

#: The bundled OpenAPI documents of the spec (and the validator that goes with them).
def _without_nulls(body: Any) -> Any:
    """Device objects carry Synapse-style nulls for unknown values (clients require the keys); the spec's
    schema only allows strings there, so nulls are dropped before validating."""
    if isinstance(body, dict):
        return {k: _without_nulls(v) for k, v in body.items() if v is not None}
    if isinstance(body, list):
        return [_without_nulls(v) for v in body]
    return body


def core(device: dict) -> dict:
    """The fields set by the client (last_seen_* move with every request; unknown values are null)."""
    return {k: v for k, v in device.items() if k in ("device_id", "display_name") and v is not None}


def assert_conforms(testcase: unittest.TestCase, method: str, path: str, status: int, body: Any) -> None:
    testcase.assertEqual(spec_problems(method, path, status, _without_nulls(body)), [])


def password_auth(user: str, session: Optional[str], password: str = PASSWORD) -> dict[str, Any]:
    auth: dict[str, Any] = {
        "type": "m.login.password",
        "identifier": {"type": "m.id.user", "user": user},
        "password": password,
    }
    if session is not None:
        auth["session"] = session
    return auth


async def with_uia(
    testcase: unittest.TestCase,
    hs: RunningHomeserver,
    method: str,
    path: str,
    body: dict,
    token: str,
    user: str,
    password: str = PASSWORD,
) -> tuple[int, Any]:
    """Send a request that needs UIA: first without auth (expect the 401), then with the password."""
    status, challenge = await hs.request(method, path, body, token)
    testcase.assertEqual(status, 401, challenge)
    testcase.assertIn({"stages": ["m.login.password"]}, challenge["flows"])
    return await hs.request(method, path, dict(body, auth=password_auth(user, challenge["session"], password)), token)


class DevicesTest(unittest.TestCase):
    async def _setup(self) -> None:
        self.hs = await start_homeserver(self, bcrypt_rounds=4)
        self.alice = await self.hs.register_user("alice", PASSWORD, device_id="ALICE1")
        self.alice2 = await self.hs.components.sessions.create_session(
            self.alice["user_id"], "ALICE2", display_name="Alice's phone"
        )
        self.bob = await self.hs.register_user("bob", "bob password", device_id="BOB1")

    async def _whoami_status(self, token: str) -> tuple[int, Any]:
        # Any authenticated endpoint tells whether a token still works.
        return await self.hs.request("GET", f"{V3}/devices", token=token)

    # -- GET /devices ---------------------------------------------------------
    async def test_list_devices(self) -> None:
        await self._setup()
        await self.hs.storage.devices.record_seen(self.alice["user_id"], "ALICE2", "10.1.2.3", "ua", 1_700_000_000_000)
        for prefix in (V3, R0):
            status, body = await self.hs.request("GET", f"{prefix}/devices", token=self.alice["access_token"])
            self.assertEqual(status, 200, body)
            by_id = {d["device_id"]: d for d in body["devices"]}
            self.assertEqual(set(by_id), {"ALICE1", "ALICE2"})
            self.assertEqual(core(by_id["ALICE1"]), {"device_id": "ALICE1"})
            self.assertEqual(by_id["ALICE1"]["last_seen_ip"], "127.0.0.1")
            self.assertEqual(
                by_id["ALICE2"],
                {
                    "device_id": "ALICE2",
                    "display_name": "Alice's phone",
                    "last_seen_ip": "10.1.2.3",
                    "last_seen_ts": 1_700_000_000_000,
                },
            )
        assert_conforms(self, "GET", f"{V3}/devices", 200, body)

    async def test_list_devices_needs_a_valid_token(self) -> None:
        await self._setup()
        status, body = await self.hs.request("GET", f"{V3}/devices")
        self.assertEqual((status, body["errcode"]), (401, "M_MISSING_TOKEN"))
        status, body = await self.hs.request("GET", f"{V3}/devices", token="nonsense")
        self.assertEqual((status, body["errcode"]), (401, "M_UNKNOWN_TOKEN"))

    # -- GET /devices/{deviceId} ------------------------------------------------
    async def test_get_device(self) -> None:
        await self._setup()
        status, body = await self.hs.request("GET", f"{V3}/devices/ALICE2", token=self.alice["access_token"])
        self.assertEqual(status, 200)
        self.assertEqual(core(body), {"device_id": "ALICE2", "display_name": "Alice's phone"})
        assert_conforms(self, "GET", f"{V3}/devices/ALICE2", 200, body)
        status, body = await self.hs.request("GET", f"{R0}/devices/ALICE1", token=self.alice["access_token"])
        self.assertEqual((status, core(body)), (200, {"device_id": "ALICE1"}))

    async def test_get_unknown_or_other_users_device_is_404(self) -> None:
        await self._setup()
        for device_id in ("NOSUCHDEVICE", "BOB1"):
            status, body = await self.hs.request("GET", f"{V3}/devices/{device_id}", token=self.alice["access_token"])
            self.assertEqual((status, body["errcode"]), (404, "M_NOT_FOUND"), device_id)

    async def test_device_ids_are_percent_decoded(self) -> None:
        await self._setup()
        await self.hs.components.sessions.create_session(self.alice["user_id"], "odd/id ü")
        status, body = await self.hs.request("GET", f"{V3}/devices/odd%2Fid%20%C3%BC", token=self.alice["access_token"])
        self.assertEqual((status, core(body)), (200, {"device_id": "odd/id ü"}))

    # -- PUT /devices/{deviceId} ------------------------------------------------
    async def test_rename_device(self) -> None:
        await self._setup()
        token = self.alice["access_token"]
        status, body = await self.hs.request("PUT", f"{V3}/devices/ALICE1", {"display_name": "Laptop"}, token)
        self.assertEqual((status, body), (200, {}))
        assert_conforms(self, "PUT", f"{V3}/devices/ALICE1", 200, body)
        status, body = await self.hs.request("GET", f"{V3}/devices/ALICE1", token=token)
        self.assertEqual(core(body), {"device_id": "ALICE1", "display_name": "Laptop"})
        # Without display_name (or with null) nothing changes.
        for update in ({}, {"display_name": None}, {"other": 1}):
            status, body = await self.hs.request("PUT", f"{R0}/devices/ALICE1", update, token)
            self.assertEqual((status, body), (200, {}))
        status, body = await self.hs.request("GET", f"{V3}/devices/ALICE1", token=token)
        self.assertEqual(body["display_name"], "Laptop")

    async def test_rename_display_name_length_limit(self) -> None:
        await self._setup()
        token = self.alice["access_token"]
        status, _ = await self.hs.request("PUT", f"{V3}/devices/ALICE1", {"display_name": "x" * 100}, token)
        self.assertEqual(status, 200)
        status, body = await self.hs.request("PUT", f"{V3}/devices/ALICE1", {"display_name": "x" * 101}, token)
        self.assertEqual((status, body["errcode"]), (400, "M_TOO_LARGE"))

    async def test_rename_refusals(self) -> None:
        await self._setup()
        token = self.alice["access_token"]
        for device_id in ("NOSUCHDEVICE", "BOB1"):
            for update in ({"display_name": "mine now"}, {}):
                status, body = await self.hs.request("PUT", f"{V3}/devices/{device_id}", update, token)
                self.assertEqual((status, body["errcode"]), (404, "M_NOT_FOUND"), (device_id, update))
        status, body = await self.hs.request("PUT", f"{V3}/devices/ALICE1", {"display_name": 5}, token)
        self.assertEqual((status, body["errcode"]), (400, "M_BAD_JSON"))
        status, body = await self.hs.request("PUT", f"{V3}/devices/ALICE1", token=token, raw=b"not json")
        self.assertEqual((status, body["errcode"]), (400, "M_NOT_JSON"))
        status, body = await self.hs.request("PUT", f"{V3}/devices/ALICE1", {"display_name": "x"})
        self.assertEqual((status, body["errcode"]), (401, "M_MISSING_TOKEN"))
        _, bob_device = await self.hs.request("GET", f"{V3}/devices/BOB1", token=self.bob["access_token"])
        self.assertEqual(core(bob_device), {"device_id": "BOB1"})

    # -- DELETE /devices/{deviceId} ---------------------------------------------
    async def test_delete_device_requires_uia(self) -> None:
        await self._setup()
        token = self.alice["access_token"]
        path = f"{V3}/devices/ALICE2"
        status, challenge = await self.hs.request("DELETE", path, {}, token)
        self.assertEqual(status, 401)
        self.assertEqual(challenge["flows"], [{"stages": ["m.login.password"]}])
        self.assertIsInstance(challenge["session"], str)
        self.assertEqual(challenge["params"], {})
        self.assertNotIn("errcode", challenge)
        assert_conforms(self, "DELETE", path, 401, challenge)
        # No body at all is the same as an empty one.
        status, challenge2 = await self.hs.request("DELETE", path, token=token)
        self.assertEqual(status, 401)
        self.assertIn("session", challenge2)
        # The device is still there and its token works.
        status, _ = await self._whoami_status(self.alice2["access_token"])
        self.assertEqual(status, 200)

    async def test_delete_device_wrong_password(self) -> None:
        await self._setup()
        token = self.alice["access_token"]
        path = f"{V3}/devices/ALICE2"
        status, challenge = await self.hs.request("DELETE", path, {}, token)
        session = challenge["session"]
        status, body = await self.hs.request(
            "DELETE", path, {"auth": password_auth("alice", session, "wrong password")}, token
        )
        self.assertEqual(status, 401)
        self.assertEqual(body["errcode"], "M_FORBIDDEN")
        self.assertEqual(body["session"], session)
        self.assertEqual(body["flows"], [{"stages": ["m.login.password"]}])
        assert_conforms(self, "DELETE", path, 401, body)
        status, _ = await self._whoami_status(self.alice2["access_token"])
        self.assertEqual(status, 200)
        # Another user's correct password does not do either.
        status, body = await self.hs.request(
            "DELETE", path, {"auth": password_auth("bob", session, "bob password")}, token
        )
        self.assertEqual((status, body["errcode"]), (401, "M_FORBIDDEN"))
        status, _ = await self._whoami_status(self.alice2["access_token"])
        self.assertEqual(status, 200)

    async def test_delete_device(self) -> None:
        await self._setup()
        token = self.alice["access_token"]
        status, body = await with_uia(self, self.hs, "DELETE", f"{V3}/devices/ALICE2", {}, token, "alice")
        self.assertEqual((status, body), (200, {}))
        assert_conforms(self, "DELETE", f"{V3}/devices/ALICE2", 200, body)
        status, body = await self._whoami_status(self.alice2["access_token"])
        self.assertEqual((status, body["errcode"]), (401, "M_UNKNOWN_TOKEN"))
        status, body = await self.hs.request("GET", f"{V3}/devices", token=token)
        self.assertEqual([d["device_id"] for d in body["devices"]], ["ALICE1"])
        self.assertIsNone(await self.hs.storage.devices.get_device(self.alice["user_id"], "ALICE2"))

    async def test_delete_own_current_device(self) -> None:
        await self._setup()
        token = self.alice["access_token"]
        status, _ = await with_uia(self, self.hs, "DELETE", f"{R0}/devices/ALICE1", {}, token, "alice")
        self.assertEqual(status, 200)
        status, body = await self._whoami_status(token)
        self.assertEqual((status, body["errcode"]), (401, "M_UNKNOWN_TOKEN"))
        status, _ = await self._whoami_status(self.alice2["access_token"])
        self.assertEqual(status, 200)

    async def test_delete_unknown_or_other_users_device_is_harmless(self) -> None:
        await self._setup()
        token = self.alice["access_token"]
        for device_id in ("NOSUCHDEVICE", "BOB1"):
            status, body = await with_uia(self, self.hs, "DELETE", f"{V3}/devices/{device_id}", {}, token, "alice")
            self.assertEqual((status, body), (200, {}), device_id)
        status, _ = await self._whoami_status(self.bob["access_token"])
        self.assertEqual(status, 200)
        self.assertIsNotNone(await self.hs.storage.devices.get_device(self.bob["user_id"], "BOB1"))

    async def test_delete_device_needs_token(self) -> None:
        await self._setup()
        status, body = await self.hs.request("DELETE", f"{V3}/devices/ALICE2", {})
        self.assertEqual((status, body["errcode"]), (401, "M_MISSING_TOKEN"))

    # -- POST /delete_devices ---------------------------------------------------
    async def test_delete_devices(self) -> None:
        await self._setup()
        alice3 = await self.hs.components.sessions.create_session(self.alice["user_id"], "ALICE3")
        token = self.alice["access_token"]
        body = {"devices": ["ALICE2", "ALICE3", "NOSUCHDEVICE", "BOB1", "ALICE2"]}
        status, challenge = await self.hs.request("POST", f"{V3}/delete_devices", body, token)
        self.assertEqual(status, 401)
        assert_conforms(self, "POST", f"{V3}/delete_devices", 401, challenge)
        status, result = await self.hs.request(
            "POST", f"{V3}/delete_devices", dict(body, auth=password_auth("alice", challenge["session"])), token
        )
        self.assertEqual((status, result), (200, {}))
        assert_conforms(self, "POST", f"{V3}/delete_devices", 200, result)
        for gone in (self.alice2, alice3):
            status, err = await self._whoami_status(gone["access_token"])
            self.assertEqual((status, err["errcode"]), (401, "M_UNKNOWN_TOKEN"))
        status, listing = await self.hs.request("GET", f"{V3}/devices", token=token)
        self.assertEqual([d["device_id"] for d in listing["devices"]], ["ALICE1"])
        status, _ = await self._whoami_status(self.bob["access_token"])
        self.assertEqual(status, 200)

    async def test_delete_devices_empty_list(self) -> None:
        await self._setup()
        status, body = await with_uia(
            self, self.hs, "POST", f"{R0}/delete_devices", {"devices": []}, self.alice["access_token"], "alice"
        )
        self.assertEqual((status, body), (200, {}))
        status, listing = await self.hs.request("GET", f"{V3}/devices", token=self.alice["access_token"])
        self.assertEqual(len(listing["devices"]), 2)

    async def test_delete_devices_refusals(self) -> None:
        await self._setup()
        token = self.alice["access_token"]
        status, body = await self.hs.request("POST", f"{V3}/delete_devices", {}, token)
        self.assertEqual((status, body["errcode"]), (400, "M_MISSING_PARAM"))
        for devices in ("ALICE2", [1, 2], {"ALICE2": True}):
            status, body = await self.hs.request("POST", f"{V3}/delete_devices", {"devices": devices}, token)
            self.assertEqual((status, body["errcode"]), (400, "M_BAD_JSON"), devices)
        status, body = await self.hs.request("POST", f"{V3}/delete_devices", token=token, raw=b"[1]")
        self.assertEqual((status, body["errcode"]), (400, "M_BAD_JSON"))
        status, body = await self.hs.request("POST", f"{V3}/delete_devices", {"devices": ["ALICE2"]})
        self.assertEqual((status, body["errcode"]), (401, "M_MISSING_TOKEN"))
        # Wrong password: UIA 401 with M_FORBIDDEN, nothing deleted.
        status, challenge = await self.hs.request("POST", f"{V3}/delete_devices", {"devices": ["ALICE2"]}, token)
        status, body = await self.hs.request(
            "POST",
            f"{V3}/delete_devices",
            {"devices": ["ALICE2"], "auth": password_auth("alice", challenge["session"], "nope")},
            token,
        )
        self.assertEqual((status, body["errcode"]), (401, "M_FORBIDDEN"))
        self.assertEqual(body["session"], challenge["session"])
        status, _ = await self._whoami_status(self.alice2["access_token"])
        self.assertEqual(status, 200)

    async def test_uia_session_is_tied_to_its_endpoint(self) -> None:
        await self._setup()
        token = self.alice["access_token"]
        status, challenge = await self.hs.request("DELETE", f"{V3}/devices/ALICE2", {}, token)
        status, body = await self.hs.request(
            "POST",
            f"{V3}/delete_devices",
            {"devices": ["ALICE2"], "auth": password_auth("alice", challenge["session"])},
            token,
        )
        self.assertEqual((status, body["errcode"]), (403, "M_FORBIDDEN"))
        status, _ = await self._whoami_status(self.alice2["access_token"])
        self.assertEqual(status, 200)


class GuestTest(unittest.TestCase):
    async def test_guests_may_read_and_rename_but_not_delete_or_manage_the_account(self) -> None:
        hs = await start_homeserver(self, bcrypt_rounds=4)
        user_id = await hs.components.registration.register("1234", None, is_guest=True)
        token = (await hs.components.sessions.create_session(user_id, "GUEST1"))["access_token"]
        status, body = await hs.request("GET", f"{V3}/devices", token=token)
        self.assertEqual((status, [core(d) for d in body["devices"]]), (200, [{"device_id": "GUEST1"}]))
        status, _ = await hs.request("PUT", f"{V3}/devices/GUEST1", {"display_name": "guest"}, token)
        self.assertEqual(status, 200)
        status, _ = await hs.request("GET", f"{V3}/capabilities", token=token)
        self.assertEqual(status, 200)
        for method, path, body in (
            ("DELETE", f"{V3}/devices/GUEST1", {}),
            ("POST", f"{V3}/delete_devices", {"devices": ["GUEST1"]}),
            ("POST", f"{V3}/account/password", {"new_password": "x"}),
            ("POST", f"{V3}/account/deactivate", {}),
            ("GET", f"{V3}/account/3pid", None),
        ):
            status, result = await hs.request(method, path, body, token)
            self.assertEqual((status, result["errcode"]), (403, "M_GUEST_ACCESS_FORBIDDEN"), path)
