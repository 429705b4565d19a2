"""Membership changes of local users: join, leave, invite, kick, ban, unban, knock.

Spec: Client-Server API, "Room membership". Each change is one
``m.room.member`` event through the room engine, whose auth rules decide
whether it is allowed (403 M_FORBIDDEN with the rule otherwise). Joins carry
the user's profile (displayname, avatar_url), as clients expect.
"""

from __future__ import annotations

from typing import Any, Awaitable, Callable, Optional

from twisted.logger import Logger

from mxtwisted.events.auth import AUTHORISING_USER
from mxtwisted.events.validation import is_valid_user_id
from mxtwisted.http.errors import Codes, MatrixError
from mxtwisted.rooms.engine import RoomEngine
from mxtwisted.rooms.restricted import restricted_join_authoriser
from mxtwisted.storage.profiles import ProfileStore

JOIN = "join"
LEAVE = "leave"
INVITE = "invite"
BAN = "ban"
KNOCK = "knock"

log = Logger()

#: Checks before a membership change: (sender, room_id, target, membership, current membership); raise MatrixError
#: to refuse (spam checkers: mxtwisted.rooms.policy).
MembershipCheck = Callable[[str, str, str, str, Optional[str]], Awaitable[None]]


class MembershipHandler:
    def __init__(self, engine: RoomEngine, profiles: ProfileStore) -> None:
        self.engine = engine
        self._profiles = profiles
        self._checks: list[MembershipCheck] = []
        #: Invites of users of other servers, which their server must sign first
        #: (mxtwisted.federation.remote_membership.RemoteMemberships), or None: sent as local events.
        self.remote_invites: Any = None

    def add_check(self, check: MembershipCheck) -> None:
        """Called before each membership change is sent; may refuse it with a MatrixError."""
        self._checks.append(check)

    async def check_remote_invite(self, sender: str, room_id: str, target: str) -> None:
        """The checks of a local invite (spam checkers), for an invite of a local user that another server
        asks us to sign (federation ``/invite``)."""
        for check in self._checks:
            await check(sender, room_id, target, INVITE, None)

    async def _profile_content(self, user_id: str) -> dict[str, Any]:
        profile = await self._profiles.get_profile(user_id)
        content: dict[str, Any] = {}
        for key in ("displayname", "avatar_url"):
            value = profile.get(key)
            if isinstance(value, str):
                content[key] = value
        return content

    async def update(
        self,
        sender: str,
        room_id: str,
        target: str,
        membership: str,
        reason: Optional[str] = None,
        extra_content: Optional[dict[str, Any]] = None,
        txn: Optional[tuple[str, str, str]] = None,
    ) -> str:
        """Send one membership event; returns its event ID."""
        if not is_valid_user_id(target, historical=True):
            raise MatrixError(400, Codes.INVALID_PARAM, f"Invalid user ID: {target!r}")
        if reason is not None and not isinstance(reason, str):
            raise MatrixError(400, Codes.BAD_JSON, "'reason' must be a string")
        room = await self.engine.get_room_cache(room_id)
        current = await self.engine.get_state_events(room, [("m.room.member", target)])
        current_membership = current[("m.room.member", target)].membership if current else None
        content: dict[str, Any] = dict(extra_content or {})
        # Only this server names who authorised a restricted join (below), never the client.
        content.pop(AUTHORISING_USER, None)
        content["membership"] = membership
        if reason:
            content["reason"] = reason
        if membership in (JOIN, KNOCK) and target == sender:
            for key, value in (await self._profile_content(target)).items():
                content.setdefault(key, value)
        elif membership == INVITE and self.engine._is_local(target):
            for key, value in (await self._profile_content(target)).items():
                content.setdefault(key, value)
        if membership == JOIN and current_membership == JOIN:
            # Joining again is a no-op for the client (spec: idempotent join) unless the profile changed.
            existing = current[("m.room.member", target)]
            if all(existing.content.get(k) == v for k, v in content.items()):
                return existing.event_id
        for check in self._checks:
            await check(sender, room_id, target, membership, current_membership)
        if membership == JOIN and target == sender and current_membership not in (JOIN, INVITE, BAN):
            authoriser = await restricted_join_authoriser(self.engine, room, target)
            if authoriser is not None:
                content[AUTHORISING_USER] = authoriser
        if membership == INVITE and self.remote_invites is not None and not self.engine._is_local(target):
            return await self.remote_invites.invite(sender, room_id, target, content, txn)
        event_id, _ = await self.engine.send_event(sender, room_id, "m.room.member", content, state_key=target, txn=txn)
        return event_id

    async def on_profile_change(self, user_id: str, profile: dict[str, Any]) -> None:
        """Spec "Events on Change of Profile Information": a new join event with the new displayname/avatar_url
        in every room the user is joined to. A room that refuses it (e.g. a module) does not stop the others."""
        rooms = await self.engine.store.get_rooms_for_user(user_id, ("join",))
        for room_id in sorted(rooms):
            room = await self.engine.get_room_cache(room_id)
            current = await self.engine.get_state_events(room, [("m.room.member", user_id)])
            event = current.get(("m.room.member", user_id))
            content = dict(event.content) if event else {"membership": JOIN}
            for key in ("displayname", "avatar_url"):
                value = profile.get(key)
                if isinstance(value, str) and value:
                    content[key] = value
                else:
                    content.pop(key, None)
            content.pop("reason", None)
            content["membership"] = JOIN
            if event is not None and event.content == content:
                continue
            try:
                await self.engine.send_event(user_id, room_id, "m.room.member", content, state_key=user_id)
            except MatrixError as e:
                log.warn("Profile change not propagated to {room_id}: {e}", room_id=room_id, e=e)
