"""Start and stop a real Synapse for interop tests.

Synapse is found through ``MATRIXHS_SYNAPSE_PYTHON``: the path of a python interpreter that can
``import synapse`` (``.ci/install-synapse`` makes one). ``skip_reason()`` says why the tests cannot run.

The Synapse is named ``127.0.0.1:<federation port>`` and serves federation (and its keys) over HTTPS on that
port with a certificate of the test CA (``tests.federation.support.make_pki``), and the client API over plain
HTTP on another loopback port. It trusts the test CA for outgoing federation, may talk to loopback, asks no
key server, has open registration and practically no rate limits, and stores everything in SQLite in its
own directory (``homeserver.log`` there logs at INFO).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
from typing import Any, Optional

import treq
from twisted.internet import reactor, threads
from twisted.internet.task import deferLater

ENV_VAR = "MATRIXHS_SYNAPSE_PYTHON"

#: How long Synapse may take to answer on its client port after starting (seconds).
START_TIMEOUT = 90.0


def synapse_python() -> Optional[str]:
    return os.environ.get(ENV_VAR) or None


def skip_reason() -> Optional[str]:
    python = synapse_python()
    if python is None:
        return f"{ENV_VAR} is not set (the path of a python with matrix-synapse installed; see .ci/install-synapse)"
    if not os.access(python, os.X_OK):
        return f"{ENV_VAR}={python} is not an executable"
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _overrides(directory: str, fed_port: int, client_port: int, pki: Any) -> dict[str, Any]:
    rl = {"per_second": 1000000, "burst_count": 1000000}
    return {
        "listeners": [
            {"port": client_port, "bind_addresses": ["127.0.0.1"], "type": "http", "tls": False,
             "x_forwarded": False, "resources": [{"names": ["client"], "compress": False}]},
            {"port": fed_port, "bind_addresses": ["127.0.0.1"], "type": "http", "tls": True,
             "x_forwarded": False, "resources": [{"names": ["federation", "keys"], "compress": False}]},
        ],
        "tls_certificate_path": pki.cert_path,
        "tls_private_key_path": pki.key_path,
        "federation_custom_ca_list": [pki.ca_path],
        "federation_verify_certificates": True,
        "ip_range_whitelist": ["127.0.0.1"],
        # Synapse checks IP literals in server names against this list alone (not the whitelist).
        "federation_ip_range_blacklist": [],
        "database": {"name": "sqlite3", "args": {"database": os.path.join(directory, "homeserver.db")}},
        "log_config": os.path.join(directory, "log.config"),
        "media_store_path": os.path.join(directory, "media_store"),
        "report_stats": False,
        "trusted_key_servers": [],
        "suppress_key_server_warning": True,
        "enable_registration": True,
        "enable_registration_without_verification": True,
        "presence": {"enabled": False},
        "bcrypt_rounds": 4,
        "rc_message": rl,
        "rc_registration": rl,
        "rc_login": {"address": rl, "account": rl, "failed_attempts": rl},
        "rc_joins": {"local": rl, "remote": rl},
        "rc_joins_per_room": rl,
        "rc_invites": {"per_room": rl, "per_user": rl, "per_issuer": rl},
        "rc_room_creation": rl,
        "rc_key_requests": rl,
        "rc_federation": {"window_size": 1000, "sleep_limit": 1000000, "sleep_delay": 0,
                          "reject_limit": 1000000, "concurrent": 1000000},
    }


_LOG_CONFIG = """\
version: 1
formatters:
  precise:
    format: '%(asctime)s - %(name)s - %(lineno)d - %(levelname)s - %(request)s - %(message)s'
handlers:
  file:
    class: logging.FileHandler
    formatter: precise
    filename: {path}
    encoding: utf8
loggers:
  synapse.storage.SQL:
    level: WARNING
  synapse.access:
    level: INFO
root:
  level: INFO
  handlers: [file]
