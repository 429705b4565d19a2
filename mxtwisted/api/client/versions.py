"""``GET /_matrix/client/versions`` (Client-Server API, "API Standards: versions").

A client that sees a version here relies on it, so the list is kept short and
honest: ``v1.1`` (and its predecessor ``r0.6.1``) because the core of that
version is served — registration and login, devices, profiles, account data,
rooms in every room version, history, membership, /sync with filters,
typing, receipts, read markers, presence, push rules. The optional modules
that are still missing (end-to-end encryption key APIs and to-device
messages, media, push notification delivery, search, SSO, third-party IDs,
VoIP) answer ``404 M_UNRECOGNIZED``, which clients handle as "unsupported".
Later versions are added when what they require lands.
"""

from __future__ import annotations

from typing import Any

from mxtwisted.http.router import Router

#: Spec versions the client API fully supports today.
SUPPORTED_SPEC_VERSIONS: list[str] = ["r0.6.1", "v1.1"]

#: Unstable features (MSC flags) advertised to clients.
UNSTABLE_FEATURES: dict[str, bool] = {}


class ClientVersionsResource:
    def register(self, router: Router) -> None:
        router.add("GET", "/_matrix/client/versions", self.get_versions)

    async def get_versions(self, request: Any) -> dict[str, Any]:
        return {"versions": list(SUPPORTED_SPEC_VERSIONS), "unstable_features": dict(UNSTABLE_FEATURES)}
