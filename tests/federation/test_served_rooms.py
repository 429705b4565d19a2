"""Rooms served over federation, over real HTTP with X-Matrix signed requests: event and state retrieval,
backfill, missing events, make_join/send_join, make_leave/send_leave, history visibility for servers."""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any, Optional
from urllib.parse import quote

import treq
from twisted.internet import reactor
from twisted.trial import unittest

from mxtwisted.events.hashing import compute_event_id
from mxtwisted.events.room_versions import get_room_version
from mxtwisted.events.signing import (
    SignatureVerifyError,
    generate_signing_key,
    get_verify_key,
    make_key_id,
    sign_event,
    signature_key_ids,
    verify_json,
)
from mxtwisted.federation.auth import FederationAuthenticator, x_matrix_header
from mxtwisted.service import HomeserverService
from tests.support.homeserver import RunningHomeserver, start_homeserver
from tests.support.spec import spec_problems as _spec_problems

V3 = "/_matrix/client/v3"
F1 = "/_matrix/federation/v1"
F2 = "/_matrix/federation/v2"
REMOTE = "remote.test"
STRANGER = "stranger.test"
def spec_problems(method: str, path: str, status: int, body: Any) -> list[str]:
    """What the spec's Server-Server OpenAPI finds wrong with a response."""
    return _spec_problems(method, path, status, body, document="server-server.json")

class StaticKeyring:
    """Test keyring: the verify keys of the fake remote servers, known in advance (same interface as
    mxtwisted.federation's Keyring for what the served endpoints use)."""

    def __init__(self) -> None:
        self.keys: dict[str, dict[str, Any]] = {}

    def add(self, server: str, signing_key: Any) -> None:
        self.keys.setdefault(server, {})[make_key_id(signing_key)] = get_verify_key(signing_key)

    async def verify_json_for_server(self, server: str, obj: Any, minimum_valid_until_ts: int = 0) -> None:
        known = self.keys.get(server, {})
        for key_id in signature_key_ids(obj, server):
            if key_id in known:
                verify_json(obj, server, known[key_id])
                return
        raise SignatureVerifyError(f"no known key of {server}")


class RemoteServer:
    """A fake remote homeserver: a name and signing key, sending X-Matrix signed requests."""

    def __init__(self, name: str, hs: RunningHomeserver) -> None:
        self.name = name
        self.hs = hs
        self.key = generate_signing_key("t1")

    async def request(self, method: str, path: str, body: Any = None, sign: bool = True) -> tuple[int, Any]:
        headers = {b"Content-Type": [b"application/json"]}
        if sign:
            auth = x_matrix_header(self.name, self.hs.config.server_name, self.key, method, path, body)
            headers[b"Authorization"] = [auth.encode()]
        data = json.dumps(body).encode() if body is not None else None
        response = await treq.request(method, self.hs.base_url + path, data=data, headers=headers, persistent=False)
        content = await response.content()
        return response.code, (json.loads(content) if content else None)

    def sign(self, template: dict, room_version: str) -> tuple[dict, str]:
        """Hash and sign a make_* template as the remote server; returns (event, event_id)."""
        version = get_room_version(room_version)
        event = dict(template, origin=self.name, origin_server_ts=template["origin_server_ts"])
        if version.event_id_in_event:
            event["event_id"] = f"$join{id(event)}:{self.name}"
        event = sign_event(event, self.name, self.key, version)
        return event, compute_event_id(event, version) if not version.event_id_in_event else event["event_id"]


