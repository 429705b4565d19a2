"""FederationClient over real HTTPS on loopback: TLS checks, the IP filter, errors."""

from __future__ import annotations

import os

from twisted.trial.unittest import TestCase

from mxtwisted.events.signing import generate_signing_key
from mxtwisted.federation.client import FederationDeniedError, FederationError, RequestSendFailed
from mxtwisted.federation.ipfilter import BlacklistedAddressError, IPFilter
from mxtwisted.federation.tls import FederationTLSPolicy, load_ca_list
from tests.federation.support import (
    JsonResource,
    listen_tls,
    loopback_discovery,
    make_client,
    make_pki,
    tls_listener_config,
)
from tests.support.homeserver import start_homeserver


class ClientTests(TestCase):
    def setUp(self):
        self.dir = os.path.abspath(self.mktemp())
        self.pki = make_pki(os.path.join(self.dir, "pki"))
        self.key = generate_signing_key()

    async def _homeserver(self):
        hs = await start_homeserver(self, server_name="a.test", **tls_listener_config(self.pki))
        return hs, hs.service.ports[0].getHost().port

    async def test_get_json_with_trusted_ca(self):
        hs, port = await self._homeserver()
        client = make_client(self, "b.test", self.key, loopback_discovery({"a.test": port}), self.pki.policy())
        body = await client.get_json("a.test", "/_matrix/federation/v1/version")
        self.assertIn("server", body)

    async def test_ip_literal_server_name(self):
        """Closed test federations name servers like 127.0.0.1:8448: no DNS, certificate for the IP."""
        hs, port = await self._homeserver()
        client = make_client(self, "b.test", self.key, loopback_discovery({}), self.pki.policy())
        body = await client.get_json(f"127.0.0.1:{port}", "/_matrix/key/v2/server")
        self.assertEqual(body["server_name"], "a.test")

    async def test_untrusted_certificate_refused(self):
        hs, port = await self._homeserver()
        other = make_pki(os.path.join(self.dir, "other"), ca_name="another CA")
        client = make_client(self, "b.test", self.key, loopback_discovery({"a.test": port}), other.policy())
        with self.assertRaises(RequestSendFailed):
            await client.get_json("a.test", "/_matrix/federation/v1/version")

    async def test_wrong_name_refused(self):
        """The certificate is valid for a.test, not for nope.example."""
        hs, port = await self._homeserver()
        from mxtwisted.federation.discovery import ServerDiscovery
        from tests.federation.support import FakeSrv, FakeWellKnown

        discovery = ServerDiscovery(FakeWellKnown({"nope.example": f"localhost2.invalid:{port}"}), FakeSrv())

        async def resolve(host):
            return ["127.0.0.1"]

        from twisted.internet import reactor

        from mxtwisted.federation.client import FederationAgent, FederationClient

        agent = FederationAgent(reactor, discovery, self.pki.policy(), IPFilter(whitelist=["127.0.0.0/8"]), resolve)
        client = FederationClient(reactor, "b.test", self.key, agent, timeout=10)
        self.addCleanup(client.close)
        with self.assertRaises(RequestSendFailed):
            await client.get_json("nope.example", "/_matrix/federation/v1/version")

    async def test_no_verification_when_disabled(self):
        hs, port = await self._homeserver()
        other = make_pki(os.path.join(self.dir, "other"), ca_name="another CA")
        policy = FederationTLSPolicy(verify=False, trust_root=load_ca_list([other.ca_path]))
        client = make_client(self, "b.test", self.key, loopback_discovery({"a.test": port}), policy)
        body = await client.get_json("a.test", "/_matrix/federation/v1/version")
        self.assertIn("server", body)

    async def test_loopback_blacklisted_by_default(self):
        hs, port = await self._homeserver()
        client = make_client(self, "b.test", self.key, loopback_discovery({"a.test": port}), self.pki.policy(), IPFilter())
        with self.assertRaises(RequestSendFailed) as cm:
            await client.get_json("a.test", "/_matrix/federation/v1/version")
        self.assertIsInstance(cm.exception.reason, BlacklistedAddressError)

    async def test_non_2xx_raises_federation_error(self):
        hs, port = await self._homeserver()
        client = make_client(self, "b.test", self.key, loopback_discovery({"a.test": port}), self.pki.policy())
        with self.assertRaises(FederationError) as cm:
            await client.get_json("a.test", "/_matrix/federation/v1/nonexistent")
        self.assertEqual(cm.exception.status, 404)
        self.assertEqual(cm.exception.errcode, "M_UNRECOGNIZED")

    async def test_connection_refused(self):
        hs, port = await self._homeserver()
        await hs.service.stopService()
        client = make_client(self, "b.test", self.key, loopback_discovery({"a.test": port}), self.pki.policy())
        with self.assertRaises(RequestSendFailed):
            await client.get_json("a.test", "/_matrix/federation/v1/version")

    async def test_domain_whitelist_refuses_without_sending(self):
        from twisted.internet import reactor

        from mxtwisted.federation.client import FederationAgent, FederationClient

        resource = JsonResource(lambda request: {})
        port = listen_tls(self, self.pki, resource)
        agent = FederationAgent(reactor, loopback_discovery({"a.test": port}), self.pki.policy(), IPFilter(whitelist=["127.0.0.0/8"]))
        client = FederationClient(reactor, "b.test", self.key, agent, domain_whitelist=["c.test"])
        with self.assertRaises(FederationDeniedError):
            await client.get_json("a.test", "/x")
        self.assertEqual(resource.requests, [])

    async def test_sends_host_header_query_and_body(self):
        seen = {}

        def body(request):
            seen["host"] = request.getHeader(b"host")
            seen["uri"] = request.uri
            seen["auth"] = request.getHeader(b"authorization")
            seen["content"] = request.content.read()
            return {"ok": True}

        port = listen_tls(self, self.pki, JsonResource(body))
        client = make_client(self, "b.test", self.key, loopback_discovery({"a.test": port}), self.pki.policy())
        result = await client.put_json("a.test", "/_matrix/federation/v1/send/1", {"pdus": []})
        self.assertEqual(result, {"ok": True})
        self.assertEqual(seen["host"], f"127.0.0.1:{port}".encode())
        self.assertEqual(seen["content"], b'{"pdus":[]}')
        self.assertTrue(seen["auth"].startswith(b'X-Matrix origin="b.test",destination="a.test",key="ed25519:'))
        await client.get_json("a.test", "/_matrix/federation/v1/state/!r:a.test", args={"event_id": "$e", "limit": 3})
        self.assertEqual(seen["uri"], b"/_matrix/federation/v1/state/!r:a.test?event_id=%24e&limit=3")


