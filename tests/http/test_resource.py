"""The HTTP layer over real loopback sockets: routing, JSON errors, size limit, CORS."""

import json
import socket

import treq
from twisted.internet import defer, reactor
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.trial.unittest import TestCase

from mxtwisted.http.errors import MatrixError
from mxtwisted.http.resource import MatrixResource, parse_json_object
from mxtwisted.http.router import Router
from mxtwisted.http.site import MatrixSite


class EchoApi:
    def register(self, router):
        router.add("POST", "/echo", self.echo)
        router.add("GET", "/boom", self.boom)
        router.add("GET", "/forbidden", self.forbidden)
        router.add("GET", "/slow", self.slow)

    async def echo(self, request):
        return {"got": parse_json_object(request)}

    async def boom(self, request):
        raise RuntimeError("secret internal detail")

    async def forbidden(self, request):
        raise MatrixError(403, "M_FORBIDDEN", "no", extra={"x": 1}, headers={"X-Test": "1"})

    async def slow(self, request):
        d = defer.Deferred()
        reactor.callLater(0.2, d.callback, None)
        await d
        return {"slow": True}


class HttpLayerTests(TestCase):
    def setUp(self):
        router = Router()
        EchoApi().register(router)
        self.site = MatrixSite(MatrixResource(router), name="test", max_request_size=1000)
        d = TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(self.site)

        def listening(port):
            self.port = port
            self.addCleanup(port.stopListening)
            self.base = f"http://127.0.0.1:{port.getHost().port}"

        return d.addCallback(listening)

    async def request(self, method, path, data=None, headers=None):
        response = await treq.request(method, self.base + path, data=data, headers=headers, persistent=False)
        body = await response.content()
        return response, body

    async def test_json_roundtrip_and_cors(self):
        response, body = await self.request("POST", "/echo", data=b'{"a": "\xc3\xa9"}')
        self.assertEqual(response.code, 200)
        self.assertEqual(json.loads(body), {"got": {"a": "é"}})
        self.assertEqual(response.headers.getRawHeaders("access-control-allow-origin"), ["*"])
        self.assertIn("application/json", response.headers.getRawHeaders("content-type")[0])

    async def test_not_json(self):
        response, body = await self.request("POST", "/echo", data=b"{nope")
        self.assertEqual(response.code, 400)
        self.assertEqual(json.loads(body)["errcode"], "M_NOT_JSON")

    async def test_nan_is_not_json(self):
        response, body = await self.request("POST", "/echo", data=b'{"a": NaN}')
        self.assertEqual((response.code, json.loads(body)["errcode"]), (400, "M_NOT_JSON"))

    async def test_lone_surrogate_is_bad_json(self):
        response, body = await self.request("POST", "/echo", data=b'{"a": "\\ud800"}')
        self.assertEqual((response.code, json.loads(body)["errcode"]), (400, "M_BAD_JSON"))
        response, body = await self.request("POST", "/echo", data=b'{"a": "\\ud83d\\ude00"}')
        self.assertEqual((response.code, json.loads(body)), (200, {"got": {"a": "\U0001F600"}}))

    async def test_bad_json_when_not_an_object(self):
        response, body = await self.request("POST", "/echo", data=b"[1, 2]")
        self.assertEqual((response.code, json.loads(body)["errcode"]), (400, "M_BAD_JSON"))

    async def test_unknown_endpoint(self):
        response, body = await self.request("GET", "/_matrix/client/v3/nothing")
        self.assertEqual(response.code, 404)
        self.assertEqual(json.loads(body), {"errcode": "M_UNRECOGNIZED", "error": "Unrecognized request"})

    async def test_wrong_method(self):
        response, body = await self.request("GET", "/echo")
        self.assertEqual((response.code, json.loads(body)["errcode"]), (405, "M_UNRECOGNIZED"))

    async def test_options_preflight(self):
        response, body = await self.request("OPTIONS", "/echo")
        self.assertEqual(response.code, 204)
        self.assertIn("Authorization", response.headers.getRawHeaders("access-control-allow-headers")[0])
        self.assertIn("POST", response.headers.getRawHeaders("allow")[0])

    async def test_matrix_error_rendering(self):
        response, body = await self.request("GET", "/forbidden")
        self.assertEqual(response.code, 403)
        self.assertEqual(json.loads(body), {"errcode": "M_FORBIDDEN", "error": "no", "x": 1})
        self.assertEqual(response.headers.getRawHeaders("x-test"), ["1"])

    async def test_unexpected_error_is_500_without_details(self):
        response, body = await self.request("GET", "/boom")
        self.assertEqual(response.code, 500)
        self.assertEqual(json.loads(body)["errcode"], "M_UNKNOWN")
        self.assertNotIn(b"secret", body)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    async def test_too_large_with_content_length(self):
        response, body = await self.request("POST", "/echo", data=b'{"a":"' + b"x" * 2000 + b'"}')
        self.assertEqual(response.code, 413)
        self.assertEqual(json.loads(body)["errcode"], "M_TOO_LARGE")

    async def test_far_too_large_is_cut_off_with_413(self):
        # Beyond 16x the limit the server answers at once and closes the connection.
        def raw():
            with socket.create_connection(("127.0.0.1", self.port.getHost().port), timeout=5) as s:
                s.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100000000\r\n\r\n" + b"x" * 1000)
                data = b""
                while True:
                    chunk = s.recv(65536)
                    if not chunk:
                        return data
                    data += chunk

        from twisted.internet.threads import deferToThread

        data = await deferToThread(raw)
        self.assertTrue(data.startswith(b"HTTP/1.1 413"), data[:100])
        self.assertIn(b"M_TOO_LARGE", data)

    async def test_wait_idle_waits_for_in_flight(self):
        d = self.request("GET", "/slow")
        d = defer.ensureDeferred(d)
        await deferLater(0.05)
        self.assertEqual(len(self.site.in_flight), 1)
        idle = self.site.wait_idle()
        self.assertFalse(idle.called)
        response, body = await d
        await idle
        self.assertEqual(json.loads(body), {"slow": True})

    async def test_requests_on_open_connections_during_shutdown_get_503_and_connections_close(self):
        # A kept-alive connection opened before shutdown: its next request is refused with 503 (the
        # handlers and the database may be gone; a federation peer resends later), then it is closed.
        from twisted.web.client import HTTPConnectionPool

        pool = HTTPConnectionPool(reactor, persistent=True)
        self.addCleanup(pool.closeCachedConnections)
        first = await treq.get(self.base + "/forbidden", pool=pool)
        await first.content()
        self.assertEqual(len(list(self.site._channels)), 1)
        self.site.stopping = True
        response = await treq.get(self.base + "/forbidden", pool=pool)
        body = json.loads(await response.content())
        self.assertEqual(response.code, 503)
        self.assertEqual(body["errcode"], "M_UNKNOWN")
        self.site.close_connections()
        await deferLater(0.05)
        self.assertEqual([c for c in self.site._channels if c.transport is not None and c.transport.connected], [])


def deferLater(seconds):
    from twisted.internet.task import deferLater as _dl

    return _dl(reactor, seconds, lambda: None)
