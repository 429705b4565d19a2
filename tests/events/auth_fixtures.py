"""Helpers for the authorisation rule tests: a small room builder.

Events are built as plain PDU dicts in the format of the room version and
wrapped in :class:`Event` with an explicit ``event_id`` so nothing here depends
on the hashing module. The builder keeps a current state map; ``add`` puts an
event into it without checking it (tests decide what is allowed), and
``auth_map`` gives the auth state :func:`check_auth_rules` expects.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping, Optional

from signedjson.key import generate_signing_key
from signedjson.sign import sign_json
from unpaddedbase64 import encode_base64

from mxtwisted.events.auth import CREATE_KEY, auth_types_for_event
from mxtwisted.events.event import Event
from mxtwisted.events.room_versions import KNOWN_ROOM_VERSIONS, RoomVersion

ALL_VERSIONS: list[RoomVersion] = list(KNOWN_ROOM_VERSIONS.values())

ALICE = "@alice:a.example"  # the room creator
BOB = "@bob:b.example"
CAROL = "@carol:c.example"
DAVE = "@dave:d.example"
ERIN = "@erin:e.example"

_NO_STATE_KEY: Any = object()


def domain(user_id: str) -> str:
    return user_id.split(":", 1)[1]


def versions(**flags: bool) -> list[RoomVersion]:
    """The room versions whose flags have the given values, e.g. ``versions(knock_join_rule=True)``."""
    return [rv for rv in ALL_VERSIONS if all(getattr(rv, k) == v for k, v in flags.items())]


class RoomBuilder:
    """Builds the events of one room of version ``rv`` created by ``creator``."""

    def __init__(
        self,
        rv: RoomVersion,
        creator: str = ALICE,
        create_content: Optional[Mapping[str, Any]] = None,
    ) -> None:
        self.rv = rv
        self.counter = 0
        self.state: dict[tuple[str, str], Event] = {}
        self.events: dict[str, Event] = {}
        self.latest: list[str] = []
        content: dict[str, Any] = {"room_version": rv.identifier}
        if not rv.implicit_room_creator:
            content["creator"] = creator
        if create_content:
            content.update(create_content)
        if rv.room_id_from_create_event:
            self.room_id = "!createevent"
            create_id = "$createevent"
        else:
            self.room_id = "!room:" + domain(creator)
            create_id = "$create:" + domain(creator) if rv.event_id_in_event else "$create"
        self.create = self.make_create(creator, content, event_id=create_id)
        self.add_event(self.create)

    # -- building -------------------------------------------------------------
    def _refs(self, ids: Iterable[str]) -> list[Any]:
        if self.rv.event_id_in_event:
            return [[i, {"sha256": "aGFzaA"}] for i in ids]
        return list(ids)

    def next_id(self, sender: str) -> str:
        self.counter += 1
        if self.rv.event_id_in_event:
            return f"$ev{self.counter}:{domain(sender)}"
        return f"$ev{self.counter}"

    def make_create(
        self,
        sender: str,
        content: Mapping[str, Any],
        event_id: str = "$createevent",
        **fields: Any,
    ) -> Event:
        d: dict[str, Any] = {
            "type": "m.room.create",
            "state_key": "",
            "sender": sender,
            "content": dict(content),
            "prev_events": [],
            "auth_events": [],
            "depth": 1,
            "origin_server_ts": 1,
            "hashes": {"sha256": "aGFzaA"},
            "signatures": {domain(sender): {"ed25519:k": "c2ln"}},
        }
        if not self.rv.room_id_from_create_event:
            d["room_id"] = "!room:" + domain(sender)
        if self.rv.event_id_in_event:
            d["event_id"] = event_id
        d.update(fields)
        return Event(d, self.rv, event_id=event_id)

    def make(
        self,
        type: str,
        sender: str,
        content: Mapping[str, Any],
        state_key: Any = _NO_STATE_KEY,
        *,
        prev: Optional[list[str]] = None,
        auth: Optional[list[str]] = None,
        signatures: Optional[Mapping[str, Any]] = None,
        event_id: Optional[str] = None,
        rejected_reason: Optional[str] = None,
        **fields: Any,
    ) -> Event:
        """An event of this room, not yet added to the state. By default its
        ``prev_events`` are the latest added events and its ``auth_events`` are
        selected from the current state by :func:`auth_types_for_event`."""
        event_id = event_id or self.next_id(sender)
        d: dict[str, Any] = {
            "type": type,
            "sender": sender,
            "content": dict(content),
            "room_id": self.room_id,
            "depth": self.counter + 1,
            "origin_server_ts": 1000 + self.counter,
            "hashes": {"sha256": "aGFzaA"},
            "signatures": dict(signatures) if signatures is not None else {domain(sender): {"ed25519:k": "c2ln"}},
        }
        if state_key is not _NO_STATE_KEY:
            d["state_key"] = state_key
        if self.rv.event_id_in_event:
            d["event_id"] = event_id
        d["prev_events"] = self._refs(prev if prev is not None else self.latest)
        d.update(fields)
        if auth is None:
            probe = Event(d, self.rv, event_id=event_id)
            auth = [self.state[k].event_id for k in sorted(auth_types_for_event(probe)) if k in self.state]
        d["auth_events"] = self._refs(auth)
        return Event(d, self.rv, event_id=event_id, rejected_reason=rejected_reason)

    def add_event(self, event: Event) -> Event:
        self.events[event.event_id] = event
        self.latest = [event.event_id]
        if event.is_state() and event.rejected_reason is None:
            self.state[(event.type, event.state_key)] = event  # type: ignore[index]
        return event

    def add(
        self, type: str, sender: str, content: Mapping[str, Any], state_key: Any = _NO_STATE_KEY, **kw: Any
    ) -> Event:
        return self.add_event(self.make(type, sender, content, state_key, **kw))

    # -- common events --------------------------------------------------------
    def member(self, user: str, membership: str, sender: Optional[str] = None, **content: Any) -> Event:
        return self.make("m.room.member", sender or user, {"membership": membership, **content}, user)

    def set_member(self, user: str, membership: str, sender: Optional[str] = None, **content: Any) -> Event:
        return self.add_event(self.member(user, membership, sender, **content))

    def power_levels(self, sender: str = ALICE, **content: Any) -> Event:
        return self.make("m.room.power_levels", sender, content, "")

    def set_power_levels(self, sender: str = ALICE, **content: Any) -> Event:
        return self.add_event(self.power_levels(sender, **content))

    def set_join_rule(self, join_rule: str, sender: str = ALICE, **content: Any) -> Event:
        return self.add("m.room.join_rules", sender, {"join_rule": join_rule, **content}, "")

    def message(self, sender: str, **kw: Any) -> Event:
        return self.make("m.room.message", sender, {"msgtype": "m.text", "body": "hi"}, **kw)

    # -- auth state -----------------------------------------------------------
    def auth_map(self, event: Event) -> dict[tuple[str, str], Event]:
        """The auth state of ``event`` from the current state (plus, in v12, the create event)."""
        out = {k: self.state[k] for k in auth_types_for_event(event) if k in self.state}
        if self.rv.room_id_from_create_event:
            out[CREATE_KEY] = self.create
        return out


def standard_room(
    rv: RoomVersion,
    join_rule: Optional[str] = "invite",
    users: Optional[Mapping[str, int]] = None,
    joined: Iterable[str] = (),
    **pl_content: Any,
) -> RoomBuilder:
    """A room created and joined by ALICE (power 100, or a v12 creator), with a
    power levels event (``users`` extra entries, ``pl_content`` extra keys), a
    join rules event, and the users of ``joined`` joined."""
    room = RoomBuilder(rv)
    room.set_member(ALICE, "join")
    pl_users: dict[str, int] = {} if rv.privileged_creators else {ALICE: 100}
    pl_users.update(users or {})
    room.set_power_levels(ALICE, users=pl_users, **pl_content)
    if join_rule is not None:
        room.set_join_rule(join_rule)
    for user in joined:
        room.set_member(user, "join")
    return room


class ThirdPartyKeys:
    """An identity server's ed25519 key and the ``signed`` blocks it issues."""

    def __init__(self, version: str = "0") -> None:
        self.signing_key = generate_signing_key(version)
        self.public_key = encode_base64(self.signing_key.verify_key.encode())

    def signed(self, mxid: str, token: str, server: str = "id.example") -> dict[str, Any]:
        return sign_json({"mxid": mxid, "token": token}, server, self.signing_key)
