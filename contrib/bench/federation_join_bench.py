"""How long does a matrixhs user take to join a big Synapse room over federation, compared with a Synapse user?

Starts a real Synapse ("origin", from .venv-synapse or $MATRIXHS_SYNAPSE_PYTHON) on loopback with the
interop tests' set-up (tests/interop/synapse_peer.py: HTTPS federation with a test CA, SQLite, no rate
limits, bcrypt rounds 4), creates a public room there and fills it with N members registered on that
Synapse (a few registrations and joins at a time). Then, R times:

  matrixhs  a new matrixhs homeserver (in this process, as tests/federation/test_remote_join.py starts
            it) and a new user; time its POST /join of the room, a remote join through the origin.
  Synapse   a second Synapse (a new process, the same set-up) and a new user; time its POST /join of
            the same room, also a remote join through the origin.

Each run uses new joining servers, so every join is a first (remote) join of that server. The two sides
alternate who goes first, so that neither always meets a cold origin. Two times are taken per join:
"join" is until POST /join returns; "full" is until GET /joined_members on the joining server lists
every member (N + 2: creator, members, joiner). Both servers ask the origin for partial state
(``omit_members``, "faster joins") and finish fetching the members in the background, so "join" can be much
shorter than "full" (matrixhs: ``federation_partial_state_joins``, on by default).

Usage (progress on stderr, the table on stdout):

    .venv/bin/python contrib/bench/federation_join_bench.py --members 1000 --runs 3
    .venv/bin/python contrib/bench/federation_join_bench.py --members 50 --profile /tmp/join.svg
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any, Awaitable, Callable, Optional
from urllib.parse import quote

from twisted.internet import defer, reactor, task

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
sys.path.insert(0, ROOT)

from tests.federation.support import make_pki  # noqa: E402
from tests.federation.test_remote_join import start_named_homeserver  # noqa: E402
from tests.interop import synapse_peer  # noqa: E402
from tests.interop.synapse_peer import SynapsePeer  # noqa: E402

V3 = "/_matrix/client/v3"


def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class Harness:
    """What the tests' start-up helpers need of a TestCase: ``mktemp`` and ``addCleanup`` (run by ``cleanup``)."""

    def __init__(self, directory: str) -> None:
        self.directory = directory
        self._count = 0
        self._cleanups: list[tuple[Callable[..., Any], tuple]] = []

    def mktemp(self) -> str:
        self._count += 1
        return os.path.join(self.directory, f"tmp{self._count}")

    def addCleanup(self, f: Callable[..., Any], *args: Any) -> None:
        self._cleanups.append((f, args))

    async def cleanup(self) -> None:
        while self._cleanups:
            f, args = self._cleanups.pop()
            try:
                await defer.maybeDeferred(f, *args)
            except Exception as e:  # a cleanup failing must not hide the results
                progress(f"cleanup {f!r} failed: {e!r}")


async def call(request: Callable[..., Awaitable[tuple[int, Any]]], method: str, path: str, token: str,
               body: Any = None, expect: int = 200) -> Any:
    code, resp = await request(method, V3 + path, body, token=token)
    if code != expect:
        raise RuntimeError(f"{method} {path}: {code} {resp}")
    return resp


