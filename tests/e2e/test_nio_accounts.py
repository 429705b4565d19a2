"""End to end with a real client library: matrix-nio against a real matrixhs over loopback.

nio is asyncio-based, so its scenario runs with ``asyncio.run`` in a worker
thread (``deferToThread``) while the Twisted reactor keeps serving the
homeserver in the test's thread. The scenario covers the account life cycle:
register (nio's ``m.login.dummy`` flow), log in a second device, rename a
device, delete a device through UIA, change the password, log out
everywhere, deactivate.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from twisted.internet import threads
from twisted.trial import unittest

from tests.support.homeserver import start_homeserver

try:
    import nio
except ImportError:  # pragma: no cover - the test extra installs it
    nio = None

V3 = "/_matrix/client/v3"

#: Generous limits: the scenario logs in several times from one address.
_RELAXED_LOGIN_LIMITS = {
    "address": {"per_second": 100, "burst_count": 100},
    "account": {"per_second": 100, "burst_count": 100},
    "failed_attempts": {"per_second": 100, "burst_count": 100},
}


def check(condition: Any, message: str) -> None:
    if not condition:
        raise AssertionError(message)


async def raw_json(client: Any, method: str, path: str, body: Any = None, token: str | None = None) -> tuple[int, Any]:
    """A request nio has no method for, through nio's own HTTP session (and its access token unless given)."""
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {token or client.access_token}"}
    response = await client.send(method, path, json.dumps(body) if body is not None else None, headers=headers)
    return response.status, await response.json()


async def uia_password(client: Any, path: str, body: dict, password: str) -> tuple[int, Any]:
    """POST ``body`` to ``path``: first for the UIA challenge, then with ``m.login.password``."""
    status, challenge = await raw_json(client, "POST", path, body)
    check(status == 401 and "session" in challenge, f"expected a UIA challenge, got {status} {challenge}")
    auth = {
        "type": "m.login.password",
        "identifier": {"type": "m.id.user", "user": client.user_id},
        "password": password,
        "session": challenge["session"],
    }
    return await raw_json(client, "POST", path, dict(body, auth=auth))


