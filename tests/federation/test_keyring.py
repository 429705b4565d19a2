"""The keyring against real servers on loopback: fetching, verifying, caching, notaries."""

from __future__ import annotations

import copy
import os
import time

from twisted.trial.unittest import TestCase

from mxtwisted.events.signing import (
    SignatureVerifyError,
    encode_verify_key_base64,
    generate_signing_key,
    get_verify_key,
    make_key_id,
    sign_json,
    verify_json,
)
from mxtwisted.federation.keyring import KeyLookupError, Keyring
from mxtwisted.storage.server_keys_store import ServerKeyStore
from tests.federation.support import (
    JsonResource,
    listen_tls,
    loopback_discovery,
    make_client,
    make_pki,
    tls_listener_config,
)
from tests.support.homeserver import start_homeserver


def now_ms() -> int:
    return int(time.time() * 1000)


def key_response(server_name: str, key, valid_until_ts: int) -> dict:
    body = {
        "server_name": server_name,
        "valid_until_ts": valid_until_ts,
        "verify_keys": {make_key_id(key): {"key": encode_verify_key_base64(get_verify_key(key))}},
        "old_verify_keys": {},
    }
    return sign_json(body, server_name, key)


class CountingClient:
    def __init__(self, client):
        self.client = client
        self.calls = []

    async def get_json(self, destination, path, args=None):
        self.calls.append(("GET", destination, path))
        return await self.client.get_json(destination, path, args)

    async def post_json(self, destination, path, body):
        self.calls.append(("POST", destination, path))
        return await self.client.post_json(destination, path, body)


class KeyringTests(TestCase):
    def setUp(self):
        self.dir = os.path.abspath(self.mktemp())
        self.pki = make_pki(os.path.join(self.dir, "pki"))
        self.our_key = generate_signing_key()

    def keyring(self, routes, store=None, notaries=()):
        client = CountingClient(make_client(self, "observer.test", self.our_key, loopback_discovery(routes), self.pki.policy()))
        from twisted.internet import reactor

        return Keyring(reactor, "observer.test", {}, client, store=store, trusted_key_servers=notaries), client

    async def test_fetches_and_verifies_a_running_servers_keys(self):
        hs = await start_homeserver(self, server_name="a.test", **tls_listener_config(self.pki))
        port = hs.service.ports[0].getHost().port
        store = ServerKeyStore(hs.storage.db)
        keyring, client = self.keyring({"a.test": port}, store=store)
        signing_key = hs.service.signing_keys[0]
        key_id = make_key_id(signing_key)
        key = await keyring.get_verify_key("a.test", key_id, now_ms())
        self.assertEqual(encode_verify_key_base64(key), encode_verify_key_base64(get_verify_key(signing_key)))
        # Cached in memory: no second request.
        await keyring.get_verify_key("a.test", key_id, now_ms())
        self.assertEqual(len(client.calls), 1)
        # Stored: a new keyring with the same store does not ask either.
        fresh, fresh_client = self.keyring({"a.test": port}, store=store)
        await fresh.get_verify_key("a.test", key_id, now_ms())
        self.assertEqual(fresh_client.calls, [])
        stored = (await store.get_keys("a.test"))[key_id]
        self.assertEqual(stored.key_json["server_name"], "a.test")
        # Asking for validity beyond what we hold (capped at 7 days) fetches again, then fails.
        with self.assertRaises(KeyLookupError):
            await keyring.get_verify_key("a.test", key_id, now_ms() + 30 * 86_400_000)
        self.assertEqual(len(client.calls), 2)
        # verify_json_for_server with a signature by that server.
        signed = sign_json({"hello": "world"}, "a.test", signing_key)
        await keyring.verify_json_for_server("a.test", signed, now_ms())
        signed["hello"] = "tampered"
        with self.assertRaises(SignatureVerifyError):
            await keyring.verify_json_for_server("a.test", signed, now_ms())
        with self.assertRaises(SignatureVerifyError):
            await keyring.verify_json_for_server("a.test", {"unsigned": 1}, now_ms())
        with self.assertRaises(KeyLookupError):
            await keyring.get_verify_key("a.test", "ed25519:unknown", now_ms())

    async def test_refuses_tampered_response(self):
        origin_key = generate_signing_key()
        good = key_response("origin.test", origin_key, now_ms() + 3_600_000)
        bad = copy.deepcopy(good)
        bad["verify_keys"][make_key_id(origin_key)]["key"] = encode_verify_key_base64(get_verify_key(generate_signing_key()))
        port = listen_tls(self, self.pki, JsonResource(lambda request: bad))
        keyring, _ = self.keyring({"origin.test": port})
        with self.assertRaises(KeyLookupError):
            await keyring.get_verify_key("origin.test", make_key_id(origin_key), now_ms())

    async def test_refuses_response_for_another_server(self):
        origin_key = generate_signing_key()
        other = key_response("other.test", origin_key, now_ms() + 3_600_000)
        port = listen_tls(self, self.pki, JsonResource(lambda request: other))
        keyring, _ = self.keyring({"origin.test": port})
        with self.assertRaises(KeyLookupError):
            await keyring.get_verify_key("origin.test", make_key_id(origin_key), 0)

    async def test_expired_response_not_valid_now(self):
        origin_key = generate_signing_key()
        expired = key_response("origin.test", origin_key, now_ms() - 60_000)
        port = listen_tls(self, self.pki, JsonResource(lambda request: expired))
        keyring, _ = self.keyring({"origin.test": port})
        with self.assertRaises(KeyLookupError):
            await keyring.get_verify_key("origin.test", make_key_id(origin_key), now_ms())
        # For something signed long ago (minimum 0) the old key still counts.
        key = await keyring.get_verify_key("origin.test", make_key_id(origin_key), 0)
        self.assertEqual(make_key_id(key), make_key_id(origin_key))

    async def test_falls_back_to_notary(self):
        """The origin is unreachable; a running homeserver acting as notary has its keys."""
        origin_key = generate_signing_key()
        notary = await start_homeserver(self, server_name="notary.test", **tls_listener_config(self.pki))
        notary_port = notary.service.ports[0].getHost().port
        notary_key = notary.service.signing_keys[0]
        notaries = [{"server_name": "notary.test",
                     "verify_keys": {make_key_id(notary_key): encode_verify_key_base64(get_verify_key(notary_key))}}]
        name = "origin.test"
        response = key_response(name, origin_key, now_ms() + 3_600_000)
        origin_for_notary = JsonResource(lambda request: response)
        # The notary reaches "origin.test" (a test route in its discovery); we do not (port 1 is closed).
        notary_fed = notary.components.federation
        notary_fed.discovery._well_known = loopback_discovery({name: listen_tls(self, self.pki, origin_for_notary)})._well_known
        keyring, client = self.keyring({name: 1, "notary.test": notary_port}, notaries=notaries)
        key = await keyring.get_verify_key(name, make_key_id(origin_key), now_ms())
        self.assertEqual(make_key_id(key), make_key_id(origin_key))
        self.assertEqual([c[:2] for c in client.calls], [("GET", name), ("POST", "notary.test")])
        # A notary whose signature does not match its configured key is not believed.
        wrong = [{"server_name": "notary.test",
                  "verify_keys": {make_key_id(notary_key): encode_verify_key_base64(get_verify_key(generate_signing_key()))}}]
        keyring, _ = self.keyring({name: 1, "notary.test": notary_port}, notaries=wrong)
        with self.assertRaises(KeyLookupError):
            await keyring.get_verify_key(name, make_key_id(origin_key), now_ms())


