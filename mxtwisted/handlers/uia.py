"""User-Interactive Authentication (UIA).

Spec: Client-Server API, "User-Interactive Authentication API". An endpoint
that needs UIA calls :meth:`UserInteractiveAuth.check` with its flows; until a
flow is complete the client gets ``401`` with ``flows``, ``params``,
``session`` and ``completed`` (plus ``errcode``/``error`` when the last stage
failed). Sessions live in the database so they survive a restart, are tied to
the endpoint (URI and method) that created them, and expire.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Optional

from twisted.internet.interfaces import IReactorTime

from mxtwisted.handlers.auth import Requester
from mxtwisted.http.errors import Codes, MatrixError
from mxtwisted.storage.uia import UIAStore

#: A stage checker: (auth dict, session id, requester) → the stage's result (stored), or raises
#: MatrixError (the stage failed; the client may retry).
StageChecker = Callable[[dict, str, Optional[Requester]], Awaitable[Any]]

DUMMY = "m.login.dummy"
PASSWORD = "m.login.password"
REGISTRATION_TOKEN = "m.login.registration_token"


@dataclass
class UIAResult:
    """A completed UIA: what each stage established, and the request body to act on."""

    session_id: str
    completed: dict[str, Any]
    clientdict: dict[str, Any]
    serverdict: dict[str, Any]


class UserInteractiveAuth:
    def __init__(self, store: UIAStore, clock: IReactorTime, session_lifetime_ms: int = 86_400_000) -> None:
        self._store = store
        self._clock = clock
        self._lifetime_ms = session_lifetime_ms
        self._checkers: dict[str, StageChecker] = {DUMMY: self._check_dummy}
        self._expiry_hooks: list[Callable[[dict], Awaitable[None]]] = []

    def add_stage(self, stage_type: str, checker: StageChecker) -> None:
        self._checkers[stage_type] = checker

    def add_expiry_hook(self, hook: Callable[[dict], Awaitable[None]]) -> None:
        """Called with the server-side data of each session as it expires (to release what it reserved)."""
        self._expiry_hooks.append(hook)

    @property
    def store(self) -> UIAStore:
        return self._store

    @staticmethod
    async def _check_dummy(auth: dict, session_id: str, requester: Optional[Requester]) -> Any:
        return True

    def _now(self) -> int:
        return int(self._clock.seconds() * 1000)

    async def check(
        self,
        request: Any,
        body: dict,
        flows: list[list[str]],
        description: str,
        requester: Optional[Requester] = None,
        params: Optional[dict[str, Any]] = None,
    ) -> UIAResult:
        """Run one round of UIA for ``request``; returns when a flow is complete, else raises the 401."""
        auth = body.get("auth")
        if auth is not None and not isinstance(auth, dict):
            raise MatrixError(400, Codes.BAD_JSON, "'auth' must be an object")
        clientdict = {k: v for k, v in body.items() if k != "auth"}
        uri = request.path.decode("ascii", "replace")
        method = request.method.decode("ascii")
        session_id = auth.get("session") if auth else None
        if session_id is None:
            session_id = secrets.token_urlsafe(24)
            await self._store.create_session(session_id, self._now(), uri, method, description, clientdict)
            session = await self._store.get_session(session_id)
        else:
            if not isinstance(session_id, str):
                raise MatrixError(400, Codes.BAD_JSON, "'auth.session' must be a string")
            session = await self._store.get_session(session_id)
            if session is None or session.creation_ts + self._lifetime_ms < self._now():
                raise MatrixError(400, Codes.UNKNOWN, "Unknown or expired UIA session")
            if session.uri != uri or session.method != method:
                raise MatrixError(403, Codes.FORBIDDEN, "Requested operation has changed during the UI authentication session.")
            if clientdict:
                await self._store.set_clientdict(session_id, clientdict)
                session.clientdict = clientdict
        assert session is not None
        completed = dict(session.completed)
        error: Optional[MatrixError] = None
        stage_type = auth.get("type") if auth else None
        if stage_type is not None:
            allowed = {stage for flow in flows for stage in flow}
            checker = self._checkers.get(stage_type)
            if stage_type not in allowed or checker is None:
                error = MatrixError(400, Codes.UNRECOGNIZED, f"Unrecognized login type {stage_type!r}")
            else:
                try:
                    result = await checker(auth, session_id, requester)
                except MatrixError as e:
                    error = e
                else:
                    await self._store.mark_stage_complete(session_id, stage_type, result)
                    completed[stage_type] = result
                    session = await self._store.get_session(session_id) or session
        for flow in flows:
            if all(stage in completed for stage in flow):
                return UIAResult(session_id, completed, session.clientdict, session.serverdict)
        body_401: dict[str, Any] = {
            "flows": [{"stages": list(flow)} for flow in flows],
            "params": params or {},
            "session": session_id,
        }
        if completed:
            body_401["completed"] = list(completed)
        if error is not None:
            body_401["errcode"] = error.errcode
            body_401["error"] = error.message
        raise MatrixError(401, error.errcode if error else Codes.UNAUTHORIZED, error.message if error else "", extra=body_401)

    async def expire_sessions(self) -> int:
        """Delete expired sessions (run periodically by the service), each after its expiry hooks ran.

        A session's hooks run once, by whichever run deletes it, so what it reserved is released exactly once.
        """
        expired = await self._store.get_expired(self._now() - self._lifetime_ms)
        deleted = 0
        for session_id, _ in expired:
            # Whoever deletes the session runs its hooks, on its data as it was when deleted:
            # two concurrent runs never release twice, and nothing reserved meanwhile is missed.
            serverdict = await self._store.take_session(session_id)
            if serverdict is None:
                continue
            deleted += 1
            for hook in self._expiry_hooks:
                await hook(serverdict)
        return deleted
