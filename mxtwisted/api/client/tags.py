"""Room tag endpoints (Client-Server API, "Room Tagging").

* ``GET /user/{userId}/rooms/{roomId}/tags``: ``{"tags": {tag: {...}}}``;
* ``PUT``/``DELETE /user/{userId}/rooms/{roomId}/tags/{tag}``.

Tag names are at most 255 bytes (``400 M_INVALID_PARAM``); ``order``, when
given, is a number in [0, 1] (``400 M_BAD_JSON`` otherwise). Only the user may
read or change their own tags (``403 M_FORBIDDEN``; guests are not allowed).
The store keeps the room's ``m.tag`` account data in step, so ``/sync``
delivers the tags in the room's ``account_data``.
"""

from __future__ import annotations

from typing import Any

from mxtwisted.api.client.account_data import CLIENT_PREFIXES, check_own_user, check_room_id, parse_content
from mxtwisted.handlers.auth import Authenticator
from mxtwisted.http.errors import Codes, MatrixError
from mxtwisted.http.router import Router
from mxtwisted.storage.account_data import AccountDataStore

#: Spec "Room Tagging": "The name of a tag MUST NOT exceed 255 bytes."
MAX_TAG_LENGTH = 255


def check_tag_name(tag: str) -> None:
    """``400 M_INVALID_PARAM`` for an empty tag or one over 255 bytes of UTF-8."""
    if not tag:
        raise MatrixError(400, Codes.INVALID_PARAM, "The tag may not be empty")
    if len(tag.encode("utf-8", "surrogatepass")) > MAX_TAG_LENGTH:
        raise MatrixError(400, Codes.INVALID_PARAM, f"The tag is longer than {MAX_TAG_LENGTH} bytes")


def check_tag_content(content: dict[str, Any]) -> None:
    """``400 M_BAD_JSON`` unless ``order`` is absent or a number in [0, 1] (spec: definitions/tag.yaml)."""
    if "order" not in content:
        return
    order = content["order"]
    if isinstance(order, bool) or not isinstance(order, (int, float)):
        raise MatrixError(400, Codes.BAD_JSON, "'order' must be a number")
    if not 0 <= order <= 1:
        raise MatrixError(400, Codes.BAD_JSON, "'order' must be between 0 and 1")


class TagsResource:
    def __init__(self, auth: Authenticator, account_data: AccountDataStore) -> None:
        self._auth = auth
        self._store = account_data

    def register(self, router: Router) -> None:
        for prefix in CLIENT_PREFIXES:
            router.add("GET", f"{prefix}/user/{{userId}}/rooms/{{roomId}}/tags", self.get_tags)
            router.add("PUT", f"{prefix}/user/{{userId}}/rooms/{{roomId}}/tags/{{tag}}", self.put_tag)
            router.add("DELETE", f"{prefix}/user/{{userId}}/rooms/{{roomId}}/tags/{{tag}}", self.delete_tag)

    async def get_tags(self, request: Any, userId: str, roomId: str) -> dict[str, Any]:
        """``GET /user/{userId}/rooms/{roomId}/tags`` (spec: getRoomTags)."""
        requester = await self._auth.get_requester(request)
        check_own_user(requester, userId, "tags")
        check_room_id(roomId)
        return {"tags": await self._store.get_tags(userId, roomId)}

    async def put_tag(self, request: Any, userId: str, roomId: str, tag: str) -> dict[str, Any]:
        """``PUT /user/{userId}/rooms/{roomId}/tags/{tag}`` (spec: setRoomTag); the body is the tag's content."""
        requester = await self._auth.get_requester(request)
        check_own_user(requester, userId, "tags")
        check_room_id(roomId)
        check_tag_name(tag)
        content = parse_content(request)
        check_tag_content(content)
        await self._store.set_tag(userId, roomId, tag, content)
        return {}

    async def delete_tag(self, request: Any, userId: str, roomId: str, tag: str) -> dict[str, Any]:
        """``DELETE /user/{userId}/rooms/{roomId}/tags/{tag}`` (spec: deleteRoomTag); 200 also for an absent tag."""
        requester = await self._auth.get_requester(request)
        check_own_user(requester, userId, "tags")
        check_room_id(roomId)
        check_tag_name(tag)
        if tag in await self._store.get_tags(userId, roomId):
            await self._store.set_tag(userId, roomId, tag, None)
        return {}
