"""ProfileStore and AccountDataStore (incl. tags and stream positions), on SQLite and PostgreSQL."""

from __future__ import annotations

from mxtwisted.storage.account_data import GLOBAL, AccountDataStore
from tests.storage.engines import EngineTestMixin, inlined, on_both_engines

ALICE = "@alice:test.local"
BOB = "@bob:test.local"
ROOM = "!room:test.local"
OTHER_ROOM = "!other:test.local"


@on_both_engines
class ProfileStoreTests(EngineTestMixin):
    @inlined
    async def test_fields(self) -> None:
        profiles = (await self.storage()).profiles
        self.assertEqual(await profiles.get_profile(ALICE), {})
        self.assertIsNone(await profiles.get_field(ALICE, "displayname"))
        await profiles.set_field(ALICE, "displayname", "Alice 🐇")
        await profiles.set_field(ALICE, "avatar_url", "mxc://test.local/abc")
        await profiles.set_field(ALICE, "com.example.thing", {"nested": [1, 2.5, None, True, "ü"]})
        await profiles.set_field(BOB, "displayname", "Bob")
        self.assertEqual(
            await profiles.get_profile(ALICE),
            {
                "displayname": "Alice 🐇",
                "avatar_url": "mxc://test.local/abc",
                "com.example.thing": {"nested": [1, 2.5, None, True, "ü"]},
            },
        )
        self.assertEqual(await profiles.get_field(ALICE, "com.example.thing"), {"nested": [1, 2.5, None, True, "ü"]})
        self.assertEqual(await profiles.get_profile(BOB), {"displayname": "Bob"})

    @inlined
    async def test_replace_and_delete(self) -> None:
        profiles = (await self.storage()).profiles
        await profiles.set_field(ALICE, "displayname", "one")
        await profiles.set_field(ALICE, "displayname", "two")
        self.assertEqual(await profiles.get_field(ALICE, "displayname"), "two")
        for value in (0, False, "", [], {}):
            # Falsy values are values, not deletions.
            await profiles.set_field(ALICE, "org.example.v", value)
            self.assertEqual(await profiles.get_profile(ALICE), {"displayname": "two", "org.example.v": value})
        await profiles.set_field(ALICE, "org.example.v", None)
        self.assertEqual(await profiles.get_profile(ALICE), {"displayname": "two"})
        await profiles.set_field(ALICE, "org.example.absent", None)  # deleting nothing is fine
        await profiles.delete_profile(ALICE)
        self.assertEqual(await profiles.get_profile(ALICE), {})

    @inlined
    async def test_large_values(self) -> None:
        profiles = (await self.storage()).profiles
        big = "x" * 65_000
        await profiles.set_field(ALICE, "com.example.big", big)
        self.assertEqual(await profiles.get_field(ALICE, "com.example.big"), big)


