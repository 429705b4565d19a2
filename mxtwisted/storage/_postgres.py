"""The PostgreSQL engine: txpostgres (asynchronous psycopg2), no threads.

Each transaction checks a connection out of a small pool (``cp_min`` opened
at start, grown on demand up to ``cp_max``), and runs through txpostgres'
``Connection.runInteraction``, which issues BEGIN and then COMMIT, or ROLLBACK
if the function fails. The transaction function's coroutine runs on the
reactor thread under ``Deferred.fromCoroutine``; each Txn method awaits the
Deferred of one ``cursor.execute``.

Isolation is REPEATABLE READ (set per connection), like Synapse: every
transaction sees one snapshot, and a concurrent update of a row it read or
writes makes it fail with a serialization error rather than silently lose an
update. That gives store code, written once, the same safety it has on
SQLite's single writer; the price is retries, done here with jittered
exponential backoff on SQLSTATE 40001 (serialization failure) and 40P01
(deadlock).
"""

from __future__ import annotations

import inspect
import random
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import psycopg2
import psycopg2.errorcodes
import psycopg2.extensions
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorCore, IReactorTime
from twisted.internet.task import deferLater
from twisted.logger import Logger
from txpostgres.txpostgres import Connection, Cursor, RollbackFailed

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
)
from mxtwisted.storage.engines import PostgresEngine, sqlite_to_pyformat

log = Logger()

#: SQLSTATEs after which the whole transaction is simply run again.
RETRYABLE_SQLSTATES = frozenset({psycopg2.errorcodes.SERIALIZATION_FAILURE, psycopg2.errorcodes.DEADLOCK_DETECTED})

#: Statements per round trip in :meth:`PostgresTxn.executemany`.
EXECUTEMANY_BATCH = 100


def _bytea_as_bytes(value: str | None, cur: Any) -> bytes | None:
    # psycopg2 returns bytea as memoryview; SQLite returns bytes. Make them match.
    if value is None:
        return None
    return bytes(psycopg2.BINARY(value, cur))


_BYTES = psycopg2.extensions.new_type(psycopg2.BINARY.values, "MXTWISTED_BYTES", _bytea_as_bytes)


def _wrap_pg_error(exc: BaseException) -> BaseException:
    """Wrap a psycopg2 error in our engine-neutral classes; leave others alone."""
    if isinstance(exc, RollbackFailed):
        exc = exc.originalFailure.value
    if not isinstance(exc, psycopg2.Error):
        return exc
    sqlstate = getattr(exc, "pgcode", None)
    msg = f"{type(exc).__name__}: {str(exc).strip()}"
    if isinstance(exc, psycopg2.IntegrityError):
        return IntegrityError(msg, exc, sqlstate)
    if sqlstate == psycopg2.errorcodes.READ_ONLY_SQL_TRANSACTION:
        return ReadOnlyTransactionError(msg, exc, sqlstate)
    return DatabaseError(msg, exc, sqlstate)


