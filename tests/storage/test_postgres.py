"""PostgreSQL-specific behaviour: pool, retries, broken connections, config."""

from __future__ import annotations

from typing import Any

import psycopg2
from twisted.internet import defer
from twisted.internet.defer import Deferred

from mxtwisted.storage import DatabaseError, IntegrityError, Txn, connect_database
from mxtwisted.storage._postgres import PostgresDatabase
from tests.storage.engines import EngineTestMixin, inlined, on_engines

RAISE_SERIALIZATION_FAILURE = "DO $$ BEGIN RAISE EXCEPTION 'simulated' USING ERRCODE = '40001'; END $$"


def _txpostgres_readers(reactor: Any) -> list[Any]:
    from txpostgres.txpostgres import Connection

    return [r for r in reactor.getReaders() if isinstance(r, Connection)]


@on_engines("postgres")
class PostgresTests(EngineTestMixin):
    async def pg(self, **args: Any) -> PostgresDatabase:
        db = await self.open_db(config=self.db_config(**args))
        assert isinstance(db, PostgresDatabase)
        return db

    @inlined
    async def test_pool_grows_to_cp_max_only(self) -> None:
        db = await self.pg(cp_min=2, cp_max=3)
        self.assertEqual(db._pool.size, 2)
        gate: Deferred[None] = Deferred()
        running = 0
        peak = 0

        async def hold(txn: Txn) -> int:
            nonlocal running, peak
            running += 1
            peak = max(peak, running)
            row = await txn.select_one("SELECT pg_backend_pid()")
            await gate
            running -= 1
            assert row is not None
            return int(row[0])

        ds = [db.run_interaction("hold", hold) for _ in range(7)]
        await _sleep(self.reactor, 0.3)
        self.assertEqual(peak, 3)
        self.assertEqual(db._pool.size, 3)
        gate.callback(None)
        pids = await defer.gatherResults(ds)
        self.assertEqual(len(set(pids)), 3)

    @inlined
    async def test_isolation_and_read_only(self) -> None:
        db = await self.pg()

        async def settings(txn: Txn) -> tuple[Any, ...]:
            iso = await txn.select_one("SHOW transaction_isolation")
            ro = await txn.select_one("SHOW transaction_read_only")
            assert iso is not None and ro is not None
            return iso[0], ro[0]

        self.assertEqual(await db.run_interaction("rw", settings), ("repeatable read", "off"))
        self.assertEqual(await db.run_interaction("ro", settings, readonly=True), ("repeatable read", "on"))

    @inlined
    async def test_retry_on_serialization_failure(self) -> None:
        db = await self.pg()
        attempts: list[int] = []
        after: list[int] = []

        async def flaky(txn: Txn) -> str:
            attempts.append(len(attempts) + 1)
            txn.call_after(after.append, len(attempts))
            await txn.execute("CREATE TABLE IF NOT EXISTS t (x INTEGER)")
            await txn.execute("INSERT INTO t VALUES (?)", (len(attempts),))
            if len(attempts) < 3:
                await txn.execute(RAISE_SERIALIZATION_FAILURE)
            return "ok"

        self.assertEqual(await db.run_interaction("flaky", flaky), "ok")
        self.assertEqual(attempts, [1, 2, 3])
        self.assertEqual(after, [3])  # only the attempt that committed
        rows = await db.run_interaction("read", lambda txn: txn.select("SELECT x FROM t"))
        self.assertEqual(rows, [(3,)])

    @inlined
    async def test_retries_are_bounded(self) -> None:
        db = await self.pg()
        db.max_retries = 2
        attempts = 0

        async def always(txn: Txn) -> None:
            nonlocal attempts
            attempts += 1
            await txn.execute(RAISE_SERIALIZATION_FAILURE)

        with self.assertRaises(DatabaseError) as cm:
            await db.run_interaction("always", always)
        self.assertEqual(cm.exception.sqlstate, "40001")
        self.assertEqual(attempts, 3)

    @inlined
    async def test_other_errors_are_not_retried(self) -> None:
        db = await self.pg()
        attempts = 0

        async def dup(txn: Txn) -> None:
            nonlocal attempts
            attempts += 1
            await txn.execute("CREATE TEMPORARY TABLE u (x INTEGER PRIMARY KEY)")
            await txn.executemany("INSERT INTO u VALUES (?)", [(1,), (1,)])

        with self.assertRaises(IntegrityError):
            await db.run_interaction("dup", dup)
        self.assertEqual(attempts, 1)

    @inlined
    async def test_broken_connection_is_replaced(self) -> None:
        db = await self.pg(cp_min=1, cp_max=1)

        async def suicide(txn: Txn) -> None:
            await txn.select("SELECT pg_terminate_backend(pg_backend_pid())")

        with self.assertRaises(DatabaseError):
            await db.run_interaction("suicide", suicide)
        # txpostgres logs that it could not ROLLBACK on the dead connection.
        self.flushLoggedErrors(psycopg2.InterfaceError)  # type: ignore[attr-defined]
        # Callers already queued, and later ones, get a fresh connection.
        self.assertIsNone(await db.ping())
        self.assertEqual(await defer.gatherResults([db.ping() for _ in range(3)]), [None] * 3)
        self.assertEqual(len(_txpostgres_readers(self.reactor)), 1)

    @inlined
    async def test_idle_connection_killed_by_server_is_replaced(self) -> None:
        """E.g. a server restart: the next transaction transparently uses a new connection."""
        db = await self.pg(cp_min=1, cp_max=1)
        row = await db.run_interaction("pid", lambda txn: txn.select_one("SELECT pg_backend_pid()"))
        assert row is not None
        admin = psycopg2.connect(**self.pg_args)
        try:
            admin.autocommit = True
            with admin.cursor() as cur:
                cur.execute("SELECT pg_terminate_backend(%s)", (row[0],))
        finally:
            admin.close()
        await _sleep(self.reactor, 0.2)  # let the reactor notice the closed socket
        new = await db.run_interaction("pid", lambda txn: txn.select_one("SELECT pg_backend_pid()"))
        assert new is not None
        self.assertNotEqual(new[0], row[0])
        # txpostgres' reader logged the server's FATAL message when the socket closed.
        self.flushLoggedErrors(psycopg2.OperationalError)  # type: ignore[attr-defined]

    @inlined
    async def test_waiters_are_not_stranded_when_reconnecting_fails(self) -> None:
        db = await self.pg(cp_min=1, cp_max=1)
        gate: Deferred[None] = Deferred()

        async def hold_then_die(txn: Txn) -> None:
            await gate
            await txn.select("SELECT pg_terminate_backend(pg_backend_pid())")

        first = db.run_interaction("die", hold_then_die)
        waiting = [db.ping() for _ in range(3)]
        # Make reconnecting impossible, then let the connection die.
        db._pool._connect_kwargs = {**db._pool._connect_kwargs, "database": "no_such_database_here"}
        gate.callback(None)
        with self.assertRaises(DatabaseError):
            await first
        for d in waiting:
            with self.assertRaises(DatabaseError):
                await d
        self.flushLoggedErrors(psycopg2.InterfaceError)  # type: ignore[attr-defined]

    @inlined
    async def test_config_args(self) -> None:
        args = dict(self.pg_args)
        args["dbname"] = args.pop("database")
        db = await self.connect(
            config={"name": "psycopg", "args": {**args, "cp_min": 0, "cp_max": 2, "cp_reconnect": True}}
        )
        self.assertEqual(db.engine_name, "postgres")
        self.assertEqual(await db.run_interaction("db", lambda txn: txn.select_one("SELECT current_database()")),
                         (self.pg_args["database"],))  # fmt: skip
        self.assertEqual(
            await db.run_interaction("app", lambda txn: txn.select_one("SHOW application_name")),
            ("",),
        )
        db2 = await self.connect(config=self.db_config(application_name="matrixhs-test"))
        self.assertEqual(
            await db2.run_interaction("app", lambda txn: txn.select_one("SHOW application_name")),
            ("matrixhs-test",),
        )

    @inlined
    async def test_connect_failure_leaves_nothing_behind(self) -> None:
        readers = _txpostgres_readers(self.reactor)
        with self.assertRaises(DatabaseError):
            await connect_database(self.reactor, self.db_config(database="no_such_database_here"))
        with self.assertRaises(DatabaseError):
            await connect_database(self.reactor, self.db_config(not_a_libpq_option="x"))
        self.assertEqual(_txpostgres_readers(self.reactor), readers)

    @inlined
    async def test_close_removes_connections_from_reactor(self) -> None:
        before = len(_txpostgres_readers(self.reactor))
        db = await self.pg(cp_min=3, cp_max=3)
        self.assertEqual(len(_txpostgres_readers(self.reactor)), before + 3)
        await db.close()
        self.assertEqual(len(_txpostgres_readers(self.reactor)), before)


def _sleep(reactor: Any, seconds: float) -> Deferred[None]:
    from twisted.internet.task import deferLater

    return deferLater(reactor, seconds, lambda: None)
