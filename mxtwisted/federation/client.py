"""Outgoing federation requests: discovery, connection, TLS, X-Matrix signing.

:class:`FederationClient` is what the rest of the server uses::

    body = await client.get_json("other.example", "/_matrix/federation/v1/version")

Each request goes: ``federation_domain_whitelist`` check → server discovery
(:mod:`.discovery`) → address lookup of the route's targets → the IP filter
(:mod:`.ipfilter`, ``ip_range_blacklist``/``ip_range_whitelist``) → TCP →
TLS checked for the route's certificate name (:mod:`.tls`) → HTTP/1.1 with the
route's Host header and an X-Matrix signature (:mod:`.auth`).

A non-2xx answer raises :class:`FederationError` (with the status, the
Matrix ``errcode`` if the body has one, and the body); anything that prevents
getting an answer (DNS, refused connection, blacklisted address, TLS failure,
timeout, an unreadable or non-JSON body) raises :class:`RequestSendFailed`.
"""

from __future__ import annotations

import json
from io import BytesIO
from typing import Any, Callable, Optional
from urllib.parse import quote, urlencode

from twisted.internet import defer
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP6ClientEndpoint, wrapClientTLS
from twisted.internet.error import ConnectError, DNSLookupError
from twisted.internet.interfaces import IProtocolFactory, IStreamClientEndpoint
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.client import URI, Agent, FileBodyProducer, HTTPConnectionPool, RedirectAgent, ResponseDone
from twisted.web.http import PotentialDataLoss
from twisted.web.http_headers import Headers
from twisted.web.iweb import IAgent, IAgentEndpointFactory, IResponse
from zope.interface import implementer

from mxtwisted import __version__
from mxtwisted.events.signing import SigningKey
from mxtwisted.federation.auth import x_matrix_header
from mxtwisted.federation.backoff import DestinationBackoff
from mxtwisted.federation.discovery import (
    WELL_KNOWN_MAX_SIZE,
    Route,
    WellKnownResponse,
    is_ip_literal,
)
from mxtwisted.federation.ipfilter import BlacklistedAddressError, IPFilter

log = Logger()

USER_AGENT = f"matrixhs/{__version__}".encode("ascii")
#: Largest federation response body read (Synapse's limit is the same order).
MAX_RESPONSE_SIZE = 100 * 1024 * 1024
DEFAULT_TIMEOUT = 60.0
#: Transactions: retried on the federation sender's own schedule, never refused by the backoff.
SEND_TRANSACTION_PREFIX = "/_matrix/federation/v1/send/"
CONNECT_TIMEOUT = 20.0


class FederationError(Exception):
    """The remote server answered with a non-2xx status."""

    def __init__(self, status: int, errcode: Optional[str], body: Any) -> None:
        super().__init__(f"{status} {errcode or ''}".strip())
        self.status = status
        self.errcode = errcode
        self.body = body


class RequestSendFailed(Exception):
    """No answer could be had from the remote server; ``reason`` is the underlying error."""

    def __init__(self, destination: str, reason: BaseException) -> None:
        super().__init__(f"request to {destination} failed: {reason}")
        self.destination = destination
        self.reason = reason


class NotRetryingDestination(RequestSendFailed):
    """The destination did not answer lately and is not tried again before ``retry_at`` (seconds)
    (:mod:`mxtwisted.federation.backoff`): nothing was sent."""

    def __init__(self, destination: str, retry_at: float) -> None:
        super().__init__(destination, ConnectError(string="not answering lately; not retrying yet"))
        self.retry_at = retry_at


class FederationDeniedError(RequestSendFailed):
    """``federation_domain_whitelist`` does not include the destination: nothing was sent."""

    def __init__(self, destination: str) -> None:
        super().__init__(destination, ConnectError(string="destination not in federation_domain_whitelist"))


# -- resolving and connecting ----------------------------------------------


AddressResolver = Callable[[str], Any]  # async (hostname) -> list of IP literals


