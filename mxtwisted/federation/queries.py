"""Questions this server asks other servers for its clients: profiles, room directories, space hierarchies.

Spec: Server-Server API "Querying for information" (``GET /v1/query/profile``),
"Public Room Directory" (``GET``/``POST /v1/publicRooms``) and "Spaces"
(``GET /v1/hierarchy/{roomId}``). (Remote aliases are resolved by
:meth:`mxtwisted.federation.remote_join.RemoteJoiner.resolve_alias`.)

How a remote failure reaches the client, following Synapse: a server that
cannot be reached, or answers nonsense, is ``502 M_UNKNOWN``. A profile
query's 404 and 403 are passed on with the remote's errcode and message (the
user or field does not exist; the remote refuses to say). A room directory
query's 400 is passed on (the client's ``since`` or filter was refused); any
other refusal is 502: passing on, say, a 401 would tell the client that *its*
access token is bad, when it is *our* request the remote refused.
"""

from __future__ import annotations

from typing import Any, Optional
from urllib.parse import quote

from twisted.logger import Logger

from mxtwisted.federation.client import FederationError, RequestSendFailed
from mxtwisted.federation.server_visibility import server_of
from mxtwisted.http.errors import Codes, MatrixError
from mxtwisted.rooms.directory import matches_search

log = Logger()

F1 = "/_matrix/federation/v1"
#: Most ``via`` servers asked for one room's hierarchy (as Synapse).
MAX_HIERARCHY_SERVERS = 3


def _remote_message(e: FederationError, default: str) -> str:
    message = e.body.get("error") if isinstance(e.body, dict) else None
    return message if isinstance(message, str) else default


class HierarchyUnavailable(Exception):
    """No ``via`` server gave a usable hierarchy of the room."""


class FederationQueries:
    def __init__(self, client: Any, server_name: str) -> None:
        """``client``: the :class:`~mxtwisted.federation.client.FederationClient`."""
        self._client = client
        self.server_name = server_name

    # -- profiles -------------------------------------------------------------------------------
    async def profile(self, user_id: str, field: Optional[str]) -> dict[str, Any]:
        """The profile of a user of another server (or the one field), from their server.

        Meant for :meth:`mxtwisted.handlers.profile.ProfileHandler.set_remote_profile_query`.
        """
        server = server_of(user_id)
        args = {"user_id": user_id}
        if field is not None:
            args["field"] = field
        try:
            answer = await self._client.get_json(server, F1 + "/query/profile", args)
        except RequestSendFailed as e:
            log.info("Profile query to {server} failed: {e}", server=server, e=e)
            raise MatrixError(502, Codes.UNKNOWN, "Failed to fetch profile") from None
        except FederationError as e:
            if e.status == 404:
                raise MatrixError(404, e.errcode or Codes.NOT_FOUND, _remote_message(e, "Profile not found")) from None
            if e.status == 403:
                raise MatrixError(403, e.errcode or Codes.FORBIDDEN, _remote_message(e, "Profile lookup refused")) from None
            log.info("Profile query to {server}: {status} {errcode}", server=server, status=e.status, errcode=e.errcode)
            raise MatrixError(502, Codes.UNKNOWN, "Failed to fetch profile") from None
        if not isinstance(answer, dict):
            raise MatrixError(502, Codes.UNKNOWN, "Invalid profile from the remote server")
        return answer

    # -- published room directories ---------------------------------------------------------------------
    async def public_rooms(
        self,
        server: str,
        limit: Optional[int] = None,
        since: Optional[str] = None,
        search_filter: Optional[dict[str, Any]] = None,
        include_all_networks: bool = False,
        third_party_instance_id: Optional[str] = None,
    ) -> dict[str, Any]:
        """``server``'s published room directory: ``POST /publicRooms`` when there is a filter (the remote
        filters and paginates), else ``GET``. A server that does not know the POST form (404, 405,
        ``M_UNRECOGNIZED``) is asked with GET, for everything in one go, and ``matches`` filters here
        (as Synapse: without pagination then)."""
        if search_filter:
            body: dict[str, Any] = {"filter": search_filter, "include_all_networks": include_all_networks}
            if limit is not None:
                body["limit"] = limit
            if since is not None:
                body["since"] = since
            if third_party_instance_id is not None:
                body["third_party_instance_id"] = third_party_instance_id
            try:
                return _checked_room_list(await self._client.post_json(server, F1 + "/publicRooms", body))
            except FederationError as e:
                if not (e.status in (404, 405) or e.errcode in (Codes.UNRECOGNIZED, Codes.NOT_FOUND)):
                    raise _directory_error(server, e) from None
            except RequestSendFailed as e:
                raise _directory_error(server, e) from None
            log.info("{server} cannot filter its room directory: filtering here", server=server)
            everything = await self._get_public_rooms(server, None, None, include_all_networks, third_party_instance_id)
            return {"chunk": [entry for entry in everything["chunk"] if _matches_filter(entry, search_filter)]}
        return await self._get_public_rooms(server, limit, since, include_all_networks, third_party_instance_id)

    async def _get_public_rooms(
        self,
        server: str,
        limit: Optional[int],
        since: Optional[str],
        include_all_networks: bool,
        third_party_instance_id: Optional[str],
    ) -> dict[str, Any]:
        args: dict[str, Any] = {}
        if limit is not None:
            args["limit"] = limit
        if since is not None:
            args["since"] = since
        if include_all_networks:
            args["include_all_networks"] = True
        if third_party_instance_id is not None:
            args["third_party_instance_id"] = third_party_instance_id
        try:
            return _checked_room_list(await self._client.get_json(server, F1 + "/publicRooms", args))
        except (FederationError, RequestSendFailed) as e:
            raise _directory_error(server, e) from None

    # -- space hierarchies ----------------------------------------------------------------------------------
    async def hierarchy(self, via: list[str], room_id: str, suggested_only: bool) -> dict[str, Any]:
        """The federation hierarchy of ``room_id`` (``room``, ``children``, ``inaccessible_children``) from
        the first of ``via`` (at most three, never ourselves) that gives a usable one."""
        servers = [s for s in dict.fromkeys(via) if isinstance(s, str) and s and s != self.server_name]
        for server in servers[:MAX_HIERARCHY_SERVERS]:
            try:
                answer = await self._client.get_json(
                    server, f"{F1}/hierarchy/{quote(room_id, safe='')}", {"suggested_only": suggested_only}
                )
            except (FederationError, RequestSendFailed) as e:
                log.info("Hierarchy of {room} via {server} failed: {e}", room=room_id, server=server, e=e)
                continue
            checked = _checked_hierarchy(answer, room_id)
            if checked is None:
                log.info("Hierarchy of {room} via {server}: unusable answer", room=room_id, server=server)
                continue
            return checked
        raise HierarchyUnavailable(room_id)


