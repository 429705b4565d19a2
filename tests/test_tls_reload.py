"""Reloading the TLS certificate of a running homeserver (``reload_tls`` and SIGHUP).

Certificates are read off a real TLS listener with a stdlib ``ssl`` client in a
thread (the reactor keeps serving meanwhile), so what is checked is what a
client actually receives.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import ssl
from typing import Any, Callable

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from twisted.internet import reactor, threads
from twisted.internet.task import deferLater
from twisted.logger import globalLogPublisher
from twisted.trial import unittest

from mxtwisted.sighup import install_sighup_handler, make_sighup_handler
from mxtwisted.tls import ReloadableServerTLS, TLSConfigError
from tests.federation.support import TestPKI, make_pki, tls_listener_config
from tests.support.homeserver import RunningHomeserver, build_config, start_homeserver


def _client_context() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # only the certificate's identity matters here
    return context


def _fingerprint(pem_or_der: bytes) -> bytes:
    """SHA-256 of the DER certificate, whether given as PEM or DER."""
    if pem_or_der.startswith(b"-----"):
        cert = x509.load_pem_x509_certificate(pem_or_der)
    else:
        cert = x509.load_der_x509_certificate(pem_or_der)
    return cert.fingerprint(hashes.SHA256())


def _served_certificate(port: int) -> bytes:
    """The DER certificate a new connection to ``port`` gets (blocking: run in a thread)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with _client_context().wrap_socket(raw, server_hostname="localhost") as conn:
            der = conn.getpeercert(binary_form=True)
            assert der is not None
            return der


class _OpenConnection:
    """A TLS connection opened before a reload, used afterwards (blocking methods: run in a thread)."""

    def __init__(self, port: int) -> None:
        raw = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.conn = _client_context().wrap_socket(raw, server_hostname="localhost")
        self.cert = self.conn.getpeercert(binary_form=True)

    def get_health(self) -> bytes:
        self.conn.sendall(b"GET /health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        chunks = []
        while True:
            chunk = self.conn.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks)

    def close(self) -> None:
        self.conn.close()


def _replace_files(target: TestPKI, source: TestPKI) -> None:
    """Copy ``source``'s certificate and key over ``target``'s files, as a certificate renewal does."""
    shutil.copyfile(source.cert_path, target.cert_path)
    shutil.copyfile(source.key_path, target.key_path)


class _LogCapture:
    def __init__(self, testcase: unittest.TestCase) -> None:
        self.events: list[dict] = []
        globalLogPublisher.addObserver(self.events.append)
        testcase.addCleanup(globalLogPublisher.removeObserver, self.events.append)

    def formats(self) -> list[str]:
        return [e.get("log_format", "") for e in self.events]


class TLSReloadTests(unittest.TestCase):
    timeout = 60

    async def setUp(self) -> None:
        self.pki = make_pki(os.path.abspath(self.mktemp()))
        self.renewed = make_pki(os.path.abspath(self.mktemp()), ca_name="renewal CA")
        self.hs: RunningHomeserver = await start_homeserver(self, **tls_listener_config(self.pki))
        self.port = self.hs.service.ports[0].getHost().port

    async def served(self) -> bytes:
        return _fingerprint(await threads.deferToThread(_served_certificate, self.port))

    async def test_reload_serves_the_new_certificate(self) -> None:
        self.assertEqual(await self.served(), _fingerprint(self.pki.cert_pem))
        logs = _LogCapture(self)
        _replace_files(self.pki, self.renewed)
        self.assertTrue(self.hs.service.reload_tls())
        self.assertEqual(await self.served(), _fingerprint(self.renewed.cert_pem))
        self.assertTrue(any(f.startswith("Reloaded the TLS certificate") for f in logs.formats()), logs.formats())

    async def test_open_connection_keeps_working_after_reload(self) -> None:
        old = await threads.deferToThread(_OpenConnection, self.port)
        self.addCleanup(old.close)
        _replace_files(self.pki, self.renewed)
        self.assertTrue(self.hs.service.reload_tls())
        response = await threads.deferToThread(old.get_health)
        self.assertTrue(response.startswith(b"HTTP/1.1 200"), response[:200])
        self.assertEqual(_fingerprint(old.cert), _fingerprint(self.pki.cert_pem))
        self.assertEqual(await self.served(), _fingerprint(self.renewed.cert_pem))

    async def assert_bad_replacement_keeps_old(self, damage: Callable[[], Any]) -> None:
        logs = _LogCapture(self)
        damage()
        self.assertFalse(self.hs.service.reload_tls())
        self.assertEqual(await self.served(), _fingerprint(self.pki.cert_pem))
        errors = [e for e in logs.events if e.get("log_format", "").startswith("TLS certificate reload failed")]
        self.assertEqual(len(errors), 1, logs.formats())

    async def test_garbage_certificate_keeps_old(self) -> None:
        def damage() -> None:
            with open(self.pki.cert_path, "wb") as f:
                f.write(b"not a certificate\n")

        await self.assert_bad_replacement_keeps_old(damage)

    async def test_key_not_matching_keeps_old(self) -> None:
        # The renewal wrote the new certificate but not (yet) its key.
        await self.assert_bad_replacement_keeps_old(lambda: shutil.copyfile(self.renewed.cert_path, self.pki.cert_path))

    async def test_missing_key_keeps_old(self) -> None:
        await self.assert_bad_replacement_keeps_old(lambda: os.unlink(self.pki.key_path))

    async def test_sighup_reloads(self) -> None:
        if not hasattr(signal, "SIGHUP"):
            raise unittest.SkipTest("no SIGHUP on this platform")
        earlier: list[int] = []
        previous = signal.signal(signal.SIGHUP, lambda signum, frame: earlier.append(signum))
        self.addCleanup(signal.signal, signal.SIGHUP, previous)
        install_sighup_handler(reactor, [self.hs.service.reload_tls])
        _replace_files(self.pki, self.renewed)
        os.kill(os.getpid(), signal.SIGHUP)
        for _ in range(100):
            if earlier:
                break
            await deferLater(reactor, 0.05, lambda: None)
        self.assertEqual(earlier, [signal.SIGHUP])  # the handler installed before is chained, not lost
        self.assertEqual(await self.served(), _fingerprint(self.renewed.cert_pem))


