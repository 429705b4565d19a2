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


class IAuthProvider(Interface):
    """Checks logins: passwords (local database, LDAP...) or other login types (OIDC, JWT...).

    Providers are asked in configuration order (modules first, then the local
    password database when ``password_config.localdb_enabled``); the first that
    returns a result decides. A provider may name a user that does not exist
    yet: the server then creates it (first login from a directory) with the
    display name the provider returns.
    """

    def login_types():
        """A mapping of login type (e.g. ``"m.login.password"``) to the field names it needs in the login dict."""

    def check_login(user_id, login_type, login_dict):
        """Check a login attempt. ``user_id`` is the fully qualified user ID the client named
        (or None when the login type identifies the user itself, e.g. a token).

        Returns (possibly via Deferred/awaitable) ``None`` when this provider does not
        know the user or the login type (the next provider is asked), ``False`` to refuse
        outright, or an :class:`AuthResult` naming the authenticated user.
        """

    def on_logged_out(user_id, device_id):
        """Called after a device of ``user_id`` logged out (its tokens are already gone). May return a Deferred."""


class AuthResult:
    """What an :class:`IAuthProvider` established about a login."""

    def __init__(self, user_id: str, display_name: str | None = None, emails: tuple[str, ...] = ()) -> None:
        self.user_id = user_id
        self.display_name = display_name
        self.emails = emails

    def __repr__(self) -> str:
        return f"AuthResult({self.user_id!r})"


EXTENSION_POINTS.append(IAuthProvider)
