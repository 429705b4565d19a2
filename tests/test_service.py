"""The whole homeserver over real HTTP on loopback (SQLite), as a client or server sees it."""

import datetime
import json
import os

import treq
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from signedjson.key import decode_verify_key_bytes, encode_verify_key_base64, generate_signing_key, get_verify_key
from signedjson.sign import SignatureVerifyException, verify_signed_json
from twisted.internet import reactor, ssl
from twisted.trial.unittest import TestCase
from twisted.web.client import Agent
from unpaddedbase64 import decode_base64
from zope.interface import implementer

from mxtwisted.interfaces import IModuleLifecycle
from mxtwisted.service import StartupError, make_homeserver
from tests.support.homeserver import build_config, start_homeserver


async def get_json(url, **kwargs):
    response = await treq.get(url, persistent=False, **kwargs)
    return response.code, json.loads(await response.content())


class EndpointTests(TestCase):
    async def test_client_versions(self):
        hs = await start_homeserver(self)
        code, body = await get_json(hs.base_url + "/_matrix/client/versions")
        self.assertEqual(code, 200)
        self.assertIn("v1.1", body["versions"])
        self.assertIsInstance(body["unstable_features"], dict)

    async def test_federation_version(self):
        hs = await start_homeserver(self)
        code, body = await get_json(hs.base_url + "/_matrix/federation/v1/version")
        self.assertEqual(code, 200)
        self.assertEqual(body["server"]["name"], "matrixhs")

    async def test_server_keys_are_signed_with_the_key_file(self):
        old_key = get_verify_key(generate_signing_key("old1"))
        hs = await start_homeserver(
            self, old_signing_keys={"ed25519:old1": {"key": encode_verify_key_base64(old_key), "expired_ts": 1000}}
        )
        code, body = await get_json(hs.base_url + "/_matrix/key/v2/server")
        self.assertEqual(code, 200)
        self.assertEqual(body["server_name"], "test.local")
        now_ms = reactor.seconds() * 1000
        self.assertGreater(body["valid_until_ts"], now_ms + 3600_000)
        (key_id, entry), = body["verify_keys"].items()
        with open(hs.config.signing_key_path) as f:
            _, version, _ = f.read().split()
        self.assertEqual(key_id, f"ed25519:{version}")
        verify_key = decode_verify_key_bytes(key_id, decode_base64(entry["key"]))
        verify_signed_json(body, "test.local", verify_key)  # raises if the signature is wrong
        self.assertEqual(body["old_verify_keys"]["ed25519:old1"]["expired_ts"], 1000)
        tampered = dict(body, valid_until_ts=body["valid_until_ts"] + 1)
        self.assertRaises(SignatureVerifyException, verify_signed_json, tampered, "test.local", verify_key)

    async def test_well_known_only_when_configured(self):
        hs = await start_homeserver(self, public_baseurl=None)
        code, body = await get_json(hs.base_url + "/.well-known/matrix/client")
        self.assertEqual((code, body["errcode"]), (404, "M_NOT_FOUND"))
        code, body = await get_json(hs.base_url + "/.well-known/matrix/server")
        self.assertEqual(code, 404)

    async def test_well_known_configured(self):
        hs = await start_homeserver(
            self,
            server_name="example.org",
            public_baseurl="https://matrix.example.org",
            serve_server_wellknown=True,
            extra_well_known_client_content={"org.example": {"a": 1}},
        )
        code, body = await get_json(hs.base_url + "/.well-known/matrix/client")
        self.assertEqual(code, 200)
        self.assertEqual(body["m.homeserver"], {"base_url": "https://matrix.example.org/"})
        self.assertEqual(body["org.example"], {"a": 1})
        code, body = await get_json(hs.base_url + "/.well-known/matrix/server")
        self.assertEqual(body, {"m.server": "example.org:443"})

    async def test_health(self):
        hs = await start_homeserver(self)
        response = await treq.get(hs.base_url + "/health", persistent=False)
        self.assertEqual(response.code, 200)
        self.assertEqual(await response.content(), b"OK")

    async def test_unknown_endpoint(self):
        hs = await start_homeserver(self)
        code, body = await get_json(hs.base_url + "/_matrix/client/v3/does_not_exist")
        self.assertEqual((code, body["errcode"]), (404, "M_UNRECOGNIZED"))

    async def test_resources_select_routes(self):
        hs = await start_homeserver(
            self, listeners=[{"port": 0, "bind_addresses": ["127.0.0.1"], "resources": [{"names": ["federation"]}]}]
        )
        code, _ = await get_json(hs.base_url + "/_matrix/client/versions")
        self.assertEqual(code, 404)
        code, _ = await get_json(hs.base_url + "/_matrix/federation/v1/version")
        self.assertEqual(code, 200)

    async def test_database_is_created_and_reused(self):
        hs = await start_homeserver(self)
        self.assertTrue(os.path.exists(hs.config.database["args"]["database"]))


