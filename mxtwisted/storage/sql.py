"""The SQL implementation of :class:`~mxtwisted.storage.interfaces.IStorage`."""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorCore
from zope.interface import implementer

from mxtwisted.storage import open_database, server_info
from mxtwisted.storage.account_data import AccountDataStore
from mxtwisted.storage.accounts import DeviceStore, TokenStore, UserStore
from mxtwisted.storage.database import Database
from mxtwisted.storage.events import EventStore
from mxtwisted.storage.interfaces import IStorage
from mxtwisted.storage.migrations import SchemaDir
from mxtwisted.storage.presence import PresenceStore
from mxtwisted.storage.profiles import ProfileStore
from mxtwisted.storage.receipts import ReceiptStore
from mxtwisted.storage.uia import RegistrationTokenStore, UIAStore


@implementer(IStorage)
class SqlStorage:
    """IStorage over one :class:`~mxtwisted.storage.database.Database` (SQLite or PostgreSQL).

    The composition root: later stages construct their store objects here
    from ``self.db`` (``self.accounts = AccountStore(db)`` ...).
    """

    def __init__(
        self, db: Database, account_data: AccountDataStore | None = None, events: EventStore | None = None
    ) -> None:
        self.db = db
        self.users = UserStore(db)
        self.devices = DeviceStore(db)
        self.tokens = TokenStore(db)
        self.profiles = ProfileStore(db)
        self.uia = UIAStore(db)
        self.registration_tokens = RegistrationTokenStore(db)
        #: Need their stream positions loaded: built by :func:`open_storage`.
        self.account_data = account_data
        self.events = events
        #: Receipts and presence (streams for /sync); set by :func:`open_storage`.
        self.receipts: ReceiptStore | None = None
        self.presence: PresenceStore | None = None

    @property
    def engine_name(self) -> str:
        return self.db.engine_name

    def ping(self) -> Deferred[None]:
        return self.db.ping()

    def close(self) -> Deferred[None]:
        return self.db.close()

    def check_server_name(self, server_name: str) -> Deferred[None]:
        return Deferred.fromCoroutine(server_info.check_server_name(self.db, server_name))

    def get_server_info(self, key: str) -> Deferred[str | None]:
        return Deferred.fromCoroutine(server_info.get_server_info(self.db, key))

    def set_server_info(self, key: str, value: str) -> Deferred[None]:
        return Deferred.fromCoroutine(server_info.set_server_info(self.db, key, value))


async def open_storage(
    reactor: IReactorCore, db_config: dict[str, Any], *, schema_dir: SchemaDir | None = None
) -> SqlStorage:
    """Open the configured database (running migrations) and wrap it as an IStorage."""
    db = await open_database(reactor, db_config, schema_dir=schema_dir)
    try:
        account_data = await AccountDataStore.create(db) if schema_dir is None else None
        events = await EventStore.create(db) if schema_dir is None else None
        storage = SqlStorage(db, account_data, events)
        if schema_dir is None:
            storage.receipts = await ReceiptStore.create(db)
            storage.presence = await PresenceStore.create(db)
    except BaseException:
        await db.close()
        raise
    return storage
