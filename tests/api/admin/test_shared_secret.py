"""Shared-secret registration over real HTTP: ``/_synapse/admin/v1/register`` (Synapse's admin API).

The MAC is computed here the way Synapse's ``register_new_matrix_user`` computes it, independently of the server code.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from typing import Any, Optional

from twisted.internet.task import Clock
from twisted.trial.unittest import TestCase

from mxtwisted.api.admin.register import NONCE_TIMEOUT, SharedSecretRegistrationResource, shared_secret_from_config
from mxtwisted.config import ConfigError
from mxtwisted.service import StartupError
from tests.support.homeserver import RunningHomeserver, build_config, start_homeserver

PATH = "/_synapse/admin/v1/register"
SECRET = "a long random shared secret"


def mac_of(nonce: str, user: str, password: str, admin: bool, user_type: Optional[str] = None, secret: str = SECRET) -> str:
    """HMAC-SHA1 over nonce NUL user NUL password NUL admin|notadmin [NUL user_type], as the Synapse tool sends."""
    parts = [nonce, user, password, "admin" if admin else "notadmin"]
    if user_type:
        parts.append(user_type)
    return hmac.new(secret.encode("utf8"), "\x00".join(parts).encode("utf8"), hashlib.sha1).hexdigest()


class SharedSecretTests(TestCase):
    hs: RunningHomeserver

    async def start(self, **overrides: Any) -> RunningHomeserver:
        config: dict[str, Any] = {"bcrypt_rounds": 4, "registration_shared_secret": SECRET}
        config.update(overrides)
        self.hs = await start_homeserver(self, **config)
        return self.hs

    async def nonce(self) -> str:
        status, body = await self.hs.request("GET", PATH)
        self.assertEqual(status, 200, body)
        self.assertEqual(set(body), {"nonce"})
        return body["nonce"]

    async def register(self, user: str, password: str = "pw", admin: bool = False, user_type: Optional[str] = None,
                       **extra: Any) -> tuple[int, Any]:
        nonce = await self.nonce()
        body = {
            "nonce": nonce,
            "username": user,
            "password": password,
            "admin": admin,
            "user_type": user_type,
            "mac": mac_of(nonce, user, password, admin, user_type),
            **extra,
        }
        return await self.hs.request("POST", PATH, body)

    async def test_register_regular_user(self):
        hs = await self.start()
        status, body = await self.register("alice", "correct horse", displayname="Alice A.")
        self.assertEqual(status, 200, body)
        self.assertEqual(body["user_id"], "@alice:test.local")
        self.assertEqual(body["home_server"], "test.local")
        requester = await hs.components.auth.requester_for_token(body["access_token"])
        self.assertEqual((requester.user_id, requester.device_id), ("@alice:test.local", body["device_id"]))
        user = await hs.storage.users.get_user("@alice:test.local")
        self.assertFalse(user.admin)
        self.assertTrue(await hs.components.hasher.check("correct horse", user.password_hash))
        self.assertEqual(await hs.storage.profiles.get_field("@alice:test.local", "displayname"), "Alice A.")

    async def test_register_admin_with_user_type(self):
        hs = await self.start()
        status, body = await self.register("Bot", "pw", admin=True, user_type="bot")
        self.assertEqual(status, 200, body)
        self.assertEqual(body["user_id"], "@bot:test.local")  # lower-cased, MAC over what was sent
        user = await hs.storage.users.get_user("@bot:test.local")
        self.assertTrue(user.admin)
        self.assertEqual(user.user_type, "bot")

    async def test_works_while_public_registration_is_closed_and_inhibit_login(self):
        hs = await self.start(enable_registration=False)
        status, body = await self.register("carol", inhibit_login=True)
        self.assertEqual((status, body), (200, {"user_id": "@carol:test.local", "home_server": "test.local"}))
        self.assertEqual(await hs.storage.devices.get_devices("@carol:test.local"), [])

    async def test_wrong_mac(self):
        hs = await self.start()
        nonce = await self.nonce()
        for mac in (mac_of(nonce, "alice", "pw", False, secret="wrong secret"), mac_of(nonce, "alice", "pw", True)):
            nonce = await self.nonce()
            body = {"nonce": nonce, "username": "alice", "password": "pw", "admin": False, "mac": mac}
            status, response = await hs.request("POST", PATH, body)
            self.assertEqual(status, 403, response)
            self.assertEqual(response["errcode"], "M_FORBIDDEN")
        # Claiming admin with a MAC computed for a regular user fails too.
        nonce = await self.nonce()
        body = {"nonce": nonce, "username": "alice", "password": "pw", "admin": True, "mac": mac_of(nonce, "alice", "pw", False)}
        status, response = await hs.request("POST", PATH, body)
        self.assertEqual(status, 403, response)
        self.assertIsNone(await hs.storage.users.get_user("@alice:test.local"))

    async def test_nonce_is_single_use_even_after_a_failure(self):
        hs = await self.start()
        nonce = await self.nonce()
        good = {"nonce": nonce, "username": "alice", "password": "pw", "admin": False, "mac": mac_of(nonce, "alice", "pw", False)}
        status, _ = await hs.request("POST", PATH, good)
        self.assertEqual(status, 200)
        good["username"], good["mac"] = "bob", mac_of(nonce, "bob", "pw", False)
        status, body = await hs.request("POST", PATH, good)
        self.assertEqual(status, 400, body)
        self.assertEqual(body["error"], "unrecognised nonce")
        # A wrong MAC burns the nonce as well.
        nonce = await self.nonce()
        bad = {"nonce": nonce, "username": "bob", "password": "pw", "admin": False, "mac": "0" * 40}
        status, _ = await hs.request("POST", PATH, bad)
        self.assertEqual(status, 403)
        bad["mac"] = mac_of(nonce, "bob", "pw", False)
        status, _ = await hs.request("POST", PATH, bad)
        self.assertEqual(status, 400)
        self.assertIsNone(await hs.storage.users.get_user("@bob:test.local"))

    async def test_unknown_nonce(self):
        hs = await self.start()
        body = {"nonce": "made-up", "username": "a", "password": "pw", "admin": False, "mac": mac_of("made-up", "a", "pw", False)}
        status, response = await hs.request("POST", PATH, body)
        self.assertEqual(status, 400, response)

    async def test_no_shared_secret(self):
        hs = await self.start(registration_shared_secret=None)
        status, body = await hs.request("GET", PATH)
        self.assertEqual(status, 400, body)
        self.assertIn("not enabled", body["error"])
        status, body = await hs.request(
            "POST", PATH, {"nonce": "n", "username": "a", "password": "pw", "mac": mac_of("n", "a", "pw", False)}
        )
        self.assertEqual(status, 400, body)

    async def test_shared_secret_path(self):
        directory = self.mktemp()
        os.makedirs(directory)
        path = os.path.join(directory, "secret")
        with open(path, "w") as f:
            f.write(SECRET + "\n")
        await self.start(registration_shared_secret=None, registration_shared_secret_path=os.path.abspath(path))
        status, body = await self.register("alice")
        self.assertEqual(status, 200, body)
        self.assertEqual(body["user_id"], "@alice:test.local")

    async def test_conflicting_secret_settings_stop_startup(self):
        with self.assertRaises(StartupError) as raised:
            await self.start(registration_shared_secret_path="secret.txt")
        self.assertIn("registration_shared_secret_path", str(raised.exception))

    async def test_malformed_requests(self):
        hs = await self.start()
        cases = [
            ({"nonce": None, "username": "a", "password": "pw", "mac": "x"}, "M_BAD_JSON"),  # no nonce
            ({"nonce": ["n"], "username": "a", "password": "pw", "mac": "x"}, "M_UNKNOWN"),
            ({"username": None, "password": "pw", "mac": "x"}, "M_BAD_JSON"),
            ({"username": 5, "password": "pw", "mac": "x"}, "M_INVALID_USERNAME"),
            ({"username": "a\x00b", "password": "pw", "mac": "x"}, "M_INVALID_USERNAME"),
            ({"username": "a", "mac": "x"}, "M_BAD_JSON"),  # no password
            ({"username": "a", "password": 5, "mac": "x"}, "M_INVALID_PARAM"),
            ({"username": "a", "password": "x" * 513, "mac": "x"}, "M_INVALID_PARAM"),
            ({"username": "a", "password": "pw", "user_type": "wizard", "mac": "x"}, "M_INVALID_PARAM"),
            ({"username": "a", "password": "pw"}, "M_BAD_JSON"),  # no mac
            ({"username": "a", "password": "pw", "mac": 12}, "M_INVALID_PARAM"),
            ({"username": "a", "password": "pw", "mac": "x", "refresh_token": "yes"}, "M_INVALID_PARAM"),
        ]
        for fields, errcode in cases:
            body = dict(fields)
            if "nonce" not in body:
                body["nonce"] = await self.nonce()
            elif body["nonce"] is None:
                del body["nonce"]
            status, response = await hs.request("POST", PATH, body)
            self.assertEqual((status, response["errcode"]), (400, errcode), fields)
        status, response = await hs.request("POST", PATH, raw=b"nonsense")
        self.assertEqual((status, response["errcode"]), (400, "M_NOT_JSON"))

    async def test_invalid_and_taken_usernames(self):
        hs = await self.start()
        await hs.register_user("alice")
        status, body = await self.register("ALICE")
        self.assertEqual((status, body["errcode"]), (400, "M_USER_IN_USE"))
        for bad in ("bad name", "12345", "_x"):
            status, body = await self.register(bad)
            self.assertEqual((status, body["errcode"]), (400, "M_INVALID_USERNAME"), bad)


class NonceExpiryTests(TestCase):
    async def test_nonces_expire_after_a_minute(self):
        clock = Clock()
        resource = SharedSecretRegistrationResource(SECRET, clock, None, None, "test.local")  # type: ignore[arg-type]
        first = (await resource.get_nonce(None))["nonce"]
        clock.advance(NONCE_TIMEOUT - 1)
        second = (await resource.get_nonce(None))["nonce"]
        self.assertIn(first, resource._nonces)
        clock.advance(2)
        resource._expire_nonces()
        self.assertNotIn(first, resource._nonces)
        self.assertIn(second, resource._nonces)


class SharedSecretConfigTests(TestCase):
    def config(self, **overrides: Any) -> Any:
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        return build_config(directory, **overrides)

    def write(self, config: Any, name: str, content: str) -> str:
        with open(os.path.join(os.path.dirname(config.config_path), name), "w") as f:
            f.write(content)
        return name

    def test_inline_secret_and_none(self):
        self.assertEqual(shared_secret_from_config(self.config(registration_shared_secret="s")), "s")
        self.assertIsNone(shared_secret_from_config(self.config(registration_shared_secret=None)))

    def test_path_relative_to_the_config_file(self):
        config = self.config(registration_shared_secret=None, registration_shared_secret_path="secret.txt")
        self.write(config, "secret.txt", "  from file \n")
        self.assertEqual(shared_secret_from_config(config), "from file")

    def test_path_problems(self):
        both = self.config(registration_shared_secret="s", registration_shared_secret_path="secret.txt")
        self.assertRaises(ConfigError, shared_secret_from_config, both)
        missing = self.config(registration_shared_secret=None, registration_shared_secret_path="nope.txt")
        error = self.assertRaises(ConfigError, shared_secret_from_config, missing)
        self.assertIn("registration_shared_secret_path", str(error))
        empty = self.config(registration_shared_secret=None, registration_shared_secret_path="empty.txt")
        self.write(empty, "empty.txt", "\n")
        self.assertRaises(ConfigError, shared_secret_from_config, empty)
