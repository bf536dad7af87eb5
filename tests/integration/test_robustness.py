"""Crash safety, concurrency and resource use under load (the long fuzzing runs live in bench/)."""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import time
from pathlib import Path

from dbus_fast import MessageType

from harness.client import connect, manager_call
from harness.system import STATE_DIR, System, wait_for
from pymachined.state import parse_env


async def storm(leaders: list[int], rounds: int, clients: int) -> list[str]:
    """Many clients at once, each registering and unregistering its own machines; errors collected."""
    errors: list[str] = []

    async def client(index: int) -> None:
        bus = await connect()
        try:
            mine = leaders[index::clients]
            for _ in range(rounds):
                for n, pid in enumerate(mine):
                    name = f"m{index}-{n}"
                    reply = await bus.call(
                        manager_call("RegisterMachine", "sayssus", [name, b"", "", "container", pid, ""])
                    )
                    if reply is None or reply.message_type is MessageType.ERROR:
                        errors.append(f"register {name}: {reply.body if reply else 'no reply'}")
                    reply = await bus.call(manager_call("UnregisterMachine", "s", [name]))
                    if reply is None or reply.message_type is MessageType.ERROR:
                        errors.append(f"unregister {name}: {reply.body if reply else 'no reply'}")
        except Exception as exc:  # the daemon may be killed under us
            errors.append(f"client {index}: {exc!r}")
        finally:
            bus.disconnect()

    await asyncio.gather(*(client(i) for i in range(clients)))
    return errors


def listed(s: System) -> set[str]:
    out = s.manager_call("ListMachines", options=["--json=short"]).stdout
    return {entry[0] for entry in json.loads(out)["data"][0]} - {".host"}


def on_disk() -> set[str]:
    return {p.name for p in STATE_DIR.iterdir() if not p.name.startswith(("unit:", "."))}


def test_concurrent_clients_lose_and_duplicate_nothing(machined: System) -> None:
    leaders = [machined.spawn_leader(f"machine-c{i}.scope").pid for i in range(200)]
    errors = asyncio.run(storm(leaders, rounds=2, clients=100))
    assert errors == []
    assert listed(machined) == set() and on_disk() == set()

    # and the same clients leaving their machines registered: one each, nothing lost
    async def register_all() -> None:
        # all at once, over two connections (dbus-daemon allows 128 pending replies per connection)
        buses = [await connect() for _ in range(2)]
        calls = [
            buses[i % 2].call(manager_call("RegisterMachine", "sayssus", [f"keep{i}", b"", "", "container", pid, ""]))
            for i, pid in enumerate(leaders)
        ]
        replies = await asyncio.gather(*calls)
        failures = [r.body for r in replies if r is None or r.message_type is not MessageType.METHOD_RETURN]
        assert failures == [], failures[:3]
        for bus in buses:
            bus.disconnect()

    asyncio.run(register_all())
    expected = {f"keep{i}" for i in range(len(leaders))}
    assert listed(machined) == expected == on_disk()


def test_sigkill_during_a_registration_storm(machined: System) -> None:
    leaders = [machined.spawn_leader(f"machine-k{i}.scope").pid for i in range(60)]
    rng = random.Random(252)
    for _ in range(5):

        async def storm_and_kill() -> None:
            task = asyncio.ensure_future(storm(leaders, rounds=20, clients=6))
            await asyncio.sleep(rng.uniform(0.05, 0.4))
            assert machined.daemon is not None
            machined.daemon.send_signal(signal.SIGKILL)
            await task

        asyncio.run(storm_and_kill())
        machined.daemon.wait()
        machined.start_daemon()
        # every state file parses, no temporary is left, and the daemon lists exactly what is on disk
        assert [p.name for p in STATE_DIR.iterdir() if p.name.startswith(".")] == []
        for path in STATE_DIR.iterdir():
            if path.name.startswith("unit:"):
                assert (STATE_DIR / os.readlink(path)).exists() or not path.exists()
                continue
            values = parse_env(path.read_text())
            assert values["NAME"] == path.name and int(values["LEADER"]) in leaders
        assert listed(machined) == on_disk()
        # clean up for the next round
        for name in listed(machined):
            machined.manager_call("UnregisterMachine", "s", name)


def test_fds_and_memory_stay_flat(machined: System) -> None:
    leaders = [machined.spawn_leader(f"machine-f{i}.scope").pid for i in range(20)]
    assert machined.daemon is not None
    pid = machined.daemon.pid

    def fds() -> int:
        return len(os.listdir(f"/proc/{pid}/fd"))

    def rss_kb() -> int:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        return 0

    asyncio.run(storm(leaders, rounds=25, clients=4))  # warm up: 500 cycles
    time.sleep(0.2)
    fds_before, rss_before = fds(), rss_kb()
    asyncio.run(storm(leaders, rounds=100, clients=4))  # 2000 more cycles
    wait_for(lambda: fds() <= fds_before, "fds to settle", timeout=5)
    assert fds() <= fds_before
    assert rss_kb() - rss_before < 4096, (rss_before, rss_kb())  # < 4 MiB over 2000 cycles
