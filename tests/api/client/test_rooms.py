"""Rooms over real HTTP: create, send, state, history, membership, refusals."""

from twisted.trial.unittest import TestCase

from tests.support.homeserver import postgres_database, start_homeserver

V3 = "/_matrix/client/v3"


class RoomTests(TestCase):
    def database(self):
        return {"name": "sqlite3", "args": {"database": "homeserver.db"}}

    async def setUp(self):
        self.hs = await start_homeserver(
            self, bcrypt_rounds=4, rc_message={"per_second": 1000, "burst_count": 1000}, database=self.database()
        )
        self.alice = await self.hs.register_user("alice")
        self.bob = await self.hs.register_user("bob")

    async def req(self, method, path, body=None, who=None):
        token = (who or self.alice)["access_token"]
        return await self.hs.request(method, V3 + path, body, token=token)

    async def create(self, body=None, who=None):
        code, resp = await self.req("POST", "/createRoom", body or {}, who)
        self.assertEqual(code, 200, resp)
        return resp["room_id"]

    async def test_create_send_and_read_history(self):
        room_id = await self.create({"name": "Test room", "topic": "things"})
        code, resp = await self.req("PUT", f"/rooms/{room_id}/send/m.room.message/t1", {"msgtype": "m.text", "body": "hi"})
        self.assertEqual(code, 200, resp)
        event_id = resp["event_id"]
        code, resp = await self.req("GET", f"/rooms/{room_id}/messages?dir=b&limit=5")
        self.assertEqual(code, 200, resp)
        first = resp["chunk"][0]
        self.assertEqual(first["event_id"], event_id)
        self.assertEqual(first["content"], {"msgtype": "m.text", "body": "hi"})
        self.assertEqual(first["unsigned"]["transaction_id"], "t1")
        for key in ("hashes", "signatures", "auth_events", "prev_events", "depth"):
            self.assertNotIn(key, first)
        code, name = await self.req("GET", f"/rooms/{room_id}/state/m.room.name")
        self.assertEqual((code, name), (200, {"name": "Test room"}))
        code, state = await self.req("GET", f"/rooms/{room_id}/state")
        types = {e["type"] for e in state}
        self.assertTrue({"m.room.create", "m.room.member", "m.room.power_levels", "m.room.join_rules",
                         "m.room.history_visibility", "m.room.name", "m.room.topic"} <= types)

    async def test_txn_id_is_idempotent(self):
        room_id = await self.create()
        _, a = await self.req("PUT", f"/rooms/{room_id}/send/m.room.message/same", {"body": "x", "msgtype": "m.text"})
        _, b = await self.req("PUT", f"/rooms/{room_id}/send/m.room.message/same", {"body": "x", "msgtype": "m.text"})
        self.assertEqual(a["event_id"], b["event_id"])
        _, resp = await self.req("GET", f"/rooms/{room_id}/messages?dir=b&limit=50")
        self.assertEqual(sum(1 for e in resp["chunk"] if e["type"] == "m.room.message"), 1)

    async def test_non_member_cannot_send_or_read(self):
        room_id = await self.create()
        code, resp = await self.req("PUT", f"/rooms/{room_id}/send/m.room.message/t", {"body": "x"}, who=self.bob)
        self.assertEqual((code, resp["errcode"]), (403, "M_FORBIDDEN"))
        code, resp = await self.req("GET", f"/rooms/{room_id}/messages", who=self.bob)
        self.assertEqual((code, resp["errcode"]), (403, "M_FORBIDDEN"))

    async def test_unknown_room_is_404(self):
        code, resp = await self.req("PUT", "/rooms/!nope:test.local/send/m.room.message/t", {"body": "x"})
        self.assertEqual((code, resp["errcode"]), (404, "M_NOT_FOUND"))

    async def test_public_room_join_and_alias(self):
        code, resp = await self.req("POST", "/createRoom", {"preset": "public_chat", "room_alias_name": "lobby"})
        self.assertEqual(code, 200, resp)
        self.assertEqual(resp["room_alias"], "#lobby:test.local")
        room_id = resp["room_id"]
        code, resp = await self.req("POST", "/join/%23lobby:test.local", {}, who=self.bob)
        self.assertEqual((code, resp), (200, {"room_id": room_id}))
        code, resp = await self.req("GET", f"/rooms/{room_id}/joined_members")
        self.assertEqual(set(resp["joined"]), {self.alice["user_id"], self.bob["user_id"]})
        code, resp = await self.req("GET", "/joined_rooms", who=self.bob)
        self.assertEqual(resp["joined_rooms"], [room_id])

    async def test_private_room_needs_invite(self):
        room_id = await self.create({"preset": "private_chat"})
        code, resp = await self.req("POST", f"/rooms/{room_id}/join", {}, who=self.bob)
        self.assertEqual((code, resp["errcode"]), (403, "M_FORBIDDEN"))
        code, resp = await self.req("POST", f"/rooms/{room_id}/invite", {"user_id": self.bob["user_id"]})
        self.assertEqual(code, 200, resp)
        code, resp = await self.req("POST", f"/rooms/{room_id}/join", {}, who=self.bob)
        self.assertEqual(code, 200, resp)
        code, resp = await self.req("PUT", f"/rooms/{room_id}/send/m.room.message/t", {"body": "hey"}, who=self.bob)
        self.assertEqual(code, 200, resp)

    async def test_history_visibility_joined(self):
        room_id = await self.create({"preset": "public_chat", "initial_state": [
            {"type": "m.room.history_visibility", "state_key": "", "content": {"history_visibility": "joined"}}]})
        await self.req("PUT", f"/rooms/{room_id}/send/m.room.message/t1", {"body": "before"})
        await self.req("POST", f"/rooms/{room_id}/join", {}, who=self.bob)
        await self.req("PUT", f"/rooms/{room_id}/send/m.room.message/t2", {"body": "after"})
        _, resp = await self.req("GET", f"/rooms/{room_id}/messages?dir=b&limit=50", who=self.bob)
        bodies = [e["content"].get("body") for e in resp["chunk"] if e["type"] == "m.room.message"]
        self.assertEqual(bodies, ["after"])

    async def test_pagination_tokens(self):
        room_id = await self.create()
        for i in range(7):
            await self.req("PUT", f"/rooms/{room_id}/send/m.room.message/p{i}", {"body": str(i)})
        seen = []
        token = None
        for _ in range(10):
            path = f"/rooms/{room_id}/messages?dir=b&limit=3" + (f"&from={token}" if token else "")
            _, resp = await self.req("GET", path)
            seen += [e["content"].get("body") for e in resp["chunk"] if e["type"] == "m.room.message"]
            token = resp.get("end")
            if token is None:
                break
        self.assertEqual(seen, [str(i) for i in reversed(range(7))])

    async def test_room_version_12(self):
        room_id = await self.create({"room_version": "12"})
        self.assertNotIn(":", room_id)
        code, resp = await self.req("PUT", f"/rooms/{room_id}/send/m.room.message/t", {"body": "v12"})
        self.assertEqual(code, 200, resp)
        code, resp = await self.req("GET", f"/rooms/{room_id}/state/m.room.create")
        self.assertEqual(resp["room_version"], "12")

    async def test_every_room_version(self):
        for version in [str(n) for n in range(1, 13)]:
            room_id = await self.create({"room_version": version, "preset": "public_chat"})
            code, resp = await self.req("POST", f"/rooms/{room_id}/join", {}, who=self.bob)
            self.assertEqual(code, 200, (version, resp))
            code, resp = await self.req("PUT", f"/rooms/{room_id}/send/m.room.message/v{version}", {"body": version}, who=self.bob)
            self.assertEqual(code, 200, (version, resp))

    async def test_profile_change_becomes_member_events(self):
        room_a = await self.create()
        room_b = await self.create()
        code, resp = await self.req("PUT", f"/profile/{self.alice['user_id']}/displayname", {"displayname": "Alice A."})
        self.assertEqual(code, 200, resp)
        for room_id in (room_a, room_b):
            code, member = await self.req("GET", f"/rooms/{room_id}/state/m.room.member/{self.alice['user_id']}")
            self.assertEqual(member, {"membership": "join", "displayname": "Alice A."})

    async def test_bad_requests(self):
        code, resp = await self.req("POST", "/createRoom", {"room_version": "99"})
        self.assertEqual((code, resp["errcode"]), (400, "M_UNSUPPORTED_ROOM_VERSION"))
        # Found by fuzzing: wrong types must be 400s, never 500s.
        for body in ({"preset": {}}, {"visibility": []}, {"room_version": 10}):
            code, resp = await self.req("POST", "/createRoom", body)
            self.assertEqual(code, 400, (body, resp))
        room = await self.create()
        code, resp = await self.hs.request(
            "GET", f"/_matrix/client/v1/rooms/{room}/timestamp_to_event?dir=b&ts=174761406930865646206976",
            token=self.alice["access_token"],
        )
        self.assertEqual((code, resp["errcode"]), (400, "M_INVALID_PARAM"))
        code, resp = await self.req("GET", f"/rooms/{room}/joined_members")
        self.assertNotIn(None, resp["joined"][self.alice["user_id"]].values())
        room_id = await self.create()
        code, resp = await self.hs.request("PUT", f"{V3}/rooms/{room_id}/send/m.room.message/t", raw=b"[1]",
                                           token=self.alice["access_token"])
        self.assertEqual((code, resp["errcode"]), (400, "M_BAD_JSON"))
        code, resp = await self.req("PUT", f"/rooms/{room_id}/state/m.room.power_levels", {"users": "nope"})
        self.assertEqual(code, 403)


class RoomTestsPostgres(RoomTests):
    """The same, with the server on PostgreSQL."""

    def database(self):
        return postgres_database(self)
