"""The spam pattern checker on its own: configuration, matching, the interface. Run: ``trial tests`` here."""

from __future__ import annotations

from mxtwisted.interfaces import ISpamChecker, Refusal
from twisted.logger import Logger
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from mxhs_spam_patterns import SpamPatterns


class FakeApi:
    server_name = "example.org"
    public_baseurl = None
    clock = None

    def get_logger(self) -> Logger:
        return Logger(namespace="mxhs_spam_patterns")


def checker(**config) -> SpamPatterns:
    return SpamPatterns(SpamPatterns.parse_config(config), FakeApi())


def message(body, sender="@a:example.org", event_type="m.room.message", **content) -> dict:
    return {"type": event_type, "sender": sender, "room_id": "!r:example.org", "event_id": "$e",
            "content": {"msgtype": "m.text", "body": body, **content}}


class ConfigTests(SynchronousTestCase):
    def test_valid_config(self):
        parsed = SpamPatterns.parse_config({"patterns": ["a+"], "event_types": ["m.sticker"], "case_sensitive": True,
                                            "errcode": "M_LIMIT_EXCEEDED", "message": "no", "exempt_users": ["@m:x"]})
        self.assertEqual([p.pattern for p in parsed["patterns"]], ["a+"])
        self.assertEqual(parsed["event_types"], {"m.sticker"})

    def test_invalid_configs(self):
        for config, fragment in (
            ({}, "at least one"),
            ({"patterns": []}, "at least one"),
            ({"patterns": "spam"}, "list of strings"),
            ({"patterns": ["("]}, "invalid pattern '('"),
            ({"patterns": ["x"], "case_sensitive": "yes"}, "case_sensitive"),
            ({"patterns": ["x"], "errcode": "FORBIDDEN"}, "errcode"),
            ({"patterns": ["x"], "message": 3}, "message"),
            ({"patterns": ["x"], "event_types": "m.room.message"}, "event_types"),
            ({"patterns": ["x"], "pattern": ["y"]}, "unknown option"),
            ([], "mapping"),
        ):
            with self.assertRaises(ValueError) as ctx:
                SpamPatterns.parse_config(config)
            self.assertIn(fragment, str(ctx.exception), config)

    def test_implements_the_interface(self):
        instance = checker(patterns=["x"])
        self.assertTrue(verifyObject(ISpamChecker, instance))


class MatchingTests(SynchronousTestCase):
    def test_refuses_matching_bodies(self):
        spam = checker(patterns=[r"buy cheap \w+ now", r"bit\.ly/"])
        self.assertEqual(spam.check_event_for_spam(message("BUY CHEAP pills NOW!!")),
                         Refusal("M_FORBIDDEN", "Message refused: it matches a spam pattern"))
        self.assertIsInstance(spam.check_event_for_spam(message("see https://bit.ly/xyz")), Refusal)
        self.assertIsNone(spam.check_event_for_spam(message("hello there")))
        self.assertIsNone(spam.check_event_for_spam(message("bitXly/")))

    def test_case_sensitive(self):
        spam = checker(patterns=["Spam"], case_sensitive=True)
        self.assertIsNone(spam.check_event_for_spam(message("spam")))
        self.assertIsNotNone(spam.check_event_for_spam(message("Spam")))

    def test_edits_are_checked(self):
        spam = checker(patterns=["spam"])
        edit = message("* fine", **{"m.new_content": {"msgtype": "m.text", "body": "spam after all"}})
        self.assertIsNotNone(spam.check_event_for_spam(edit))

    def test_only_configured_event_types_and_senders(self):
        spam = checker(patterns=["spam"], exempt_users=["@mod:example.org"])
        self.assertIsNone(spam.check_event_for_spam(message("spam", event_type="m.room.topic")))
        self.assertIsNone(spam.check_event_for_spam(message("spam", sender="@mod:example.org")))
        self.assertIsNone(spam.check_event_for_spam({"type": "m.room.message", "content": {"body": 5}}))
        self.assertIsNone(spam.check_event_for_spam({"type": "m.room.message"}))

    def test_custom_refusal(self):
        spam = checker(patterns=["spam"], errcode="M_FORBIDDEN", message="No spam here")
        self.assertEqual(spam.check_event_for_spam(message("spam")), Refusal("M_FORBIDDEN", "No spam here"))

    def test_other_checks_allow(self):
        spam = checker(patterns=["spam"])
        self.assertIsNone(spam.user_may_create_room("@a:example.org"))
        self.assertIsNone(spam.user_may_invite("@a:example.org", "@b:example.org", "!r:example.org"))
        self.assertIsNone(spam.user_may_join_room("@a:example.org", "!r:example.org", False))
        self.assertIsNone(spam.user_may_publish_room("@a:example.org", "!r:example.org"))
        self.assertIsNone(spam.check_media_file_for_spam("@a:example.org", {"media_id": "m", "path": "/dev/null"}))
