"""The Matrix spec's OpenAPI documents, for checking responses in tests.

The documents live in ``shared/spec`` beside the checkout (as on developer
machines and in CI); ``MATRIX_SPEC_DIR`` points elsewhere. Without them a
check is skipped with the reason, never silently passed.
"""

from __future__ import annotations

import importlib.util
import os
from typing import Any

from twisted.trial.unittest import SkipTest

SPEC_DIR = os.environ.get("MATRIX_SPEC_DIR") or os.path.normpath(
    os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..", "shared", "spec")
)

_validators: dict[str, Any] = {}


def spec_file(name: str) -> str:
    """Path of a spec document (``client-server.json``, ``event-schemas/m.room.member.json``...)."""
    path = os.path.join(SPEC_DIR, name)
    if not os.path.exists(path):
        raise SkipTest(f"spec document {path} not available (set MATRIX_SPEC_DIR)")
    return path


def spec_problems(method: str, path: str, status: int, body: Any, document: str = "client-server.json") -> list[str]:
    """What the spec's OpenAPI finds wrong with a response (r0 paths are checked as v3, queries ignored)."""
    validator = _validators.get(document)
    if validator is None:
        spec = spec_file(document)
        loader = importlib.util.spec_from_file_location("_matrix_spec_validator", spec_file("fuzz/validate_response.py"))
        assert loader is not None and loader.loader is not None
        module = importlib.util.module_from_spec(loader)
        loader.loader.exec_module(module)
        validator = _validators[document] = module.SpecValidator(spec)
    path = path.split("?", 1)[0].replace("/_matrix/client/r0/", "/_matrix/client/v3/")
    return validator.validate(method, path, status, body)


class SpecCheckedCalls:
    """A TestCase mixin: ``await self.call(...)`` makes one request to ``self.hs`` and checks its status, its
    errcode and that the response conforms to the Client-Server OpenAPI."""

    hs: Any

    async def call(self, method: str, path: str, body: Any = None, token: str | None = None, raw: bytes | None = None,
                   expect: int | None = None, errcode: str | None = None, spec: bool = True) -> Any:
        status, response = await self.hs.request(method, path, body, token=token, raw=raw)
        if expect is not None:
            self.assertEqual(status, expect, response)  # type: ignore[attr-defined]
        if errcode is not None:
            self.assertEqual(response["errcode"], errcode, response)  # type: ignore[attr-defined]
        if spec:
            self.assertEqual(spec_problems(method, path, status, response), [])  # type: ignore[attr-defined]
        return response
