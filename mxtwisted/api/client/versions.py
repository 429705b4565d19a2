"""``GET /_matrix/client/versions`` (Client-Server API, "API Standards: versions").

Only spec versions whose mandatory client endpoints matrixhs really serves are
listed: a client that sees a version here relies on it. The list grows as the
features land (registration and login, rooms, sync); until then it is honest
and short.
"""

from __future__ import annotations

from typing import Any

from mxtwisted.http.router import Router

#: Spec versions the client API fully supports today.
SUPPORTED_SPEC_VERSIONS: list[str] = []

#: Unstable features (MSC flags) advertised to clients.
UNSTABLE_FEATURES: dict[str, bool] = {}


class ClientVersionsResource:
    def register(self, router: Router) -> None:
        router.add("GET", "/_matrix/client/versions", self.get_versions)

    async def get_versions(self, request: Any) -> dict[str, Any]:
        return {"versions": list(SUPPORTED_SPEC_VERSIONS), "unstable_features": dict(UNSTABLE_FEATURES)}