class RecordingFederationClient:
    """Stands in for the outgoing client of the transaction sender: keeps (destination, path, body)."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, str, Any]] = []

    async def put_json(self, destination: str, path: str, body: Any, args: Any = None) -> Any:
        self.sent.append((destination, path, body))
        return {"pdus": {}}


async def start_federating_homeserver(testcase: unittest.TestCase, keyring: StaticKeyring) -> RunningHomeserver:
    """A homeserver whose federation listener authenticates with the real FederationAuthenticator, trusting
    the keys in ``keyring``."""
    original = HomeserverService._build_components

    def build(service: HomeserverService) -> Any:
        components = original(service)
        if getattr(components, "federation", None) is None:
            components.federation = SimpleNamespace()
        # Keep the rest of the federation components; only trust the test servers' keys.
        components.federation.keyring = keyring
        client = getattr(components.federation, "client", None)
        components.federation.authenticator = FederationAuthenticator(
            service.config.server_name, keyring, reactor, backoff=getattr(client, "backoff", None)
        )
        if getattr(components, "federation_sender", None) is not None:
            # The fake remote servers cannot be reached: their transactions are kept for the tests.
            components.federation_sender.client = RecordingFederationClient()
        return components

    testcase.patch(HomeserverService, "_build_components", build)
    return await start_homeserver(
        testcase, bcrypt_rounds=4, rc_message={"per_second": 1000, "burst_count": 1000}
    )


class ServedRoomsTests(unittest.TestCase):
    async def setUp(self) -> None:
        self.keyring = StaticKeyring()
        self.hs = await start_federating_homeserver(self, self.keyring)
        self.remote = RemoteServer(REMOTE, self.hs)
        self.stranger = RemoteServer(STRANGER, self.hs)
        self.keyring.add(REMOTE, self.remote.key)
        self.keyring.add(STRANGER, self.stranger.key)
        self.alice = await self.hs.register_user("alice")

    # -- helpers -----------------------------------------------------------------------------
    async def client(self, method: str, path: str, body: Any = None) -> Any:
        code, resp = await self.hs.request(method, V3 + path, body, token=self.alice["access_token"])
        self.assertEqual(code, 200, resp)
        return resp

    async def create_room(self, **body: Any) -> str:
        body.setdefault("preset", "public_chat")
        return (await self.client("POST", "/createRoom", body))["room_id"]

    async def send(self, room_id: str, text: str) -> str:
        resp = await self.client("PUT", f"/rooms/{room_id}/send/m.room.message/{quote(text)}", {"msgtype": "m.text", "body": text})
        return resp["event_id"]

    async def fed(self, method: str, path: str, body: Any = None, expect: int = 200, server: Optional[RemoteServer] = None,
                  errcode: Optional[str] = None) -> Any:
        code, resp = await (server or self.remote).request(method, path, body)
        self.assertEqual(code, expect, resp)
        if errcode is not None:
            self.assertEqual(resp["errcode"], errcode, resp)
        if expect == 200:
            self.assertEqual(spec_problems(method, path, code, resp), [])
        return resp

    async def join(self, room_id: str, localpart: str = "bob", omit_members: bool = False) -> tuple[dict, str, dict]:
        user = f"@{localpart}:{REMOTE}"
        made = await self.fed("GET", f"{F1}/make_join/{room_id}/{user}?ver=1&ver=10&ver={self.hs.config.default_room_version}")
        event, event_id = self.remote.sign(made["event"], made["room_version"])
        query = "?omit_members=true" if omit_members else ""
        resp = await self.fed("PUT", f"{F2}/send_join/{room_id}/{event_id}{query}", event)
        return event, event_id, resp

    # -- joins -------------------------------------------------------------------------------------
    async def test_make_join_and_send_join(self) -> None:
        room_id = await self.create_room(name="Lobby")
        made = await self.fed("GET", f"{F1}/make_join/{room_id}/@bob:{REMOTE}?ver=10&ver={self.hs.config.default_room_version}")
        template = made["event"]
        self.assertEqual(made["room_version"], self.hs.config.default_room_version)
        self.assertEqual((template["type"], template["state_key"], template["sender"]), ("m.room.member", f"@bob:{REMOTE}", f"@bob:{REMOTE}"))
        self.assertEqual(template["content"], {"membership": "join"})
        self.assertTrue(template["prev_events"] and template["auth_events"] and template["depth"] > 1)
        event, event_id, resp = await self.join(room_id)
        state_types = {(e["type"], e.get("state_key")) for e in resp["state"]}
        self.assertIn(("m.room.create", ""), state_types)
        self.assertIn(("m.room.member", self.alice["user_id"]), state_types)
        self.assertNotIn(("m.room.member", f"@bob:{REMOTE}"), state_types)
        self.assertTrue(resp["auth_chain"])
        self.assertEqual((resp["members_omitted"], resp["servers_in_room"]), (False, ["test.local"]))
        self.assertNotIn("event", resp)
        members = await self.client("GET", f"/rooms/{room_id}/joined_members")
        self.assertIn(f"@bob:{REMOTE}", members["joined"])
        # The join is part of the room now: the next local event builds on it.
        message_id = await self.send(room_id, "after")
        fetched = await self.fed("GET", f"{F1}/event/{message_id}")
        self.assertIn(event_id, fetched["pdus"][0]["prev_events"])

    async def test_send_join_with_omit_members(self) -> None:
        room_id = await self.create_room(name="Big room")
        _, _, resp = await self.join(room_id, omit_members=True)
        self.assertTrue(resp["members_omitted"])
        self.assertEqual(resp["servers_in_room"], ["test.local"])
        self.assertFalse([e for e in resp["state"] if e["type"] == "m.room.member"])
        state_ids = {compute_event_id(e, get_room_version(self.hs.config.default_room_version)) for e in resp["state"]}
        chain_ids = {compute_event_id(e, get_room_version(self.hs.config.default_room_version)) for e in resp["auth_chain"]}
        self.assertFalse(state_ids & chain_ids)
        # The creator's membership is needed to authorise the state: it is in the auth chain.
        self.assertIn(("m.room.member", self.alice["user_id"]), {(e["type"], e.get("state_key")) for e in resp["auth_chain"]})

    async def test_make_join_refusals(self) -> None:
        room_id = await self.create_room()
        version = self.hs.config.default_room_version
        resp = await self.fed("GET", f"{F1}/make_join/{room_id}/@bob:{REMOTE}?ver=1", expect=400,
                              errcode="M_INCOMPATIBLE_ROOM_VERSION")
        self.assertEqual(resp["room_version"], version)
        await self.fed("GET", f"{F1}/make_join/{room_id}/@bob:{REMOTE}", expect=400, errcode="M_INCOMPATIBLE_ROOM_VERSION")
        await self.fed("GET", f"{F1}/make_join/{room_id}/@bob:elsewhere.test?ver={version}", expect=403, errcode="M_FORBIDDEN")
        await self.fed("GET", f"{F1}/make_join/!nope:test.local/@bob:{REMOTE}?ver={version}", expect=404, errcode="M_NOT_FOUND")
        private = await self.create_room(preset="private_chat")
        await self.fed("GET", f"{F1}/make_join/{private}/@bob:{REMOTE}?ver={version}", expect=403, errcode="M_FORBIDDEN")
        code, resp = await self.remote.request("GET", f"{F1}/make_join/{room_id}/@bob:{REMOTE}?ver={version}", sign=False)
        self.assertEqual((code, resp["errcode"]), (401, "M_UNAUTHORIZED"))

    async def test_rooms_we_left_are_not_served_for_joins(self) -> None:
        # Once alice (our only user) leaves, our state of the room goes stale: the joining server must ask
        # one that is still in it (404, as Synapse), for make_join and send_join alike.
        room_id = await self.create_room()
        version = self.hs.config.default_room_version
        made = await self.fed("GET", f"{F1}/make_join/{room_id}/@bob:{REMOTE}?ver={version}")
        event, event_id = self.remote.sign(made["event"], version)
        await self.client("POST", f"/rooms/{room_id}/leave", {})
        await self.fed("GET", f"{F1}/make_join/{room_id}/@bob:{REMOTE}?ver={version}", expect=404, errcode="M_NOT_FOUND")
        await self.fed("PUT", f"{F2}/send_join/{room_id}/{event_id}", event, expect=404, errcode="M_NOT_FOUND")

    async def test_send_join_refusals(self) -> None:
        room_id = await self.create_room()
        version = self.hs.config.default_room_version
        made = await self.fed("GET", f"{F1}/make_join/{room_id}/@bob:{REMOTE}?ver={version}")
        event, event_id = self.remote.sign(made["event"], version)
        # Content changed after hashing.
        tampered = dict(event, content={"membership": "join", "displayname": "Mallory"})
        tampered_id = compute_event_id(tampered, get_room_version(version))
        await self.fed("PUT", f"{F2}/send_join/{room_id}/{tampered_id}", tampered, expect=400, errcode="M_BAD_JSON")
        # Path and event disagree.
        await self.fed("PUT", f"{F2}/send_join/{room_id}/$other", event, expect=400, errcode="M_BAD_JSON")
        # Signed by a key the server does not know.
        impostor = RemoteServer(REMOTE, self.hs)
        forged, forged_id = impostor.sign(made["event"], version)
        await self.fed("PUT", f"{F2}/send_join/{room_id}/{forged_id}", forged, expect=403, errcode="M_FORBIDDEN")
        # Another server may not send @bob:remote.test's join.
        await self.fed("PUT", f"{F2}/send_join/{room_id}/{event_id}", event, expect=403, errcode="M_FORBIDDEN",
                       server=self.stranger)
        # A leave sent as a join.
        await self.fed("GET", f"{F1}/make_leave/{room_id}/@bob:{REMOTE}", expect=403, errcode="M_FORBIDDEN")
        leave_event, leave_id = self.remote.sign(dict(made["event"], content={"membership": "leave"}), version)
        await self.fed("PUT", f"{F2}/send_join/{room_id}/{leave_id}", leave_event, expect=400, errcode="M_BAD_JSON")
        members = await self.client("GET", f"/rooms/{room_id}/joined_members")
        self.assertNotIn(f"@bob:{REMOTE}", members["joined"])

    async def test_make_leave_and_send_leave(self) -> None:
        room_id = await self.create_room()
        await self.join(room_id)
        made = await self.fed("GET", f"{F1}/make_leave/{room_id}/@bob:{REMOTE}")
        self.assertEqual(made["event"]["content"], {"membership": "leave"})
        event, event_id = self.remote.sign(made["event"], made["room_version"])
        resp = await self.fed("PUT", f"{F2}/send_leave/{room_id}/{event_id}", event)
        self.assertEqual(resp, {})
        members = await self.client("GET", f"/rooms/{room_id}/joined_members")
        self.assertNotIn(f"@bob:{REMOTE}", members["joined"])
        await self.fed("GET", f"{F1}/make_leave/{room_id}/@bob:elsewhere.test", expect=403, errcode="M_FORBIDDEN")

    async def test_restricted_join_is_countersigned(self) -> None:
        space = await self.create_room()
        await self.join(space)
        room_id = await self.create_room(
            room_version="10",
            preset="private_chat",
            initial_state=[{
                "type": "m.room.join_rules", "state_key": "",
                "content": {"join_rule": "restricted", "allow": [{"type": "m.room_membership", "room_id": space}]},
            }],
        )
        made = await self.fed("GET", f"{F1}/make_join/{room_id}/@bob:{REMOTE}?ver=10")
        self.assertEqual(made["event"]["content"]["join_authorised_via_users_server"], self.alice["user_id"])
        event, event_id = self.remote.sign(made["event"], "10")
        resp = await self.fed("PUT", f"{F2}/send_join/{room_id}/{event_id}", event)
        self.assertIn("test.local", resp["event"]["signatures"])
        self.assertIn(REMOTE, resp["event"]["signatures"])
        # Somebody in none of the allowed rooms is refused.
        await self.fed("GET", f"{F1}/make_join/{room_id}/@carol:{REMOTE}?ver=10", expect=403, errcode="M_FORBIDDEN")

    # -- retrieving events ------------------------------------------------------------------------
    async def test_event_state_and_auth(self) -> None:
        room_id = await self.create_room()
        first = await self.send(room_id, "one")
        await self.join(room_id)
        resp = await self.fed("GET", f"{F1}/event/{first}")
        self.assertEqual(resp["origin"], "test.local")
        self.assertEqual(resp["pdus"][0]["content"]["body"], "one")
        state = await self.fed("GET", f"{F1}/state/{room_id}?event_id={quote(first)}")
        types = {(e["type"], e.get("state_key")) for e in state["pdus"]}
        self.assertIn(("m.room.power_levels", ""), types)
        self.assertNotIn(("m.room.member", f"@bob:{REMOTE}"), types)
        ids = await self.fed("GET", f"{F1}/state_ids/{room_id}?event_id={quote(first)}")
        self.assertEqual(len(ids["pdu_ids"]), len(state["pdus"]))
        self.assertEqual(len(ids["auth_chain_ids"]), len(state["auth_chain"]))
        auth = await self.fed("GET", f"{F1}/event_auth/{room_id}/{first}")
        self.assertEqual({e["type"] for e in auth["auth_chain"]}, {"m.room.create", "m.room.member", "m.room.power_levels"})
        # Refusals: unknown event, missing parameter, a server with nobody in the room.
        await self.fed("GET", f"{F1}/event/$unknown", expect=404, errcode="M_NOT_FOUND")
        await self.fed("GET", f"{F1}/state/{room_id}?event_id=%24unknown", expect=404, errcode="M_NOT_FOUND")
        await self.fed("GET", f"{F1}/state_ids/{room_id}", expect=400, errcode="M_MISSING_PARAM")
        await self.fed("GET", f"{F1}/event_auth/{room_id}/$unknown", expect=404, errcode="M_NOT_FOUND")
        for path in (f"/event/{first}", f"/state/{room_id}?event_id={quote(first)}",
                     f"/state_ids/{room_id}?event_id={quote(first)}", f"/event_auth/{room_id}/{first}",
                     f"/backfill/{room_id}?v={quote(first)}&limit=5"):
            await self.fed("GET", F1 + path, expect=403, errcode="M_FORBIDDEN", server=self.stranger)

    async def test_backfill_and_missing_events(self) -> None:
        room_id = await self.create_room()
        await self.join(room_id)
        sent = [await self.send(room_id, f"m{i}") for i in range(5)]
        resp = await self.fed("GET", f"{F1}/backfill/{room_id}?v={quote(sent[-1])}&limit=3")
        bodies = [p["content"].get("body") for p in resp["pdus"]]
        self.assertEqual(bodies, ["m4", "m3", "m2"])
        resp = await self.fed("GET", f"{F1}/backfill/{room_id}?v={quote(sent[-1])}&limit=100")
        self.assertEqual(resp["pdus"][-1]["type"], "m.room.create")
        await self.fed("GET", f"{F1}/backfill/{room_id}?limit=3", expect=400, errcode="M_MISSING_PARAM")
        missing = await self.fed("POST", f"{F1}/get_missing_events/{room_id}",
                                 {"earliest_events": [sent[0]], "latest_events": [sent[4]], "limit": 10})
        self.assertEqual([e["content"]["body"] for e in missing["events"]], ["m1", "m2", "m3"])
        missing = await self.fed("POST", f"{F1}/get_missing_events/{room_id}",
                                 {"earliest_events": [sent[0]], "latest_events": [sent[4]], "limit": 2})
        self.assertEqual([e["content"]["body"] for e in missing["events"]], ["m2", "m3"])
        await self.fed("POST", f"{F1}/get_missing_events/{room_id}", {"latest_events": [sent[4]]}, expect=400,
                       errcode="M_MISSING_PARAM")

    async def test_history_visibility_for_servers(self) -> None:
        room_id = await self.create_room(initial_state=[
            {"type": "m.room.history_visibility", "state_key": "", "content": {"history_visibility": "joined"}}
        ])
        hidden = await self.send(room_id, "before you came")
        await self.join(room_id)
        shown = await self.send(room_id, "after you came")
        resp = await self.fed("GET", f"{F1}/event/{hidden}")
        self.assertEqual(resp["pdus"][0]["content"], {})
        resp = await self.fed("GET", f"{F1}/event/{shown}")
        self.assertEqual(resp["pdus"][0]["content"]["body"], "after you came")
        resp = await self.fed("GET", f"{F1}/backfill/{room_id}?v={quote(shown)}&limit=10")
        by_body = [p["content"].get("body") for p in resp["pdus"] if p["type"] == "m.room.message"]
        self.assertEqual(by_body, ["after you came", None])
