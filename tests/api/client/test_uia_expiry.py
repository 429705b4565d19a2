"""Expired UIA sessions are deleted and give back the registration-token use they reserved."""

from twisted.internet import defer
from twisted.trial.unittest import TestCase

from tests.support.homeserver import start_homeserver


class UIAExpiryTests(TestCase):
    async def test_expired_session_releases_reserved_token(self):
        hs = await start_homeserver(self, bcrypt_rounds=4)
        # Let the server's own start-up housekeeping run finish first.
        await defer.DeferredList(list(hs.service._job_runs))
        tokens, uia = hs.storage.registration_tokens, hs.storage.uia
        # An abandoned session that reserved a use of "tok".
        await tokens.create("tok", 1, None)
        self.assertTrue(await tokens.reserve("tok", 0))
        await uia.create_session("abandoned", 0, "/_matrix/client/v3/register", "POST", "register", {})
        await uia.set_server_value("abandoned", "registration_token", "tok")
        # A session whose registration finished: its use stays completed.
        await tokens.create("used", 1, None)
        self.assertTrue(await tokens.reserve("used", 0))
        await tokens.complete("used")
        await uia.create_session("done", 0, "/_matrix/client/v3/register", "POST", "register", {})
        await uia.set_server_value("done", "registration_token", "used")
        await uia.set_server_value("done", "registered_user_id", "@bob:test.local")
        # Exhausted while reserved.
        self.assertFalse(await tokens.reserve("tok", 0))

        self.assertEqual(await hs.components.uia.expire_sessions(), 2)

        tok = await tokens.get("tok")
        self.assertEqual((tok.pending, tok.completed), (0, 0))
        self.assertTrue(await tokens.reserve("tok", 0))
        used = await tokens.get("used")
        self.assertEqual((used.pending, used.completed), (0, 1))
        self.assertIsNone(await uia.get_session("abandoned"))
        self.assertIsNone(await uia.get_session("done"))
