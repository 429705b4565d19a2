"""Server discovery: where to connect to reach a server name.

Spec: Server-Server API, "Server discovery" > "Resolving server names". For a
server name ``hostname[:port]``:

1. an IP literal: that address, with the given port or 8448. The Host header
   is the server name as given; the certificate must be for the IP address;
2. a hostname with an explicit port: that hostname and port; Host header
   ``hostname:port``, certificate for ``hostname``;
3. otherwise ``GET https://hostname/.well-known/matrix/server``; if it names
   ``m.server`` = ``delegated_hostname[:delegated_port]``:

   1. an IP literal: that address, the given port or 8448; Host header the
      delegated name as given, certificate for the IP;
   2. a hostname with a port: that; Host header and certificate
      ``delegated_hostname[:port]`` / ``delegated_hostname``;
   3. the SRV record ``_matrix-fed._tcp.<delegated_hostname>``; Host header
      and certificate ``delegated_hostname``;
   4. the deprecated SRV record ``_matrix._tcp.<delegated_hostname>``, likewise;
   5. else ``delegated_hostname:8448``, Host header and certificate
      ``delegated_hostname``;

4. then the SRV record ``_matrix-fed._tcp.<hostname>``, 5. ``_matrix._tcp.<hostname>``
   (Host header and certificate ``hostname``), 6. else ``hostname:8448``.

``.well-known`` answers are cached as their ``Cache-Control``/``Expires``
headers say (no longer than 48 hours, at least 5 minutes), 24 hours when they
say nothing; failures are cached for an hour, as in Synapse.

The network is reached through two injected callables, so that every branch is
testable without DNS: a *well-known fetcher* (``async (hostname) ->
WellKnownResponse``, raising on connection errors) and an *SRV resolver*
(``async (name) -> [(target, port), ...]`` in preference order). The real
ones are :class:`mxtwisted.federation.client.HTTPSWellKnownFetcher` and
:func:`srv_lookup` below.
"""

from __future__ import annotations

import email.utils
import ipaddress
import json
import random
import re
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Optional

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

log = Logger()

DEFAULT_FEDERATION_PORT = 8448

#: Cache lifetimes of .well-known answers, in seconds (Synapse's values).
WELL_KNOWN_DEFAULT_CACHE_PERIOD = 24 * 3600
WELL_KNOWN_MAX_CACHE_PERIOD = 48 * 3600
WELL_KNOWN_MIN_CACHE_PERIOD = 5 * 60
WELL_KNOWN_INVALID_CACHE_PERIOD = 3600
#: Largest .well-known body read.
WELL_KNOWN_MAX_SIZE = 50 * 1024

_HOSTNAME_RE = re.compile(r"^[A-Za-z0-9.\-]{1,255}$")
_PORT_RE = re.compile(r"^[0-9]{1,5}$")


class InvalidServerName(ValueError):
    """Not a server name per the spec's grammar (Appendices, "Server Name")."""


def parse_server_name(server_name: str) -> tuple[str, Optional[int]]:
    """``(host, port or None)`` of a server name; IPv6 literals lose their brackets.

    Raises :class:`InvalidServerName`.
    """
    if not isinstance(server_name, str) or not server_name:
        raise InvalidServerName("empty server name")
    if server_name.startswith("["):
        end = server_name.find("]")
        if end == -1:
            raise InvalidServerName(f"unterminated IPv6 literal in {server_name!r}")
        host, rest = server_name[1:end], server_name[end + 1 :]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise InvalidServerName(f"bad IPv6 literal in {server_name!r}") from None
        if rest and not rest.startswith(":"):
            raise InvalidServerName(f"junk after IPv6 literal in {server_name!r}")
        port_text = rest[1:] if rest else None
    else:
        host, sep, port_text_ = server_name.partition(":")
        port_text = port_text_ if sep else None
        if not _HOSTNAME_RE.match(host):
            raise InvalidServerName(f"bad hostname in {server_name!r}")
    port = None
    if port_text is not None:
        if not _PORT_RE.match(port_text) or not 0 < int(port_text) < 65536:
            raise InvalidServerName(f"bad port in {server_name!r}")
        port = int(port_text)
    return host, port


def is_ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


@dataclass(frozen=True)
class Route:
    """How to reach a server: the Host header, the name the certificate must carry, and where to connect.

    ``targets`` are ``(hostname or IP literal, port)`` pairs to try in order
    (several for SRV records); hostnames still need an address lookup, and
    every resulting address goes through the IP filter.
    """

    server_name: str
    host_header: str
    tls_name: str
    targets: tuple[tuple[str, int], ...]


@dataclass
class WellKnownResponse:
    """What a well-known fetcher returns: status, body and the caching headers (lower-case names)."""

    code: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)


WellKnownFetcher = Callable[[str], Awaitable[WellKnownResponse]]
SrvResolver = Callable[[str], Awaitable[list[tuple[str, int]]]]


def cache_period_from_headers(headers: dict[str, str], now: float) -> Optional[float]:
    """Seconds a response may be cached per ``Cache-Control`` / ``Expires``, 0 for ``no-store``, None if unsaid."""
    cache_control = headers.get("cache-control")
    if cache_control:
        directives = [d.strip().lower() for d in cache_control.split(",")]
        if "no-store" in directives:
            return 0
        for directive in directives:
            if directive.startswith("max-age="):
                try:
                    return max(0, int(directive[len("max-age=") :].strip('"')))
                except ValueError:
                    pass
    expires = headers.get("expires")
    if expires:
        try:
            when = email.utils.parsedate_to_datetime(expires)
        except (TypeError, ValueError):
            return 0  # an invalid Expires means "already expired" (RFC 9111)
        return max(0.0, when.timestamp() - now)
    return None


