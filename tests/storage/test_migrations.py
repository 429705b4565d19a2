"""Schema migrations, on both engines."""

from __future__ import annotations

import os
from typing import Any

from twisted.trial import unittest

from mxtwisted.storage import Database, DatabaseError, MigrationError, SchemaTooNewError, Txn
from mxtwisted.storage.migrations import code_schema_version, get_schema_version, load_migrations, run_migrations
from tests.storage.engines import EngineTestMixin, inlined, on_both_engines

M1 = "CREATE TABLE a (id INTEGER NOT NULL PRIMARY KEY, note TEXT);\n"
# Depends on 0001; a ';' inside a literal and comments must not confuse splitting.
M2 = """
-- comment; with a semicolon
ALTER TABLE a ADD COLUMN extra TEXT;
INSERT INTO a (id, note) VALUES (1, 'one; two');  /* block; comment */
"""
M3_SQLITE = "INSERT INTO a (id, note) VALUES (3, 'sqlite variant')"  # no trailing ';'
M3_POSTGRES = "INSERT INTO a (id, note) VALUES (3, 'postgres variant');"
M3_COMMON = "INSERT INTO a (id, note) VALUES (3, 'common; must not be used');"


def write_schema(directory: str, files: dict[str, str]) -> str:
    os.makedirs(directory, exist_ok=True)
    for name, sql in files.items():
        with open(os.path.join(directory, name), "w", encoding="utf-8") as f:
            f.write(sql)
    return directory


async def _rows(txn: Txn) -> list[tuple[Any, ...]]:
    return await txn.select("SELECT id, note FROM a ORDER BY id")


async def _versions(txn: Txn) -> list[tuple[Any, ...]]:
    return await txn.select("SELECT version, name FROM schema_version ORDER BY version")


