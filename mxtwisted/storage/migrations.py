"""Numbered schema migrations, applied at start-up.

Files live in ``mxtwisted/storage/schema/`` and are named
``NNNN_description.sql`` (SQL common to both engines). A migration may
instead, or additionally, ship ``NNNN_description.sqlite.sql`` and/or
``NNNN_description.postgres.sql``; an engine-specific file is used *instead of*
the common one on that engine. If a version has no file for an engine at all
it is a no-op there (but still recorded), so version numbers stay aligned.

The ``schema_version`` table holds one row per applied migration. At start-up
every known migration not yet recorded is applied in version order, each in
its own transaction together with the row that records it, so a failing
migration leaves nothing half-applied and the recorded version unchanged
(DDL is transactional on both engines; avoid statements that are not, such
as PostgreSQL's ``CREATE INDEX CONCURRENTLY``). A database that has a version
newer than this code knows is refused (:class:`SchemaTooNewError`): it was
used by a newer release whose schema we cannot safely work with.

Adding a migration: create the next-numbered file, e.g.
``0002_accounts.sql``. Never edit a migration that has been released; add a
new one.
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass, field
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Union

from twisted.logger import Logger

from mxtwisted.storage.database import Database, StorageError, Txn

log = Logger()

_FILE_RE = re.compile(r"^(?P<version>\d{4})_(?P<name>[a-z0-9_]+?)(?:\.(?P<engine>sqlite|postgres))?\.sql$")

#: Key for pg_advisory_xact_lock, so two processes starting at once on one
#: PostgreSQL database don't both migrate. ("mxtw" as an int.)
_PG_MIGRATION_LOCK = 0x6D787477

SchemaDir = Union[Traversable, str, "os.PathLike[str]"]


class SchemaTooNewError(StorageError):
    """The database was migrated by a newer version of the code."""

    def __init__(self, db_version: int, code_version: int) -> None:
        super().__init__(
            f"The database schema is at version {db_version}, but this version of matrixhs only supports "
            f"schema versions up to {code_version}: the database has been used by a newer release. "
            "Run that release (or newer), or restore a backup taken before the upgrade."
        )
        self.db_version = db_version
        self.code_version = code_version


class MigrationError(StorageError):
    """A migration could not be loaded or applied."""


@dataclass(frozen=True)
class Migration:
    """One schema version: its SQL per engine (``"common"``, ``"sqlite"``, ``"postgres"``)."""

    version: int
    name: str
    files: dict[str, str] = field(default_factory=dict)  # variant -> file name
    sql: dict[str, str] = field(default_factory=dict)  # variant -> SQL text

    def sql_for(self, engine_name: str) -> str | None:
        """The SQL to run on this engine, or None if it is a no-op there."""
        return self.sql.get(engine_name, self.sql.get("common"))

    def file_for(self, engine_name: str) -> str | None:
        return self.files.get(engine_name, self.files.get("common"))

    @property
    def label(self) -> str:
        return f"{self.version:04d}_{self.name}"


def default_schema_dir() -> Traversable:
    """The ``schema/`` directory shipped inside the package."""
    return resources.files("mxtwisted.storage").joinpath("schema")


def load_migrations(schema_dir: SchemaDir | None = None) -> list[Migration]:
    """Read all migration files from ``schema_dir`` (default: the shipped one), sorted by version.

    Raises :class:`MigrationError` on a misnamed ``.sql`` file, on two
    descriptions for one version, or when there is no migration at all.
    """
    if schema_dir is None:
        directory: Traversable = default_schema_dir()
    elif isinstance(schema_dir, (str, os.PathLike)):
        directory = Path(schema_dir)
    else:
        directory = schema_dir
    found: dict[int, Migration] = {}
    for entry in sorted(directory.iterdir(), key=lambda e: e.name):
        if not entry.name.endswith(".sql"):
            continue
        m = _FILE_RE.match(entry.name)
        if m is None:
            raise MigrationError(
                f"schema file {entry.name!r} is not named NNNN_description.sql, "
                "NNNN_description.sqlite.sql or NNNN_description.postgres.sql (lower case)"
            )
        version, name, variant = int(m["version"]), m["name"], m["engine"] or "common"
        migration = found.setdefault(version, Migration(version, name))
        if migration.name != name:
            raise MigrationError(f"schema version {version:04d} has two descriptions: {migration.name!r} and {name!r}")
        migration.files[variant] = entry.name
        migration.sql[variant] = entry.read_text(encoding="utf-8")
    if not found:
        raise MigrationError(f"no schema migrations found in {directory}")
    return [found[v] for v in sorted(found)]


def code_schema_version(migrations: list[Migration] | None = None) -> int:
    """The newest schema version this code knows."""
    return (migrations if migrations is not None else load_migrations())[-1].version


async def _ensure_version_table(txn: Txn) -> None:
    if txn.engine.name == "postgres":
        # CREATE TABLE IF NOT EXISTS is not safe against a concurrent create.
        await txn.select_one("SELECT pg_advisory_xact_lock(?)", (_PG_MIGRATION_LOCK,))
    await txn.execute(
        "CREATE TABLE IF NOT EXISTS schema_version ("
        " version INTEGER PRIMARY KEY,"
        " name TEXT NOT NULL,"
        " applied_ts BIGINT NOT NULL"
        ")"
    )


async def _applied_versions(txn: Txn) -> list[int]:
    rows = await txn.select("SELECT version FROM schema_version ORDER BY version")
    return [int(r[0]) for r in rows]


async def get_schema_version(db: Database) -> int:
    """The newest schema version recorded in the database (0 for an empty database)."""
    await db.run_interaction("ensure_schema_version_table", _ensure_version_table)
    versions = await db.run_interaction("get_schema_versions", _applied_versions, readonly=True)
    return versions[-1] if versions else 0


async def _apply(txn: Txn, migration: Migration) -> bool:
    if txn.engine.name == "postgres":
        # Serialize with other processes migrating the same database.
        await txn.select_one("SELECT pg_advisory_xact_lock(?)", (_PG_MIGRATION_LOCK,))
    applied = await _applied_versions(txn)
    if migration.version in applied:
        return False  # another process got there first
    sql = migration.sql_for(txn.engine.name)
    if sql is not None:
        await txn.execute_script(sql)
    await txn.execute(
        "INSERT INTO schema_version (version, name, applied_ts) VALUES (?, ?, ?)",
        (migration.version, migration.name, int(time.time() * 1000)),
    )
    return True


async def run_migrations(db: Database, schema_dir: SchemaDir | None = None) -> list[int]:
    """Bring the database schema up to date; return the versions applied.

    Raises :class:`SchemaTooNewError` if the database is newer than the code,
    and :class:`MigrationError` if a migration fails (that migration is rolled
    back; earlier ones in the same run stay applied).
    """
    migrations = load_migrations(schema_dir)
    known = code_schema_version(migrations)
    await db.run_interaction("ensure_schema_version_table", _ensure_version_table)
    applied = await db.run_interaction("get_schema_versions", _applied_versions, readonly=True)
    current = applied[-1] if applied else 0
    if current > known:
        raise SchemaTooNewError(current, known)
    known_versions = {m.version for m in migrations}
    unknown = sorted(set(applied) - known_versions)
    if unknown:
        raise MigrationError(f"the database has schema versions this code does not know: {unknown}")
    missing = [m for m in migrations if m.version not in applied]
    below = [m.label for m in missing if m.version < current]
    if below:
        raise MigrationError(
            f"the database is at schema version {current} but lacks older migrations {below}; "
            "a migration was added out of order"
        )
    if not missing:
        log.info(
            "Database schema ({engine}) is up to date at version {version}", engine=db.engine_name, version=current
        )
        return []
    log.info(
        "Database schema ({engine}) is at version {current}; applying {n} migration(s) up to {target}",
        engine=db.engine_name, current=current, n=len(missing), target=known,
    )  # fmt: skip
    done: list[int] = []
    for m in missing:
        log.info("Applying schema migration {label} ({file})", label=m.label, file=m.file_for(db.engine_name))
        try:
            if await db.run_interaction(f"migration_{m.label}", _apply, m):
                done.append(m.version)
        except StorageError as e:
            raise MigrationError(
                f"schema migration {m.label} ({m.file_for(db.engine_name)}) failed on {db.engine_name}: {e}; "
                f"the database stays at schema version {done[-1] if done else current}"
            ) from e
        log.info("Applied schema migration {label}", label=m.label)
    return done
