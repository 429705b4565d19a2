"""The extension points of matrixhs, as zope interfaces.

A module (first-party in ``modules/`` or a third-party package) is a class
named in the ``modules:`` section of the configuration. It is constructed as
``cls(config, api)`` with its config mapping and a :class:`ModuleApi`, declares
the extension points it implements with ``@implementer(...)``, and is checked
with ``zope.interface.verify.verifyObject`` against each of them at start-up.

Each later area of the server adds its interface here and to
:data:`EXTENSION_POINTS` (auth providers, spam checkers, room policies...).
"""

from __future__ import annotations

from zope.interface import Attribute, Interface
from zope.interface.interface import InterfaceClass


class IModuleApi(Interface):
    """What a module may use of the server: small and stable, never the internals."""

    server_name = Attribute("The homeserver's server_name (str).")
    public_baseurl = Attribute("The configured public_baseurl, or None.")
    clock = Attribute("An IReactorTime: the only clock a module should use.")

    def get_logger():
        """A twisted.logger.Logger namespaced after the module."""


class IModuleLifecycle(Interface):
    """A module that runs code when the server starts and stops (background jobs, connections)."""

    def on_start():
        """Called once the server's storage is open, before listeners accept requests.

        May return a Deferred or awaitable; start-up waits for it, and a failure stops start-up.
        """

    def on_stop():
        """Called at shutdown after the listeners stopped. May return a Deferred or awaitable."""


#: Every interface a module may declare; the loader verifies each one a module provides.
EXTENSION_POINTS: list[InterfaceClass] = [IModuleLifecycle]
