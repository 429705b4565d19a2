"""How much does /sync cost? Initial sync of a user in many rooms, and incremental syncs.

Starts a real matrixhs in-process (SQLite, or PostgreSQL via --dsn), puts the
user in --rooms rooms (each with a second member, a name, and --messages
messages; set up through the room engine), then times over HTTP:

* initial syncs (default filter, and with lazy-loading members);
* an incremental sync with nothing new (should cost no database work at all);
* an incremental sync after a message in one room, and after messages in
  rooms the user is not in (should cost one query, whatever the room count);

and counts the database transactions each kind of request runs. Usage:

    .venv/bin/python contrib/bench/sync_bench.py --rooms 50 --messages 20 --runs 10
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import urllib.parse
from collections import Counter

import treq
import yaml
from twisted.internet import defer, reactor, task

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", ".."))

from mxtwisted.config import parse_config  # noqa: E402
from mxtwisted.config.generate import render_config  # noqa: E402
from mxtwisted.server_keys import ensure_signing_key  # noqa: E402
from mxtwisted.service import make_homeserver  # noqa: E402


class InteractionCounter:
    """Counts Database.run_interaction calls by name."""

    def __init__(self, db) -> None:
        self.counts: Counter = Counter()
        original = db.run_interaction

        def counting(desc, *args, **kwargs):
            self.counts[desc] += 1
            return original(desc, *args, **kwargs)

        db.run_interaction = counting

    def take(self) -> Counter:
        counts, self.counts = self.counts, Counter()
        return counts


async def get_sync(base: str, token: str, **params) -> tuple[float, dict]:
    query = urllib.parse.urlencode({k: v for k, v in params.items() if v is not None})
    start = time.perf_counter()
    response = await treq.get(f"{base}/_matrix/client/v3/sync?{query}", headers={"Authorization": f"Bearer {token}"})
    body = json.loads(await response.content())
    assert response.code == 200, body
    return (time.perf_counter() - start) * 1000, body


def summary(label: str, times: list[float], counts: Counter, runs: int) -> None:
    times = sorted(times)
    interactions = sum(counts.values()) / runs
    names = ", ".join(f"{k}×{v / runs:g}" for k, v in sorted(counts.items()))
    print(f"{label:44} p50 {statistics.median(times):7.2f} ms  max {times[-1]:7.2f} ms  "
          f"{interactions:5.1f} db transactions/request ({names})")


async def main(args: argparse.Namespace) -> None:
    directory = tempfile.mkdtemp(prefix="mxbench-")
    dsn, _, query = (args.dsn or "").partition("?")
    data = yaml.safe_load(render_config(server_name="bench.local", data_dir=directory, port=0, database_dsn=dsn or None))
    for key, value in urllib.parse.parse_qsl(query):  # e.g. ?host=/path/to/socket/dir
        data["database"]["args"][key] = value
    data["listeners"][0]["bind_addresses"] = ["127.0.0.1"]
    data["listeners"][0]["port"] = 0
    data["rc_message"] = {"per_second": 1e6, "burst_count": 1e6}
    data["bcrypt_rounds"] = 4
    config = parse_config(data, config_path=os.path.join(directory, "homeserver.yaml"))
    ensure_signing_key(config.signing_key_path)
    service = make_homeserver(reactor, config)
    service.startService()
    await service.ready
    try:
        base = f"http://127.0.0.1:{service.ports[0].getHost().port}"
        c = service.components
        alice = await c.registration.register("alice", "pw")
        bob = await c.registration.register("bob", "pw")
        carol = await c.registration.register("carol", "pw")
        token = (await c.sessions.create_session(alice))["access_token"]
        start = time.perf_counter()
        rooms = []
        for r in range(args.rooms):
            room_id, _ = await c.room_creator.create_room(alice, {"preset": "public_chat", "name": f"room {r}"})
            await c.membership.update(bob, room_id, bob, "join")
            for m in range(args.messages):
                sender = alice if m % 2 else bob
                await c.rooms.send_event(sender, room_id, "m.room.message", {"msgtype": "m.text", "body": f"{r}/{m}"})
            rooms.append(room_id)
        elsewhere, _ = await c.room_creator.create_room(carol, {"preset": "public_chat"})
        print(f"set-up: {args.rooms} rooms x {args.messages} messages in {time.perf_counter() - start:.1f}s "
              f"({'PostgreSQL' if args.dsn else 'SQLite'})")
        counter = InteractionCounter(service.storage.db)
        lazy = json.dumps({"room": {"state": {"lazy_load_members": True}}})

        for label, flt in (("initial sync", None), ("initial sync, lazy-loading members", lazy)):
            times = []
            await get_sync(base, token, filter=flt)  # warm caches once
            counter.take()
            for _ in range(args.runs):
                elapsed, body = await get_sync(base, token, filter=flt)
                times.append(elapsed)
            assert len(body["rooms"]["join"]) == args.rooms + 0
            summary(f"{label} ({args.rooms} rooms)", times, counter.take(), args.runs)

        _, body = await get_sync(base, token)
        since = body["next_batch"]
        counter.take()
        times = []
        for _ in range(args.runs):
            elapsed, body = await get_sync(base, token, since=since)
            times.append(elapsed)
            assert not body["rooms"]["join"]
        summary("incremental, nothing new", times, counter.take(), args.runs)

        times = []
        counts: Counter = Counter()
        for i in range(args.runs):
            await c.rooms.send_event(carol, elsewhere, "m.room.message", {"msgtype": "m.text", "body": f"x{i}"})
            counter.take()
            elapsed, body = await get_sync(base, token, since=since)
            counts += counter.take()
            times.append(elapsed)
            assert not body["rooms"]["join"]
            since = body["next_batch"]
        summary("incremental, traffic only in other rooms", times, counts, args.runs)

        times = []
        counts = Counter()
        for i in range(args.runs):
            await c.rooms.send_event(bob, rooms[i % len(rooms)], "m.room.message", {"msgtype": "m.text", "body": f"y{i}"})
            counter.take()
            elapsed, body = await get_sync(base, token, since=since)
            counts += counter.take()
            times.append(elapsed)
            assert len(body["rooms"]["join"]) == 1
            since = body["next_batch"]
        summary("incremental, one new message", times, counts, args.runs)

        times = []
        for i in range(args.runs):
            d = defer.ensureDeferred(get_sync(base, token, since=since, timeout="30000"))
            await task.deferLater(reactor, 0.05, lambda: None)
            sent = time.perf_counter()
            await c.rooms.send_event(bob, rooms[0], "m.room.message", {"msgtype": "m.text", "body": f"z{i}"})
            _, body = await d
            times.append((time.perf_counter() - sent) * 1000)
            since = body["next_batch"]
        counter.take()
        summary("long-poll wake-up latency (send → response)", times, Counter(), args.runs)
    finally:
        await service.stopService()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rooms", type=int, default=50)
    parser.add_argument("--messages", type=int, default=20)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument(
        "--dsn", default=None, help="postgresql://user@:port/database[?host=/socket/dir] to benchmark on PostgreSQL"
    )
    task.react(lambda _reactor, a: defer.ensureDeferred(main(a)), [parser.parse_args()])