class NotaryEndpointTests(TestCase):
    async def test_query_countersigned_and_minimum_valid_until(self):
        pki = make_pki(os.path.abspath(self.mktemp()))
        origin_key = generate_signing_key()
        valid_until = now_ms() + 3_600_000
        holder = {}
        origin = JsonResource(lambda request: holder["response"])
        origin_port = listen_tls(self, pki, origin)
        origin_name = f"127.0.0.1:{origin_port}"  # reached by IP literal: the notary's real discovery code
        holder["response"] = key_response(origin_name, origin_key, valid_until)
        notary = await start_homeserver(self, server_name="notary.test", **tls_listener_config(pki))
        notary_key = get_verify_key(notary.service.signing_keys[0])
        client = make_client(self, "asker.test", generate_signing_key(), loopback_discovery(
            {"notary.test": notary.service.ports[0].getHost().port}), pki.policy())
        body = {"server_keys": {origin_name: {make_key_id(origin_key): {"minimum_valid_until_ts": now_ms()}}}}
        result = await client.post_json("notary.test", "/_matrix/key/v2/query", body)
        [entry] = result["server_keys"]
        self.assertEqual(entry["server_name"], origin_name)
        verify_json(entry, origin_name, get_verify_key(origin_key))
        verify_json(entry, "notary.test", notary_key)
        self.assertEqual(len(origin.requests), 1)
        # Cached: asking again (or for less) does not hit the origin.
        await client.post_json("notary.test", "/_matrix/key/v2/query", body)
        await client.get_json("notary.test", f"/_matrix/key/v2/query/{origin_name}", args={"minimum_valid_until_ts": 0})
        self.assertEqual(len(origin.requests), 1)
        # Beyond the cached validity: the notary asks the origin again, and returns the newer answer.
        holder["response"] = key_response(origin_name, origin_key, valid_until + 7_200_000)
        later = {"server_keys": {origin_name: {make_key_id(origin_key): {"minimum_valid_until_ts": valid_until + 1}}}}
        result = await client.post_json("notary.test", "/_matrix/key/v2/query", later)
        self.assertEqual(len(origin.requests), 2)
        self.assertEqual(result["server_keys"][0]["valid_until_ts"], valid_until + 7_200_000)
        # Its own keys, and an unreachable server (left out).
        result = await client.get_json("notary.test", "/_matrix/key/v2/query/notary.test")
        [own] = result["server_keys"]
        verify_json(own, "notary.test", notary_key)
        result = await client.post_json("notary.test", "/_matrix/key/v2/query", {"server_keys": {"127.0.0.1:1": {}}})
        self.assertEqual(result["server_keys"], [])
