"""The UIA stages matrixhs offers besides ``m.login.dummy``.

Spec: Client-Server API, "Authentication types": ``m.login.password`` (with an
identifier, checked through the auth provider chain, and bound to the
requester when there is one) and ``m.login.registration_token`` (a token an
admin created; its use is reserved for the session and completed when the
registration succeeds).
"""

from __future__ import annotations

from typing import Any, Optional

from twisted.internet.interfaces import IReactorTime

from mxtwisted.events.validation import is_valid_user_id
from mxtwisted.handlers.auth import Requester
from mxtwisted.handlers.auth_providers import AuthProviderChain
from mxtwisted.handlers.uia import PASSWORD, REGISTRATION_TOKEN, UserInteractiveAuth
from mxtwisted.http.errors import Codes, MatrixError
from mxtwisted.storage.accounts import UserStore
from mxtwisted.storage.uia import RegistrationTokenStore


def user_id_from_identifier(body: dict, server_name: str) -> Optional[str]:
    """The user ID named by a login/auth dict: ``identifier`` of type ``m.id.user`` or the legacy ``user`` field.

    Returns None if the dict names no user; raises 400 for malformed identifiers.
    """
    identifier = body.get("identifier")
    if identifier is None:
        user = body.get("user")
        if user is None:
            return None
        identifier = {"type": "m.id.user", "user": user}
    if not isinstance(identifier, dict):
        raise MatrixError(400, Codes.BAD_JSON, "'identifier' must be an object")
    id_type = identifier.get("type")
    if id_type != "m.id.user":
        if id_type in ("m.id.thirdparty", "m.id.phone"):
            raise MatrixError(400, Codes.UNRECOGNIZED, "Third-party identifiers are not supported by this server")
        raise MatrixError(400, Codes.UNRECOGNIZED, f"Unknown identifier type {id_type!r}")
    user = identifier.get("user")
    if not isinstance(user, str) or not user:
        raise MatrixError(400, Codes.INVALID_PARAM, "'identifier.user' must be a non-empty string")
    if user.startswith("@"):
        if not is_valid_user_id(user, historical=True):
            raise MatrixError(400, Codes.INVALID_PARAM, "Invalid user ID")
        return user
    return f"@{user.lower()}:{server_name}"


async def resolve_user_id(users: UserStore, user_id: str) -> str:
    """The registered user ID matching ``user_id`` exactly, or case-insensitively when unique (as Synapse)."""
    if await users.get_user(user_id) is not None:
        return user_id
    matches = await users.find_user_case_insensitive(user_id)
    return matches[0] if len(matches) == 1 else user_id


def install_stages(
    uia: UserInteractiveAuth,
    server_name: str,
    clock: IReactorTime,
    users: UserStore,
    providers: AuthProviderChain,
    registration_tokens: RegistrationTokenStore,
) -> None:
    """Register the password and registration-token stage checkers on ``uia``."""

    async def check_password(auth: dict, session_id: str, requester: Optional[Requester]) -> Any:
        user_id = user_id_from_identifier(auth, server_name)
        if user_id is None:
            if requester is None:
                raise MatrixError(400, Codes.MISSING_PARAM, "Missing 'identifier'")
            user_id = requester.user_id
        user_id = await resolve_user_id(users, user_id)
        if requester is not None and user_id != requester.user_id:
            raise MatrixError(403, Codes.FORBIDDEN, "The password must be the requesting user's")
        result = await providers.check_login(user_id, PASSWORD, auth)
        if result is None:
            raise MatrixError(403, Codes.FORBIDDEN, "Invalid password")
        return result.user_id

    async def check_registration_token(auth: dict, session_id: str, requester: Optional[Requester]) -> Any:
        token = auth.get("token")
        if not isinstance(token, str):
            raise MatrixError(400, Codes.MISSING_PARAM, "Missing 'token'")
        session = await uia.store.get_session(session_id)
        if session is not None and session.serverdict.get("registration_token") == token:
            return token  # already reserved for this session
        if not await registration_tokens.reserve(token, int(clock.seconds() * 1000)):
            raise MatrixError(401, Codes.UNAUTHORIZED, "Invalid registration token")
        await uia.store.set_server_value(session_id, "registration_token", token)
        return token

    async def release_unused_token(serverdict: dict) -> None:
        token = serverdict.get("registration_token")
        if isinstance(token, str) and not serverdict.get("registered_user_id"):
            await registration_tokens.release(token)

    uia.add_stage(PASSWORD, check_password)
    uia.add_stage(REGISTRATION_TOKEN, check_registration_token)
    uia.add_expiry_hook(release_unused_token)
