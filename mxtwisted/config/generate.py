"""Writing a new, commented homeserver.yaml (``python -m mxtwisted generate-config``).

The generated file is a working configuration for the embedded default
(SQLite in the data directory) or for PostgreSQL when a DSN is given. Existing
files are never overwritten.
"""

from __future__ import annotations

import os
import secrets
from typing import Optional
from urllib.parse import unquote, urlsplit

import yaml

from mxtwisted.config.schema import ConfigError
from mxtwisted.events.room_versions import DEFAULT_ROOM_VERSION


def parse_postgres_dsn(dsn: str) -> dict:
    """``postgresql://user:password@host:port/database`` → the ``database.args`` mapping."""
    parts = urlsplit(dsn)
    if parts.scheme not in ("postgres", "postgresql"):
        raise ConfigError("--database-dsn", "expected postgresql://user:password@host:port/database")
    args: dict = {"cp_min": 1, "cp_max": 5}
    if parts.username:
        args["user"] = unquote(parts.username)
    if parts.password:
        args["password"] = unquote(parts.password)
    if parts.hostname:
        args["host"] = parts.hostname
    if parts.port:
        args["port"] = parts.port
    database = unquote(parts.path.lstrip("/"))
    if not database:
        raise ConfigError("--database-dsn", "the DSN must name a database")
    args["database"] = database
    return args


def _yaml_value(value: object) -> str:
    return yaml.safe_dump(value, default_flow_style=True, width=1000).strip().removesuffix("...").strip()


def render_config(
    server_name: str,
    data_dir: str,
    port: int = 8008,
    bind_addresses: Optional[list[str]] = None,
    database_dsn: Optional[str] = None,
    public_baseurl: Optional[str] = None,
    enable_registration: bool = False,
) -> str:
    """The text of a commented homeserver.yaml. Paths are relative to the file's directory when inside it."""
    bind_addresses = bind_addresses or ["127.0.0.1"]
    if database_dsn:
        db_args = parse_postgres_dsn(database_dsn)
        database = "database:\n  name: psycopg2\n  args:\n" + "".join(
            f"    {k}: {_yaml_value(v)}\n" for k, v in db_args.items()
        )
    else:
        database = (
            "database:\n  name: sqlite3\n  args:\n"
            f"    database: {_yaml_value(os.path.join(data_dir, 'homeserver.db'))}\n"
        )
    baseurl = public_baseurl or f"http://localhost:{port}/"
    secret = secrets.token_urlsafe(32)
    return f"""\
# matrixhs configuration. Every key is documented in docs/configuration.md.
# Keys have Synapse's names and meanings; relative paths are relative to this file.

# The domain of your users' IDs (@alice:{server_name}). It cannot change later.
server_name: {_yaml_value(server_name)}

# The URL clients use to reach this server; served in /.well-known/matrix/client.
public_baseurl: {_yaml_value(baseurl)}

# Serve /.well-known/matrix/server so that other servers federate on port 443.
serve_server_wellknown: false

# Where the server listens. Put TLS in front with a reverse proxy (docs/reverse-proxy.md),
# or set tls: true with tls_certificate_path / tls_private_key_path.
listeners:
  - port: {port}
    bind_addresses: {_yaml_value(bind_addresses)}
    type: http
    tls: false
    x_forwarded: false
    resources:
      - names: [client, federation, keys]

# SQLite is the embedded default; use PostgreSQL (name: psycopg2) in production.
{database}
# The ed25519 key this server signs events and requests with. Keep it secret and back it up.
signing_key_path: {_yaml_value(os.path.join(data_dir, server_name.replace(":", "_") + ".signing.key"))}

# Uploaded and cached media.
media_store_path: {_yaml_value(os.path.join(data_dir, "media_store"))}

# Registration: closed by default. Open it, require tokens, or use the shared secret
# with 'python -m mxtwisted register-user'.
enable_registration: {_yaml_value(enable_registration)}
enable_registration_without_verification: {_yaml_value(enable_registration)}
registration_shared_secret: {_yaml_value(secret)}

# Room version of new rooms.
default_room_version: "{DEFAULT_ROOM_VERSION}"

# Rate limits (token buckets) use Synapse's defaults; override any rc_* section here, e.g.:
# rc_login:
#   address: {{per_second: 0.003, burst_count: 5}}

# Modules (spam checkers, auth providers, ...): see modules/README.md.
modules: []

# Log level: debug, info, warn, error or critical. Or log_config: a Python logging YAML.
log_level: info
"""


def write_new_config(config_path: str, **kwargs: object) -> bool:
    """Write the configuration unless ``config_path`` exists. Returns True if written."""
    if os.path.exists(config_path):
        return False
    directory = os.path.dirname(os.path.abspath(config_path))
    os.makedirs(directory, exist_ok=True)
    text = render_config(**kwargs)  # type: ignore[arg-type]
    fd = os.open(config_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    return True
