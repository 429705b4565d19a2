"""Tests for mxtwisted.events.canonical_json (Appendices, "Canonical JSON")."""

from __future__ import annotations

import json
import re

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from mxtwisted.events.canonical_json import (
    CANONICALJSON_MAX_INT,
    CANONICALJSON_MIN_INT,
    CanonicalJsonError,
    check_canonical_json,
    encode_canonical_json,
    parse_json_strict,
)


def spec_reference_canonical_json(value):
    """The reference implementation printed in the spec appendix "Canonical JSON"."""
    return json.dumps(
        value,
        ensure_ascii=False,
        separators=(",", ":"),
        sort_keys=True,
    ).encode("UTF-8")


# Every "Given ... / The following canonical JSON should be produced" pair of
# the appendix, input as the JSON text printed there.
SPEC_EXAMPLES = [
    ("{}", "{}"),
    ('{\n    "one": 1,\n    "two": "Two"\n}', '{"one":1,"two":"Two"}'),
    ('{\n    "b": "2",\n    "a": "1"\n}', '{"a":"1","b":"2"}'),
    ('{"b":"2","a":"1"}', '{"a":"1","b":"2"}'),
    (
        """{
    "auth": {
        "success": true,
        "mxid": "@john.doe:example.com",
        "profile": {
            "display_name": "John Doe",
            "three_pids": [
                {
                    "medium": "email",
                    "address": "john.doe@example.org"
                },
                {
                    "medium": "msisdn",
                    "address": "123456789"
                }
            ]
        }
    }
}""",
        '{"auth":{"mxid":"@john.doe:example.com","profile":{"display_name":"John Doe","three_pids":'
        '[{"address":"john.doe@example.org","medium":"email"},{"address":"123456789","medium":"msisdn"}]},'
        '"success":true}}',
    ),
    ('{\n    "a": "日本語"\n}', '{"a":"日本語"}'),
    ('{\n    "本": 2,\n    "日": 1\n}', '{"日":1,"本":2}'),
    ('{\n    "a": "\\u65E5"\n}', '{"a":"日"}'),
    ('{\n    "a": null\n}', '{"a":null}'),
]


class SpecExamplesTests(SynchronousTestCase):
    def test_appendix_examples(self):
        for given_text, expected in SPEC_EXAMPLES:
            value = parse_json_strict(given_text.encode("utf-8"))
            self.assertEqual(encode_canonical_json(value), expected.encode("utf-8"), given_text)
            check_canonical_json(value, strict=True)

    def test_appendix_example_negative_zero_and_exponent(self):
        # The last example: {"a": -0, "b": 1e10} -> {"a":0,"b":10000000000}.
        # As JSON values these are the integers 0 and 10**10, and encode so.
        self.assertEqual(encode_canonical_json({"a": -0, "b": 10**10}), b'{"a":0,"b":10000000000}')
        # "-0" in JSON text parses to the integer 0 ("-0 MUST NOT appear" in the output).
        self.assertEqual(encode_canonical_json(parse_json_strict(b'{"a": -0}')), b'{"a":0}')
        # 1e10 written with an exponent parses as a float, like in every major
        # server: refused by the strict (v6+) rules, Python's float form otherwise.
        parsed = parse_json_strict(b'{"b": 1e10}')
        self.assertIsInstance(parsed["b"], float)
        self.assertRaises(CanonicalJsonError, check_canonical_json, parsed, True)
        check_canonical_json(parsed, strict=False)
        self.assertEqual(encode_canonical_json(parsed), b'{"b":10000000000.0}')

    def test_matches_spec_reference_function(self):
        value = {"z": [1, "é", None, True], "a": {"y": "\n\u0001\u007f\u2028", "b": -5}}
        self.assertEqual(encode_canonical_json(value), spec_reference_canonical_json(value))


class EncodeTests(SynchronousTestCase):
    def test_escapes_follow_the_grammar(self):
        # Short escapes where the grammar has them, \u00XX (lowercase) for the
        # other control characters, everything else raw UTF-8.
        self.assertEqual(encode_canonical_json('\b\t\n\f\r"\\'), b'"\\b\\t\\n\\f\\r\\"\\\\"')
        self.assertEqual(encode_canonical_json("\x00\x1f\x0b"), b'"\\u0000\\u001f\\u000b"')
        self.assertEqual(encode_canonical_json("/\x7f\u2028\U0001f600"), '"/\x7f\u2028\U0001f600"'.encode())

    def test_keys_sorted_by_code_point(self):
        # Code point order, not UTF-16 order: U+FFFF sorts before U+10000.
        value = {"\U00010000": 1, "\uffff": 2, "B": 3, "a": 4}
        self.assertEqual(encode_canonical_json(value), '{"B":3,"a":4,"\uffff":2,"\U00010000":1}'.encode())

    def test_unencodable_raises(self):
        for bad in (float("nan"), float("inf"), {"a": float("-inf")}, "\ud800", {1, 2}, object()):
            self.assertRaises(CanonicalJsonError, encode_canonical_json, bad)
        self.assertTrue(issubclass(CanonicalJsonError, ValueError))


