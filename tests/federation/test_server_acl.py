"""Server ACL rules (``m.room.server_acl``), checked by hand against the spec's text: the event schema's
five ordered rules, its example content, the glob appendix (``*``, ``?``), case-insensitive entries,
ports never considered, defaults for missing or malformed fields."""

from __future__ import annotations

from twisted.trial import unittest

from mxtwisted.federation.server_acl import is_ip_literal, server_allowed, strip_port

#: The example content of the spec's ``m.room.server_acl`` schema.
SPEC_EXAMPLE = {"allow_ip_literals": False, "allow": ["*"], "deny": ["*.evil.com", "evil.com"]}


class ServerAclTests(unittest.TestCase):
    def assert_allowed(self, content: object, *servers: str) -> None:
        for server in servers:
            self.assertTrue(server_allowed(content, server), f"{server} should be allowed by {content}")  # type: ignore[arg-type]

    def assert_denied(self, content: object, *servers: str) -> None:
        for server in servers:
            self.assertFalse(server_allowed(content, server), f"{server} should be denied by {content}")  # type: ignore[arg-type]

    # -- rule 1: no ACL ----------------------------------------------------------------------
    def test_no_acl_event_allows_everyone(self) -> None:
        self.assert_allowed(None, "example.org", "1.2.3.4", "[::1]:8448")

    # -- the spec's example ------------------------------------------------------------------
    def test_spec_example(self) -> None:
        self.assert_allowed(SPEC_EXAMPLE, "matrix.org", "example.org:8448", "notevil.com", "evil.community")
        # "evil.com, evil.com:8448, and evil.com:1234 would all match rules that apply to evil.com"
        self.assert_denied(SPEC_EXAMPLE, "evil.com", "evil.com:8448", "evil.com:1234")
        self.assert_denied(SPEC_EXAMPLE, "sub.evil.com", "a.b.evil.com:443")
        # allow_ip_literals false: v4 and v6 literals, with or without a port.
        self.assert_denied(SPEC_EXAMPLE, "1.2.3.4", "127.0.0.1:8448", "[::1]", "[2001:db8::1]:8448")

    # -- rule 2: IP literals -------------------------------------------------------------------
    def test_ip_literals_allowed_by_default(self) -> None:
        content = {"allow": ["*"]}
        self.assert_allowed(content, "1.2.3.4", "127.0.0.1:8448", "[::1]:8448")
        # "Defaults to true if missing or otherwise not a boolean."
        self.assert_allowed({"allow": ["*"], "allow_ip_literals": "false"}, "1.2.3.4")
        self.assert_allowed({"allow": ["*"], "allow_ip_literals": 0}, "1.2.3.4")
        self.assert_allowed({"allow": ["*"], "allow_ip_literals": True}, "1.2.3.4")

    def test_ip_literals_denied_before_allow(self) -> None:
        # Rule 2 comes before rule 4: an explicit allow entry does not help an IP literal.
        self.assert_denied({"allow": ["1.2.3.4"], "allow_ip_literals": False}, "1.2.3.4")
        # Names that only look numeric are not IP literals.
        self.assert_allowed({"allow": ["*"], "allow_ip_literals": False}, "1.2.3.4.example.org", "1.2.3")

    # -- rules 3 to 5 ------------------------------------------------------------------------------
    def test_deny_wins_over_allow(self) -> None:
        self.assert_denied({"allow": ["evil.com"], "deny": ["evil.com"]}, "evil.com")
        self.assert_denied({"allow": ["*"], "deny": ["*"]}, "example.org")

    def test_missing_allow_denies_everyone(self) -> None:
        # "Failing to provide an allow rule of some kind will prevent all servers from participating."
        self.assert_denied({}, "example.org", "1.2.3.4")
        self.assert_denied({"deny": ["evil.com"]}, "example.org")
        self.assert_denied({"allow": []}, "example.org")

    def test_not_in_allow_is_denied(self) -> None:
        content = {"allow": ["*.example.org", "matrix.org"]}
        self.assert_allowed(content, "matrix.org", "hs.example.org", "a.b.example.org:8448")
        self.assert_denied(content, "example.org", "matrix.org.evil.com", "evil.com")

    # -- globs ---------------------------------------------------------------------------------------
    def test_star_and_question_mark(self) -> None:
        content = {"allow": ["server?.org", "*.chat"]}
        self.assert_allowed(content, "server1.org", "serverX.org", "a.chat", ".chat")
        self.assert_denied(content, "server.org", "server12.org", "chat")

    def test_other_characters_are_literal(self) -> None:
        # '.' is not "any character", brackets and '+' are not regex syntax.
        self.assert_denied({"allow": ["a.b"]}, "axb")
        self.assert_allowed({"allow": ["a.b"]}, "a.b")
        self.assert_allowed({"allow": ["[::1]"]}, "[::1]:8448")
        self.assert_denied({"allow": ["a+b"]}, "aab")

    def test_whole_name_must_match(self) -> None:
        self.assert_denied({"allow": ["example.org"]}, "example.org.evil.com", "myexample.org")

    def test_case_insensitive(self) -> None:
        # The allow and deny entries are "case-insensitive glob expressions".
        self.assert_allowed({"allow": ["Example.ORG"]}, "example.org", "EXAMPLE.org:8448")
        self.assert_denied({"allow": ["*"], "deny": ["EVIL.com"]}, "evil.COM")

    def test_ports_in_entries_never_match(self) -> None:
        # Server names are matched without their port, so an entry with a port matches nothing.
        self.assert_denied({"allow": ["example.org:8448"]}, "example.org:8448", "example.org")

    # -- malformed content ---------------------------------------------------------------------------
    def test_invalid_entries_are_ignored(self) -> None:
        self.assert_allowed({"allow": ["*", 5, None, {"x": 1}]}, "example.org")
        self.assert_denied({"allow": [5, None, ["*"]]}, "example.org")
        # A deny that is not a list counts as empty; so does an allow.
        self.assert_allowed({"allow": ["*"], "deny": "evil.com"}, "evil.com")
        self.assert_denied({"allow": "*"}, "example.org")
        self.assert_denied({"allow": {"*": True}}, "example.org")

    # -- helpers ------------------------------------------------------------------------------------
    def test_strip_port(self) -> None:
        self.assertEqual(strip_port("example.org"), "example.org")
        self.assertEqual(strip_port("example.org:8448"), "example.org")
        self.assertEqual(strip_port("1.2.3.4:80"), "1.2.3.4")
        self.assertEqual(strip_port("[::1]:8448"), "[::1]")
        self.assertEqual(strip_port("[2001:db8::1]"), "[2001:db8::1]")

    def test_is_ip_literal(self) -> None:
        self.assertTrue(is_ip_literal("127.0.0.1"))
        self.assertTrue(is_ip_literal("[::1]"))
        self.assertFalse(is_ip_literal("example.org"))
        self.assertFalse(is_ip_literal("256.1.1.1"))
        self.assertFalse(is_ip_literal("1.2.3"))
