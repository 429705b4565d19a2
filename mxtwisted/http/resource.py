"""The root resource: routing, JSON in and out, errors, CORS.

Every handler is ``async def handler(request, **path_params)`` returning a
:class:`JsonResponse` (or ``(status, body)``), or a :class:`RawResponse` for
non-JSON bodies. Errors raised as :class:`MatrixError` become the spec's
standard error response; anything else is logged and becomes
``500 M_UNKNOWN`` without leaking internals.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Optional

from twisted.internet import defer
from twisted.internet.error import ConnectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web import server
from twisted.web.resource import Resource

from mxtwisted import __version__
from mxtwisted.http.errors import Codes, MatrixError
from mxtwisted.http.router import Router
from mxtwisted.http.site import MatrixRequest

log = Logger()

#: Spec: Client-Server API, "Web Browser Clients" (CORS).
CORS_HEADERS = {
    b"Access-Control-Allow-Origin": b"*",
    b"Access-Control-Allow-Methods": b"GET, HEAD, POST, PUT, DELETE, OPTIONS",
    b"Access-Control-Allow-Headers": b"X-Requested-With, Content-Type, Authorization, Date",
    b"Access-Control-Expose-Headers": b"Retry-After",
}


SERVER_HEADER = f"matrixhs/{__version__}".encode("ascii")


@dataclass
class RawResponse:
    """A non-JSON response (health checks, media)."""

    status: int
    body: bytes
    content_type: bytes = b"text/plain; charset=utf-8"
    headers: dict[str, str] = field(default_factory=dict)


def encode_json(obj: Any) -> bytes:
    """Compact UTF-8 JSON for responses."""
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not valid JSON")


def parse_json_object(request: MatrixRequest, allow_empty: bool = False) -> dict:
    """The request body as a JSON object.

    ``400 M_NOT_JSON`` if the body is not JSON (NaN and Infinity included),
    ``400 M_BAD_JSON`` if it is JSON but not an object.
    """
    raw = request.content.getvalue() if request.content is not None else b""
    if allow_empty and not raw.strip():
        return {}
    try:
        value = json.loads(raw.decode("utf-8"), parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise MatrixError(400, Codes.NOT_JSON, "Content not JSON.") from None
    if not isinstance(value, dict):
        raise MatrixError(400, Codes.BAD_JSON, "Content must be a JSON object.")
    if b"\\u" in raw and _has_lone_surrogate(value):
        raise MatrixError(400, Codes.BAD_JSON, "Content contains an unpaired UTF-16 surrogate.")
    return value


def _has_lone_surrogate(value: Any) -> bool:
    """JSON escapes can encode lone surrogates, which are not Unicode text and cannot be stored."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                return True
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


def query_arg(request: server.Request, name: str, default: Optional[str] = None) -> Optional[str]:
    """A query string argument decoded as UTF-8 (the last one if repeated)."""
    values = request.args.get(name.encode("ascii"))
    if not values:
        return default
    try:
        return values[-1].decode("utf-8")
    except UnicodeDecodeError:
        raise MatrixError(400, Codes.INVALID_PARAM, f"Query parameter {name!r} must be UTF-8") from None


class MatrixResource(Resource):
    """The single resource of a listener: all paths go through one :class:`Router`."""

    isLeaf = True

    def __init__(self, router: Router) -> None:
        super().__init__()
        self.router = router

    def render(self, request: MatrixRequest) -> Any:  # type: ignore[override]
        site = getattr(request.channel, "site", None)
        if site is not None and hasattr(site, "request_started"):
            site.request_started(request)
            request.notifyFinish().addBoth(lambda _: site.request_finished(request))
        for name, value in CORS_HEADERS.items():
            request.setHeader(name, value)
        request.setHeader(b"Server", SERVER_HEADER)
        d = defer.ensureDeferred(self._dispatch(request))
        d.addErrback(self._render_failure, request)
        d.addCallback(self._write, request)
        d.addErrback(self._write_failed, request)
        return server.NOT_DONE_YET

    async def _dispatch(self, request: MatrixRequest) -> Any:
        if getattr(request, "body_too_large", False):
            raise MatrixError(413, Codes.TOO_LARGE, "Request body too large")
        path = request.path
        if request.method == b"OPTIONS":
            methods = self.router.allowed_methods(path)
            if not methods:
                raise MatrixError(404, Codes.UNRECOGNIZED, "Unrecognized request")
            return RawResponse(204, b"", headers={"Allow": ", ".join(methods + ["OPTIONS"])})
        handler, params = self.router.match(request.method, path)
        result = await handler(request, **params)
        return result

    def _render_failure(self, failure: Failure, request: MatrixRequest) -> Any:
        if failure.check(MatrixError):
            return failure.value
        log.failure("Unhandled error in {method} {uri}", failure, method=request.method, uri=request.uri)
        return MatrixError(500, Codes.UNKNOWN, "Internal server error")

    def _write(self, result: Any, request: MatrixRequest) -> None:
        if request.finished or request._disconnected:
            return
        headers: dict[str, str] = {}
        if isinstance(result, MatrixError):
            status, body, content_type = result.status, encode_json(result.to_json()), b"application/json"
            headers = result.headers
        elif isinstance(result, RawResponse):
            status, body, content_type, headers = result.status, result.body, result.content_type, result.headers
        elif isinstance(result, tuple):
            status, obj = result
            body, content_type = encode_json(obj), b"application/json"
        else:
            status, body, content_type = 200, encode_json(result), b"application/json"
        request.setResponseCode(status)
        request.setHeader(b"Cache-Control", b"no-cache, no-store, must-revalidate")
        for name, value in headers.items():
            request.setHeader(name, value)
        if status != 204:
            request.setHeader(b"Content-Type", content_type)
            request.setHeader(b"Content-Length", str(len(body)).encode("ascii"))
            if request.method != b"HEAD":
                request.write(body)
        request.finish()

    def _write_failed(self, failure: Failure, request: MatrixRequest) -> None:
        if not failure.check(ConnectionDone):
            log.failure("Failed to write response for {uri}", failure, uri=request.uri)
