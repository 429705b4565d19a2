"""Run storage test classes on both engines.

Decorate a plain (non-TestCase) class with :func:`on_both_engines`; it adds
``<Name>_sqlite`` and ``<Name>_postgres`` TestCase classes to the defining
module, which is where trial finds them. Tests use the real reactor and
return Deferreds (``async def`` test methods are wrapped with
:func:`inlined`).

SQLite tests get a fresh temp-file database; PostgreSQL tests a fresh
database on the server described in :mod:`tests.support.postgres` (skipped
with an explanation if there is none).
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from twisted.internet import reactor as _global_reactor
from twisted.internet.defer import Deferred
from twisted.trial import unittest

from mxtwisted.storage import Database, connect_database, open_database
from mxtwisted.storage.migrations import SchemaDir
from mxtwisted.storage.sql import SqlStorage, open_storage
from tests.support import postgres

C = TypeVar("C", bound=type)

ENGINES = ("sqlite", "postgres")


def inlined(f: Callable[..., Coroutine[Any, Any, Any]]) -> Callable[..., Deferred[Any]]:
    """Make an ``async def`` test method return a Deferred, as trial expects."""

    @functools.wraps(f)
    def wrapper(*args: Any, **kwargs: Any) -> Deferred[Any]:
        return Deferred.fromCoroutine(f(*args, **kwargs))

    return wrapper


class EngineTestMixin:
    """What every engine test gets: a database config and helpers to open it."""

    engine: str
    reactor: Any = _global_reactor

    # provided by TestCase
    addCleanup: Callable[..., None]
    mktemp: Callable[[], str]

    def db_config(self, **args: Any) -> dict[str, Any]:
        """The homeserver.yaml ``database`` section for this test's database."""
        raise NotImplementedError

    async def connect(self, *, config: dict[str, Any] | None = None) -> Database:
        """Connect without migrating; closed automatically at the end of the test."""
        db = await connect_database(self.reactor, config or self.db_config())
        self.addCleanup(db.close)
        return db

    async def open_db(self, schema_dir: SchemaDir | None = None, *, config: dict[str, Any] | None = None) -> Database:
        """Connect and migrate (to ``schema_dir``, default: the shipped schema)."""
        db = await open_database(self.reactor, config or self.db_config(), schema_dir=schema_dir)
        self.addCleanup(db.close)
        return db

    async def storage(self, config: dict[str, Any] | None = None) -> SqlStorage:
        """The whole SQL storage (every store), migrated; closed automatically at the end of the test."""
        storage = await open_storage(self.reactor, config or self.db_config())
        self.addCleanup(storage.close)
        return storage


class SqliteEngineMixin(EngineTestMixin):
    engine = "sqlite"

    def setUp(self) -> None:
        super().setUp()  # type: ignore[misc]
        base = self.mktemp()
        os.makedirs(base)
        self.sqlite_path = os.path.join(base, "homeserver.db")

    def db_config(self, **args: Any) -> dict[str, Any]:
        return {"name": "sqlite3", "args": {"database": self.sqlite_path, **args}}


class PostgresEngineMixin(EngineTestMixin):
    engine = "postgres"

    def setUp(self) -> None:
        super().setUp()  # type: ignore[misc]
        reason = postgres.skip_reason()
        if reason is not None:
            raise unittest.SkipTest(reason)
        self.pg_args = postgres.create_test_database()
        self.addCleanup(postgres.drop_test_database, self.pg_args["database"])

    def db_config(self, **args: Any) -> dict[str, Any]:
        return {"name": "psycopg2", "args": {**self.pg_args, "cp_min": 1, "cp_max": 5, **args}}


_MIXINS: dict[str, type[EngineTestMixin]] = {"sqlite": SqliteEngineMixin, "postgres": PostgresEngineMixin}


def on_both_engines(cls: C) -> C:
    """Class decorator: generate ``<Name>_sqlite`` and ``<Name>_postgres`` test cases."""
    return on_engines(*ENGINES)(cls)


def on_engines(*engines: str) -> Callable[[C], C]:
    """Like :func:`on_both_engines` for a subset of engines."""

    def decorate(cls: C) -> C:
        module = sys.modules[cls.__module__]
        for engine in engines:
            name = f"{cls.__name__}_{engine}"
            test_case = type(
                name,
                (cls, _MIXINS[engine], unittest.TestCase),
                {"__module__": cls.__module__, "__qualname__": name, "__doc__": cls.__doc__},
            )
            setattr(module, name, test_case)
        return cls

    return decorate
