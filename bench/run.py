"""pymachined vs systemd-machined 252: latency, throughput, memory and start-up (issue 9).

Run inside tests/harness/isolate (`make bench`). Both daemons run on the same private bus, driven by the
same client, alternating pymachined / 252 / pymachined / 252 ... per repetition. Prints a Markdown report
and writes it to bench/results.md. `--quick` is a smoke run with small sizes.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(BENCH))

from client import (  # noqa: E402
    BenchError,
    Varlink,
    call,
    connect,
    dbus_call,
    manager,
    register,
    timed_calls,
    unregister,
)
from clone import clone_table  # noqa: E402
from dbus_fast import Message, MessageType  # noqa: E402
from dbus_fast.aio import MessageBus  # noqa: E402

from harness.system import (  # noqa: E402
    BUS_ADDRESS,
    BUS_NAME,
    PYMACHINED,
    REFERENCE,
    Implementation,
    Leader,
    System,
    in_isolation,
    reset_runtime_state,
    system,
    wait_for,
)
from harness.varlink_raw import raw_exchange  # noqa: E402

IMPLS = (PYMACHINED, REFERENCE)
MACHINE_SOCKET = "/run/systemd/machine/io.systemd.Machine"
PY, REF = PYMACHINED.name, REFERENCE.name
FLOOR = "dbus-fast floor"
# production log level: the harness default (debug) would mostly measure logging
BENCH_ENV = {"SYSTEMD_LOG_LEVEL": "info"}
USERNS_UID = 100005
REMOVAL_TIMEOUT_252 = 2.0


@dataclass
class Config:
    reps: int
    sizes: tuple[int, ...]
    cycles: int
    get_calls: int
    bypid_calls: int
    list_calls: dict[int, int]
    userdb_calls: int
    getent_runs: int
    removal_samples: int
    removal_samples_252: int
    netns_sizes: tuple[int, ...]
    machinectl_runs: int


QUICK = Config(
    reps=1,
    sizes=(10, 100),
    cycles=100,
    get_calls=300,
    bypid_calls=200,
    list_calls={10: 100, 100: 50},
    userdb_calls=200,
    getent_runs=5,
    removal_samples=5,
    removal_samples_252=1,
    netns_sizes=(20, 50),
    machinectl_runs=2,
)
FULL = Config(
    reps=5,
    sizes=(10, 100, 1000),
    cycles=1000,
    get_calls=2000,
    bypid_calls=1000,
    list_calls={10: 500, 100: 300, 1000: 60},
    userdb_calls=1000,
    getent_runs=20,
    removal_samples=15,
    removal_samples_252=2,
    netns_sizes=(100, 1000),
    machinectl_runs=3,
)


@dataclass
class Results:
    """samples[(metric, size, implementation name)] = values (seconds, ops/s or bytes)."""

    samples: dict[tuple[str, int, str], list[float]] = field(default_factory=lambda: defaultdict(list))
    notes: list[str] = field(default_factory=list)

    def add(self, metric: str, size: int, impl: str, values: list[float] | float) -> None:
        self.samples[(metric, size, impl)].extend(values if isinstance(values, list) else [values])

    def get(self, metric: str, size: int, impl: str) -> list[float]:
        return self.samples.get((metric, size, impl), [])


def log(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------- daemon control


def start(s: System, impl: Implementation) -> None:
    reset_runtime_state()
    s.implementation = impl
    s.start_daemon(extra_env=BENCH_ENV)


def stop(s: System) -> None:
    if s.daemon is not None and s.daemon.poll() is None:
        s.stop_daemon()
    reset_runtime_state()


def launch(s: System) -> subprocess.Popen[bytes]:
    """Start the daemon without waiting (what System.start_daemon does, minus the busctl polling)."""
    env = s.env()
    env.update({"SYSTEMD_LOG_TARGET": "console", "PYTHONPATH": str(REPO / "src"), **BENCH_ENV})
    log_path = s.workdir / f"{s.implementation.name}.log"
    with log_path.open("ab") as out:
        s.daemon = subprocess.Popen(
            list(s.implementation.argv), env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=out
        )
    s.daemon_log = log_path
    return s.daemon


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise BenchError(f"no VmRSS for {pid}")


async def register_all(bus: MessageBus, machines: list[tuple[str, int]]) -> None:
    """Register (name, pid) pairs, 64 calls in flight at a time (set-up, not measured)."""
    for i in range(0, len(machines), 64):
        chunk = machines[i : i + 64]
        await asyncio.gather(*(call(bus, register(name, pid)) for name, pid in chunk))


async def machine_count(bus: MessageBus) -> int:
    reply = await call(bus, manager("ListMachines"))
    return sum(1 for machine in reply.body[0] if machine[0] != ".host")


# ---------------------------------------------------------------- leaders


@dataclass
class Pool:
    leaders: list[Leader]
    userns: Leader
    nonleader: Leader  # a second process in the cgroup of leaders[0]


def make_pool(s: System, n: int) -> Pool:
    leaders = [s.spawn_leader(f"machine-b{i}.scope") for i in range(n)]
    process = subprocess.Popen(["sleep", "infinity"], stdin=subprocess.DEVNULL)
    (leaders[0].cgroup / "cgroup.procs").write_text(str(process.pid))
    nonleader = Leader(process.pid, leaders[0].cgroup, process)
    s.leaders.append(nonleader)
    userns = s.userns_leader("machine-userns.scope", "0 100000 65536")
    return Pool(leaders, userns, nonleader)


# ---------------------------------------------------------------- workloads


async def removal_samples(s: System, impl: str, count: int, timeout: float, tag: str) -> list[float | None]:
    """Register fresh leaders, SIGKILL each, time until MachineRemoved reaches a subscribed client."""
    bus = await connect()
    waiting: dict[str, asyncio.Future[float]] = {}

    def on_message(msg: Message) -> None:
        if msg.message_type is MessageType.SIGNAL and msg.member == "MachineRemoved":
            future = waiting.get(msg.body[0])
            if future is not None and not future.done():
                future.set_result(time.perf_counter())

    bus.add_message_handler(on_message)
    match = f"type='signal',sender='{BUS_NAME}',interface='org.freedesktop.machine1.Manager',member='MachineRemoved'"
    await call(bus, dbus_call("AddMatch", "s", [match]))
    out: list[float | None] = []
    loop = asyncio.get_running_loop()
    for j in range(count):
        name = f"rm-{tag}-{j}"
        leader = s.spawn_leader(f"machine-{name}.scope")
        await call(bus, register(name, leader.pid))
        future: asyncio.Future[float] = loop.create_future()
        waiting[name] = future
        await asyncio.sleep(0.01)
        assert leader.process is not None
        t0 = time.perf_counter()
        leader.process.kill()
        leader.process.wait()
        try:
            out.append(await asyncio.wait_for(future, timeout) - t0)
        except TimeoutError:
            out.append(None)
    bus.disconnect()
    return out


async def measure_size(s: System, bus: MessageBus, cfg: Config, pool: Pool, size: int, res: Results) -> None:
    impl = s.implementation.name
    names = ["userns"] + [f"b{i}" for i in range(size - 1)]
    assert await machine_count(bus) == size, "unexpected machine count"
    assert s.daemon is not None
    cpu_before = cpu_seconds(s.daemon.pid)
    res.add(
        "getmachine",
        size,
        impl,
        await timed_calls(bus, lambda i: manager("GetMachine", "s", [names[i % size]]), cfg.get_calls),
    )
    res.add("getmachine_cpu", size, impl, (cpu_seconds(s.daemon.pid) - cpu_before) / (cfg.get_calls + 20))
    pids = [leader.pid for leader in pool.leaders[: size - 1]]
    res.add(
        "bypid_leader",
        size,
        impl,
        await timed_calls(bus, lambda i: manager("GetMachineByPID", "u", [pids[i % len(pids)]]), cfg.bypid_calls),
    )
    res.add(
        "bypid_cgroup",
        size,
        impl,
        await timed_calls(bus, lambda i: manager("GetMachineByPID", "u", [pool.nonleader.pid]), cfg.bypid_calls),
    )
    n_list = cfg.list_calls.get(size, 50)
    res.add("list", size, impl, await timed_calls(bus, lambda i: manager("ListMachines"), n_list))

    varlink = Varlink()
    params = {"uid": USERNS_UID, "service": "io.systemd.Machine"}
    first = varlink.call("io.systemd.UserDatabase.GetUserRecord", params)
    if "error" in first:
        raise BenchError(f"{impl}: GetUserRecord({USERNS_UID}) failed: {first}")
    for _ in range(20):  # warm-up
        varlink.call("io.systemd.UserDatabase.GetUserRecord", params)
    samples = []
    for _ in range(cfg.userdb_calls):
        t0 = time.perf_counter()
        varlink.call("io.systemd.UserDatabase.GetUserRecord", params)
        samples.append(time.perf_counter() - t0)
    varlink.close()
    res.add("userdb", size, impl, samples)

    samples = []
    for _ in range(cfg.getent_runs):
        t0 = time.perf_counter()
        done = subprocess.run(["getent", "passwd", str(USERNS_UID)], capture_output=True, text=True)
        samples.append(time.perf_counter() - t0)
        if done.returncode != 0:
            raise BenchError(f"{impl}: getent passwd {USERNS_UID} exited {done.returncode}")
    res.add("getent", size, impl, samples)

    assert s.daemon is not None
    res.add("rss", size, impl, float(rss_bytes(s.daemon.pid)))

    if not s.implementation.is_reference:
        lat = await removal_samples(s, impl, cfg.removal_samples, 5.0, f"{size}")
        res.add("removal", size, impl, [x for x in lat if x is not None])
        missed = sum(x is None for x in lat)
        if missed:
            res.notes.append(f"{impl}: {missed}/{len(lat)} MachineRemoved not seen within 5 s at {size} machines")


async def measure_startup(s: System, bus: MessageBus, res: Results, size: int) -> None:
    """Stop with `size` machines saved, start again; time to name acquired and to all machines listed."""
    expected = await machine_count(bus)
    s.stop_daemon()
    assert s.daemon is not None
    owner: asyncio.Future[float] = asyncio.get_running_loop().create_future()

    def on_message(msg: Message) -> None:
        if msg.member == "NameOwnerChanged" and msg.body[0] == BUS_NAME and msg.body[2] and not owner.done():
            owner.set_result(time.perf_counter())

    bus.add_message_handler(on_message)
    match = f"type='signal',sender='org.freedesktop.DBus',member='NameOwnerChanged',arg0='{BUS_NAME}'"
    await call(bus, dbus_call("AddMatch", "s", [match]))
    t0 = time.perf_counter()
    launch(s)
    t_name = await asyncio.wait_for(owner, 30) - t0
    deadline = time.monotonic() + 30
    while True:
        reply = await bus.call(manager("ListMachines"))
        if (
            reply is not None
            and reply.message_type is not MessageType.ERROR
            and sum(m[0] != ".host" for m in reply.body[0]) >= expected
        ):
            break
        if time.monotonic() > deadline:
            raise BenchError(f"{s.implementation.name}: only some machines served 30 s after start")
        await asyncio.sleep(0.002)
    t_all = time.perf_counter() - t0
    bus.remove_message_handler(on_message)
    await call(bus, dbus_call("RemoveMatch", "s", [match]))
    res.add("startup_name", size, s.implementation.name, t_name)
    res.add("startup_all", size, s.implementation.name, t_all)


async def run_cycles(bus: MessageBus, pool: Pool, n: int, impl: str, res: Results) -> None:
    """n RegisterMachine + UnregisterMachine cycles over the prepared leaders, one call at a time."""
    cycle_lat = []
    t_start = time.perf_counter()
    for i in range(n):
        t0 = time.perf_counter()
        await call(bus, register(f"c{i}", pool.leaders[i].pid))
        await call(bus, unregister(f"c{i}"))
        cycle_lat.append(time.perf_counter() - t0)
    elapsed = time.perf_counter() - t_start
    res.add("cycle_ops", n, impl, n / elapsed)
    res.add("cycle_lat", n, impl, cycle_lat)


async def main_phase(s: System, cfg: Config, pool: Pool, res: Results, rep: int) -> None:
    impl = s.implementation.name
    bus = await connect()
    # RegisterMachine + UnregisterMachine cycles over the prepared leaders
    n = min(cfg.cycles, len(pool.leaders))
    await run_cycles(bus, pool, n, impl, res)
    dead = [leader.pid for leader in pool.leaders[:n] if leader.process is None or leader.process.poll() is not None]
    if dead:
        raise BenchError(f"{impl}: leaders died during the register/unregister cycles: {dead[:5]}")
    await asyncio.sleep(0.05)  # let 252 garbage-collect the unregistered machines
    if await machine_count(bus) != 0:
        raise BenchError(f"{impl}: machines left after the cycles")

    registered = 0
    await call(bus, register("userns", pool.userns.pid))
    for size in cfg.sizes:
        t0 = time.perf_counter()
        await register_all(bus, [(f"b{i}", pool.leaders[i].pid) for i in range(registered, size - 1)])
        registered = size - 1
        log(f"  {impl}: {size} machines registered ({time.perf_counter() - t0:.2f} s); measuring")
        await measure_size(s, bus, cfg, pool, size, res)

    top = cfg.sizes[-1]
    await measure_startup(s, bus, res, top)
    bus.disconnect()
    if s.implementation.is_reference:
        lat = await removal_samples(s, impl, cfg.removal_samples_252, REMOVAL_TIMEOUT_252, f"{top}r{rep}")
        res.add("removal_seen", top, impl, float(sum(x is not None for x in lat)))
        res.add("removal_tried", top, impl, float(len(lat)))
        res.add("removal", top, impl, [x for x in lat if x is not None])


# ---------------------------------------------------------------- network namespaces


def grow_netns_pool(s: System, leaders: list[Leader], n: int) -> None:
    start_index = len(leaders)
    new = [s.spawn_in(f"machine-n{i}.scope", ["unshare", "--net", "sleep", "infinity"]) for i in range(start_index, n)]
    own = os.readlink("/proc/self/ns/net")

    def entered() -> bool:
        try:
            return all(os.readlink(f"/proc/{leader.pid}/ns/net") != own for leader in new)
        except OSError:
            return False

    wait_for(entered, "the leaders to enter their network namespaces", timeout=60)
    batch = "".join(
        f"link add ve-n{start_index + k} type veth peer name host0 netns {leader.pid}\n" for k, leader in enumerate(new)
    )
    subprocess.run(["ip", "-batch", "-"], input=batch, text=True, check=True)
    args = [
        f"{leader.pid}=10.{(start_index + k) // 250}.{(start_index + k) % 250 + 1}.2/24" for k, leader in enumerate(new)
    ]
    subprocess.run([sys.executable, str(BENCH / "netns_setup.py"), *args], check=True)
    leaders.extend(new)


def machinectl_list(s: System, cfg: Config, size: int, impl: str, res: Results) -> None:
    for _ in range(cfg.machinectl_runs):
        t0 = time.perf_counter()
        done = s.run("machinectl", "--no-pager", "list", timeout=300)
        res.add("machinectl", size, impl, time.perf_counter() - t0)
        if done.returncode != 0 or f"{size} machines listed" not in done.stdout:
            raise BenchError(f"{impl}: machinectl list failed: {done.output[-500:]}")
        if "10.0.1.2" not in done.stdout:
            res.notes.append(f"{impl}: machinectl list showed no address for n0")


async def netns_phase(s: System, cfg: Config, leaders: list[Leader], size: int, res: Results) -> None:
    impl = s.implementation.name
    bus = await connect()
    await register_all(bus, [(f"n{i}", leaders[i].pid) for i in range(size)])
    bus.disconnect()
    machinectl_list(s, cfg, size, impl, res)
    if impl == PY:  # 252 has no Varlink machine API
        message = {"method": "io.systemd.Machine.List", "parameters": {"acquireMetadata": "graceful"}, "more": True}
        for _ in range(cfg.machinectl_runs):
            t0 = time.perf_counter()
            reply = raw_exchange(MACHINE_SOCKET, message, timeout=300)
            res.add("varlink_list", size, impl, time.perf_counter() - t0)
            with_addresses = sum('"addresses"' in m for m in reply.messages)
            if reply.ending or len(reply.messages) != size + 1 or with_addresses < size:
                raise BenchError(f"varlink List: {len(reply.messages)} replies, {with_addresses} with addresses")


# ---------------------------------------------------------------- report


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q / 100 * len(ordered)) - 1))]


def median(values: list[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def fmt_time(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    if seconds < 0.9995e-3:
        return f"{seconds * 1e6:.0f} µs"
    if seconds < 1:
        return f"{seconds * 1e3:.3g} ms"
    return f"{seconds:.3g} s"


def verdict(ok: bool) -> str:
    return "✅ pass" if ok else "❌ fail"


def latency_row(res: Results, label: str, metric: str, size: int, target: float) -> str:
    py, ref = res.get(metric, size, PY), res.get(metric, size, REF)
    if not py or not ref:
        return f"| {label} | {size} | – | – | – | – | – | ≤ {target} | not measured |"
    ratio = median(py) / median(ref)
    return (
        f"| {label} | {size} | {fmt_time(median(py))} | {fmt_time(pct(py, 99))} | {fmt_time(median(ref))} "
        f"| {fmt_time(pct(ref, 99))} | {ratio:.2f} | ≤ {target} | {verdict(ratio <= target)} |"
    )


def floor_row(res: Results, label: str, metric: str, size: int, size_text: str | None = None) -> list[str]:
    """The row of a latency workload answered by bench/floor.py, beside 252's (none if either is missing)."""
    floor, ref = res.get(metric, size, FLOOR), res.get(metric, size, REF)
    if not floor or not ref:
        return []
    return [
        f"| {label} | {size if size_text is None else size_text} | {fmt_time(median(floor))} "
        f"| {fmt_time(pct(floor, 99))} | {fmt_time(median(ref))} | {fmt_time(pct(ref, 99))} "
        f"| {median(floor) / median(ref):.2f} | context | info |"
    ]


