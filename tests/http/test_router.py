from twisted.trial.unittest import SynchronousTestCase

from mxtwisted.http.errors import MatrixError
from mxtwisted.http.router import Router


def h(name):
    def handler(request, **params):
        return name, params

    return handler


class RouterTests(SynchronousTestCase):
    def setUp(self):
        self.router = Router()
        self.router.add("GET", "/_matrix/client/versions", h("versions"))
        self.router.add("PUT", "/_matrix/client/v3/rooms/{roomId}/send/{eventType}/{txnId}", h("send"))
        self.router.add("GET", "/_matrix/client/v3/rooms/{roomId}/state/{eventType}/{stateKey}", h("state"))
        self.router.add("GET", "/_matrix/client/v3/rooms/{roomId}/state", h("all_state"))
        self.router.add("GET", "/_matrix/client/v3/rooms/{roomId}/messages", h("messages"))

    def test_literal(self):
        handler, params = self.router.match(b"GET", b"/_matrix/client/versions")
        self.assertEqual(handler(None)[0], "versions")
        self.assertEqual(params, {})

    def test_params_are_percent_decoded_after_splitting(self):
        _, params = self.router.match(b"PUT", b"/_matrix/client/v3/rooms/%21abc%3Aexample.org/send/m.room.message/a%2Fb")
        self.assertEqual(params, {"roomId": "!abc:example.org", "eventType": "m.room.message", "txnId": "a/b"})

    def test_empty_state_key(self):
        handler, params = self.router.match(b"GET", b"/_matrix/client/v3/rooms/!r:x/state/m.room.name/")
        self.assertEqual(handler(None)[0], "state")
        self.assertEqual(params["stateKey"], "")

    def test_literal_preferred_then_param(self):
        handler, _ = self.router.match(b"GET", b"/_matrix/client/v3/rooms/!r:x/messages")
        self.assertEqual(handler(None)[0], "messages")

    def test_unknown_path_is_404_unrecognized(self):
        e = self.assertRaises(MatrixError, self.router.match, b"GET", b"/_matrix/client/v3/nope")
        self.assertEqual((e.status, e.errcode), (404, "M_UNRECOGNIZED"))

    def test_wrong_method_is_405_unrecognized(self):
        e = self.assertRaises(MatrixError, self.router.match, b"POST", b"/_matrix/client/versions")
        self.assertEqual((e.status, e.errcode), (405, "M_UNRECOGNIZED"))

    def test_head_falls_back_to_get(self):
        handler, _ = self.router.match(b"HEAD", b"/_matrix/client/versions")
        self.assertEqual(handler(None)[0], "versions")

    def test_bad_percent_encoding_is_400(self):
        e = self.assertRaises(MatrixError, self.router.match, b"GET", b"/_matrix/client/v3/rooms/%ff%fe/state")
        self.assertEqual(e.status, 400)

    def test_duplicate_route_refused(self):
        self.assertRaises(ValueError, self.router.add, "GET", "/_matrix/client/versions", h("x"))

    def test_conflicting_param_names_refused(self):
        self.assertRaises(ValueError, self.router.add, "GET", "/_matrix/client/v3/rooms/{other}/x", h("x"))

    def test_allowed_methods(self):
        self.assertEqual(self.router.allowed_methods(b"/_matrix/client/versions"), ["GET"])
        self.assertEqual(self.router.allowed_methods(b"/nope"), [])
