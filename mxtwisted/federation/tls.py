"""The TLS policy of outgoing federation requests.

Spec: Server-Server API, "TLS": servers present a certificate valid for the
name being asked for (the server name, or its delegated name), signed by a
CA the other side trusts. :class:`FederationTLSPolicy` is a Twisted
``IPolicyForHTTPS``: hostname (or IP address) checks are done by Twisted's
``optionsForClientTLS`` with ``service_identity``.

- ``federation_verify_certificates: true`` (the default): the platform's
  trust store, or only the CAs of ``federation_custom_ca_list`` when that is
  set (as in Synapse, the list replaces the system store);
- ``federation_verify_certificates: false``: no checks at all (closed test
  federations only). SNI is still sent. ``federation_certificate_verification_whitelist``
  turns checks off for the names it matches only;
- ``federation_client_minimum_tls_version``: the oldest TLS version accepted.
"""

from __future__ import annotations

import fnmatch
import ipaddress
from typing import Any, Iterable, Optional

from OpenSSL import SSL
from twisted.internet import ssl
from twisted.internet.interfaces import IOpenSSLClientConnectionCreator
from twisted.web.iweb import IPolicyForHTTPS
from zope.interface import implementer

#: ``federation_client_minimum_tls_version`` values.
TLS_VERSIONS = {
    "1": ssl.TLSVersion.TLSv1_0,
    "1.1": ssl.TLSVersion.TLSv1_1,
    "1.2": ssl.TLSVersion.TLSv1_2,
    "1.3": ssl.TLSVersion.TLSv1_3,
}


class TLSPolicyError(Exception):
    """A CA file of ``federation_custom_ca_list`` cannot be read."""


def _is_ip_literal(hostname: str) -> bool:
    try:
        ipaddress.ip_address(hostname)
    except ValueError:
        return False
    return True


def load_ca_list(paths: Iterable[str]) -> Optional[Any]:
    """A trust root of the PEM certificates in ``paths`` (each file may hold several), or None if empty."""
    certificates = []
    for path in paths:
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError as e:
            raise TLSPolicyError(f"federation_custom_ca_list: cannot read {path!r}: {e.strerror}") from None
        blocks = [b for b in data.split(b"-----END CERTIFICATE-----") if b"-----BEGIN CERTIFICATE-----" in b]
        if not blocks:
            raise TLSPolicyError(f"federation_custom_ca_list: {path!r} holds no PEM certificate")
        for block in blocks:
            try:
                certificates.append(ssl.Certificate.loadPEM(block + b"-----END CERTIFICATE-----\n"))
            except Exception as e:
                raise TLSPolicyError(f"federation_custom_ca_list: bad certificate in {path!r}: {e}") from None
    if not certificates:
        return None
    return ssl.trustRootFromCertificates(certificates)


@implementer(IOpenSSLClientConnectionCreator)
class _NoVerifyCreator:
    """TLS without any certificate check, but with SNI (``federation_verify_certificates: false``)."""

    def __init__(self, hostname: str, minimum: Any = None) -> None:
        self._hostname = hostname
        options = {"raiseMinimumTo": minimum} if minimum is not None else {}
        self._context = ssl.CertificateOptions(verify=False, **options).getContext()

    def clientConnectionForTLS(self, tlsProtocol: Any) -> SSL.Connection:
        connection = SSL.Connection(self._context, None)
        if not _is_ip_literal(self._hostname):
            connection.set_tlsext_host_name(self._hostname.encode("idna"))
        connection.set_app_data(tlsProtocol)
        connection.set_connect_state()
        return connection


@implementer(IPolicyForHTTPS)
class FederationTLSPolicy:
    """``creatorForNetloc(hostname, port)``: the connection creator for one destination name."""

    def __init__(
        self,
        verify: bool = True,
        trust_root: Optional[Any] = None,
        unverified_names: Iterable[str] = (),
        minimum_version: str = "1",
    ) -> None:
        self._verify = verify
        self._trust_root = trust_root if trust_root is not None else ssl.platformTrust()
        #: ``federation_certificate_verification_whitelist``: glob patterns of names not checked.
        self._unverified = tuple(p.lower() for p in unverified_names)
        self._minimum = TLS_VERSIONS[minimum_version]

    @classmethod
    def from_config(cls, config: Any) -> FederationTLSPolicy:
        return cls(
            verify=config["federation_verify_certificates"],
            trust_root=load_ca_list(config["federation_custom_ca_list"] or []),
            unverified_names=config["federation_certificate_verification_whitelist"],
            minimum_version=config["federation_client_minimum_tls_version"],
        )

    def creatorForNetloc(self, hostname: bytes, port: int) -> Any:
        name = hostname.decode("ascii") if isinstance(hostname, bytes) else hostname
        if name.startswith("[") and name.endswith("]"):
            name = name[1:-1]
        if not self._verify or any(fnmatch.fnmatchcase(name.lower(), p) for p in self._unverified):
            return _NoVerifyCreator(name, self._minimum)
        # optionsForClientTLS checks DNS names and IP addresses with service_identity, and sends SNI for names.
        return ssl.optionsForClientTLS(
            name, trustRoot=self._trust_root, extraCertificateOptions={"raiseMinimumTo": self._minimum}
        )
