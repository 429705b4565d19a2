"""The command line and twistd, as an administrator runs them: real processes, real HTTP."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

from twisted.trial.unittest import SynchronousTestCase

from mxtwisted.__main__ import twistd_command

PYTHON = sys.executable
TWISTD = twistd_command()[1:]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(*args, **kwargs):
    return subprocess.run([PYTHON, *args], capture_output=True, text=True, timeout=60, **kwargs)


def wait_for(url, proc=None, timeout=30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"server exited with {proc.returncode}: {proc.stderr.read() if proc.stderr else ''}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                return response.status, json.loads(response.read())
        except (urllib.error.URLError, ConnectionError, OSError):
            time.sleep(0.1)
    raise AssertionError(f"{url} did not answer within {timeout}s")


class GenerateConfigTests(SynchronousTestCase):
    def test_generate_then_rerun_keeps_config_and_key(self):
        d = self.mktemp()
        config = os.path.join(d, "hs", "homeserver.yaml")
        result = run("-m", "mxtwisted", "generate-config", "--server-name", "example.org", "--config-path", config)
        self.assertEqual(result.returncode, 0, result.stderr)
        key_path = os.path.join(d, "hs", "example.org.signing.key")
        with open(key_path) as f:
            key = f.read()
        self.assertRegex(key, r"^ed25519 a_\w{4} [A-Za-z0-9+/]{43}\n$")
        self.assertEqual(os.stat(key_path).st_mode & 0o777, 0o600)
        with open(config) as f:
            text = f.read()
        again = run("-m", "mxtwisted", "generate-config", "--server-name", "other.org", "--config-path", config)
        self.assertEqual(again.returncode, 0, again.stderr)
        self.assertIn("keeping it", again.stdout)
        with open(config) as f:
            self.assertEqual(f.read(), text)
        with open(key_path) as f:
            self.assertEqual(f.read(), key)

    def test_check_config_reports_bad_key_in_one_line(self):
        d = self.mktemp()
        os.makedirs(d)
        config = os.path.join(d, "homeserver.yaml")
        with open(config, "w") as f:
            f.write("server_name: example.org\nlisteners:\n  - port: eighty\n")
        result = run("-m", "mxtwisted", "check-config", "-c", config)
        self.assertEqual(result.returncode, 1)
        self.assertEqual(result.stderr.strip(), "matrixhs: error: listeners[0].port: expected an integer from 0 to 65535, got a string")

    def test_usage_error_exit_2(self):
        result = run("-m", "mxtwisted", "generate-config")
        self.assertEqual(result.returncode, 2)
        self.assertIn("--server-name", result.stderr)


class TwistdTests(SynchronousTestCase):
    def make_config(self, extra=""):
        d = os.path.abspath(self.mktemp())
        config = os.path.join(d, "homeserver.yaml")
        port = free_port()
        result = run("-m", "mxtwisted", "generate-config", "--server-name", "test.local", "--config-path", config,
                     "--port", str(port))
        self.assertEqual(result.returncode, 0, result.stderr)
        if extra:
            with open(config, "a") as f:
                f.write(extra)
        return d, config, port

    def test_help_documents_options(self):
        result = run(*TWISTD, "matrixhs", "--help")
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn("--config", result.stdout)
        self.assertIn("homeserver", result.stdout)

    def test_bad_config_stops_with_one_line(self):
        d, config, _ = self.make_config("no_such_option: 3\n")
        result = run(*TWISTD, "-n", "matrixhs", "-c", config)
        self.assertEqual(result.returncode, 1)
        self.assertEqual(result.stderr.strip(), "matrixhs: error: no_such_option: unknown key")
        self.assertNotIn("Traceback", result.stdout + result.stderr)

    def test_missing_signing_key_stops_with_one_line(self):
        d, config, _ = self.make_config()
        os.unlink(os.path.join(d, "test.local.signing.key"))
        result = run(*TWISTD, "-n", "matrixhs", "-c", config)
        self.assertEqual(result.returncode, 1)
        self.assertIn("matrixhs: error: signing key file", result.stderr)
        self.assertNotIn("Traceback", result.stderr)

    def test_foreground_serves_and_stops_on_sigterm(self):
        d, config, port = self.make_config("report_stats: false\n")
        proc = subprocess.Popen([PYTHON, *TWISTD, "-n", "matrixhs", "-c", config],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            status, body = wait_for(f"http://127.0.0.1:{port}/_matrix/client/versions", proc)
            self.assertEqual(status, 200)
            self.assertIsInstance(body["versions"], list)
            self.assertTrue(os.path.exists(os.path.join(d, "homeserver.db")))
        finally:
            proc.send_signal(signal.SIGTERM)
            out, err = proc.communicate(timeout=30)
        # twistd re-raises the stopping signal at exit, so the status says "terminated by SIGTERM".
        self.assertIn(proc.returncode, (0, -signal.SIGTERM), err)
        self.assertIn("report_stats is not implemented by matrixhs and is ignored", out)
        self.assertIn("matrixhs stopped", out)

    def test_daemonised_with_pidfile_and_logfile(self):
        d, config, port = self.make_config()
        pidfile = os.path.join(d, "twistd.pid")
        logfile = os.path.join(d, "twistd.log")
        result = run(*TWISTD, "--pidfile", pidfile, "--logfile", logfile, "matrixhs", "-c", config)
        self.assertEqual(result.returncode, 0, result.stderr)
        try:
            wait_for(f"http://127.0.0.1:{port}/_matrix/federation/v1/version")
            with open(pidfile) as f:
                pid = int(f.read())
        finally:
            if os.path.exists(pidfile):
                with open(pidfile) as f:
                    os.kill(int(f.read()), signal.SIGTERM)
        deadline = time.monotonic() + 30
        while os.path.exists(pidfile) and time.monotonic() < deadline:
            time.sleep(0.1)
        self.assertFalse(os.path.exists(pidfile))
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.05)
        self.assertRaises(ProcessLookupError, os.kill, pid, 0)
        with open(logfile) as f:
            self.assertIn("matrixhs is ready", f.read())
