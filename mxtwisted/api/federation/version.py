"""``GET /_matrix/federation/v1/version`` (Server-Server API, "Server implementation")."""

from __future__ import annotations

from typing import Any

from mxtwisted import __version__
from mxtwisted.http.router import Router


class FederationVersionResource:
    def register(self, router: Router) -> None:
        router.add("GET", "/_matrix/federation/v1/version", self.get_version)

    async def get_version(self, request: Any) -> dict[str, Any]:
        return {"server": {"name": "matrixhs", "version": __version__}}