class NoTLSListenerTests(unittest.TestCase):
    async def test_reload_without_tls_listener(self) -> None:
        hs = await start_homeserver(self)
        self.assertIsNone(hs.service.tls)
        self.assertFalse(hs.service.reload_tls())


class ReloadableServerTLSTests(unittest.TestCase):
    def test_bad_files_at_construction_raise(self) -> None:
        pki = make_pki(os.path.abspath(self.mktemp()))
        self.assertRaises(TLSConfigError, ReloadableServerTLS, pki.cert_path, pki.cert_path)

    def test_reload_swaps_context_only_on_success(self) -> None:
        pki = make_pki(os.path.abspath(self.mktemp()))
        tls = ReloadableServerTLS(pki.cert_path, pki.key_path)
        first = tls.getContext()
        self.assertIs(tls.getContext(), first)  # one context per certificate, not one per connection
        os.unlink(pki.key_path)
        self.assertRaises(TLSConfigError, tls.reload)
        self.assertIs(tls.getContext(), first)
        _replace_files(pki, make_pki(os.path.abspath(self.mktemp())))
        tls.reload()
        self.assertIsNot(tls.getContext(), first)


class _RecordingReactor:
    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def callFromThread(self, f: Callable[..., Any], *args: Any) -> None:
        self.calls.append((f, args))


class SighupHandlerTests(unittest.TestCase):
    def test_handler_defers_to_the_reactor(self) -> None:
        fake = _RecordingReactor()
        ran: list[str] = []
        chained: list[int] = []

        def failing() -> None:
            raise RuntimeError("boom")

        handler = make_sighup_handler(fake, [failing, lambda: ran.append("reload")], lambda s, f: chained.append(s))
        handler(signal.SIGHUP if hasattr(signal, "SIGHUP") else 1, None)
        self.assertEqual(ran, [])  # nothing runs inside the signal handler itself
        [(f, args)] = fake.calls
        f(*args)
        self.assertEqual(ran, ["reload"])  # a failing callback does not stop the others
        self.assertEqual(len(chained), 1)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_tap_installs_the_handler(self) -> None:
        if not hasattr(signal, "SIGHUP"):
            raise unittest.SkipTest("no SIGHUP on this platform")
        from mxtwisted import tap
        from mxtwisted.server_keys import ensure_signing_key

        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        options = tap.Options()
        options.homeserver_config = build_config(directory)
        ensure_signing_key(options.homeserver_config.signing_key_path)
        previous = signal.signal(signal.SIGHUP, signal.SIG_DFL)
        self.addCleanup(signal.signal, signal.SIGHUP, previous)
        tap.makeService(options)
        self.assertTrue(callable(signal.getsignal(signal.SIGHUP)))
