"""``python -m mxtwisted register-user``: create an account on a running server with the registration shared secret.

It talks to the server's Synapse-compatible shared-secret registration API
(``/_synapse/admin/v1/register``, see :mod:`mxtwisted.api.admin.register`), so
it works whether public registration is open or closed, and also against a
Synapse. The secret comes from the configuration file
(``registration_shared_secret`` or ``registration_shared_secret_path``) or from
``--shared-secret``; the server URL from ``--url``, else from the first plain
HTTP listener of the configuration that serves ``client``.
"""

from __future__ import annotations

import argparse
import getpass
import json
import sys
import urllib.error
import urllib.request
from typing import Any, Optional

DEFAULT_URL = "http://localhost:8008"

#: Seconds to wait for each HTTP request.
TIMEOUT = 30.0


class RegistrationFailed(Exception):
    """The server refused or could not be reached; the message is one line for the administrator."""


def add_register_user_parser(sub: Any) -> None:
    """Add the ``register-user`` subcommand to the ``python -m mxtwisted`` parser."""
    p = sub.add_parser(
        "register-user",
        help="create an account on a running server with the registration shared secret",
        description="Create an account on a running homeserver through its shared-secret registration API "
        "(/_synapse/admin/v1/register). Works while public registration is closed. Prints the new user ID.",
    )
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("-c", "--config", help="homeserver.yaml: where the shared secret and the listener come from")
    source.add_argument("-k", "--shared-secret", help="the registration shared secret (instead of -c)")
    p.add_argument("-u", "--user", help="localpart of the new user (prompted for if omitted)")
    password = p.add_mutually_exclusive_group()
    password.add_argument(
        "-p", "--password", help="the new user's password (visible to other local users; prompted for without echo if omitted)"
    )
    password.add_argument("--password-file", help="read the password from this file (first line)")
    admin = p.add_mutually_exclusive_group()
    admin.add_argument("-a", "--admin", dest="admin", action="store_true", default=None, help="make the user a server admin")
    admin.add_argument(
        "--no-admin",
        dest="admin",
        action="store_false",
        help="make a regular user (without either option: asked on a terminal, regular otherwise)",
    )
    p.add_argument("-t", "--user-type", help="a user type such as 'bot' or 'support' (default: a regular user)")
    p.add_argument("--url", help=f"base URL of the client API (default: from the config's listeners, else {DEFAULT_URL})")
    p.set_defaults(func=register_user_command)


def client_url_from_config(config: Any) -> Optional[str]:
    """``http://HOST:PORT`` of the first plain-HTTP listener serving ``client``, or None."""
    for listener in config.listeners:
        if listener.tls or not listener.serves("client"):
            continue
        host = "localhost"
        for address in listener.bind_addresses:
            if address not in ("0.0.0.0", "::", ""):
                host = f"[{address}]" if ":" in address else address
                break
        return f"http://{host}:{listener.port}"
    return None


def _read_json(response: Any) -> Any:
    try:
        return json.loads(response.read().decode("utf-8"))
    except (ValueError, UnicodeDecodeError):
        return None


def _call(method: str, url: str, body: Optional[dict] = None) -> dict:
    data = json.dumps(body).encode("utf-8") if body is not None else None
    request = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT) as response:
            parsed = _read_json(response)
    except urllib.error.HTTPError as e:
        error = _read_json(e)
        if isinstance(error, dict) and "errcode" in error:
            raise RegistrationFailed(f"the server answered {e.code} {error['errcode']}: {error.get('error', '')}") from None
        raise RegistrationFailed(f"the server answered {e.code} {e.reason} for {method} {url}") from None
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise RegistrationFailed(f"cannot reach the server at {url}: {reason}") from None
    if not isinstance(parsed, dict):
        raise RegistrationFailed(f"{method} {url} did not answer with a JSON object; is this a Matrix server?")
    return parsed


def register_with_shared_secret(
    base_url: str, shared_secret: str, user: str, password: str, admin: bool, user_type: Optional[str] = None
) -> dict:
    """Get a nonce, then register with the MAC; returns the server's response (``user_id``, ...)."""
    from mxtwisted.api.admin.register import REGISTER_PATH, registration_mac

    url = base_url.rstrip("/") + REGISTER_PATH
    nonce = _call("GET", url).get("nonce")
    if not isinstance(nonce, str):
        raise RegistrationFailed(f"GET {url} returned no nonce")
    body = {
        "nonce": nonce,
        "username": user,
        "password": password,
        "admin": admin,
        "user_type": user_type,
        "mac": registration_mac(shared_secret, nonce, user, password, admin, user_type),
        # This tool only creates the account; it does not need a logged-in device.
        "inhibit_login": True,
    }
    return _call("POST", url, body)


def _ask_password() -> str:
    password = getpass.getpass("Password: ")
    if not password:
        raise RegistrationFailed("the password cannot be empty")
    if getpass.getpass("Confirm password: ") != password:
        raise RegistrationFailed("the passwords do not match")
    return password


def _err(message: str) -> int:
    print(f"matrixhs: error: {message}", file=sys.stderr)
    return 1


def register_user_command(args: argparse.Namespace) -> int:
    """The ``register-user`` subcommand: 0 and the user ID on stdout, or 1 and the reason on stderr."""
    from mxtwisted.api.admin.register import shared_secret_from_config
    from mxtwisted.config import ConfigError, load_config

    url = args.url
    if args.config:
        try:
            config = load_config(args.config)
            secret = shared_secret_from_config(config)
        except ConfigError as e:
            return _err(str(e))
        if not secret:
            return _err(f"{args.config}: no registration_shared_secret or registration_shared_secret_path is set")
        if url is None:
            url = client_url_from_config(config)
            if url is None:
                url = DEFAULT_URL
                print(f"No plain HTTP client listener in {args.config}; trying {url}", file=sys.stderr)
    else:
        secret = args.shared_secret
        if not secret:
            return _err("the shared secret cannot be empty")
    url = url or DEFAULT_URL
    try:
        user = args.user
        if user is None:
            user = input("New user localpart: ").strip()
        if not user:
            return _err("the user name cannot be empty")
        if args.password_file:
            try:
                with open(args.password_file, encoding="utf-8") as f:
                    password = f.readline().rstrip("\r\n")
            except OSError as e:
                return _err(f"cannot read {args.password_file!r}: {e.strerror}")
            if not password:
                return _err(f"{args.password_file}: the password cannot be empty")
        elif args.password is not None:
            password = args.password
            if not password:
                return _err("the password cannot be empty")
        else:
            password = _ask_password()
        admin = args.admin
        if admin is None:
            admin = sys.stdin.isatty() and input("Make admin [no]: ").strip().lower() in ("y", "yes", "true")
        result = register_with_shared_secret(url, secret, user, password, bool(admin), args.user_type)
    except RegistrationFailed as e:
        return _err(str(e))
    except (EOFError, KeyboardInterrupt):
        print(file=sys.stderr)
        return _err("cancelled")
    print(result.get("user_id", user))
    return 0