GROWTH_METRICS = (
    ("GetMachine", "getmachine"),
    ("GetMachineByPID (leader)", "bypid_leader"),
    ("GetMachineByPID (cgroup)", "bypid_cgroup"),
    ("ListMachines", "list"),
    ("userdb GetUserRecord", "userdb"),
    ("getent passwd", "getent"),
    ("RSS", "rss"),
    ("leader exit → MachineRemoved", "removal"),
)


def growth_exponent(values: dict[int, float]) -> float | None:
    sizes = sorted(s for s, v in values.items() if v > 0)
    if len(sizes) < 2:
        return None
    a, b = sizes[-2], sizes[-1]
    return math.log(values[b] / values[a]) / math.log(b / a)


def report(res: Results, cfg: Config, header: list[str], netns_sizes: list[int]) -> str:
    out = list(header)
    out.append("")
    out.append("Latencies are per call, from one dbus-fast client awaiting each reply (Python client overhead")
    out.append("included for both daemons). Ratio = pymachined median / 252 median.")
    out.append("")
    out.append(
        "| workload | machines | pymachined p50 | pymachined p99 | 252 p50 | 252 p99 | ratio | target | result |"
    )
    out.append("|---|---|---|---|---|---|---|---|---|")
    small = cfg.sizes[0]
    out.append(latency_row(res, f"GetMachine ({cfg.get_calls} calls/rep)", "getmachine", small, 1.0))
    out += floor_row(
        res,
        "GetMachine answered by bench/floor.py, a dbus-fast responder with no logic (the floor of any "
        "dbus-fast daemon)",
        "getmachine",
        small,
        "–",
    )
    cpu = {impl: res.get("getmachine_cpu", small, impl) for impl in (PY, FLOOR, REF)}
    if all(cpu.values()):
        out.append(
            f"| daemon CPU time per GetMachine (user + system, from /proc) | {small} | {fmt_time(median(cpu[PY]))} "
            f"| floor: {fmt_time(median(cpu[FLOOR]))} | {fmt_time(median(cpu[REF]))} | – "
            f"| {median(cpu[PY]) / median(cpu[REF]):.2f} | context | info |"
        )
    out.append(latency_row(res, "GetMachineByPID, leader PID", "bypid_leader", small, 1.0))
    out.append(latency_row(res, "GetMachineByPID, non-leader PID in the scope", "bypid_cgroup", small, 1.0))
    for size in cfg.sizes:
        out.append(latency_row(res, "ListMachines", "list", size, 1.0))
        out += floor_row(res, "ListMachines answered by bench/floor.py (the reply marshalled per call)", "list", size)
    n = min(cfg.cycles, cfg.sizes[-1])
    py, ref = res.get("cycle_ops", n, PY), res.get("cycle_ops", n, REF)
    if py and ref:
        ratio = median(py) / median(ref)
        py_lat, ref_lat = res.get("cycle_lat", n, PY), res.get("cycle_lat", n, REF)
        out.append(
            f"| Register+Unregister cycles, {n} leaders (ops/s; p99 = cycle latency) | 0↔1 | {median(py):.0f}/s "
            f"| {fmt_time(pct(py_lat, 99))} | {median(ref):.0f}/s | {fmt_time(pct(ref_lat, 99))} | {ratio:.2f} "
            f"| ≥ 1.0 | {verdict(ratio >= 1.0)} |"
        )
    floor = res.get("cycle_ops", n, FLOOR)
    if floor and ref:
        floor_lat = res.get("cycle_lat", n, FLOOR)
        out.append(
            f"| Register+Unregister cycles answered by bench/floor.py (canned replies and signals) | 0↔1 "
            f"| {median(floor):.0f}/s | {fmt_time(pct(floor_lat, 99))} | {median(ref):.0f}/s "
            f"| {fmt_time(pct(ref_lat, 99))} | {median(floor) / median(ref):.2f} | context | info |"
        )
    for i, size in enumerate(netns_sizes):
        target = 0.5 if i == 0 else 0.1
        out.append(
            latency_row(res, "`machinectl list` wall time, machines in own netns + veth", "machinectl", size, target)
        )
        label = "`machinectl list` answered by bench/floor.py (canned os-release and addresses)"
        out += floor_row(res, label, "machinectl", size)
    for size in netns_sizes:
        py = res.get("varlink_list", size, PY)
        if py:
            out.append(
                f"| Varlink `io.systemd.Machine.List` with `acquireMetadata=graceful` (addresses, os-release, "
                f"UID shift), machines in own netns | {size} | {fmt_time(median(py))} | {fmt_time(pct(py, 99))} "
                f"| no such API | – | – | no fork per machine | {fmt_time(median(py) / (size + 1))} per machine |"
            )
    for size in cfg.sizes:
        out.append(latency_row(res, "userdb GetUserRecord (raw Varlink)", "userdb", size, 1.0))
    for size in cfg.sizes:
        out.append(latency_row(res, "`getent passwd 100005` wall time", "getent", size, 1.0))
    top = cfg.sizes[-1]
    for size in cfg.sizes:
        py = res.get("removal", size, PY)
        if size == top:
            seen = sum(res.get("removal_seen", top, REF))
            tried = sum(res.get("removal_tried", top, REF))
            ref_text = (
                f"never ({seen:.0f}/{tried:.0f} seen within {REMOVAL_TIMEOUT_252:.0f} s)"
                if seen == 0
                else (f"{fmt_time(median(res.get('removal', top, REF)))} ({seen:.0f}/{tried:.0f})")
            )
        else:
            ref_text = "not run (never)"
        if py:
            ok = median(py) <= 0.005
            out.append(
                f"| leader exit → MachineRemoved | {size} | {fmt_time(median(py))} | {fmt_time(pct(py, 99))} "
                f"| {ref_text} | – | – | ≤ 5 ms p50 | {verdict(ok)} |"
            )
    for size in cfg.sizes:
        py, ref = res.get("rss", size, PY), res.get("rss", size, REF)
        if py and ref:
            line = f"| daemon RSS (VmRSS) | {size} | {median(py) / 2**20:.1f} MB | {max(py) / 2**20:.1f} MB (max) "
            line += (
                f"| {median(ref) / 2**20:.1f} MB | {max(ref) / 2**20:.1f} MB (max) | {median(py) / median(ref):.1f} "
            )
            target_ok = median(py) <= 60 * 2**20
            line += f"| ≤ 60 MB | {verdict(target_ok) if size == top else 'info'} |"
            out.append(line)
    for metric, label in (
        ("startup_name", "start-up → name acquired"),
        ("startup_all", "start-up → all machines listed"),
    ):
        py, ref = res.get(metric, top, PY), res.get(metric, top, REF)
        if py and ref:
            ok = median(py) <= 1.0
            out.append(
                f"| {label} ({top} state files) | {top} | {fmt_time(median(py))} | {fmt_time(max(py))} (max) "
                f"| {fmt_time(median(ref))} | {fmt_time(max(ref))} (max) | {median(py) / median(ref):.2f} "
                f"| ≤ 1 s | {verdict(ok) if metric == 'startup_all' else 'info'} |"
            )

    out.append("")
    out.append("### Growth (medians)")
    out.append("")
    out.append("Exponent k from the last two sizes, value ∝ machines^k: ~0 flat, ~1 linear, ~2 quadratic")
    out.append("(the fixed per-call cost — client, bus, process spawn — hides small linear terms).")
    out.append("")
    cols = " | ".join(str(s) for s in cfg.sizes)
    out.append(f"| metric | daemon | {cols} | k | target (not quadratic) |")
    out.append("|---|---|" + "---|" * len(cfg.sizes) + "---|---|")
    for label, metric in GROWTH_METRICS:
        for impl in (PY, REF):
            values = {s: median(res.get(metric, s, impl)) for s in cfg.sizes if res.get(metric, s, impl)}
            if len(values) < 2:
                continue
            shown = " | ".join(
                (f"{values[s] / 2**20:.1f} MB" if metric == "rss" else fmt_time(values[s])) if s in values else "–"
                for s in cfg.sizes
            )
            k = growth_exponent(values)
            mark = "–" if k is None else verdict(k < 1.5)
            out.append(f"| {label} | {impl} | {shown} | {'–' if k is None else f'{k:.2f}'} | {mark} |")
    netns_values = {
        impl: {s: median(res.get("machinectl", s, impl)) for s in netns_sizes if res.get("machinectl", s, impl)}
        for impl in (PY, REF)
    }
    for impl, values in netns_values.items():
        if len(values) >= 2:
            k = growth_exponent(values)
            if set(values) <= set(cfg.sizes):
                label, shown = "machinectl list (netns)", " | ".join(fmt_time(values.get(s)) for s in cfg.sizes)
            else:
                inline = ", ".join(f"{s}: {fmt_time(v)}" for s, v in sorted(values.items()))
                label, shown = f"machinectl list (netns; {inline})", " | ".join("" for _ in cfg.sizes)
            mark = "–" if k is None else verdict(k < 1.5)
            out.append(f"| {label} | {impl} | {shown} | {'–' if k is None else f'{k:.2f}'} | {mark} |")
    if res.notes:
        out.append("")
        out.append("### Notes")
        out.append("")
        out.extend(f"- {note}" for note in res.notes)
    return "\n".join(out) + "\n"


