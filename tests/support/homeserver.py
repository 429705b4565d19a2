"""Start a real homeserver in the test process, listening on a free loopback port.

``await start_homeserver(testcase, **config_overrides)`` builds it from a
generated configuration with a fresh signing key and SQLite database in a temp
directory (or PostgreSQL when ``database=`` is given), waits until it listens,
and stops it when the test ends.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any

import treq
import yaml
from twisted.internet import reactor

from mxtwisted.config import parse_config
from mxtwisted.config.generate import render_config
from mxtwisted.server_keys import ensure_signing_key
from mxtwisted.service import HomeserverService, make_homeserver


async def http_json(method: str, url: str, body=None, token: str | None = None, raw: bytes | None = None):
    """A real HTTP request with treq; returns (status, JSON body or None)."""
    headers = {b"Content-Type": [b"application/json"]}
    if token is not None:
        headers[b"Authorization"] = [b"Bearer " + token.encode()]
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    response = await treq.request(method, url, data=data, headers=headers, persistent=False)
    content = await response.content()
    try:
        parsed = json.loads(content) if content else None
    except ValueError:
        parsed = None
    return response.code, parsed


@dataclass
class RunningHomeserver:
    service: HomeserverService
    base_url: str
    directory: str

    @property
    def config(self):
        return self.service.config

    @property
    def storage(self):
        return self.service.storage

    @property
    def components(self):
        return self.service.components

    async def register_user(self, localpart: str, password: str = "correct horse", admin: bool = False,
                            device_id: str | None = None) -> dict:
        """Create a user directly (no HTTP) and log in a device; returns the login response dict."""
        user_id = await self.components.registration.register(localpart, password, admin=admin)
        return await self.components.sessions.create_session(user_id, device_id)

    async def request(self, method: str, path: str, body=None, token: str | None = None, raw: bytes | None = None):
        """One HTTP request to this server; returns (status, parsed JSON body or None)."""
        return await http_json(method, self.base_url + path, body, token, raw)


def build_config(directory: str, server_name: str = "test.local", **overrides: Any):
    data = yaml.safe_load(render_config(server_name=server_name, data_dir=directory, port=0))
    data["listeners"][0]["port"] = 0
    data["listeners"][0]["bind_addresses"] = ["127.0.0.1"]
    data.update(overrides)
    config_path = os.path.join(directory, "homeserver.yaml")
    return parse_config(data, config_path=config_path)


async def start_homeserver(testcase: Any, server_name: str = "test.local", **overrides: Any) -> RunningHomeserver:
    directory = os.path.abspath(testcase.mktemp())
    os.makedirs(directory)
    config = build_config(directory, server_name, **overrides)
    ensure_signing_key(config.signing_key_path)
    service = make_homeserver(reactor, config)
    service.startService()
    testcase.addCleanup(service.stopService)
    await service.ready
    port = service.ports[0].getHost().port
    scheme = "https" if config.listeners[0].tls else "http"
    return RunningHomeserver(service, f"{scheme}://127.0.0.1:{port}", directory)


def postgres_database(testcase: Any) -> dict:
    """A ``database`` config section for a fresh PostgreSQL test database (dropped after the test),
    or SkipTest with the reason when no PostgreSQL is available."""
    from twisted.trial.unittest import SkipTest

    from tests.support import postgres

    reason = postgres.skip_reason()
    if reason is not None:
        raise SkipTest(reason)
    args = postgres.create_test_database()
    testcase.addCleanup(postgres.drop_test_database, args["database"])
    args = {k: v for k, v in args.items() if k in ("user", "password", "database", "host", "port")}
    if "port" in args:
        args["port"] = int(args["port"])
    args.update(cp_min=1, cp_max=3)
    return {"name": "psycopg2", "args": args}
