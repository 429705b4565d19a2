"""Request authentication between servers: the ``X-Matrix`` Authorization header.

Spec: Server-Server API, "Authentication" > "Request Authentication". The
sender signs the JSON object ``{"method", "uri", "origin", "destination",
"content"}`` (``content`` only when the request has a body; ``uri`` is the
path with its query string, exactly as sent) and sends the signature as::

    Authorization: X-Matrix origin="a.example",destination="b.example",key="ed25519:abc",sig="..."

The receiver rebuilds the same object from the request and checks the
signature with the origin's key, found through the :class:`Keyring`.
"""

from __future__ import annotations

import json
import re
from typing import Any, Awaitable, Callable, Iterable, Optional

from twisted.logger import Logger

from mxtwisted.events.signing import SignatureVerifyError, SigningKey, make_key_id, sign_json
from mxtwisted.federation.discovery import InvalidServerName, parse_server_name
from mxtwisted.http.errors import Codes, MatrixError

log = Logger()

_PARAM_RE = re.compile(r'\s*([A-Za-z0-9_-]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^,\s"]*))\s*(?:,|$)')


def request_json(method: str, uri: str, origin: str, destination: str, content: Any = None) -> dict[str, Any]:
    """The object an X-Matrix signature covers."""
    obj: dict[str, Any] = {"method": method, "uri": uri, "origin": origin, "destination": destination}
    if content is not None:
        obj["content"] = content
    return obj


def x_matrix_header(
    origin: str, destination: str, signing_key: SigningKey, method: str, uri: str, content: Any = None
) -> str:
    """The Authorization header value for one request (signed with ``signing_key``)."""
    signed = sign_json(request_json(method, uri, origin, destination, content), origin, signing_key)
    key_id = make_key_id(signing_key)
    sig = signed["signatures"][origin][key_id]
    return f'X-Matrix origin="{origin}",destination="{destination}",key="{key_id}",sig="{sig}"'


def parse_x_matrix_header(value: str) -> dict[str, str]:
    """The parameters of an ``X-Matrix`` header (quoted or bare values; unknown parameters kept).

    Raises ``ValueError`` if it is not an X-Matrix header or cannot be parsed.
    """
    scheme, _, rest = value.strip().partition(" ")
    if scheme.lower() != "x-matrix":
        raise ValueError("not an X-Matrix header")
    params: dict[str, str] = {}
    pos = 0
    rest = rest.strip()
    while pos < len(rest):
        m = _PARAM_RE.match(rest, pos)
        if m is None or m.end() == pos:
            raise ValueError("malformed X-Matrix parameters")
        name = m.group(1).lower()
        raw = m.group(2) if m.group(2) is not None else m.group(3)
        params[name] = re.sub(r"\\(.)", r"\1", raw)
        pos = m.end()
    return params


def _unauthorized(message: str) -> MatrixError:
    return MatrixError(401, Codes.UNAUTHORIZED, message)


class FederationAuthenticator:
    """Checks the X-Matrix header of incoming federation requests.

    ``domain_whitelist`` is ``federation_domain_whitelist``: None lets every
    server in; a list lets only those (others get 403 M_FORBIDDEN).
    """

    def __init__(
        self,
        server_name: str,
        keyring: Any,
        clock: Any,
        domain_whitelist: Optional[Iterable[str]] = None,
        backoff: Any = None,
    ) -> None:
        self._server_name = server_name
        self._keyring = keyring
        self._clock = clock
        self._whitelist = frozenset(domain_whitelist) if domain_whitelist is not None else None
        #: :class:`~mxtwisted.federation.backoff.DestinationBackoff`: a server that talks to us is up.
        self._backoff = backoff

    def is_allowed(self, server_name: str) -> bool:
        """Whether ``federation_domain_whitelist`` lets us talk to ``server_name``."""
        return self._whitelist is None or server_name in self._whitelist

    async def authenticate(self, request: Any) -> str:
        """Verify the request's X-Matrix header; returns the origin server name.

        401 M_UNAUTHORIZED for a missing, malformed or wrongly signed header, a
        destination other than us, or a key we cannot find; 403 M_FORBIDDEN for
        an origin outside ``federation_domain_whitelist``.
        """
        headers = request.requestHeaders.getRawHeaders(b"Authorization") or []
        params: Optional[dict[str, str]] = None
        for raw in headers:
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                continue
            if text.strip().lower().startswith("x-matrix"):
                try:
                    params = parse_x_matrix_header(text)
                except ValueError:
                    raise _unauthorized("Malformed X-Matrix Authorization header") from None
                break
        if params is None:
            raise _unauthorized("Missing X-Matrix Authorization header")
        origin, key_id, sig = params.get("origin"), params.get("key"), params.get("sig")
        if not origin or not key_id or not sig:
            raise _unauthorized("X-Matrix header needs origin, key and sig")
        try:
            parse_server_name(origin)
        except InvalidServerName:
            raise _unauthorized("Invalid origin in X-Matrix header") from None
        # destination is optional for older servers; when present it must be us.
        destination = params.get("destination")
        if destination is not None and destination != self._server_name:
            raise _unauthorized("X-Matrix destination is not this server")
        if not self.is_allowed(origin):
            raise MatrixError(403, Codes.FORBIDDEN, "Federation with this server is not allowed")
        if self._backoff is not None:
            # Before the signature check, which may need its keys from it. (A forged origin only costs
            # one early retry of that server.)
            self._backoff.succeeded(origin)
        content = self._content(request)
        obj = request_json(
            request.method.decode("ascii"),
            request.uri.decode("ascii", errors="replace"),
            origin,
            self._server_name,
            content,
        )
        obj["signatures"] = {origin: {key_id: sig}}
        now_ms = int(self._clock.seconds() * 1000)
        try:
            await self._keyring.verify_json_for_server(origin, obj, minimum_valid_until_ts=now_ms)
        except SignatureVerifyError as e:
            raise _unauthorized(f"Invalid X-Matrix signature: {e}") from None
        return origin

    @staticmethod
    def _content(request: Any) -> Any:
        raw = request.content.getvalue() if request.content is not None else b""
        if not raw:
            return None
        try:
            return json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            # The signature cannot cover a non-JSON body: such requests are not ours to accept.
            raise MatrixError(400, Codes.NOT_JSON, "Content not JSON.") from None


def federation_handler(
    authenticator: FederationAuthenticator, handler: Callable[..., Awaitable[Any]]
) -> Callable[..., Awaitable[Any]]:
    """Wrap ``async def handler(request, origin, **params)`` into a router handler that authenticates first."""

    async def wrapped(request: Any, **params: Any) -> Any:
        origin = await authenticator.authenticate(request)
        return await handler(request, origin, **params)

    wrapped.__name__ = getattr(handler, "__name__", "federation_handler")
    wrapped.__doc__ = handler.__doc__
    return wrapped


__all__ = [
    "FederationAuthenticator",
    "federation_handler",
    "parse_x_matrix_header",
    "request_json",
    "x_matrix_header",
]
