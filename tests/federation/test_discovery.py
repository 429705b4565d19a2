"""Server name resolution (spec: "Resolving server names"), with a fake .well-known and fake SRV."""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.trial.unittest import TestCase

from mxtwisted.federation.discovery import (
    InvalidServerName,
    Route,
    ServerDiscovery,
    WellKnownResolver,
    WellKnownResponse,
    cache_period_from_headers,
    order_srv_records,
    parse_server_name,
)
from tests.federation.support import FakeSrv, FakeWellKnown


class ParseTests(TestCase):
    def test_server_names(self):
        self.assertEqual(parse_server_name("example.com"), ("example.com", None))
        self.assertEqual(parse_server_name("example.com:8000"), ("example.com", 8000))
        self.assertEqual(parse_server_name("127.0.0.1:8448"), ("127.0.0.1", 8448))
        self.assertEqual(parse_server_name("[::1]:8448"), ("::1", 8448))
        self.assertEqual(parse_server_name("[2001:db8::1]"), ("2001:db8::1", None))
        for bad in ("", "exa mple.com", "example.com:", "example.com:99999", "[::1", "[nope]:1", "a.com:x", "a/b"):
            self.assertRaises(InvalidServerName, parse_server_name, bad)


class ResolveTests(TestCase):
    async def resolve(self, name, well_known=None, srv=None):
        self.well_known = FakeWellKnown(well_known)
        self.srv = FakeSrv(srv)
        return await ServerDiscovery(self.well_known, self.srv).resolve(name)

    async def test_ip_literal(self):
        self.assertEqual(await self.resolve("127.0.0.1:8448"), Route("127.0.0.1:8448", "127.0.0.1:8448", "127.0.0.1", (("127.0.0.1", 8448),)))
        self.assertEqual(await self.resolve("10.1.2.3"), Route("10.1.2.3", "10.1.2.3", "10.1.2.3", (("10.1.2.3", 8448),)))
        self.assertEqual(await self.resolve("[::1]:9000"), Route("[::1]:9000", "[::1]:9000", "::1", (("::1", 9000),)))
        self.assertEqual(self.well_known.calls, [])
        self.assertEqual(self.srv.calls, [])

    async def test_explicit_port(self):
        route = await self.resolve("example.com:8000", well_known={"example.com": "other.example"})
        self.assertEqual(route, Route("example.com:8000", "example.com:8000", "example.com", (("example.com", 8000),)))
        self.assertEqual(self.well_known.calls, [])

    async def test_well_known_ip_literal(self):
        route = await self.resolve("example.com", well_known={"example.com": "192.0.2.1:1234"})
        self.assertEqual(route, Route("example.com", "192.0.2.1:1234", "192.0.2.1", (("192.0.2.1", 1234),)))
        route = await self.resolve("example.com", well_known={"example.com": "192.0.2.1"})
        self.assertEqual(route.targets, (("192.0.2.1", 8448),))

    async def test_well_known_with_port(self):
        route = await self.resolve("example.com", well_known={"example.com": "matrix.example.com:443"})
        self.assertEqual(route, Route("example.com", "matrix.example.com:443", "matrix.example.com", (("matrix.example.com", 443),)))
        self.assertEqual(self.srv.calls, [])

    async def test_well_known_then_srv(self):
        route = await self.resolve(
            "example.com",
            well_known={"example.com": "matrix.example.com"},
            srv={"_matrix-fed._tcp.matrix.example.com": [("srv.example.net", 8443)],
                 "_matrix._tcp.matrix.example.com": [("old.example.net", 1)]},
        )
        self.assertEqual(route, Route("example.com", "matrix.example.com", "matrix.example.com", (("srv.example.net", 8443),)))

    async def test_well_known_then_deprecated_srv(self):
        route = await self.resolve(
            "example.com",
            well_known={"example.com": "matrix.example.com"},
            srv={"_matrix._tcp.matrix.example.com": [("old.example.net", 8449)]},
        )
        self.assertEqual(route.targets, (("old.example.net", 8449),))
        self.assertEqual(self.srv.calls, ["_matrix-fed._tcp.matrix.example.com", "_matrix._tcp.matrix.example.com"])

    async def test_well_known_then_default_port(self):
        route = await self.resolve("example.com", well_known={"example.com": "matrix.example.com"})
        self.assertEqual(route, Route("example.com", "matrix.example.com", "matrix.example.com", (("matrix.example.com", 8448),)))

    async def test_srv_without_well_known(self):
        route = await self.resolve("example.com", srv={"_matrix-fed._tcp.example.com": [("a.example.net", 1), ("b.example.net", 2)]})
        self.assertEqual(route, Route("example.com", "example.com", "example.com", (("a.example.net", 1), ("b.example.net", 2))))
        route = await self.resolve("example.com", srv={"_matrix._tcp.example.com": [("c.example.net", 3)]})
        self.assertEqual(route.targets, (("c.example.net", 3),))

    async def test_default(self):
        route = await self.resolve("example.com")
        self.assertEqual(route, Route("example.com", "example.com", "example.com", (("example.com", 8448),)))

    async def test_invalid(self):
        with self.assertRaises(InvalidServerName):
            await self.resolve("bad name")


