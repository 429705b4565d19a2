"""homeserver.yaml validation: defaults, one-line errors naming the key, Synapse compatibility."""

import os

import yaml
from twisted.trial.unittest import SynchronousTestCase

from mxtwisted.config import ConfigError, load_config, parse_config
from mxtwisted.config.docs import render
from mxtwisted.config.generate import parse_postgres_dsn, render_config

# What Synapse's `--generate-config` writes (keys and shapes), plus a few common additions.
SYNAPSE_GENERATED = """
server_name: "example.org"
pid_file: /data/homeserver.pid
listeners:
  - port: 8008
    tls: false
    type: http
    x_forwarded: true
    bind_addresses: ['::1', '127.0.0.1']
    resources:
      - names: [client, federation]
        compress: false
database:
  name: sqlite3
  args:
    database: /data/homeserver.db
log_config: "/data/example.org.log.config"
media_store_path: /data/media_store
registration_shared_secret: "s3cret"
report_stats: false
macaroon_secret_key: "m4c"
form_secret: "f0rm"
signing_key_path: "/data/example.org.signing.key"
trusted_key_servers:
  - server_name: "matrix.org"
enable_registration: true
enable_registration_without_verification: true
rc_message:
  per_second: 0.5
  burst_count: 20
url_preview_enabled: true
"""


class ParseTests(SynchronousTestCase):
    def test_minimal_config_gets_defaults(self):
        cfg = parse_config({"server_name": "example.org"}, config_path="/etc/mx/homeserver.yaml")
        self.assertEqual(cfg.server_name, "example.org")
        self.assertEqual(cfg.database, {"name": "sqlite3", "args": {"database": "/etc/mx/homeserver.db"}})
        self.assertEqual(cfg.signing_key_path, "/etc/mx/example.org.signing.key")
        self.assertEqual(cfg.media_store_path, "/etc/mx/media_store")
        self.assertEqual(cfg.default_room_version, "12")
        self.assertEqual(len(cfg.listeners), 1)
        self.assertEqual(cfg.listeners[0].port, 8008)
        self.assertEqual(cfg.rate_limit("rc_login", "address").burst_count, 5)
        self.assertEqual(cfg.rate_limit("rc_message").per_second, 0.2)
        self.assertFalse(cfg["enable_registration"])

    def assertConfigError(self, data, expected):
        e = self.assertRaises(ConfigError, parse_config, data)
        self.assertEqual(str(e), expected)
        self.assertNotIn("\n", str(e))

    def test_missing_server_name(self):
        self.assertConfigError({}, "server_name: required key is missing")

    def test_invalid_server_name(self):
        e = self.assertRaises(ConfigError, parse_config, {"server_name": "bad name!"})
        self.assertEqual(e.path, "server_name")

    def test_unknown_key(self):
        self.assertConfigError({"server_name": "a.b", "no_such_key": 1}, "no_such_key: unknown key")

    def test_wrong_type(self):
        self.assertConfigError({"server_name": "a.b", "enable_registration": "yes"},
                               "enable_registration: expected a boolean (true or false), got a string")

    def test_nested_wrong_type_names_the_path(self):
        self.assertConfigError(
            {"server_name": "a.b", "listeners": [{"port": "8008"}]},
            "listeners[0].port: expected an integer from 0 to 65535, got a string",
        )

    def test_nested_unknown_key(self):
        self.assertConfigError({"server_name": "a.b", "rc_login": {"adress": {}}}, "rc_login.adress: unknown key")

    def test_rate_limit_values(self):
        cfg = parse_config({"server_name": "a.b", "rc_login": {"address": {"per_second": 1, "burst_count": 2}}})
        self.assertEqual(cfg.rate_limit("rc_login", "address").per_second, 1.0)
        self.assertEqual(cfg.rate_limit("rc_login", "account").burst_count, 5)

    def test_unknown_room_version(self):
        e = self.assertRaises(ConfigError, parse_config, {"server_name": "a.b", "default_room_version": "99"})
        self.assertEqual(e.path, "default_room_version")

    def test_tls_listener_needs_certificate(self):
        self.assertConfigError(
            {"server_name": "a.b", "listeners": [{"port": 8448, "tls": True}]},
            "listeners[0].tls: needs tls_certificate_path and tls_private_key_path",
        )

    def test_sqlite_needs_database_path(self):
        self.assertConfigError({"server_name": "a.b", "database": {"name": "sqlite3", "args": {"db": "x"}}},
                               "database.args.database: expected the path of the SQLite database file")

    def test_postgres_args_checked(self):
        self.assertConfigError(
            {"server_name": "a.b", "database": {"name": "psycopg2", "args": {"port": "5432"}}},
            "database.args.port: expected an integer from 1 to 65535, got a string",
        )
        self.assertConfigError(
            {"server_name": "a.b", "database": {"name": "psycopg2", "args": {"cp_min": 5, "cp_max": 2}}},
            "database.args.cp_min: must not be greater than cp_max",
        )

    def test_psycopg_alias(self):
        cfg = parse_config({"server_name": "a.b", "database": {"name": "psycopg", "args": {"database": "m"}}})
        self.assertEqual(cfg.database["name"], "psycopg2")

    def test_durations_and_sizes(self):
        cfg = parse_config({"server_name": "a.b", "key_refresh_interval": "2h", "max_upload_size": "10M"})
        self.assertEqual(cfg["key_refresh_interval"], 2 * 3600 * 1000)
        self.assertEqual(cfg["max_upload_size"], 10 * 1024 * 1024)
        self.assertConfigError({"server_name": "a.b", "key_refresh_interval": "soon"},
                               "key_refresh_interval: expected a duration in milliseconds, or a string such as "
                               "'30s', '10m', '1h', '7d', got 'soon'")

    def test_old_signing_keys_shape(self):
        e = self.assertRaises(ConfigError, parse_config, {"server_name": "a.b", "old_signing_keys": {"ed25519:x": "k"}})
        self.assertEqual(e.path, "old_signing_keys.ed25519:x")

    def test_modules(self):
        cfg = parse_config({"server_name": "a.b", "modules": [{"module": "x.Y", "config": {"a": 1}}]})
        self.assertEqual((cfg.modules[0].module, cfg.modules[0].config), ("x.Y", {"a": 1}))
        self.assertConfigError({"server_name": "a.b", "modules": [{"config": {}}]}, "modules[0].module: required key is missing")