class PostgresTxn(Txn):
    """Txn on a txpostgres cursor: each statement is one awaited round trip."""

    def __init__(self, desc: str, engine: PostgresEngine, cursor: Cursor) -> None:
        super().__init__(desc, engine)
        self._cursor = cursor
        self._busy = False

    def _wrap(self, exc: BaseException) -> DatabaseError:
        wrapped = _wrap_pg_error(exc)
        if isinstance(wrapped, DatabaseError):
            return wrapped
        return DatabaseError(f"{type(exc).__name__}: {exc}", exc)

    async def _run(self, sql: str | bytes, args: Sequence[Any] | None) -> Any:
        if self._busy:
            # libpq runs one query per connection at a time; statements in a
            # transaction must be awaited one after the other.
            raise TransactionProgrammingError(
                f"transaction {self.desc!r}: a statement was issued while another was still running; "
                "await each Txn call before the next"
            )
        self._busy = True
        try:
            await self._cursor.execute(sql, args)
        except psycopg2.Error as e:
            raise self._failed(e) from e
        finally:
            self._busy = False
        return self._cursor

    def _execute(self, sql: str, args: Sequence[Any]) -> Awaitable[int]:
        return self._execute_async(sql, args)

    async def _execute_async(self, sql: str, args: Sequence[Any]) -> int:
        cur = await self._run(sqlite_to_pyformat(sql), tuple(args))
        return int(cur.rowcount)

    def _executemany(self, sql: str, args_list: list[tuple[Any, ...]]) -> Awaitable[None]:
        return self._executemany_async(sql, args_list)

    async def _executemany_async(self, sql: str, args_list: list[tuple[Any, ...]]) -> None:
        # psycopg2 has no executemany in async mode. Interpolate client-side
        # (exactly what psycopg2 does anyway) and send batches of statements
        # in one round trip each.
        pysql = sqlite_to_pyformat(sql).rstrip().rstrip(";")
        for start in range(0, len(args_list), EXECUTEMANY_BATCH):
            try:
                parts = [self._cursor.mogrify(pysql, a) for a in args_list[start : start + EXECUTEMANY_BATCH]]
            except psycopg2.Error as e:
                raise self._failed(e) from e
            await self._run(b";\n".join(parts), None)

    def _select(self, sql: str, args: Sequence[Any]) -> Awaitable[list[Row]]:
        return self._select_async(sql, args)

    async def _select_async(self, sql: str, args: Sequence[Any]) -> list[Row]:
        cur = await self._run(sqlite_to_pyformat(sql), tuple(args))
        return list(cur.fetchall())

    def _select_one(self, sql: str, args: Sequence[Any]) -> Awaitable[Row | None]:
        return self._select_one_async(sql, args)

    async def _select_one_async(self, sql: str, args: Sequence[Any]) -> Row | None:
        cur = await self._run(sqlite_to_pyformat(sql), tuple(args))
        row = cur.fetchone()
        return None if row is None else tuple(row)

    def _execute_script(self, script: str) -> Awaitable[None]:
        return self._execute_script_async(script)

    async def _execute_script_async(self, script: str) -> None:
        # No arguments: psycopg2 sends the text as is, and the server runs a
        # multi-statement simple query inside our open transaction.
        await self._run(script, None)


class _Pool:
    """A small pool of txpostgres connections, grown lazily from cp_min to cp_max.

    (txpostgres' own ConnectionPool has a fixed size and uses the global
    reactor; this one takes ours, grows on demand, and replaces connections
    that broke.)
    """

    def __init__(
        self,
        reactor: IReactorCore,
        connect_kwargs: dict[str, Any],
        cp_min: int,
        cp_max: int,
        setup: Callable[[Connection], Awaitable[None]],
    ) -> None:
        self._reactor = reactor
        self._connect_kwargs = connect_kwargs
        self.cp_min = cp_min
        self.cp_max = cp_max
        self._setup = setup
        self._idle: list[Connection] = []
        self._all: set[Connection] = set()
        self._opening = 0
        self._waiters: deque[Deferred[Connection]] = deque()

    @property
    def size(self) -> int:
        return len(self._all) + self._opening

    async def start(self) -> None:
        # Open at least one now, so bad credentials fail start-up, not the
        # first request.
        for _ in range(max(1, self.cp_min)):
            self._idle.append(await self._open())

    async def _open(self) -> Connection:
        self._opening += 1
        try:
            conn = Connection(reactor=self._reactor)
            try:
                await conn.connect(**self._connect_kwargs)
                await self._setup(conn)
            except BaseException as e:
                # Stop txpostgres polling the failed connection (it would
                # otherwise stay registered with the reactor and log the
                # error again from doRead).
                _close_quietly(conn)
                if isinstance(e, psycopg2.Error):
                    raise _wrap_pg_error(e) from e
                raise
        except BaseException:
            self._opening -= 1
            # There is room again: don't leave waiters hanging on a pool
            # that may have no connection left to release.
            self._reactor.callLater(0, self._open_for_waiter)  # type: ignore[attr-defined]
            raise
        self._opening -= 1
        self._all.add(conn)
        return conn

    def _open_for_waiter(self) -> None:
        """Open a connection for the longest waiter, if there is room for one."""
        if self._waiters and self.size < self.cp_max:
            waiter = self._waiters.popleft()
            Deferred.fromCoroutine(self._open()).chainDeferred(waiter)

    async def acquire(self) -> Connection:
        if self._idle:
            return self._idle.pop()
        if self.size < self.cp_max:
            return await self._open()
        d: Deferred[Connection] = Deferred()
        self._waiters.append(d)
        return await d

    def release(self, conn: Connection, broken: bool = False) -> None:
        if broken:
            self._discard(conn)
            self._open_for_waiter()
        elif self._waiters:
            self._waiters.popleft().callback(conn)
        else:
            self._idle.append(conn)

    def _discard(self, conn: Connection) -> None:
        self._all.discard(conn)
        _close_quietly(conn)

    def close(self) -> None:
        for d in list(self._waiters):
            d.errback(StorageError("the PostgreSQL connection pool is closed"))
        self._waiters.clear()
        for conn in list(self._all):
            self._discard(conn)
        self._idle.clear()


