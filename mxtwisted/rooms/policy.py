"""Spam checkers and room policies: modules asked before local users act.

The extension points are :class:`~mxtwisted.interfaces.ISpamChecker` and
:class:`~mxtwisted.interfaces.IRoomPolicy` (docs/modules.md). This module
turns the configured ones into hooks of the places that act:

- the room engine (:meth:`RoomEngine.add_check`): ``check_event_for_spam``
  (every local event but membership) and ``check_event_allowed`` (every local
  event), after the auth rules and before the event is stored; and
  (:meth:`RoomEngine.add_listener`) ``on_new_event`` after it is stored;
- room creation (:meth:`RoomCreator.add_check`): ``user_may_create_room``,
  then ``on_create_room``, which may amend the request;
- membership (:meth:`MembershipHandler.add_check`): ``user_may_invite`` and
  ``user_may_join_room``;
- the room directory and the media repository call :meth:`ModulePolicies.user_may_publish_room`
  and :meth:`ModulePolicies.check_media_file` themselves.

A module answers ``None`` (allow) or a :class:`~mxtwisted.interfaces.Refusal`
(``403`` with its errcode and message). A module that raises or answers
anything else is isolated: the error is logged with the module's name and
the action is refused with ``403 M_FORBIDDEN``, so a broken spam checker
fails closed and never turns into a ``500``. With no such module configured,
nothing is installed and nothing costs anything.
"""

from __future__ import annotations

import copy
import inspect
from typing import Any, Iterable, Optional

from twisted.internet import defer
from twisted.logger import Logger

from mxtwisted.events.event import Event
from mxtwisted.http.errors import Codes, MatrixError
from mxtwisted.interfaces import IRoomPolicy, ISpamChecker, Refusal

log = Logger()

MEMBER = "m.room.member"

#: Returned to the client when a module failed (the details are in the server log only).
_MODULE_ERROR = Refusal(Codes.FORBIDDEN, "Refused: a server policy module could not decide")


def module_event(event: Event) -> dict[str, Any]:
    """An event as modules see it: the client format, as a copy the module cannot use to change the event."""
    out: dict[str, Any] = {
        "event_id": event.event_id,
        "room_id": event.room_id,
        "type": event.type,
        "sender": event.sender,
        "origin_server_ts": event.origin_server_ts,
        "content": copy.deepcopy(event.content),
    }
    if event.is_state():
        out["state_key"] = event.state_key
    if event.type == "m.room.redaction" and event.redacts is not None:
        out["redacts"] = event.redacts
    return out


async def _resolve(value: Any) -> Any:
    """A module's answer, waiting for it if it is a Deferred or an awaitable."""
    if isinstance(value, defer.Deferred) or inspect.isawaitable(value):
        return await value
    return value


def _to_error(refusal: Refusal) -> MatrixError:
    return MatrixError(403, refusal.errcode, refusal.message)


