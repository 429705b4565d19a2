"""The engine-neutral core of the storage layer: ``Database``, ``Txn``, errors.

The transaction model
=====================

Store code is written once, as ``async def`` *transaction functions* whose
first argument is a :class:`Txn`::

    async def _get_user(txn: Txn, user_id: str) -> tuple | None:
        return await txn.select_one("SELECT name, created_ts FROM users WHERE name = ?", (user_id,))

    row = await db.run_interaction("get_user", _get_user, user_id, readonly=True)

**The one rule: a transaction function awaits nothing but Txn methods.** On
SQLite the whole coroutine is driven to completion inside the database thread
(each Txn method returns an already-completed awaitable), so awaiting anything
else -- a Deferred, an HTTP request, a sleep -- cannot work there and raises
:class:`TransactionProgrammingError`. Do that work before or after
``run_interaction`` instead. On PostgreSQL the coroutine runs on the reactor
thread and each statement really suspends; the rule keeps both engines
equivalent and transactions short.

Other consequences worth knowing:

* A transaction function may run more than once (PostgreSQL retries on
  serialization failure and deadlock), so it must not have side effects
  outside the database. Use :meth:`Txn.call_after` for those: the callbacks run
  on the reactor thread only after a successful commit.
* A failed statement aborts the transaction on PostgreSQL, so catching a
  database error *inside* a transaction function and carrying on is refused on
  both engines (:class:`TransactionProgrammingError`). Catch errors around
  ``run_interaction``, or avoid them (``INSERT ... ON CONFLICT DO NOTHING``).
* SQL uses ``?`` placeholders only; a literal ``?`` must never appear in SQL
  text (pass it as an argument). See :func:`mxtwisted.storage.engines.sqlite_to_pyformat`.
"""

from __future__ import annotations

import itertools
from collections.abc import Awaitable, Callable, Generator, Iterable, Sequence
from typing import Any, TypeVar

from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorCore
from twisted.internet.task import deferLater
from twisted.logger import Logger

from mxtwisted.storage.engines import Engine

log = Logger()

R = TypeVar("R")
Row = tuple[Any, ...]
TxnFunction = Callable[..., Awaitable[R]]


class StorageError(Exception):
    """Base class for every error raised by the storage layer."""


class DatabaseError(StorageError):
    """An error reported by the database engine, in an engine-neutral wrapper.

    ``orig`` is the driver's exception (``sqlite3.Error`` or
    ``psycopg2.Error``), also chained as ``__cause__``; ``sqlstate`` is the
    SQLSTATE code on PostgreSQL (``None`` on SQLite).
    """

    def __init__(self, message: str, orig: BaseException | None = None, sqlstate: str | None = None) -> None:
        super().__init__(message)
        self.orig = orig
        self.sqlstate = sqlstate


class IntegrityError(DatabaseError):
    """A constraint was violated (unique, foreign key, not null, check).

    Catch this around ``run_interaction`` to handle e.g. a duplicate insert
    portably on both engines.
    """


class ReadOnlyTransactionError(DatabaseError):
    """A ``readonly=True`` interaction tried to write."""


class TransactionProgrammingError(StorageError):
    """A transaction function broke the rules of the transaction model."""


class DatabaseClosedError(StorageError):
    """The database was used after ``close()``."""


class _Ready:
    """An awaitable that is already complete: ``await`` never suspends.

    This is what SQLite's Txn methods return, which is what lets a transaction
    coroutine be run to completion with a single ``coro.send(None)``.
    """

    __slots__ = ("_value",)

    def __init__(self, value: Any) -> None:
        self._value = value

    def __await__(self) -> Generator[Any, None, Any]:
        return self._value
        yield  # pragma: no cover - makes this a generator that never yields


#: Values of one ``IN (...)`` list per statement in :meth:`Txn.select_in`.
IN_CHUNK = 200


