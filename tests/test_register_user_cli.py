"""``python -m mxtwisted register-user`` against a real server: a child process, real HTTP, the shared secret."""

from __future__ import annotations

import os
import sys
from typing import Any

import yaml
from twisted.internet import defer, protocol, reactor
from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial.unittest import TestCase

from mxtwisted.admin_cli import client_url_from_config
from mxtwisted.config import parse_config
from tests.support.homeserver import RunningHomeserver, start_homeserver

SECRET = "cli shared secret"
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class PromptAnswerer(protocol.ProcessProtocol):
    """Drives the command through a pseudo-terminal: answers each prompt it sees with the next answer."""

    def __init__(self, answers: list[tuple[str, str]]) -> None:
        self.answers = list(answers)
        self.output = ""
        self.done: defer.Deferred = defer.Deferred()

    def outReceived(self, data: bytes) -> None:
        self.output += data.decode("utf-8", "replace")
        while self.answers and self.output.rstrip().endswith(self.answers[0][0]):
            prompt, answer = self.answers.pop(0)
            self.output += "\n"  # so that the same prompt asked again is seen as new
            self.transport.write(answer.encode() + b"\n")

    def processEnded(self, reason: Any) -> None:
        self.done.callback(reason.value.exitCode)


class RegisterUserCommandTests(TestCase):
    hs: RunningHomeserver

    async def start(self, **overrides: Any) -> RunningHomeserver:
        config: dict[str, Any] = {"bcrypt_rounds": 4, "registration_shared_secret": SECRET}
        config.update(overrides)
        self.hs = await start_homeserver(self, **config)
        return self.hs

    def write_config(self, **data: Any) -> str:
        """A homeserver.yaml naming the running server's real port (its own config says port 0)."""
        port = self.hs.service.ports[0].getHost().port
        content = {
            "server_name": "test.local",
            "registration_shared_secret": SECRET,
            "listeners": [{"port": port, "bind_addresses": ["127.0.0.1"], "resources": [{"names": ["client"]}]}],
        }
        content.update(data)
        content = {k: v for k, v in content.items() if v is not None}
        path = os.path.join(self.hs.directory, "cli-homeserver.yaml")
        with open(path, "w") as f:
            yaml.safe_dump(content, f)
        return path

    async def run_cli(self, *args: str) -> tuple[str, str, int]:
        out, err, code = await getProcessOutputAndValue(
            sys.executable, ["-m", "mxtwisted", "register-user", *args], env=dict(os.environ), path=REPO
        )
        return out.decode(), err.decode(), code

    async def assert_user(self, user_id: str, password: str, admin: bool) -> None:
        user = await self.hs.storage.users.get_user(user_id)
        self.assertIsNotNone(user, user_id)
        self.assertEqual(user.admin, admin)
        self.assertTrue(await self.hs.components.hasher.check(password, user.password_hash))

    async def test_register_with_options_and_url_from_config(self):
        await self.start()
        config = self.write_config()
        out, err, code = await self.run_cli("-c", config, "--user", "bob", "--password", "hunter2 long", "--no-admin")
        self.assertEqual((code, out), (0, "@bob:test.local\n"), err)
        await self.assert_user("@bob:test.local", "hunter2 long", admin=False)
        # The tool creates the account only: no device was logged in.
        self.assertEqual(await self.hs.storage.devices.get_devices("@bob:test.local"), [])

    async def test_register_admin_with_shared_secret_option_and_url(self):
        hs = await self.start()
        out, err, code = await self.run_cli("-k", SECRET, "--url", hs.base_url, "-u", "Root", "-p", "pw", "--admin")
        self.assertEqual((code, out), (0, "@root:test.local\n"), err)
        await self.assert_user("@root:test.local", "pw", admin=True)

    async def test_password_file_and_user_type(self):
        hs = await self.start()
        path = os.path.join(hs.directory, "password.txt")
        with open(path, "w") as f:
            f.write("from a file\n")
        out, err, code = await self.run_cli(
            "-c", self.write_config(), "-u", "robot", "--password-file", path, "--no-admin", "-t", "bot"
        )
        self.assertEqual((code, out), (0, "@robot:test.local\n"), err)
        await self.assert_user("@robot:test.local", "from a file", admin=False)
        self.assertEqual((await hs.storage.users.get_user("@robot:test.local")).user_type, "bot")

    async def test_wrong_secret(self):
        hs = await self.start()
        out, err, code = await self.run_cli("-k", "not the secret", "--url", hs.base_url, "-u", "bob", "-p", "pw", "--no-admin")
        self.assertEqual((code, out), (1, ""))
        self.assertIn("matrixhs: error:", err)
        self.assertIn("403 M_FORBIDDEN", err)
        self.assertIsNone(await hs.storage.users.get_user("@bob:test.local"))

    async def test_taken_and_invalid_user(self):
        hs = await self.start()
        await hs.register_user("alice")
        config = self.write_config()
        _, err, code = await self.run_cli("-c", config, "-u", "alice", "-p", "pw", "--no-admin")
        self.assertEqual(code, 1)
        self.assertIn("M_USER_IN_USE", err)
        _, err, code = await self.run_cli("-c", config, "-u", "bad name", "-p", "pw", "--no-admin")
        self.assertEqual(code, 1)
        self.assertIn("M_INVALID_USERNAME", err)

    async def test_server_without_shared_secret(self):
        hs = await self.start(registration_shared_secret=None)
        _, err, code = await self.run_cli("-k", SECRET, "--url", hs.base_url, "-u", "bob", "-p", "pw", "--no-admin")
        self.assertEqual(code, 1)
        self.assertIn("Shared secret registration is not enabled", err)

    async def test_config_without_secret_and_bad_config(self):
        await self.start()
        _, err, code = await self.run_cli("-c", self.write_config(registration_shared_secret=None), "-u", "b", "-p", "pw")
        self.assertEqual(code, 1)
        self.assertIn("no registration_shared_secret", err)
        _, err, code = await self.run_cli("-c", os.path.join(self.hs.directory, "missing.yaml"), "-u", "b", "-p", "pw")
        self.assertEqual(code, 1)
        self.assertIn("does not exist", err)

    async def test_unreachable_server(self):
        await self.start()
        _, err, code = await self.run_cli("-k", SECRET, "--url", "http://127.0.0.1:9", "-u", "b", "-p", "pw", "--no-admin")
        self.assertEqual(code, 1)
        self.assertIn("cannot reach the server", err)

    async def test_help_and_usage_errors(self):
        out, _, code = await self.run_cli("--help")
        self.assertEqual(code, 0)
        self.assertIn("--shared-secret", out)
        _, err, code = await self.run_cli("-u", "bob")  # neither -c nor -k
        self.assertEqual(code, 2)
        self.assertIn("usage:", err)

    async def run_with_terminal(self, args: list[str], answers: list[tuple[str, str]]) -> tuple[int, str]:
        answerer = PromptAnswerer(answers)
        reactor.spawnProcess(
            answerer,
            sys.executable,
            [sys.executable, "-m", "mxtwisted", "register-user", *args],
            env=dict(os.environ),
            path=REPO,
            usePTY=True,
        )
        # A prompt that never comes must not hang the suite.
        killer = reactor.callLater(30, answerer.transport.signalProcess, "KILL")
        code = await answerer.done
        if killer.active():
            killer.cancel()
        return code, answerer.output

    async def test_prompts_for_user_password_and_admin_on_a_terminal(self):
        hs = await self.start()
        code, output = await self.run_with_terminal(
            ["--url", hs.base_url, "-k", SECRET],
            [
                ("New user localpart:", "carol"),
                ("Password:", "typed secret"),
                ("Confirm password:", "typed secret"),
                ("Make admin [no]:", "yes"),
            ],
        )
        self.assertEqual(code, 0, output)
        self.assertIn("@carol:test.local", output)
        self.assertNotIn("typed secret", output)  # no echo
        await self.assert_user("@carol:test.local", "typed secret", admin=True)

    async def test_mismatched_passwords(self):
        hs = await self.start()
        code, output = await self.run_with_terminal(
            ["--url", hs.base_url, "-k", SECRET, "-u", "dave", "--no-admin"],
            [("Password:", "one"), ("Confirm password:", "two")],
        )
        self.assertEqual(code, 1, output)
        self.assertIn("do not match", output)
        self.assertIsNone(await hs.storage.users.get_user("@dave:test.local"))


class ClientUrlFromConfigTests(TestCase):
    def url(self, listeners: list[dict]) -> Any:
        return client_url_from_config(parse_config({"server_name": "x.test", "listeners": listeners}))

    def test_listener_choice(self):
        self.assertEqual(self.url([{"port": 8008}]), "http://localhost:8008")
        self.assertEqual(self.url([{"port": 8008, "bind_addresses": ["127.0.0.1"]}]), "http://127.0.0.1:8008")
        self.assertEqual(self.url([{"port": 8008, "bind_addresses": ["::1"]}]), "http://[::1]:8008")
        self.assertEqual(
            self.url([{"port": 8448, "resources": [{"names": ["federation"]}]}, {"port": 8009, "resources": [{"names": ["client"]}]}]),
            "http://localhost:8009",
        )
        self.assertIsNone(self.url([{"port": 8448, "resources": [{"names": ["federation"]}]}]))
