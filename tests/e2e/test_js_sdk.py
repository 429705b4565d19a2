"""End to end with matrix-js-sdk: its own sync loop against a real matrixhs.

``tests/e2e/js/sync_e2e.mjs`` registers two users, has one create a room and
the other join it, starts the second client's sync loop (``startClient``),
sends a message from the first, and reports when the second client's
timeline shows it. The npm package is installed on first use from the
lock file (``npm ci``); without node or npm the test is skipped with the
reason.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess

from twisted.internet import threads
from twisted.trial import unittest

from tests.support.homeserver import start_homeserver

JS_DIR = os.path.join(os.path.dirname(__file__), "js")


def _ensure_node_modules() -> str | None:
    """Install the locked npm dependencies if needed; returns a skip reason or None."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        return "node and npm are needed for the matrix-js-sdk test (Debian: apt-get install nodejs npm)"
    if os.path.isdir(os.path.join(JS_DIR, "node_modules", "matrix-js-sdk")):
        return None
    result = subprocess.run(
        ["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=JS_DIR, capture_output=True, text=True,
        timeout=600,
    )
    if result.returncode != 0:
        return f"npm ci failed (is the npm registry reachable?): {result.stderr.strip()[-500:]}"
    return None


def _run_node(base_url: str) -> dict:
    result = subprocess.run(
        ["node", "sync_e2e.mjs"], cwd=JS_DIR, capture_output=True, text=True, timeout=90,
        env={**os.environ, "BASE_URL": base_url},
    )
    lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
    if not lines:
        raise AssertionError(f"no result from node (exit {result.returncode}):\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    outcome = json.loads(lines[-1])
    outcome["exit"] = result.returncode
    return outcome


class JsSdkSyncTest(unittest.TestCase):
    timeout = 240

    async def test_js_sdk_sync_loop_receives_a_message(self) -> None:
        reason = await threads.deferToThread(_ensure_node_modules)
        if reason is not None:
            raise unittest.SkipTest(reason)
        hs = await start_homeserver(
            self, bcrypt_rounds=4, enable_registration=True, enable_registration_without_verification=True,
        )
        outcome = await threads.deferToThread(_run_node, hs.base_url)
        self.assertTrue(outcome.get("ok"), outcome)
        self.assertEqual(outcome["exit"], 0)
        self.assertTrue(outcome["sender"].startswith("@alice"), outcome)
        self.assertEqual(outcome["roomName"], "js-sdk room")