def _close_quietly(conn: Connection) -> None:
    try:
        if conn.pollable() is not None:
            conn.close()
    except Exception:
        log.failure("Error closing a PostgreSQL connection")


def _is_broken(conn: Connection, exc: BaseException) -> bool:
    if isinstance(exc, RollbackFailed):
        return True
    try:
        return bool(conn.pollable() is None or conn.pollable().closed)
    except Exception:
        return True


class PostgresDatabase(Database):
    """PostgreSQL through a pool of txpostgres connections."""

    engine: PostgresEngine

    def __init__(
        self,
        reactor: IReactorCore,
        connect_kwargs: dict[str, Any],
        *,
        cp_min: int = 1,
        cp_max: int = 5,
        max_retries: int = 10,
        retry_base_delay: float = 0.005,
        retry_max_delay: float = 1.0,
    ) -> None:
        if not 0 <= cp_min <= cp_max or cp_max < 1:
            raise ValueError(f"need 0 <= cp_min <= cp_max and cp_max >= 1, got cp_min={cp_min} cp_max={cp_max}")
        super().__init__(reactor)
        self.engine = PostgresEngine()
        self.max_retries = max_retries
        self.retry_base_delay = retry_base_delay
        self.retry_max_delay = retry_max_delay
        self._pool = _Pool(reactor, connect_kwargs, cp_min, cp_max, self._setup_connection)

    @classmethod
    async def connect(cls, reactor: IReactorCore, args: dict[str, Any]) -> PostgresDatabase:
        """Connect with a ``psycopg2`` config's ``args``.

        ``cp_min``/``cp_max`` size the pool; ``dbname`` is accepted for
        ``database``; other ``cp_*`` keys (adbapi options in Synapse configs)
        are ignored; everything else is passed to libpq as a connection
        parameter (``sslmode``, ``application_name``, ...).
        """
        kwargs = dict(args)
        cp_min = int(kwargs.pop("cp_min", 1))
        cp_max = int(kwargs.pop("cp_max", max(5, cp_min)))
        for key in [k for k in kwargs if k.startswith("cp_")]:
            log.warn("Ignoring unsupported database arg {key}", key=key)
            del kwargs[key]
        if "dbname" in kwargs:
            kwargs["database"] = kwargs.pop("dbname")
        kwargs = {k: v for k, v in kwargs.items() if v is not None}
        db = cls(reactor, kwargs, cp_min=cp_min, cp_max=cp_max)
        try:
            await db._pool.start()
        except BaseException:
            await db.close()
            raise
        return db

    async def _setup_connection(self, conn: Connection) -> None:
        psycopg2.extensions.register_type(_BYTES, conn.pollable())
        rows = await conn.runQuery("SELECT current_setting('server_version_num'), current_setting('server_encoding')")
        version_num, encoding = int(rows[0][0]), rows[0][1]
        self.engine = PostgresEngine(version_num)
        if self.engine.server_version < PostgresEngine.MIN_VERSION:
            raise StorageError(
                f"PostgreSQL {'.'.join(map(str, self.engine.server_version))} is too old; "
                f"at least {PostgresEngine.MIN_VERSION[0]} is needed"
            )
        if encoding.upper() not in ("UTF8", "UTF-8"):
            raise StorageError(
                f"the PostgreSQL database uses encoding {encoding}; create it with ENCODING 'UTF8' "
                "(e.g. CREATE DATABASE ... ENCODING 'UTF8' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0)"
            )
        await conn.runOperation(
            "SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL REPEATABLE READ; SET client_encoding = 'UTF8'"
        )

    async def _run(
        self, desc: str, func: TxnFunction[R], args: tuple[Any, ...], kwargs: dict[str, Any], readonly: bool
    ) -> tuple[R, list[tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any]]]]:
        attempt = 0
        while True:
            conn = await self._pool.acquire()
            txns: list[PostgresTxn] = []
            broken = False
            try:
                result = await conn.runInteraction(self._interaction, txns, desc, func, args, kwargs, readonly)
                return result, txns[0]._after
            except Exception as e:
                broken = _is_broken(conn, e)
                err = _wrap_pg_error(e)
                if broken and not txns and attempt < self.max_retries and not self._closed:
                    # The connection was dead before the transaction function
                    # ran anything (e.g. the server restarted while it was
                    # idle): nothing happened, so just use another one.
                    attempt += 1
                    delay = 0.0
                    log.info("Transaction {desc}: connection lost before it started, retrying", desc=desc)
                elif (
                    isinstance(err, DatabaseError)
                    and err.sqlstate in RETRYABLE_SQLSTATES
                    and attempt < self.max_retries
                    and not self._closed
                ):
                    attempt += 1
                    # Full jitter: spreads the contenders out so they stop colliding.
                    delay = random.uniform(0, min(self.retry_max_delay, self.retry_base_delay * 2**attempt))
                    log.info(
                        "Transaction {desc} failed ({sqlstate}), retry {attempt} in {delay:.3f}s",
                        desc=desc, sqlstate=err.sqlstate, attempt=attempt, delay=delay,
                    )  # fmt: skip
                else:
                    if err is e:
                        raise
                    raise err from e
            finally:
                for txn in txns:
                    txn._done = True
                self._pool.release(conn, broken)
            if delay:
                clock: IReactorTime = self.reactor  # type: ignore[assignment]
                await deferLater(clock, delay, lambda: None)

    def _interaction(
        self,
        cursor: Cursor,
        txns: list[PostgresTxn],
        desc: str,
        func: TxnFunction[R],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        readonly: bool,
    ) -> Deferred[R]:
        return Deferred.fromCoroutine(self._interaction_body(cursor, txns, desc, func, args, kwargs, readonly))

    async def _interaction_body(
        self,
        cursor: Cursor,
        txns: list[PostgresTxn],
        desc: str,
        func: TxnFunction[R],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        readonly: bool,
    ) -> R:
        if readonly:
            await cursor.execute("SET TRANSACTION READ ONLY")
        txn = PostgresTxn(desc, self.engine, cursor)
        txns.append(txn)  # from here on, the function has (maybe) done something
        coro = func(txn, *args, **kwargs)
        if not inspect.isawaitable(coro):
            raise TransactionProgrammingError(
                f"transaction function for {desc!r} must be an 'async def' function, got {func!r}"
            )
        result: R = txn._finish(await coro)
        txn._done = True  # nothing may run between here and COMMIT
        return result

    async def _close(self) -> None:
        self._pool.close()
