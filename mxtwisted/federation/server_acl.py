"""Server access control lists (``m.room.server_acl``): may a server take part in a room?

Spec: Client-Server API, "Server Access Control Lists (ACLs) for rooms" (the
event's content) and Server-Server API, "Server Access Control Lists (ACLs)"
(where it applies). Pure logic, no I/O: the caller reads the room's current
ACL event and passes its content (None when the room has none).

The rules, in the spec's order:

1. no ``m.room.server_acl`` in the room state: allow;
2. an IP literal server name (v4, or bracketed v6) while ``allow_ip_literals``
   is ``false``: deny (the flag defaults to true when missing or not a boolean);
3. a match in ``deny``: deny;
4. a match in ``allow``: allow;
5. otherwise deny, so a missing ``allow`` list lets no server in.

Entries are case-insensitive glob patterns (``*`` any run of characters,
``?`` exactly one), matched against the whole server name without its port.
As Synapse does, a list that is not a list counts as empty and entries that
are not strings are skipped, so a malformed event never breaks a room.
"""

from __future__ import annotations

import ipaddress
import re
from functools import lru_cache
from typing import Any, Optional

#: The state key of the ACL event in a room's state.
SERVER_ACL_KEY = ("m.room.server_acl", "")


def strip_port(server_name: str) -> str:
    """The host part of a server name: ``evil.com:8448`` → ``evil.com``, ``[::1]:80`` → ``[::1]``."""
    if server_name.startswith("["):
        end = server_name.find("]")
        return server_name[: end + 1] if end != -1 else server_name
    return server_name.partition(":")[0]


def is_ip_literal(host: str) -> bool:
    """Whether a host (port already stripped) is an IPv4 literal or a bracketed IPv6 literal."""
    if host.startswith("["):
        return True
    try:
        ipaddress.IPv4Address(host)
    except ValueError:
        return False
    return True


@lru_cache(maxsize=1024)
def _glob(pattern: str) -> re.Pattern[str]:
    """A compiled whole-string, case-insensitive regex for a Matrix glob (cached: ACLs are re-read often)."""
    parts = [".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern]
    return re.compile("".join(parts), re.IGNORECASE | re.DOTALL)


def _patterns(value: Any) -> list[str]:
    if not isinstance(value, (list, tuple)):
        return []
    return [entry for entry in value if isinstance(entry, str)]


def server_allowed(acl_content: Optional[dict[str, Any]], server_name: str) -> bool:
    """Whether ``server_name`` (with or without a port) may take part in a room whose current
    ``m.room.server_acl`` content is ``acl_content`` (None: the room has no ACL)."""
    if acl_content is None:
        return True
    if not isinstance(acl_content, dict):
        acl_content = {}
    host = strip_port(server_name)
    allow_ip_literals = acl_content.get("allow_ip_literals", True)
    if not isinstance(allow_ip_literals, bool):
        allow_ip_literals = True
    if not allow_ip_literals and is_ip_literal(host):
        return False
    if any(_glob(p).fullmatch(host) for p in _patterns(acl_content.get("deny"))):
        return False
    return any(_glob(p).fullmatch(host) for p in _patterns(acl_content.get("allow")))