def machine_header(cfg: Config, quick: bool) -> list[str]:
    cpu = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    kernel = os.uname().release
    return [
        "# pymachined vs systemd-machined 252",
        "",
        f"- date: {time.strftime('%Y-%m-%d %H:%M:%S %Z')}; mode: {'quick (smoke)' if quick else 'full'}; "
        f"repetitions: {cfg.reps} per daemon, alternating pymachined/252",
        f"- nproc: {os.cpu_count()}; CPU: {cpu}; kernel {kernel}; Python {sys.version.split()[0]}",
        f"- load average at start: {load}",
    ]


async def run_main(cfg: Config, res: Results, workdir: Path) -> None:
    with system(PYMACHINED, workdir, start=False) as s:
        t0 = time.perf_counter()
        pool = make_pool(s, max(cfg.sizes[-1], cfg.cycles))
        log(f"{len(pool.leaders)} leaders prepared in {time.perf_counter() - t0:.1f} s")
        for rep in range(cfg.reps):
            for impl in IMPLS:
                log(f"rep {rep + 1}/{cfg.reps}: {impl.name}")
                start(s, impl)
                try:
                    await main_phase(s, cfg, pool, res, rep)
                finally:
                    stop(s)
            log(f"rep {rep + 1}/{cfg.reps}: minimal dbus-fast responder")
            await floor_phase(s, cfg, pool, res)


