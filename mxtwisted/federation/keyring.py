"""The keyring: other servers' signing keys, fetched, verified and cached.

Spec: Server-Server API, "Retrieving server keys". A key is looked up in
memory, then in the database (``server_keys``), then fetched:

1. directly from the server (``GET /_matrix/key/v2/server``): the response
   must name the server, carry its signature made with one of its
   ``verify_keys`` (all of its signatures by keys it lists must verify), and
   parse cleanly;
2. failing that, from each of ``trusted_key_servers`` in turn (``POST
   /_matrix/key/v2/query``): each returned object must be signed by the
   notary (with the ``verify_keys`` configured for it, or else its own keys
   fetched directly) *and* by the origin as in 1.

A key counts for a lookup only if its validity reaches the caller's
``minimum_valid_until_ts`` (request authentication asks for "now"). The
``valid_until_ts`` we keep is the lesser of the published one and 7 days
after fetching (``rooms/fragments/v5-signing-requirements.md``); a key from
``old_verify_keys`` is valid until its ``expired_ts``. Concurrent lookups of
one server share one fetch.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Optional

from twisted.internet import defer
from twisted.logger import Logger

from mxtwisted.events.signing import (
    SignatureVerifyError,
    VerifyKey,
    cap_key_valid_until_ts,
    decode_verify_key_base64,
    encode_verify_key_base64,
    signature_key_ids,
    verify_json,
)
from mxtwisted.storage.server_keys_store import StoredServerKey

log = Logger()


class KeyLookupError(Exception):
    """No usable key: the server could not be reached, its answer was invalid, or the key is unknown or too old."""


@dataclass(frozen=True)
class FetchedKey:
    verify_key: VerifyKey
    valid_until_ts: int


def _decode_key(key_id: str, entry: Any) -> Optional[VerifyKey]:
    algorithm, _, version = key_id.partition(":")
    if not isinstance(entry, Mapping) or not isinstance(entry.get("key"), str) or not version:
        raise KeyLookupError(f"malformed key entry {key_id!r}")
    if algorithm != "ed25519":
        return None  # an algorithm we do not know: ignored
    try:
        return decode_verify_key_base64(algorithm, version, entry["key"])
    except ValueError as e:
        raise KeyLookupError(f"bad key {key_id!r}: {e}") from None


def parse_key_response(server_name: str, response: Any, fetched_ts: int) -> list[StoredServerKey]:
    """Check a server's key response (as from ``/_matrix/key/v2/server``) and return its keys to store.

    Raises :class:`KeyLookupError` if it is not for ``server_name``, malformed,
    or not validly self-signed.
    """
    if not isinstance(response, Mapping) or response.get("server_name") != server_name:
        raise KeyLookupError(f"key response is not for {server_name}")
    valid_until = response.get("valid_until_ts")
    if not isinstance(valid_until, int) or isinstance(valid_until, bool):
        raise KeyLookupError("key response has no valid_until_ts")
    verify_keys = response.get("verify_keys")
    old_keys = response.get("old_verify_keys", {})
    if not isinstance(verify_keys, Mapping) or not isinstance(old_keys, Mapping):
        raise KeyLookupError("malformed verify_keys / old_verify_keys")
    current: dict[str, VerifyKey] = {}
    for key_id, entry in verify_keys.items():
        key = _decode_key(key_id, entry)
        if key is not None:
            current[key_id] = key
    verified = False
    for key_id in signature_key_ids(response, server_name):
        key = current.get(key_id)
        if key is None:
            continue  # signed by a key not (or no longer) listed: it cannot vouch for the list
        try:
            verify_json(response, server_name, key)
        except SignatureVerifyError as e:
            raise KeyLookupError(f"key response of {server_name}: {e}") from None
        verified = True
    if not verified:
        raise KeyLookupError(f"key response of {server_name} is not signed by one of its verify_keys")
    raw = dict(response)
    result = [
        StoredServerKey(
            server_name,
            key_id,
            encode_verify_key_base64(key),
            cap_key_valid_until_ts(valid_until, fetched_ts),
            fetched_ts,
            raw,
        )
        for key_id, key in current.items()
    ]
    for key_id, entry in old_keys.items():
        key = _decode_key(key_id, entry)
        expired_ts = entry.get("expired_ts") if isinstance(entry, Mapping) else None
        if key is None or key_id in current or not isinstance(expired_ts, int):
            continue
        result.append(StoredServerKey(server_name, key_id, encode_verify_key_base64(key), expired_ts, fetched_ts, raw))
    return result


class Keyring:
    """Finds and checks other servers' signing keys.

    - ``local_keys``: our own keys, ``key_id -> (VerifyKey, valid_until_ts or None for "current")``:
      our server name is never fetched over the network;
    - ``client``: a :class:`~mxtwisted.federation.client.FederationClient` (``get_json``/``post_json``);
    - ``store``: a :class:`~mxtwisted.storage.server_keys_store.ServerKeyStore`, or None (memory only);
    - ``trusted_key_servers``: the config list, ``[{server_name, verify_keys?}]``.
    """

    def __init__(
        self,
        clock: Any,
        server_name: str,
        local_keys: Mapping[str, tuple[VerifyKey, Optional[int]]],
        client: Any,
        store: Any = None,
        trusted_key_servers: Iterable[Mapping[str, Any]] = (),
    ) -> None:
        self._clock = clock
        self.server_name = server_name
        self._local = dict(local_keys)
        self._client = client
        self._store = store
        self._notaries = [dict(n) for n in trusted_key_servers]
        self._cache: dict[tuple[str, str], FetchedKey] = {}
        self._fetching: dict[str, defer.Deferred] = {}

    def _now_ms(self) -> int:
        return int(self._clock.seconds() * 1000)

    # -- lookups -----------------------------------------------------------

    async def get_verify_key(self, server_name: str, key_id: str, minimum_valid_until_ts: int = 0) -> VerifyKey:
        """The verify key ``key_id`` of ``server_name``, valid at least until ``minimum_valid_until_ts`` (ms).

        Raises :class:`KeyLookupError`.
        """
        if server_name == self.server_name:
            local = self._local.get(key_id)
            if local is None:
                raise KeyLookupError(f"we have no key {key_id}")
            key, valid_until = local
            if valid_until is not None and valid_until < minimum_valid_until_ts:
                raise KeyLookupError(f"our key {key_id} expired at {valid_until}")
            return key
        found = await self._known_key(server_name, key_id, minimum_valid_until_ts)
        if found is not None:
            return found
        await self._fetch_shared(server_name, key_id, minimum_valid_until_ts)
        found = await self._known_key(server_name, key_id, minimum_valid_until_ts)
        if found is None:
            known = self._cache.get((server_name, key_id))
            if known is not None:
                raise KeyLookupError(
                    f"key {key_id} of {server_name} is valid until {known.valid_until_ts},"
                    f" not {minimum_valid_until_ts}"
                )
            raise KeyLookupError(f"cannot find key {key_id} of {server_name}")
        return found

    async def verify_json_for_server(
        self, server_name: str, json_object: Mapping[str, Any], minimum_valid_until_ts: int = 0
    ) -> None:
        """Check ``server_name``'s signature on ``json_object`` with a key valid until ``minimum_valid_until_ts``.

        One signature by a key we can find must verify; a signature that is
        found to be wrong fails at once. Raises
        :class:`~mxtwisted.events.signing.SignatureVerifyError`.
        """
        key_ids = signature_key_ids(json_object, server_name)
        if not key_ids:
            raise SignatureVerifyError(f"not signed by {server_name}")
        problems = []
        for key_id in key_ids:
            try:
                key = await self.get_verify_key(server_name, key_id, minimum_valid_until_ts)
            except KeyLookupError as e:
                problems.append(str(e))
                continue
            verify_json(json_object, server_name, key)
            return
        raise SignatureVerifyError("; ".join(problems))

    async def _known_key(self, server_name: str, key_id: str, minimum: int) -> Optional[VerifyKey]:
        cached = self._cache.get((server_name, key_id))
        if cached is None and self._store is not None:
            stored = (await self._store.get_keys(server_name, [key_id])).get(key_id)
            if stored is not None:
                cached = self._remember(stored)
        if cached is not None and cached.valid_until_ts >= minimum:
            return cached.verify_key
        return None

    def _remember(self, stored: StoredServerKey) -> FetchedKey:
        algorithm, _, version = stored.key_id.partition(":")
        fetched = FetchedKey(decode_verify_key_base64(algorithm, version, stored.verify_key), stored.valid_until_ts)
        previous = self._cache.get((stored.server_name, stored.key_id))
        if previous is None or previous.valid_until_ts <= fetched.valid_until_ts:
            self._cache[(stored.server_name, stored.key_id)] = fetched
            return fetched
        return previous

    async def _save(self, keys: list[StoredServerKey]) -> None:
        for key in keys:
            self._remember(key)
        if self._store is not None:
            await self._store.store_keys(keys)

    # -- fetching ----------------------------------------------------------

    async def _fetch_shared(self, server_name: str, key_id: str, minimum: int) -> None:
        running = self._fetching.get(server_name)
        if running is not None:
            await _wait(running)
            if await self._known_key(server_name, key_id, minimum) is not None:
                return
        d = defer.ensureDeferred(self._fetch(server_name, key_id, minimum))
        # Failures are reported by the lookup that follows; the shared Deferred always succeeds.
        d.addErrback(lambda f: log.failure("Fetching the keys of {server} failed", f, server=server_name))
        self._fetching[server_name] = d
        try:
            await _wait(d)
        finally:
            if self._fetching.get(server_name) is d:
                del self._fetching[server_name]

    async def _fetch(self, server_name: str, key_id: str, minimum: int) -> None:
        try:
            await self.fetch_direct(server_name)
            if await self._known_key(server_name, key_id, minimum) is not None:
                return
        except Exception as e:
            log.info("Fetching the keys of {server} directly failed: {error}", server=server_name, error=e)
        for notary in self._notaries:
            if notary.get("server_name") == server_name:
                continue
            try:
                await self._fetch_from_notary(notary, server_name, key_id, minimum)
            except Exception as e:
                log.info(
                    "Fetching the keys of {server} from {notary} failed: {error}",
                    server=server_name, notary=notary.get("server_name"), error=e,
                )
                continue
            if await self._known_key(server_name, key_id, minimum) is not None:
                return

    async def fetch_direct(self, server_name: str) -> list[StoredServerKey]:
        """Fetch, check and store ``server_name``'s keys from ``/_matrix/key/v2/server``. Raises on failure."""
        response = await self._client.get_json(server_name, "/_matrix/key/v2/server")
        keys = parse_key_response(server_name, response, self._now_ms())
        await self._save(keys)
        return keys

    async def _fetch_from_notary(self, notary: Mapping[str, Any], server_name: str, key_id: str, minimum: int) -> None:
        notary_name = notary["server_name"]
        body = {"server_keys": {server_name: {key_id: {"minimum_valid_until_ts": minimum}}}}
        response = await self._client.post_json(notary_name, "/_matrix/key/v2/query", body)
        entries = response.get("server_keys") if isinstance(response, Mapping) else None
        if not isinstance(entries, list):
            raise KeyLookupError(f"notary {notary_name} answered without server_keys")
        now = self._now_ms()
        for entry in entries:
            if not isinstance(entry, Mapping) or entry.get("server_name") != server_name:
                continue
            await self._check_notary_signature(notary, entry)
            await self._save(parse_key_response(server_name, entry, now))

    async def _check_notary_signature(self, notary: Mapping[str, Any], entry: Mapping[str, Any]) -> None:
        notary_name = notary["server_name"]
        configured = notary.get("verify_keys")
        if configured:
            for key_id, key_b64 in configured.items():
                algorithm, _, version = key_id.partition(":")
                if key_id not in signature_key_ids(entry, notary_name):
                    continue
                verify_json(entry, notary_name, decode_verify_key_base64(algorithm, version, key_b64))
                return
            raise KeyLookupError(f"answer of notary {notary_name} is not signed with its configured keys")
        await self.verify_json_for_server(notary_name, entry, 0)

    # -- for the notary endpoint -------------------------------------------

    async def get_server_key_responses(
        self, server_name: str, key_ids: Iterable[str], minimum_valid_until_ts: int
    ) -> list[dict[str, Any]]:
        """Signed key responses of ``server_name`` carrying ``key_ids`` (all keys if empty), as received.

        Stored answers are used when they are valid until
        ``minimum_valid_until_ts``; otherwise the server is asked directly
        (never another notary). Answers we cannot get are left out.
        """
        wanted = list(key_ids)
        stored = await self._stored_responses(server_name, wanted)
        if self._stale(stored, wanted, minimum_valid_until_ts):
            try:
                await self.fetch_direct(server_name)
            except Exception as e:
                log.info("Notary: fetching the keys of {server} failed: {error}", server=server_name, error=e)
            stored = await self._stored_responses(server_name, wanted)
        responses: dict[str, dict[str, Any]] = {}
        for key in stored.values():
            text = json.dumps(key.key_json, sort_keys=True)
            responses.setdefault(text, dict(key.key_json))
        return list(responses.values())

    async def _stored_responses(self, server_name: str, wanted: list[str]) -> dict[str, StoredServerKey]:
        if self._store is None:
            return {}
        return await self._store.get_keys(server_name, wanted or None)

    @staticmethod
    def _stale(stored: dict[str, StoredServerKey], wanted: list[str], minimum: int) -> bool:
        if not stored or any(key_id not in stored for key_id in wanted):
            return True
        for key in stored.values():
            # Only current keys can be refreshed; an old key's expired_ts will not move.
            current = key.key_json.get("verify_keys", {})
            if key.key_id in current and key.key_json.get("valid_until_ts", 0) < minimum:
                return True
        return False


async def _wait(d: defer.Deferred) -> None:
    """Wait for a shared Deferred without consuming its result for other waiters."""
    waiter: defer.Deferred = defer.Deferred()
    d.addBoth(lambda result: (waiter.callback(None), result)[1])
    await waiter


def local_keys_from(signing_keys: list, old_keys: Iterable[Any]) -> dict[str, tuple[VerifyKey, Optional[int]]]:
    """Our ``local_keys`` for :class:`Keyring`: the signing keys (current) and ``old_signing_keys``."""
    from mxtwisted.events.signing import get_verify_key, make_key_id

    result: dict[str, tuple[VerifyKey, Optional[int]]] = {
        make_key_id(key): (get_verify_key(key), None) for key in signing_keys
    }
    for old in old_keys:
        result.setdefault(old.key_id, (old.verify_key, old.expired_ts))
    return result


__all__ = ["FetchedKey", "KeyLookupError", "Keyring", "local_keys_from", "parse_key_response"]
