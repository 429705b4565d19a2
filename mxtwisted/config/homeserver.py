"""The homeserver.yaml schema and the typed configuration built from it.

Key names follow Synapse's wherever the meaning is the same, so that an
administrator moving from Synapse can reuse their file: keys Synapse knows and
matrixhs does not implement yet are reported once as ignored (see
:mod:`mxtwisted.config.synapse_keys`), anything else unknown is an error.
Relative paths are resolved against the directory of the configuration file.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from mxtwisted.config.schema import (
    AnyMapping,
    Bool,
    ConfigError,
    Float,
    Int,
    Key,
    ListOf,
    Mapping,
    Node,
    Nullable,
    Report,
    Size,
    Str,
)
from mxtwisted.config.synapse_keys import SYNAPSE_TOP_LEVEL_KEYS
from mxtwisted.events.room_versions import DEFAULT_ROOM_VERSION, KNOWN_ROOM_VERSIONS
from mxtwisted.events.validation import is_valid_server_name
from mxtwisted.federation.ipfilter import DEFAULT_IP_RANGE_BLACKLIST, check_ip_range


class Duration(Node):
    """A duration: milliseconds as an integer, or a string such as ``30s``, ``5m``, ``1d`` (Synapse's format)."""

    description = "a duration in milliseconds, or a string such as '30s', '10m', '1h', '7d'"
    _UNITS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000, "y": 31_536_000_000}
    _PATTERN = re.compile(r"^\s*(\d+)\s*(ms|s|m|h|d|w|y)?\s*$")

    def validate(self, value: Any, path: str, report: Report = None) -> int:
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            return value
        if isinstance(value, str):
            m = self._PATTERN.match(value)
            if m:
                return int(m.group(1)) * self._UNITS[m.group(2) or "ms"]
        raise ConfigError(path, f"expected {self.description}, got {value!r}")


def _check_server_name(value: str) -> Optional[str]:
    if not is_valid_server_name(value):
        return f"{value!r} is not a valid Matrix server name (a hostname or IP literal, optionally with :port)"
    return None


def _check_baseurl(value: str) -> Optional[str]:
    if not re.match(r"^https?://[^/\s]+(/.*)?$", value):
        return f"{value!r} is not an http(s) URL"
    return None


def _rate(per_second: float, burst_count: float) -> Key:
    return Key(
        Mapping({"per_second": Key(Float(minimum=0), per_second), "burst_count": Key(Float(minimum=0), burst_count)}),
        default=lambda: {},
        doc=f"A token bucket: ``per_second`` (default {per_second}) refills, ``burst_count`` (default {burst_count}) caps it.",
    )


#: Resource names a listener can serve. Synapse also knows the ones in
#: ``_TOLERATED_RESOURCES``; those are skipped with a log line.
RESOURCE_NAMES = ("client", "federation", "media", "keys", "health")
_TOLERATED_RESOURCES = frozenset({"openid", "static", "replication", "metrics", "consent", "webclient"})

_RESOURCE = Mapping(
    {
        "names": Key(ListOf(Str(choices=RESOURCE_NAMES + tuple(sorted(_TOLERATED_RESOURCES)))), required=True),
        "compress": Key(Bool(), False, doc="Accepted for Synapse compatibility; responses are not compressed."),
    }
)

_LISTENER = Mapping(
    {
        "port": Key(Int(minimum=0, maximum=65535), required=True, doc="TCP port to listen on (0 picks a free one)."),
        "bind_addresses": Key(ListOf(Str(), min_items=1), default=lambda: ["::", "0.0.0.0"], doc="Addresses to bind."),
        "type": Key(Str(choices=("http", "metrics", "manhole", "replication")), "http"),
        "tls": Key(Bool(), False, doc="Serve HTTPS with tls_certificate_path / tls_private_key_path."),
        "x_forwarded": Key(Bool(), False, doc="Trust X-Forwarded-For / X-Forwarded-Proto from a reverse proxy."),
        "resources": Key(ListOf(_RESOURCE), default=lambda: [{"names": ["client", "federation"]}]),
    },
    tolerated=frozenset({"path", "mode", "tag", "request_id_header", "http_options", "bind_address"}),
)