def parse_well_known(body: bytes) -> str:
    """The ``m.server`` value of a .well-known body; ``ValueError`` if missing or invalid."""
    try:
        data = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise ValueError("not JSON") from None
    if not isinstance(data, dict) or not isinstance(data.get("m.server"), str):
        raise ValueError("no m.server string")
    delegated = data["m.server"]
    parse_server_name(delegated)  # raises InvalidServerName, a ValueError
    return delegated


class WellKnownResolver:
    """``await get(hostname)``: the delegated server name of ``hostname``, or None; cached."""

    def __init__(self, clock: IReactorTime, fetcher: WellKnownFetcher) -> None:
        self._clock = clock
        self._fetcher = fetcher
        self._cache: dict[str, tuple[Optional[str], float]] = {}

    async def get(self, hostname: str) -> Optional[str]:
        now = self._clock.seconds()
        cached = self._cache.get(hostname)
        if cached is not None and cached[1] > now:
            return cached[0]
        result, period = await self._fetch(hostname, now)
        if period > 0:
            self._cache[hostname] = (result, self._clock.seconds() + period)
        else:
            self._cache.pop(hostname, None)
        return result

    async def _fetch(self, hostname: str, now: float) -> tuple[Optional[str], float]:
        try:
            response = await self._fetcher(hostname)
        except Exception as e:
            log.debug("No .well-known for {host}: {error}", host=hostname, error=e)
            return None, WELL_KNOWN_INVALID_CACHE_PERIOD
        if response.code != 200:
            return None, WELL_KNOWN_INVALID_CACHE_PERIOD
        try:
            delegated = parse_well_known(response.body)
        except ValueError as e:
            log.info("Invalid .well-known/matrix/server of {host}: {error}", host=hostname, error=e)
            return None, WELL_KNOWN_INVALID_CACHE_PERIOD
        period = cache_period_from_headers(response.headers, now)
        if period is None:
            period = WELL_KNOWN_DEFAULT_CACHE_PERIOD
        elif period > 0:
            period = min(max(period, WELL_KNOWN_MIN_CACHE_PERIOD), WELL_KNOWN_MAX_CACHE_PERIOD)
        return delegated, period


def order_srv_records(records: list[tuple[int, int, str, int]]) -> list[tuple[str, int]]:
    """RFC 2782 order of ``(priority, weight, target, port)``: by priority, weighted-random within one.

    A single record with target ``.`` means "no service here": an empty list.
    """
    if len(records) == 1 and records[0][2] in (".", ""):
        return []
    result: list[tuple[str, int]] = []
    for priority in sorted({r[0] for r in records}):
        group = [r for r in records if r[0] == priority]
        while group:
            total = sum(r[1] for r in group)
            if total == 0:
                pick = group[0]
            else:
                n = random.randint(0, total)
                running = 0
                pick = group[-1]
                for r in group:
                    running += r[1]
                    if running >= n:
                        pick = r
                        break
            group.remove(pick)
            result.append((pick[2].rstrip("."), pick[3]))
    return result


async def srv_lookup(name: str) -> list[tuple[str, int]]:
    """The SRV targets of ``name`` via ``twisted.names`` (empty when there is no record)."""
    from twisted.names import client as dns_client
    from twisted.names import dns
    from twisted.names.error import DNSNameError, DomainError

    try:
        answers, _, _ = await dns_client.lookupService(name)
    except (DNSNameError, DomainError):
        return []
    except Exception as e:
        log.info("SRV lookup of {name} failed: {error}", name=name, error=e)
        return []
    records = [
        (a.payload.priority, a.payload.weight, str(a.payload.target), a.payload.port)
        for a in answers
        if a.type == dns.SRV and a.payload is not None
    ]
    return order_srv_records(records)


class ServerDiscovery:
    """``await resolve(server_name)`` → :class:`Route`, following the spec's algorithm (module docstring)."""

    def __init__(self, well_known: Any, srv_resolver: SrvResolver = srv_lookup) -> None:
        #: An object with ``async get(hostname) -> Optional[str]`` (a :class:`WellKnownResolver`).
        self._well_known = well_known
        self._srv = srv_resolver

    async def resolve(self, server_name: str) -> Route:
        host, port = parse_server_name(server_name)
        if is_ip_literal(host):
            return Route(server_name, server_name, host, ((host, port or DEFAULT_FEDERATION_PORT),))
        if port is not None:
            return Route(server_name, server_name, host, ((host, port),))
        delegated = await self._well_known.get(host)
        if delegated is not None:
            d_host, d_port = parse_server_name(delegated)
            if is_ip_literal(d_host):
                return Route(server_name, delegated, d_host, ((d_host, d_port or DEFAULT_FEDERATION_PORT),))
            if d_port is not None:
                return Route(server_name, f"{d_host}:{d_port}", d_host, ((d_host, d_port),))
            return await self._srv_or_default(server_name, d_host)
        return await self._srv_or_default(server_name, host)

    async def _srv_or_default(self, server_name: str, host: str) -> Route:
        for service in ("_matrix-fed._tcp", "_matrix._tcp"):
            targets = await self._srv(f"{service}.{host}")
            if targets:
                return Route(server_name, host, host, tuple(targets))
        return Route(server_name, host, host, ((host, DEFAULT_FEDERATION_PORT),))


__all__ = [
    "DEFAULT_FEDERATION_PORT",
    "InvalidServerName",
    "Route",
    "ServerDiscovery",
    "WellKnownResolver",
    "WellKnownResponse",
    "cache_period_from_headers",
    "is_ip_literal",
    "order_srv_records",
    "parse_server_name",
    "parse_well_known",
    "srv_lookup",
]
