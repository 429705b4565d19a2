"""The server-to-server stack: discovery, TLS, signed requests, keys.

:func:`build_federation` makes the pieces from the configuration;
:class:`FederationComponents` holds them (``ClientComponents.federation``):

- ``client``: :class:`~mxtwisted.federation.client.FederationClient`, signed
  requests to other servers;
- ``keyring``: :class:`~mxtwisted.federation.keyring.Keyring`, their keys;
- ``authenticator``: :class:`~mxtwisted.federation.auth.FederationAuthenticator`,
  checks the X-Matrix header of incoming requests.

See docs/federation.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Optional

__all__ = ["FederationComponents", "build_federation"]


@dataclass
class FederationComponents:
    client: Any
    keyring: Any
    authenticator: Any
    #: The resolver of server names (:class:`~mxtwisted.federation.discovery.ServerDiscovery`).
    discovery: Any = None

    async def close(self) -> None:
        """Close the client's pooled connections (the server is stopping)."""
        await self.client.close()


def build_federation(
    reactor: Any,
    config: Any,
    signing_keys: list,
    old_keys: Iterable[Any] = (),
    store: Any = None,
    discovery: Optional[Any] = None,
    resolve_addresses: Optional[Any] = None,
) -> FederationComponents:
    """Build the federation components of a homeserver (no I/O).

    ``discovery`` and ``resolve_addresses`` replace the real DNS-based ones
    (tests use them to route names to loopback ports).
    """
    from mxtwisted.federation.auth import FederationAuthenticator
    from mxtwisted.federation.client import FederationAgent, FederationClient, HTTPSWellKnownFetcher
    from mxtwisted.federation.discovery import ServerDiscovery, WellKnownResolver
    from mxtwisted.federation.ipfilter import IPFilter
    from mxtwisted.federation.keyring import Keyring, local_keys_from
    from mxtwisted.federation.tls import FederationTLSPolicy

    ip_filter = IPFilter.from_config(config)
    tls_policy = FederationTLSPolicy.from_config(config)
    if discovery is None:
        fetcher = HTTPSWellKnownFetcher(reactor, tls_policy, ip_filter, resolve_addresses)
        discovery = ServerDiscovery(WellKnownResolver(reactor, fetcher))
    agent = FederationAgent(reactor, discovery, tls_policy, ip_filter, resolve_addresses)
    whitelist = config["federation_domain_whitelist"]
    client = FederationClient(reactor, config.server_name, signing_keys[0], agent, domain_whitelist=whitelist)
    keyring = Keyring(
        reactor,
        config.server_name,
        local_keys_from(signing_keys, old_keys),
        client,
        store=store,
        trusted_key_servers=config["trusted_key_servers"],
    )
    authenticator = FederationAuthenticator(
        config.server_name, keyring, reactor, domain_whitelist=whitelist, backoff=client.backoff
    )
    return FederationComponents(client=client, keyring=keyring, authenticator=authenticator, discovery=discovery)
