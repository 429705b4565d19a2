"""Start a real homeserver in the test process, listening on a free loopback port.

``await start_homeserver(testcase, **config_overrides)`` builds it from a
generated configuration with a fresh signing key and SQLite database in a temp
directory (or PostgreSQL when ``database=`` is given), waits until it listens,
and stops it when the test ends.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import yaml
from twisted.internet import reactor

from mxtwisted.config import parse_config
from mxtwisted.config.generate import render_config
from mxtwisted.server_keys import ensure_signing_key
from mxtwisted.service import HomeserverService, make_homeserver


@dataclass
class RunningHomeserver:
    service: HomeserverService
    base_url: str
    directory: str

    @property
    def config(self):
        return self.service.config


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
