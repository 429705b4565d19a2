"""Checking response bodies against the spec's bundled OpenAPI document (skipped when it is not there)."""

from __future__ import annotations

import json
import os
from typing import Any, Optional

from twisted.trial.unittest import SkipTest

from tests.support.spec import SPEC_DIR

#: The bundled OpenAPI document of the Client-Server API.
SPEC_PATH = os.path.join(SPEC_DIR, "client-server.json")
_loaded: dict[str, Optional[dict]] = {}


def _spec() -> Optional[dict]:
    if "doc" not in _loaded:
        try:
            with open(SPEC_PATH, encoding="utf-8") as f:
                _loaded["doc"] = json.load(f)
        except OSError:
            _loaded["doc"] = None
    return _loaded["doc"]


def spec_problems(method: str, template: str, status: int, body: Any) -> list[str]:
    """How ``body`` (answering ``method template`` with ``status``) violates the spec's schema."""
    import jsonschema

    doc = _spec()
    if doc is None:
        raise SkipTest(f"no Client-Server OpenAPI document at {SPEC_PATH} (set MATRIX_SPEC_DIR)")
    responses = doc["paths"][template][method.lower()]["responses"]
    entry = responses.get(str(status))
    if entry is None:
        return [f"status {status} is not documented for {method} {template}"]
    schema = entry.get("content", {}).get("application/json", {}).get("schema")
    if schema is None:
        return []
    validator = jsonschema.Draft202012Validator(schema)
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(body)]


def event_problems(event_type: str, event: Any) -> list[str]:
    """How ``event`` violates the spec's JSON schema of ``event_type`` (e.g. ``m.receipt``)."""
    import jsonschema

    path = os.path.join(os.path.dirname(SPEC_PATH), "event-schemas", f"{event_type}.json")
    try:
        with open(path, encoding="utf-8") as f:
            schema = json.load(f)
    except OSError:
        raise SkipTest(f"no event schema at {path}") from None
    validator = jsonschema.Draft202012Validator(schema)
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(event)]


class SpecAssertions:
    def assertMatchesSpec(self, method: str, template: str, status: int, body: Any) -> None:
        self.assertEqual(spec_problems(method, template, status, body), [], body)  # type: ignore[attr-defined]

    def assertValidEvent(self, event_type: str, event: Any) -> None:
        self.assertEqual(event_problems(event_type, event), [], event)  # type: ignore[attr-defined]