class ModulePolicies:
    """The configured spam checkers and room policies, in configuration order."""

    def __init__(self, spam_checkers: Iterable[tuple[str, Any]] = (), room_policies: Iterable[tuple[str, Any]] = ()) -> None:
        self.spam_checkers = list(spam_checkers)
        self.room_policies = list(room_policies)
        self._engine: Any = None

    @classmethod
    def from_modules(cls, modules: Iterable[Any]) -> ModulePolicies:
        """From the loaded modules (:class:`mxtwisted.modules.LoadedModule`)."""
        modules = list(modules)
        return cls(
            [(m.name, m.instance) for m in modules if m.implements(ISpamChecker)],
            [(m.name, m.instance) for m in modules if m.implements(IRoomPolicy)],
        )

    def __bool__(self) -> bool:
        return bool(self.spam_checkers or self.room_policies)

    # -- wiring ------------------------------------------------------------------------------
    def install(self, engine: Any, room_creator: Any, membership: Any) -> None:
        """Hook the modules into the room engine, room creation and membership changes."""
        self._engine = engine
        if not self:
            return
        engine.add_check(self.check_event)
        room_creator.add_check(self.check_room_creation)
        membership.add_check(self.check_membership)
        if self.room_policies:
            engine.add_listener(self.on_new_event)

    # -- asking one module -----------------------------------------------------------------------
    async def _ask(self, name: str, module: Any, method: str, *args: Any) -> Optional[Refusal]:
        """One module's answer as None (allow) or a Refusal; a failing module refuses."""
        try:
            answer = await _resolve(getattr(module, method)(*args))
        except Exception:
            log.failure("Module {module} failed in {method}; refusing", module=name, method=method)
            return _MODULE_ERROR
        if answer is None:
            return None
        if isinstance(answer, Refusal) and isinstance(answer.errcode, str) and isinstance(answer.message, str):
            return answer
        log.error(
            "Module {module} returned {answer!r} from {method} (expected None or a Refusal); refusing",
            module=name, answer=answer, method=method,
        )
        return _MODULE_ERROR

    async def _ask_spam_checkers(self, method: str, *args: Any) -> None:
        for name, module in self.spam_checkers:
            refusal = await self._ask(name, module, method, *args)
            if refusal is not None:
                raise _to_error(refusal)

    # -- events ---------------------------------------------------------------------------------
    async def check_event(self, event: Event) -> None:
        """The room engine's check of a local event (after the auth rules, before storing)."""
        if self.spam_checkers and event.type != MEMBER:
            await self._ask_spam_checkers("check_event_for_spam", module_event(event))
        if not self.room_policies:
            return
        state = await self._state_for(event)
        for name, policy in self.room_policies:
            # Each policy gets its own copies.
            refusal = await self._ask(
                name, policy, "check_event_allowed", module_event(event), copy.deepcopy(state)
            )
            if refusal is not None:
                raise _to_error(refusal)

    async def _state_for(self, event: Event) -> dict[tuple[str, str], dict[str, Any]]:
        """The room's current state for a policy: all of it except other users' member events."""
        room = await self._engine.get_room_cache(event.room_id)
        relevant = {event.sender, event.state_key if event.type == MEMBER else None}
        keys = [key for key in room.state if key[0] != MEMBER or key[1] in relevant]
        events = await self._engine.get_state_events(room, keys)
        return {key: module_event(ev) for key, ev in events.items()}

    def on_new_event(self, event: Event, stream_ordering: int) -> defer.Deferred:
        """The room engine's listener: tell every room policy, never failing the send."""
        return defer.ensureDeferred(self._notify(event))

    async def _notify(self, event: Event) -> None:
        for name, policy in self.room_policies:
            try:
                await _resolve(policy.on_new_event(module_event(event)))
            except Exception:
                log.failure("Module {module} failed in on_new_event", module=name)

    # -- room creation ------------------------------------------------------------------------------
    async def check_room_creation(self, user_id: str, body: dict[str, Any]) -> dict[str, Any]:
        """Before ``POST /createRoom``: may the user create a room, and from which request."""
        await self._ask_spam_checkers("user_may_create_room", user_id)
        for name, policy in self.room_policies:
            is_public = body.get("visibility") == "public"
            try:
                answer = await _resolve(policy.on_create_room(user_id, copy.deepcopy(body), is_public))
            except Exception:
                log.failure("Module {module} failed in on_create_room; refusing", module=name)
                raise _to_error(_MODULE_ERROR) from None
            if answer is None:
                continue
            if isinstance(answer, dict):
                body = answer
            elif isinstance(answer, Refusal):
                raise _to_error(answer)
            else:
                log.error("Module {module} returned {answer!r} from on_create_room; refusing", module=name, answer=answer)
                raise _to_error(_MODULE_ERROR)
        return body

    # -- membership ------------------------------------------------------------------------------------
    async def check_membership(
        self, sender: str, room_id: str, target: str, membership: str, current_membership: Optional[str]
    ) -> None:
        """Before a local membership change: invites and joins go past the spam checkers."""
        if not self.spam_checkers:
            return
        if membership == "invite":
            await self._ask_spam_checkers("user_may_invite", sender, target, room_id)
        elif membership == "join" and sender == target and current_membership != "join":
            room = await self._engine.get_room_cache(room_id)
            if set(room.state) == {("m.room.create", "")}:
                # The creator's own join of the room they just created: user_may_create_room decided.
                return
            await self._ask_spam_checkers("user_may_join_room", target, room_id, current_membership == "invite")

    # -- directory and media -------------------------------------------------------------------------------
    async def user_may_publish_room(self, user_id: str, room_id: str) -> None:
        """Before changing a room's visibility in the published room directory. Raises 403 when refused."""
        await self._ask_spam_checkers("user_may_publish_room", user_id, room_id)

    async def check_media_file(self, user_id: str, file_info: dict[str, Any]) -> None:
        """For the media repository, once an upload is stored and before it is served. Raises 403 when refused.

        ``file_info``: ``media_id``, ``content_type``, ``upload_name``, ``size``, ``path``.
        """
        for name, module in self.spam_checkers:
            refusal = await self._ask(name, module, "check_media_file_for_spam", user_id, dict(file_info))
            if refusal is not None:
                raise _to_error(refusal)
