"""The IAuthProvider extension point, loaded from ``modules:`` and exercised over real HTTP.

Spec: Client-Server API, "Login" (``POST /login``) and "Logout". The
providers here are what a site would write: a directory of users (think
LDAP) that creates accounts on first login, a custom login type, and broken
ones that must refuse the login rather than crash the request.
"""

from __future__ import annotations

from typing import Any, Optional

from zope.interface import implementer

from mxtwisted.interfaces import AuthResult, IAuthProvider
from tests.api.client.test_login import LOGIN, LOGOUT, LOGOUT_ALL, WHOAMI, LoginTestCase, password_login

MODULE = "tests.api.client.test_auth_providers."


@implementer(IAuthProvider)
class DirectoryProvider:
    """Accepts ``m.login.password`` for the users of its config: ``{users: {localpart: {password, displayname}}}``.

    Returns None for users it does not know (the next provider is asked) and
    False for a wrong password (the login is refused).
    """

    def __init__(self, config: dict[str, Any], api: Any) -> None:
        self._users = config["users"]
        self._server_name = api.server_name
        self.checked: list[Optional[str]] = []
        self.logged_out: list[tuple[str, Optional[str]]] = []

    def login_types(self) -> dict[str, tuple[str, ...]]:
        return {"m.login.password": ("password",)}

    async def check_login(self, user_id: Optional[str], login_type: str, login_dict: dict) -> Any:
        self.checked.append(user_id)
        if user_id is None:
            return None
        localpart, _, server = user_id[1:].partition(":")
        entry = self._users.get(localpart.lower())
        if entry is None or server != self._server_name:
            return None
        if login_dict.get("password") != entry["password"]:
            return False
        return AuthResult(f"@{localpart.lower()}:{server}", display_name=entry.get("displayname"))

    def on_logged_out(self, user_id: str, device_id: Optional[str]) -> None:
        self.logged_out.append((user_id, device_id))


@implementer(IAuthProvider)
class MagicWordProvider:
    """A login type of its own: ``org.example.magic`` with a ``magic`` field that names the user by itself."""

    def __init__(self, config: dict[str, Any], api: Any) -> None:
        self._words = config["words"]  # magic word -> user ID

    def login_types(self) -> dict[str, tuple[str, ...]]:
        return {"org.example.magic": ("magic",)}

    def check_login(self, user_id: Optional[str], login_type: str, login_dict: dict) -> Any:
        target = self._words.get(login_dict["magic"])
        return AuthResult(target) if target else False

    def on_logged_out(self, user_id: str, device_id: Optional[str]) -> None:
        pass


@implementer(IAuthProvider)
class ExplodingProvider:
    def __init__(self, config: dict[str, Any], api: Any) -> None:
        pass

    def login_types(self) -> dict[str, tuple[str, ...]]:
        return {"m.login.password": ("password",)}

    async def check_login(self, user_id: Optional[str], login_type: str, login_dict: dict) -> Any:
        raise RuntimeError("directory unreachable")

    def on_logged_out(self, user_id: str, device_id: Optional[str]) -> None:
        raise RuntimeError("directory unreachable")


def directory(users: dict[str, Any]) -> dict[str, Any]:
    return {"module": MODULE + "DirectoryProvider", "config": {"users": users}}


