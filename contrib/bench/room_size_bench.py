"""Does sending into a big room cost more than sending into a small one?

Starts a real matrixhs in-process (SQLite or PostgreSQL via --dsn), fills one
room with N joined members (directly through the room engine, to keep set-up
fast), then times M sends through the HTTP API into that room and into a
room of 10 members, and prints both. Usage:

    .venv/bin/python contrib/bench/room_size_bench.py --members 10000 --sends 300
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

import treq
import yaml
from twisted.internet import defer, reactor, task

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", ".."))

from mxtwisted.config import parse_config  # noqa: E402
from mxtwisted.config.generate import render_config  # noqa: E402
from mxtwisted.server_keys import ensure_signing_key  # noqa: E402
from mxtwisted.service import make_homeserver  # noqa: E402


async def fill_room(hs, room_id: str, members: int, prefix: str) -> None:
    c = hs.components
    batch = []
    for i in range(members):
        user_id = f"@{prefix}{i}:bench.local"
        await hs.storage.users.create_user(user_id, None, 0)
        batch.append(defer.ensureDeferred(c.membership.update(user_id, room_id, user_id, "join")))
        if len(batch) >= 50:
            await defer.gatherResults(batch)
            batch = []
    if batch:
        await defer.gatherResults(batch)


async def time_sends(base: str, token: str, room_id: str, sends: int) -> list[float]:
    times = []
    for i in range(sends):
        start = time.perf_counter()
        response = await treq.put(
            f"{base}/_matrix/client/v3/rooms/{room_id}/send/m.room.message/{room_id}-{i}",
            json={"msgtype": "m.text", "body": f"message {i}"},
            headers={"Authorization": f"Bearer {token}"},
        )
        await response.content()
        assert response.code == 200, response.code
        times.append((time.perf_counter() - start) * 1000)
    return times


async def main(args: argparse.Namespace) -> None:
    directory = tempfile.mkdtemp(prefix="mxbench-")
    data = yaml.safe_load(render_config(server_name="bench.local", data_dir=directory, port=0, database_dsn=args.dsn))
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
        owner = await c.registration.register("owner", "pw")
        login = await c.sessions.create_session(owner)
        results = {}
        for label, members in (("small", 10), ("big", args.members)):
            room_id, _ = await c.room_creator.create_room(owner, {"preset": "public_chat"})
            start = time.perf_counter()
            await fill_room(service, room_id, members, label)
            fill = time.perf_counter() - start
            times = await time_sends(base, login["access_token"], room_id, args.sends)
            results[label] = (members, fill, times)
        for label, (members, fill, times) in results.items():
            times.sort()
            print(
                f"{label:5} room: {members:6d} members (filled in {fill:.1f}s), {len(times)} sends: "
                f"p50 {statistics.median(times):.2f} ms, p95 {times[int(len(times) * 0.95)]:.2f} ms, "
                f"mean {statistics.mean(times):.2f} ms"
            )
    finally:
        await service.stopService()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=10000)
    parser.add_argument("--sends", type=int, default=300)
    parser.add_argument("--dsn", default=None, help="postgresql://... to benchmark on PostgreSQL")
    task.react(lambda _reactor, a: defer.ensureDeferred(main(a)), [parser.parse_args()])
