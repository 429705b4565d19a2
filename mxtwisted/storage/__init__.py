"""Storage: one SQL store on SQLite (embedded default) or PostgreSQL.

Entry points:

* :func:`open_database` -- connect from the homeserver.yaml ``database``
  section and bring the schema up to date.
* :func:`mxtwisted.storage.sql.open_storage` -- the same, wrapped as an
  :class:`~mxtwisted.storage.interfaces.IStorage`.

See ``docs/storage.md`` and :mod:`mxtwisted.storage.database` for the
transaction model.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.interfaces import IReactorCore

from mxtwisted.storage.database import (
    Database,
    DatabaseClosedError,
    DatabaseError,
    IntegrityError,
    ReadOnlyTransactionError,
    StorageError,
    TransactionProgrammingError,
    Txn,
)
from mxtwisted.storage.migrations import MigrationError, SchemaDir, SchemaTooNewError, run_migrations
from mxtwisted.storage.server_info import ServerNameMismatchError, check_server_name

__all__ = [
    "Database",
    "DatabaseClosedError",
    "DatabaseError",
    "IntegrityError",
    "MigrationError",
    "ReadOnlyTransactionError",
    "SchemaTooNewError",
    "ServerNameMismatchError",
    "StorageError",
    "TransactionProgrammingError",
    "Txn",
    "check_server_name",
    "connect_database",
    "open_database",
]

#: ``database.name`` values and the engine each selects.
ENGINE_NAMES = {"sqlite3": "sqlite", "psycopg2": "postgres", "psycopg": "postgres"}


async def connect_database(reactor: IReactorCore, db_config: dict[str, Any]) -> Database:
    """Connect to the configured database without touching its schema.

    ``db_config`` is the validated ``database`` section of homeserver.yaml:
    ``{"name": "sqlite3" | "psycopg2" | "psycopg", "args": {...}}``.
    """
    name = db_config.get("name")
    args = dict(db_config.get("args") or {})
    engine = ENGINE_NAMES.get(str(name))
    if engine == "sqlite":
        from mxtwisted.storage._sqlite import SqliteDatabase

        return await SqliteDatabase.connect(reactor, args)
    if engine == "postgres":
        from mxtwisted.storage._postgres import PostgresDatabase

        return await PostgresDatabase.connect(reactor, args)
    raise ValueError(f"unsupported database name {name!r}; expected one of {', '.join(ENGINE_NAMES)}")


async def open_database(
    reactor: IReactorCore, db_config: dict[str, Any], *, schema_dir: SchemaDir | None = None
) -> Database:
    """Connect to the configured database and apply any missing migrations.

    Raises :class:`SchemaTooNewError` if the database was migrated by a newer
    release, :class:`MigrationError` if a migration fails; the database is
    closed again in that case. ``schema_dir`` overrides the shipped
    migrations (for tests).
    """
    db = await connect_database(reactor, db_config)
    try:
        await run_migrations(db, schema_dir)
    except BaseException:
        await db.close()
        raise
    return db