class AuthProviderTests(LoginTestCase):
    def provider(self, index: int = 0) -> Any:
        return self.hs.service.modules[index].instance

    async def test_first_login_creates_the_user_with_the_directory_display_name(self):
        hs = await self.start(modules=[directory({"carol": {"password": "dir-pw", "displayname": "Carol C"}})])
        body = await self.login("Carol", "dir-pw")
        self.assertEqual(body["user_id"], "@carol:test.local")
        user = await hs.storage.users.get_user("@carol:test.local")
        self.assertIsNotNone(user)
        self.assertIsNone(user.password_hash)
        self.assertEqual(await hs.storage.profiles.get_field("@carol:test.local", "displayname"), "Carol C")
        # The second login finds the account.
        again = await self.login("carol", "dir-pw")
        self.assertEqual(again["user_id"], "@carol:test.local")
        self.assertEqual(self.provider().checked, ["@carol:test.local", "@carol:test.local"])

    async def test_unknown_users_fall_through_to_the_local_database(self):
        hs = await self.start(modules=[directory({"carol": {"password": "dir-pw"}})])
        await hs.register_user("alice", "pw")
        self.assertEqual((await self.login("alice", "pw"))["user_id"], "@alice:test.local")
        await self.call("POST", LOGIN, password_login("alice", "wrong"), expect=403, errcode="M_FORBIDDEN")

    async def test_a_refusal_wins_over_a_matching_local_password(self):
        hs = await self.start(modules=[directory({"carol": {"password": "dir-pw"}})])
        await hs.register_user("carol", "local-pw")
        body = await self.call("POST", LOGIN, password_login("carol", "local-pw"), expect=403, errcode="M_FORBIDDEN")
        self.assertEqual(body["error"], "Invalid username or password")

    async def test_provider_order(self):
        first = directory({"dave": {"password": "one"}})
        second = directory({"dave": {"password": "two"}, "erin": {"password": "two"}})
        await self.start(modules=[first, second])
        await self.call("POST", LOGIN, password_login("dave", "two"), expect=403)  # the first provider refuses
        await self.login("dave", "one")
        await self.login("erin", "two")  # unknown to the first: the second decides
        self.assertEqual(self.provider(0).checked, ["@dave:test.local", "@dave:test.local", "@erin:test.local"])
        self.assertEqual(self.provider(1).checked, ["@erin:test.local"])

    async def test_provider_order_reversed(self):
        await self.start(modules=[directory({"dave": {"password": "two"}}), directory({"dave": {"password": "one"}})])
        await self.login("dave", "two")
        await self.call("POST", LOGIN, password_login("dave", "one"), expect=403)

    async def test_a_failing_provider_refuses_the_login(self):
        hs = await self.start(modules=[{"module": MODULE + "ExplodingProvider"}])
        await hs.register_user("alice", "pw")
        body = await self.call("POST", LOGIN, password_login("alice", "pw"), expect=403, errcode="M_FORBIDDEN")
        self.assertEqual(body["error"], "Invalid username or password")
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    async def test_a_failing_on_logged_out_does_not_fail_the_logout(self):
        hs = await self.start(modules=[{"module": MODULE + "ExplodingProvider"}])
        login = await hs.register_user("alice", "pw")
        await self.call("POST", LOGOUT, {}, token=login["access_token"], expect=200)
        await self.assert_token_dead(login["access_token"])
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    async def test_on_logged_out(self):
        hs = await self.start(modules=[directory({"carol": {"password": "pw"}})])
        a = await self.login("carol", "pw")
        b = await self.login("carol", "pw")
        c = await self.login("carol", "pw")
        await self.call("POST", LOGOUT, {}, token=a["access_token"], expect=200)
        self.assertEqual(self.provider().logged_out, [("@carol:test.local", a["device_id"])])
        await self.call("POST", LOGOUT_ALL, {}, token=b["access_token"], expect=200)
        self.assertEqual(
            sorted(self.provider().logged_out),
            sorted([("@carol:test.local", d) for d in (a["device_id"], b["device_id"], c["device_id"])]),
        )
        self.assertEqual(await hs.storage.devices.get_devices("@carol:test.local"), [])

    async def test_deactivated_user_known_to_the_directory(self):
        hs = await self.start(modules=[directory({"carol": {"password": "pw"}})])
        await self.login("carol", "pw")
        await hs.storage.tokens.deactivate_user("@carol:test.local")
        await self.call("POST", LOGIN, password_login("carol", "pw"), expect=403, errcode="M_USER_DEACTIVATED")

    async def test_custom_login_type(self):
        words = {"xyzzy": "@erin:test.local", "plugh": "@erin:elsewhere.org", "frotz": "@Not Valid:test.local"}
        hs = await self.start(modules=[{"module": MODULE + "MagicWordProvider", "config": {"words": words}}])
        flows = await self.call("GET", LOGIN, expect=200)
        self.assertEqual(
            flows["flows"], [{"type": "org.example.magic"}, {"type": "m.login.password"}, {"type": "m.login.token"}]
        )
        body = await self.call("POST", LOGIN, {"type": "org.example.magic", "magic": "xyzzy"}, expect=200)
        self.assertEqual(body["user_id"], "@erin:test.local")
        me = await self.call("GET", WHOAMI, token=body["access_token"], expect=200)
        self.assertEqual(me["user_id"], "@erin:test.local")
        await self.call("POST", LOGIN, {"type": "org.example.magic", "magic": "wrong"}, expect=403,
                        errcode="M_FORBIDDEN")
        await self.call("POST", LOGIN, {"type": "org.example.magic"}, expect=400, errcode="M_MISSING_PARAM")
        # A provider naming a remote or invalid user is refused, and no account appears.
        for word in ("plugh", "frotz"):
            await self.call("POST", LOGIN, {"type": "org.example.magic", "magic": word}, expect=403,
                            errcode="M_FORBIDDEN")
        self.assertEqual(await hs.storage.users.count_users(), 1)
