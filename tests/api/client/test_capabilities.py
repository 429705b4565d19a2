"""``GET /capabilities`` over real HTTP (Client-Server API, "Capabilities negotiation")."""

from __future__ import annotations

from typing import Any

from twisted.trial import unittest

from mxtwisted.api.client.capabilities import build_capabilities
from mxtwisted.events.room_versions import KNOWN_ROOM_VERSIONS
from tests.api.client.test_devices import R0, V3, assert_conforms
from tests.support.homeserver import start_homeserver


class CapabilitiesTest(unittest.TestCase):
    async def _capabilities(self, **overrides: Any) -> dict[str, Any]:
        self.hs = await start_homeserver(self, bcrypt_rounds=4, **overrides)
        alice = await self.hs.register_user("alice")
        status, body = await self.hs.request("GET", f"{V3}/capabilities", token=alice["access_token"])
        self.assertEqual(status, 200, body)
        assert_conforms(self, "GET", f"{V3}/capabilities", 200, body)
        status, body_r0 = await self.hs.request("GET", f"{R0}/capabilities", token=alice["access_token"])
        self.assertEqual((status, body_r0), (200, body))
        return body["capabilities"]

    async def test_default_capabilities(self) -> None:
        caps = await self._capabilities()
        self.assertEqual(caps["m.change_password"], {"enabled": True})
        self.assertEqual(caps["m.room_versions"]["default"], self.hs.config.default_room_version)
        self.assertEqual(caps["m.room_versions"]["available"], {v: "stable" for v in KNOWN_ROOM_VERSIONS})
        self.assertIn(caps["m.room_versions"]["default"], caps["m.room_versions"]["available"])
        self.assertEqual(caps["m.set_displayname"], {"enabled": True})
        self.assertEqual(caps["m.set_avatar_url"], {"enabled": True})
        self.assertEqual(caps["m.profile_fields"], {"enabled": True})
        self.assertEqual(caps["m.3pid_changes"], {"enabled": False})
        self.assertEqual(caps["m.get_login_token"], {"enabled": False})

    async def test_configured_default_room_version(self) -> None:
        caps = await self._capabilities(default_room_version="10")
        self.assertEqual(caps["m.room_versions"]["default"], "10")

    async def test_password_login_disabled(self) -> None:
        caps = await self._capabilities(password_config={"enabled": False})
        self.assertEqual(caps["m.change_password"], {"enabled": False})

    async def test_local_password_database_disabled(self) -> None:
        caps = await self._capabilities(password_config={"localdb_enabled": False})
        self.assertEqual(caps["m.change_password"], {"enabled": False})

    async def test_get_login_token_follows_login_via_existing_session(self) -> None:
        caps = await self._capabilities(login_via_existing_session={"enabled": True})
        self.assertEqual(caps["m.get_login_token"], {"enabled": True})

    async def test_needs_access_token(self) -> None:
        self.hs = await start_homeserver(self, bcrypt_rounds=4)
        status, body = await self.hs.request("GET", f"{V3}/capabilities")
        self.assertEqual((status, body["errcode"]), (401, "M_MISSING_TOKEN"))
        status, body = await self.hs.request("GET", f"{V3}/capabilities", token="nope")
        self.assertEqual((status, body["errcode"]), (401, "M_UNKNOWN_TOKEN"))


class BuildCapabilitiesTest(unittest.TestCase):
    def test_profile_fields_disallowed_follow_the_deprecated_pair(self) -> None:
        # Once the configuration knows Synapse's enable_set_displayname / enable_set_avatar_url.
        caps = build_capabilities({"enable_set_displayname": False, "enable_set_avatar_url": False}, "12")
        self.assertEqual(caps["m.set_displayname"], {"enabled": False})
        self.assertEqual(caps["m.set_avatar_url"], {"enabled": False})
        self.assertEqual(caps["m.profile_fields"], {"enabled": True, "disallowed": ["displayname", "avatar_url"]})
        caps = build_capabilities({"enable_set_avatar_url": False}, "12")
        self.assertEqual(caps["m.set_displayname"], {"enabled": True})
        self.assertEqual(caps["m.profile_fields"], {"enabled": True, "disallowed": ["avatar_url"]})