disable_existing_loggers: false
"""


class SynapsePeer:
    """One Synapse process in ``directory`` (created); ``await start()``, then ``stop()`` (idempotent)."""

    def __init__(self, directory: str, pki: Any, python: Optional[str] = None) -> None:
        self.python = python or synapse_python()
        if self.python is None:
            raise RuntimeError(f"{ENV_VAR} is not set")
        self.directory = os.path.abspath(directory)
        self.pki = pki
        self.fed_port = free_port()
        self.client_port = free_port()
        self.server_name = f"127.0.0.1:{self.fed_port}"
        self.base_url = f"http://127.0.0.1:{self.client_port}"
        self.log_path = os.path.join(self.directory, "homeserver.log")
        self.process: Optional[subprocess.Popen] = None

    def _configure(self) -> None:
        os.makedirs(self.directory, exist_ok=True)
        config_path = os.path.join(self.directory, "homeserver.yaml")
        subprocess.run(
            [self.python, "-m", "synapse.app.homeserver", "--server-name", self.server_name,
             "--config-path", config_path, "--generate-config", "--report-stats=no",
             "--data-directory", self.directory],
            cwd=self.directory, check=True, capture_output=True, timeout=120,
        )
        with open(os.path.join(self.directory, "overrides.yaml"), "w") as f:
            # JSON is YAML.
            json.dump(_overrides(self.directory, self.fed_port, self.client_port, self.pki), f, indent=1)
        with open(os.path.join(self.directory, "log.config"), "w") as f:
            f.write(_LOG_CONFIG.format(path=self.log_path))

    async def start(self) -> None:
        await threads.deferToThread(self._configure)
        stdout = open(os.path.join(self.directory, "stdout.log"), "wb")  # closed in stop()
        self._stdout = stdout
        self.process = subprocess.Popen(
            [self.python, "-m", "synapse.app.homeserver", "-c", os.path.join(self.directory, "homeserver.yaml"),
             "-c", os.path.join(self.directory, "overrides.yaml")],
            cwd=self.directory, stdout=stdout, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = reactor.seconds() + START_TIMEOUT
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"Synapse exited with {self.process.returncode} during startup:\n{self.tail()}")
            try:
                code, _ = await self.request("GET", "/_matrix/client/versions")
                if code == 200:
                    return
            except Exception:
                pass
            if reactor.seconds() > deadline:
                self.stop()
                raise RuntimeError(f"Synapse not ready after {START_TIMEOUT}s:\n{self.tail()}")
            await deferLater(reactor, 0.2, lambda: None)

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            os.kill(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.kill(process.pid, signal.SIGKILL)
                process.wait(timeout=5)
        if getattr(self, "_stdout", None) is not None:
            self._stdout.close()
            self._stdout = None

    def tail(self, lines: int = 40) -> str:
        out = []
        for name in ("stdout.log", "homeserver.log"):
            path = os.path.join(self.directory, name)
            if os.path.exists(path):
                with open(path, errors="replace") as f:
                    out.append(f"--- {name}\n" + "".join(f.readlines()[-lines:]))
        return "\n".join(out)

    # -- client API ---------------------------------------------------------------------------------
    async def request(self, method: str, path: str, body: Any = None, token: Optional[str] = None) -> tuple[int, Any]:
        headers = {b"Content-Type": [b"application/json"]}
        if token is not None:
            headers[b"Authorization"] = [b"Bearer " + token.encode()]
        data = json.dumps(body).encode() if body is not None else None
        response = await treq.request(method, self.base_url + path, data=data, headers=headers, persistent=False,
                                      timeout=30)
        content = await response.content()
        try:
            parsed = json.loads(content) if content else None
        except ValueError:
            parsed = None
        return response.code, parsed

    async def register_user(self, localpart: str, password: str = "correct horse") -> dict:
        """Register through the client API (m.login.dummy); returns the response (user_id, access_token...)."""
        body: dict[str, Any] = {"username": localpart, "password": password, "inhibit_login": False}
        code, resp = await self.request("POST", "/_matrix/client/v3/register", body)
        if code == 401 and resp and "session" in resp:
            body["auth"] = {"type": "m.login.dummy", "session": resp["session"]}
            code, resp = await self.request("POST", "/_matrix/client/v3/register", body)
        if code != 200:
            raise RuntimeError(f"Synapse registration of {localpart} failed: {code} {resp}")
        return resp