class SynapseCompatibilityTests(SynchronousTestCase):
    def test_synapse_generated_config_loads_with_ignored_keys_reported(self):
        reported = []
        cfg = parse_config(yaml.safe_load(SYNAPSE_GENERATED), config_path="/data/homeserver.yaml", report=reported.append)
        self.assertEqual(cfg.server_name, "example.org")
        self.assertEqual(cfg.listeners[0].resources, ("client", "federation"))
        self.assertTrue(cfg.listeners[0].x_forwarded)
        for key in ("pid_file", "report_stats", "macaroon_secret_key", "form_secret", "url_preview_enabled"):
            self.assertIn(key, reported)
        # Implemented since the federation client: used, not reported.
        self.assertNotIn("trusted_key_servers", reported)
        self.assertEqual(cfg["trusted_key_servers"][0]["server_name"], "matrix.org")
        self.assertEqual(reported, cfg.ignored_keys)
        self.assertEqual(cfg.rate_limit("rc_message").burst_count, 20)

    def test_synapse_only_listener_types_and_resources_are_ignored(self):
        reported = []
        cfg = parse_config(
            {
                "server_name": "a.b",
                "listeners": [
                    {"port": 9000, "type": "metrics"},
                    {"port": 8008, "tag": "main", "resources": [{"names": ["client", "openid", "static"]}]},
                ],
            },
            report=reported.append,
        )
        self.assertEqual([listener.port for listener in cfg.listeners], [8008])
        self.assertEqual(cfg.listeners[0].resources, ("client",))
        self.assertIn("listeners[1].tag", reported)
        self.assertIn("listeners[0] (type metrics)", reported)


class LoadConfigTests(SynchronousTestCase):
    def write(self, text):
        path = os.path.abspath(self.mktemp())
        os.makedirs(path)
        path = os.path.join(path, "homeserver.yaml")
        with open(path, "w") as f:
            f.write(text)
        return path

    def test_missing_file(self):
        e = self.assertRaises(ConfigError, load_config, "/nonexistent/homeserver.yaml")
        self.assertIn("does not exist", str(e))

    def test_invalid_yaml_is_one_line(self):
        path = self.write("server_name: [unclosed\n")
        e = self.assertRaises(ConfigError, load_config, path)
        self.assertIn("invalid YAML", str(e))
        self.assertIn("line", str(e))
        self.assertNotIn("\n", str(e))

    def test_not_a_mapping(self):
        e = self.assertRaises(ConfigError, load_config, self.write("- a\n- b\n"))
        self.assertIn("must be a YAML mapping", str(e))

    def test_relative_paths_resolve_against_config_dir(self):
        path = self.write("server_name: a.b\nsigning_key_path: keys/k.key\ndatabase: {name: sqlite3, args: {database: db/h.db}}\n")
        cfg = load_config(path)
        base = os.path.dirname(path)
        self.assertEqual(cfg.signing_key_path, os.path.join(base, "keys", "k.key"))
        self.assertEqual(cfg.database["args"]["database"], os.path.join(base, "db", "h.db"))


class GenerateTests(SynchronousTestCase):
    def test_generated_sqlite_config_is_valid(self):
        text = render_config(server_name="example.org", data_dir="/var/lib/mx", port=8448)
        cfg = parse_config(yaml.safe_load(text), config_path="/etc/mx/homeserver.yaml")
        self.assertEqual(cfg.ignored_keys, [])
        self.assertEqual(cfg.listeners[0].port, 8448)
        self.assertEqual(cfg.database["args"]["database"], "/var/lib/mx/homeserver.db")
        self.assertEqual(cfg.signing_key_path, "/var/lib/mx/example.org.signing.key")
        self.assertTrue(cfg["registration_shared_secret"])

    def test_generated_secrets_differ(self):
        a = yaml.safe_load(render_config(server_name="a.b", data_dir="/d"))
        b = yaml.safe_load(render_config(server_name="a.b", data_dir="/d"))
        self.assertNotEqual(a["registration_shared_secret"], b["registration_shared_secret"])

    def test_generated_postgres_config(self):
        text = render_config(server_name="a.b", data_dir="/d", database_dsn="postgresql://mx:p%40ss@db.local:5433/mxdb")
        cfg = parse_config(yaml.safe_load(text))
        self.assertEqual(cfg.database["name"], "psycopg2")
        self.assertEqual(cfg.database["args"]["password"], "p@ss")
        self.assertEqual(cfg.database["args"]["port"], 5433)

    def test_dsn_errors(self):
        self.assertRaises(ConfigError, parse_postgres_dsn, "mysql://x/y")
        self.assertRaises(ConfigError, parse_postgres_dsn, "postgresql://host/")


class DocsTests(SynchronousTestCase):
    def test_configuration_reference_is_current(self):
        path = os.path.join(os.path.dirname(__file__), "..", "..", "docs", "configuration.md")
        with open(path, encoding="utf-8") as f:
            current = f.read()
        self.assertEqual(current, render(), "docs/configuration.md is stale: run python -m mxtwisted.config.docs > docs/configuration.md")
