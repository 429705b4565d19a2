"""The SQLite engine: one writer thread, WAL, and a few reader threads.

Why this shape:

* SQLite allows one writer at a time. Giving the single read-write
  connection its own thread means write transactions queue in memory instead
  of fighting over the file lock, so ``SQLITE_BUSY`` retries are unnecessary
  and every write transaction is serializable.
* In WAL mode readers don't block the writer nor each other, so read-only
  interactions go to a small pool of reader connections (each used by one
  thread at a time) and never wait behind a long write.
* A ``:memory:`` database exists only inside its one connection, so there
  all interactions, including read-only ones, go to the writer.

The transaction function's coroutine runs entirely inside the database
thread: every :class:`SqliteTxn` method does its work synchronously and
returns an already-completed awaitable, so one ``coro.send(None)`` runs the
function to the end. If it suspends, it awaited something else, which is a
programming error.
"""

from __future__ import annotations

import inspect
import sqlite3
import threading
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from twisted.internet.interfaces import IReactorCore, IReactorThreads
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.threadpool import ThreadPool

from mxtwisted.storage.database import (
    Database,
    DatabaseError,
    IntegrityError,
    R,
    ReadOnlyTransactionError,
    Row,
    StorageError,
    TransactionProgrammingError,
    Txn,
    TxnFunction,
    _Ready,
)
from mxtwisted.storage.engines import SqliteEngine

log = Logger()

_SYNCHRONOUS = {"OFF": 0, "NORMAL": 1, "FULL": 2, "EXTRA": 3}

#: ``database.args`` keys accepted for SQLite. ``cp_min``/``cp_max`` are
#: accepted and ignored so a Synapse-style config keeps working.
_KNOWN_ARGS = {"database", "synchronous", "busy_timeout_ms", "readers", "cp_min", "cp_max"}


def _wrap_sqlite_error(exc: BaseException) -> DatabaseError:
    if isinstance(exc, DatabaseError):
        return exc
    msg = f"{type(exc).__name__}: {exc}"
    if isinstance(exc, sqlite3.IntegrityError):
        return IntegrityError(msg, exc)
    if isinstance(exc, sqlite3.OperationalError) and "readonly database" in str(exc):
        return ReadOnlyTransactionError(msg, exc)
    return DatabaseError(msg, exc)


class SqliteTxn(Txn):
    """Txn on a sqlite3 cursor; every method completes before returning."""

    def __init__(self, desc: str, engine: SqliteEngine, conn: sqlite3.Connection) -> None:
        super().__init__(desc, engine)
        self._conn = conn
        self._cursor = conn.cursor()

    def _wrap(self, exc: BaseException) -> DatabaseError:
        return _wrap_sqlite_error(exc)

    def _execute(self, sql: str, args: Sequence[Any]) -> Awaitable[int]:
        try:
            self._cursor.execute(sql, args)
        except sqlite3.Error as e:
            raise self._failed(e) from e
        return _Ready(self._cursor.rowcount)

    def _executemany(self, sql: str, args_list: list[tuple[Any, ...]]) -> Awaitable[None]:
        try:
            self._cursor.executemany(sql, args_list)
        except sqlite3.Error as e:
            raise self._failed(e) from e
        return _Ready(None)

    def _select(self, sql: str, args: Sequence[Any]) -> Awaitable[list[Row]]:
        try:
            self._cursor.execute(sql, args)
            rows = self._cursor.fetchall()
        except sqlite3.Error as e:
            raise self._failed(e) from e
        return _Ready(rows)

    def _select_one(self, sql: str, args: Sequence[Any]) -> Awaitable[Row | None]:
        try:
            self._cursor.execute(sql, args)
            row = self._cursor.fetchone()
        except sqlite3.Error as e:
            raise self._failed(e) from e
        return _Ready(row)

    def _execute_script(self, script: str) -> Awaitable[None]:
        # sqlite3.executescript() COMMITs first, which would break
        # atomicity; run the statements one by one in our transaction.
        try:
            for statement in split_sql_script(script):
                self._cursor.execute(statement)
        except sqlite3.Error as e:
            raise self._failed(e) from e
        return _Ready(None)


def split_sql_script(script: str) -> list[str]:
    """Split an SQL script into single statements, the way SQLite parses them.

    Uses ``sqlite3.complete_statement`` so semicolons inside string literals,
    comments and ``CREATE TRIGGER ... BEGIN ...; END;`` bodies are handled.
    Fragments holding only comments/whitespace are dropped.
    """
    statements: list[str] = []
    buf = ""
    for piece in script.split(";"):
        buf += piece + ";"
        if sqlite3.complete_statement(buf):
            statements.append(buf)
            buf = ""
    statements.append(buf[:-1])  # the text after the last ';' (no ';' was there)
    return [s for s in statements if _has_code(s)]


