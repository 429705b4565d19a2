"""End to end with matrix-nio: two users share a room and do everything people do in one.

create (with an invite), join, talk, redact, paginate history, kick, ban — every step through nio's own
methods where it has them, against a real matrixhs over loopback.
"""

from __future__ import annotations

import asyncio
from typing import Any

from twisted.internet import threads
from twisted.trial import unittest

from tests.e2e.test_nio_accounts import check, raw_json
from tests.support.homeserver import start_homeserver

try:
    import nio
except ImportError:  # pragma: no cover - the test extra installs it
    nio = None

V3 = "/_matrix/client/v3"


async def rooms_scenario(base_url: str) -> list[str]:
    steps: list[str] = []
    alice = nio.AsyncClient(base_url, "alice")
    bob = nio.AsyncClient(base_url, "bob")
    try:
        for client, name in ((alice, "alice"), (bob, "bob")):
            registered = await client.register(name, f"{name} password")
            check(isinstance(registered, nio.RegisterResponse), f"register {name}: {registered}")
        steps.append("registered")

        created = await alice.room_create(name="Plans", topic="where to eat", invite=[bob.user_id])
        check(isinstance(created, nio.RoomCreateResponse), f"room_create: {created}")
        room_id = created.room_id
        joined = await bob.join(room_id)
        check(isinstance(joined, nio.JoinResponse), f"join: {joined}")
        members = await alice.joined_members(room_id)
        check(isinstance(members, nio.JoinedMembersResponse), f"joined_members: {members}")
        check({m.user_id for m in members.members} == {alice.user_id, bob.user_id}, f"members: {members.members}")
        steps.append("created, invited, joined")

        sent = []
        for i in range(12):
            sender = alice if i % 2 == 0 else bob
            response = await sender.room_send(room_id, "m.room.message", {"msgtype": "m.text", "body": f"message {i}"})
            check(isinstance(response, nio.RoomSendResponse), f"room_send {i}: {response}")
            sent.append(response.event_id)
        steps.append("talked")

        redacted = await bob.room_redact(room_id, sent[1], reason="typo")
        check(isinstance(redacted, nio.RoomRedactResponse), f"room_redact: {redacted}")
        status, event = await raw_json(alice, "GET", f"{V3}/rooms/{room_id}/event/{sent[1]}")
        check(status == 200 and event["content"] == {}, f"redacted event content: {status} {event}")
        check(event["unsigned"]["redacted_because"]["event_id"] == redacted.event_id, f"redacted_because: {event}")
        steps.append("redacted")

        # Paginate the whole history backwards, 5 at a time, with nio following the tokens.
        status, first = await raw_json(alice, "GET", f"{V3}/rooms/{room_id}/messages?dir=b&limit=5")
        check(status == 200, f"/messages: {first}")
        bodies = [e["content"].get("body") for e in first["chunk"] if e["type"] == "m.room.message"]
        token = first.get("end")
        while token:
            page = await alice.room_messages(room_id, token, limit=5)
            check(isinstance(page, nio.RoomMessagesResponse), f"room_messages: {page}")
            bodies += [e.body for e in page.chunk if isinstance(e, nio.RoomMessageText)]
            token = page.end if page.chunk else None
        expected = [f"message {i}" for i in reversed(range(12)) if i != 1]
        check(bodies == expected, f"history: {bodies}")
        steps.append("paginated")

        kicked = await alice.room_kick(room_id, bob.user_id, reason="out")
        check(isinstance(kicked, nio.RoomKickResponse), f"room_kick: {kicked}")
        refused = await bob.room_send(room_id, "m.room.message", {"msgtype": "m.text", "body": "still here?"})
        check(isinstance(refused, nio.RoomSendError) and refused.status_code == "M_FORBIDDEN", f"send after kick: {refused}")
        rejoined = await bob.join(room_id)
        check(isinstance(rejoined, nio.JoinError), f"rejoin an invite-only room: {rejoined}")
        steps.append("kicked")

        banned = await alice.room_ban(room_id, bob.user_id, reason="enough")
        check(isinstance(banned, nio.RoomBanResponse), f"room_ban: {banned}")
        await alice.room_invite(room_id, bob.user_id)
        status, state = await raw_json(alice, "GET", f"{V3}/rooms/{room_id}/state/m.room.member/{bob.user_id}")
        check(state.get("membership") == "ban", f"bob's membership after ban and invite attempt: {state}")
        steps.append("banned")
        return steps
    finally:
        await alice.close()
        await bob.close()


class NioRoomsTest(unittest.TestCase):
    timeout = 120

    async def test_two_users_share_a_room(self) -> None:
        if nio is None:
            raise unittest.SkipTest("matrix-nio is not installed")
        hs = await start_homeserver(
            self, bcrypt_rounds=4, enable_registration=True, enable_registration_without_verification=True,
            rc_message={"per_second": 1000, "burst_count": 1000},
        )
        steps: Any = await threads.deferToThread(asyncio.run, rooms_scenario(hs.base_url))
        self.assertEqual(
            steps, ["registered", "created, invited, joined", "talked", "redacted", "paginated", "kicked", "banned"]
        )