def reactor_address_resolver(reactor: Any) -> AddressResolver:
    """Look up A/AAAA records with the reactor's ``nameResolver`` (the system resolver by default)."""
    from twisted.internet.interfaces import IResolutionReceiver

    async def resolve(hostname: str) -> list[str]:
        done: defer.Deferred = defer.Deferred()
        addresses: list[str] = []

        @implementer(IResolutionReceiver)
        class Receiver:
            def resolutionBegan(self, resolution: Any) -> None:
                pass

            def addressResolved(self, address: Any) -> None:
                if address.host not in addresses:
                    addresses.append(address.host)

            def resolutionComplete(self) -> None:
                done.callback(addresses)

        reactor.nameResolver.resolveHostName(Receiver(), hostname, 0)
        result = await done
        if not result:
            raise DNSLookupError(hostname)
        return result

    return resolve


@implementer(IStreamClientEndpoint)
class FilteredTLSEndpoint:
    """Connects to the first reachable, non-blacklisted address of ``targets``, with TLS for ``tls_name``."""

    def __init__(
        self,
        reactor: Any,
        targets: tuple[tuple[str, int], ...],
        tls_name: str,
        tls_policy: Any,
        ip_filter: IPFilter,
        resolve_addresses: AddressResolver,
        timeout: float = CONNECT_TIMEOUT,
    ) -> None:
        self._reactor = reactor
        self._targets = targets
        self._tls_name = tls_name
        self._tls_policy = tls_policy
        self._filter = ip_filter
        self._resolve = resolve_addresses
        self._timeout = timeout

    def connect(self, protocolFactory: IProtocolFactory) -> defer.Deferred:
        return defer.ensureDeferred(self._connect(protocolFactory))

    async def _connect(self, factory: IProtocolFactory) -> Any:
        errors: list[str] = []
        blacklisted = 0
        tried = 0
        for host, port in self._targets:
            if is_ip_literal(host):
                addresses = [host]
            else:
                try:
                    addresses = list(await self._resolve(host))
                except Exception as e:
                    errors.append(f"{host}: {e}")
                    continue
            for address in addresses:
                if not self._filter.is_allowed(address):
                    blacklisted += 1
                    errors.append(f"{address} is blacklisted")
                    continue
                tried += 1
                tcp_class = TCP6ClientEndpoint if ":" in address else TCP4ClientEndpoint
                tcp = tcp_class(self._reactor, address, port, timeout=self._timeout)
                creator = self._tls_policy.creatorForNetloc(self._tls_name.encode("ascii"), port)
                try:
                    return await wrapClientTLS(creator, tcp).connect(factory)
                except Exception as e:
                    errors.append(f"{address}:{port}: {e}")
        if blacklisted and not tried:
            raise BlacklistedAddressError(string="; ".join(errors))
        raise ConnectError(string="; ".join(errors) or "no address to connect to")


@implementer(IAgentEndpointFactory)
class _RouteEndpointFactory:
    def __init__(self, agent: FederationAgent) -> None:
        self._agent = agent

    def endpointForURI(self, uri: URI) -> IStreamClientEndpoint:
        return self._agent.endpoint_for(uri.netloc.decode("ascii"))


@implementer(IAgent)
class FederationAgent:
    """An ``IAgent`` for ``matrix-federation://<server name>/<path>`` URIs.

    The server name is resolved with server discovery before each request
    (well-known answers are cached); the Host header is the route's;
    connections are kept in one pool keyed by server name.
    """

    def __init__(
        self,
        reactor: Any,
        discovery: Any,
        tls_policy: Any,
        ip_filter: IPFilter,
        resolve_addresses: Optional[AddressResolver] = None,
        pool: Optional[HTTPConnectionPool] = None,
    ) -> None:
        self._reactor = reactor
        self._discovery = discovery
        self._tls_policy = tls_policy
        self._filter = ip_filter
        self._resolve = resolve_addresses or reactor_address_resolver(reactor)
        if pool is None:
            pool = HTTPConnectionPool(reactor, persistent=True)
            pool.maxPersistentPerHost = 5
            pool.cachedConnectionTimeout = 120
        self.pool = pool
        self._routes: dict[str, Route] = {}
        self._agent = Agent.usingEndpointFactory(reactor, _RouteEndpointFactory(self), pool=pool)

    def close(self) -> defer.Deferred:
        """Close the pooled connections (at shutdown)."""
        return self.pool.closeCachedConnections()

    def endpoint_for(self, server_name: str) -> IStreamClientEndpoint:
        route = self._routes[server_name]
        return FilteredTLSEndpoint(
            self._reactor, route.targets, route.tls_name, self._tls_policy, self._filter, self._resolve
        )

    def request(
        self, method: bytes, uri: bytes, headers: Optional[Headers] = None, bodyProducer: Any = None
    ) -> defer.Deferred:
        return defer.ensureDeferred(self._request(method, uri, headers, bodyProducer))

    async def _request(self, method: bytes, uri: bytes, headers: Optional[Headers], body: Any) -> IResponse:
        parsed = URI.fromBytes(uri)
        server_name = parsed.netloc.decode("ascii")
        route = await self._discovery.resolve(server_name)
        self._routes[server_name] = route
        headers = headers.copy() if headers is not None else Headers()
        headers.setRawHeaders(b"Host", [route.host_header.encode("ascii")])
        return await self._agent.request(method, uri, headers, body)


