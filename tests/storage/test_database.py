"""The transaction model, on both engines."""

from __future__ import annotations

import threading
from typing import Any

from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.python import threadable

from mxtwisted.storage import (
    Database,
    DatabaseClosedError,
    DatabaseError,
    IntegrityError,
    ReadOnlyTransactionError,
    TransactionProgrammingError,
    Txn,
)
from tests.storage.engines import EngineTestMixin, inlined, on_both_engines


async def _create_kv(txn: Txn) -> None:
    await txn.execute("CREATE TABLE kv (k TEXT NOT NULL PRIMARY KEY, v INTEGER NOT NULL)")


async def _all_kv(txn: Txn) -> list[tuple[Any, ...]]:
    return await txn.select("SELECT k, v FROM kv ORDER BY k")


class _Base(EngineTestMixin):
    async def kv_db(self, **args: Any) -> Database:
        db = await self.open_db(config=self.db_config(**args) if args else None)
        await db.run_interaction("create_kv", _create_kv)
        return db


@on_both_engines
class TransactionTests(_Base):
    @inlined
    async def test_commit(self) -> None:
        db = await self.kv_db()

        async def insert(txn: Txn, k: str, v: int) -> int:
            return await txn.execute("INSERT INTO kv (k, v) VALUES (?, ?)", (k, v))

        self.assertEqual(await db.run_interaction("insert", insert, "a", 1), 1)
        self.assertEqual(await db.run_interaction("insert", insert, k="b", v=2), 1)
        self.assertEqual(await db.run_interaction("all", _all_kv, readonly=True), [("a", 1), ("b", 2)])

    @inlined
    async def test_rollback_on_exception(self) -> None:
        db = await self.kv_db()

        async def half(txn: Txn) -> None:
            await txn.execute("INSERT INTO kv (k, v) VALUES ('a', 1)")
            await txn.execute("INSERT INTO kv (k, v) VALUES ('b', 2)")
            raise ValueError("boom")

        with self.assertRaises(ValueError):
            await db.run_interaction("half", half)
        self.assertEqual(await db.run_interaction("all", _all_kv, readonly=True), [])
        # The connection is usable afterwards.
        await db.run_interaction("ok", lambda txn: txn.execute("INSERT INTO kv VALUES ('c', 3)"))
        self.assertEqual(await db.run_interaction("all", _all_kv, readonly=True), [("c", 3)])

    @inlined
    async def test_call_after_runs_only_after_commit(self) -> None:
        db = await self.kv_db()
        calls: list[tuple[str, bool]] = []
        reads: list[Deferred[Any]] = []

        def after(tag: str) -> None:
            calls.append((tag, threadable.isInIOThread()))
            # The commit is complete: a new transaction sees the row.
            reads.append(db.run_interaction("all", _all_kv, readonly=True))

        async def insert(txn: Txn) -> str:
            txn.call_after(after, "committed")
            await txn.execute("INSERT INTO kv (k, v) VALUES ('a', 1)")
            self.assertEqual(calls, [])
            return "result"

        self.assertEqual(await db.run_interaction("insert", insert), "result")
        self.assertEqual(calls, [("committed", True)])
        self.assertEqual(await reads[0], [("a", 1)])

        async def failing(txn: Txn) -> None:
            txn.call_after(after, "rolled back")
            await txn.execute("INSERT INTO kv (k, v) VALUES ('b', 2)")
            raise KeyError("nope")

        with self.assertRaises(KeyError):
            await db.run_interaction("failing", failing)
        self.assertEqual(len(calls), 1)

    @inlined
    async def test_call_after_exception_is_logged_not_raised(self) -> None:
        db = await self.kv_db()

        def bad() -> None:
            raise RuntimeError("callback failed")

        async def insert(txn: Txn) -> int:
            txn.call_after(bad)
            return await txn.execute("INSERT INTO kv (k, v) VALUES ('a', 1)")

        self.assertEqual(await db.run_interaction("insert", insert), 1)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)  # type: ignore[attr-defined]

    @inlined
    async def test_executemany(self) -> None:
        db = await self.kv_db()
        rows = [(f"k{i:03d}", i) for i in range(250)]  # more than one PostgreSQL batch

        async def insert(txn: Txn) -> None:
            await txn.executemany("INSERT INTO kv (k, v) VALUES (?, ?);", rows)
            await txn.executemany("INSERT INTO kv (k, v) VALUES (?, ?)", [])

        await db.run_interaction("insert", insert)
        self.assertEqual(await db.run_interaction("all", _all_kv, readonly=True), rows)

        async def dup(txn: Txn) -> None:
            await txn.executemany("INSERT INTO kv (k, v) VALUES (?, ?)", [("new", 1), ("k001", 2)])

        with self.assertRaises(IntegrityError):
            await db.run_interaction("dup", dup)
        self.assertEqual(len(await db.run_interaction("all", _all_kv, readonly=True)), 250)

    @inlined
    async def test_select_one(self) -> None:
        db = await self.kv_db()

        async def go(txn: Txn) -> tuple[Any, ...]:
            await txn.executemany("INSERT INTO kv (k, v) VALUES (?, ?)", [("a", 1), ("b", 2)])
            return (
                await txn.select_one("SELECT v FROM kv WHERE k = ?", ("b",)),
                await txn.select_one("SELECT v FROM kv WHERE k = ?", ("zzz",)),
                await txn.select_one("SELECT k, v FROM kv ORDER BY k"),
                await txn.select_one("SELECT COUNT(*) FROM kv"),
            )

        self.assertEqual(await db.run_interaction("go", go), ((2,), None, ("a", 1), (2,)))

    @inlined
    async def test_integrity_error_on_unique_violation(self) -> None:
        db = await self.kv_db()

        async def insert(txn: Txn, k: str) -> None:
            await txn.execute("INSERT INTO kv (k, v) VALUES (?, 1)", (k,))

        await db.run_interaction("insert", insert, "a")
        with self.assertRaises(IntegrityError) as cm:
            await db.run_interaction("insert", insert, "a")
        self.assertIsInstance(cm.exception, DatabaseError)
        self.assertIsNotNone(cm.exception.orig)
        self.assertIs(cm.exception.__cause__, cm.exception.orig)
        if self.engine == "postgres":
            self.assertEqual(cm.exception.sqlstate, "23505")
        # NOT NULL is an integrity error too.
        with self.assertRaises(IntegrityError):
            await db.run_interaction("null", lambda txn: txn.execute("INSERT INTO kv (k, v) VALUES ('n', NULL)"))
        await db.run_interaction("insert", insert, "b")
        self.assertEqual(await db.run_interaction("all", _all_kv, readonly=True), [("a", 1), ("b", 1)])

    @inlined
    async def test_other_errors_are_database_errors(self) -> None:
        db = await self.kv_db()
        with self.assertRaises(DatabaseError) as cm:
            await db.run_interaction("bad", lambda txn: txn.select("SELECT * FROM no_such_table"))
        self.assertNotIsInstance(cm.exception, IntegrityError)

    @inlined
    async def test_swallowing_an_error_inside_a_transaction_is_refused(self) -> None:
        """PostgreSQL aborts the transaction on error; SQLite is made to agree."""
        db = await self.kv_db()

        async def swallow(txn: Txn) -> str:
            await txn.execute("INSERT INTO kv (k, v) VALUES ('a', 1)")
            try:
                await txn.execute("INSERT INTO kv (k, v) VALUES ('a', 2)")
            except IntegrityError:
                return "handled"
            return "not reached"

        with self.assertRaises(TransactionProgrammingError) as cm:
            await db.run_interaction("swallow", swallow)
        self.assertIsInstance(cm.exception.__cause__, IntegrityError)

        async def carry_on(txn: Txn) -> None:
            try:
                await txn.execute("INSERT INTO nope VALUES (1)")
            except DatabaseError:
                pass
            await txn.execute("INSERT INTO kv (k, v) VALUES ('b', 1)")

        with self.assertRaises(TransactionProgrammingError):
            await db.run_interaction("carry_on", carry_on)
        self.assertEqual(await db.run_interaction("all", _all_kv, readonly=True), [])

    @inlined
    async def test_concurrent_increments(self) -> None:
        """Read-modify-write in parallel loses no update (SQLite: one writer;
        PostgreSQL: REPEATABLE READ + retry on serialization failure)."""
        db = await self.kv_db()
        await db.run_interaction("init", lambda txn: txn.execute("INSERT INTO kv (k, v) VALUES ('n', 0)"))

        async def increment(txn: Txn) -> None:
            row = await txn.select_one("SELECT v FROM kv WHERE k = 'n'")
            assert row is not None
            await txn.execute("UPDATE kv SET v = ? WHERE k = 'n'", (row[0] + 1,))

        async def atomic_increment(txn: Txn) -> None:
            await txn.execute("UPDATE kv SET v = v + 1 WHERE k = 'n'")

        await defer.gatherResults(
            [db.run_interaction("inc", increment) for _ in range(50)]
            + [db.run_interaction("atomic_inc", atomic_increment) for _ in range(50)],
            consumeErrors=True,
        )
        self.assertEqual(await db.run_interaction("all", _all_kv, readonly=True), [("n", 100)])

    @inlined
    async def test_readonly_does_not_see_uncommitted_writes(self) -> None:
        db = await self.kv_db()
        await db.run_interaction("init", lambda txn: txn.execute("INSERT INTO kv (k, v) VALUES ('a', 1)"))
        reached: Deferred[None] = Deferred()
        resume_event = threading.Event()
        resume_d: Deferred[None] = Deferred()
        reactor = self.reactor

        async def write(txn: Txn) -> None:
            await txn.execute("UPDATE kv SET v = 2 WHERE k = 'a'")
            await txn.execute("INSERT INTO kv (k, v) VALUES ('b', 1)")
            if txn.engine.name == "sqlite":
                # We run in the writer thread: block it (not await) mid-transaction.
                reactor.callFromThread(reached.callback, None)
                resume_event.wait(30)
            else:
                reached.callback(None)
                await resume_d

        write_d = db.run_interaction("write", write)
        await reached
        try:
            # Reads go to other connections and don't queue behind the write.
            self.assertEqual(await db.run_interaction("all", _all_kv, readonly=True), [("a", 1)])
        finally:
            resume_event.set()
            resume_d.callback(None)
        await write_d
        self.assertEqual(await db.run_interaction("all", _all_kv, readonly=True), [("a", 2), ("b", 1)])

    @inlined
    async def test_readonly_refuses_writes(self) -> None:
        db = await self.kv_db()
        with self.assertRaises(ReadOnlyTransactionError):
            await db.run_interaction(
                "write", lambda txn: txn.execute("INSERT INTO kv (k, v) VALUES ('a', 1)"), readonly=True
            )
        self.assertEqual(await db.run_interaction("all", _all_kv), [])

    @inlined
    async def test_readonly_sees_one_snapshot(self) -> None:
        """All reads of a read-only transaction agree, even if a write commits in between."""
        db = await self.kv_db()
        await db.run_interaction("init", lambda txn: txn.execute("INSERT INTO kv (k, v) VALUES ('a', 1)"))
        reached: Deferred[None] = Deferred()
        resume_event = threading.Event()
        resume_d: Deferred[None] = Deferred()
        reactor = self.reactor

        async def read_twice(txn: Txn) -> tuple[Any, ...]:
            first = await txn.select("SELECT k, v FROM kv ORDER BY k")
            if txn.engine.name == "sqlite":
                reactor.callFromThread(reached.callback, None)
                resume_event.wait(30)
            else:
                reached.callback(None)
                await resume_d
            return first, await txn.select("SELECT k, v FROM kv ORDER BY k")

        read_d = db.run_interaction("read", read_twice, readonly=True)
        await reached
        try:
            await db.run_interaction("write", lambda txn: txn.execute("UPDATE kv SET v = 5"))
        finally:
            resume_event.set()
            resume_d.callback(None)
        first, second = await read_d
        self.assertEqual(first, [("a", 1)])
        self.assertEqual(second, [("a", 1)])

    @inlined
    async def test_programming_errors(self) -> None:
        db = await self.kv_db()

        def not_async(txn: Txn) -> int:
            return 1

        with self.assertRaises(TransactionProgrammingError):
            await db.run_interaction("sync", not_async)
        with self.assertRaises(TransactionProgrammingError):
            await db.run_interaction("count", lambda txn: txn.select("SELECT v FROM kv WHERE k = ?", ()))
        with self.assertRaises(TransactionProgrammingError):
            await db.run_interaction("str", lambda txn: txn.select("SELECT v FROM kv WHERE k = ?", "a"))

        leaked: list[Txn] = []

        async def leak(txn: Txn) -> None:
            leaked.append(txn)

        await db.run_interaction("leak", leak)
        with self.assertRaises(TransactionProgrammingError):
            leaked[0].execute("DELETE FROM kv")

    @inlined
    async def test_literal_percent_and_like(self) -> None:
        db = await self.kv_db()

        async def go(txn: Txn) -> tuple[Any, ...]:
            await txn.executemany("INSERT INTO kv (k, v) VALUES (?, ?)", [("50%", 1), ("5x", 2), ("a%b", 3)])
            return (
                await txn.select("SELECT k FROM kv WHERE k LIKE '5%' ORDER BY k"),
                # Both engines need an explicit ESCAPE (SQLite has no default one).
                await txn.select("SELECT k FROM kv WHERE k LIKE ? ESCAPE '\\' ORDER BY k", ("%\\%%",)),
                await txn.select_one("SELECT '100%'"),
            )

        like, escaped, literal = await db.run_interaction("go", go)
        self.assertEqual(like, [("50%",), ("5x",)])
        self.assertEqual(literal, ("100%",))
        self.assertEqual(escaped, [("50%",), ("a%b",)])

    @inlined
    async def test_types_round_trip(self) -> None:
        db = await self.open_db()

        async def go(txn: Txn) -> tuple[Any, ...] | None:
            await txn.execute("CREATE TABLE t (i BIGINT, s TEXT, b BYTEA, f DOUBLE PRECISION, n TEXT)")
            await txn.execute(
                "INSERT INTO t VALUES (?, ?, ?, ?, ?)", (2**53, "h\u00e9llo \U0001f600", b"\x00\xffbin", 1.5, None)
            )
            return await txn.select_one("SELECT i, s, b, f, n FROM t")

        row = await db.run_interaction("go", go)
        self.assertEqual(row, (2**53, "h\u00e9llo \U0001f600", b"\x00\xffbin", 1.5, None))
        assert row is not None
        self.assertIsInstance(row[2], bytes)

    @inlined
    async def test_upsert_and_in_list(self) -> None:
        db = await self.kv_db()

        async def go(txn: Txn) -> tuple[Any, ...]:
            sql = "INSERT INTO kv (k, v) VALUES (?, ?) ON CONFLICT (k) DO UPDATE SET v = excluded.v"
            await txn.executemany(sql, [("a", 1), ("b", 2), ("c", 3), ("a", 10)])
            await txn.execute("INSERT INTO kv (k, v) VALUES ('b', 99) ON CONFLICT (k) DO NOTHING")
            clause, args = txn.engine.in_list("k", ["a", "c", "zz"])
            empty_clause, empty_args = txn.engine.in_list("k", [])
            return (
                await txn.select(f"SELECT k, v FROM kv WHERE {clause} ORDER BY k", args),
                await txn.select(f"SELECT k FROM kv WHERE {empty_clause}", empty_args),
                await txn.select("SELECT k, v FROM kv ORDER BY k"),
            )

        some, none, everything = await db.run_interaction("go", go)
        self.assertEqual(some, [("a", 10), ("c", 3)])
        self.assertEqual(none, [])
        self.assertEqual(everything, [("a", 10), ("b", 2), ("c", 3)])

    @inlined
    async def test_returning(self) -> None:
        db = await self.open_db()
        if not db.engine.supports_returning:
            return

        async def go(txn: Txn) -> list[tuple[Any, ...]]:
            await txn.execute("CREATE TABLE r (id INTEGER PRIMARY KEY, name TEXT)")
            return await txn.select("INSERT INTO r (id, name) VALUES (?, ?) RETURNING id, name", (7, "x"))

        self.assertEqual(await db.run_interaction("go", go), [(7, "x")])

    @inlined
    async def test_engine(self) -> None:
        db = await self.open_db()
        self.assertEqual(db.engine_name, self.engine)
        self.assertEqual(db.engine.name, self.engine)
        self.assertTrue(db.engine.supports_upsert)
        seen: list[str] = []

        async def go(txn: Txn) -> None:
            seen.append(txn.engine.name)

        await db.run_interaction("go", go)
        self.assertEqual(seen, [self.engine])

    @inlined
    async def test_ping(self) -> None:
        db = await self.open_db()
        self.assertIsNone(await db.ping())

    @inlined
    async def test_close(self) -> None:
        db = await self.kv_db()
        events: list[str] = []

        async def insert(txn: Txn, k: str) -> int:
            return await txn.execute("INSERT INTO kv (k, v) VALUES (?, 1)", (k,))

        # close() waits for interactions already started, and refuses new ones.
        started = [db.run_interaction("insert", insert, f"k{i}").addCallback(events.append) for i in range(5)]
        closed = db.close().addCallback(lambda _: events.append("closed"))
        with self.assertRaises(DatabaseClosedError):
            await db.run_interaction("late", insert, "late")
        await defer.gatherResults(started)
        await closed
        self.assertEqual(events, [1, 1, 1, 1, 1, "closed"])
        # Idempotent.
        await db.close()
        await db.close()
