"""Render the configuration reference (docs/configuration.md) from the schema.

The reference is generated so that it cannot drift from what the server
accepts: a test compares the file with this output. Regenerate with
``python -m mxtwisted.config.docs > docs/configuration.md``.
"""

from __future__ import annotations

from typing import Any

import yaml

from mxtwisted.config.homeserver import HOMESERVER_SCHEMA
from mxtwisted.config.schema import Key, ListOf, Mapping, Node, Nullable

PREFACE = """\
# Configuration reference

matrixhs reads one YAML file, `homeserver.yaml`, given with `twistd matrixhs -c PATH`. Create a commented one with
`python -m mxtwisted generate-config --server-name example.org --config-path homeserver.yaml`, and check one without
starting with `python -m mxtwisted check-config -c homeserver.yaml`.

Rules:

- Key names and meanings follow Synapse's configuration manual wherever the meaning is the same, so an existing
  Synapse `homeserver.yaml` starts matrixhs. Keys that Synapse knows and matrixhs does not implement yet are logged
  once at start-up as ignored (`check-config` lists them).
- Any other unknown key, a value of the wrong type or a missing required key stops start-up with one line naming the
  key, for example `matrixhs: error: listeners[0].port: expected an integer from 0 to 65535, got a string`, and exit
  status 1.
- Relative paths are resolved against the directory of the configuration file.
- Durations are milliseconds or strings such as `30s`, `10m`, `1h`, `7d`; sizes are bytes or strings such as `10K`,
  `50M`.

This page is generated from the schema in `mxtwisted/config/homeserver.py`
(`python -m mxtwisted.config.docs > docs/configuration.md`).

"""

EXAMPLES: dict[str, Any] = {
    "server_name": "example.org",
    "public_baseurl": "https://matrix.example.org/",
    "serve_server_wellknown": True,
    "extra_well_known_client_content": {"org.example.support": "https://example.org/help"},
    "listeners": [
        {
            "port": 8008,
            "bind_addresses": ["127.0.0.1"],
            "type": "http",
            "tls": False,
            "x_forwarded": True,
            "resources": [{"names": ["client", "federation"]}],
        }
    ],
    "tls_certificate_path": "/etc/matrixhs/fullchain.pem",
    "tls_private_key_path": "/etc/matrixhs/privkey.pem",
    "database": {
        "name": "psycopg2",
        "args": {"user": "matrixhs", "password": "secret", "database": "matrixhs", "host": "localhost", "cp_min": 1, "cp_max": 5},
    },
    "signing_key_path": "/var/lib/matrixhs/example.org.signing.key",
    "old_signing_keys": {"ed25519:id": {"key": "base64+public+key", "expired_ts": 1700000000000}},
    "key_refresh_interval": "1d",
    "media_store_path": "/var/lib/matrixhs/media_store",
    "max_upload_size": "50M",
    "max_request_size": "4M",
    "registration_shared_secret": "a long random string",
    "password_config": {"enabled": True, "pepper": "a secret that never changes"},
    "modules": [{"module": "my_module.MySpamChecker", "config": {"blocked_words": ["spam"]}}],
    "log_config": "/etc/matrixhs/log.yaml",
    "rc_login": {"address": {"per_second": 0.003, "burst_count": 5}, "failed_attempts": {"per_second": 0.17, "burst_count": 3}},
    "login_via_existing_session": {"enabled": True, "require_ui_auth": True, "token_timeout": "5m"},
}

EXTRA_DOCS: dict[str, str] = {
    "database": (
        "`name: sqlite3` with `args.database` (a file path; `:memory:` for throwaway servers; optional `synchronous`: "
        "`NORMAL` (default, survives a crash of the server process) or `FULL` (also survives power loss)). "
        "`name: psycopg2` (or `psycopg`) with `args` `user`, `password`, `database`, `host`, `port`, and the "
        "connection pool size `cp_min` / `cp_max`. Default: an SQLite file `homeserver.db` beside the configuration."
    ),
    "listeners": (
        "Each listener has `port`, `bind_addresses`, `type` (`http`; Synapse's `metrics`, `manhole` and "
        "`replication` listeners are ignored), `tls`, `x_forwarded` (trust `X-Forwarded-For`/`-Proto` from a reverse "
        "proxy) and `resources`, a list of `{names: [...]}` with names `client`, `federation`, `media`, `keys` "
        "(`health` is always served). `/.well-known/matrix/*` is served with `client`; `/_matrix/key/v2/server` with "
        "`federation` or `keys`."
    ),
    "modules": "Each entry names a module class and its config. See docs/modules.md.",
    "rc_login": "`address` limits attempts per client IP, `account` per user, `failed_attempts` failed logins per user.",
}


def _default_text(key: Key) -> str:
    if not key.has_default:
        return "required" if key.required else "none"
    value = key.default() if callable(key.default) else key.default
    if value == {} and isinstance(key.node, Mapping):
        return "each sub-key's default"
    return "`" + yaml.safe_dump(value, default_flow_style=True, width=1000).strip().removesuffix("...").strip() + "`"


def _sub_keys(node: Node, prefix: str) -> list[str]:
    if isinstance(node, Nullable):
        node = node.inner
    if isinstance(node, ListOf) and isinstance(node.item, Mapping):
        node, prefix = node.item, prefix + "[]"
    if not isinstance(node, Mapping):
        return []
    lines = []
    for name, key in node.keys.items():
        path = f"{prefix}.{name}"
        doc = f" {key.doc}" if key.doc else ""
        lines.append(f"  - `{path}`: {key.node.description}; default {_default_text(key)}.{doc}")
        lines.extend(_sub_keys(key.node, path))
    return lines


def render() -> str:
    out = [PREFACE]
    for name, key in HOMESERVER_SCHEMA.keys.items():
        out.append(f"## `{name}`\n")
        out.append(f"*{key.node.description}*. Default: {_default_text(key)}.\n")
        text = " ".join(t for t in (key.doc, EXTRA_DOCS.get(name, "")) if t)
        if text:
            out.append(text + "\n")
        subs = _sub_keys(key.node, name)
        if subs:
            out.append("Keys:\n")
            out.append("\n".join(subs) + "\n")
        example = EXAMPLES.get(name)
        if example is None and key.has_default:
            example = key.default() if callable(key.default) else key.default
            if example in ({}, [], None):
                example = None
        if example is not None:
            out.append("Example:\n\n```yaml\n" + yaml.safe_dump({name: example}, sort_keys=False).strip() + "\n```\n")
    return "\n".join(out)


if __name__ == "__main__":
    print(render(), end="")