# -- reading responses -----------------------------------------------------


class ResponseTooLarge(Exception):
    pass


class _BodyCollector(Protocol):
    def __init__(self, finished: defer.Deferred, max_size: int) -> None:
        self._finished = finished
        self._max = max_size
        self._buffer = BytesIO()

    def dataReceived(self, data: bytes) -> None:
        if self._finished.called:
            return
        self._buffer.write(data)
        if self._buffer.tell() > self._max:
            self._finished.errback(ResponseTooLarge(f"response body over {self._max} bytes"))
            self.transport.stopProducing()

    def connectionLost(self, reason: Failure = Failure(ResponseDone())) -> None:  # type: ignore[assignment]
        if self._finished.called:
            return
        if reason.check(ResponseDone, PotentialDataLoss):
            self._finished.callback(self._buffer.getvalue())
        else:
            self._finished.errback(reason)


async def read_body(response: IResponse, max_size: int) -> bytes:
    """The response body, at most ``max_size`` bytes (``ResponseTooLarge`` beyond)."""
    finished: defer.Deferred = defer.Deferred()
    response.deliverBody(_BodyCollector(finished, max_size))
    return await finished


def _headers_dict(response: IResponse) -> dict[str, str]:
    result = {}
    for name, values in response.headers.getAllRawHeaders():
        result[name.decode("latin-1").lower()] = b", ".join(values).decode("latin-1")
    return result


def _with_timeout(reactor: Any, d: defer.Deferred, timeout: float) -> defer.Deferred:
    d.addTimeout(timeout, reactor)
    return d


# -- .well-known -------------------------------------------------------------


class HTTPSWellKnownFetcher:
    """Fetch ``https://<hostname>/.well-known/matrix/server`` (port 443) through the IP filter and TLS policy.

    Redirects are followed (up to 5). Used by
    :class:`~mxtwisted.federation.discovery.WellKnownResolver`.
    """

    def __init__(
        self,
        reactor: Any,
        tls_policy: Any,
        ip_filter: IPFilter,
        resolve_addresses: Optional[AddressResolver] = None,
        timeout: float = 30.0,
    ) -> None:
        self._reactor = reactor
        self._timeout = timeout
        resolve = resolve_addresses or reactor_address_resolver(reactor)

        @implementer(IAgentEndpointFactory)
        class Factory:
            def endpointForURI(self, uri: URI) -> IStreamClientEndpoint:
                if uri.scheme != b"https":
                    raise ConnectError(string=".well-known must be fetched over https")
                host = uri.host.decode("ascii")
                return FilteredTLSEndpoint(reactor, ((host, uri.port),), host, tls_policy, ip_filter, resolve)

        self._agent = RedirectAgent(
            Agent.usingEndpointFactory(reactor, Factory(), pool=HTTPConnectionPool(reactor, persistent=False)),
            redirectLimit=5,
        )

    async def __call__(self, hostname: str) -> WellKnownResponse:
        url = f"https://{hostname}/.well-known/matrix/server".encode("ascii")
        headers = Headers({b"User-Agent": [USER_AGENT]})
        response = await _with_timeout(self._reactor, self._agent.request(b"GET", url, headers), self._timeout)
        body = await _with_timeout(self._reactor, defer.ensureDeferred(read_body(response, WELL_KNOWN_MAX_SIZE)), self._timeout)
        return WellKnownResponse(response.code, body, _headers_dict(response))


# -- the client ---------------------------------------------------------------


