"""Destinations that do not answer are not asked again for a while (mxtwisted.federation.backoff): the
schedule on a fake clock, and the real client over loopback against a port that refuses connections."""

from __future__ import annotations

import os
import socket

from twisted.internet.task import Clock
from twisted.trial.unittest import TestCase

from mxtwisted.events.signing import generate_signing_key
from mxtwisted.federation.backoff import MAX_INTERVAL, MIN_INTERVAL, DestinationBackoff
from mxtwisted.federation.client import NotRetryingDestination, RequestSendFailed
from tests.federation.support import JsonResource, listen_tls, loopback_discovery, make_client, make_pki


class BackoffScheduleTests(TestCase):
    def test_failures_double_the_interval_up_to_the_maximum_and_an_answer_clears_it(self) -> None:
        clock = Clock()
        backoff = DestinationBackoff(clock)
        self.assertEqual(backoff.retry_at("a.test"), 0)
        backoff.failed("a.test")
        self.assertEqual(backoff.retry_at("a.test"), MIN_INTERVAL)
        # More failures of requests that were in flight at the same time: one step only.
        backoff.failed("a.test")
        self.assertEqual(backoff.retry_at("a.test"), MIN_INTERVAL)
        clock.advance(MIN_INTERVAL)
        self.assertEqual(backoff.retry_at("a.test"), 0)
        backoff.failed("a.test")
        self.assertEqual(backoff.retry_at("a.test"), clock.seconds() + 2 * MIN_INTERVAL)
        for _ in range(20):
            clock.advance(MAX_INTERVAL)
            backoff.failed("a.test")
        self.assertEqual(backoff.retry_at("a.test"), clock.seconds() + MAX_INTERVAL)
        self.assertEqual(backoff.retry_at("b.test"), 0)
        backoff.succeeded("a.test")
        self.assertEqual(backoff.retry_at("a.test"), 0)


def _closed_port() -> int:
    """A loopback port nothing listens on (connections are refused at once)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class ClientBackoffTests(TestCase):
    def setUp(self) -> None:
        self.pki = make_pki(os.path.abspath(self.mktemp()))
        self.key = generate_signing_key()

    async def test_an_unreachable_server_is_not_asked_again_until_its_interval_passed(self) -> None:
        port = _closed_port()
        client = make_client(self, "b.test", self.key, loopback_discovery({"a.test": port}), self.pki.policy())
        with self.assertRaises(RequestSendFailed) as first:
            await client.get_json("a.test", "/_matrix/federation/v1/version")
        self.assertNotIsInstance(first.exception, NotRetryingDestination)
        # At once, without connecting: the error says when it will be tried again.
        with self.assertRaises(NotRetryingDestination) as again:
            await client.get_json("a.test", "/_matrix/federation/v1/query/profile", {"user_id": "@u:a.test"})
        self.assertGreater(again.exception.retry_at, 0)
        # Transactions keep their own schedule (the federation sender's): they are still tried.
        with self.assertRaises(RequestSendFailed) as txn:
            await client.put_json("a.test", "/_matrix/federation/v1/send/1", {"pdus": []})
        self.assertNotIsInstance(txn.exception, NotRetryingDestination)

    async def test_a_server_that_answers_or_talks_to_us_is_up_again(self) -> None:
        resource = JsonResource(lambda request: {"ok": True})
        port = listen_tls(self, self.pki, resource)
        client = make_client(self, "b.test", self.key, loopback_discovery({"a.test": port}), self.pki.policy())
        client.backoff.failed("a.test")
        with self.assertRaises(NotRetryingDestination):
            await client.get_json("a.test", "/x")
        self.assertEqual(resource.requests, [])
        # A request from a.test (here: its transaction answer) clears the backoff.
        self.assertEqual(await client.put_json("a.test", "/_matrix/federation/v1/send/2", {"pdus": []}), {"ok": True})
        self.assertEqual(await client.get_json("a.test", "/x"), {"ok": True})


class IncomingRequestTests(TestCase):
    async def test_a_signed_request_from_a_server_clears_its_backoff(self) -> None:
        from tests.federation.test_served_rooms import REMOTE, RemoteServer, StaticKeyring, start_federating_homeserver

        keyring = StaticKeyring()
        hs = await start_federating_homeserver(self, keyring)
        remote = RemoteServer(REMOTE, hs)
        keyring.add(REMOTE, remote.key)
        backoff = hs.service.components.federation.client.backoff
        backoff.failed(REMOTE)
        self.assertGreater(backoff.retry_at(REMOTE), 0)
        user = await hs.register_user("alice")
        code, _ = await remote.request("GET", f"/_matrix/federation/v1/query/profile?user_id={user['user_id']}")
        self.assertEqual(code, 200)
        self.assertEqual(backoff.retry_at(REMOTE), 0)
