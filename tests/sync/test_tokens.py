"""Sync tokens: compact, round-trip, old tokens keep working, garbage is refused."""

from twisted.trial.unittest import TestCase

from mxtwisted.rooms.reader import parse_stream_token
from mxtwisted.sync.tokens import STREAMS, InvalidToken, SyncToken


class TokenTests(TestCase):
    def test_round_trip_and_compact(self):
        token = SyncToken({"events": 12, "account_data": 4, "receipts": 3})
        self.assertEqual(token.encode(), "s12_4_0_3")
        self.assertEqual(SyncToken.decode("s12_4_0_3"), token)
        self.assertEqual(SyncToken({"events": 7}).encode(), "s7")
        self.assertEqual(SyncToken().encode(), "s0")

    def test_every_known_stream(self):
        positions = {name: i + 1 for i, name in enumerate(STREAMS)}
        token = SyncToken(positions)
        self.assertEqual(SyncToken.decode(token.encode()), token)

    def test_old_tokens_decode_with_zero_for_newer_streams(self):
        token = SyncToken.decode("s12_4")
        self.assertEqual(token.get("events"), 12)
        self.assertEqual(token.get("account_data"), 4)
        self.assertEqual(token.get("presence"), 0)
        # A /messages token is a sync token too.
        self.assertEqual(SyncToken.decode("s99").events, 99)

    def test_extra_streams(self):
        token = SyncToken({"events": 3, "myext": 9})
        self.assertEqual(token.encode(), "s3_myext.9")
        self.assertEqual(SyncToken.decode("s3_myext.9"), token)
        with self.assertRaises(ValueError):
            SyncToken({"events": 1, "Bad_Name": 2}).encode()

    def test_events_position_is_what_messages_reads(self):
        token = SyncToken({"events": 42, "account_data": 1, "typing": 5}).encode()
        self.assertEqual(parse_stream_token(token), 42)

    def test_invalid(self):
        for bad in ("", "x12", "s", "s1_a", "s-1", "s1__2", "s1_2_3_4_5_6_7_8", "s1_events.3", "s1_X.2", "s1_x.", "s١"):
            with self.assertRaises(InvalidToken, msg=bad):
                SyncToken.decode(bad)

    def test_advanced(self):
        a = SyncToken({"events": 5, "typing": 1})
        self.assertFalse(a.advanced(a))
        self.assertTrue(SyncToken({"events": 6, "typing": 1}).advanced(a))
        self.assertTrue(SyncToken({"events": 5, "typing": 1, "receipts": 1}).advanced(a))
        self.assertFalse(SyncToken({"events": 4}).advanced(a))
