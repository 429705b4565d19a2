"""The notary endpoints: other servers' keys, countersigned by us.

Spec: Server-Server API, "Retrieving server keys" > "Querying Keys Through
Another Server": ``POST /_matrix/key/v2/query`` (several servers and key IDs,
each with a ``minimum_valid_until_ts``) and ``GET
/_matrix/key/v2/query/{serverName}`` (all keys of one server, with an
optional ``minimum_valid_until_ts`` query parameter). Each returned object is
the origin's own signed key response, with our signature added. When we
hold no answer valid until the requested time we ask the server itself;
servers we cannot reach are left out. Our own keys are answered locally.
"""

from __future__ import annotations

from typing import Any, Callable

from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime

from mxtwisted.events.signing import sign_json
from mxtwisted.federation.discovery import InvalidServerName, parse_server_name
from mxtwisted.http.errors import Codes, MatrixError
from mxtwisted.http.resource import parse_json_object, query_arg
from mxtwisted.http.router import Router

#: Servers one POST may ask about (each may cost an outgoing request).
MAX_SERVERS_PER_QUERY = 100


class KeyQueryResource:
    def __init__(
        self,
        clock: IReactorTime,
        server_name: str,
        signing_key: Any,
        keyring: Any,
        local_response: Callable[[], dict[str, Any]],
    ) -> None:
        self._clock = clock
        self._server_name = server_name
        self._signing_key = signing_key
        self._keyring = keyring
        self._local_response = local_response

    def register(self, router: Router) -> None:
        router.add("POST", "/_matrix/key/v2/query", self.post_query)
        router.add("GET", "/_matrix/key/v2/query/{serverName}", self.get_query)
        # Deprecated form with a key ID (spec r0): the key ID is ignored, as in Synapse.
        router.add("GET", "/_matrix/key/v2/query/{serverName}/{keyId}", self.get_query)

    def _now_ms(self) -> int:
        return int(self._clock.seconds() * 1000)

    async def post_query(self, request: Any) -> dict[str, Any]:
        body = parse_json_object(request)
        server_keys = body.get("server_keys")
        if not isinstance(server_keys, dict):
            raise MatrixError(400, Codes.BAD_JSON, "server_keys must be an object")
        if len(server_keys) > MAX_SERVERS_PER_QUERY:
            raise MatrixError(400, Codes.INVALID_PARAM, f"At most {MAX_SERVERS_PER_QUERY} servers per query")
        now = self._now_ms()
        queries: list[tuple[str, list[str], int]] = []
        for server_name, keys in server_keys.items():
            if not isinstance(keys, dict):
                raise MatrixError(400, Codes.BAD_JSON, f"server_keys.{server_name} must be an object")
            # Unsaid means "now" (spec); one answer per server, so the strictest criterion wins.
            minimums = []
            for criteria in keys.values():
                value = criteria.get("minimum_valid_until_ts") if isinstance(criteria, dict) else None
                if value is None:
                    value = now
                elif not isinstance(value, int) or isinstance(value, bool):
                    raise MatrixError(400, Codes.BAD_JSON, "minimum_valid_until_ts must be an integer")
                minimums.append(value)
            minimum = max(minimums) if minimums else now
            queries.append((server_name, list(keys), minimum))
        return {"server_keys": await self._answer(queries)}

    async def get_query(self, request: Any, serverName: str, keyId: str | None = None) -> dict[str, Any]:
        text = query_arg(request, "minimum_valid_until_ts")
        minimum = self._now_ms()
        if text is not None:
            try:
                minimum = int(text)
            except ValueError:
                raise MatrixError(400, Codes.INVALID_PARAM, "minimum_valid_until_ts must be an integer") from None
        return {"server_keys": await self._answer([(serverName, [], minimum)])}

    async def _answer(self, queries: list[tuple[str, list[str], int]]) -> list[dict[str, Any]]:
        results = await defer.gatherResults(
            [defer.ensureDeferred(self._one(name, key_ids, minimum)) for name, key_ids, minimum in queries],
            consumeErrors=True,
        )
        return [sign_json(response, self._server_name, self._signing_key) for found in results for response in found]

    async def _one(self, server_name: str, key_ids: list[str], minimum: int) -> list[dict[str, Any]]:
        try:
            parse_server_name(server_name)
        except InvalidServerName:
            return []
        if server_name == self._server_name:
            return [self._local_response()]
        return await self._keyring.get_server_key_responses(server_name, key_ids, minimum)