class CheckTests(SynchronousTestCase):
    def test_integer_range(self):
        for ok in (0, 1, -1, CANONICALJSON_MAX_INT, CANONICALJSON_MIN_INT, True, False):
            check_canonical_json({"n": [ok]}, strict=True)
        self.assertEqual(CANONICALJSON_MAX_INT, 2**53 - 1)
        self.assertEqual(CANONICALJSON_MIN_INT, -(2**53) + 1)
        for bad in (2**53, -(2**53), 2**64):
            self.assertRaises(CanonicalJsonError, check_canonical_json, {"a": {"b": [bad]}}, True)
            check_canonical_json({"a": {"b": [bad]}}, strict=False)

    def test_floats(self):
        for f in (1.0, 0.5, -0.0, 1e10):
            self.assertRaises(CanonicalJsonError, check_canonical_json, [f], True)
            check_canonical_json([f], strict=False)

    def test_never_allowed(self):
        for bad in (
            float("nan"),
            float("inf"),
            float("-inf"),
            {1: "a"},
            {None: "a"},
            {"a": {1, 2}},
            b"bytes",
            "\udc00",
            {"\ud800": 1},
        ):
            for strict in (True, False):
                self.assertRaises(CanonicalJsonError, check_canonical_json, bad, strict)

    def test_error_names_the_path(self):
        e = self.assertRaises(CanonicalJsonError, check_canonical_json, {"content": {"x": [1, 2.5]}}, True)
        self.assertIn("$.content.x[1]", str(e))

    def test_deep_nesting_does_not_recurse(self):
        value: list = []
        for _ in range(5000):
            value = [value]
        check_canonical_json(value, strict=True)


class ParseStrictTests(SynchronousTestCase):
    def test_valid(self):
        self.assertEqual(
            parse_json_strict(b'{"a":[1,-2,"x",null,true,false,{}]}'), {"a": [1, -2, "x", None, True, False, {}]}
        )
        self.assertEqual(parse_json_strict('{"a": 1}'), {"a": 1})
        self.assertEqual(
            parse_json_strict(b'"\\u00e9\\ud83d\\ude00"'), "\u00e9\U0001f600"
        )  # a surrogate *pair* is fine
        self.assertEqual(parse_json_strict(b"12345678901234567890"), 12345678901234567890)

    def test_rejects_non_json(self):
        for bad in (
            b"NaN",
            b'{"a": NaN}',
            b"[Infinity]",
            b"[-Infinity]",
            b"[1e400]",
            b"[-1e400]",
            b'{"a": 1, "a": 2}',
            b'{"x": {"a": 1, "a": 1}}',
            b"\xff\xfe{}",
            b'{"a": "\xc3"}',
            b"\xef\xbb\xbf{}",
            '{"a": 1}'.encode("utf-16"),
            b'"\\ud800"',
            b'{"\\udfff": 1}',
            b'"a\nb"',
            b"{}x",
            b"",
            b"{'a': 1}",
            b"[1,]",
            b"01",
            b"9" * 5000,
        ):
            self.assertRaises(CanonicalJsonError, parse_json_strict, bad)

    def test_duplicate_keys_when_allowed(self):
        self.assertEqual(parse_json_strict(b'{"a": 1, "a": 2}', allow_duplicate_keys=True), {"a": 2})

    def test_deep_nesting_is_an_error_not_a_crash(self):
        self.assertRaises(CanonicalJsonError, parse_json_strict, b"[" * 100000 + b"]" * 100000)


# JSON values within the strict canonical JSON rules.
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=CANONICALJSON_MIN_INT, max_value=CANONICALJSON_MAX_INT)
    | st.text(st.characters(exclude_categories=("Cs",))),
    lambda children: (
        st.lists(children, max_size=5)
        | st.dictionaries(st.text(st.characters(exclude_categories=("Cs",)), max_size=8), children, max_size=5)
    ),
    max_leaves=30,
)


def reorder(value, rnd):
    """The same JSON value with every object's key insertion order shuffled."""
    if isinstance(value, dict):
        items = list(value.items())
        rnd.shuffle(items)
        return {k: reorder(v, rnd) for k, v in items}
    if isinstance(value, list):
        return [reorder(v, rnd) for v in value]
    return value


# The appendix grammar, as a regular expression over the encoded text.
_CHAR = r'(?:[\x20\x21\x23-\x5b\x5d-\U0010ffff]|\\[btnfr"\\]|\\u000[0-7bef]|\\u001[0-9a-f])'
_STRING = rf'"{_CHAR}*"'
_TOKEN = re.compile(rf"{_STRING}|-?(?:0|[1-9][0-9]*)(?![0-9])|true|false|null|[{{}}\[\]:,]")


def matches_grammar(text: str) -> bool:
    pos = 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m:
            return False
        pos = m.end()
    return True


class PropertyTests(SynchronousTestCase):
    def test_grammar_checker_itself(self):
        self.assertTrue(matches_grammar('{"a":[1,-2,"\\u001f\\n"],"b":null}'))
        for not_canonical in ('{"a": 1}', "[1.0]", "[1e10]", '["\\u001F"]', '["\\/"]', '["\x01"]', "[01]"):
            self.assertFalse(matches_grammar(not_canonical), not_canonical)

    @given(json_values)
    def test_round_trip(self, value):
        encoded = encode_canonical_json(value)
        self.assertEqual(json.loads(encoded), value)
        self.assertEqual(parse_json_strict(encoded), value)
        check_canonical_json(value, strict=True)

    @given(json_values, st.randoms(use_true_random=False))
    def test_deterministic_under_key_order(self, value, rnd):
        self.assertEqual(encode_canonical_json(reorder(value, rnd)), encode_canonical_json(value))

    @given(json_values)
    def test_same_as_spec_reference_and_idempotent(self, value):
        encoded = encode_canonical_json(value)
        self.assertEqual(encoded, spec_reference_canonical_json(value))
        self.assertEqual(encode_canonical_json(json.loads(encoded)), encoded)

    @given(json_values)
    def test_output_follows_the_grammar(self, value):
        self.assertTrue(matches_grammar(encode_canonical_json(value).decode("utf-8")))

    @given(st.floats(allow_nan=False, allow_infinity=False))
    def test_strict_refuses_every_float(self, f):
        self.assertRaises(CanonicalJsonError, check_canonical_json, {"f": f}, True)
