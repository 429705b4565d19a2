"""TLS for listeners: a certificate chain and key from PEM files, via pyOpenSSL.

``CertificateOptions`` gives Twisted's secure defaults (TLS 1.2+, modern
ciphers); the rest of the chain in the certificate file is sent as
intermediates, as reverse proxies do with a ``fullchain.pem``.

:class:`ReloadableServerTLS` is what the listeners are given, so that a renewed
certificate (certbot and the like rewrite the files every few weeks) is picked
up on SIGHUP without a restart: each new connection takes the *current*
OpenSSL context, and connections already open keep the one they started with.
"""

from __future__ import annotations

import re
from typing import Optional

from OpenSSL import SSL, crypto
from twisted.internet import ssl
from twisted.internet.interfaces import IOpenSSLContextFactory, IOpenSSLServerConnectionCreator
from zope.interface import implementer

_PEM_CERT = re.compile(rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.DOTALL)


class TLSConfigError(Exception):
    """The certificate or key cannot be loaded; the message says which file and why."""


def _read(path: Optional[str], what: str) -> bytes:
    if not path:
        raise TLSConfigError(f"{what} is not configured")
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise TLSConfigError(f"cannot read {what} {path!r}: {e.strerror}") from None


def load_server_tls_options(cert_path: Optional[str], key_path: Optional[str]) -> ssl.CertificateOptions:
    """Build the server-side TLS options from ``tls_certificate_path`` and ``tls_private_key_path``."""
    cert_pem = _read(cert_path, "tls_certificate_path")
    key_pem = _read(key_path, "tls_private_key_path")
    blocks = _PEM_CERT.findall(cert_pem)
    if not blocks:
        raise TLSConfigError(f"tls_certificate_path {cert_path!r} holds no PEM certificate")
    try:
        certs = [crypto.load_certificate(crypto.FILETYPE_PEM, b) for b in blocks]
        key = crypto.load_privatekey(crypto.FILETYPE_PEM, key_pem)
    except crypto.Error as e:
        raise TLSConfigError(f"cannot parse the TLS certificate or key: {e}") from None
    try:
        options = ssl.CertificateOptions(privateKey=key, certificate=certs[0], extraCertChain=certs[1:])
        options.getContext()  # checks that the key matches the certificate now, not at the first handshake
        return options
    except Exception as e:
        raise TLSConfigError(f"the TLS key does not match the certificate: {e}") from None


@implementer(IOpenSSLServerConnectionCreator, IOpenSSLContextFactory)
class ReloadableServerTLS:
    """Server TLS options whose certificate and key can be replaced while listening.

    Twisted's TLS wrapper asks the connection creator for a new ``SSL.Connection``
    per accepted connection, so swapping the options here is enough: a
    connection holds a reference to the context it was made with and never
    sees the swap.
    """

    def __init__(self, cert_path: Optional[str], key_path: Optional[str]) -> None:
        self.cert_path = cert_path
        self.key_path = key_path
        self._options = load_server_tls_options(cert_path, key_path)

    def reload(self) -> None:
        """Re-read both files; on :class:`TLSConfigError` the previous certificate stays in use."""
        self._options = load_server_tls_options(self.cert_path, self.key_path)

    def certificate(self) -> crypto.X509:
        """The certificate new connections are served (for log lines and tests)."""
        return self._options.certificate

    # IOpenSSLContextFactory: for callers that want a context (new per reload, cached by the options).
    def getContext(self) -> SSL.Context:
        return self._options.getContext()

    # IOpenSSLServerConnectionCreator: called by TLSMemoryBIOFactory for every accepted connection.
    def serverConnectionForTLS(self, tlsProtocol: object) -> SSL.Connection:
        return SSL.Connection(self.getContext(), None)