def make_self_signed(directory, hostname="localhost"):
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(hostname)]), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path = os.path.join(directory, "cert.pem")
    key_path = os.path.join(directory, "key.pem")
    with open(cert_path, "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    with open(key_path, "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    return cert_path, key_path, cert.public_bytes(serialization.Encoding.PEM)


class TLSTests(TestCase):
    async def test_tls_listener_serves_https(self):
        d = os.path.abspath(self.mktemp())
        os.makedirs(d)
        cert_path, key_path, cert_pem = make_self_signed(d)
        hs = await start_homeserver(
            self,
            tls_certificate_path=cert_path,
            tls_private_key_path=key_path,
            listeners=[{"port": 0, "bind_addresses": ["127.0.0.1"], "tls": True, "resources": [{"names": ["client", "federation"]}]}],
        )
        self.assertTrue(hs.base_url.startswith("https://"))
        trust = ssl.Certificate.loadPEM(cert_pem)

        class Policy:
            def creatorForNetloc(self, hostname, port):
                return ssl.optionsForClientTLS("localhost", trustRoot=trust)

        from twisted.web.iweb import IPolicyForHTTPS
        from zope.interface import directlyProvides

        policy = Policy()
        directlyProvides(policy, IPolicyForHTTPS)
        client = treq.client.HTTPClient(Agent(reactor, contextFactory=policy))
        response = await client.get(hs.base_url + "/_matrix/federation/v1/version")
        self.assertEqual(response.code, 200)
        self.assertEqual(json.loads(await response.content())["server"]["name"], "matrixhs")

    def test_mismatched_key_refused(self):
        d = os.path.abspath(self.mktemp())
        os.makedirs(d)
        cert_path, _, _ = make_self_signed(d)
        other = os.path.join(d, "other")
        os.makedirs(other)
        _, other_key, _ = make_self_signed(other)
        from mxtwisted.tls import TLSConfigError, load_server_tls_options

        self.assertRaises(TLSConfigError, load_server_tls_options, cert_path, other_key)


@implementer(IModuleLifecycle)
class RecordingModule:
    events = []

    def __init__(self, config, api):
        self.config = config
        self.api = api

    def on_start(self):
        RecordingModule.events.append(("start", self.api.server_name, self.config))

    def on_stop(self):
        RecordingModule.events.append(("stop",))


class ModuleTests(TestCase):
    async def test_module_lifecycle(self):
        RecordingModule.events = []
        hs = await start_homeserver(self, modules=[{"module": "tests.test_service.RecordingModule", "config": {"x": 1}}])
        self.assertEqual(RecordingModule.events, [("start", "test.local", {"x": 1})])
        await hs.service.stopService()
        self.assertEqual(RecordingModule.events[-1], ("stop",))

    def test_bad_module_stops_startup(self):
        d = os.path.abspath(self.mktemp())
        os.makedirs(d)
        config = build_config(d, modules=[{"module": "tests.no_such_module.Thing"}])
        from mxtwisted.server_keys import ensure_signing_key

        ensure_signing_key(config.signing_key_path)
        e = self.assertRaises(StartupError, make_homeserver, reactor, config)
        self.assertIn("cannot import 'tests.no_such_module'", str(e))


class PostgresStartTests(TestCase):
    async def test_starts_on_postgres_from_config(self):
        from tests.support.homeserver import postgres_database

        hs = await start_homeserver(self, database=postgres_database(self))
        self.assertEqual(hs.storage.engine_name, "postgres")
        response = await treq.get(hs.base_url + "/health", persistent=False)
        self.assertEqual(response.code, 200)
        code, body = await get_json(hs.base_url + "/_matrix/key/v2/server")
        self.assertEqual(code, 200)
