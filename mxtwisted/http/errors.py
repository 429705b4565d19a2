"""Matrix errors: ``{"errcode": "M_...", "error": "..."}`` with an HTTP status.

Spec: Client-Server API, "Standard error response" and "Common error codes".
Handlers raise :class:`MatrixError`; :mod:`mxtwisted.http.resource` renders it in
one place.
"""

from __future__ import annotations

from typing import Any, Optional


class Codes:
    """The spec's error codes (only names; the status comes with each raise)."""

    FORBIDDEN = "M_FORBIDDEN"
    UNKNOWN_TOKEN = "M_UNKNOWN_TOKEN"
    MISSING_TOKEN = "M_MISSING_TOKEN"
    USER_LOCKED = "M_USER_LOCKED"
    USER_SUSPENDED = "M_USER_SUSPENDED"
    BAD_JSON = "M_BAD_JSON"
    NOT_JSON = "M_NOT_JSON"
    NOT_FOUND = "M_NOT_FOUND"
    LIMIT_EXCEEDED = "M_LIMIT_EXCEEDED"
    UNRECOGNIZED = "M_UNRECOGNIZED"
    UNKNOWN = "M_UNKNOWN"
    UNAUTHORIZED = "M_UNAUTHORIZED"
    USER_DEACTIVATED = "M_USER_DEACTIVATED"
    USER_IN_USE = "M_USER_IN_USE"
    INVALID_USERNAME = "M_INVALID_USERNAME"
    ROOM_IN_USE = "M_ROOM_IN_USE"
    INVALID_ROOM_STATE = "M_INVALID_ROOM_STATE"
    THREEPID_IN_USE = "M_THREEPID_IN_USE"
    THREEPID_NOT_FOUND = "M_THREEPID_NOT_FOUND"
    THREEPID_AUTH_FAILED = "M_THREEPID_AUTH_FAILED"
    THREEPID_DENIED = "M_THREEPID_DENIED"
    SERVER_NOT_TRUSTED = "M_SERVER_NOT_TRUSTED"
    UNSUPPORTED_ROOM_VERSION = "M_UNSUPPORTED_ROOM_VERSION"
    INCOMPATIBLE_ROOM_VERSION = "M_INCOMPATIBLE_ROOM_VERSION"
    BAD_STATE = "M_BAD_STATE"
    GUEST_ACCESS_FORBIDDEN = "M_GUEST_ACCESS_FORBIDDEN"
    CAPTCHA_NEEDED = "M_CAPTCHA_NEEDED"
    CAPTCHA_INVALID = "M_CAPTCHA_INVALID"
    MISSING_PARAM = "M_MISSING_PARAM"
    INVALID_PARAM = "M_INVALID_PARAM"
    TOO_LARGE = "M_TOO_LARGE"
    EXCLUSIVE = "M_EXCLUSIVE"
    RESOURCE_LIMIT_EXCEEDED = "M_RESOURCE_LIMIT_EXCEEDED"
    CANNOT_LEAVE_SERVER_NOTICE_ROOM = "M_CANNOT_LEAVE_SERVER_NOTICE_ROOM"
    THREEPID_MEDIUM_NOT_SUPPORTED = "M_THREEPID_MEDIUM_NOT_SUPPORTED"
    WEAK_PASSWORD = "M_WEAK_PASSWORD"
    UNKNOWN_POS = "M_UNKNOWN_POS"
    WRONG_ROOM_KEYS_VERSION = "M_WRONG_ROOM_KEYS_VERSION"
    PROFILE_TOO_LARGE = "M_PROFILE_TOO_LARGE"
    KEY_TOO_LARGE = "M_KEY_TOO_LARGE"


class MatrixError(Exception):
    """An error with a spec error code, rendered as the standard error response.

    ``extra`` fields (for example ``retry_after_ms`` for M_LIMIT_EXCEEDED) are
    added to the JSON body; ``headers`` to the HTTP response.
    """

    def __init__(
        self,
        status: int,
        errcode: str,
        message: str,
        extra: Optional[dict[str, Any]] = None,
        headers: Optional[dict[str, str]] = None,
    ) -> None:
        super().__init__(f"{status} {errcode}: {message}")
        self.status = status
        self.errcode = errcode
        self.message = message
        self.extra = extra or {}
        self.headers = headers or {}

    def to_json(self) -> dict[str, Any]:
        if "flows" in self.extra:
            # A UIA 401: the body is the auth state; errcode/error only when a stage failed.
            return dict(self.extra)
        body: dict[str, Any] = {"errcode": self.errcode, "error": self.message}
        body.update(self.extra)
        return body


def not_found(message: str = "Not found") -> MatrixError:
    return MatrixError(404, Codes.NOT_FOUND, message)


def forbidden(message: str) -> MatrixError:
    return MatrixError(403, Codes.FORBIDDEN, message)


def bad_json(message: str) -> MatrixError:
    return MatrixError(400, Codes.BAD_JSON, message)


def missing_param(name: str) -> MatrixError:
    return MatrixError(400, Codes.MISSING_PARAM, f"Missing parameter: {name}")


def invalid_param(message: str) -> MatrixError:
    return MatrixError(400, Codes.INVALID_PARAM, message)


def limit_exceeded(retry_after_ms: int) -> MatrixError:
    """429 M_LIMIT_EXCEEDED with ``retry_after_ms`` and the Retry-After header (seconds, rounded up)."""
    seconds = max(1, -(-retry_after_ms // 1000))
    return MatrixError(
        429,
        Codes.LIMIT_EXCEEDED,
        "Too many requests",
        extra={"retry_after_ms": retry_after_ms},
        headers={"Retry-After": str(seconds)},
    )
