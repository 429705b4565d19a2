"""Canonical JSON: the one byte encoding of a JSON value that Matrix signs and hashes.

Spec: Appendices, "Signing JSON" > "Canonical JSON" (the encoding and its
grammar), and the room version fragments "Canonical JSON"
(``rooms/fragments/v1-canonical-json.md``: rooms v1-v5 MUST NOT enforce the
number rules strictly; ``rooms/fragments/v6-canonical-json.md``: rooms v6 and
later MUST enforce them, dropping events that break them).

The encoding itself is done by the ``canonicaljson`` library (UTF-8, no
insignificant white space, object keys sorted by code point, no ``\\uXXXX``
escapes for non-ASCII code points). This module adds the checks the library
leaves to its caller and a strict parser for JSON received from the network.

A note on numbers written with an exponent or a fraction: the appendix's last
example shows ``{"a": -0, "b": 1e10}`` encoding to ``{"a":0,"b":10000000000}``,
which is what the JSON *values* 0 and 10**10 encode to. :func:`parse_json_strict`
does not turn ``1e10`` into an integer, though: like Synapse (and the other
major servers) it parses it as a float, which :func:`check_canonical_json`
refuses in strict mode (rooms v6+), and which is encoded the way Python writes
floats in the lenient mode of rooms v1-v5, so that hashes of old events stay
identical to the ones the servers that created them computed.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from canonicaljson import encode_canonical_json as _library_encode

__all__ = [
    "CANONICALJSON_MAX_INT",
    "CANONICALJSON_MIN_INT",
    "CanonicalJsonError",
    "check_canonical_json",
    "encode_canonical_json",
    "parse_json_strict",
]

#: Largest integer allowed by the strict canonical JSON rules: (2**53) - 1.
CANONICALJSON_MAX_INT: int = (2**53) - 1
#: Smallest integer allowed by the strict canonical JSON rules: -(2**53) + 1.
CANONICALJSON_MIN_INT: int = -CANONICALJSON_MAX_INT


class CanonicalJsonError(ValueError):
    """A value (or JSON text) that cannot be, or may not be, canonical JSON."""


def encode_canonical_json(obj: Any) -> bytes:
    """Encode ``obj`` as canonical JSON bytes.

    Spec: Appendices, "Canonical JSON". The shortest UTF-8 JSON encoding with
    object keys sorted by Unicode code point. This does not check the strict
    number rules: call :func:`check_canonical_json` first where they apply.

    Raises :class:`CanonicalJsonError` when ``obj`` cannot be encoded at all
    (NaN or infinite floats, strings holding lone surrogates, objects that are
    not JSON values).
    """
    try:
        return _library_encode(obj)
    except (ValueError, TypeError, RecursionError) as e:
        raise CanonicalJsonError(f"cannot encode as canonical JSON: {e}") from None


_SURROGATE = re.compile("[\ud800-\udfff]")


def _has_surrogate(s: str) -> bool:
    # Lone surrogates cannot be encoded as UTF-8; JSON text can only smuggle
    # them in as \uD800-style escapes. Checked for every string of every
    # received event: ASCII strings (most) are answered without a scan, the
    # others by the regex engine rather than a Python loop.
    return not s.isascii() and _SURROGATE.search(s) is not None


def check_canonical_json(obj: Any, strict: bool) -> None:
    """Check that ``obj`` is a JSON value that canonical JSON can represent.

    Spec: Appendices, "Canonical JSON"; rooms/fragments/v6-canonical-json.md.

    Always refused (nothing can encode them): values that are not JSON
    (only dict with str keys, list/tuple, str, int, float, bool and None are),
    NaN and infinite floats, strings or keys containing lone surrogates.

    Refused only when ``strict`` (room versions with
    ``RoomVersion.strict_canonicaljson``, that is v6 and later): any float
    (the spec allows integers only; note ``1.0`` and ``1e10`` parse as floats)
    and integers outside ``[-(2**53)+1, (2**53)-1]``.

    Raises :class:`CanonicalJsonError` naming the first offending value's path.
    """
    # An explicit stack rather than recursion: events are at most 64 KiB but a
    # hostile client body may nest deeply.
    stack: list[tuple[str, Any]] = [("$", obj)]
    while stack:
        path, value = stack.pop()
        if value is None or isinstance(value, bool):
            continue
        if isinstance(value, str):
            if _has_surrogate(value):
                raise CanonicalJsonError(f"{path}: string contains a lone surrogate")
            continue
        if isinstance(value, int):
            if strict and not (CANONICALJSON_MIN_INT <= value <= CANONICALJSON_MAX_INT):
                raise CanonicalJsonError(f"{path}: integer {value} is outside [-(2**53)+1, (2**53)-1]")
            continue
        if isinstance(value, float):
            if not math.isfinite(value):
                raise CanonicalJsonError(f"{path}: {value!r} is not a JSON number")
            if strict:
                raise CanonicalJsonError(f"{path}: floats are not allowed ({value!r})")
            continue
        if isinstance(value, dict):
            for k, v in value.items():
                if not isinstance(k, str):
                    raise CanonicalJsonError(f"{path}: object key {k!r} is not a string")
                if _has_surrogate(k):
                    raise CanonicalJsonError(f"{path}: object key contains a lone surrogate")
                stack.append((f"{path}.{k}", v))
            continue
        if isinstance(value, (list, tuple)):
            for i, v in enumerate(value):
                stack.append((f"{path}[{i}]", v))
            continue
        raise CanonicalJsonError(f"{path}: {type(value).__name__} is not a JSON value")


def _reject_constant(name: str) -> Any:
    raise CanonicalJsonError(f"{name} is not valid JSON")


def _parse_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        # e.g. 1e400, which Python would otherwise silently turn into inf.
        raise CanonicalJsonError(f"number {text} is out of range")
    return value


def _object_no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for k, v in pairs:
        if k in result:
            raise CanonicalJsonError(f"duplicate object key {k!r}")
        result[k] = v
    return result


def parse_json_strict(data: bytes | str, *, allow_duplicate_keys: bool = False) -> Any:
    """Parse JSON received from a client or another server, refusing what JSON does not allow.

    Spec: Appendices, "Canonical JSON" (the accepted value space) and RFC 8259.
    Python's own ``json`` module accepts several things that are not JSON; this
    refuses them all with :class:`CanonicalJsonError`:

    - the ``NaN``, ``Infinity`` and ``-Infinity`` literals, and numbers too
      large for a float (``1e400``, which Python turns into ``inf``);
    - bytes that are not UTF-8 (Python would guess UTF-16/32), and a UTF-8
      byte order mark;
    - strings or keys holding lone surrogates (``"\\ud800"``), which no
      canonical JSON encoder can write back out;
    - an object with the same key twice, unless ``allow_duplicate_keys`` (in
      which case, as in Python and Synapse, the last value wins). Different
      parsers keep different duplicates, so accepting them lets one server
      see a different event than another.

    Floats and integers of any size are returned as such; whether they are
    allowed depends on the room version, so the caller runs
    :func:`check_canonical_json` with the right ``strict`` flag.
    """
    if isinstance(data, (bytes, bytearray, memoryview)):
        try:
            text = bytes(data).decode("utf-8")
        except UnicodeDecodeError as e:
            raise CanonicalJsonError(f"JSON is not valid UTF-8: {e}") from None
    else:
        text = data
    try:
        value = json.loads(
            text,
            parse_constant=_reject_constant,
            parse_float=_parse_float,
            object_pairs_hook=None if allow_duplicate_keys else _object_no_duplicates,
        )
    except CanonicalJsonError:
        raise
    except (ValueError, RecursionError) as e:
        # json.JSONDecodeError, and ValueError for integers with more digits
        # than Python's int-from-string limit.
        raise CanonicalJsonError(f"invalid JSON: {e}") from None
    # Surrogates and nothing else: the number rules depend on the room version.
    _check_no_surrogates(value)
    return value


def _check_no_surrogates(value: Any) -> None:
    stack = [value]
    while stack:
        v = stack.pop()
        if isinstance(v, str):
            if _has_surrogate(v):
                raise CanonicalJsonError("JSON string contains a lone surrogate")
        elif isinstance(v, dict):
            for k, item in v.items():
                if _has_surrogate(k):
                    raise CanonicalJsonError("JSON object key contains a lone surrogate")
                stack.append(item)
        elif isinstance(v, list):
            stack.extend(v)
