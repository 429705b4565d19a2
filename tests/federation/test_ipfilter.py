from __future__ import annotations

from twisted.trial.unittest import TestCase

from mxtwisted.config import parse_config
from mxtwisted.config.schema import ConfigError
from mxtwisted.federation.ipfilter import IPFilter


class IPFilterTests(TestCase):
    def test_default_blacklist(self):
        f = IPFilter()
        for address in ("127.0.0.1", "10.1.2.3", "192.168.0.1", "172.16.5.5", "100.64.0.1", "169.254.1.1",
                        "224.0.0.1", "::1", "fe80::1", "fd00::1", "::ffff:127.0.0.1", "0.0.0.0", "::", "not-an-ip"):
            self.assertFalse(f.is_allowed(address), address)
        for address in ("8.8.8.8", "2a00:1450::1", "::ffff:8.8.8.8"):
            self.assertTrue(f.is_allowed(address), address)

    def test_whitelist_overrides(self):
        f = IPFilter(whitelist=["127.0.0.0/8"])
        self.assertTrue(f.is_allowed("127.0.0.1"))
        self.assertFalse(f.is_allowed("10.0.0.1"))
        self.assertFalse(IPFilter(whitelist=["0.0.0.0/0"]).is_allowed("0.0.0.0"))

    def test_config(self):
        config = parse_config({"server_name": "a.test", "ip_range_whitelist": ["127.0.0.0/8"]}, config_path=None)
        self.assertTrue(IPFilter.from_config(config).is_allowed("127.0.0.1"))
        config = parse_config({"server_name": "a.test"}, config_path=None)
        self.assertFalse(IPFilter.from_config(config).is_allowed("127.0.0.1"))
        self.assertEqual(config["trusted_key_servers"], [{"server_name": "matrix.org", "verify_keys": None}])
        self.assertTrue(config["federation_verify_certificates"])
        self.assertIsNone(config["federation_domain_whitelist"])
        with self.assertRaises(ConfigError):
            parse_config({"server_name": "a.test", "ip_range_blacklist": ["not a range"]}, config_path=None)