_DATABASE = Mapping(
    {
        "name": Key(Str(choices=("sqlite3", "psycopg2", "psycopg")), "sqlite3", doc="The engine."),
        "args": Key(AnyMapping(), default=lambda: {}, doc="Engine arguments (see the configuration reference)."),
    },
    tolerated=frozenset({"txn_limit", "allow_unsafe_locale", "data_stores"}),
)

_MODULE = Mapping(
    {
        "module": Key(Str(), required=True, doc="Dotted path of the module's class."),
        "config": Key(AnyMapping(), default=lambda: {}, doc="Passed to the module's constructor."),
    }
)

_TRUSTED_KEY_SERVER = Mapping(
    {
        "server_name": Key(Str(check=_check_server_name), required=True, doc="The notary's server name."),
        "verify_keys": Key(
            Nullable(AnyMapping()),
            None,
            doc="Its keys, key ID → unpadded base64; when unset they are fetched from it directly.",
        ),
    },
    tolerated=frozenset({"accept_keys_insecurely"}),
)

_PASSWORD_CONFIG = Mapping(
    {
        "enabled": Key(Bool(), True, doc="Whether local password login is enabled."),
        "localdb_enabled": Key(Bool(), True),
        "pepper": Key(Str(), "", doc="A secret appended to passwords before hashing; never change it once set."),
    },
    tolerated=frozenset({"policy"}),
)


