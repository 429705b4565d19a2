"""SQL dialect knowledge for the two database engines.

Store code is written once, in the SQL subset both engines share; the rare
places that need to differ ask ``txn.engine`` rather than testing the config.
Both engines support ``INSERT ... ON CONFLICT (...) DO UPDATE / DO NOTHING``
(SQLite >= 3.24, PostgreSQL >= 9.5), so that is the portable way to write an
upsert. ``RETURNING`` exists in SQLite only from 3.35, hence
:attr:`Engine.supports_returning`.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Collection
from functools import lru_cache
from typing import Any, ClassVar, Final

SQLITE: Final = "sqlite"
POSTGRES: Final = "postgres"


class Engine:
    """Dialect facts and helpers for one engine; available as ``txn.engine``."""

    #: ``"sqlite"`` or ``"postgres"``.
    name: ClassVar[str]
    #: Whether ``INSERT/UPDATE/DELETE ... RETURNING`` works.
    supports_returning: bool
    #: Whether ``INSERT ... ON CONFLICT (...) DO UPDATE/NOTHING`` works (always
    #: true for the versions we accept; present so code can assert it).
    supports_upsert: bool = True
    #: The server/library version as a tuple of ints, e.g. ``(3, 40, 1)``.
    server_version: tuple[int, ...]

    def in_list(self, column: str, values: Collection[Any]) -> tuple[str, list[Any]]:
        """A ``column IN (...)`` clause and its arguments.

        Returns ``(sql, args)`` to splice into a query. An empty collection
        yields a clause that matches nothing (``IN ()`` is a syntax error).
        On SQLite each value is one bound variable (at most 32766 per
        statement), so chunk very long lists.
        """
        if not values:
            return "1 = 0", []
        return f"{column} IN ({', '.join('?' * len(values))})", list(values)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {'.'.join(map(str, self.server_version))}>"


class SqliteEngine(Engine):
    """SQLite: single writer, WAL; the library is embedded."""

    name = SQLITE

    #: Oldest SQLite we accept: 3.24 introduced ``ON CONFLICT ... DO UPDATE``.
    MIN_VERSION: ClassVar[tuple[int, ...]] = (3, 24, 0)

    def __init__(self) -> None:
        self.server_version = sqlite3.sqlite_version_info
        self.supports_returning = self.server_version >= (3, 35, 0)


class PostgresEngine(Engine):
    """PostgreSQL through txpostgres (asynchronous psycopg2)."""

    name = POSTGRES
    supports_returning = True

    #: Oldest PostgreSQL we accept. What we use today needs only 9.5 (ON
    #: CONFLICT), but releases before 11 are long out of upstream support and
    #: nobody tests them here.
    MIN_VERSION: ClassVar[tuple[int, ...]] = (11,)

    def __init__(self, server_version_num: int = 150000) -> None:
        # server_version_num is e.g. 150004 for 15.4 (or 90605 for 9.6.5).
        major, minor = divmod(server_version_num, 10000)
        self.server_version = (major, minor) if major >= 10 else (major, minor // 100, minor % 100)

    def in_list(self, column: str, values: Collection[Any]) -> tuple[str, list[Any]]:
        """``column = ANY(?)`` with one array argument: one plan for all lengths."""
        return f"{column} = ANY(?)", [list(values)]


@lru_cache(maxsize=2048)
def sqlite_to_pyformat(sql: str) -> str:
    """Convert ``?`` placeholders to psycopg2's ``%s``.

    Every ``?`` is taken as a placeholder, so SQL must never contain a literal
    ``?`` (pass it as an argument instead; for the jsonb ``?`` operators use
    ``jsonb_exists()`` and friends). Literal ``%`` is doubled because psycopg2
    always interpolates when given an argument tuple.
    """
    return sql.replace("%", "%%").replace("?", "%s")
