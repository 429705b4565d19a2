"""``GET /health``: 200 ``OK`` while the server can reach its database.

For load balancers and systemd watchdogs: no authentication, plain text.
"""

from __future__ import annotations

from typing import Any, Awaitable, Callable, Optional

from twisted.logger import Logger

from mxtwisted.http.resource import RawResponse
from mxtwisted.http.router import Router

log = Logger()


class HealthResource:
    def __init__(self, ping: Optional[Callable[[], Awaitable[Any]]] = None) -> None:
        self._ping = ping

    def register(self, router: Router) -> None:
        router.add("GET", "/health", self.get_health)

    async def get_health(self, request: Any) -> RawResponse:
        if self._ping is not None:
            try:
                await self._ping()
            except Exception as e:
                log.warn("Health check failed: database unreachable: {e}", e=e)
                return RawResponse(503, b"database unreachable")
        return RawResponse(200, b"OK")