def _directory_error(server: str, e: Exception) -> MatrixError:
    if isinstance(e, FederationError) and e.status == 400 and e.errcode:
        return MatrixError(400, e.errcode, _remote_message(e, "The server refused the request"))
    log.info("Room directory of {server} failed: {e}", server=server, e=e)
    return MatrixError(502, Codes.UNKNOWN, "Failed to fetch room list")


def _checked_room_list(answer: Any) -> dict[str, Any]:
    """A remote room directory page, or 502: a ``chunk`` of objects with a string ``room_id``."""
    chunk = answer.get("chunk") if isinstance(answer, dict) else None
    if not isinstance(chunk, list):
        raise MatrixError(502, Codes.UNKNOWN, "Invalid room list from the remote server")
    answer["chunk"] = [e for e in chunk if isinstance(e, dict) and isinstance(e.get("room_id"), str)]
    return answer


def _matches_filter(entry: dict[str, Any], search_filter: dict[str, Any]) -> bool:
    term = search_filter.get("generic_search_term")
    room_types = search_filter.get("room_types")
    return matches_search(entry, term if isinstance(term, str) else None, room_types if isinstance(room_types, list) else None)


def _checked_hierarchy(answer: Any, room_id: str) -> Optional[dict[str, Any]]:
    """The answer with malformed parts dropped, or None when its ``room`` is not a summary of ``room_id``."""
    if not isinstance(answer, dict):
        return None
    room = answer.get("room")
    if not isinstance(room, dict) or room.get("room_id") != room_id:
        return None
    children_state = room.get("children_state")
    room = dict(room)
    room["children_state"] = [
        ev for ev in (children_state if isinstance(children_state, list) else [])
        if isinstance(ev, dict)
        and ev.get("type") == "m.space.child"
        and isinstance(ev.get("state_key"), str)
        and isinstance(ev.get("content"), dict)
        and _valid_via(ev["content"].get("via"))
    ]
    children = answer.get("children")
    inaccessible = answer.get("inaccessible_children")
    return {
        "room": room,
        "children": [c for c in (children if isinstance(children, list) else [])
                     if isinstance(c, dict) and isinstance(c.get("room_id"), str)],
        "inaccessible_children": [r for r in (inaccessible if isinstance(inaccessible, list) else [])
                                  if isinstance(r, str)],
    }


def _valid_via(via: Any) -> bool:
    return isinstance(via, list) and bool(via) and all(isinstance(v, str) for v in via)


__all__ = ["FederationQueries", "HierarchyUnavailable"]
