"""Which IP addresses outgoing federation requests may connect to.

Server names are chosen by other people: without a filter, a room member
could make this server send requests into its own private network (SSRF).
Every address a destination resolves to is checked here before connecting;
addresses in ``ip_range_blacklist`` are refused unless they are also in
``ip_range_whitelist``. ``0.0.0.0`` and ``::`` are always refused, as in
Synapse, and an IPv4-mapped IPv6 address (``::ffff:10.0.0.1``) is judged as
the IPv4 address it carries.
"""

from __future__ import annotations

import ipaddress
from typing import Iterable, Union

from twisted.internet.error import ConnectError

IPNetwork = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]
IPAddress = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]

#: Synapse's default ``ip_range_blacklist``: loopback, private (RFC 1918), CGNAT,
#: link-local, multicast, documentation and other special-purpose ranges.
DEFAULT_IP_RANGE_BLACKLIST: tuple[str, ...] = (
    "127.0.0.0/8",
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "100.64.0.0/10",
    "192.0.0.0/24",
    "169.254.0.0/16",
    "192.88.99.0/24",
    "198.18.0.0/15",
    "192.0.2.0/24",
    "198.51.100.0/24",
    "203.0.113.0/24",
    "224.0.0.0/4",
    "::1/128",
    "fe80::/10",
    "fc00::/7",
    "2001:db8::/32",
    "ff00::/8",
    "fec0::/10",
)

#: Never a valid destination, whatever the configuration says.
ALWAYS_BLACKLISTED: tuple[str, ...] = ("0.0.0.0/32", "::/128")


class BlacklistedAddressError(ConnectError):
    """Every address of a destination is blacklisted: no connection was attempted."""


def parse_networks(ranges: Iterable[str]) -> list[IPNetwork]:
    """CIDR ranges (or single addresses) as networks; ``ValueError`` names a bad one."""
    networks = []
    for text in ranges:
        try:
            networks.append(ipaddress.ip_network(text, strict=False))
        except ValueError as e:
            raise ValueError(f"invalid IP range {text!r}: {e}") from None
    return networks


def check_ip_range(value: str) -> str | None:
    """Config check for one range: an error message or None."""
    try:
        ipaddress.ip_network(value, strict=False)
    except ValueError as e:
        return str(e)
    return None


def _normalise(address: IPAddress) -> IPAddress:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


class IPFilter:
    """``blacklist`` minus ``whitelist``, applied to resolved addresses."""

    def __init__(self, blacklist: Iterable[str] = DEFAULT_IP_RANGE_BLACKLIST, whitelist: Iterable[str] = ()) -> None:
        self._always = parse_networks(ALWAYS_BLACKLISTED)
        self._blacklist = parse_networks(blacklist)
        self._whitelist = parse_networks(whitelist)

    @classmethod
    def from_config(cls, config: object) -> IPFilter:
        """From ``ip_range_blacklist`` / ``ip_range_whitelist`` of a HomeserverConfig."""
        return cls(config["ip_range_blacklist"], config["ip_range_whitelist"])  # type: ignore[index]

    def is_allowed(self, address: str | IPAddress) -> bool:
        """Whether we may connect to ``address`` (an IP literal; anything else is refused)."""
        if isinstance(address, str):
            try:
                parsed: IPAddress = ipaddress.ip_address(address.split("%", 1)[0])
            except ValueError:
                return False
        else:
            parsed = address
        parsed = _normalise(parsed)
        if _contains(self._always, parsed):
            return False
        if _contains(self._whitelist, parsed):
            return True
        return not _contains(self._blacklist, parsed)


def _contains(networks: list[IPNetwork], address: IPAddress) -> bool:
    return any(address in net for net in networks if net.version == address.version)