def _build_schema() -> Mapping:
    k = Key
    return Mapping(
        {
            "server_name": k(Str(check=_check_server_name), required=True, doc="The domain of user IDs (@user:server_name)."),
            "public_baseurl": k(Nullable(Str(check=_check_baseurl)), None, doc="Public URL clients use to reach the server."),
            "serve_server_wellknown": k(Bool(), False, doc="Serve /.well-known/matrix/server delegating to port 443."),
            "extra_well_known_client_content": k(AnyMapping(), default=lambda: {}),
            "listeners": k(ListOf(_LISTENER), default=lambda: [{"port": 8008, "bind_addresses": ["127.0.0.1"]}]),
            "tls_certificate_path": k(Nullable(Str()), None, doc="PEM certificate chain for TLS listeners."),
            "tls_private_key_path": k(Nullable(Str()), None, doc="PEM private key for TLS listeners."),
            "database": k(_DATABASE, default=lambda: {}),
            "signing_key_path": k(Nullable(Str()), None, doc="Defaults to <config dir>/<server_name>.signing.key."),
            "old_signing_keys": k(AnyMapping(), default=lambda: {}, doc="Retired keys: key_id → {key, expired_ts}."),
            "key_refresh_interval": k(Duration(), 86_400_000, doc="How long others may cache our server keys."),
            "federation_domain_whitelist": k(
                Nullable(ListOf(Str())),
                None,
                doc="When set, federate only with these server names: requests from others get 403 M_FORBIDDEN"
                " and nothing is sent to them. null (the default): federate with everyone.",
            ),
            "federation_verify_certificates": k(
                Bool(),
                True,
                doc="Check the TLS certificates of other servers (the spec requires it). Turn off only for"
                " closed test federations.",
            ),
            "federation_custom_ca_list": k(
                Nullable(ListOf(Str())),
                None,
                doc="PEM files of CAs to trust for federation instead of the system's trust store (for private"
                " federations).",
            ),
            "federation_certificate_verification_whitelist": k(
                ListOf(Str()),
                default=list,
                doc="Server names (or their delegated names) whose certificates are not checked; `*` matches any"
                " characters, e.g. `*.internal.example`. For servers of your own that cannot have a valid"
                " certificate; everything else stays checked.",
            ),
            "federation_client_minimum_tls_version": k(
                Str(choices=("1", "1.1", "1.2", "1.3"), numbers=True),
                "1",
                doc="The oldest TLS version outgoing federation connections accept (Synapse's default, 1, accepts"
                " every server; 1.2 refuses servers stuck on TLS 1.0/1.1).",
            ),
            "federation_partial_state_joins": k(
                Bool(),
                True,
                doc="Join big rooms of other servers with partial state (send_join `omit_members`): the join"
                " returns once the state without most member events is checked, and the members are fetched in"
                " the background. Off: every join waits for the whole state.",
            ),
            "allow_public_rooms_over_federation": k(
                Bool(),
                False,
                doc="Let other servers list this server's public room directory (`/publicRooms` over federation)"
                " for their users. Off by default, as in Synapse.",
            ),
            "allow_profile_lookup_over_federation": k(
                Bool(),
                True,
                doc="Let other servers look up the profiles (display name, avatar) of this server's users.",
            ),
            "ip_range_blacklist": k(
                ListOf(Str(check=check_ip_range)),
                default=lambda: list(DEFAULT_IP_RANGE_BLACKLIST),
                doc="IP ranges outgoing federation requests must never connect to (checked on every resolved"
                " address). The default blocks loopback, private, CGNAT, link-local, multicast and other"
                " special-purpose ranges; 0.0.0.0 and :: are always blocked.",
            ),
            "ip_range_whitelist": k(
                ListOf(Str(check=check_ip_range)),
                default=lambda: [],
                doc="IP ranges allowed even though ip_range_blacklist lists them (e.g. 127.0.0.0/8 for a test"
                " federation on one machine).",
            ),
            "trusted_key_servers": k(
                ListOf(_TRUSTED_KEY_SERVER),
                default=lambda: [{"server_name": "matrix.org"}],
                doc="Notary servers asked for another server's keys when that server cannot be reached"
                " directly. An empty list: ask servers themselves only.",
            ),
            "media_store_path": k(Nullable(Str()), None, doc="Defaults to <config dir>/media_store."),
            "max_upload_size": k(Size(), 50 * 1024 * 1024),
            "max_request_size": k(Size(), 4 * 1024 * 1024, doc="Largest JSON request body accepted (M_TOO_LARGE)."),
            "enable_registration": k(
                Bool(),
                False,
                doc="Let anyone create an account with POST /register. Open registration also needs"
                " enable_registration_without_verification (matrixhs offers no email or captcha verification);"
                " see docs/accounts.md.",
            ),
            "enable_registration_without_verification": k(
                Bool(), False, doc="Together with enable_registration: register with the m.login.dummy stage only."
            ),
            "registration_requires_token": k(
                Bool(),
                False,
                doc="Registration needs a registration token (m.login.registration_token) that an admin created"
                " with the admin API; tokens are accepted even when enable_registration is false.",
            ),
            "registration_shared_secret": k(
                Nullable(Str()),
                None,
                doc="Lets whoever knows it create accounts (admin or not) through /_synapse/admin/v1/register,"
                " e.g. with 'python -m mxtwisted register-user'. Keep it secret.",
            ),
            "registration_shared_secret_path": k(
                Nullable(Str()),
                None,
                doc="A file holding the registration shared secret (instead of registration_shared_secret;"
                " setting both is an error).",
            ),
            "allow_guest_access": k(Bool(), False, doc="Allow guest accounts (register with kind=guest)."),
            "require_auth_for_profile_requests": k(
                Bool(), False, doc="Require an access token to read profiles (GET /profile/...): 401 without one."
            ),
            "refreshable_access_token_lifetime": k(
                Duration(), 300_000, doc="Lifetime of access tokens issued with a refresh token (refresh_token: true)."
            ),
            "refresh_token_lifetime": k(Nullable(Duration()), None, doc="Lifetime of refresh tokens; null: no limit."),
            "nonrefreshable_access_token_lifetime": k(
                Nullable(Duration()), None, doc="Lifetime of access tokens without a refresh token; null: no limit."
            ),
            "login_via_existing_session": k(
                Mapping(
                    {
                        "enabled": k(Bool(), False, doc="Serve POST /login/get_token (spec v1.7)."),
                        "require_ui_auth": k(Bool(), True, doc="Ask for the password (UIA) before issuing a token."),
                        "token_timeout": k(Duration(), 300_000, doc="How long an issued login token stays valid."),
                    }
                ),
                default=lambda: {},
                doc="Let a logged-in client mint a single-use m.login.token for another device (as Synapse's).",
            ),
            "ui_auth_session_lifetime": k(
                Duration(), 86_400_000, doc="How long a user-interactive authentication session lives."
            ),
            "bcrypt_rounds": k(Int(minimum=4, maximum=31), 12),
            "password_config": k(_PASSWORD_CONFIG, default=lambda: {}),
            "default_room_version": k(Str(choices=tuple(KNOWN_ROOM_VERSIONS)), DEFAULT_ROOM_VERSION),
            "rc_message": _rate(0.2, 10),
            "rc_registration": _rate(0.17, 3),
            "rc_registration_token_validity": _rate(0.1, 5),
            "rc_login": k(
                Mapping(
                    {
                        "address": _rate(0.003, 5),
                        "account": _rate(0.003, 5),
                        "failed_attempts": _rate(0.17, 3),
                    }
                ),
                default=lambda: {},
            ),
            "rc_joins": k(Mapping({"local": _rate(0.1, 10), "remote": _rate(0.01, 10)}), default=lambda: {}),
            "rc_joins_per_room": _rate(1, 10),
            "rc_invites": k(
                Mapping({"per_room": _rate(0.3, 10), "per_user": _rate(0.003, 5), "per_issuer": _rate(0.3, 10)}),
                default=lambda: {},
            ),
            "rc_room_creation": _rate(0.016, 10),
            "rc_admin_redaction": _rate(1, 50),
            "rc_3pid_validation": _rate(0.003, 5),
            "rc_presence": k(Mapping({"per_user": _rate(0.1, 1)}), default=lambda: {}),
            "rc_federation": k(
                Mapping(
                    {
                        "window_size": k(Int(minimum=1), 1000),
                        "sleep_limit": k(Int(minimum=1), 10),
                        "sleep_delay": k(Int(minimum=0), 500),
                        "reject_limit": k(Int(minimum=1), 50),
                        "concurrent": k(Int(minimum=1), 3),
                    }
                ),
                default=lambda: {},
            ),
            "presence": k(
                Mapping(
                    {
                        "enabled": k(Bool(), True, doc="Track and share presence. When false, PUT /presence is accepted"
                                     " and ignored, GET /presence answers offline and /sync carries no presence."),
                        "include_offline_users_on_sync": k(
                            Bool(), False, doc="Include offline users in the presence of an initial sync."
                        ),
                        "idle_timeout": k(
                            Duration(), 300_000, doc="How long after their last activity an online user becomes unavailable."
                        ),
                        "sync_online_timeout": k(
                            Duration(), 30_000, doc="How long after their client stopped syncing a user becomes offline."
                        ),
                        "last_active_granularity": k(
                            Duration(), 60_000, doc="How long after their last activity a user counts as currently_active."
                        ),
                    }
                ),
                default=lambda: {},
                doc="Presence (online, unavailable, offline; status messages), shared with users in the same rooms."
                " See docs/ephemeral.md.",
            ),
            "modules": k(ListOf(_MODULE), default=lambda: []),
            "log_config": k(Nullable(Str()), None, doc="A Python logging dictConfig YAML file (as Synapse's)."),
            "log_level": k(Str(choices=("debug", "info", "warn", "error", "critical")), "info"),
        },
        tolerated=SYNAPSE_TOP_LEVEL_KEYS,
    )


