"""The storage interface the rest of the server is written against.

Handlers and servlets depend on :class:`IStorage`, never on SQL or an engine,
so tests can substitute fakes and the composition root decides what is real.
"""

from __future__ import annotations

from zope.interface import Attribute, Interface


class IStorage(Interface):
    """Everything the homeserver keeps in its database.

    This is the foundation stage: lifecycle, health and server-wide facts.
    Later issues add the data areas as *composed store objects* exposed as
    attributes -- e.g. ``storage.accounts``, ``storage.events``,
    ``storage.state`` -- each a small class with its own interface
    (``IAccountStore``...) that wraps the shared ``Database`` and owns its
    tables and transaction functions. The composition root
    (:func:`mxtwisted.storage.sql.open_storage`) builds them and attaches them;
    they are not mixins on one giant class, so each stays small, testable on
    its own, and free to evolve without name clashes.

    Methods that touch the database return Deferreds (which are awaitable).
    """

    engine_name = Attribute('The database engine in use: "sqlite" or "postgres".')

    def ping():  # type: ignore[misc]
        """Run a trivial query (for the /health endpoint).

        Returns a Deferred firing with None, or failing if the database is unusable.
        """

    def close():  # type: ignore[misc]
        """Shut down connections and threads; returns a Deferred. Idempotent."""

    def check_server_name(server_name):  # type: ignore[no-untyped-def]
        """Record server_name on first start, refuse a different one later.

        Returns a Deferred failing with ``ServerNameMismatchError`` on a mismatch.
        """

    def get_server_info(key):  # type: ignore[no-untyped-def]
        """Returns a Deferred firing with the server-wide value for ``key``, or None."""

    def set_server_info(key, value):  # type: ignore[no-untyped-def]
        """Store a server-wide ``value`` (a string) under ``key``; returns a Deferred."""