@asynccontextmanager
async def floor_responder(s: System) -> AsyncIterator[tuple[MessageBus, subprocess.Popen[bytes]]]:
    """bench/floor.py owning the bus name, and a client connection to it."""
    env = {**s.env(), "PYTHONPATH": str(REPO / "src")}
    responder = subprocess.Popen([sys.executable, str(BENCH / "floor.py"), BUS_ADDRESS], env=env)
    try:
        bus = await connect()
        try:
            for _ in range(500):
                reply = await bus.call(dbus_call("NameHasOwner", "s", [BUS_NAME]))
                if reply is not None and reply.body and reply.body[0]:
                    break
                await asyncio.sleep(0.01)
            else:
                raise BenchError("the minimal responder never owned the bus name")
            yield bus, responder
        finally:
            bus.disconnect()
    finally:
        responder.terminate()
        responder.wait()


async def floor_phase(s: System, cfg: Config, pool: Pool, res: Results) -> None:
    """GetMachine and the register cycles answered by bench/floor.py: what any daemon on dbus-fast and
    asyncio costs at least."""
    async with floor_responder(s) as (bus, responder):
        cpu_before = cpu_seconds(responder.pid)
        samples = await timed_calls(bus, lambda i: manager("GetMachine", "s", [f"b{i}"]), cfg.get_calls)
        res.add("getmachine_cpu", cfg.sizes[0], FLOOR, (cpu_seconds(responder.pid) - cpu_before) / (cfg.get_calls + 20))
        res.add("getmachine", cfg.sizes[0], FLOOR, samples)
        await run_cycles(bus, pool, min(cfg.cycles, len(pool.leaders)), FLOOR, res)
        registered = 0
        for size in cfg.sizes:
            await register_all(bus, [(f"b{i}", pool.leaders[i].pid) for i in range(registered, size)])
            registered = size
            n_list = cfg.list_calls.get(size, 50)
            res.add("list", size, FLOOR, await timed_calls(bus, lambda i: manager("ListMachines"), n_list))


