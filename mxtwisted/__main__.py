"""``python -m mxtwisted`` (also installed as ``matrixhs``): the admin command line.

Subcommands:
  generate-config  write a new homeserver.yaml and signing key (never overwrites)
  check-config     validate a configuration and print the ignored Synapse keys
  start            generate if missing, then run ``twistd -n matrixhs -c CONFIG``
  register-user    create an account on a running server with the registration shared secret

Unix conventions: ``--help``, errors on stderr, exit status 0 on success, 1 on
an error, 2 on a usage error.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Optional

from mxtwisted import __version__


def _err(message: str) -> int:
    print(f"matrixhs: error: {message}", file=sys.stderr)
    return 1


def _generate(args: argparse.Namespace) -> int:
    from mxtwisted.config import ConfigError, load_config
    from mxtwisted.config.generate import write_new_config
    from mxtwisted.server_keys import ensure_signing_key

    config_path = args.config_path
    data_dir = os.path.abspath(args.data_dir or os.path.dirname(os.path.abspath(config_path)))
    try:
        written = write_new_config(
            config_path,
            server_name=args.server_name,
            data_dir=data_dir,
            port=args.port,
            bind_addresses=args.bind_address or None,
            database_dsn=args.database_dsn,
            public_baseurl=args.public_baseurl,
            enable_registration=args.enable_registration,
        )
        config = load_config(config_path)
    except ConfigError as e:
        return _err(str(e))
    except OSError as e:
        return _err(f"cannot write {config_path!r}: {e.strerror}")
    if written:
        print(f"Wrote {config_path}")
    else:
        print(f"{config_path} exists; keeping it")
    os.makedirs(data_dir, exist_ok=True)
    if ensure_signing_key(config.signing_key_path):
        print(f"Generated signing key {config.signing_key_path}")
    else:
        print(f"Signing key {config.signing_key_path} exists; keeping it")
    return 0


def _check(args: argparse.Namespace) -> int:
    from mxtwisted.config import ConfigError, load_config

    ignored: list[str] = []
    try:
        load_config(args.config, report_ignored=ignored.append)
    except ConfigError as e:
        return _err(str(e))
    for key in ignored:
        print(f"ignored (not implemented by matrixhs): {key}")
    print(f"{args.config}: OK")
    return 0


def _start(args: argparse.Namespace) -> int:
    data_dir = os.path.abspath(args.data_dir)
    config_path = args.config or os.path.join(data_dir, "homeserver.yaml")
    if not os.path.exists(config_path):
        gen = argparse.Namespace(
            config_path=config_path,
            data_dir=data_dir,
            server_name=args.server_name,
            port=args.port,
            bind_address=None,
            database_dsn=None,
            public_baseurl=None,
            enable_registration=args.enable_registration,
        )
        status = _generate(gen)
        if status:
            return status
    else:
        from mxtwisted.config import ConfigError, load_config
        from mxtwisted.server_keys import ensure_signing_key

        try:
            ensure_signing_key(load_config(config_path).signing_key_path)
        except ConfigError as e:
            return _err(str(e))
    argv = twistd_command() + ["-n", "matrixhs", "-c", config_path]
    sys.stdout.flush()
    os.execv(argv[0], argv)
    return 0  # not reached


def twistd_command() -> list[str]:
    """The argv prefix that runs twistd with this interpreter (``python -m twisted`` is the other runner, ``twist``)."""
    return [sys.executable, "-c", "import sys; sys.argv[0] = 'twistd'; from twisted.scripts.twistd import run; run()"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m mxtwisted", description="matrixhs administration.")
    parser.add_argument("--version", action="version", version=f"matrixhs {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    gen = sub.add_parser("generate-config", help="write a new homeserver.yaml and signing key")
    gen.add_argument("--server-name", required=True, help="the domain of user IDs, e.g. example.org")
    gen.add_argument("--config-path", required=True, help="where to write homeserver.yaml")
    gen.add_argument("--data-dir", help="directory for the database, signing key and media (default: beside the config)")
    gen.add_argument("--port", type=int, default=8008, help="HTTP port (default 8008)")
    gen.add_argument("--bind-address", action="append", help="address to bind (repeatable; default 127.0.0.1)")
    gen.add_argument("--database-dsn", help="use PostgreSQL: postgresql://user:password@host:port/database")
    gen.add_argument("--public-baseurl", help="public URL of the client API (default http://localhost:PORT/)")
    gen.add_argument("--enable-registration", action="store_true", help="open registration without verification")
    gen.set_defaults(func=_generate)

    check = sub.add_parser("check-config", help="validate a configuration file")
    check.add_argument("-c", "--config", required=True, help="path of homeserver.yaml")
    check.set_defaults(func=_check)

    start = sub.add_parser("start", help="generate a configuration if needed, then run the server in the foreground")
    start.add_argument("--data-dir", default="data", help="data directory (default ./data)")
    start.add_argument("-c", "--config", help="configuration file (default DATA_DIR/homeserver.yaml)")
    start.add_argument("--server-name", default="localhost", help="server name for a new configuration")
    start.add_argument("--port", type=int, default=8008, help="HTTP port for a new configuration")
    start.add_argument("--enable-registration", action="store_true", help="open registration in a new configuration")
    start.set_defaults(func=_start)

    from mxtwisted.admin_cli import add_register_user_parser

    add_register_user_parser(sub)
    return parser


def main(argv: Optional[list[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
