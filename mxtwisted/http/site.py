"""The HTTP server side: request objects with a body-size limit, access logging,
and tracking of in-flight requests for graceful shutdown.
"""

from __future__ import annotations

import io
import time
import weakref
from typing import Any, Optional

from twisted.internet import defer
from twisted.logger import Logger
from twisted.web import server
from twisted.web.resource import IResource

_access_log = Logger(namespace="mxtwisted.access")


def _redact_query(uri: bytes) -> str:
    """The URI for the access log, with ``access_token`` values hidden."""
    text = uri.decode("ascii", "replace")
    if "access_token=" not in text:
        return text
    path, _, query = text.partition("?")
    parts = []
    for part in query.split("&"):
        name, sep, _value = part.partition("=")
        parts.append(f"{name}=<redacted>" if name == "access_token" and sep else part)
    return path + "?" + "&".join(parts)


class MatrixRequest(server.Request):
    """A request whose body is capped at ``site.max_request_size`` bytes.

    A body larger than the limit is read and thrown away (never held in memory)
    so that the client still gets a clean ``413 M_TOO_LARGE``; a body larger than
    :attr:`HARD_LIMIT_FACTOR` times the limit closes the connection after a raw
    413 response, so a client cannot make us read gigabytes.
    """

    HARD_LIMIT_FACTOR = 16

    def __init__(self, channel: Any, *args: Any, **kwargs: Any) -> None:
        super().__init__(channel, *args, **kwargs)
        self.start_time = time.monotonic()
        self.body_too_large = False
        self._body_size = 0
        #: Set by the client API's auth layer; used in the access log.
        self.authenticated_entity: Optional[str] = None

    @property
    def max_size(self) -> int:
        site = getattr(self.channel, "site", None)
        return getattr(site, "max_request_size", 4 * 1024 * 1024)

    def gotLength(self, length: Optional[int]) -> None:
        # Always buffer in memory: the size is capped, and a temp file per
        # request (Twisted's default above 100 KiB) costs syscalls.
        self.content = io.BytesIO()
        if length is not None and length > self.max_size:
            self.body_too_large = True
            if length > self.max_size * self.HARD_LIMIT_FACTOR:
                self._reject_raw()

    def handleContentChunk(self, data: bytes) -> None:
        self._body_size += len(data)
        if self._body_size > self.max_size:
            self.body_too_large = True
            if self._body_size > self.max_size * self.HARD_LIMIT_FACTOR:
                self._reject_raw()
            return
        self.content.write(data)

    def _reject_raw(self) -> None:
        transport = self.channel.transport
        if transport is None or getattr(self, "_rejected", False):
            return
        self._rejected = True
        body = b'{"errcode":"M_TOO_LARGE","error":"Request body too large"}'
        transport.write(
            b"HTTP/1.1 413 Request Entity Too Large\r\n"
            b"Content-Type: application/json\r\n"
            b"Access-Control-Allow-Origin: *\r\n"
            b"Content-Length: " + str(len(body)).encode() + b"\r\n"
            b"Connection: close\r\n\r\n" + body
        )
        transport.loseConnection()

    def process(self) -> None:
        if getattr(self.channel.site, "stopping", False):
            # A request on a kept-alive connection after shutdown began: the handlers and the database
            # may be gone. 503 tells clients and other servers to try again later (a federation
            # transaction is then resent, not lost).
            body = b'{"errcode":"M_UNKNOWN","error":"The server is shutting down"}'
            self.setResponseCode(503)
            self.setHeader(b"Content-Type", b"application/json")
            self.setHeader(b"Connection", b"close")
            self.setHeader(b"Content-Length", str(len(body)).encode())
            self.write(body)
            self.finish()
            return
        super().process()

    def getClientAddressString(self) -> str:
        if getattr(self.channel.site, "x_forwarded", False):
            forwarded = self.getHeader(b"x-forwarded-for")
            if forwarded:
                return forwarded.split(",")[0].strip()
        peer = self.getClientAddress()
        return getattr(peer, "host", str(peer))

    def isSecure(self) -> bool:
        if getattr(self.channel.site, "x_forwarded", False):
            proto = self.getHeader(b"x-forwarded-proto")
            if proto is not None:
                return proto.lower() == "https"
        return super().isSecure()


class MatrixSite(server.Site):
    """A Site that logs through twisted.logger and can wait for in-flight requests."""

    requestFactory = MatrixRequest
    displayTracebacks = False

    def __init__(self, resource: IResource, name: str, max_request_size: int, x_forwarded: bool = False, reactor: Any = None):
        super().__init__(resource, reactor=reactor)
        self.name = name
        self.max_request_size = max_request_size
        self.x_forwarded = x_forwarded
        self.in_flight: set[MatrixRequest] = set()
        self._idle_waiters: list[defer.Deferred] = []
        #: Set when shutdown begins: requests still arriving on open connections get 503.
        self.stopping = False
        self._channels: weakref.WeakSet = weakref.WeakSet()

    def buildProtocol(self, addr: Any) -> Any:
        channel = super().buildProtocol(addr)
        if channel is not None:
            self._channels.add(channel)
        return channel

    def close_connections(self) -> None:
        """Close every connection still open (kept-alive ones: clients reconnect to the next server)."""
        for channel in list(self._channels):
            transport = getattr(channel, "transport", None)
            if transport is not None:
                transport.loseConnection()

    def request_started(self, request: MatrixRequest) -> None:
        self.in_flight.add(request)

    def request_finished(self, request: MatrixRequest) -> None:
        self.in_flight.discard(request)
        if not self.in_flight:
            waiters, self._idle_waiters = self._idle_waiters, []
            for d in waiters:
                d.callback(None)

    def wait_idle(self) -> defer.Deferred:
        """A Deferred that fires once no request is being processed."""
        if not self.in_flight:
            return defer.succeed(None)
        d: defer.Deferred = defer.Deferred()
        self._idle_waiters.append(d)
        return d

    def log(self, request: server.Request) -> None:
        duration_ms = (time.monotonic() - getattr(request, "start_time", time.monotonic())) * 1000
        _access_log.info(
            "{site} {client} {user} {method} {uri} {code} {length}B {duration:.1f}ms {agent!r}",
            site=self.name,
            client=request.getClientAddressString() if isinstance(request, MatrixRequest) else "-",
            user=getattr(request, "authenticated_entity", None) or "-",
            method=request.method.decode("ascii", "replace"),
            uri=_redact_query(request.uri),
            code=request.code,
            length=request.sentLength,
            duration=duration_ms,
            agent=(request.getHeader(b"user-agent") or "-"),
        )
