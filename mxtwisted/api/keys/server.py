"""``GET /_matrix/key/v2/server``: our signed server keys.

Spec: Server-Server API, "Publishing Keys". The response is signed with the
current key; it is built once and rebuilt when half its validity has passed,
so that a busy server does not sign on every request.
"""

from __future__ import annotations

from typing import Any

from signedjson.key import encode_verify_key_base64, get_verify_key
from signedjson.sign import sign_json
from twisted.internet.interfaces import IReactorTime

from mxtwisted.http.router import Router
from mxtwisted.server_keys import OldVerifyKey


class ServerKeyResource:
    def __init__(
        self,
        clock: IReactorTime,
        server_name: str,
        signing_keys: list,
        old_keys: list[OldVerifyKey],
        validity_ms: int,
    ) -> None:
        self._clock = clock
        self._server_name = server_name
        self._signing_key = signing_keys[0]
        self._verify_keys = {f"{k.alg}:{k.version}": get_verify_key(k) for k in signing_keys}
        self._old_keys = old_keys
        self._validity_ms = validity_ms
        self._cached: dict[str, Any] | None = None
        self._refresh_at = 0

    def register(self, router: Router) -> None:
        router.add("GET", "/_matrix/key/v2/server", self.get_keys)
        # Deprecated form with a key ID; the whole set is returned either way.
        router.add("GET", "/_matrix/key/v2/server/{keyId}", self.get_keys)

    def response(self) -> dict[str, Any]:
        now = int(self._clock.seconds() * 1000)
        if self._cached is None or now >= self._refresh_at:
            body: dict[str, Any] = {
                "server_name": self._server_name,
                "valid_until_ts": now + self._validity_ms,
                "verify_keys": {kid: {"key": encode_verify_key_base64(vk)} for kid, vk in self._verify_keys.items()},
                "old_verify_keys": {
                    k.key_id: {"key": encode_verify_key_base64(k.verify_key), "expired_ts": k.expired_ts}
                    for k in self._old_keys
                },
            }
            self._cached = sign_json(body, self._server_name, self._signing_key)
            self._refresh_at = now + self._validity_ms // 2
        return self._cached

    async def get_keys(self, request: Any, keyId: str | None = None) -> dict[str, Any]:
        return self.response()
