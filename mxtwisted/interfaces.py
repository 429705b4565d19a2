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

from zope.interface import Attribute, Interface, implementer
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


# -- spam checkers and room policies (docs/modules.md, docs/rooms.md) ---------------------------------------------


class Refusal:
    """What an :class:`ISpamChecker` or :class:`IRoomPolicy` returns to refuse an action.

    The client gets ``403`` with ``errcode`` (``M_FORBIDDEN`` unless the module
    names another spec error code) and ``message``. Returning ``None`` allows
    the action; any other return value, or an exception, is a module error:
    it is logged and the action is refused with ``403 M_FORBIDDEN`` (a broken
    spam checker fails closed, it never crashes the request).
    """

    def __init__(self, errcode: str = "M_FORBIDDEN", message: str = "Refused by the server's policy") -> None:
        self.errcode = errcode
        self.message = message

    def __repr__(self) -> str:
        return f"Refusal({self.errcode!r}, {self.message!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Refusal) and (self.errcode, self.message) == (other.errcode, other.message)

    def __hash__(self) -> int:
        return hash((self.errcode, self.message))


class ISpamChecker(Interface):
    """Decides whether local users may do things: send an event, create, join or publish a room, invite, upload.

    Every method returns (possibly via a Deferred or an awaitable) ``None`` to
    allow or a :class:`Refusal` to refuse. Events are given as dicts in the
    client format: ``event_id``, ``room_id``, ``type``, ``sender``,
    ``origin_server_ts``, ``content``, and ``state_key`` / ``redacts`` when the
    event has them; a module gets a copy and cannot change the event. With
    several spam checkers, the first refusal wins. Subclass
    :class:`SpamCheckerBase` to implement only the methods you need.
    """

    def check_event_for_spam(event):
        """A local user is about to send ``event`` (every type except ``m.room.member``, which the
        membership methods below cover). Runs after the auth rules accepted it, before it is stored."""

    def user_may_create_room(user_id):
        """``user_id`` asked ``POST /createRoom``."""

    def user_may_invite(inviter, invitee, room_id):
        """``inviter`` (a local user) is about to invite ``invitee`` into ``room_id``."""

    def user_may_join_room(user_id, room_id, is_invited):
        """A local user is about to join ``room_id`` (not asked for the creator's own join of a new room,
        nor when a joined member only changes their profile). ``is_invited``: whether they hold an invite."""

    def user_may_publish_room(user_id, room_id):
        """``user_id`` asked to set ``room_id``'s visibility in the published room directory."""

    def check_media_file_for_spam(user_id, file_info):
        """``user_id`` uploaded a file. ``file_info`` is a dict with ``media_id``, ``content_type``,
        ``upload_name`` (or None), ``size`` (bytes) and ``path`` (a local file holding the content,
        readable for the duration of the call). A refusal refuses the upload: it is neither kept nor served."""


@implementer(ISpamChecker)
class SpamCheckerBase:
    """Allows everything: subclass it and override only the checks a module needs."""

    def check_event_for_spam(self, event):
        return None

    def user_may_create_room(self, user_id):
        return None

    def user_may_invite(self, inviter, invitee, room_id):
        return None

    def user_may_join_room(self, user_id, room_id, is_invited):
        return None

    def user_may_publish_room(self, user_id, room_id):
        return None

    def check_media_file_for_spam(self, user_id, file_info):
        return None


class IRoomPolicy(Interface):
    """Server-wide rules for rooms ("third-party event rules"): which events are allowed, how new rooms start.

    Events are dicts in the client format (see :class:`ISpamChecker`). Methods
    may return Deferreds or awaitables. A policy that raises refuses the action
    (``403 M_FORBIDDEN``; the error is logged), except in ``on_new_event``, whose
    errors are only logged. Subclass :class:`RoomPolicyBase`
    to implement only what you need.
    """

    def check_event_allowed(event, state_events):
        """A local user is about to send ``event`` (any type, membership included), after the auth rules
        accepted it. ``state_events`` maps ``(type, state_key)`` to the room's current state events:
        every state event except other users' ``m.room.member`` (the sender's and, for a membership
        change, the target's member events are included). Return ``None`` to allow or a :class:`Refusal`."""

    def on_create_room(user_id, request_body, is_public):
        """``user_id`` asked ``POST /createRoom`` with ``request_body`` (a copy; ``is_public``: whether
        ``visibility`` is ``public``). Return ``None`` to create the room as asked, a (modified) request
        body dict to create it from that instead (for example with more ``initial_state``), or a
        :class:`Refusal`."""

    def on_new_event(event):
        """Notification: ``event`` was just stored in a room (local events). The result is ignored;
        errors are logged."""


@implementer(IRoomPolicy)
class RoomPolicyBase:
    """Allows everything and changes nothing: subclass it and override what a policy needs."""

    def check_event_allowed(self, event, state_events):
        return None

    def on_create_room(self, user_id, request_body, is_public):
        return None

    def on_new_event(self, event):
        return None


EXTENSION_POINTS.extend([ISpamChecker, IRoomPolicy])