class Txn:
    """One database transaction, as seen by a transaction function.

    Every statement method returns an awaitable; await it before issuing the
    next statement (statements inside one transaction are sequential).
    """

    #: The engine's dialect object: ``txn.engine.name`` is ``"sqlite"`` or
    #: ``"postgres"``; see :class:`mxtwisted.storage.engines.Engine`.
    engine: Engine

    def __init__(self, desc: str, engine: Engine) -> None:
        self.desc = desc
        self.engine = engine
        self._after: list[tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any]]] = []
        self._error: BaseException | None = None
        self._done = False

    # -- public API ------------------------------------------------------

    def execute(self, sql: str, args: Sequence[Any] = ()) -> Awaitable[int]:
        """Run one statement; the awaitable gives the affected row count."""
        self._check(sql, args)
        return self._execute(sql, args)

    def executemany(self, sql: str, seq_of_args: Iterable[Sequence[Any]]) -> Awaitable[None]:
        """Run one statement once per argument tuple (batched where the engine allows)."""
        self._check(sql, None)
        args_list = [tuple(a) for a in seq_of_args]
        n = sql.count("?")
        for a in args_list:
            if len(a) != n:
                raise TransactionProgrammingError(f"executemany: SQL has {n} placeholders but got arguments {a!r}")
        return self._executemany(sql, args_list)

    def select(self, sql: str, args: Sequence[Any] = ()) -> Awaitable[list[Row]]:
        """Run a query; the awaitable gives all rows as a list of tuples."""
        self._check(sql, args)
        return self._select(sql, args)

    async def select_in(
        self,
        sql: str,
        values: Sequence[Any],
        before: Sequence[Any] = (),
        after: Sequence[Any] = (),
        chunk: int = IN_CHUNK,
    ) -> list[Row]:
        """Rows of ``sql`` for many values of an ``IN`` list: ``{in}`` in ``sql`` becomes the placeholders of
        at most ``chunk`` values per statement (engines limit a statement's parameters), between the
        ``before`` and ``after`` arguments. The rows of every chunk, in chunk order."""
        rows: list[Row] = []
        for i in range(0, len(values), chunk):
            part = list(values[i : i + chunk])
            rows.extend(await self.select(sql.replace("{in}", ",".join("?" * len(part))), [*before, *part, *after]))
        return rows

    def select_one(self, sql: str, args: Sequence[Any] = ()) -> Awaitable[Row | None]:
        """Run a query; the awaitable gives the first row, or None if there is none.

        Further rows are ignored; add ``LIMIT 1`` when more than one could match.
        """
        self._check(sql, args)
        return self._select_one(sql, args)

    def execute_script(self, script: str) -> Awaitable[None]:
        """Run a multi-statement SQL script verbatim, inside this transaction.

        Meant for schema migrations: no placeholder conversion and no
        arguments. Unlike ``sqlite3.executescript`` this does not commit.
        """
        self._check(None, None)
        return self._execute_script(script)

    def call_after(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        """Call ``fn(*args, **kwargs)`` on the reactor thread after a successful commit.

        Not called at all if the transaction rolls back; if the transaction is
        retried only the callbacks registered by the attempt that committed
        run. Exceptions from ``fn`` are logged, not propagated: the data is
        committed by then.
        """
        self._after.append((fn, args, kwargs))

    # -- engine implementations ------------------------------------------

    def _execute(self, sql: str, args: Sequence[Any]) -> Awaitable[int]:
        raise NotImplementedError

    def _executemany(self, sql: str, args_list: list[tuple[Any, ...]]) -> Awaitable[None]:
        raise NotImplementedError

    def _select(self, sql: str, args: Sequence[Any]) -> Awaitable[list[Row]]:
        raise NotImplementedError

    def _select_one(self, sql: str, args: Sequence[Any]) -> Awaitable[Row | None]:
        raise NotImplementedError

    def _execute_script(self, script: str) -> Awaitable[None]:
        raise NotImplementedError

    # -- helpers shared by the engines -------------------------------------

    def _check(self, sql: str | None, args: Sequence[Any] | None) -> None:
        """Refuse statements the transaction model forbids, the same way on both engines."""
        if self._done:
            raise TransactionProgrammingError(f"transaction {self.desc!r} is already finished; Txn used after the fact")
        if self._error is not None:
            raise TransactionProgrammingError(
                f"transaction {self.desc!r}: a previous statement failed ({self._error!r}); the transaction is "
                "aborted (PostgreSQL refuses further statements), so let the error propagate and handle it "
                "outside run_interaction"
            ) from self._error
        if sql is not None and args is not None:
            if isinstance(args, (str, bytes)):
                raise TransactionProgrammingError(f"SQL arguments must be a sequence, not {type(args).__name__}")
            n = sql.count("?")
            if n != len(args):
                raise TransactionProgrammingError(f"SQL has {n} '?' placeholders but {len(args)} arguments: {sql!r}")

    def _failed(self, exc: BaseException) -> DatabaseError:
        """Record that a statement failed (aborting the txn) and return the wrapped error."""
        wrapped = self._wrap(exc)
        self._error = wrapped
        return wrapped

    def _wrap(self, exc: BaseException) -> DatabaseError:
        raise NotImplementedError

    def _finish(self, result: Any) -> Any:
        """Called when the function returned normally, before COMMIT."""
        if self._error is not None:
            raise TransactionProgrammingError(
                f"transaction function {self.desc!r} caught a database error ({self._error!r}) and returned "
                "normally; a failed statement aborts the transaction on PostgreSQL, so nothing would be "
                "committed. Let the error propagate and handle it outside run_interaction, or avoid it "
                "(e.g. INSERT ... ON CONFLICT DO NOTHING)"
            ) from self._error
        return result


class Database:
    """A connection (pool) to one database; runs transaction functions.

    Not instantiated directly: use :func:`mxtwisted.storage.open_database`
    (which also runs migrations) or :func:`mxtwisted.storage.connect_database`.
    """

    engine: Engine

    def __init__(self, reactor: IReactorCore) -> None:
        self.reactor = reactor
        self._closed = False
        self._close_d: Deferred[None] | None = None
        self._in_flight = 0
        self._idle_waiters: list[Deferred[None]] = []
        self._txn_ids = itertools.count(1)
        # If the application stops the reactor without closing us, close on
        # the way down so threads/connections don't keep the process alive.
        self._shutting_down = False
        self._trigger = reactor.addSystemEventTrigger("before", "shutdown", self._on_reactor_shutdown)

    @property
    def engine_name(self) -> str:
        """``"sqlite"`` or ``"postgres"``."""
        return self.engine.name

    def run_interaction(
        self, desc: str, func: TxnFunction[R], /, *args: Any, readonly: bool = False, **kwargs: Any
    ) -> Deferred[R]:
        """Run ``await func(txn, *args, **kwargs)`` in a transaction.

        Commits when ``func`` returns, rolls back when it raises (the
        exception is propagated, driver errors wrapped as
        :class:`DatabaseError`). With ``readonly=True`` the transaction may
        not write, and on SQLite it runs on a reader connection so it does not
        queue behind writes. ``desc`` names the transaction in logs and errors.

        Returns a Deferred (awaitable) firing with ``func``'s result, after
        any :meth:`Txn.call_after` callbacks have run.
        """
        if self._closed:
            return defer.fail(DatabaseClosedError(f"database is closed (running {desc!r})"))
        return Deferred.fromCoroutine(self._run_interaction(desc, func, args, kwargs, readonly))

    async def _run_interaction(
        self, desc: str, func: TxnFunction[R], args: tuple[Any, ...], kwargs: dict[str, Any], readonly: bool
    ) -> R:
        self._in_flight += 1
        try:
            result, after = await self._run(f"{desc}-{next(self._txn_ids)}", func, args, kwargs, readonly)
        finally:
            self._in_flight -= 1
            if self._in_flight == 0 and self._idle_waiters:
                waiters, self._idle_waiters = self._idle_waiters, []
                for d in waiters:
                    d.callback(None)
        for fn, a, kw in after:
            try:
                r = fn(*a, **kw)
                if isinstance(r, Deferred):
                    r.addErrback(lambda f: log.failure("call_after callback for {desc} failed", f, desc=desc))
            except Exception:
                log.failure("call_after callback for {desc} failed", desc=desc)
        return result

    async def _run(
        self, desc: str, func: TxnFunction[R], args: tuple[Any, ...], kwargs: dict[str, Any], readonly: bool
    ) -> tuple[R, list[tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any]]]]:
        """Engine-specific: run the transaction, return (result, after-commit callbacks)."""
        raise NotImplementedError

    def ping(self) -> Deferred[None]:
        """Run a trivial query; fires with None, or fails if the database is unusable."""

        async def _ping(txn: Txn) -> None:
            await txn.select_one("SELECT 1")

        return self.run_interaction("ping", _ping, readonly=True)

    def close(self) -> Deferred[None]:
        """Wait for running interactions, then shut down threads and connections.

        Idempotent; every call returns a Deferred firing when closing is done.
        It never fails (errors while closing are logged). New interactions
        are refused from the moment this is called.
        """
        if self._close_d is None:
            self._closed = True
            if not self._shutting_down:
                try:
                    self.reactor.removeSystemEventTrigger(self._trigger)
                except (ValueError, KeyError):
                    pass
            self._close_d = Deferred.fromCoroutine(self._close_when_idle())
        d: Deferred[None] = Deferred()

        def fan_out(result: None) -> None:
            # Each caller gets its own Deferred; the shared one keeps its
            # result for later callers.
            d.callback(None)
            return result

        self._close_d.addCallback(fan_out)
        return d

    async def _close_when_idle(self) -> None:
        if self._in_flight:
            d: Deferred[None] = Deferred()
            self._idle_waiters.append(d)
            await d
            # Let the last interactions deliver their results before we go on.
            await deferLater(self.reactor, 0, lambda: None)  # type: ignore[arg-type]
        try:
            await self._close()
        except Exception:
            # Closing is best effort (we are shutting down); never fail it.
            log.failure("Error while closing the {engine} database", engine=self.engine_name)

    def _on_reactor_shutdown(self) -> Deferred[None]:
        self._shutting_down = True
        return self.close()

    async def _close(self) -> None:
        """Engine-specific: release threads and connections."""
        raise NotImplementedError