async def account_scenario(base_url: str) -> list[str]:
    """The whole life cycle; returns the steps done (for the test's failure messages)."""
    steps: list[str] = []
    clients: list[Any] = []

    def new_client(user: str = "") -> Any:
        client = nio.AsyncClient(base_url, user)
        clients.append(client)
        return client

    try:
        # 1. Register with nio (m.login.dummy).
        first = new_client("carol")
        registered = await first.register("carol", "first password", device_name="carol's laptop")
        check(isinstance(registered, nio.RegisterResponse), f"register: {registered}")
        user_id = registered.user_id
        check(user_id.startswith("@carol:"), f"register: user_id {user_id}")
        steps.append("registered")

        # 2. Log in a second and a third device.
        second = new_client(user_id)
        logged_in = await second.login("first password", device_name="carol's phone")
        check(isinstance(logged_in, nio.LoginResponse), f"login: {logged_in}")
        third = new_client(user_id)
        logged_in = await third.login("first password", device_name="old tablet")
        check(isinstance(logged_in, nio.LoginResponse), f"login: {logged_in}")
        check(len({first.device_id, second.device_id, third.device_id}) == 3, "three distinct devices")
        steps.append("logged in twice")

        # 3. Rename the second device.
        renamed = await first.update_device(second.device_id, {"display_name": "carol's new phone"})
        check(isinstance(renamed, nio.UpdateDeviceResponse), f"update_device: {renamed}")
        status, device = await raw_json(first, "GET", f"{V3}/devices/{second.device_id}")
        check(status == 200 and device.get("display_name") == "carol's new phone", f"renamed device: {status} {device}")
        steps.append("renamed a device")

        # 4. Delete the third device: nio's UIA round trip with the password dict.
        challenge = await first.delete_devices([third.device_id])
        check(isinstance(challenge, nio.DeleteDevicesAuthResponse), f"delete_devices challenge: {challenge}")
        check(["m.login.password"] in [flow["stages"] for flow in challenge.flows], f"flows: {challenge.flows}")
        deleted = await first.delete_devices(
            [third.device_id],
            {"type": "m.login.password", "user": "carol", "password": "first password", "session": challenge.session},
        )
        check(isinstance(deleted, nio.DeleteDevicesResponse), f"delete_devices: {deleted}")
        status, error = await raw_json(third, "GET", f"{V3}/devices")
        check(status == 401 and error.get("errcode") == "M_UNKNOWN_TOKEN", f"deleted device's token: {status} {error}")
        listing = await first.devices()
        check(isinstance(listing, nio.DevicesResponse), f"nio devices(): {listing}")
        check(
            {d.id for d in listing.devices} == {first.device_id, second.device_id},
            f"devices after deletion: {listing}",
        )
        steps.append("deleted a device")

        # 5. Change the password, keeping the other device logged in.
        status, result = await uia_password(
            first,
            f"{V3}/account/password",
            {"new_password": "second password", "logout_devices": False},
            "first password",
        )
        check((status, result) == (200, {}), f"change password: {status} {result}")
        status, _ = await raw_json(second, "GET", f"{V3}/devices")
        check(status == 200, "the other device stays logged in with logout_devices false")
        old = await new_client(user_id).login("first password")
        check(isinstance(old, nio.LoginError) and old.status_code == "M_FORBIDDEN", f"old password: {old}")
        steps.append("changed the password")

        # 6. Log out everywhere (nio forgets its token on logout: keep them to try them afterwards).
        tokens = [first.access_token, second.access_token]
        logged_out = await first.logout(all_devices=True)
        check(isinstance(logged_out, nio.LogoutResponse), f"logout all: {logged_out}")
        for token in tokens:
            status, error = await raw_json(second, "GET", f"{V3}/devices", token=token)
            check(status == 401 and error.get("errcode") == "M_UNKNOWN_TOKEN", f"after logout all: {status} {error}")
        steps.append("logged out everywhere")

        # 7. Log in with the new password and deactivate.
        last = new_client(user_id)
        logged_in = await last.login("second password")
        check(isinstance(logged_in, nio.LoginResponse), f"login with the new password: {logged_in}")
        status, result = await uia_password(last, f"{V3}/account/deactivate", {"erase": True}, "second password")
        check(status == 200 and result == {"id_server_unbind_result": "success"}, f"deactivate: {status} {result}")
        status, error = await raw_json(last, "GET", f"{V3}/devices")
        check(status == 401 and error.get("errcode") == "M_UNKNOWN_TOKEN", f"after deactivation: {status} {error}")
        refused = await new_client(user_id).login("second password")
        check(isinstance(refused, nio.LoginError), f"login after deactivation: {refused}")
        # The password hash is gone with the deactivation, so this is a wrong password (as Synapse).
        check(refused.status_code == "M_FORBIDDEN", f"login after deactivation: {refused}")
        steps.append("deactivated")
        return steps
    finally:
        for client in clients:
            await client.close()


class NioAccountsTest(unittest.TestCase):
    timeout = 120

    async def test_account_life_cycle(self) -> None:
        if nio is None:
            raise unittest.SkipTest("matrix-nio is not installed")
        hs = await start_homeserver(
            self,
            bcrypt_rounds=4,
            enable_registration=True,
            enable_registration_without_verification=True,
            rc_login=_RELAXED_LOGIN_LIMITS,
        )
        steps = await threads.deferToThread(asyncio.run, account_scenario(hs.base_url))
        self.assertEqual(
            steps,
            [
                "registered",
                "logged in twice",
                "renamed a device",
                "deleted a device",
                "changed the password",
                "logged out everywhere",
                "deactivated",
            ],
        )