class SrvOrderTests(TestCase):
    def test_priority_then_weight(self):
        records = [(20, 0, "c.", 3), (10, 5, "a.", 1), (10, 5, "b.", 2)]
        ordered = order_srv_records(records)
        self.assertEqual(sorted(ordered[:2]), [("a", 1), ("b", 2)])
        self.assertEqual(ordered[2], ("c", 3))

    def test_dot_means_no_service(self):
        self.assertEqual(order_srv_records([(0, 0, ".", 0)]), [])


class WellKnownTests(TestCase):
    def setUp(self):
        self.clock = Clock()
        self.clock.advance(1_000_000)
        self.responses = []
        self.fetches = 0

        async def fetch(hostname):
            self.fetches += 1
            result = self.responses.pop(0)
            if isinstance(result, Exception):
                raise result
            return result

        self.resolver = WellKnownResolver(self.clock, fetch)

    async def test_cached_for_24h_by_default(self):
        self.responses = [WellKnownResponse(200, b'{"m.server": "m.example.com:443"}'), WellKnownResponse(200, b'{"m.server": "n.example.com"}')]
        self.assertEqual(await self.resolver.get("example.com"), "m.example.com:443")
        self.clock.advance(23 * 3600)
        self.assertEqual(await self.resolver.get("example.com"), "m.example.com:443")
        self.assertEqual(self.fetches, 1)
        self.clock.advance(3601)
        self.assertEqual(await self.resolver.get("example.com"), "n.example.com")
        self.assertEqual(self.fetches, 2)

    async def test_cache_control_max_age(self):
        headers = {"cache-control": "public, max-age=600"}
        self.responses = [WellKnownResponse(200, b'{"m.server": "a.example"}', headers), WellKnownResponse(404, b"")]
        self.assertEqual(await self.resolver.get("example.com"), "a.example")
        self.clock.advance(599)
        self.assertEqual(await self.resolver.get("example.com"), "a.example")
        self.clock.advance(2)
        self.assertIsNone(await self.resolver.get("example.com"))

    async def test_errors_cached_for_an_hour(self):
        self.responses = [ConnectionError("refused"), WellKnownResponse(200, b'{"m.server": "a.example"}')]
        self.assertIsNone(await self.resolver.get("example.com"))
        self.clock.advance(3599)
        self.assertIsNone(await self.resolver.get("example.com"))
        self.assertEqual(self.fetches, 1)
        self.clock.advance(2)
        self.assertEqual(await self.resolver.get("example.com"), "a.example")

    async def test_invalid_bodies(self):
        for body in (b"not json", b"[]", b'{"m.server": 5}', b'{"m.server": "bad name"}', b"{}"):
            self.responses = [WellKnownResponse(200, body)]
            self.resolver._cache.clear()
            self.assertIsNone(await self.resolver.get("example.com"))

    def test_cache_period_from_headers(self):
        self.assertEqual(cache_period_from_headers({"cache-control": "max-age=60"}, 0), 60)
        self.assertEqual(cache_period_from_headers({"cache-control": "no-store"}, 0), 0)
        self.assertIsNone(cache_period_from_headers({}, 0))
        self.assertEqual(cache_period_from_headers({"expires": "Thu, 01 Jan 1970 00:10:00 GMT"}, 0), 600)
        self.assertEqual(cache_period_from_headers({"expires": "garbage"}, 0), 0)
