"""``/.well-known/matrix/client`` and ``/.well-known/matrix/server``.

Spec: Client-Server API "Server Discovery" and Server-Server API "Resolving
server names". Served only when configured, as Synapse does: the client file
when ``public_baseurl`` is set, the server file when ``serve_server_wellknown``
is true (delegating federation to port 443 of the server name).
"""

from __future__ import annotations

from typing import Any, Optional

from mxtwisted.http.errors import Codes, MatrixError
from mxtwisted.http.router import Router


class WellKnownResource:
    def __init__(self, server_name: str, public_baseurl: Optional[str], serve_server: bool, extra_client: dict) -> None:
        self._client: Optional[dict[str, Any]] = None
        if public_baseurl:
            self._client = dict(extra_client)
            self._client["m.homeserver"] = {"base_url": public_baseurl.rstrip("/") + "/"}
        host = server_name
        if host.startswith("["):
            host = host[: host.index("]") + 1]
        elif host.count(":") == 1:
            host = host.split(":", 1)[0]
        self._server = {"m.server": f"{host}:443"} if serve_server else None

    def register(self, router: Router) -> None:
        router.add("GET", "/.well-known/matrix/client", self.get_client)
        router.add("GET", "/.well-known/matrix/server", self.get_server)

    async def get_client(self, request: Any) -> dict[str, Any]:
        if self._client is None:
            raise MatrixError(404, Codes.NOT_FOUND, ".well-known/matrix/client is not configured")
        return self._client

    async def get_server(self, request: Any) -> dict[str, Any]:
        if self._server is None:
            raise MatrixError(404, Codes.NOT_FOUND, ".well-known/matrix/server is not configured")
        return self._server