HOMESERVER_SCHEMA = _build_schema()


@dataclass(frozen=True)
class ResourceConfig:
    names: tuple[str, ...]


@dataclass(frozen=True)
class ListenerConfig:
    port: int
    bind_addresses: tuple[str, ...]
    type: str
    tls: bool
    x_forwarded: bool
    resources: tuple[str, ...]

    def serves(self, name: str) -> bool:
        return name in self.resources


@dataclass(frozen=True)
class ModuleConfig:
    module: str
    config: dict


@dataclass(frozen=True)
class RateLimit:
    per_second: float
    burst_count: float


@dataclass
class HomeserverConfig:
    """The validated configuration. ``raw`` keeps every validated section by key."""

    config_path: Optional[str]
    server_name: str
    public_baseurl: Optional[str]
    listeners: list[ListenerConfig]
    database: dict
    signing_key_path: str
    media_store_path: str
    tls_certificate_path: Optional[str]
    tls_private_key_path: Optional[str]
    default_room_version: str
    modules: list[ModuleConfig]
    max_request_size: int
    log_level: str
    log_config: Optional[str]
    raw: dict = field(repr=False)
    ignored_keys: list[str] = field(default_factory=list)

    def rate_limit(self, *path: str) -> RateLimit:
        """The token bucket of an ``rc_*`` section, e.g. ``rate_limit("rc_login", "address")``."""
        section: Any = self.raw
        for part in path:
            section = section[part]
        return RateLimit(section["per_second"], section["burst_count"])

    def __getitem__(self, key: str) -> Any:
        return self.raw[key]


def _resolve(base_dir: str, path: Optional[str]) -> Optional[str]:
    if path is None:
        return None
    path = os.path.expanduser(path)
    return path if os.path.isabs(path) else os.path.normpath(os.path.join(base_dir, path))


