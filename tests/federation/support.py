"""Helpers for federation tests: a test CA, TLS test servers, routes to loopback ports."""

from __future__ import annotations

import datetime
import ipaddress
import json
import os
from dataclasses import dataclass
from typing import Any, Callable, Optional

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from twisted.internet import reactor, ssl
from twisted.web import resource, server

from mxtwisted.federation.client import FederationAgent, FederationClient
from mxtwisted.federation.discovery import ServerDiscovery
from mxtwisted.federation.ipfilter import IPFilter
from mxtwisted.federation.tls import FederationTLSPolicy, load_ca_list

LEAF_NAMES = ("localhost", "test.local", "a.test", "b.test", "origin.test")


def _pem_key(key: Any) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


@dataclass
class TestPKI:
    """A CA and a leaf certificate it signed (DNS names LEAF_NAMES and IP 127.0.0.1), as files."""

    ca_path: str
    cert_path: str
    key_path: str
    cert_pem: bytes
    key_pem: bytes

    def server_options(self) -> Any:
        return ssl.PrivateCertificate.loadPEM(self.cert_pem + self.key_pem).options()

    def policy(self) -> FederationTLSPolicy:
        return FederationTLSPolicy(trust_root=load_ca_list([self.ca_path]))


def make_pki(directory: str, ca_name: str = "matrixhs test CA") -> TestPKI:
    os.makedirs(directory, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, ca_name)])
    ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_subject)
        .issuer_name(ca_subject)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=7))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False, data_encipherment=False,
                key_agreement=False, key_cert_sign=True, crl_sign=True, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ca_ski, critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    leaf_key = ec.generate_private_key(ec.SECP256R1())
    sans: list[x509.GeneralName] = [x509.DNSName(n) for n in LEAF_NAMES]
    sans.append(x509.IPAddress(ipaddress.ip_address("127.0.0.1")))
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_subject)
        .public_key(leaf_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=7))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    ca_path = os.path.join(directory, "ca.pem")
    cert_path = os.path.join(directory, "leaf.pem")
    key_path = os.path.join(directory, "leaf.key")
    cert_pem = leaf.public_bytes(serialization.Encoding.PEM)
    key_pem = _pem_key(leaf_key)
    for path, data in ((ca_path, ca_cert.public_bytes(serialization.Encoding.PEM)), (cert_path, cert_pem), (key_path, key_pem)):
        with open(path, "wb") as f:
            f.write(data)
    return TestPKI(ca_path, cert_path, key_path, cert_pem, key_pem)


def tls_listener_config(pki: TestPKI, **extra: Any) -> dict[str, Any]:
    """start_homeserver overrides: one HTTPS listener (client, federation) on loopback, loopback whitelisted."""
    config = {
        "tls_certificate_path": pki.cert_path,
        "tls_private_key_path": pki.key_path,
        "listeners": [
            {"port": 0, "bind_addresses": ["127.0.0.1"], "tls": True, "resources": [{"names": ["client", "federation"]}]}
        ],
        "federation_custom_ca_list": [pki.ca_path],
        "ip_range_whitelist": ["127.0.0.0/8"],
        "trusted_key_servers": [],
    }
    config.update(extra)
    return config


class FakeWellKnown:
    """``get(hostname)`` from a dict (a discovery stand-in for .well-known); counts calls."""

    def __init__(self, delegations: Optional[dict[str, str]] = None) -> None:
        self.delegations = dict(delegations or {})
        self.calls: list[str] = []

    async def get(self, hostname: str) -> Optional[str]:
        self.calls.append(hostname)
        return self.delegations.get(hostname)


class FakeSrv:
    def __init__(self, records: Optional[dict[str, list[tuple[str, int]]]] = None) -> None:
        self.records = dict(records or {})
        self.calls: list[str] = []

    async def __call__(self, name: str) -> list[tuple[str, int]]:
        self.calls.append(name)
        return list(self.records.get(name, []))


def loopback_discovery(routes: dict[str, int]) -> ServerDiscovery:
    """Server names delegated by (fake) .well-known to ``127.0.0.1:<port>``: real connection code, no DNS."""
    return ServerDiscovery(FakeWellKnown({name: f"127.0.0.1:{port}" for name, port in routes.items()}), FakeSrv())


def make_client(
    testcase: Any,
    origin: str,
    signing_key: Any,
    discovery: Any,
    policy: Any,
    ip_filter: Optional[IPFilter] = None,
    timeout: float = 10.0,
) -> FederationClient:
    ip_filter = ip_filter if ip_filter is not None else IPFilter(whitelist=["127.0.0.0/8"])
    agent = FederationAgent(reactor, discovery, policy, ip_filter)
    client = FederationClient(reactor, origin, signing_key, agent, timeout=timeout)
    testcase.addCleanup(client.close)
    return client


class JsonResource(resource.Resource):
    """Serves ``body()`` as JSON on every path; counts requests and keeps the last one."""

    isLeaf = True

    def __init__(self, body: Callable[[Any], Any], code: int = 200) -> None:
        super().__init__()
        self._body = body
        self.code = code
        self.requests: list[tuple[bytes, bytes]] = []

    def render(self, request: Any) -> bytes:
        self.requests.append((request.method, request.uri))
        request.setResponseCode(self.code)
        request.setHeader(b"Content-Type", b"application/json")
        return json.dumps(self._body(request)).encode()


def listen_tls(testcase: Any, pki: TestPKI, root: resource.Resource) -> int:
    """Serve ``root`` over HTTPS on a free loopback port (closed with the test); returns the port."""
    site = server.Site(root)
    port = reactor.listenSSL(0, site, pki.server_options(), interface="127.0.0.1")
    testcase.addCleanup(port.stopListening)
    return port.getHost().port