@on_both_engines
class AccountDataStoreTests(EngineTestMixin):
    @inlined
    async def test_global_and_room_data(self) -> None:
        store = (await self.storage()).account_data
        self.assertIsNone(await store.get(ALICE, "m.direct"))
        await store.put(ALICE, "m.direct", {BOB: [ROOM]})
        await store.put(ALICE, "org.example.cfg", {"scope": "global"})
        await store.put(ALICE, "org.example.cfg", {"scope": "room"}, ROOM)
        self.assertEqual(await store.get(ALICE, "m.direct"), {BOB: [ROOM]})
        self.assertEqual(await store.get(ALICE, "org.example.cfg", GLOBAL), {"scope": "global"})
        self.assertEqual(await store.get(ALICE, "org.example.cfg", ROOM), {"scope": "room"})
        self.assertIsNone(await store.get(ALICE, "org.example.cfg", OTHER_ROOM))
        self.assertIsNone(await store.get(BOB, "m.direct"))
        await store.put(ALICE, "m.direct", {})
        self.assertEqual(await store.get(ALICE, "m.direct"), {})

    @inlined
    async def test_stream_positions(self) -> None:
        store = (await self.storage()).account_data
        start = store.stream.current
        first = await store.put(ALICE, "org.example.a", {"v": 1})
        second = await store.put(ALICE, "org.example.b", {"v": 2}, ROOM)
        third = await store.put(BOB, "org.example.a", {"v": 3})
        self.assertEqual([first, second, third], [start + 1, start + 2, start + 3])
        self.assertEqual(store.stream.current, third)
        self.assertCountEqual(
            await store.get_changed(ALICE, start, third),
            [(GLOBAL, "org.example.a", {"v": 1}), (ROOM, "org.example.b", {"v": 2})],
        )
        self.assertEqual(await store.get_changed(ALICE, first, third), [(ROOM, "org.example.b", {"v": 2})])
        self.assertEqual(await store.get_changed(ALICE, start, first), [(GLOBAL, "org.example.a", {"v": 1})])
        self.assertEqual(await store.get_changed(ALICE, third, third), [])
        # Rewriting an entry moves it to the new position: sync sends the latest content once.
        fourth = await store.put(ALICE, "org.example.a", {"v": 4})
        self.assertEqual(
            await store.get_changed(ALICE, third, fourth), [(GLOBAL, "org.example.a", {"v": 4})]
        )
        self.assertEqual(await store.get_changed(ALICE, start, first), [])

    @inlined
    async def test_stream_listener(self) -> None:
        store = (await self.storage()).account_data
        seen: list[int] = []
        store.stream.add_listener(seen.append)
        position = await store.put(ALICE, "org.example.a", {})
        tag_position = await store.set_tag(ALICE, ROOM, "u.x", {})
        self.assertEqual(seen, [position, tag_position])

    @inlined
    async def test_stream_resumes_after_restart(self) -> None:
        store = (await self.storage()).account_data
        await store.put(ALICE, "org.example.a", {})
        last = await store.set_tag(ALICE, ROOM, "u.x", {})
        await store.db.close()
        reopened = (await self.storage()).account_data
        self.assertIsInstance(reopened, AccountDataStore)
        self.assertEqual(reopened.stream.current, last)
        self.assertEqual(await reopened.put(ALICE, "org.example.b", {}), last + 1)

    @inlined
    async def test_tags(self) -> None:
        store = (await self.storage()).account_data
        self.assertEqual(await store.get_tags(ALICE, ROOM), {})
        start = store.stream.current
        p1 = await store.set_tag(ALICE, ROOM, "m.favourite", {"order": 0.25})
        p2 = await store.set_tag(ALICE, ROOM, "u.Work", {})
        await store.set_tag(ALICE, OTHER_ROOM, "m.lowpriority", {"order": 1})
        await store.set_tag(BOB, ROOM, "u.bob", {})
        self.assertEqual((p1, p2), (start + 1, start + 2))
        self.assertEqual(await store.get_tags(ALICE, ROOM), {"m.favourite": {"order": 0.25}, "u.Work": {}})
        self.assertEqual(await store.get_tags(ALICE, OTHER_ROOM), {"m.lowpriority": {"order": 1}})
        self.assertEqual(await store.get_tags(BOB, ROOM), {"u.bob": {}})
        # The m.tag room account data follows the tags.
        self.assertEqual(
            await store.get(ALICE, "m.tag", ROOM), {"tags": {"m.favourite": {"order": 0.25}, "u.Work": {}}}
        )
        # Replacing and removing.
        await store.set_tag(ALICE, ROOM, "m.favourite", {"order": 0.5})
        p5 = await store.set_tag(ALICE, ROOM, "u.Work", None)
        self.assertEqual(await store.get_tags(ALICE, ROOM), {"m.favourite": {"order": 0.5}})
        self.assertEqual(await store.get(ALICE, "m.tag", ROOM), {"tags": {"m.favourite": {"order": 0.5}}})
        changed = {(room, t): c for room, t, c in await store.get_changed(ALICE, p2, p5)}
        self.assertEqual(
            changed,
            {
                (OTHER_ROOM, "m.tag"): {"tags": {"m.lowpriority": {"order": 1}}},
                (ROOM, "m.tag"): {"tags": {"m.favourite": {"order": 0.5}}},
            },
        )
        # Removing the last tag leaves an empty m.tag, so sync tells clients the tags are gone.
        await store.set_tag(ALICE, ROOM, "m.favourite", None)
        self.assertEqual(await store.get_tags(ALICE, ROOM), {})
        self.assertEqual(await store.get(ALICE, "m.tag", ROOM), {"tags": {}})

    @inlined
    async def test_unicode_tag_names(self) -> None:
        store = (await self.storage()).account_data
        tag = "u." + "ü" * 126 + "x"
        await store.set_tag(ALICE, ROOM, tag, {"order": 0})
        self.assertEqual(await store.get_tags(ALICE, ROOM), {tag: {"order": 0}})

    @inlined
    async def test_delete_all(self) -> None:
        store = (await self.storage()).account_data
        await store.put(ALICE, "m.direct", {})
        await store.put(ALICE, "org.example.cfg", {}, ROOM)
        await store.set_tag(ALICE, ROOM, "u.x", {})
        await store.put(BOB, "m.direct", {"kept": []})
        await store.delete_all(ALICE)
        self.assertIsNone(await store.get(ALICE, "m.direct"))
        self.assertIsNone(await store.get(ALICE, "org.example.cfg", ROOM))
        self.assertIsNone(await store.get(ALICE, "m.tag", ROOM))
        self.assertEqual(await store.get_tags(ALICE, ROOM), {})
        self.assertEqual(await store.get(BOB, "m.direct"), {"kept": []})