def _check_database(db: dict, base_dir: str) -> dict:
    args = dict(db["args"])
    if db["name"] == "sqlite3":
        database = args.get("database")
        if not isinstance(database, str) or not database:
            raise ConfigError("database.args.database", "expected the path of the SQLite database file")
        if database != ":memory:":
            args["database"] = _resolve(base_dir, database)
        for name in args:
            if name not in ("database", "synchronous", "cp_min", "cp_max"):
                raise ConfigError(f"database.args.{name}", "unknown key for sqlite3")
    else:
        for name, node in (
            ("user", Str()),
            ("password", Str()),
            ("database", Str()),
            ("dbname", Str()),
            ("host", Str()),
            ("port", Int(minimum=1, maximum=65535)),
            ("cp_min", Int(minimum=1)),
            ("cp_max", Int(minimum=1)),
        ):
            if name in args:
                node.validate(args[name], f"database.args.{name}")
        if args.get("cp_min", 1) > args.get("cp_max", 5):
            raise ConfigError("database.args.cp_min", "must not be greater than cp_max")
    return {"name": "psycopg2" if db["name"] == "psycopg" else db["name"], "args": args}


def parse_config(data: Any, config_path: Optional[str] = None, report: Optional[Callable[[str], None]] = None) -> HomeserverConfig:
    """Validate a loaded YAML document and build the :class:`HomeserverConfig`.

    Raises :class:`ConfigError` naming the first offending key.
    """
    if data is None:
        data = {}
    ignored: list[str] = []

    def on_ignored(path: str) -> None:
        ignored.append(path)
        if report is not None:
            report(path)

    raw = HOMESERVER_SCHEMA.validate(data, "", on_ignored)
    base_dir = os.path.dirname(os.path.abspath(config_path)) if config_path else os.getcwd()
    server_name = raw["server_name"]

    listeners = []
    for i, item in enumerate(raw["listeners"]):
        if item["type"] != "http":
            on_ignored(f"listeners[{i}] (type {item['type']})")
            continue
        names: list[str] = []
        for res in item["resources"]:
            for name in res["names"]:
                if name in _TOLERATED_RESOURCES:
                    on_ignored(f"listeners[{i}].resources: {name}")
                elif name not in names:
                    names.append(name)
        if item["tls"] and not (raw["tls_certificate_path"] and raw["tls_private_key_path"]):
            raise ConfigError(f"listeners[{i}].tls", "needs tls_certificate_path and tls_private_key_path")
        listeners.append(
            ListenerConfig(
                port=item["port"],
                bind_addresses=tuple(item["bind_addresses"]),
                type=item["type"],
                tls=item["tls"],
                x_forwarded=item["x_forwarded"],
                resources=tuple(names),
            )
        )

    database = raw["database"] or {}
    if not database.get("args") and database.get("name", "sqlite3") == "sqlite3":
        database = {"name": "sqlite3", "args": {"database": "homeserver.db"}}
    database = _check_database(database, base_dir)

    for key_id, entry in raw["old_signing_keys"].items():
        if not isinstance(entry, dict) or not isinstance(entry.get("key"), str) or not isinstance(entry.get("expired_ts"), int):
            raise ConfigError(f"old_signing_keys.{key_id}", "expected a mapping with 'key' (base64) and 'expired_ts' (ms)")

    return HomeserverConfig(
        config_path=os.path.abspath(config_path) if config_path else None,
        server_name=server_name,
        public_baseurl=raw["public_baseurl"],
        listeners=listeners,
        database=database,
        signing_key_path=_resolve(base_dir, raw["signing_key_path"] or f"{server_name}.signing.key"),
        media_store_path=_resolve(base_dir, raw["media_store_path"] or "media_store"),
        tls_certificate_path=_resolve(base_dir, raw["tls_certificate_path"]),
        tls_private_key_path=_resolve(base_dir, raw["tls_private_key_path"]),
        default_room_version=raw["default_room_version"],
        modules=[ModuleConfig(m["module"], m["config"]) for m in raw["modules"]],
        max_request_size=raw["max_request_size"],
        log_level=raw["log_level"],
        log_config=_resolve(base_dir, raw["log_config"]),
        raw=raw,
        ignored_keys=ignored,
    )
