"""Server-wide facts in the ``server_info`` key/value table.

The important one is ``server_name``: every user ID, room alias, event ID
domain and signature in the database embeds it, so starting an existing
database under a different name would corrupt it. The first start records
the name; later starts must match.
"""

from __future__ import annotations

from mxtwisted.storage.database import Database, StorageError, Txn

SERVER_NAME_KEY = "server_name"


class ServerNameMismatchError(StorageError):
    """The database belongs to a different server_name than the configuration."""

    def __init__(self, db_server_name: str, configured: str) -> None:
        super().__init__(
            f"This database was created for server_name {db_server_name!r}, but the configuration says "
            f"{configured!r}. A homeserver's server_name cannot be changed once it has been used: fix "
            "server_name in the configuration, or point it at a new database."
        )
        self.db_server_name = db_server_name
        self.configured = configured


async def _get(txn: Txn, key: str) -> str | None:
    row = await txn.select_one("SELECT value FROM server_info WHERE key = ?", (key,))
    return None if row is None else str(row[0])


async def _set(txn: Txn, key: str, value: str) -> None:
    await txn.execute(
        "INSERT INTO server_info (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        (key, value),
    )


async def _check_server_name(txn: Txn, server_name: str) -> str | None:
    existing = await _get(txn, SERVER_NAME_KEY)
    if existing is None:
        await txn.execute("INSERT INTO server_info (key, value) VALUES (?, ?)", (SERVER_NAME_KEY, server_name))
    return existing


async def get_server_info(db: Database, key: str) -> str | None:
    """The value stored under ``key``, or None."""
    return await db.run_interaction("get_server_info", _get, key, readonly=True)


async def set_server_info(db: Database, key: str, value: str) -> None:
    """Store ``value`` under ``key``, replacing any previous value."""
    await db.run_interaction("set_server_info", _set, key, value)


async def check_server_name(db: Database, server_name: str) -> None:
    """Record ``server_name`` on first start; refuse a different one later.

    Raises :class:`ServerNameMismatchError` if the database was created for
    another server_name.
    """
    existing = await db.run_interaction("check_server_name", _check_server_name, server_name)
    if existing is not None and existing != server_name:
        raise ServerNameMismatchError(existing, server_name)