class FederationClient:
    """Signed JSON requests to other servers.

    ``domain_whitelist`` (``federation_domain_whitelist``): when not None,
    requests to other destinations raise :class:`FederationDeniedError`
    without touching the network.
    """

    def __init__(
        self,
        reactor: Any,
        server_name: str,
        signing_key: SigningKey,
        agent: IAgent,
        domain_whitelist: Optional[list[str]] = None,
        timeout: float = DEFAULT_TIMEOUT,
        backoff: Optional[DestinationBackoff] = None,
    ) -> None:
        self._reactor = reactor
        #: Destinations that did not answer lately (shared with whoever wants to know).
        self.backoff = backoff if backoff is not None else DestinationBackoff(reactor)
        self.server_name = server_name
        self._signing_key = signing_key
        self._agent = agent
        self._whitelist = frozenset(domain_whitelist) if domain_whitelist is not None else None
        self._timeout = timeout

    async def close(self) -> None:
        """Close pooled connections (at shutdown)."""
        close = getattr(self._agent, "close", None)
        if close is not None:
            await close()

    async def get_json(self, destination: str, path: str, args: Optional[dict[str, Any]] = None) -> Any:
        return await self._request("GET", destination, path, args, None)

    async def put_json(self, destination: str, path: str, body: Any, args: Optional[dict[str, Any]] = None) -> Any:
        return await self._request("PUT", destination, path, args, body)

    async def post_json(self, destination: str, path: str, body: Any, args: Optional[dict[str, Any]] = None) -> Any:
        return await self._request("POST", destination, path, args, body)

    @staticmethod
    def build_uri(path: str, args: Optional[dict[str, Any]] = None) -> str:
        """``path?query``: the path is sent as given (callers percent-encode parameters); list values repeat."""
        if not args:
            return path
        pairs = []
        for name, value in args.items():
            for item in value if isinstance(value, (list, tuple)) else [value]:
                if isinstance(item, bool):
                    item = "true" if item else "false"
                pairs.append((name, str(item)))
        return path + "?" + urlencode(pairs, quote_via=quote)

    async def _request(self, method: str, destination: str, path: str, args: Optional[dict[str, Any]], body: Any) -> Any:
        if self._whitelist is not None and destination not in self._whitelist:
            raise FederationDeniedError(destination)
        if not path.startswith(SEND_TRANSACTION_PREFIX):
            retry_at = self.backoff.retry_at(destination)
            if retry_at:
                raise NotRetryingDestination(destination, retry_at)
        uri = self.build_uri(path, args)
        authorization = x_matrix_header(self.server_name, destination, self._signing_key, method, uri, body)
        headers = Headers(
            {
                b"Authorization": [authorization.encode("utf-8")],
                b"User-Agent": [USER_AGENT],
            }
        )
        producer = None
        if body is not None:
            data = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
            headers.setRawHeaders(b"Content-Type", [b"application/json"])
            producer = FileBodyProducer(BytesIO(data))
        try:
            url = f"matrix-federation://{destination}{uri}".encode("ascii")
        except UnicodeEncodeError:
            raise RequestSendFailed(destination, ValueError("path must be ASCII (percent-encode it)")) from None
        try:
            d = defer.ensureDeferred(self._agent.request(method.encode("ascii"), url, headers, producer))
            response = await _with_timeout(self._reactor, d, self._timeout)
            raw = await _with_timeout(
                self._reactor, defer.ensureDeferred(read_body(response, MAX_RESPONSE_SIZE)), self._timeout
            )
        except defer.CancelledError:
            raise
        except Exception as e:  # DNS, connection, TLS, timeout, bad server name
            self.backoff.failed(destination)
            raise RequestSendFailed(destination, e) from e
        self.backoff.succeeded(destination)
        parsed: Any
        try:
            parsed = json.loads(raw.decode("utf-8")) if raw else None
        except (UnicodeDecodeError, ValueError):
            parsed = None
        if not 200 <= response.code < 300:
            errcode = parsed.get("errcode") if isinstance(parsed, dict) else None
            raise FederationError(response.code, errcode if isinstance(errcode, str) else None, parsed if parsed is not None else raw)
        if parsed is None:
            raise RequestSendFailed(destination, ValueError(f"{method} {path}: response is not JSON"))
        return parsed


__all__ = [
    "FederationAgent",
    "FederationClient",
    "FederationDeniedError",
    "FederationError",
    "FilteredTLSEndpoint",
    "NotRetryingDestination",
    "HTTPSWellKnownFetcher",
    "RequestSendFailed",
    "reactor_address_resolver",
    "read_body",
]