async def floor_netns_phase(s: System, cfg: Config, leaders: list[Leader], size: int, res: Results) -> None:
    """machinectl list against bench/floor.py with `size` machines registered (canned metadata)."""
    async with floor_responder(s) as (bus, _):
        await register_all(bus, [(f"n{i}", leaders[i].pid) for i in range(size)])
        machinectl_list(s, cfg, size, FLOOR, res)


async def run_netns(cfg: Config, res: Results, workdir: Path) -> list[int]:
    done: list[int] = []
    with system(PYMACHINED, workdir, start=False) as s:
        leaders: list[Leader] = []
        for size in cfg.netns_sizes:
            t0 = time.perf_counter()
            try:
                grow_netns_pool(s, leaders, size)
            except (subprocess.CalledProcessError, TimeoutError, OSError) as error:
                res.notes.append(f"network namespaces: could not grow to {size}: {error}")
                break
            log(f"{size} network namespaces with veth ready in {time.perf_counter() - t0:.1f} s")
            for rep in range(cfg.reps):
                for impl in IMPLS:
                    log(f"netns {size} rep {rep + 1}/{cfg.reps}: {impl.name}")
                    start(s, impl)
                    try:
                        await netns_phase(s, cfg, leaders, size, res)
                    finally:
                        stop(s)
                log(f"netns {size} rep {rep + 1}/{cfg.reps}: minimal dbus-fast responder")
                await floor_netns_phase(s, cfg, leaders, size, res)
            done.append(size)
    return done


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes, one repetition (smoke run)")
    parser.add_argument("--reps", type=int, help="repetitions per daemon")
    parser.add_argument("--output", type=Path, default=BENCH / "results.md")
    args = parser.parse_args()
    if not in_isolation():
        print("bench/run.py must run inside tests/harness/isolate (use `make bench`)", file=sys.stderr)
        return 2
    if os.geteuid() != 0:
        print("bench/run.py must run as root", file=sys.stderr)
        return 2
    cfg = QUICK if args.quick else FULL
    if args.reps:
        cfg.reps = args.reps
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    header = machine_header(cfg, args.quick)
    res = Results()
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="pymachined-bench.") as tmp:
        workdir = Path(tmp)
        asyncio.run(run_main(cfg, res, workdir))
        netns_sizes = asyncio.run(run_netns(cfg, res, workdir))
        clones = clone_table(workdir, size_mib=64 if args.quick else 1024, reps=2 if args.quick else 4)
    if cfg.netns_sizes and netns_sizes and netns_sizes[-1] != cfg.netns_sizes[-1]:
        res.notes.append(f"machinectl list measured with up to {netns_sizes[-1]} network namespaces")
    elapsed = time.perf_counter() - t_start
    header.append(f"- load average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}; run time {elapsed:.0f} s")
    header.append(
        f"- machinectl list: {', '.join(map(str, netns_sizes))} machines, each leader `unshare --net sleep` "
        "with a veth end `host0` carrying a 10.x.y.2/24 address"
    )
    text = report(res, cfg, header, netns_sizes) + "\n" + clones + "\n"
    print(text)
    args.output.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
