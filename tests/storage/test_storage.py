"""IStorage / SqlStorage and server-wide facts, on both engines."""

from __future__ import annotations

from twisted.trial import unittest
from zope.interface.verify import verifyClass, verifyObject

from mxtwisted.storage import ServerNameMismatchError, check_server_name, connect_database
from mxtwisted.storage.interfaces import IStorage
from mxtwisted.storage.sql import SqlStorage
from tests.storage.engines import EngineTestMixin, inlined, on_both_engines


@on_both_engines
class StorageTests(EngineTestMixin):
    @inlined
    async def test_provides_istorage(self) -> None:
        storage = await self.storage()
        self.assertTrue(verifyObject(IStorage, storage))
        self.assertTrue(verifyClass(IStorage, SqlStorage))
        self.assertEqual(storage.engine_name, self.engine)

    @inlined
    async def test_ping(self) -> None:
        storage = await self.storage()
        self.assertIsNone(await storage.ping())

    @inlined
    async def test_server_info(self) -> None:
        storage = await self.storage()
        self.assertIsNone(await storage.get_server_info("nothing"))
        await storage.set_server_info("k", "v1")
        self.assertEqual(await storage.get_server_info("k"), "v1")
        await storage.set_server_info("k", "v2")
        self.assertEqual(await storage.get_server_info("k"), "v2")

    @inlined
    async def test_server_name_recorded_then_enforced(self) -> None:
        storage = await self.storage()
        await storage.check_server_name("example.org")
        self.assertEqual(await storage.get_server_info("server_name"), "example.org")
        await storage.check_server_name("example.org")
        await storage.close()

        # A restart with the same name is fine, another name is refused.
        storage = await self.storage()
        await storage.check_server_name("example.org")
        with self.assertRaises(ServerNameMismatchError) as cm:
            await storage.check_server_name("other.example")
        message = str(cm.exception)
        self.assertIn("'example.org'", message)
        self.assertIn("'other.example'", message)
        self.assertEqual(await storage.get_server_info("server_name"), "example.org")

    @inlined
    async def test_check_server_name_function(self) -> None:
        storage = await self.storage()
        await check_server_name(storage.db, "a.example")
        with self.assertRaises(ServerNameMismatchError):
            await check_server_name(storage.db, "b.example")

    @inlined
    async def test_close_is_idempotent(self) -> None:
        storage = await self.storage()
        await storage.close()
        await storage.close()


class ConfigTests(unittest.TestCase):
    @inlined
    async def test_unknown_engine(self) -> None:
        from twisted.internet import reactor

        with self.assertRaises(ValueError):
            await connect_database(reactor, {"name": "mysql", "args": {}})