async def bounded(jobs: list[Callable[[], Awaitable[Any]]], concurrency: int, what: str) -> list[Any]:
    """Run ``jobs`` at most ``concurrency`` at a time, reporting progress every 10%."""
    results: list[Any] = [None] * len(jobs)
    done = 0
    step = max(1, len(jobs) // 10)
    started = time.perf_counter()

    async def worker(indices: list[int]) -> None:
        nonlocal done
        for i in indices:
            results[i] = await jobs[i]()
            done += 1
            if done % step == 0 or done == len(jobs):
                progress(f"  {what}: {done}/{len(jobs)} ({time.perf_counter() - started:.0f}s)")

    await defer.gatherResults([
        defer.ensureDeferred(worker(list(range(k, len(jobs), concurrency)))) for k in range(concurrency)
    ], consumeErrors=True)
    return results


async def populate(origin: SynapsePeer, room_id: str, members: int, concurrency: int) -> None:
    """Register ``members`` users on the origin and join each to the room."""

    def job(i: int) -> Callable[[], Awaitable[None]]:
        async def run() -> None:
            user = await origin.register_user(f"member{i}")
            await call(origin.request, "POST", f"/join/{quote(room_id)}", user["access_token"], {})

        return run

    await bounded([job(i) for i in range(members)], concurrency, "members registered and joined")


async def wait_all_members(request: Callable[..., Awaitable[tuple[int, Any]]], token: str, room_id: str,
                           expected: int, timeout: float) -> None:
    """Poll GET /joined_members until it lists ``expected`` members (Synapse blocks it during a partial-state resync)."""
    deadline = time.perf_counter() + timeout
    while True:
        try:
            code, resp = await request("GET", f"{V3}/rooms/{quote(room_id)}/joined_members", token=token)
        except Exception as e:  # the interop client gives up after 30s; a resync may take longer
            code, resp = 0, {"error": repr(e)}
        if code == 200 and len(resp.get("joined", {})) >= expected:
            return
        if time.perf_counter() > deadline:
            raise RuntimeError(f"joined_members: {code} {resp!r:.300} after {timeout}s")
        await task.deferLater(reactor, 0.05, lambda: None)


async def timed_join(request: Callable[..., Awaitable[tuple[int, Any]]], token: str, room_id: str, via: str,
                     expected: int) -> tuple[float, float]:
    """(ms until POST /join returns, ms until the joining server lists all ``expected`` members)."""
    start = time.perf_counter()
    await call(request, "POST", f"/join/{quote(room_id)}?server_name={quote(via)}", token, {})
    joined = time.perf_counter()
    await wait_all_members(request, token, room_id, expected, timeout=600)
    full = time.perf_counter()
    return (joined - start) * 1000, (full - start) * 1000


class PySpy:
    """``py-spy record`` attached to this process (all threads: SQLite runs in a thread pool) while running."""

    def __init__(self, output: str) -> None:
        fmt = "flamegraph" if output.endswith(".svg") else "speedscope" if output.endswith(".json") else "raw"
        exe = shutil.which("py-spy") or os.path.join(os.path.dirname(sys.executable), "py-spy")
        self.process = subprocess.Popen(
            [exe, "record", "--pid", str(os.getpid()), "--threads", "--rate", "250", "--format", fmt,
             "--output", output],
            stdout=subprocess.DEVNULL, stderr=sys.stderr,
        )

    async def started(self) -> None:
        await task.deferLater(reactor, 1.0, lambda: None)  # let it attach before the measured work
        if self.process.poll() is not None:
            raise RuntimeError("py-spy exited (needs ptrace permission: run as root or with CAP_SYS_PTRACE)")

    def stop(self) -> None:
        self.process.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
        self.process.wait(timeout=60)


# The joining servers of earlier runs keep running until the end: their members' events are in the room's
# state, and a later joiner verifying those events' signatures needs their keys (no notary is configured).


async def run_matrixhs(harness: Harness, pki: Any, room_id: str, via: str, expected: int,
                       profile: Optional[str]) -> tuple[float, float]:
    hs = await start_named_homeserver(harness, pki)  # stopped by harness.cleanup()
    user = await hs.register_user("joiner")
    spy = PySpy(profile) if profile else None
    if spy is not None:
        await spy.started()
    try:
        return await timed_join(hs.request, user["access_token"], room_id, via, expected)
    finally:
        if spy is not None:
            spy.stop()
            progress(f"  profile of the matrixhs join written to {profile}")


async def run_synapse(harness: Harness, pki: Any, python: str, room_id: str, via: str,
                      expected: int) -> tuple[float, float]:
    joiner = SynapsePeer(harness.mktemp(), pki, python=python)
    harness.addCleanup(joiner.stop)
    await joiner.start()
    user = await joiner.register_user("joiner")
    return await timed_join(joiner.request, user["access_token"], room_id, via, expected)


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def print_table(args: argparse.Namespace, results: dict[str, list[tuple[float, float]]], populate_s: float) -> None:
    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    print(f"Remote join of a Synapse room with {args.members} members (+ creator), {args.runs} run(s) each; "
          f"populating took {populate_s:.0f}s; load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} "
          f"on {os.cpu_count()} CPUs")
    print()
    print(f"{'joining server':<16}{'join ms (median)':>18}{'full ms (median)':>18}   runs: join / full ms")
    for name, runs in results.items():
        per_run = ", ".join(f"{j:.0f}/{f:.0f}" for j, f in runs)
        print(f"{name:<16}{median([j for j, _ in runs]):>18.0f}{median([f for _, f in runs]):>18.0f}   {per_run}")
    print()
    ours, theirs = results["matrixhs"], results["Synapse"]
    if ours and theirs:
        join_ratio = median([j for j, _ in ours]) / median([j for j, _ in theirs])
        full_ratio = median([f for _, f in ours]) / median([f for _, f in theirs])
        print(f"ratio matrixhs/Synapse of the median: join {join_ratio:.2f}, full {full_ratio:.2f}")
    print("join: until POST /join returns. full: until GET /joined_members on the joining server lists everyone.")
    print("Both join with partial state (omit_members) and fetch the members afterwards.")


async def main(args: argparse.Namespace) -> None:
    python = args.synapse_python or synapse_peer.synapse_python() or os.path.join(ROOT, ".venv-synapse", "bin", "python")
    if not os.access(python, os.X_OK):
        raise SystemExit(f"no Synapse python at {python}: run .ci/install-synapse or pass --synapse-python")
    directory = tempfile.mkdtemp(prefix="join-bench-")
    harness = Harness(directory)
    results: dict[str, list[tuple[float, float]]] = {"matrixhs": [], "Synapse": []}
    try:
        pki = make_pki(harness.mktemp())
        origin = SynapsePeer(harness.mktemp(), pki, python=python)
        harness.addCleanup(origin.stop)
        progress(f"starting the origin Synapse in {origin.directory}")
        await origin.start()
        creator = await origin.register_user("creator")
        room_id = (await call(origin.request, "POST", "/createRoom", creator["access_token"],
                              {"preset": "public_chat", "name": "join bench"}))["room_id"]
        progress(f"filling {room_id} with {args.members} members, {args.concurrency} at a time")
        started = time.perf_counter()
        await populate(origin, room_id, args.members, args.concurrency)
        populate_s = time.perf_counter() - started
        expected = args.members + 2
        for run in range(args.runs):
            order = ["matrixhs", "Synapse"] if run % 2 == 0 else ["Synapse", "matrixhs"]
            for side in order:
                progress(f"run {run + 1}/{args.runs}: {side} joins")
                if side == "matrixhs":
                    profile = args.profile if run == 0 else None
                    result = await run_matrixhs(harness, pki, room_id, origin.server_name, expected, profile)
                else:
                    result = await run_synapse(harness, pki, python, room_id, origin.server_name, expected)
                progress(f"  {side}: join {result[0]:.0f} ms, full {result[1]:.0f} ms")
                results[side].append(result)
        print_table(args, results, populate_s)
    finally:
        await harness.cleanup()
        if args.keep:
            progress(f"kept {directory}")
        else:
            shutil.rmtree(directory, ignore_errors=True)


def parse_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=(__doc__ or "").splitlines()[0], epilog="See contrib/bench/README.md.",
    )
    parser.add_argument("--members", type=int, default=1000, help="members of the Synapse room (default 1000)")
    parser.add_argument("--runs", type=int, default=3, help="joins timed per side, each by a new server (default 3)")
    parser.add_argument("--concurrency", type=int, default=8,
                        help="registrations and joins in flight while filling the room (default 8)")
    parser.add_argument("--synapse-python", help="a python that can import synapse "
                        "(default $MATRIXHS_SYNAPSE_PYTHON, else .venv-synapse/bin/python)")
    parser.add_argument("--profile", metavar="PATH", help="record the first matrixhs join with py-spy "
                        "(PATH.svg: flame graph, PATH.json: speedscope, else collapsed stacks)")
    parser.add_argument("--keep", action="store_true", help="keep the servers' directories (logs) afterwards")
    return parser.parse_args(argv)


if __name__ == "__main__":
    task.react(lambda _reactor, a: defer.ensureDeferred(main(a)), [parse_args()])
