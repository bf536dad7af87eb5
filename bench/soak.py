"""Soak: 1 000 concurrent clients registering and unregistering, 10 000 cycles in all; fds and RSS measured.

Runs inside tests/harness/isolate (`make soak`). Each client is its own connection to the Varlink machine
socket (sd-varlink allows 1 024 per UID) with a leader of its own, parked in its own scope; it registers
and unregisters that leader `--rounds` times. Afterwards the daemon must list no machine, on D-Bus and on
disk; then every client registers once more and the D-Bus view, the Varlink view and the state files must
hold exactly those. Prints fds and RSS of the daemon after a warm-up and at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from harness.system import PYMACHINED, STATE_DIR, System, in_isolation, system  # noqa: E402
from harness.varlink_raw import raw_exchange  # noqa: E402

MACHINE = "/run/systemd/machine/io.systemd.Machine"


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


async def client(index: int, leader: int, rounds: int, keep: bool, errors: list[str]) -> None:
    reader, writer = await asyncio.open_unix_connection(MACHINE, limit=1 << 20)

    async def call(method: str, parameters: dict[str, object]) -> dict[str, object]:
        writer.write(json.dumps({"method": method, "parameters": parameters}).encode() + b"\0")
        await writer.drain()
        return json.loads((await reader.readuntil(b"\0"))[:-1])  # type: ignore[no-any-return]

    name = f"s{index}"
    try:
        for _ in range(rounds):
            reply = await call("io.systemd.Machine.Register", {"name": name, "class": "container", "leader": leader})
            if "error" in reply:
                errors.append(f"register {name}: {reply}")
            reply = await call("io.systemd.Machine.Unregister", {"name": name})
            if "error" in reply:
                errors.append(f"unregister {name}: {reply}")
        if keep:
            reply = await call("io.systemd.Machine.Register", {"name": name, "class": "container", "leader": leader})
            if "error" in reply:
                errors.append(f"register {name}: {reply}")
    except Exception as exc:
        errors.append(f"client {index}: {exc!r}")
    finally:
        writer.close()


async def storm(leaders: list[int], rounds: int, keep: bool = False) -> list[str]:
    errors: list[str] = []
    await asyncio.gather(*(client(i, pid, rounds, keep, errors) for i, pid in enumerate(leaders)))
    return errors


def views(s: System) -> tuple[set[str], set[str], set[str]]:
    out = s.manager_call("ListMachines", options=["--json=short"], timeout=120).stdout
    dbus = {entry[0] for entry in json.loads(out)["data"][0]} - {".host"}
    disk = {p.name for p in STATE_DIR.iterdir() if not p.name.startswith(("unit:", "."))}
    reply = raw_exchange(MACHINE, {"method": "io.systemd.Machine.List", "parameters": {}, "more": True}, 120)
    varlink = {json.loads(m)["parameters"]["name"] for m in reply.messages} - {".host"}
    return dbus, varlink, disk


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=10, help="register/unregister cycles per client")
    args = parser.parse_args()
    if not in_isolation():
        print("bench/soak.py must run inside tests/harness/isolate (use `make soak`)", file=sys.stderr)
        return 2
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 8192), hard))
    with tempfile.TemporaryDirectory(prefix="pymachined-soak.") as tmp, system(PYMACHINED, Path(tmp)) as s:
        t0 = time.perf_counter()
        leaders = [s.spawn_leader(f"machine-s{i}.scope").pid for i in range(args.clients)]
        print(f"{len(leaders)} leaders in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
        assert s.daemon is not None
        pid = s.daemon.pid
        errors = asyncio.run(storm(leaders, 1))  # warm-up

        def settled() -> tuple[int, int]:
            time.sleep(1)  # the clients' connections close asynchronously
            return len(os.listdir(f"/proc/{pid}/fd")), rss_kib(pid)

        samples = [settled()]
        t0 = time.perf_counter()
        errors += asyncio.run(storm(leaders, args.rounds))
        elapsed = time.perf_counter() - t0
        samples.append(settled())
        errors += asyncio.run(storm(leaders, args.rounds))  # a second storm: growth or plateau?
        samples.append(settled())
        empty = views(s)
        kept_errors = asyncio.run(storm(leaders, 0, keep=True))
        full = views(s)
        expected = {f"s{i}" for i in range(len(leaders))}
    cycles = len(leaders) * args.rounds
    fds = " → ".join(str(f) for f, _ in samples)
    rss = " → ".join(str(r) for _, r in samples)
    ok = not errors and not kept_errors and all(v == set() for v in empty) and all(v == expected for v in full)
    print(f"# soak: {len(leaders)} concurrent Varlink clients, 2 × {cycles} register/unregister cycles\n")
    print(f"- first {cycles} cycles in {elapsed:.1f} s ({cycles / elapsed:.0f}/s), errors: {len(errors)} {errors[:3]}")
    print(f"- daemon fds {fds}; RSS {rss} KiB (after a warm-up round, after each storm)")
    print(f"- after the storm: D-Bus, Varlink, state files hold {[len(v) for v in empty]} machines (0 expected)")
    print(
        f"- all register once more: {[len(v) for v in full]} machines, equal to the clients: "
        f"{all(v == expected for v in full)}; errors: {kept_errors[:3]}"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
