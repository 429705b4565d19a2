"""X-Matrix request authentication: a real signed request to a test route, and the ways it fails."""

from __future__ import annotations

import json
import os

import treq
from twisted.internet import reactor
from twisted.trial.unittest import TestCase
from twisted.web.client import Agent, HTTPConnectionPool
from twisted.web.server import Site

from mxtwisted.events.signing import generate_signing_key
from mxtwisted.federation.auth import (
    FederationAuthenticator,
    federation_handler,
    parse_x_matrix_header,
    x_matrix_header,
)
from mxtwisted.federation.client import FederationError
from mxtwisted.federation.keyring import Keyring
from mxtwisted.http.resource import MatrixResource
from mxtwisted.http.router import Router
from tests.federation.support import loopback_discovery, make_client, make_pki, tls_listener_config
from tests.support.homeserver import start_homeserver


class HeaderTests(TestCase):
    def test_parse_quoted_and_bare(self):
        params = parse_x_matrix_header('X-Matrix origin=a.test,destination="b.test", key="ed25519:k",sig="s/+="')
        self.assertEqual(params, {"origin": "a.test", "destination": "b.test", "key": "ed25519:k", "sig": "s/+="})

    def test_parse_rejects_other_schemes(self):
        self.assertRaises(ValueError, parse_x_matrix_header, "Bearer abc")
        self.assertRaises(ValueError, parse_x_matrix_header, 'X-Matrix origin="unterminated')


class RequestAuthTests(TestCase):
    async def setUp(self):
        self.pki = make_pki(os.path.abspath(self.mktemp()))
        # The origin: a running homeserver "b.test" publishing its keys over HTTPS.
        self.origin = await start_homeserver(self, server_name="b.test", **tls_listener_config(self.pki))
        origin_port = self.origin.service.ports[0].getHost().port
        self.origin_key = self.origin.service.signing_keys[0]
        # The receiver "a.test": a test route behind federation_handler, served over HTTPS.
        fetcher = make_client(self, "a.test", generate_signing_key(), loopback_discovery({"b.test": origin_port}), self.pki.policy())
        self.keyring = Keyring(reactor, "a.test", {}, fetcher)
        self.authenticator = FederationAuthenticator("a.test", self.keyring, reactor)
        router = Router()

        async def echo(request, origin, thing):
            return {"origin": origin, "thing": thing}

        router.add("GET", "/_matrix/federation/v1/test/{thing}", federation_handler(self.authenticator, echo))
        router.add("PUT", "/_matrix/federation/v1/test/{thing}", federation_handler(self.authenticator, echo))
        port = reactor.listenSSL(0, Site(MatrixResource(router)), self.pki.server_options(), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        self.port = port.getHost().port
        self.url = f"https://127.0.0.1:{self.port}"
        self.client = make_client(self, "b.test", self.origin_key, loopback_discovery({"a.test": self.port}), self.pki.policy())

    async def raw(self, method, path, authorization=None, body=None):
        headers = {}
        if authorization is not None:
            headers[b"Authorization"] = [authorization.encode()]
        pool = HTTPConnectionPool(reactor, persistent=False)
        http = treq.client.HTTPClient(Agent(reactor, contextFactory=self.pki.policy(), pool=pool))
        data = json.dumps(body).encode() if body is not None else None
        response = await http.request(method, self.url + path, headers=headers, data=data)
        return response.code, json.loads(await response.content())

    async def test_signed_requests_pass(self):
        self.assertEqual(
            await self.client.get_json("a.test", "/_matrix/federation/v1/test/x", args={"q": "1 2"}),
            {"origin": "b.test", "thing": "x"},
        )
        self.assertEqual(
            await self.client.put_json("a.test", "/_matrix/federation/v1/test/y", {"content": [1, "é"]}),
            {"origin": "b.test", "thing": "y"},
        )

    async def test_missing_header(self):
        code, body = await self.raw("GET", "/_matrix/federation/v1/test/x")
        self.assertEqual((code, body["errcode"]), (401, "M_UNAUTHORIZED"))

    async def test_wrong_signature(self):
        header = x_matrix_header("b.test", "a.test", self.origin_key, "GET", "/_matrix/federation/v1/test/other")
        code, body = await self.raw("GET", "/_matrix/federation/v1/test/x", header)
        self.assertEqual((code, body["errcode"]), (401, "M_UNAUTHORIZED"))
        # Signed by another key that claims the origin's key ID.
        impostor = generate_signing_key(self.origin_key.version)
        header = x_matrix_header("b.test", "a.test", impostor, "GET", "/_matrix/federation/v1/test/x")
        code, body = await self.raw("GET", "/_matrix/federation/v1/test/x", header)
        self.assertEqual((code, body["errcode"]), (401, "M_UNAUTHORIZED"))

    async def test_body_is_covered(self):
        path = "/_matrix/federation/v1/test/x"
        header = x_matrix_header("b.test", "a.test", self.origin_key, "PUT", path, {"a": 1})
        code, _ = await self.raw("PUT", path, header, {"a": 1})
        self.assertEqual(code, 200)
        code, body = await self.raw("PUT", path, header, {"a": 2})
        self.assertEqual((code, body["errcode"]), (401, "M_UNAUTHORIZED"))

    async def test_wrong_destination(self):
        path = "/_matrix/federation/v1/test/x"
        header = x_matrix_header("b.test", "c.test", self.origin_key, "GET", path)
        code, body = await self.raw("GET", path, header)
        self.assertEqual((code, body["errcode"]), (401, "M_UNAUTHORIZED"))

    async def test_unknown_key(self):
        path = "/_matrix/federation/v1/test/x"
        header = x_matrix_header("b.test", "a.test", generate_signing_key("unknown"), "GET", path)
        code, body = await self.raw("GET", path, header)
        self.assertEqual((code, body["errcode"]), (401, "M_UNAUTHORIZED"))

    async def test_unknown_origin_unreachable(self):
        path = "/_matrix/federation/v1/test/x"
        header = x_matrix_header("nowhere.test", "a.test", generate_signing_key(), "GET", path)
        code, body = await self.raw("GET", path, header)
        self.assertEqual((code, body["errcode"]), (401, "M_UNAUTHORIZED"))

    async def test_domain_whitelist(self):
        self.authenticator._whitelist = frozenset({"someone-else.test"})
        with self.assertRaises(FederationError) as cm:
            await self.client.get_json("a.test", "/_matrix/federation/v1/test/x")
        self.assertEqual((cm.exception.status, cm.exception.errcode), (403, "M_FORBIDDEN"))


class ServiceWiringTests(TestCase):
    async def test_homeserver_has_federation_components(self):
        pki = make_pki(os.path.abspath(self.mktemp()))
        hs = await start_homeserver(self, server_name="a.test", **tls_listener_config(pki))
        federation = hs.components.federation
        self.assertIsNotNone(federation.client)
        self.assertIsNotNone(federation.keyring)
        self.assertIsNotNone(federation.authenticator)
        # The real stack of the running server reaches another by IP literal, trusting the custom CA.
        other = await start_homeserver(self, server_name="b.test", **tls_listener_config(pki))
        port = other.service.ports[0].getHost().port
        body = await federation.client.get_json(f"127.0.0.1:{port}", "/_matrix/federation/v1/version")
        self.assertIn("server", body)