class TLSSettingsTests(TestCase):
    """``federation_certificate_verification_whitelist`` and ``federation_client_minimum_tls_version`` over
    real TLS handshakes."""

    def setUp(self):
        self.dir = os.path.abspath(self.mktemp())
        self.pki = make_pki(os.path.join(self.dir, "pki"))
        self.key = generate_signing_key()

    def client(self, port, policy):
        return make_client(self, "b.test", self.key, loopback_discovery({"a.test": port, "other.test": port}), policy)

    async def test_whitelisted_names_skip_the_certificate_check_and_only_they(self):
        # The name matched is the one connected to (the delegated one): a.test delegates to localhost.
        from mxtwisted.federation.discovery import ServerDiscovery
        from tests.federation.support import FakeSrv, FakeWellKnown

        port = listen_tls(self, self.pki, JsonResource(lambda request: {"ok": True}))
        stranger = make_pki(os.path.join(self.dir, "other"), ca_name="another CA")
        policy = FederationTLSPolicy(trust_root=load_ca_list([stranger.ca_path]), unverified_names=["LOCAL*"])
        discovery = ServerDiscovery(
            FakeWellKnown({"a.test": f"localhost:{port}", "other.test": f"127.0.0.1:{port}"}), FakeSrv()
        )
        client = make_client(self, "b.test", self.key, discovery, policy)
        self.assertEqual(await client.get_json("a.test", "/x"), {"ok": True})
        with self.assertRaises(RequestSendFailed):
            await client.get_json("other.test", "/x")

    async def test_minimum_tls_version_refuses_older_servers(self):
        from twisted.internet import reactor, ssl
        from twisted.web import server

        cert = ssl.PrivateCertificate.loadPEM(self.pki.cert_pem + self.pki.key_pem)
        options = ssl.CertificateOptions(
            privateKey=cert.privateKey.original, certificate=cert.original,
            lowerMaximumSecurityTo=ssl.TLSVersion.TLSv1_2,
        )
        listening = reactor.listenSSL(0, server.Site(JsonResource(lambda request: {"ok": True})), options, interface="127.0.0.1")
        self.addCleanup(listening.stopListening)
        port = listening.getHost().port
        trust = load_ca_list([self.pki.ca_path])
        ok = self.client(port, FederationTLSPolicy(trust_root=trust, minimum_version="1.2"))
        self.assertEqual(await ok.get_json("a.test", "/x"), {"ok": True})
        strict = self.client(port, FederationTLSPolicy(trust_root=trust, minimum_version="1.3"))
        with self.assertRaises(RequestSendFailed):
            await strict.get_json("a.test", "/x")
