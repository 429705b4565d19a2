"""SQLite-specific behaviour: threads, pragmas, :memory:, durability."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import threading
from typing import Any

from twisted.internet.defer import Deferred
from twisted.trial import unittest

import mxtwisted
from mxtwisted.storage import (
    DatabaseClosedError,
    DatabaseError,
    ReadOnlyTransactionError,
    TransactionProgrammingError,
    Txn,
    connect_database,
)
from mxtwisted.storage._sqlite import split_sql_script
from tests.storage.engines import EngineTestMixin, inlined, on_engines

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(mxtwisted.__file__)))


async def _pragmas(txn: Txn) -> tuple[Any, ...]:
    return tuple(
        [
            (await txn.select_one(f"PRAGMA {name}") or (None,))[0]
            for name in ("journal_mode", "synchronous", "foreign_keys", "busy_timeout")
        ]
    )


def _pool_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if "sqlite-writer" in t.name or "sqlite-reader" in t.name]


@on_engines("sqlite")
class SqliteTests(EngineTestMixin):
    @inlined
    async def test_pragmas(self) -> None:
        db = await self.open_db()
        self.assertEqual(await db.run_interaction("pragmas", _pragmas), ("wal", 1, 1, 5000))
        self.assertEqual((await db.run_interaction("pragmas", _pragmas, readonly=True))[2:], (1, 5000))
        await db.close()
        db = await self.open_db(config=self.db_config(synchronous="full", busy_timeout_ms=1234))
        self.assertEqual(await db.run_interaction("pragmas", _pragmas), ("wal", 2, 1, 1234))

    @inlined
    async def test_bad_args(self) -> None:
        for args in ({"synchronous": "SOMETIMES"}, {"readers": 0}, {"databse": "typo"}):
            with self.assertRaises(ValueError, msg=str(args)):
                await connect_database(self.reactor, self.db_config(**args))
        with self.assertRaises(ValueError):
            await connect_database(self.reactor, {"name": "sqlite3", "args": {}})
        # Synapse-style pool sizes are accepted and ignored.
        db = await self.connect(config=self.db_config(cp_min=5, cp_max=10))
        await db.ping()

    @inlined
    async def test_awaiting_something_else_is_a_programming_error(self) -> None:
        db = await self.open_db()
        await db.run_interaction("create", lambda txn: txn.execute("CREATE TABLE t (x INTEGER)"))

        async def bad(txn: Txn) -> None:
            await txn.execute("INSERT INTO t VALUES (1)")
            await Deferred()  # never fires: would suspend

        with self.assertRaises(TransactionProgrammingError) as cm:
            await db.run_interaction("bad", bad)
        self.assertIn("may only await Txn methods", str(cm.exception))
        self.assertEqual(await db.run_interaction("read", lambda txn: txn.select("SELECT x FROM t")), [])

    @inlined
    async def test_close_stops_threads(self) -> None:
        before = _pool_threads()
        db = await self.open_db()
        await db.ping()
        await db.run_interaction("w", lambda txn: txn.execute("CREATE TABLE t (x INTEGER)"))
        self.assertGreater(len(_pool_threads()), len(before))
        await db.close()
        self.assertEqual(_pool_threads(), before)
        with self.assertRaises(DatabaseClosedError):
            await db.ping()

    @inlined
    async def test_open_failure_leaves_no_threads(self) -> None:
        before = _pool_threads()
        missing = os.path.join(self.sqlite_path + "-missing-dir", "homeserver.db")
        with self.assertRaises(DatabaseError):
            await connect_database(self.reactor, self.db_config(database=missing))
        self.assertEqual(_pool_threads(), before)

    @inlined
    async def test_durable_after_sigkill(self) -> None:
        """A committed write survives the process being killed (WAL, synchronous=NORMAL)."""
        script = (
            "import sys\n"
            "from twisted.internet import defer, task\n"
            "from mxtwisted.storage import open_database\n"
            "async def main(reactor):\n"
            "    db = await open_database(reactor, {'name': 'sqlite3', 'args': {'database': sys.argv[1]}})\n"
            "    await db.run_interaction('c', lambda t: t.execute('CREATE TABLE t (i INTEGER PRIMARY KEY, s TEXT)'))\n"
            "    for i in range(20):\n"
            "        await db.run_interaction('i', lambda t, i: t.execute('INSERT INTO t VALUES (?, ?)', (i, 'x')), i)\n"
            "    print('committed', flush=True)\n"
            "    await defer.Deferred()\n"
            "task.react(lambda r: defer.ensureDeferred(main(r)))\n"
        )
        env = dict(os.environ, PYTHONPATH=REPO_ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
        proc = subprocess.Popen(
            [sys.executable, "-c", script, self.sqlite_path], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env
        )
        try:
            assert proc.stdout is not None
            ready, _, _ = select.select([proc.stdout], [], [], 60)
            line = proc.stdout.readline() if ready else b""
            self.assertEqual(line.strip(), b"committed", proc.stderr.read() if proc.poll() is not None else b"")
            # The data is in the WAL, not yet checkpointed: recovery is what we test.
            self.assertGreater(os.path.getsize(self.sqlite_path + "-wal"), 0)
        finally:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            proc.stdout.close()  # type: ignore[union-attr]
            proc.stderr.close()  # type: ignore[union-attr]
        self.assertEqual(proc.returncode, -signal.SIGKILL)

        db = await self.open_db()
        rows = await db.run_interaction("read", lambda txn: txn.select("SELECT i FROM t ORDER BY i"), readonly=True)
        self.assertEqual([r[0] for r in rows], list(range(20)))


class MemoryDatabaseTests(unittest.TestCase):
    """``:memory:`` exists only in the writer connection, so everything goes there."""

    @inlined
    async def test_memory_database(self) -> None:
        from twisted.internet import reactor

        from mxtwisted.storage import open_database

        db = await open_database(reactor, {"name": "sqlite3", "args": {"database": ":memory:"}})
        self.addCleanup(db.close)
        self.assertEqual(db.engine_name, "sqlite")
        await db.run_interaction("c", lambda txn: txn.execute("CREATE TABLE t (x INTEGER)"))
        await db.run_interaction("i", lambda txn: txn.execute("INSERT INTO t VALUES (1)"))
        rows = await db.run_interaction("r", lambda txn: txn.select("SELECT x FROM t"), readonly=True)
        self.assertEqual(rows, [(1,)])
        with self.assertRaises(ReadOnlyTransactionError):
            await db.run_interaction("w", lambda txn: txn.execute("INSERT INTO t VALUES (2)"), readonly=True)
        # query_only was switched off again for the next write.
        await db.run_interaction("i", lambda txn: txn.execute("INSERT INTO t VALUES (3)"))
        rows = await db.run_interaction("r", lambda txn: txn.select("SELECT x FROM t ORDER BY x"), readonly=True)
        self.assertEqual(rows, [(1,), (3,)])
        # Migrations ran: the (empty) server_info table exists.
        self.assertIsNone(await db.run_interaction("s", lambda txn: txn.select_one("SELECT value FROM server_info")))


class SplitScriptTests(unittest.TestCase):
    def test_split(self) -> None:
        script = """
        -- leading comment; with semicolon
        CREATE TABLE a (x TEXT);
        INSERT INTO a VALUES ('semi;colon');   /* trailing; comment */
        CREATE TRIGGER tr AFTER INSERT ON a BEGIN
            INSERT INTO a VALUES ('from trigger;');
            DELETE FROM a WHERE x = 'nothing';
        END;
        INSERT INTO a VALUES ('no final semicolon')
        """
        parts = split_sql_script(script)
        self.assertEqual(len(parts), 4, parts)
        self.assertIn("CREATE TABLE", parts[0])
        self.assertIn("semi;colon", parts[1])
        self.assertIn("END;", parts[2])
        self.assertIn("no final semicolon", parts[3])

    def test_only_comments(self) -> None:
        self.assertEqual(split_sql_script("-- nothing\n/* at; all */\n;\n"), [])