async def _table_exists(txn: Txn, name: str) -> bool:
    if txn.engine.name == "sqlite":
        row = await txn.select_one("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (name,))
    else:
        row = await txn.select_one("SELECT 1 FROM information_schema.tables WHERE table_name = ?", (name,))
    return row is not None


@on_both_engines
class MigrationTests(EngineTestMixin):
    def schema(self, files: dict[str, str]) -> str:
        return write_schema(self.mktemp(), files)

    async def versions(self, db: Database) -> list[int]:
        return [v for v, _ in await db.run_interaction("versions", _versions, readonly=True)]

    @inlined
    async def test_apply_in_order_with_engine_variants(self) -> None:
        schema = self.schema(
            {
                "0001_create_a.sql": M1,
                "0002_more.sql": M2,
                "0003_variant.sql": M3_COMMON,
                "0003_variant.sqlite.sql": M3_SQLITE,
                "0003_variant.postgres.sql": M3_POSTGRES,
                "README.txt": "not a migration",
            }
        )
        db = await self.open_db(schema)
        self.assertEqual(await db.run_interaction("v", _versions), [(1, "create_a"), (2, "more"), (3, "variant")])
        self.assertEqual(await db.run_interaction("rows", _rows), [(1, "one; two"), (3, f"{self.engine} variant")])
        self.assertEqual(await get_schema_version(db), 3)

    @inlined
    async def test_idempotent_on_reopen_and_incremental(self) -> None:
        files = {"0001_create_a.sql": M1, "0002_more.sql": M2}
        first = await self.open_db(self.schema(files))
        await first.close()

        again = await self.open_db(self.schema(files))
        self.assertEqual(await run_migrations(again, self.schema(files)), [])
        self.assertEqual(await again.run_interaction("rows", _rows), [(1, "one; two")])
        await again.close()

        files["0003_next.sql"] = "INSERT INTO a (id, note) VALUES (4, 'four');"
        later = await self.open_db(self.schema(files))
        self.assertEqual(await self.versions(later), [1, 2, 3])
        self.assertEqual(await later.run_interaction("rows", _rows), [(1, "one; two"), (4, "four")])

    @inlined
    async def test_failing_migration_leaves_nothing_half_applied(self) -> None:
        good = {"0001_create_a.sql": M1}
        db = await self.open_db(self.schema(good))
        await db.close()

        bad = {
            **good,
            "0002_ok.sql": "INSERT INTO a (id, note) VALUES (2, 'from 0002');",
            "0003_broken.sql": "CREATE TABLE b (x INTEGER);\nINSERT INTO a (id, note) VALUES (3, 'x');\n"
            "INSERT INTO no_such_table VALUES (1);\n",
        }
        with self.assertRaises(MigrationError) as cm:
            await self.open_db(self.schema(bad))
        self.assertIn("0003_broken", str(cm.exception))
        self.assertIn("stays at schema version 2", str(cm.exception))
        self.assertIsInstance(cm.exception.__cause__, DatabaseError)

        db = await self.connect()
        # 0002 went in (its own transaction); nothing of 0003 did.
        self.assertEqual(await self.versions(db), [1, 2])
        self.assertFalse(await db.run_interaction("exists", _table_exists, "b"))
        self.assertEqual(await db.run_interaction("rows", _rows), [(2, "from 0002")])

        # Fixed, it applies.
        fixed = {**bad, "0003_broken.sql": "CREATE TABLE b (x INTEGER);"}
        self.assertEqual(await run_migrations(db, self.schema(fixed)), [3])
        self.assertTrue(await db.run_interaction("exists", _table_exists, "b"))

    @inlined
    async def test_too_new_schema_is_refused(self) -> None:
        files = {"0001_create_a.sql": M1, "0002_more.sql": M2, "0003_next.sql": "SELECT 1;"}
        db = await self.open_db(self.schema(files))
        await db.close()
        del files["0003_next.sql"]
        with self.assertRaises(SchemaTooNewError) as cm:
            await self.open_db(self.schema(files))
        self.assertEqual((cm.exception.db_version, cm.exception.code_version), (3, 2))
        self.assertIn("version 3", str(cm.exception))
        self.assertIn("up to 2", str(cm.exception))
        # The refused database is untouched.
        db = await self.connect()
        self.assertEqual(await self.versions(db), [1, 2, 3])

    @inlined
    async def test_engine_only_migration_is_a_recorded_no_op_elsewhere(self) -> None:
        other = "postgres" if self.engine == "sqlite" else "sqlite"
        files = {
            "0001_create_a.sql": M1,
            f"0002_only_{other}.{other}.sql": "THIS IS NOT SQL;",
            f"0003_only_{self.engine}.{self.engine}.sql": "INSERT INTO a (id, note) VALUES (9, 'mine');",
        }
        db = await self.open_db(self.schema(files))
        self.assertEqual(await self.versions(db), [1, 2, 3])
        self.assertEqual(await db.run_interaction("rows", _rows), [(9, "mine")])

    @inlined
    async def test_missing_older_migration_is_refused(self) -> None:
        files = {"0001_create_a.sql": M1, "0003_later.sql": "SELECT 1;"}
        db = await self.open_db(self.schema(files))
        await db.close()
        files["0002_added_late.sql"] = "SELECT 1;"
        with self.assertRaises(MigrationError) as cm:
            await self.open_db(self.schema(files))
        self.assertIn("0002_added_late", str(cm.exception))

    @inlined
    async def test_shipped_schema(self) -> None:
        db = await self.open_db()
        self.assertEqual(await get_schema_version(db), code_schema_version())
        self.assertTrue(await db.run_interaction("exists", _table_exists, "server_info"))


class LoadMigrationsTests(unittest.TestCase):
    def test_shipped_migrations_are_consistent(self) -> None:
        migrations = load_migrations()
        self.assertEqual(migrations[0].version, 1)
        self.assertEqual(migrations[0].name, "initial")
        versions = [m.version for m in migrations]
        self.assertEqual(versions, sorted(set(versions)))
        for m in migrations:
            self.assertTrue(m.sql_for("sqlite") is not None or m.sql_for("postgres") is not None)

    def test_misnamed_file(self) -> None:
        for bad in ("1_short.sql", "0001-dash.sql", "0001_Upper.sql", "0001_x.mysql.sql"):
            d = write_schema(self.mktemp(), {"0001_ok.sql": "SELECT 1;", bad: "SELECT 1;"})
            with self.assertRaises(MigrationError, msg=bad):
                load_migrations(d)

    def test_two_descriptions_for_one_version(self) -> None:
        d = write_schema(self.mktemp(), {"0001_one.sql": "SELECT 1;", "0001_other.postgres.sql": "SELECT 1;"})
        with self.assertRaises(MigrationError):
            load_migrations(d)

    def test_empty(self) -> None:
        d = write_schema(self.mktemp(), {})
        with self.assertRaises(MigrationError):
            load_migrations(d)

    def test_variants(self) -> None:
        d = write_schema(
            self.mktemp(),
            {"0001_a.sql": "common", "0001_a.postgres.sql": "pg", "0002_b.sqlite.sql": "lite"},
        )
        m1, m2 = load_migrations(d)
        self.assertEqual((m1.sql_for("sqlite"), m1.sql_for("postgres")), ("common", "pg"))
        self.assertEqual((m2.sql_for("sqlite"), m2.sql_for("postgres")), ("lite", None))
        self.assertEqual(m1.file_for("postgres"), "0001_a.postgres.sql")