def _has_code(statement: str) -> bool:
    """Whether a fragment contains anything but whitespace, comments and ';'."""
    i, n = 0, len(statement)
    while i < n:
        c = statement[i]
        if c.isspace() or c == ";":
            i += 1
        elif statement.startswith("--", i):
            j = statement.find("\n", i)
            i = n if j < 0 else j + 1
        elif statement.startswith("/*", i):
            j = statement.find("*/", i + 2)
            i = n if j < 0 else j + 2
        else:
            return True
    return False


def _drive(awaitable: Awaitable[R], desc: str) -> R:
    """Run a transaction coroutine to completion without an event loop."""
    it = awaitable.__await__()
    try:
        awaited = it.send(None)
    except StopIteration as e:
        return e.value  # type: ignore[no-any-return]
    close = getattr(it, "close", None)
    if close is not None:
        try:
            close()
        except RuntimeError:
            pass
    raise TransactionProgrammingError(
        f"transaction function {desc!r} awaited {awaited!r}, which did not complete immediately. On SQLite a "
        "transaction function runs inside the database thread and may only await Txn methods; do other "
        "asynchronous work before or after run_interaction."
    )


class SqliteDatabase(Database):
    """SQLite with a writer thread, WAL and reader threads."""

    engine: SqliteEngine

    def __init__(
        self,
        reactor: IReactorCore,
        path: str,
        *,
        synchronous: str = "NORMAL",
        busy_timeout_ms: int = 5000,
        readers: int = 3,
    ) -> None:
        engine = SqliteEngine()
        if engine.server_version < SqliteEngine.MIN_VERSION:
            raise StorageError(
                f"SQLite {sqlite3.sqlite_version} is too old; at least "
                f"{'.'.join(map(str, SqliteEngine.MIN_VERSION))} is needed (for ON CONFLICT upserts)"
            )
        super().__init__(reactor)
        self.engine = engine
        self.path = path
        self.in_memory = path in (":memory:", "")
        self._synchronous = synchronous
        self._busy_timeout_ms = busy_timeout_ms
        self._writer_conn: sqlite3.Connection | None = None
        self._writer_pool = ThreadPool(minthreads=1, maxthreads=1, name="sqlite-writer")
        self._reader_pool: ThreadPool | None = None
        if not self.in_memory:
            self._reader_pool = ThreadPool(minthreads=0, maxthreads=readers, name="sqlite-reader")
        # Reader connections not currently in use by a thread, and all of them
        # (for closing). At most `readers` exist since that many threads do.
        self._readers_lock = threading.Lock()
        self._idle_readers: list[sqlite3.Connection] = []
        self._all_readers: list[sqlite3.Connection] = []

    @classmethod
    async def connect(cls, reactor: IReactorCore, args: dict[str, Any]) -> SqliteDatabase:
        """Open the database described by a ``sqlite3`` config's ``args``."""
        unknown = set(args) - _KNOWN_ARGS
        if unknown:
            raise ValueError(f"unknown sqlite3 database args: {', '.join(sorted(unknown))}")
        if "database" not in args:
            raise ValueError("sqlite3 database args need 'database' (a file path, or ':memory:')")
        synchronous = str(args.get("synchronous", "NORMAL")).upper()
        if synchronous not in _SYNCHRONOUS:
            raise ValueError(f"sqlite3 'synchronous' must be one of {', '.join(_SYNCHRONOUS)}, not {synchronous!r}")
        readers = int(args.get("readers", 3))
        if readers < 1:
            raise ValueError("sqlite3 'readers' must be at least 1")
        db = cls(
            reactor,
            str(args["database"]),
            synchronous=synchronous,
            busy_timeout_ms=int(args.get("busy_timeout_ms", 5000)),
            readers=readers,
        )
        await db._start()
        return db

    async def _start(self) -> None:
        self._writer_pool.start()
        if self._reader_pool is not None:
            self._reader_pool.start()
        try:
            self._writer_conn = await deferToThreadPool(self._threads(), self._writer_pool, self._open_writer)
        except BaseException:
            await self.close()
            raise

    def _threads(self) -> IReactorThreads:
        return self.reactor  # type: ignore[return-value]

    def _open(self) -> sqlite3.Connection:
        # isolation_level=None: no implicit transactions, we BEGIN/COMMIT
        # ourselves. check_same_thread=False: a connection is only ever used
        # by one thread at a time, but not always the same thread.
        conn = sqlite3.connect(
            self.path, isolation_level=None, check_same_thread=False, timeout=self._busy_timeout_ms / 1000
        )
        conn.execute(f"PRAGMA busy_timeout = {int(self._busy_timeout_ms)}")
        return conn

    def _open_writer(self) -> sqlite3.Connection:
        try:
            conn = self._open()
        except sqlite3.Error as e:
            raise _wrap_sqlite_error(e) from e
        try:
            if not self.in_memory:
                mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
                if str(mode).lower() != "wal":
                    raise StorageError(f"could not switch {self.path} to WAL mode (got {mode!r})")
            conn.execute(f"PRAGMA synchronous = {self._synchronous}")
            conn.execute("PRAGMA foreign_keys = ON")
        except BaseException:
            conn.close()
            raise
        return conn

    def _open_reader(self) -> sqlite3.Connection:
        conn = self._open()
        conn.execute("PRAGMA query_only = ON")
        conn.execute("PRAGMA foreign_keys = ON")
        return conn

    async def _run(
        self, desc: str, func: TxnFunction[R], args: tuple[Any, ...], kwargs: dict[str, Any], readonly: bool
    ) -> tuple[R, list[tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any]]]]:
        if readonly and self._reader_pool is not None:
            return await deferToThreadPool(
                self._threads(), self._reader_pool, self._in_reader_thread, desc, func, args, kwargs
            )
        return await deferToThreadPool(
            self._threads(), self._writer_pool, self._in_writer_thread, desc, func, args, kwargs, readonly
        )

    def _in_writer_thread(
        self, desc: str, func: TxnFunction[R], args: tuple[Any, ...], kwargs: dict[str, Any], readonly: bool
    ) -> tuple[R, list[Any]]:
        conn = self._writer_conn
        if conn is None:
            raise StorageError("the SQLite writer connection is not open")
        if not readonly:
            # IMMEDIATE takes the write lock now: with a single writer this
            # never waits, except on another process using the file.
            return self._transaction(conn, "BEGIN IMMEDIATE", desc, func, args, kwargs)
        # Read-only on the writer (":memory:"): refuse writes like a reader does.
        conn.execute("PRAGMA query_only = ON")
        try:
            return self._transaction(conn, "BEGIN", desc, func, args, kwargs)
        finally:
            conn.execute("PRAGMA query_only = OFF")

    def _in_reader_thread(
        self, desc: str, func: TxnFunction[R], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[R, list[Any]]:
        with self._readers_lock:
            conn = self._idle_readers.pop() if self._idle_readers else None
        if conn is None:
            try:
                conn = self._open_reader()
            except sqlite3.Error as e:
                raise _wrap_sqlite_error(e) from e
            with self._readers_lock:
                self._all_readers.append(conn)
        try:
            # A deferred BEGIN: the snapshot is taken at the first read and
            # kept until the end, so all reads in the function agree.
            return self._transaction(conn, "BEGIN", desc, func, args, kwargs)
        finally:
            with self._readers_lock:
                self._idle_readers.append(conn)

    def _transaction(
        self,
        conn: sqlite3.Connection,
        begin: str,
        desc: str,
        func: TxnFunction[R],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> tuple[R, list[Any]]:
        txn = SqliteTxn(desc, self.engine, conn)
        try:
            conn.execute(begin)
            coro = func(txn, *args, **kwargs)
            if not inspect.isawaitable(coro):
                raise TransactionProgrammingError(
                    f"transaction function for {desc!r} must be an 'async def' function, got {func!r}"
                )
            result = txn._finish(_drive(coro, desc))
            conn.execute("COMMIT")
        except sqlite3.Error as e:
            self._rollback(conn, desc)
            raise _wrap_sqlite_error(e) from e
        except BaseException:
            self._rollback(conn, desc)
            raise
        finally:
            txn._done = True
            txn._cursor.close()
        return result, txn._after

    @staticmethod
    def _rollback(conn: sqlite3.Connection, desc: str) -> None:
        # A failed COMMIT (e.g. a deferred constraint) leaves the transaction
        # open too, hence in_transaction rather than tracking where we failed.
        if conn.in_transaction:
            try:
                conn.execute("ROLLBACK")
            except sqlite3.Error:
                log.failure("ROLLBACK of {desc} failed", desc=desc)

    async def _close(self) -> None:
        def close_readers() -> None:
            with self._readers_lock:
                conns, self._all_readers, self._idle_readers = self._all_readers, [], []
            for c in conns:
                c.close()

        def close_writer() -> None:
            conn, self._writer_conn = self._writer_conn, None
            if conn is not None:
                conn.close()  # the last close checkpoints the WAL into the main file

        try:
            if self._reader_pool is not None and self._reader_pool.started:
                await deferToThreadPool(self._threads(), self._reader_pool, close_readers)
            if self._writer_pool.started:
                await deferToThreadPool(self._threads(), self._writer_pool, close_writer)
        finally:
            for pool in (self._reader_pool, self._writer_pool):
                if pool is not None and pool.started:
                    pool.stop()
